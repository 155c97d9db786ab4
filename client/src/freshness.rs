//! The three answers to "is this stamped version still current?".
//!
//! A boolean folds "superseded" and "nobody could vouch for it" into one `false`, which is the
//! right answer for serving (fail closed) but the wrong one for counting: an app that sees its
//! cache's stale count jump cannot tell a burst of writes from a sidecar outage.
//! [`Freshness`] keeps the two apart.

use crate::client::{CheckResult, CheckSource};

/// Whether a stamped version is current, and if not, whether it was proven superseded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Freshness {
    /// The version is current (within the consistency asked for).
    Current,
    /// A newer version exists: the entry is superseded.
    Stale,
    /// Nothing could vouch for the version (sidecar unreachable, Redis down, deadline passed):
    /// treat it as not current (fail closed), but it may well be current.
    Unverifiable,
}

impl Freshness {
    /// Whether the version may be served: only [`Freshness::Current`].
    pub fn is_current(self) -> bool {
        self == Freshness::Current
    }

    /// The freshness a sidecar's check answer proves.
    pub(crate) fn of(result: &CheckResult) -> Freshness {
        match (result.current, result.source) {
            (_, CheckSource::FailClosed) => Freshness::Unverifiable,
            (true, _) => Freshness::Current,
            (false, _) => Freshness::Stale,
        }
    }
}
