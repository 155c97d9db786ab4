//! `coherencectl slo`: the fleet's measured consistency, from every sidecar it can reach — each
//! sidecar's audit verdicts and canary propagation (`coherence.v1.Observer/GetSlo`), then the
//! fleet's: nines with the number of decided samples they rest on, and propagation p50/p99.
//!
//! Without `--sidecar`, the sidecars are the live servers the `--addr` sidecar lists (their
//! advertised addresses). Exit code 1 when any reachable sidecar counted a confirmed violation,
//! 3 when none could be reached.

use coherence_proto::v1 as pb;
use coherence_proto::v1::observer_client::ObserverClient;
use coherence_proto::v1::servers_client::ServersClient;
use serde_json::json;

use super::kit::channel;
use super::{exit, GlobalOptions};

#[derive(Debug, clap::Args)]
pub struct SloArgs {
    /// A sidecar to ask (repeatable). Default: every live server the --addr sidecar lists.
    #[arg(long = "sidecar")]
    pub sidecars: Vec<String>,
}

/// Verdict counts and a propagation histogram, of one sidecar or summed over the fleet.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Slo {
    pub correct: u64,
    pub stale_within_bound: u64,
    pub violations: u64,
    pub undecided: u64,
    pub dropped: u64,
    pub bounds: Vec<f64>,
    pub cumulative: Vec<u64>,
}

impl Slo {
    fn from_report(r: &pb::SloReport) -> Slo {
        Slo {
            correct: r.correct,
            stale_within_bound: r.stale_within_bound,
            violations: r.violations,
            undecided: r.undecided,
            dropped: r.dropped,
            bounds: r.propagation_bucket_upper_bounds.clone(),
            cumulative: r.propagation_bucket_cumulative_counts.clone(),
        }
    }

    /// Adds `other`'s counts (histograms with other bucket bounds are left out).
    fn add(&mut self, other: &Slo) {
        self.correct += other.correct;
        self.stale_within_bound += other.stale_within_bound;
        self.violations += other.violations;
        self.undecided += other.undecided;
        self.dropped += other.dropped;
        if self.bounds.is_empty() {
            self.bounds = other.bounds.clone();
            self.cumulative = vec![0; other.cumulative.len()];
        }
        if self.bounds == other.bounds && self.cumulative.len() == other.cumulative.len() {
            for (sum, n) in self.cumulative.iter_mut().zip(&other.cumulative) {
                *sum += n;
            }
        }
    }

    /// Samples decided (correct, stale within the bound, violation): what the nines rest on.
    pub fn decided(&self) -> u64 {
        self.correct + self.stale_within_bound + self.violations
    }

    /// `-log10(violations / decided)`; with no violation, the nines a 95 % upper bound on the
    /// violation rate supports (rule of three: 3 / decided). `None` before any decided sample.
    pub fn nines(&self) -> Option<(f64, bool)> {
        let decided = self.decided() as f64;
        if decided == 0.0 {
            return None;
        }
        if self.violations == 0 {
            return Some(((decided / 3.0).log10().max(0.0), true));
        }
        Some((-(self.violations as f64 / decided).log10(), false))
    }

    /// The `q` quantile of propagation in seconds, interpolated inside its bucket; `None`
    /// without observations, infinity when it lies past the last finite bound.
    pub fn propagation_quantile(&self, q: f64) -> Option<f64> {
        let total = *self.cumulative.last()?;
        if total == 0 {
            return None;
        }
        let rank = q * total as f64;
        let mut lower = (0.0, 0u64);
        for (&bound, &count) in self.bounds.iter().zip(&self.cumulative) {
            if count as f64 >= rank {
                if bound.is_infinite() {
                    return Some(f64::INFINITY);
                }
                let (low, below) = lower;
                let inside = (count - below).max(1) as f64;
                return Some(low + (bound - low) * (rank - below as f64) / inside);
            }
            lower = (bound, count);
        }
        None
    }

    fn propagation_count(&self) -> u64 {
        self.cumulative.last().copied().unwrap_or(0)
    }
}

fn ms(seconds: Option<f64>) -> String {
    match seconds {
        None => "-".into(),
        Some(s) if s.is_infinite() => "> 4 s".into(),
        Some(s) => format!("{:.1} ms", s * 1e3),
    }
}

fn nines_text(slo: &Slo) -> String {
    match slo.nines() {
        None => "no decided sample yet".into(),
        Some((n, true)) => format!(
            "≥ {n:.1} nines (0 violations in {} decided; 95 % bound 3/{})",
            slo.decided(),
            slo.decided()
        ),
        Some((n, false)) => format!(
            "{n:.1} nines ({} violations in {} decided)",
            slo.violations,
            slo.decided()
        ),
    }
}

fn human(name: &str, slo: &Slo) -> String {
    format!(
        "{name}  audited {}  correct {}  stale-within-bound {}  violations {}  undecided {}  dropped {}  {}  propagation p50 {} p99 {} ({} canaries)",
        slo.decided() + slo.undecided,
        slo.correct,
        slo.stale_within_bound,
        slo.violations,
        slo.undecided,
        slo.dropped,
        nines_text(slo),
        ms(slo.propagation_quantile(0.5)),
        ms(slo.propagation_quantile(0.99)),
        slo.propagation_count(),
    )
}

