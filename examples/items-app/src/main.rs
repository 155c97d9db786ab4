//! `items-app`: one instance of the items example (see the README next to this crate).

use std::process::ExitCode;

use clap::Parser;
use coherence_example_items::{AppConfig, RunningApp};

/// Serves items from PostgreSQL through a coherent cache.
#[derive(Parser)]
struct Args {
    /// HTTP listen address.
    #[arg(long, env = "ITEMS_LISTEN", default_value = "127.0.0.1:8080")]
    listen: std::net::SocketAddr,
    /// This instance's coherence sidecar.
    #[arg(long, env = "ITEMS_SIDECAR", default_value = "http://127.0.0.1:50051")]
    sidecar: String,
    /// PostgreSQL connection string.
    #[arg(
        long,
        env = "DATABASE_URL",
        default_value = "postgres://postgres@127.0.0.1:5432/postgres"
    )]
    database_url: String,
    /// Most items cached by this instance.
    #[arg(long, env = "ITEMS_MAX_CACHED", default_value_t = 10_000)]
    max_items: u64,
}

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let args = Args::parse();
    let config = AppConfig {
        listen: args.listen,
        sidecar: args.sidecar,
        database_url: args.database_url,
        max_items: args.max_items,
    };
    match RunningApp::start(config).await {
        Ok(app) => {
            let addr = app.addr;
            println!("items-app listening on http://{addr}");
            if let Err(err) = tokio::signal::ctrl_c().await {
                eprintln!("items-app: cannot wait for Ctrl-C: {err}");
            }
            app.stop().await;
            ExitCode::SUCCESS
        }
        Err(err) => {
            eprintln!("items-app: {err}");
            ExitCode::from(1)
        }
    }
}
