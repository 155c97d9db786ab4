//! `coherence-sidecar`: runs the sidecar until SIGTERM or Ctrl-C.

use std::process::ExitCode;

use coherence_sidecar::config::{Config, ConfigOrAction, EXIT_CONFIG};
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
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(err) => {
            eprintln!("coherence-sidecar: cannot start the runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(run(config))
}

async fn run(config: Config) -> ExitCode {
    let sidecar = match Sidecar::start(config).await {
        Ok(sidecar) => sidecar,
        Err(err) => {
            tracing::error!(error = %err, "cannot start");
            eprintln!("coherence-sidecar: {err}");
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
