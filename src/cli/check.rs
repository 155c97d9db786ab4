//! `coherencectl check KEY VERSION [KEY VERSION]...`: is each version still current?
//!
//! Exit code 0 when every version is current, 1 when any is not (stale, or the sidecar could
//! not vouch for it and failed closed) — so a script can `if coherencectl check ...; then`.

use anyhow::bail;
use coherence_client::{CheckResult, CheckSource, Consistency, Version};
use serde_json::json;

use super::output::{pad, width};
use super::{exit, GlobalOptions};

#[derive(Debug, clap::Args)]
pub struct CheckArgs {
    /// Pairs of a key and the version token to check (as printed by `get` or `bump`).
    #[arg(required = true, num_args = 2.., value_names = ["KEY", "VERSION"])]
    pub pairs: Vec<String>,
    /// Reflect every bump completed before the check began (one Redis round trip).
    #[arg(long)]
    pub strong: bool,
}

pub async fn run(args: CheckArgs, global: &GlobalOptions) -> anyhow::Result<u8> {
    if args.pairs.len() % 2 != 0 {
        bail!(exit::UsageError(
            "check takes pairs of KEY VERSION; the last key has no version".into()
        ));
    }
    let entries: Vec<(&str, Version)> = args
        .pairs
        .chunks(2)
        .map(|pair| (pair[0].as_str(), Version::from_token(pair[1].as_str())))
        .collect();
    let consistency = if args.strong {
        Consistency::Strong
    } else {
        Consistency::Bounded
    };
    let client = global.client().await?;
    let request: Vec<(&str, &Version)> = entries.iter().map(|(k, v)| (*k, v)).collect();
    let results = client.check(&request, consistency).await?;
    let out = global.output();
    let w = width(entries.iter().map(|(k, _)| *k));
    for ((key, checked), result) in entries.iter().zip(&results) {
        out.line(
            || human(&pad(key, w), checked, result),
            || {
                json!({
                    "key": key,
                    "version": checked.token(),
                    "current": result.current,
                    "current_version": result.version.as_ref().map(Version::token),
                    "source": source_name(result.source),
                })
            },
        );
    }
    Ok(if results.iter().all(|r| r.current) {
        exit::OK
    } else {
        exit::STALE
    })
}

fn human(key: &str, checked: &Version, result: &CheckResult) -> String {
    let source = source_name(result.source);
    match (result.current, result.source, &result.version) {
        (true, _, _) => format!("{key}  current  {checked} (from {source})"),
        (false, CheckSource::FailClosed, _) => {
            format!("{key}  STALE    {checked} cannot be vouched for (sidecar failed closed): treat it as not current")
        }
        (false, _, Some(now)) => {
            format!("{key}  STALE    {checked} is not current; current is {now} (from {source})")
        }
        (false, _, None) => format!("{key}  STALE    {checked} is not current (from {source})"),
    }
}

fn source_name(source: CheckSource) -> &'static str {
    match source {
        CheckSource::Mirror => "mirror",
        CheckSource::Redis => "redis",
        CheckSource::FailClosed => "fail-closed",
        CheckSource::Unknown => "unknown",
    }
}
