//! The Python process that runs Python mirrors for the conformance suite
//! (`clients/python/tests/conformance_driver.py`): one JSON object per line each way, answers
//! matched to requests by id, so that several commands can be in flight at once.

use std::collections::HashMap;
use std::path::Path;
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdin, Command};
use tokio::sync::oneshot;

/// Longest any one command may take (the own-writes run is the longest).
const COMMAND_LIMIT: Duration = Duration::from_secs(120);

type Pending = Arc<Mutex<HashMap<u64, oneshot::Sender<Result<Value, String>>>>>;

/// A running driver process. Dropping it kills the process.
pub struct Driver {
    stdin: tokio::sync::Mutex<ChildStdin>,
    pending: Pending,
    next: AtomicU64,
    _child: Child,
}

/// The interpreter (`PYTHON` overrides `python3`).
fn python() -> String {
    std::env::var("PYTHON").unwrap_or_else(|_| "python3".to_string())
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Driver {
    /// Starts the driver; fails with what to install when Python or grpcio is missing.
    pub async fn start() -> Arc<Driver> {
        let python = python();
        let probe = Command::new(&python)
            .args(["-c", "import grpc, google.protobuf"])
            .stdin(Stdio::null())
            .output()
            .await;
        let install = "python3 -m pip install -r clients/python/requirements-dev.txt";
        match probe {
            Err(err) => panic!("the conformance suite needs {python} (3.10 or newer): {err}"),
            Ok(out) if !out.status.success() => panic!(
                "the conformance suite needs grpcio and protobuf: `{install}`\n{}",
                String::from_utf8_lossy(&out.stderr)
            ),
            Ok(_) => {}
        }
        let script = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("clients/python/tests/conformance_driver.py");
        let mut child = Command::new(&python)
            .arg(&script)
            .env("PYTHONDONTWRITEBYTECODE", "1")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .expect("the Python driver starts");
        let stdin = child.stdin.take().expect("driver stdin");
        let stdout = child.stdout.take().expect("driver stdout");
        let pending: Pending = Arc::default();
        let answers = Arc::clone(&pending);
        tokio::spawn(async move {
            let mut lines = BufReader::new(stdout).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                let Ok(answer) = serde_json::from_str::<Value>(&line) else {
                    eprintln!("python driver said something that is not JSON: {line}");
                    continue;
                };
                let Some(id) = answer["id"].as_u64() else {
                    continue;
                };
                let result = if answer["ok"].as_bool() == Some(true) {
                    Ok(answer["result"].clone())
                } else {
                    Err(answer["error"]
                        .as_str()
                        .unwrap_or("no error text")
                        .to_string())
                };
                if let Some(tx) = lock(&answers).remove(&id) {
                    let _ = tx.send(result);
                }
            }
            // The process ended: every command still waiting fails (its sender is dropped).
            lock(&answers).clear();
        });
        Arc::new(Driver {
            stdin: tokio::sync::Mutex::new(stdin),
            pending,
            next: AtomicU64::new(1),
            _child: child,
        })
    }

    /// Runs `op` with `args` (an object) and returns its result, or the driver's error.
    pub async fn call(&self, op: &str, mut args: Value) -> Result<Value, String> {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        args["id"] = json!(id);
        args["op"] = json!(op);
        let (tx, rx) = oneshot::channel();
        lock(&self.pending).insert(id, tx);
        let mut line = args.to_string();
        line.push('\n');
        {
            let mut stdin = self.stdin.lock().await;
            stdin
                .write_all(line.as_bytes())
                .await
                .map_err(|e| format!("the Python driver is gone: {e}"))?;
            stdin
                .flush()
                .await
                .map_err(|e| format!("the Python driver is gone: {e}"))?;
        }
        match tokio::time::timeout(COMMAND_LIMIT, rx).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err(format!("the Python driver ended during {op}")),
            Err(_) => Err(format!(
                "the Python driver did not answer {op} within {COMMAND_LIMIT:?}"
            )),
        }
    }
}
