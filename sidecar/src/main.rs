//! `coherence-sidecar`: runs the sidecar until SIGTERM or Ctrl-C.
//!
//! Logs go to stderr (stdout only carries what `--print-config` and friends print), as text
//! or JSON lines (`log_format`), coloured only on a terminal, and — like panic messages —
//! through a [`Scrubber`] that masks every secret of the configuration.

use std::io::IsTerminal;
use std::process::ExitCode;

use coherence_sidecar::process::config::{Config, ConfigOrAction, EXIT_CONFIG};
use coherence_sidecar::secrets::Scrubber;
use coherence_sidecar::Sidecar;

fn main() -> ExitCode {
    let config = match Config::from_args(std::env::args_os()) {
        Ok(ConfigOrAction::Run(config)) => config,
        Ok(ConfigOrAction::Print(text)) => {
            print!("{text}");
            return ExitCode::SUCCESS;
        }
        Err(err) => {
            eprintln!("coherence-sidecar: configuration error: {err}");
            return ExitCode::from(EXIT_CONFIG as u8);
        }
    };
    let scrubber = Scrubber::new(config.secrets().iter().map(String::as_str));
    scrubber.install_panic_hook();
    init_logs(&config.settings.log_format, &scrubber);
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(err) => {
            eprintln!("coherence-sidecar: cannot start the runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(run(config, scrubber))
}

fn init_logs(format: &str, scrubber: &Scrubber) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(scrubber.stderr());
    if format == "json" {
        // One object per line: timestamp, level, target and every field of the event at the
        // top level (`message` included), as log pipelines index them. JSON has no colours.
        logs.json().flatten_event(true).init();
    } else {
        let colour = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none();
        logs.with_ansi(colour).init();
    }
}

async fn run(config: Config, scrubber: Scrubber) -> ExitCode {
    let sidecar = match Sidecar::start(config).await {
        Ok(sidecar) => sidecar,
        Err(err) => {
            tracing::error!(error = %err, "cannot start");
            eprintln!("coherence-sidecar: {}", scrubber.scrub(&err.to_string()));
            return ExitCode::from(EXIT_CONFIG as u8);
        }
    };
    shutdown_signal().await;
    tracing::info!("shutdown requested; draining");
    sidecar.shutdown().await;
    ExitCode::SUCCESS
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = ctrl_c => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = ctrl_c.await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}
