//! Command-line parsing and dispatch: the global options every subcommand shares (where the
//! sidecar is, how long to wait, how to print) and the mapping of outcomes to exit codes.

pub mod bump;
pub mod check;
pub mod command;
pub mod exit;
pub mod get;
pub mod jobs;
pub mod kit;
pub mod output;
pub mod servers;
pub mod slo;
pub mod watch;

use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use coherence_client::{AuthToken, Client};

pub use command::Command;
use output::Output;

/// The operator CLI for coherence: read, check, bump and watch cache versions through a sidecar.
#[derive(Debug, Parser)]
#[command(
    name = "coherencectl",
    version,
    after_help = "Exit codes: 0 success (check: every version current), 1 check: a version is not \
                  current (stale), 2 usage error or input the sidecar rejected, 3 sidecar \
                  unreachable, unavailable or too slow, 4 any other error."
)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalOptions,
    #[command(subcommand)]
    pub command: Command,
}

/// Options every subcommand accepts.
#[derive(Debug, Clone, clap::Args)]
pub struct GlobalOptions {
    /// gRPC address of the sidecar: http://host:port, host:port or unix:///path/to/socket.
    #[arg(
        long,
        global = true,
        env = "COHERENCE_ADDR",
        default_value = "http://127.0.0.1:50051"
    )]
    pub addr: String,
    /// File holding the bearer token the sidecar requires (its auth_token_file), if any.
    #[arg(long, global = true, env = "COHERENCE_AUTH_TOKEN_FILE")]
    pub auth_token_file: Option<std::path::PathBuf>,
    /// Deadline for connecting and for each call, in milliseconds.
    #[arg(long, global = true, default_value_t = 2000, value_parser = clap::value_parser!(u64).range(1..))]
    pub timeout_ms: u64,
    /// Print JSON (one object per line) instead of human-readable text.
    #[arg(long, global = true)]
    pub json: bool,
}

impl GlobalOptions {
    pub fn timeout(&self) -> Duration {
        Duration::from_millis(self.timeout_ms)
    }

    /// Connects to the sidecar within the deadline.
    pub async fn client(&self) -> anyhow::Result<Client> {
        let connect = Client::connect(&self.addr);
        let client = match tokio::time::timeout(self.timeout(), connect).await {
            Ok(connected) => connected?,
            Err(_) => return Err(kit::connect_timed_out(&self.addr, self.timeout()).into()),
        };
        Ok(client
            .with_auth_token(self.auth_token()?)
            .with_timeout(self.timeout()))
    }

    /// The bearer token from `--auth-token-file` (none without it).
    pub fn auth_token(&self) -> anyhow::Result<AuthToken> {
        Ok(match &self.auth_token_file {
            Some(path) => AuthToken::from_file(path)?,
            None => AuthToken::default(),
        })
    }

    pub fn output(&self) -> Output {
        Output::new(self.json)
    }
}

/// Runs one command line and returns the process exit code.
pub async fn run(cli: Cli) -> ExitCode {
    match cli.command.run(&cli.global).await.context("coherencectl") {
        Ok(code) => ExitCode::from(code),
        Err(err) => {
            eprintln!("{err:#}");
            ExitCode::from(exit::for_error(&err))
        }
    }
}
