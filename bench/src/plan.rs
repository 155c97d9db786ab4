//! What a run measures and for how long: the command line, turned into budgets.

use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;

use crate::driver::Budget;

/// Benchmarks coherence against the alternatives (direct Redis GET, a PostgreSQL version row,
/// a bare tonic server) side by side, and writes a table, a CSV and an SVG chart.
#[derive(Debug, Clone, Parser)]
#[command(name = "coherence-bench", version)]
pub struct Args {
    /// About one minute in all (short measurement windows; noisier figures).
    #[arg(long)]
    pub quick: bool,
    /// Seconds each measurement runs (default 1 with --quick, else 4).
    #[arg(long)]
    pub seconds: Option<f64>,
    /// Most calls one measurement makes, whatever the time.
    #[arg(long, default_value_t = 20_000_000)]
    pub max_ops: u64,
    /// Concurrency levels (comma-separated).
    #[arg(long, value_delimiter = ',', default_value = "1,16,64")]
    pub concurrency: Vec<usize>,
    /// Keys in the key set every check target is asked about.
    #[arg(long, default_value_t = 1000)]
    pub keys: usize,
    /// Tokio worker threads for both runtimes (load generators and servers); default: one
    /// per CPU. `--client-workers` / `--server-workers` set them apart.
    #[arg(long)]
    pub workers: Option<usize>,
    #[arg(long)]
    pub client_workers: Option<usize>,
    #[arg(long)]
    pub server_workers: Option<usize>,
    /// libpq connection string of the PostgreSQL to compare with (a scratch database is
    /// created and dropped there). Empty skips PostgreSQL.
    #[arg(
        long,
        default_value = "host=127.0.0.1 port=5432 user=postgres dbname=postgres"
    )]
    pub postgres: String,
    /// Connections in the PostgreSQL pool (checks use them round robin by worker).
    #[arg(long, default_value_t = 4)]
    pub pg_pool: usize,
    /// Sections to run (comma-separated): check, observer, bump, propagation, memory, strong,
    /// scale, leases; and, never by default, soak (two phases of --soak-minutes each) and
    /// overload (issue 14's overload workloads, probed for a small Check/Get); both need the
    /// coherence-sidecar binary beside this one.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "check,observer,bump,propagation,memory,strong,scale,leases"
    )]
    pub sections: Vec<String>,
    /// Minutes of each soak phase (steady, then a Redis fault every 30 s).
    #[arg(long, default_value_t = 10.0)]
    pub soak_minutes: f64,
    /// Phases of the soak (comma-separated): steady, faults.
    #[arg(long, value_delimiter = ',', default_value = "steady,faults")]
    pub soak_phases: Vec<String>,
    /// Workloads of the overload section (comma-separated): 0 (no load: the probe alone),
    /// a (200 stalled Watch streams,
    /// 20,000 bumps), b (a stalled Subscribe stream, 2,000 notifications of 60 KiB),
    /// c (abandoned 5,000-key Checks), d (idle connections up to and past max_connections),
    /// e (64 callers sending 10 MB Checks at once, past request_buffer_bytes).
    #[arg(long, value_delimiter = ',', default_value = "0,a,b,c,d,e")]
    pub overload_workloads: Vec<String>,
    /// Where to write results.csv, results.md and chart.svg (and soak.md, overload.md).
    #[arg(long, default_value = "bench/results")]
    pub out: PathBuf,
}

/// Budgets derived from the arguments.
#[derive(Debug, Clone)]
pub struct Plan {
    pub args: Args,
    pub run: Duration,
    pub warmup: Duration,
}

impl Plan {
    pub fn new(args: Args) -> Plan {
        let seconds = args.seconds.unwrap_or(if args.quick { 1.0 } else { 4.0 });
        let run = Duration::from_secs_f64(seconds.clamp(0.1, 600.0));
        Plan {
            warmup: (run / 4).min(Duration::from_secs(1)),
            run,
            args,
        }
    }

    pub fn budget(&self) -> Budget {
        Budget {
            duration: self.run,
            max_ops: self.args.max_ops,
        }
    }

    pub fn warmup_budget(&self) -> Budget {
        Budget {
            duration: self.warmup,
            max_ops: self.args.max_ops,
        }
    }

    /// A longer window for paced (open-loop) runs, which need time to show a tail.
    pub fn paced_budget(&self, rate: u64) -> Budget {
        let duration = self.run * 2;
        Budget {
            duration,
            max_ops: (rate as f64 * duration.as_secs_f64()) as u64 + 1,
        }
    }

    pub fn runs(&self, section: &str) -> bool {
        self.args.sections.iter().any(|s| s == section)
    }

    pub fn levels(&self) -> &[usize] {
        &self.args.concurrency
    }
}
