//! `coherence-sidecar`: runs the sidecar until SIGTERM or Ctrl-C.
//!
//! `coherence-sidecar functions load [settings]` instead installs this build's Redis Functions
//! library (for `redis_scripts = "functions"`) on the Redis the settings name — with an
//! administrator's credential, given like the sidecar's own (`--redis-url`,
//! `COHERENCE_REDIS_USERNAME`, `COHERENCE_REDIS_PASSWORD_FILE`, ...) — and exits: 0 when loaded,
//! 1 when Redis refused or could not be reached, 64 for a bad setting. `functions print`
//! prints the library's code (for `redis-cli -x FUNCTION LOAD REPLACE`).
//!
//! Logs go to stderr (stdout only carries what `--print-config` and friends print), as text
//! or JSON lines (`log_format`), coloured only on a terminal, and — like panic messages —
//! through a [`Scrubber`] that masks every secret of the configuration.

use std::ffi::OsString;
use std::io::IsTerminal;
use std::process::ExitCode;

use coherence_sidecar::process::config::{Config, ConfigOrAction, EXIT_CONFIG};
use coherence_sidecar::redis::scripts;
use coherence_sidecar::secrets::Scrubber;
use coherence_sidecar::Sidecar;

fn main() -> ExitCode {
    let args: Vec<OsString> = std::env::args_os().collect();
    if args.get(1).is_some_and(|a| a == "functions") {
        return functions_command(&args);
    }
    let (config, scrubber, runtime) = match prepare(args) {
        Ok(prepared) => prepared,
        Err(exit) => return exit,
    };
    init_logs(&config.settings.log_format, &scrubber);
    runtime.block_on(run(config, scrubber))
}

/// The configuration from `args` (and the environment), the scrubber of its secrets (installed
/// for panics) and a runtime; or the exit code when there is nothing to run: help or a printed
/// configuration (0), a bad one (64), no runtime (1).
fn prepare(
    args: impl IntoIterator<Item = OsString>,
) -> Result<(Config, Scrubber, tokio::runtime::Runtime), ExitCode> {
    let config = match Config::from_args(args) {
        Ok(ConfigOrAction::Run(config)) => config,
        Ok(ConfigOrAction::Print(text)) => {
            print!("{text}");
            return Err(ExitCode::SUCCESS);
        }
        Err(err) => {
            eprintln!("coherence-sidecar: configuration error: {err}");
            return Err(ExitCode::from(EXIT_CONFIG as u8));
        }
    };
    let scrubber = Scrubber::new(config.secrets().iter().map(String::as_str));
    scrubber.install_panic_hook();
    match tokio::runtime::Runtime::new() {
        Ok(runtime) => Ok((config, scrubber, runtime)),
        Err(err) => {
            eprintln!("coherence-sidecar: cannot start the runtime: {err}");
            Err(ExitCode::FAILURE)
        }
    }
}

/// `functions load|print [settings]`.
fn functions_command(args: &[OsString]) -> ExitCode {
    let usage = "usage: coherence-sidecar functions load|print [--redis-url URL and the other Redis settings]";
    let action = args.get(2).and_then(|a| a.to_str());
    if action == Some("print") {
        print!("{}", scripts::library_code());
        return ExitCode::SUCCESS;
    }
    if action != Some("load") {
        eprintln!("coherence-sidecar: {usage}");
        return ExitCode::from(EXIT_CONFIG as u8);
    }
    // The sidecar's own settings (flags, environment, --config file): only the Redis ones count.
    let settings = args[..1].iter().chain(&args[3..]).cloned();
    let (config, scrubber, runtime) = match prepare(settings) {
        Ok(prepared) => prepared,
        Err(exit) => return exit,
    };
    let loaded = runtime.block_on(async {
        let timeouts = redis::AsyncConnectionConfig::new()
            .set_connection_timeout(Some(std::time::Duration::from_secs(5)))
            .set_response_timeout(Some(std::time::Duration::from_secs(10)));
        let mut conn = config.redis.target.connect_commands(&timeouts).await?;
        scripts::load_library(&mut conn).await
    });
    match loaded {
        Ok(library) => {
            println!(
                "loaded the Redis Functions library {library} on {}",
                config.redis.url_for_logs
            );
            ExitCode::SUCCESS
        }
        Err(err) => {
            let err = scrubber.scrub(&err.to_string());
            eprintln!(
                "coherence-sidecar: cannot load the Redis Functions library {} on {}: {err}",
                scripts::library_name(),
                config.redis.url_for_logs
            );
            ExitCode::FAILURE
        }
    }
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
