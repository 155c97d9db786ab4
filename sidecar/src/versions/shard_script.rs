//! The Lua scripts that touch a shard's state, and typed calls to them.
//!
//! Every change to a shard (new version, sequence, replay-log entry, publish) happens inside one
//! script call, on keys that share the shard's hash tag (design guarantee 6); on a standalone
//! Redis one call may cover several shards, on a cluster it covers one (one slot). The scripts live in
//! `versions/shard.lua`, which also retires every earlier version whenever the shard is served by a
//! different Redis process than last time (restart, restore, failover; the process's run id
//! comes from [`CommandConnection::run_id`]). It runs by `EVALSHA` or as a function of the
//! Functions library, as `redis_scripts` says ([`crate::redis::scripts`]).

use redis::streams::StreamRangeReply;
use redis::RedisResult;

use crate::redis::keyspace::Keyspace;
use crate::redis::scripts::{LuaScript, ScriptCall, ScriptRunner, SHARD};
use crate::redis::target::CommandConnection;
use crate::token::random_token;

/// The shard script to run: `shard.lua` itself, or (feature `fault-injection` only, eval mode
/// only) a variant with the epoch rotations that [`crate::fault_injection`] has turned off
/// removed.
fn shard_script() -> &'static LuaScript {
    #[cfg(feature = "fault-injection")]
    {
        controls::shard_script()
    }
    #[cfg(not(feature = "fault-injection"))]
    {
        &SHARD
    }
}

/// The variants of `shard.lua` the negative controls run: each turns one of its epoch
/// rotations into `false`, so that the script goes on with the shard's old state.
#[cfg(feature = "fault-injection")]
mod controls {
    use std::sync::LazyLock;

    use crate::fault_injection::{off, Mechanism};
    use crate::redis::scripts::LuaScript;

    /// The run-id comparison of `current_state` (Mechanism::Incarnation).
    const INCARNATION: &str = "redis.call('GET', shard.inc_key) ~= run_id";
    /// The sequence comparison of `current_state` (Mechanism::RollbackCheck).
    const ROLLBACK: &str = "(epoch == shard.seen_epoch and seq < shard.seen_seq)";

    fn without(conditions: &[&str]) -> LuaScript {
        let mut source = include_str!("shard.lua").to_string();
        for condition in conditions {
            assert!(source.contains(condition), "shard.lua lost `{condition}`");
            source = source.replace(condition, "false");
        }
        // Built once per variant and kept for the process (test builds only).
        LuaScript::new("shard", Box::leak(source.into_boxed_str()))
    }

    pub(super) static VARIANTS: LazyLock<[LuaScript; 3]> = LazyLock::new(|| {
        [
            without(&[INCARNATION]),
            without(&[ROLLBACK]),
            without(&[INCARNATION, ROLLBACK]),
        ]
    });

    pub fn shard_script() -> &'static LuaScript {
        match (off(Mechanism::Incarnation), off(Mechanism::RollbackCheck)) {
            (false, false) => &super::SHARD,
            (true, false) => &VARIANTS[0],
            (false, true) => &VARIANTS[1],
            (true, true) => &VARIANTS[2],
        }
    }
}

/// A shard's epoch and sequence as of one script call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShardState {
    pub epoch: String,
    pub seq: u64,
}

/// What a versions call does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VersionsMode {
    /// Keep current versions; issue one only where there is none (and refresh each key's TTL).
    Get,
    /// Issue a new version for every key.
    Bump,
    /// Read current versions and write nothing: a key without one reads as `None` (Check).
    Read,
}

impl VersionsMode {
    fn name(self) -> &'static str {
        match self {
            VersionsMode::Get => "get",
            VersionsMode::Bump => "bump",
            VersionsMode::Read => "read",
        }
    }

    /// The label of this mode's batcher queue in `coherence_buffer_bytes`.
    pub fn queue_buffer(self) -> &'static str {
        match self {
            VersionsMode::Get => "batch_get",
            VersionsMode::Bump => "batch_bump",
            VersionsMode::Read => "batch_read",
        }
    }
}

