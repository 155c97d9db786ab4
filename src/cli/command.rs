//! The subcommands. Add one by adding a variant here (with its arguments in its own module)
//! and an arm in [`Command::run`].

use super::{bump, check, get, jobs, servers, slo, watch, GlobalOptions};

#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Print the current version of each key (a key never bumped has one too).
    Get(get::GetArgs),
    /// Is a version still current? Exit code 0 when every version is, 1 when one is stale.
    Check(check::CheckArgs),
    /// Move keys to new versions ("I changed the data behind them") and print the new versions.
    Bump(bump::BumpArgs),
    /// Follow invalidations of keys under the prefixes (every key when none is given).
    Watch(watch::WatchArgs),
    /// List the live servers of the namespace, their roles and the leader.
    Servers(servers::ServersArgs),
    /// This server's role (SINGLE, SCHEDULING_PUBLISHER, SUBSCRIBER, UNKNOWN); --watch follows it.
    Role(servers::RoleArgs),
    /// Distributed job leases with fencing tokens: acquire, renew, release, claim.
    Jobs(jobs::JobsArgs),
    /// The fleet's measured consistency: audit verdicts, nines (with their sample count) and
    /// canary propagation p50/p99, from every sidecar reachable (exit 1 on a violation).
    Slo(slo::SloArgs),
}

impl Command {
    /// Runs the subcommand; returns the exit code of a completed run.
    pub async fn run(self, global: &GlobalOptions) -> anyhow::Result<u8> {
        match self {
            Command::Get(args) => get::run(args, global).await,
            Command::Check(args) => check::run(args, global).await,
            Command::Bump(args) => bump::run(args, global).await,
            Command::Watch(args) => watch::run(args, global).await,
            Command::Servers(args) => servers::servers(args, global).await,
            Command::Role(args) => servers::role(args, global).await,
            Command::Jobs(args) => jobs::run(args, global).await,
            Command::Slo(args) => slo::run(args, global).await,
        }
    }
}