fn as_json(name: &str, slo: &Slo) -> serde_json::Value {
    let finite = |v: Option<f64>| v.filter(|s| s.is_finite()).map(|s| s * 1e3);
    json!({
        "sidecar": name,
        "audited": slo.decided() + slo.undecided,
        "correct": slo.correct,
        "stale_within_bound": slo.stale_within_bound,
        "violations": slo.violations,
        "undecided": slo.undecided,
        "dropped": slo.dropped,
        "decided": slo.decided(),
        "nines": slo.nines().map(|(n, _)| n),
        "nines_is_lower_bound": slo.nines().map(|(_, bound)| bound),
        "propagation_p50_ms": finite(slo.propagation_quantile(0.5)),
        "propagation_p99_ms": finite(slo.propagation_quantile(0.99)),
        "propagation_count": slo.propagation_count(),
    })
}

/// The sidecars to ask: those named, or every live server `--addr` lists (or `--addr` alone
/// when it lists none).
async fn sidecars(args: SloArgs, global: &GlobalOptions) -> Vec<String> {
    if !args.sidecars.is_empty() {
        return args.sidecars;
    }
    let listed = match channel(global).await {
        Ok(ch) => ServersClient::new(ch)
            .list_servers(pb::ListServersRequest {})
            .await
            .map(|r| r.into_inner().servers)
            .unwrap_or_default(),
        Err(_) => Vec::new(),
    };
    let addresses: Vec<String> = listed.into_iter().map(|s| s.address).collect();
    if addresses.is_empty() {
        vec![global.addr.clone()]
    } else {
        addresses
    }
}

async fn report(global: &GlobalOptions) -> anyhow::Result<pb::SloReport> {
    let mut client = ObserverClient::new(channel(global).await?);
    Ok(client
        .get_slo(pb::GetSloRequest {})
        .await
        .map_err(|s| super::kit::call_error(s, global))?
        .into_inner())
}

pub async fn run(args: SloArgs, global: &GlobalOptions) -> anyhow::Result<u8> {
    let out = global.output();
    let mut fleet = Slo::default();
    let (mut reached, mut failed) = (0, 0);
    for address in sidecars(args, global).await {
        let one = GlobalOptions {
            addr: address.clone(),
            ..global.clone()
        };
        match report(&one).await {
            Ok(r) => {
                reached += 1;
                let slo = Slo::from_report(&r);
                let name = format!("{} ({address})", r.server_id);
                out.line(|| human(&name, &slo), || as_json(&name, &slo));
                fleet.add(&slo);
            }
            Err(err) => {
                failed += 1;
                out.line(
                    || format!("{address}  unreachable: {err:#}"),
                    || json!({ "sidecar": address, "unreachable": format!("{err:#}") }),
                );
            }
        }
    }
    if reached == 0 {
        return Ok(exit::UNAVAILABLE);
    }
    let name = format!("fleet ({reached} sidecars reached, {failed} not)");
    out.line(|| human(&name, &fleet), || as_json("fleet", &fleet));
    Ok(if fleet.violations > 0 {
        exit::STALE
    } else {
        exit::OK
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn slo(correct: u64, violations: u64, cumulative: Vec<u64>) -> Slo {
        Slo {
            correct,
            violations,
            bounds: vec![0.001, 0.002, 0.004, f64::INFINITY],
            cumulative,
            ..Slo::default()
        }
    }

    #[test]
    fn nines_count_violations_against_decided_samples_and_bound_a_clean_run() {
        let clean = slo(30_000, 0, vec![]);
        assert_eq!(clean.nines(), Some((4.0, true)));
        let one_in_a_thousand = slo(999, 1, vec![]);
        let (n, bound) = one_in_a_thousand.nines().unwrap();
        assert!((n - 3.0).abs() < 1e-9 && !bound);
        assert_eq!(Slo::default().nines(), None);
    }

    #[test]
    fn propagation_quantiles_interpolate_inside_buckets_and_merge_across_sidecars() {
        let mut fleet = Slo::default();
        fleet.add(&slo(0, 0, vec![0, 10, 10, 10]));
        fleet.add(&slo(0, 0, vec![0, 0, 10, 10]));
        assert_eq!(fleet.cumulative, vec![0, 10, 20, 20]);
        assert!((fleet.propagation_quantile(0.5).unwrap() - 0.002).abs() < 1e-9);
        assert!((fleet.propagation_quantile(0.25).unwrap() - 0.0015).abs() < 1e-9);
        assert!((fleet.propagation_quantile(0.99).unwrap() - 0.00396).abs() < 1e-9);
        let tail = slo(0, 0, vec![0, 0, 0, 5]);
        assert_eq!(tail.propagation_quantile(0.5), Some(f64::INFINITY));
        assert_eq!(Slo::default().propagation_quantile(0.5), None);
    }
}