/// The newest epoch and sequence a sidecar has seen for a shard, passed to every script call:
/// a lower sequence in that epoch means Redis's data went back in time, and the script starts a
/// new epoch (see `versions/shard.lua`).
pub type Seen = Option<(String, u64)>;

/// The keys of one shard to read (or bump) in a [`versions`] call, with the newest state of
/// the shard the caller has seen.
#[derive(Debug, Clone)]
pub struct ShardKeysToRead<'a> {
    pub shard: u32,
    pub keys: Vec<&'a str>,
    pub seen: Seen,
}

/// What every call of the shard script is told first (see `versions/shard.lua`).
struct Header {
    mode: &'static str,
    replay_log_len: u64,
    version_ttl_ms: u64,
    read_lease_ms: u64,
    shards: usize,
}

impl Header {
    /// The header of a mode that issues no version (log length and TTL unused).
    fn without_versions(mode: &'static str, shards: usize, read_lease_ms: u64) -> Header {
        Header {
            mode,
            replay_log_len: 0,
            version_ttl_ms: 0,
            read_lease_ms,
            shards,
        }
    }
}

/// Starts an invocation of the shard script with its header arguments, in script order.
fn invocation(conn: &CommandConnection, keyspace: &Keyspace, header: Header) -> ScriptCall {
    let mut inv = shard_script().call();
    inv.arg(header.mode)
        .arg(keyspace.publish_command())
        .arg(header.replay_log_len)
        .arg(header.version_ttl_ms)
        .arg(conn.run_id().unwrap_or_default())
        .arg(header.read_lease_ms)
        .arg(header.shards);
    inv
}

/// Adds one shard's state keys and the arguments every mode takes about a shard.
fn shard_block(inv: &mut ScriptCall, keyspace: &Keyspace, shard: u32, seen: &Seen) {
    let sk = keyspace.shard_keys(shard);
    inv.key(sk.epoch)
        .key(sk.seq)
        .key(sk.log)
        .key(sk.incarnation)
        .key(sk.leases);
    let (seen_epoch, seen_seq) = seen
        .as_ref()
        .map_or(("", 0), |(epoch, seq)| (epoch.as_str(), *seq));
    inv.arg(random_token()).arg(seen_epoch).arg(seen_seq);
}

/// One shard's answer to a [`versions`] call: its state, and each key's version in request
/// order (`None` only in [`VersionsMode::Read`], for a key without a current version).
/// An empty `epoch` (read mode only) means the shard must start a new epoch before anything
/// can be current.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShardVersions {
    pub state: ShardState,
    pub versions: Vec<Option<String>>,
    /// The shard's lease table `(field, value)` as of the call, when it issued a version there
    /// (Get and Bump only): the holders the caller must wait for (see `versions/leases`).
    pub leases: Vec<(String, String)>,
}

