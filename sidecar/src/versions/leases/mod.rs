//! Read leases (issue 18): strong checks answered from the mirror, safely.
//!
//! A sidecar with `read_lease_ms` > 0 is a lease *holder* ([`holder`]): it takes a grant per
//! shard through the shard script and, while the grant is valid by its own monotonic clock and
//! its mirror is trustworthy, answers `CONSISTENCY_STRONG` from the mirror. Every sidecar is a
//! *bumper* ([`bumper`]): a call that issued versions returns only once every holder listed in
//! the shard's lease table has acknowledged the new sequence or its lease has run out by the
//! bumper's own clock. No clock is compared with another: the holder counts from the instant it
//! *sent* its grant request, the bumper from the instant it first *saw* that grant, so the
//! holder's view always ends first (docs/design.md, "Read leases", has the proof sketch).

pub mod bumper;
pub mod holder;
pub mod mirrors;

use std::sync::Arc;
use std::time::Duration;

/// Most a clock's rate may differ from real time, in parts per million (ρ = 0.1 %).
pub const DRIFT_PPM: u32 = 1_000;

/// Longest `read_lease_ms` accepted: the margin must also cover 2ρ of a lease period.
pub const MAX_READ_LEASE_MS: u64 = 10_000;

/// The lease-table field of the quarantine that follows a new epoch (see `shard.lua`).
pub const QUARANTINE_FIELD: &str = "!q";

/// A sidecar's read leases: its own, when it holds any, the ones it passed on to client
/// mirrors, and its view of others'.
pub struct Leases {
    pub holder: Option<holder::Holder>,
    pub mirrors: Arc<mirrors::MirrorLeases>,
    pub bumper: bumper::Bumper,
}

impl Leases {
    /// `max_mirror_leases`: how many client mirrors may hold leases from this sidecar.
    pub fn new(
        server_id: &str,
        shards: u32,
        settings: LeaseSettings,
        max_mirror_leases: usize,
    ) -> Leases {
        let holder = settings
            .enabled()
            .then(|| holder::Holder::new(server_id, shards, settings));
        let mirrors = Arc::new(mirrors::MirrorLeases::new(settings, max_mirror_leases));
        // A bumper need not wait for itself — its mirror learnt the versions before the call
        // returns — unless client mirrors hold leases from it: they learn only through its
        // acknowledgement path (docs/design.md, "Read leases in client mirrors").
        let own = holder
            .as_ref()
            .filter(|_| !mirrors.enabled())
            .map(|h| h.id.clone());
        Leases {
            holder,
            mirrors,
            bumper: bumper::Bumper::new(shards, settings, own),
        }
    }
}

/// How leases are timed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeaseSettings {
    /// `read_lease_ms`; zero: this sidecar holds no leases (it still waits for others').
    pub period: Duration,
    /// `read_lease_margin_ms`, added by bumpers and taken off by holders.
    pub margin: Duration,
}

impl LeaseSettings {
    pub fn enabled(&self) -> bool {
        !self.period.is_zero()
    }

    /// How long after sending its grant request a holder may answer under the grant:
    /// `period · (1 − ρ) − margin`.
    pub fn holder_term(&self) -> Duration {
        slower(self.period).saturating_sub(self.margin)
    }

    /// How long after first seeing a grant of `period` a bumper counts it possibly live:
    /// `period · (1 + ρ) + margin`.
    pub fn bumper_bound(&self, period: Duration) -> Duration {
        period + period * DRIFT_PPM / 1_000_000 + self.margin
    }
}

/// `d · (1 − ρ)`.
pub fn slower(d: Duration) -> Duration {
    d - d * DRIFT_PPM / 1_000_000
}

/// The lease period a lease-table value carries (`…|<lease_ms>`); `None` when malformed,
/// which bumpers read as the longest period accepted.
pub fn period_of(value: &str) -> Duration {
    let ms = value
        .rsplit_once('|')
        .and_then(|(_, ms)| ms.parse::<u64>().ok())
        .unwrap_or(MAX_READ_LEASE_MS)
        .min(MAX_READ_LEASE_MS);
    Duration::from_millis(ms)
}

/// What a lease-table entry is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Entry {
    /// A holder's grant: wait for its acknowledgement or its expiry.
    Holder,
    /// The quarantine after a new epoch: wait for its expiry.
    Quarantine,
    /// A holder a bumper gave up on (`q|…`): nothing to wait for.
    Marker,
}

pub fn entry_kind(field: &str, value: &str) -> Entry {
    if field == QUARANTINE_FIELD {
        Entry::Quarantine
    } else if value.starts_with("q|") {
        Entry::Marker
    } else {
        Entry::Holder
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_holder_always_stops_before_the_bumper() {
        let s = LeaseSettings {
            period: Duration::from_millis(10_000),
            margin: Duration::from_millis(20),
        };
        assert_eq!(s.holder_term(), Duration::from_millis(9_970));
        assert_eq!(s.bumper_bound(s.period), Duration::from_millis(10_030));
        assert_eq!(period_of("7|2000"), Duration::from_millis(2_000));
        assert_eq!(period_of("junk"), Duration::from_millis(MAX_READ_LEASE_MS));
        assert_eq!(entry_kind("!q", "e|100"), Entry::Quarantine);
        assert_eq!(entry_kind("a|b", "q|e|3|100"), Entry::Marker);
        assert_eq!(entry_kind("a|b", "3|100"), Entry::Holder);
    }
}
