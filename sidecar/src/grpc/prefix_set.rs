//! The key prefixes one Watch stream asked for, matched per event without scanning them all.
//!
//! A stream may name up to `max_watch_prefixes` prefixes, and every invalidation is matched
//! against every stream's set: a linear scan would cost (streams × prefixes) comparisons per
//! event. The set keeps only the prefixes no shorter one already covers, sorted; in such a
//! prefix-free sorted list the only prefix that can match a key is the greatest one not
//! after it, found by binary search: O(log n) comparisons per event. It holds the prefixes'
//! bytes and a pointer each, nothing more (bounded by `max_watch_prefix_bytes`).

/// A set of key prefixes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PrefixSet {
    /// Sorted, and no element is a prefix of another. Empty with `all` set: every key matches.
    prefixes: Vec<Box<[u8]>>,
    all: bool,
}

impl PrefixSet {
    /// The set of `prefixes`; none, or an empty one, matches every key.
    pub fn new(prefixes: &[String]) -> PrefixSet {
        if prefixes.is_empty() || prefixes.iter().any(String::is_empty) {
            return PrefixSet {
                prefixes: Vec::new(),
                all: true,
            };
        }
        let mut sorted: Vec<&[u8]> = prefixes.iter().map(|p| p.as_bytes()).collect();
        sorted.sort_unstable();
        let mut kept: Vec<Box<[u8]>> = Vec::with_capacity(sorted.len());
        for prefix in sorted {
            // Whatever lies between a kept prefix and a word it begins in sorted order begins
            // with it too, so only the last kept one can cover `prefix`.
            if kept.last().is_some_and(|last| prefix.starts_with(last)) {
                continue;
            }
            kept.push(prefix.into());
        }
        PrefixSet {
            prefixes: kept,
            all: false,
        }
    }

    /// Whether `key` begins with one of the prefixes.
    pub fn matches(&self, key: &str) -> bool {
        if self.all {
            return true;
        }
        let key = key.as_bytes();
        let after = self.prefixes.partition_point(|p| &**p <= key);
        after > 0 && key.starts_with(&self.prefixes[after - 1])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(prefixes: &[&str]) -> PrefixSet {
        PrefixSet::new(&prefixes.iter().map(|p| p.to_string()).collect::<Vec<_>>())
    }

    #[test]
    fn matches_exactly_what_a_linear_scan_matches() {
        let prefixes = ["content", "con", "media:", "m", "x:1", "x:10", "zz"];
        let s = set(&prefixes);
        for key in [
            "content:1",
            "co",
            "con",
            "cont",
            "media:4",
            "m",
            "a",
            "x:1",
            "x:100",
            "x:2",
            "z",
            "zz",
            "zzz",
            "",
            "~",
        ] {
            let linear = prefixes.iter().any(|p| key.starts_with(p));
            assert_eq!(s.matches(key), linear, "{key}");
        }
        assert!(set(&[]).matches("anything"));
        assert!(set(&["a", ""]).matches("b"));
        assert_eq!(set(&["ab", "a", "abc"]).prefixes.len(), 1);
    }
}
