//! How the sidecar authenticates to Redis and verifies it: ACL user and password, TLS roots.
//!
//! In Kubernetes the password arrives as an environment variable from a Secret or as a file
//! mounted from one, and a TLS Redis is signed by a private CA mounted as a file. This module
//! resolves those settings once at start (a missing or unreadable file is a configuration
//! error naming the setting, exit code 64) and builds the `redis::Client` every connection of
//! the sidecar comes from. The password never appears in `Debug` output or logs.

use std::path::Path;

use redis::{IntoConnectionInfo, ProtocolVersion, RedisResult};

use crate::config::{ConfigError, Settings};

/// Resolved credentials and TLS roots (files already read).
#[derive(Clone, Default)]
pub struct RedisAccess {
    username: Option<String>,
    password: Option<String>,
    ca_pem: Option<Vec<u8>>,
}

impl std::fmt::Debug for RedisAccess {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisAccess")
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "***"))
            .field(
                "ca_pem",
                &self
                    .ca_pem
                    .as_ref()
                    .map(|pem| format!("{} bytes", pem.len())),
            )
            .finish()
    }
}

fn invalid(setting: &'static str, message: String) -> ConfigError {
    ConfigError::Invalid { setting, message }
}

fn read(setting: &'static str, path: &Path) -> Result<Vec<u8>, ConfigError> {
    std::fs::read(path)
        .map_err(|err| invalid(setting, format!("cannot read {}: {err}", path.display())))
}

impl RedisAccess {
    /// Reads the password and CA files the settings name, and checks the combination.
    pub fn from_settings(s: &Settings) -> Result<RedisAccess, ConfigError> {
        let has_password_file = !s.redis_password_file.as_os_str().is_empty();
        let password = match (s.redis_password.is_empty(), has_password_file) {
            (false, true) => {
                return Err(invalid(
                    "redis_password_file",
                    "set either redis_password or redis_password_file, not both".into(),
                ))
            }
            (false, false) => Some(s.redis_password.clone()),
            (true, true) => {
                let bytes = read("redis_password_file", &s.redis_password_file)?;
                let text = String::from_utf8(bytes).map_err(|_| {
                    invalid("redis_password_file", "the file is not UTF-8 text".into())
                })?;
                // Secrets created with `echo` or an editor end in a newline that is no part
                // of the password.
                let password = text.trim_end_matches(['\n', '\r']).to_string();
                if password.is_empty() {
                    return Err(invalid("redis_password_file", "the file is empty".into()));
                }
                Some(password)
            }
            (true, false) => None,
        };
        let ca_pem = if s.redis_ca_file.as_os_str().is_empty() {
            None
        } else {
            if !s.redis_url.starts_with("rediss") {
                return Err(invalid(
                    "redis_ca_file",
                    "only applies to a rediss:// (TLS) redis_url".into(),
                ));
            }
            let pem = read("redis_ca_file", &s.redis_ca_file)?;
            if !String::from_utf8_lossy(&pem).contains("-----BEGIN CERTIFICATE-----") {
                return Err(invalid(
                    "redis_ca_file",
                    format!("{} holds no PEM certificate", s.redis_ca_file.display()),
                ));
            }
            Some(pem)
        };
        let access = RedisAccess {
            username: Some(s.redis_username.clone()).filter(|u| !u.is_empty()),
            password,
            ca_pem,
        };
        // Catch what redis-rs would refuse at connect time (bad URL, bad CA) now, as a
        // configuration error.
        crate::redis_target::RedisTarget::parse(&s.redis_url)
            .and_then(|target| target.with_access(access.clone()).check())
            .map_err(|err| {
                invalid(
                    if access.ca_pem.is_some() {
                        "redis_ca_file"
                    } else {
                        "redis_url"
                    },
                    err.to_string(),
                )
            })?;
        Ok(access)
    }

    /// A client for `url` speaking RESP3 (pub/sub pushes need it), with these credentials
    /// (they override any in the URL) and, for `rediss://`, these TLS roots.
    pub fn client(&self, url: &str) -> RedisResult<redis::Client> {
        let info = url.into_connection_info()?;
        let mut redis_settings = info
            .redis_settings()
            .clone()
            .set_protocol(ProtocolVersion::RESP3);
        if let Some(user) = &self.username {
            redis_settings = redis_settings.set_username(user);
        }
        if let Some(password) = &self.password {
            redis_settings = redis_settings.set_password(password);
        }
        let info = info.set_redis_settings(redis_settings);
        if url.starts_with("rediss://") {
            install_crypto_provider();
            redis::Client::build_with_tls(
                info,
                redis::TlsCertificates {
                    client_tls: None,
                    root_cert: self.ca_pem.clone(),
                },
            )
        } else {
            redis::Client::open(info)
        }
    }
}

/// rustls needs one process-wide crypto provider; we ship ring. Installing twice is harmless
/// (the second attempt reports the first), so this runs before every TLS client is built.
fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    fn settings() -> Settings {
        Config::defaults()
    }

    #[test]
    fn password_file_is_read_without_its_newline_and_never_printed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("password");
        std::fs::write(&path, "s3cret\n").unwrap();
        let mut s = settings();
        s.redis_password_file = path;
        let access = RedisAccess::from_settings(&s).unwrap();
        assert_eq!(access.password.as_deref(), Some("s3cret"));
        assert!(!format!("{access:?}").contains("s3cret"));
    }

    #[test]
    fn bad_combinations_and_files_name_the_setting() {
        let mut s = settings();
        s.redis_password = "a".into();
        s.redis_password_file = "/nonexistent".into();
        let err = RedisAccess::from_settings(&s).unwrap_err().to_string();
        assert!(err.contains("redis_password_file"), "{err}");

        let mut s = settings();
        s.redis_password_file = "/nonexistent/password".into();
        let err = RedisAccess::from_settings(&s).unwrap_err().to_string();
        assert!(
            err.contains("redis_password_file") && err.contains("/nonexistent/password"),
            "{err}"
        );

        let mut s = settings();
        s.redis_ca_file = "/etc/hostname".into();
        let err = RedisAccess::from_settings(&s).unwrap_err().to_string();
        assert!(
            err.contains("redis_ca_file") && err.contains("rediss://"),
            "{err}"
        );

        let mut s = settings();
        s.redis_url = "rediss://127.0.0.1:6380".into();
        s.redis_ca_file = "/etc/hostname".into();
        let err = RedisAccess::from_settings(&s).unwrap_err().to_string();
        assert!(
            err.contains("redis_ca_file") && err.contains("no PEM"),
            "{err}"
        );
    }
}
