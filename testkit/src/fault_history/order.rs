//! When a version stopped being current, worked out from a history: the two ways the checker
//! knows that a token was superseded, and an index that answers "since when" quickly.
//!
//! - **By time**: a bump of the key that *began* after some operation had returned the token
//!   ran its script after the token existed, so it issued a newer version; the token was
//!   superseded when that bump completed.
//! - **By version order**: tokens are `<epoch>.<seq>.<nonce>` and within one epoch a shard's
//!   sequence only grows, so a version of the key with the same epoch and a higher sequence is
//!   newer. Once any operation has returned it (at the latest when it ended), the token was
//!   superseded. This is what places overlapping bumps, whose start and end say nothing about
//!   their order: B1 issuing `E.41.a` and B2 issuing `E.42.b` while B1 ran.
//!
//! Versions of different epochs are never compared by order (an epoch is a random name); the
//! time rule still covers them.

use std::collections::HashMap;
use std::time::Instant;

/// `(epoch, sequence)` of a token, `None` for one that is not `<epoch>.<seq>.<nonce>`.
pub fn order(token: &str) -> Option<(&str, u64)> {
    let mut parts = token.splitn(3, '.');
    let epoch = parts.next()?;
    let seq = parts.next()?.parse().ok()?;
    parts.next()?;
    Some((epoch, seq))
}

/// Earliest-instant lookups over one set of events.
#[derive(Default)]
pub struct Index {
    /// Per key: bumps sorted by start, and the earliest end among each one and those after it.
    by_start: HashMap<String, (Vec<Instant>, Vec<Instant>)>,
    /// Per key and epoch: versions sorted by sequence, and the earliest instant each one or a
    /// later one was known to exist.
    by_order: HashMap<(String, String), (Vec<u64>, Vec<Instant>)>,
}

impl Index {
    /// `bumps`: completed bumps as `(key, start, end)`; `versions`: `(key, token, instant by
    /// which the token existed)`.
    pub fn new<'a>(
        bumps: impl IntoIterator<Item = (&'a str, Instant, Instant)>,
        versions: impl IntoIterator<Item = (&'a str, &'a str, Instant)>,
    ) -> Index {
        let mut starts: HashMap<&str, Vec<(Instant, Instant)>> = HashMap::new();
        for (key, start, end) in bumps {
            starts.entry(key).or_default().push((start, end));
        }
        let by_start = starts
            .into_iter()
            .map(|(key, mut bumps)| {
                bumps.sort_by_key(|(start, _)| *start);
                let keys = bumps.iter().map(|(s, _)| *s).collect();
                (
                    key.to_string(),
                    (keys, suffix_min(bumps.iter().map(|b| b.1))),
                )
            })
            .collect();
        let mut orders: HashMap<(&str, &str), Vec<(u64, Instant)>> = HashMap::new();
        for (key, token, at) in versions {
            if let Some((epoch, seq)) = order(token) {
                orders.entry((key, epoch)).or_default().push((seq, at));
            }
        }
        let by_order = orders
            .into_iter()
            .map(|((key, epoch), mut versions)| {
                versions.sort_by_key(|(seq, _)| *seq);
                let seqs = versions.iter().map(|(s, _)| *s).collect();
                (
                    (key.to_string(), epoch.to_string()),
                    (seqs, suffix_min(versions.iter().map(|v| v.1))),
                )
            })
            .collect();
        Index { by_start, by_order }
    }

    /// The earliest instant at which `token` of `key` is known to have been superseded, given
    /// that an operation returned it by `seen` (if any did).
    pub fn superseded_at(&self, key: &str, token: &str, seen: Option<Instant>) -> Option<Instant> {
        let by_time = seen.and_then(|seen| {
            let (starts, ends) = self.by_start.get(key)?;
            ends.get(starts.partition_point(|s| *s <= seen)).copied()
        });
        let by_order = order(token).and_then(|(epoch, seq)| {
            let (seqs, ats) = self.by_order.get(&(key.to_string(), epoch.to_string()))?;
            ats.get(seqs.partition_point(|s| *s <= seq)).copied()
        });
        match (by_time, by_order) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }
}

fn suffix_min(instants: impl DoubleEndedIterator<Item = Instant>) -> Vec<Instant> {
    let mut out: Vec<Instant> = instants
        .rev()
        .scan(None::<Instant>, |min, at| {
            let m = min.map_or(at, |m: Instant| m.min(at));
            *min = Some(m);
            Some(m)
        })
        .collect();
    out.reverse();
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn parses_tokens() {
        assert_eq!(order("e1.42.ab"), Some(("e1", 42)));
        assert_eq!(order("e1.x.ab"), None);
        assert_eq!(order("v1"), None);
        assert_eq!(order("e1.42"), None);
    }

    #[test]
    fn finds_the_earliest_by_either_rule() {
        let t0 = Instant::now();
        let ms = |n| t0 + Duration::from_millis(n);
        let index = Index::new(
            [
                ("k", ms(10), ms(50)),
                ("k", ms(20), ms(30)),
                ("j", ms(0), ms(1)),
            ],
            [
                ("k", "e.5.a", ms(40)),
                ("k", "e.7.b", ms(35)),
                ("k", "f.9.c", ms(5)),
            ],
        );
        // By time: bumps that began after 15 ms; the one that began at 20 ended first.
        assert_eq!(index.superseded_at("k", "x", Some(ms(15))), Some(ms(30)));
        assert_eq!(index.superseded_at("k", "x", Some(ms(25))), None);
        // By order: e.6 < e.7 (known at 35 ms); e.4 < e.5 and e.7, e.7 first known at 35.
        assert_eq!(index.superseded_at("k", "e.6.z", None), Some(ms(35)));
        assert_eq!(index.superseded_at("k", "e.4.z", None), Some(ms(35)));
        assert_eq!(index.superseded_at("k", "e.7.b", None), None);
        // Another epoch is not ordered; another key is not this key.
        assert_eq!(index.superseded_at("k", "g.1.z", None), None);
        assert_eq!(index.superseded_at("j", "e.1.z", None), None);
        // Both rules: the earlier wins.
        assert_eq!(index.superseded_at("k", "e.4.z", Some(ms(5))), Some(ms(30)));
    }
}
