//! Printing results: aligned human-readable text by default, or one JSON object per line
//! (`--json`) for scripts and `jq`.

use std::io::Write;

/// Where and how results are printed.
#[derive(Debug, Clone, Copy)]
pub struct Output {
    json: bool,
}

impl Output {
    pub fn new(json: bool) -> Output {
        Output { json }
    }

    /// Prints `human` or `json`, whichever was asked for, as one line, and flushes (so
    /// `watch` output reaches a pipe at once).
    pub fn line(&self, human: impl FnOnce() -> String, json: impl FnOnce() -> serde_json::Value) {
        let text = if self.json {
            json().to_string()
        } else {
            human()
        };
        let mut stdout = std::io::stdout().lock();
        // A closed pipe (e.g. `| head`) is not an error worth reporting.
        let _ = writeln!(stdout, "{text}");
        let _ = stdout.flush();
    }
}

/// `key` padded to `width` so the columns after it line up.
pub fn pad(key: &str, width: usize) -> String {
    format!("{key:<width$}")
}

/// The widest of `keys`, for [`pad`].
pub fn width<'a>(keys: impl IntoIterator<Item = &'a str>) -> usize {
    keys.into_iter()
        .map(|k| k.chars().count())
        .max()
        .unwrap_or(0)
}
