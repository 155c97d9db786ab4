//! Test-only faults, compiled only with the `fault-injection` feature (never in release
//! builds): they break a guarantee on purpose so that tests can show the consistency auditor
//! sees it.

use std::sync::Mutex;

/// Faults switched on by a test.
#[derive(Default)]
pub struct Faults {
    skip_prefix: Mutex<Option<String>>,
}

impl Faults {
    /// From now on the subscription silently skips every invalidation of a key under
    /// `prefix`: the shard's sequence advances (so no gap is detected) but the mirror keeps
    /// the superseded version. `None` turns the fault off.
    pub fn skip_invalidations_under(&self, prefix: Option<&str>) {
        let mut g = match self.skip_prefix.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        *g = prefix.map(str::to_string);
    }

    /// Whether the invalidation of `key` is to be skipped.
    pub fn skips(&self, key: &str) -> bool {
        match self.skip_prefix.lock() {
            Ok(g) => g.as_deref().is_some_and(|p| key.starts_with(p)),
            Err(p) => p
                .into_inner()
                .as_deref()
                .is_some_and(|p| key.starts_with(p)),
        }
    }
}
