//! `coherencectl`: the operator CLI for a coherence sidecar.
//!
//! Reads and bumps cache versions, checks whether a version is still current and follows
//! invalidations, all through the sidecar's gRPC API (the `coherence-client` crate). Exit codes
//! are part of its interface, for scripts: see [`cli::exit`].

mod cli;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("coherencectl: cannot start the runtime: {err}");
            return ExitCode::from(cli::exit::OTHER_ERROR);
        }
    };
    runtime.block_on(cli::run(cli))
}
