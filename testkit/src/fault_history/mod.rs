//! The fault suite's history checker, shared by the fault tests (`tests/fault_support`) and
//! `coherence-bench`'s soak: every operation of a run recorded with its instants
//! ([`history::History`]), the order of versions ([`order`]) and the verdict against the
//! design's guarantees ([`report`]). Moved here unchanged from `tests/fault_support`.

pub mod history;
pub mod order;
pub mod record;
pub mod report;
