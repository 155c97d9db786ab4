//! Test-only switches that turn one safety mechanism off, for the negative controls
//! (`tests/negative_controls.rs`): a test runs a fault with a mechanism off and requires the
//! history checker to report violations, so that the checker and the fault are shown able to
//! catch what the mechanism prevents.
//!
//! The switches exist only with the cargo feature `fault-injection`, which nothing but the
//! workspace's tests enables (the root crate's dev-dependency): a release build has no switch,
//! no setter and no altered script, and [`off`] is a constant `false` there that the compiler
//! removes with the code it guards. Every switch is off by default and is set only by test code
//! through [`disable`], never from configuration. The switches are process-wide: a test that
//! uses them must not run beside another sidecar test in the same process (the negative
//! controls take a lock). The two switches of `shard.lua` act in eval mode only (`redis_scripts`):
//! in functions mode the sidecar calls the library an administrator loaded.

/// A safety mechanism a negative control can turn off.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mechanism {
    /// `shard.lua` starts a new epoch when the shard was last served by another Redis process
    /// (its run id changed: restart, restore, failover).
    Incarnation,
    /// `shard.lua` starts a new epoch when Redis shows a lower sequence in the epoch than the
    /// caller has already seen (data rolled back inside one process).
    RollbackCheck,
    /// The subscription notices a sequence gap (an invalidation ahead of the next one, or a
    /// fence ahead of the mirror) and repairs it from the replay log. Off: the gap is ignored.
    GapRepair,
    /// A mirror shard answers only while its last returned fence is younger than
    /// `max_staleness`. Off: a synced shard answers however old its last fence is.
    FenceAge,
    /// Periodic reconciliation re-reads every mirrored version. Off: it never runs a round.
    Reconciliation,
    /// A shard synced for the first time is announced to watchers with a `Resync`. Off: it is
    /// reset without telling them.
    FirstSyncResync,
    /// A read-lease holder acknowledges a position to Redis only once the client mirrors holding
    /// its leases applied it (or their leases ran out). Off: it acknowledges at once.
    MirrorAckWait,
}

#[cfg(feature = "fault-injection")]
mod switches {
    use std::sync::atomic::{AtomicU8, Ordering};

    use super::Mechanism;

    static DISABLED: AtomicU8 = AtomicU8::new(0);

    fn bit(mechanism: Mechanism) -> u8 {
        1 << mechanism as u8
    }

    /// Whether `mechanism` is turned off now.
    pub fn off(mechanism: Mechanism) -> bool {
        DISABLED.load(Ordering::SeqCst) & bit(mechanism) != 0
    }

    /// Turns `mechanism` off until the returned guard is dropped.
    #[must_use = "the mechanism is back on when the guard is dropped"]
    pub fn disable(mechanism: Mechanism) -> Disabled {
        DISABLED.fetch_or(bit(mechanism), Ordering::SeqCst);
        Disabled(mechanism)
    }

    /// Keeps a mechanism off while it lives (also when a test panics).
    #[derive(Debug)]
    pub struct Disabled(Mechanism);

    impl Drop for Disabled {
        fn drop(&mut self) {
            DISABLED.fetch_and(!bit(self.0), Ordering::SeqCst);
        }
    }
}

#[cfg(feature = "fault-injection")]
pub use switches::{disable, off, Disabled};

/// Whether `mechanism` is turned off: never, without the `fault-injection` feature.
#[cfg(not(feature = "fault-injection"))]
#[inline(always)]
pub const fn off(_mechanism: Mechanism) -> bool {
    false
}