/// Reads (or bumps) the keys of `shards` — shards on one Redis node — in one script call;
/// returns each shard's state and versions, in order.
#[allow(clippy::too_many_arguments)] // the script's argument blocks, each named
pub async fn versions(
    scripts: &ScriptRunner,
    conn: &mut CommandConnection,
    keyspace: &Keyspace,
    mode: VersionsMode,
    shards: &[ShardKeysToRead<'_>],
    replay_log_len: u64,
    version_ttl_ms: u64,
    read_lease_ms: u64,
) -> RedisResult<Vec<ShardVersions>> {
    let header = Header {
        mode: mode.name(),
        replay_log_len,
        version_ttl_ms,
        read_lease_ms,
        shards: shards.len(),
    };
    let mut inv = invocation(conn, keyspace, header);
    for read in shards {
        shard_block(&mut inv, keyspace, read.shard, &read.seen);
        inv.arg(keyspace.shard_keys(read.shard).channel)
            .arg(read.keys.len());
        for key in &read.keys {
            inv.key(keyspace.version_key(read.shard, key)).arg(*key);
        }
        if mode != VersionsMode::Read {
            for _ in &read.keys {
                inv.arg(random_token());
            }
        }
    }
    let reply: Vec<String> = scripts.run(&inv, conn).await?;
    let mut reply = reply.into_iter();
    let mut out = Vec::with_capacity(shards.len());
    for read in shards {
        let (Some(epoch), Some(seq)) = (reply.next(), reply.next()) else {
            return Err(malformed("versions script returned too few values"));
        };
        let seq = seq
            .parse()
            .map_err(|_| malformed("versions script returned a bad sequence"))?;
        let versions = reply
            .by_ref()
            .take(read.keys.len())
            .map(|v| Some(v).filter(|v| !v.is_empty()))
            .collect::<Vec<_>>();
        if versions.len() != read.keys.len() {
            return Err(malformed("versions script returned too few versions"));
        }
        if mode != VersionsMode::Read && versions.iter().any(Option::is_none) {
            return Err(malformed("versions script issued an empty version"));
        }
        let mut leases = Vec::new();
        if mode != VersionsMode::Read {
            let count: usize = reply
                .next()
                .and_then(|n| n.parse().ok())
                .ok_or_else(|| malformed("versions script returned no lease table"))?;
            for _ in 0..count {
                let (Some(field), Some(value)) = (reply.next(), reply.next()) else {
                    return Err(malformed("versions script returned a short lease table"));
                };
                leases.push((field, value));
            }
        }
        out.push(ShardVersions {
            state: ShardState { epoch, seq },
            versions,
            leases,
        });
    }
    if reply.next().is_some() {
        return Err(malformed("versions script returned too many values"));
    }
    Ok(out)
}

/// Publishes one heartbeat fence for `shards` (all on one Redis node) on `channel`, the caller's
/// own fence channel; each shard's state as of the fence comes back with it. `seen` holds the
/// newest state seen of each shard, in the same order.
#[allow(clippy::too_many_arguments)] // the script's argument blocks, each named
pub async fn fence(
    scripts: &ScriptRunner,
    conn: &mut CommandConnection,
    keyspace: &Keyspace,
    shards: &[u32],
    channel: &str,
    nonce: &str,
    seen: &[Seen],
    read_lease_ms: u64,
) -> RedisResult<()> {
    let header = Header::without_versions("fence", shards.len(), read_lease_ms);
    let mut inv = invocation(conn, keyspace, header);
    inv.arg(channel).arg(nonce);
    for (i, &shard) in shards.iter().enumerate() {
        shard_block(&mut inv, keyspace, shard, seen.get(i).unwrap_or(&None));
    }
    let _: redis::Value = scripts.run(&inv, conn).await?;
    Ok(())
}

/// A lease holder's position in one shard: the epoch and sequence its mirror has applied.
#[derive(Debug, Clone)]
pub struct HolderPosition {
    pub shard: u32,
    pub seen: Seen,
    /// What the holder's mirror has applied (`("", 0)` when it is not synced).
    pub applied: (String, u64),
}

/// Grants (or, with an empty `grant`, releases) `holder`'s read lease on `shards` (all on one
/// Redis node): the grant "<counter>|<read_lease_ms>" is written into each shard's lease
/// table, unless a bumper quarantined the holder there and its applied position is still
/// behind the bump it missed. Returns each shard's state at the grant, `None` where refused.
pub async fn lease(
    scripts: &ScriptRunner,
    conn: &mut CommandConnection,
    keyspace: &Keyspace,
    holder: &str,
    grant: &str,
    shards: &[HolderPosition],
    read_lease_ms: u64,
) -> RedisResult<Vec<Option<ShardState>>> {
    let header = Header::without_versions("lease", shards.len(), read_lease_ms);
    let mut inv = invocation(conn, keyspace, header);
    inv.arg(holder).arg(grant);
    for position in shards {
        shard_block(&mut inv, keyspace, position.shard, &position.seen);
        inv.arg(&position.applied.0).arg(position.applied.1);
    }
    let reply: Vec<String> = scripts.run(&inv, conn).await?;
    if reply.len() != shards.len() * 2 {
        return Err(malformed(
            "lease script returned the wrong number of values",
        ));
    }
    reply
        .chunks(2)
        .map(|pair| {
            let seq = pair[1]
                .parse()
                .map_err(|_| malformed("lease script returned a bad sequence"))?;
            Ok(Some(ShardState {
                epoch: pair[0].clone(),
                seq,
            })
            .filter(|s| !s.epoch.is_empty()))
        })
        .collect()
}

/// Publishes `holder`'s acknowledgement of its applied position of each shard (all on one
/// Redis node) on the shard's channel: `a|<epoch>|<seq>|<holder>`.
pub async fn ack(
    scripts: &ScriptRunner,
    conn: &mut CommandConnection,
    keyspace: &Keyspace,
    holder: &str,
    shards: &[(u32, String, u64)],
) -> RedisResult<()> {
    let header = Header::without_versions("ack", shards.len(), 0);
    let mut inv = invocation(conn, keyspace, header);
    inv.arg(holder);
    for (shard, epoch, seq) in shards {
        shard_block(&mut inv, keyspace, *shard, &None);
        inv.arg(keyspace.shard_keys(*shard).channel)
            .arg(epoch)
            .arg(*seq);
    }
    let _: redis::Value = scripts.run(&inv, conn).await?;
    Ok(())
}

/// Replaces the lease-table field `field` of `shard` with `replacement` (removes it when
/// empty), if it still holds `value`: a bumper's pruning of a lease it waited out.
pub async fn prune(
    scripts: &ScriptRunner,
    conn: &mut CommandConnection,
    keyspace: &Keyspace,
    shard: u32,
    field: &str,
    value: &str,
    replacement: &str,
) -> RedisResult<()> {
    let header = Header::without_versions("prune", 1, 0);
    let mut inv = invocation(conn, keyspace, header);
    shard_block(&mut inv, keyspace, shard, &None);
    inv.arg(field).arg(value).arg(replacement);
    let _: redis::Value = scripts.run(&inv, conn).await?;
    Ok(())
}

/// One replay-log entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogEntry {
    pub seq: u64,
    pub key: String,
    pub version: String,
    pub bumped_at_unix_ms: u64,
}

