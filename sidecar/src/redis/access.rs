//! How the sidecar authenticates to Redis (and its Sentinels) and verifies them: ACL users and
//! passwords, TLS roots.
//!
//! In Kubernetes a password arrives as an environment variable from a Secret or as a file
//! mounted from one, and a TLS Redis is signed by a private CA mounted as a file. This module
//! resolves those settings once at start (a missing or unreadable file is a configuration
//! error naming the setting, exit code 64) and builds the `redis::Client` every connection of
//! the sidecar comes from. The data nodes and the Sentinels have credentials of their own
//! (Sentinel ACLs are separate from the data nodes'); both use `redis_ca_file` for TLS. No
//! password appears in `Debug` output or logs.

use std::path::Path;

use redis::{IntoConnectionInfo, ProtocolVersion, RedisResult};

use crate::process::config::{ConfigError, Settings};
use crate::redis::url::Credentials;
use crate::secrets::read_secret_file;

/// Resolved credentials and TLS roots (files already read).
#[derive(Clone, Default)]
pub struct RedisAccess {
    redis: Credentials,
    sentinel: Credentials,
    ca_pem: Option<Vec<u8>>,
}

impl std::fmt::Debug for RedisAccess {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisAccess")
            .field("redis", &self.redis)
            .field("sentinel", &self.sentinel)
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

/// A password given either directly or as a file (never both).
fn password(
    (setting, value): (&'static str, &str),
    (file_setting, file): (&'static str, &Path),
) -> Result<Option<String>, ConfigError> {
    match (value.is_empty(), file.as_os_str().is_empty()) {
        (false, false) => Err(invalid(
            file_setting,
            format!("set either {setting} or {file_setting}, not both"),
        )),
        (false, true) => Ok(Some(value.to_string())),
        (true, false) => Ok(Some(
            read_secret_file(file_setting, file)?.expose().to_string(),
        )),
        (true, true) => Ok(None),
    }
}

impl RedisAccess {
    /// Reads the password and CA files the settings name, and checks the combination.
    pub fn from_settings(s: &Settings) -> Result<RedisAccess, ConfigError> {
        let redis = Credentials {
            username: Some(s.redis_username.clone()).filter(|u| !u.is_empty()),
            password: password(
                ("redis_password", &s.redis_password),
                ("redis_password_file", &s.redis_password_file),
            )?,
        };
        let sentinel = Credentials {
            username: Some(s.sentinel_username.clone()).filter(|u| !u.is_empty()),
            password: password(
                ("sentinel_password", &s.sentinel_password),
                ("sentinel_password_file", &s.sentinel_password_file),
            )?,
        };
        if !sentinel.is_empty() && !s.redis_url.contains("+sentinel://") {
            let setting = if sentinel.username.is_some() {
                "sentinel_username"
            } else {
                "sentinel_password"
            };
            return Err(invalid(
                setting,
                "only applies to a redis+sentinel:// or rediss+sentinel:// redis_url".into(),
            ));
        }
        let ca_pem = if s.redis_ca_file.as_os_str().is_empty() {
            None
        } else {
            if !s.redis_url.starts_with("rediss") {
                return Err(invalid(
                    "redis_ca_file",
                    "only applies to a rediss:// (TLS) redis_url".into(),
                ));
            }
            let pem = std::fs::read(&s.redis_ca_file).map_err(|err| {
                invalid(
                    "redis_ca_file",
                    format!("cannot read {}: {err}", s.redis_ca_file.display()),
                )
            })?;
            if !String::from_utf8_lossy(&pem).contains("-----BEGIN CERTIFICATE-----") {
                return Err(invalid(
                    "redis_ca_file",
                    format!("{} holds no PEM certificate", s.redis_ca_file.display()),
                ));
            }
            Some(pem)
        };
        let access = RedisAccess {
            redis,
            sentinel,
            ca_pem,
        };
        // Catch what redis-rs would refuse at connect time (bad URL, bad CA) now, as a
        // configuration error. The URL's credentials never reach these messages.
        crate::redis::target::RedisTarget::parse(&s.redis_url)
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

    /// These settings, with the data-node credentials a URL carried where the settings give
    /// none (settings win, field by field).
    pub fn with_url_credentials(mut self, url: Credentials) -> RedisAccess {
        self.redis = self.redis.or(url);
        self
    }

    /// A client for a data node at `url` (credential-free) speaking RESP3 (pub/sub pushes need
    /// it), with the data-node credentials and, for `rediss://`, the TLS roots.
    pub fn client(&self, url: &str) -> RedisResult<redis::Client> {
        self.client_with(url, &self.redis)
    }

    /// A client for a Sentinel at `url`, with the Sentinel credentials and TLS roots.
    pub fn sentinel_client(&self, url: &str) -> RedisResult<redis::Client> {
        self.client_with(url, &self.sentinel)
    }

    fn client_with(&self, url: &str, credentials: &Credentials) -> RedisResult<redis::Client> {
        let info = url.into_connection_info()?;
        let mut redis_settings = info
            .redis_settings()
            .clone()
            .set_protocol(ProtocolVersion::RESP3);
        if let Some(user) = &credentials.username {
            redis_settings = redis_settings.set_username(user);
        }
        if let Some(password) = &credentials.password {
            redis_settings = redis_settings.set_password(password);
        }
        let info = info.set_redis_settings(redis_settings);
        if url.starts_with("rediss://") {
            install_crypto_provider();
            redis::Client::build_with_tls(info, self.tls_certificates())
        } else {
            redis::Client::open(info)
        }
    }

    /// The TLS roots for redis-rs: the configured CA, or (`None`) the built-in web PKI roots.
    pub fn tls_certificates(&self) -> redis::TlsCertificates {
        redis::TlsCertificates {
            client_tls: None,
            root_cert: self.ca_pem.clone(),
        }
    }

    /// The passwords held (for scrubbing output).
    pub fn secrets(&self) -> Vec<String> {
        [&self.redis.password, &self.sentinel.password]
            .into_iter()
            .flatten()
            .cloned()
            .collect()
    }
}

/// rustls needs one process-wide crypto provider; we ship ring. Installing twice is harmless
/// (the second attempt reports the first), so this runs before every TLS client is built.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::process::config::Config;

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
        assert_eq!(access.redis.password.as_deref(), Some("s3cret"));
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
