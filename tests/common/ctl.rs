//! Running the real `coherencectl` binary of this crate (its path is known only to this
//! crate's tests) and reading what it printed.

use std::process::Output;

use coherence_testkit::WAIT;

/// Runs the real `coherencectl` binary against `addr` with `args`, within [`WAIT`].
pub async fn coherencectl(addr: &str, args: &[&str]) -> Output {
    let run = tokio::process::Command::new(env!("CARGO_BIN_EXE_coherencectl"))
        .arg("--addr")
        .arg(addr)
        .args(args)
        .env_remove("COHERENCE_ADDR")
        .env_remove("COHERENCE_AUTH_TOKEN_FILE")
        .kill_on_drop(true)
        .output();
    tokio::time::timeout(WAIT, run)
        .await
        .expect("coherencectl finished in time")
        .expect("coherencectl runs")
}

/// Standard output of a finished command, as text.
pub fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// Standard error of a finished command, as text.
pub fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}