/// The replay-log entries of `shard` with sequence numbers in `from..=to`, in order.
pub async fn read_log(
    conn: &mut CommandConnection,
    keyspace: &Keyspace,
    shard: u32,
    from: u64,
    to: u64,
) -> RedisResult<Vec<LogEntry>> {
    let sk = keyspace.shard_keys(shard);
    let reply: StreamRangeReply = redis::cmd("XRANGE")
        .arg(&sk.log)
        .arg(format!("{from}-0"))
        .arg(format!("{to}-0"))
        .query_async(conn)
        .await?;
    let mut entries = Vec::with_capacity(reply.ids.len());
    for id in reply.ids {
        let seq = id
            .id
            .split_once('-')
            .and_then(|(s, _)| s.parse().ok())
            .ok_or_else(|| malformed("replay log entry with a bad id"))?;
        let key: Option<String> = id.get("k");
        let version: Option<String> = id.get("v");
        let bumped_at: Option<u64> = id.get("t");
        match (key, version) {
            (Some(key), Some(version)) => entries.push(LogEntry {
                seq,
                key,
                version,
                bumped_at_unix_ms: bumped_at.unwrap_or(0),
            }),
            _ => return Err(malformed("replay log entry without key or version")),
        }
    }
    Ok(entries)
}

pub(crate) fn malformed(what: &'static str) -> redis::RedisError {
    redis::RedisError::from((redis::ErrorKind::UnexpectedReturnType, what))
}

#[cfg(all(test, feature = "fault-injection"))]
mod tests {
    /// Each variant removes a condition that is still in `shard.lua` (else building it panics),
    /// and they all differ.
    #[test]
    fn every_control_variant_differs_from_the_script() {
        let mut hashes: Vec<String> = super::controls::VARIANTS
            .iter()
            .map(|s| s.eval_hash())
            .collect();
        hashes.push(super::SHARD.eval_hash());
        hashes.sort();
        hashes.dedup();
        assert_eq!(hashes.len(), 4);
    }
}
