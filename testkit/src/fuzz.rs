//! How many inputs each fuzz target tries, in one place for every crate.
//!
//! The decoders of untrusted bytes (pub/sub messages from a shared Redis, version tokens, URLs
//! and configuration, request validation) are fuzzed on stable Rust as ordinary property tests
//! named `fuzz_*`. `cargo test` runs a few hundred inputs per target, enough to keep them honest
//! in CI without slowing the suite; `COHERENCE_FUZZ_CASES=N` runs N per target for a long run
//! (BENCHMARKS.md, "Fuzzing", has the command and the figures of the last one).

use proptest::test_runner::Config;

/// Inputs per target when `COHERENCE_FUZZ_CASES` is unset.
pub const DEFAULT_CASES: u32 = 512;

/// `COHERENCE_FUZZ_CASES`, or [`DEFAULT_CASES`]. Panics on a value that is not a count, so
/// that a typo never runs the short default while claiming a long run.
pub fn cases() -> u32 {
    match std::env::var("COHERENCE_FUZZ_CASES") {
        Ok(text) => text
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("COHERENCE_FUZZ_CASES={text:?} is not a count")),
        Err(_) => DEFAULT_CASES,
    }
}

/// The proptest configuration of every fuzz target: [`cases`] inputs, no regression files
/// written into the source tree (a failure prints its minimal input; it becomes a named
/// regression test beside the decoder), and no limit on rejected inputs.
pub fn config() -> Config {
    Config {
        cases: cases(),
        failure_persistence: None,
        max_global_rejects: u32::MAX,
        ..Config::default()
    }
}
