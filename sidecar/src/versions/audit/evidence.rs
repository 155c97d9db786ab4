//! One reading of Redis for the auditor: the shard's epoch, the key's current version, the
//! oldest replay-log entry, the key's first log entry after the sampled token, and Redis's
//! `TIME`, all from one read-only script call (`audit.lua`) on the key's hash slot.

use std::time::Instant;

use redis::RedisResult;

use crate::redis::keyspace::Keyspace;
use crate::redis::scripts::{ScriptRunner, AUDIT};
use crate::redis::target::CommandConnection;
use crate::versions::audit::verdict::{scan_horizon_age_ms, Reading, Scan};
use crate::versions::shard_script::malformed;

/// Most replay-log entries one reading scans (in batches of 128) before it gives up
/// ("undecided: scan_limit"). Bounds the Redis time one audit costs: scanning 1,024 entries
/// takes well under a millisecond.
pub const SCAN_LIMIT: u64 = 1_024;

/// What to read: the key of a sampled answer, and its token's sequence.
pub struct Question<'a> {
    pub key: &'a str,
    pub token_seq: u64,
    /// When the sampled check began.
    pub answer_at: Instant,
}

/// Reads what Redis can tell about `question` (see the module docs).
pub async fn read(
    scripts: &ScriptRunner,
    conn: &mut CommandConnection,
    keyspace: &Keyspace,
    question: &Question<'_>,
) -> RedisResult<Reading> {
    let shard = keyspace.shard_of(question.key);
    let sk = keyspace.shard_keys(shard);
    let sent = Instant::now();
    let mut call = AUDIT.call();
    call.key(sk.epoch)
        .key(sk.log)
        .key(keyspace.version_key(shard, question.key))
        .arg(question.key)
        .arg(question.token_seq)
        .arg(scan_horizon_age_ms(question.answer_at, sent))
        .arg(SCAN_LIMIT);
    let reply: Vec<String> = scripts.run(&call, conn).await?;
    let received = Instant::now();
    let [now_ms, epoch, version, oldest, found_seq, found_t, how] = <[String; 7]>::try_from(reply)
        .map_err(|_| malformed("audit script returned the wrong number of values"))?;
    let number = |text: &str| -> RedisResult<u64> {
        text.parse()
            .map_err(|_| malformed("audit script returned a bad number"))
    };
    let scan = match how.as_str() {
        "found" => Scan::Found {
            seq: number(&found_seq)?,
            at_ms: number(&found_t)?,
        },
        "none" => Scan::NoneBeforeCheck,
        "truncated" => Scan::Truncated,
        _ => return Err(malformed("audit script returned an unknown scan result")),
    };
    Ok(Reading {
        sent,
        received,
        redis_ms: number(&now_ms)?,
        epoch,
        version,
        oldest_seq: if oldest.is_empty() {
            None
        } else {
            Some(number(&oldest)?)
        },
        scan,
    })
}
