//! `coherencectl get KEY...`: the current version of each key.

use coherence_client::Consistency;
use serde_json::json;

use super::output::{pad, width};
use super::{exit, GlobalOptions};

#[derive(Debug, clap::Args)]
pub struct GetArgs {
    /// Keys to read.
    #[arg(required = true, value_name = "KEY")]
    pub keys: Vec<String>,
    /// Read Redis instead of trusting the sidecar's mirror (linearizable).
    #[arg(long)]
    pub strong: bool,
}

pub async fn run(args: GetArgs, global: &GlobalOptions) -> anyhow::Result<u8> {
    let client = global.client().await?;
    let keys: Vec<&str> = args.keys.iter().map(String::as_str).collect();
    let consistency = if args.strong {
        Consistency::Strong
    } else {
        Consistency::Bounded
    };
    let versions = client.get_with(&keys, consistency).await?;
    let out = global.output();
    let w = width(keys.iter().copied());
    for (key, version) in keys.iter().zip(&versions) {
        out.line(
            || format!("{}  {version}", pad(key, w)),
            || json!({"key": key, "version": version.token()}),
        );
    }
    Ok(exit::OK)
}
