//! Buffers that slow or untrusted parties can fill, bounded in bytes.
//!
//! A sidecar shares a pod with its application: if a stuck Watch stream, a slow subscriber or
//! a burst from a shared Redis could grow its memory without bound, the kubelet would kill it.
//! Every such buffer is one of these, with a byte budget from a setting; what does not fit is
//! dropped *and announced* (a Watch stream gets `Resync`, a Subscribe stream
//! `MissedMessages`, the subscription repairs the gap from the replay log), never kept.
//! docs/operations.md adds the budgets up.

pub mod push;
pub mod ring;
