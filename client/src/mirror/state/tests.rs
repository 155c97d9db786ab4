//! The map's rules, one race at a time, without a sidecar: fills against invalidations,
//! resyncs and evictions, positions across epochs, and trust against fence ages.

use std::time::Duration;

use super::*;
use crate::mirror::options::DEFAULT_MAX_STALENESS;

fn v(token: &str) -> Version {
    Version::from_token(token)
}

fn trusted_state() -> MirrorState {
    let state = MirrorState::new(&MirrorOptions::default());
    state.vouch();
    state.heartbeat(Some(Duration::ZERO), None);
    state
}

#[test]
fn a_fill_answers_locally_while_trusted() {
    let state = trusted_state();
    state.fill("k", v("1.1.a"), state.generation(), None);
    assert_eq!(state.local_check("k", &v("1.1.a")), Some(true));
    assert_eq!(state.local_check("k", &v("1.0.z")), Some(false));
    assert_eq!(state.local_check("other", &v("1.1.a")), None);
}

#[test]
fn a_full_mirror_evicts_an_eighth_and_stays_bounded() {
    let state = MirrorState::new(&MirrorOptions::default().max_entries(800));
    state.vouch();
    for i in 0..5_000 {
        state.fill(&format!("k{i}"), v("1.1.a"), state.generation(), None);
    }
    assert!(state.len() <= 800, "{} entries", state.len());
    assert!(state.len() >= 700, "not emptied: {}", state.len());
    // The fill that finds the map full began before the eviction it causes: refused.
    let stats = state.stats();
    assert_eq!(
        stats.evictions + stats.fills_refused + state.len() as u64,
        5_000
    );
    assert_eq!(stats.resyncs, 0);
}

/// The race eviction must not open: a fill that began before an invalidation completes after
/// that key was evicted. Storing it would make the superseded version current again.
#[test]
fn a_fill_older_than_an_evicted_entry_is_refused() {
    let state = MirrorState::new(&MirrorOptions::default().max_entries(1));
    state.vouch();
    state.heartbeat(Some(Duration::ZERO), None);
    let asked_at = state.generation();
    state.invalidate("k", v("1.2.b"), None);
    state.invalidate("other", v("1.3.c"), None);
    assert_eq!(state.local_check("k", &v("1.2.b")), None, "k was evicted");
    state.fill("k", v("1.1.a"), asked_at, None);
    assert_eq!(
        state.local_check("k", &v("1.1.a")),
        None,
        "the superseded version must not be mirrored"
    );
    state.fill("k", v("1.2.b"), state.generation(), None);
    assert_eq!(state.local_check("k", &v("1.2.b")), Some(true));
}

#[test]
fn an_invalidation_during_a_fill_wins() {
    let state = trusted_state();
    let asked_at = state.generation();
    state.invalidate("k", v("1.2.b"), None);
    // The answer to the fill was computed before the bump: it must not overwrite it.
    state.fill("k", v("1.1.a"), asked_at, None);
    assert_eq!(
        state.local_check("k", &v("1.1.a")),
        None,
        "the old version is never current"
    );
    assert_eq!(state.stats().fills_refused, 1);
}

#[test]
fn a_fill_agreeing_with_a_newer_invalidation_keeps_it() {
    let state = trusted_state();
    let asked_at = state.generation();
    state.invalidate("k", v("1.2.b"), None);
    state.fill("k", v("1.2.b"), asked_at, None);
    assert_eq!(state.local_check("k", &v("1.2.b")), Some(true));
}

#[test]
fn a_tombstone_is_not_revived_by_an_older_fill() {
    let state = trusted_state();
    let early = state.generation();
    state.invalidate("k", v("1.2.b"), None);
    state.fill("k", v("1.1.a"), early, None); // tombstone
    state.fill("k", v("1.1.a"), early, None); // another stale answer
    assert_eq!(state.local_check("k", &v("1.1.a")), None);
    state.invalidate("k", v("1.3.c"), None);
    assert_eq!(state.local_check("k", &v("1.3.c")), Some(true));
}

#[test]
fn a_resync_during_a_fill_refuses_it() {
    let state = trusted_state();
    let asked_at = state.generation();
    state.resync("test");
    state.fill("k", v("1.1.a"), asked_at, None);
    assert_eq!(state.len(), 0);
    state.fill("k", v("1.1.a"), state.generation(), None);
    assert_eq!(state.len(), 1);
}

#[test]
fn trust_follows_the_fence_age() {
    let state = trusted_state();
    assert!(state.is_trusted());
    state.heartbeat(None, None);
    assert!(
        !state.is_trusted(),
        "a sidecar that cannot vouch makes the mirror untrusted"
    );
    state.heartbeat(Some(DEFAULT_MAX_STALENESS), None);
    assert!(
        !state.is_trusted(),
        "a fence as old as max_staleness proves nothing"
    );
    state.heartbeat(Some(Duration::from_millis(100)), None);
    assert!(state.is_trusted());
}

