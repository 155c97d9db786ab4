//! Recording a client call of several keys as one history record per key: the one way the
//! fault tests and coherence-bench's soak write what they were answered into a
//! [`History`]. Moved here unchanged from `tests/fault_support/fleet.rs`.

use std::time::Instant;

use coherence_client::Version;

use super::history::{BumpRecord, CheckAnswer, History, Read, ReadRecord, Via};

/// Records one bump of several keys as one record per key.
pub fn record_bumps(
    history: &History,
    keys: &[&str],
    start: Instant,
    via: &[Via],
    result: &Result<Vec<Version>, coherence_client::Error>,
) {
    let end = Instant::now();
    for (i, key) in keys.iter().enumerate() {
        history.record_bump(BumpRecord {
            key: key.to_string(),
            start,
            end,
            via: via.to_vec(),
            outcome: match result {
                Ok(versions) => Ok(versions.get(i).map(|v| v.token().to_string())),
                Err(err) => Err(err.to_string()),
            },
        });
    }
}

/// Records one check of several entries through a sidecar as one record per entry.
pub fn record_checks(
    history: &History,
    via: Via,
    strong: bool,
    entries: &[(&str, &Version)],
    start: Instant,
    result: &Result<Vec<coherence_client::CheckResult>, coherence_client::Error>,
) {
    let end = Instant::now();
    for (i, (key, token)) in entries.iter().enumerate() {
        history.record_read(ReadRecord {
            key: key.to_string(),
            via,
            strong,
            start,
            end,
            read: Read::Check {
                token: token.token().to_string(),
                answer: match result {
                    Ok(results) => Ok(CheckAnswer {
                        current: results[i].current,
                        version: results[i].version.as_ref().map(|v| v.token().to_string()),
                        source: Some(results[i].source),
                    }),
                    Err(err) => Err(err.to_string()),
                },
            },
        });
    }
}

/// Records a client mirror's answer to `is_current` (it says neither where the answer came
/// from nor which version it takes as current).
pub fn record_mirror_check(
    history: &History,
    via: Via,
    strong: bool,
    key: &str,
    token: &str,
    start: Instant,
    current: bool,
) {
    history.record_read(ReadRecord {
        key: key.to_string(),
        via,
        strong,
        start,
        end: Instant::now(),
        read: Read::Check {
            token: token.to_string(),
            answer: Ok(CheckAnswer {
                current,
                version: None,
                source: None,
            }),
        },
    });
}

/// Records one get of several keys as one record per key.
pub fn record_gets(
    history: &History,
    via: Via,
    strong: bool,
    keys: &[&str],
    start: Instant,
    result: &Result<Vec<Version>, coherence_client::Error>,
) {
    let end = Instant::now();
    for (i, key) in keys.iter().enumerate() {
        history.record_read(ReadRecord {
            key: key.to_string(),
            via,
            strong,
            start,
            end,
            read: Read::Get {
                answer: match result {
                    Ok(versions) => Ok(versions[i].token().to_string()),
                    Err(err) => Err(err.to_string()),
                },
            },
        });
    }
}
