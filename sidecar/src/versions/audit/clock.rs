//! This sidecar's estimate of the offset between Redis's clock and its own wall clock, and the
//! propagation measurement that uses it (see [`super::canary`]).

use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::metrics::audit::Propagation;

/// No offset estimate yet.
const UNKNOWN: i64 = i64::MIN;

/// This sidecar's estimate of Redis's clock minus its own wall clock.
pub struct ClockOffset {
    offset_us: AtomicI64,
}

impl Default for ClockOffset {
    fn default() -> Self {
        ClockOffset {
            offset_us: AtomicI64::new(UNKNOWN),
        }
    }
}

/// Our wall clock, in microseconds since the Unix epoch.
pub fn wall_us() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as i64)
}

impl ClockOffset {
    /// Records the propagation of a canary bump this sidecar's mirror just applied.
    pub fn observe(&self, propagation: &Propagation, bumped_at_unix_ms: u64) {
        let offset = self.offset_us.load(Ordering::Relaxed);
        if offset == UNKNOWN || bumped_at_unix_ms == 0 {
            return;
        }
        let redis_now_us = wall_us() + offset;
        let took_us = redis_now_us - bumped_at_unix_ms as i64 * 1_000;
        propagation.observe(took_us.max(0) as f64 / 1e6);
    }

    pub fn set_offset(&self, offset_us: i64) {
        self.offset_us.store(offset_us, Ordering::Relaxed);
    }
}