/// A fill asked before the sidecar vouched for the stream may predate bumps the sidecar
/// never announced (it was not subscribed yet): it must not be kept.
#[test]
fn a_fill_asked_before_the_stream_vouched_is_refused() {
    let state = MirrorState::new(&MirrorOptions::default());
    let asked_before = state.generation();
    state.vouch();
    state.heartbeat(Some(Duration::ZERO), None);
    state.fill("k", v("1.1.a"), asked_before, None);
    assert_eq!(state.local_check("k", &v("1.1.a")), None);
    state.fill("k", v("1.1.a"), state.generation(), None);
    assert_eq!(state.local_check("k", &v("1.1.a")), Some(true));
}

fn at(epoch: &str, sequence: u64) -> Option<Position> {
    Some(Position {
        epoch: epoch.to_string(),
        sequence,
    })
}

/// Own writes (guarantee 7) against the two races a Python port of the old rule showed:
/// a concurrent check's answer, asked in the same generation as the bump, arriving after
/// the bump's answer; and an older bump's invalidation arriving after the newer bump's
/// answer. Positions order them; generations could not.
#[test]
fn an_own_bump_is_never_overwritten_by_older_knowledge() {
    let state = trusted_state();
    let asked_at = state.generation();
    // The bump's answer: v3 as of sequence 15.
    state.fill("k", v("e.15.c"), asked_at, at("e", 15).as_ref());
    // A check asked at the same generation answers v2 as of 12: older, refused.
    state.fill("k", v("e.12.b"), asked_at, at("e", 12).as_ref());
    assert_eq!(state.local_check("k", &v("e.15.c")), Some(true));
    assert_eq!(state.local_check("k", &v("e.12.b")), Some(false));
    // An older bump's invalidation arrives late: ignored.
    state.invalidate("k", v("e.14.x"), at("e", 14).as_ref());
    assert_eq!(state.local_check("k", &v("e.15.c")), Some(true));
    assert_eq!(state.local_check("k", &v("e.14.x")), Some(false));
    // The bump's own invalidation, then a newer one, move it on as usual.
    state.invalidate("k", v("e.15.c"), at("e", 15).as_ref());
    assert_eq!(state.local_check("k", &v("e.15.c")), Some(true));
    state.invalidate("k", v("e.16.d"), at("e", 16).as_ref());
    assert_eq!(state.local_check("k", &v("e.16.d")), Some(true));
    assert_eq!(state.local_check("k", &v("e.15.c")), Some(false));
}

/// A late fill is refused by position even when it began after the invalidation it lost
/// to was applied (the generation rule alone would accept it), and a newer read replaces
/// an invalidation it overtook.
#[test]
fn positions_order_fills_and_invalidations_both_ways() {
    let state = trusted_state();
    state.invalidate("k", v("e.20.b"), at("e", 20).as_ref());
    let asked_after = state.generation();
    state.fill("k", v("e.19.a"), asked_after, at("e", 19).as_ref());
    assert_eq!(state.local_check("k", &v("e.19.a")), Some(false));
    state.fill("k", v("e.21.c"), asked_after, at("e", 23).as_ref());
    assert_eq!(state.local_check("k", &v("e.21.c")), Some(true));
    state.invalidate("k", v("e.21.c"), at("e", 21).as_ref());
    assert_eq!(
        state.local_check("k", &v("e.21.c")),
        Some(true),
        "older news"
    );
}

/// Positions of different epochs are not ordered: the key becomes unknown (the sidecar
/// answers it) until a fill asked afterwards or the next invalidation.
#[test]
fn knowledge_from_another_epoch_makes_the_key_unknown() {
    let state = trusted_state();
    let asked_at = state.generation();
    state.fill("k", v("new.1.a"), asked_at, at("new", 1).as_ref());
    state.invalidate("k", v("old.500.z"), at("old", 500).as_ref());
    assert_eq!(state.local_check("k", &v("old.500.z")), None);
    assert_eq!(state.local_check("k", &v("new.1.a")), None);
    state.fill("k", v("old.499.y"), asked_at, at("old", 499).as_ref());
    assert_eq!(
        state.local_check("k", &v("old.499.y")),
        None,
        "asked before"
    );
    state.fill("k", v("new.1.a"), state.generation(), at("new", 1).as_ref());
    assert_eq!(state.local_check("k", &v("new.1.a")), Some(true));
}

#[test]
fn the_sidecar_bound_caps_the_mirror_bound() {
    let state = trusted_state();
    state.heartbeat(
        Some(Duration::from_millis(300)),
        Some(Duration::from_millis(250)),
    );
    assert!(
        !state.is_trusted(),
        "a fence older than the sidecar's own bound proves nothing"
    );
    state.heartbeat(
        Some(Duration::from_millis(300)),
        Some(Duration::from_secs(60)),
    );
    assert!(
        state.is_trusted(),
        "a larger sidecar bound does not lift ours"
    );
    state.heartbeat(Some(DEFAULT_MAX_STALENESS), Some(Duration::from_secs(60)));
    assert!(!state.is_trusted());
}

#[test]
fn nothing_is_filled_while_disconnected() {
    let state = MirrorState::new(&MirrorOptions::default());
    state.fill("k", v("1.1.a"), state.generation(), None);
    assert_eq!(state.len(), 0);
}
