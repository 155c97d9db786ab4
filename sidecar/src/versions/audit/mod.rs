//! The consistency observer: an auditor that samples the answers this sidecar gives (and those
//! client mirrors submit) and decides each one from the replay log, and a propagation prober
//! ([`canary`]). It measures the guarantees in production, as Meta's Polaris does, and is the
//! strongest oracle the tests have (docs/design.md, "The auditor").
//!
//! Only answers that call a token current are sampled: "not current" never breaks a guarantee
//! (failing closed is allowed), and counting those would inflate the nines. A sampled answer
//! costs, on the answering path, one random draw per current answer (about 2 ns with the thread
//! RNG) and, for the sampled fraction, two string copies and a non-blocking queue push (about
//! 100–200 ns); then one read-only script call to Redis in the background ([`evidence`]), and
//! a second one for a suspected violation (the re-check).
//!
//! Bounds: at most [`sampler::QUEUE_SAMPLES`] samples wait (each holds its key, at most `max_key_bytes`,
//! and its token, so at most about 4,096 × (1 KiB + 100 B) ≈ 4.5 MiB at the defaults); a sample
//! that finds the queue full is dropped and counted (`coherence_audit_samples_dropped_total`).
//! One sample is read at a time, each reading bounded by `request_timeout`, at most
//! [`worker::MAX_AUDITS_PER_SECOND`] a second.

pub mod canary;
pub mod clock;
pub mod evidence;
pub mod sampler;
pub mod verdict;
pub mod worker;
