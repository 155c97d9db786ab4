//! Latency samples and what the report says about them: throughput and percentiles.
//!
//! Every measured call's latency is kept (runs are bounded in count, so this stays small) and
//! percentiles are read by nearest rank from the sorted samples — no histogram buckets, so
//! p999 of a few thousand calls is an actual observed call, not an interpolation.

use std::time::Duration;

/// What one measurement produced.
#[derive(Debug, Clone, Default)]
pub struct Samples {
    /// Latency of each successful call, in nanoseconds.
    pub latencies_ns: Vec<u64>,
    /// Calls that succeeded.
    pub ops: u64,
    /// Work units done by the successful calls (keys checked, for batches; else = ops).
    pub units: u64,
    /// Calls that failed.
    pub errors: u64,
    /// Wall-clock time of the whole run.
    pub elapsed: Duration,
}

impl Samples {
    /// Merges per-worker samples of one run that took `elapsed`.
    pub fn merge(parts: Vec<Samples>, elapsed: Duration) -> Samples {
        let mut all = Samples {
            elapsed,
            ..Samples::default()
        };
        for p in parts {
            all.latencies_ns.extend(p.latencies_ns);
            all.ops += p.ops;
            all.units += p.units;
            all.errors += p.errors;
        }
        all.latencies_ns.sort_unstable();
        all
    }

    /// Successful calls per second.
    pub fn ops_per_sec(&self) -> f64 {
        per_sec(self.ops, self.elapsed)
    }

    /// Work units per second (keys/s for batched checks).
    pub fn units_per_sec(&self) -> f64 {
        per_sec(self.units, self.elapsed)
    }

    /// The `q`-quantile (0..=1) of the latencies, nearest rank; `None` without samples.
    /// Expects sorted samples, as [`Samples::merge`] leaves them.
    pub fn quantile(&self, q: f64) -> Option<Duration> {
        nearest_rank(&self.latencies_ns, q).map(Duration::from_nanos)
    }
}

fn per_sec(count: u64, elapsed: Duration) -> f64 {
    let secs = elapsed.as_secs_f64();
    if secs > 0.0 {
        count as f64 / secs
    } else {
        0.0
    }
}

/// Nearest-rank quantile of sorted values.
pub fn nearest_rank(sorted: &[u64], q: f64) -> Option<u64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = (q.clamp(0.0, 1.0) * sorted.len() as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_picks_observed_values() {
        let v: Vec<u64> = (1..=1000).collect();
        assert_eq!(nearest_rank(&v, 0.5), Some(500));
        assert_eq!(nearest_rank(&v, 0.99), Some(990));
        assert_eq!(nearest_rank(&v, 0.999), Some(999));
        assert_eq!(nearest_rank(&v, 1.0), Some(1000));
        assert_eq!(nearest_rank(&v, 0.0), Some(1));
        assert_eq!(nearest_rank(&[], 0.5), None);
        assert_eq!(nearest_rank(&[7], 0.999), Some(7));
    }

    #[test]
    fn merge_sorts_and_sums() {
        let a = Samples {
            latencies_ns: vec![30, 10],
            ops: 2,
            units: 200,
            errors: 1,
            elapsed: Duration::ZERO,
        };
        let b = Samples {
            latencies_ns: vec![20],
            ops: 1,
            units: 100,
            errors: 0,
            elapsed: Duration::ZERO,
        };
        let m = Samples::merge(vec![a, b], Duration::from_secs(2));
        assert_eq!(m.latencies_ns, vec![10, 20, 30]);
        assert_eq!(m.ops, 3);
        assert_eq!(m.units_per_sec(), 150.0);
        assert_eq!(m.quantile(0.5), Some(Duration::from_nanos(20)));
    }
}
