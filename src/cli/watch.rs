//! `coherencectl watch [PREFIX]...`: print invalidations as they arrive.
//!
//! Runs until the sidecar ends the stream (exit 3 when it ends with an error, e.g. the sidecar
//! shutting down), Ctrl-C, or `--count` events have been printed.

use coherence_client::WatchEvent;
use serde_json::json;
use tokio_stream::StreamExt;

use super::{exit, GlobalOptions};

#[derive(Debug, clap::Args)]
pub struct WatchArgs {
    /// Key prefixes to follow; none means every key of the namespace.
    #[arg(value_name = "PREFIX")]
    pub prefixes: Vec<String>,
    /// Exit after this many invalidation or resync events.
    #[arg(long)]
    pub count: Option<u64>,
    /// Also print the sidecar's periodic heartbeats.
    #[arg(long)]
    pub heartbeats: bool,
}

pub async fn run(args: WatchArgs, global: &GlobalOptions) -> anyhow::Result<u8> {
    let client = global.client().await?;
    let prefixes: Vec<&str> = args.prefixes.iter().map(String::as_str).collect();
    let mut events = client.watch(&prefixes).await?;
    let out = global.output();
    let mut printed = 0u64;
    if args.count == Some(0) {
        return Ok(exit::OK);
    }
    while let Some(event) = events.next().await {
        match event? {
            WatchEvent::Invalidated {
                key,
                version,
                sequence,
                shard,
                bumped_at_unix_ms,
            } => out.line(
                || {
                    format!(
                        "invalidated  {key}  now {version}  (shard {shard}, sequence {sequence})"
                    )
                },
                || {
                    json!({
                        "event": "invalidated",
                        "key": key,
                        "version": version.token(),
                        "sequence": sequence,
                        "shard": shard,
                        "bumped_at_unix_ms": bumped_at_unix_ms,
                    })
                },
            ),
            WatchEvent::Resync { reason } => out.line(
                || format!("resync  {reason}: drop everything cached under the watched prefixes"),
                || json!({"event": "resync", "reason": reason}),
            ),
            WatchEvent::Heartbeat { fence_age, .. } => {
                if args.heartbeats {
                    let age_ms = fence_age.map(|a| a.as_millis() as u64);
                    out.line(
                        || match age_ms {
                            Some(ms) => format!("heartbeat  mirror fresh as of {ms} ms ago"),
                            None => "heartbeat  mirror cannot be vouched for".to_string(),
                        },
                        || json!({"event": "heartbeat", "fence_age_ms": age_ms}),
                    );
                }
                continue;
            }
        }
        printed += 1;
        if args.count.is_some_and(|n| printed >= n) {
            break;
        }
    }
    Ok(exit::OK)
}
