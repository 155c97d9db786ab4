//! Secrets the sidecar holds — Redis and Sentinel passwords, the gRPC bearer token — read the
//! way Kubernetes mounts a Secret, and kept out of every output.
//!
//! The first defence is structural: a secret is never formatted (URLs lose their credentials
//! before anything parses them, see [`crate::redis::url`]; settings and credentials print
//! `***`). The binary adds a last one, for text we do not write ourselves — a dependency's
//! log line, a panic message: [`Scrubber`] replaces every known secret in each log line and
//! panic message with `***` before it reaches stderr. Secrets shorter than
//! [`Scrubber::MIN_LEN`] bytes are not scrubbed (replacing every `a` in every line would make
//! the logs unreadable and protect nothing: so short a password is no secret).

use std::io::Write;
use std::path::Path;
use std::sync::Arc;

use crate::process::config::ConfigError;

/// A secret value: `Debug` prints `***`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: String) -> Secret {
        Secret(value)
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("***")
    }
}

/// Reads a secret from the file a setting names: UTF-8, the trailing newline that `echo` and
/// editors add is no part of it, and an empty file is an error. Messages name the setting and
/// the path, never the content.
pub fn read_secret_file(setting: &'static str, path: &Path) -> Result<Secret, ConfigError> {
    let invalid = |message: String| ConfigError::Invalid { setting, message };
    let bytes = std::fs::read(path)
        .map_err(|err| invalid(format!("cannot read {}: {err}", path.display())))?;
    let text = String::from_utf8(bytes)
        .map_err(|_| invalid(format!("{} is not UTF-8 text", path.display())))?;
    let secret = text.trim_end_matches(['\n', '\r']);
    if secret.is_empty() {
        return Err(invalid(format!("{} is empty", path.display())));
    }
    Ok(Secret(secret.to_string()))
}

/// Replaces known secrets in text on its way out.
#[derive(Clone, Default)]
pub struct Scrubber {
    secrets: Arc<Vec<String>>,
}

impl Scrubber {
    /// Secrets shorter than this are left alone (see the module comment).
    pub const MIN_LEN: usize = 4;

    pub fn new<'a>(secrets: impl IntoIterator<Item = &'a str>) -> Scrubber {
        let mut secrets: Vec<String> = secrets
            .into_iter()
            .filter(|s| s.len() >= Self::MIN_LEN)
            .map(String::from)
            .collect();
        // Longest first: a secret that contains another is replaced whole.
        secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
        secrets.dedup();
        Scrubber {
            secrets: Arc::new(secrets),
        }
    }

    pub fn scrub(&self, text: &str) -> String {
        let mut text = text.to_string();
        for secret in self.secrets.iter() {
            if text.contains(secret.as_str()) {
                text = text.replace(secret.as_str(), "***");
            }
        }
        text
    }

    /// A `tracing_subscriber` writer to stderr that scrubs every line.
    pub fn stderr(&self) -> ScrubbingStderr {
        ScrubbingStderr(self.clone())
    }

    /// Replaces the panic hook with one that prints the same report, scrubbed, to stderr.
    pub fn install_panic_hook(&self) {
        let scrubber = self.clone();
        std::panic::set_hook(Box::new(move |info| {
            let thread = std::thread::current();
            let name = thread.name().unwrap_or("<unnamed>");
            let report = scrubber.scrub(&format!("thread '{name}' {info}\n"));
            let _ = std::io::stderr().write_all(report.as_bytes());
        }));
    }
}

/// See [`Scrubber::stderr`]. tracing-subscriber writes each event with one `write_all`, so a
/// secret is never split between two calls.
#[derive(Clone)]
pub struct ScrubbingStderr(Scrubber);

impl Write for ScrubbingStderr {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let text = String::from_utf8_lossy(buf);
        std::io::stderr().write_all(self.0.scrub(&text).as_bytes())?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for ScrubbingStderr {
    type Writer = ScrubbingStderr;

    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scrubs_every_known_secret_longest_first() {
        let scrubber = Scrubber::new(["hunter2", "hunter2-and-more", "ab"]);
        assert_eq!(
            scrubber.scrub("auth hunter2-and-more then hunter2, ab stays"),
            "auth *** then ***, ab stays"
        );
        assert_eq!(format!("{:?}", Secret::new("hunter2".into())), "***");
    }

    #[test]
    fn secret_files_lose_their_newline_and_empty_ones_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        std::fs::write(&path, "s3cret\r\n").unwrap();
        assert_eq!(read_secret_file("x", &path).unwrap().expose(), "s3cret");
        std::fs::write(&path, "\n").unwrap();
        let err = read_secret_file("x", &path).unwrap_err().to_string();
        assert!(err.contains("empty") && err.contains('x'), "{err}");
    }
}
