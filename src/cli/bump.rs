//! `coherencectl bump KEY...`: move keys to new versions, as an app does after a write.

use serde_json::json;

use super::output::{pad, width};
use super::{exit, GlobalOptions};

#[derive(Debug, clap::Args)]
pub struct BumpArgs {
    /// Keys whose data changed.
    #[arg(required = true, value_name = "KEY")]
    pub keys: Vec<String>,
}

pub async fn run(args: BumpArgs, global: &GlobalOptions) -> anyhow::Result<u8> {
    let client = global.client().await?;
    let keys: Vec<&str> = args.keys.iter().map(String::as_str).collect();
    let versions = client.bump(&keys).await?;
    let out = global.output();
    let w = width(keys.iter().copied());
    for (key, version) in keys.iter().zip(&versions) {
        out.line(
            || format!("bumped {}  now {version}", pad(key, w)),
            || json!({"key": key, "bumped": true, "version": version.token()}),
        );
    }
    Ok(exit::OK)
}
