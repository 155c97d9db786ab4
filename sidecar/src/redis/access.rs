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

use crate::invalid_setting::InvalidSetting;
use crate::redis::url::Credentials;
use crate::secrets::read_secret_file;

/// The settings about credentials and TLS roots, as given.
#[derive(Debug, Clone, Copy, Default)]
pub struct AccessSettings<'a> {
    pub username: &'a str,
    pub password: &'a str,
    pub password_file: Option<&'a Path>,
    pub ca_file: Option<&'a Path>,
    pub sentinel_username: &'a str,
    pub sentinel_password: &'a str,
    pub sentinel_password_file: Option<&'a Path>,
}

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

fn invalid(setting: &'static str, message: String) -> InvalidSetting {
    InvalidSetting::new(setting, message)
}

/// A password given either directly or as a file (never both).
fn password(
    (setting, value): (&'static str, &str),
    (file_setting, file): (&'static str, Option<&Path>),
) -> Result<Option<String>, InvalidSetting> {
    match (value.is_empty(), file) {
        (false, Some(_)) => Err(invalid(
            file_setting,
            format!("set either {setting} or {file_setting}, not both"),
        )),
        (false, None) => Ok(Some(value.to_string())),
        (true, Some(file)) => Ok(Some(
            read_secret_file(file_setting, file)?.expose().to_string(),
        )),
        (true, None) => Ok(None),
    }
}

impl RedisAccess {
    /// Reads the password and CA files the settings name, and checks that each applies to the
    /// deployment: sentinel credentials to one `redis_url` names `with_sentinels`, a CA file
    /// to one reached `with_tls`.
    pub fn new(
        s: &AccessSettings<'_>,
        with_sentinels: bool,
        with_tls: bool,
    ) -> Result<RedisAccess, InvalidSetting> {
        let redis = Credentials {
            username: Some(s.username.to_string()).filter(|u| !u.is_empty()),
            password: password(
                ("redis_password", s.password),
                ("redis_password_file", s.password_file),
            )?,
        };
        let sentinel = Credentials {
            username: Some(s.sentinel_username.to_string()).filter(|u| !u.is_empty()),
            password: password(
                ("sentinel_password", s.sentinel_password),
                ("sentinel_password_file", s.sentinel_password_file),
            )?,
        };
        if !sentinel.is_empty() && !with_sentinels {
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
        let ca_pem = match s.ca_file {
            None => None,
            Some(_) if !with_tls => {
                return Err(invalid(
                    "redis_ca_file",
                    "only applies to a rediss:// (TLS) redis_url".into(),
                ))
            }
            Some(ca_file) => {
                let pem = std::fs::read(ca_file).map_err(|err| {
                    invalid(
                        "redis_ca_file",
                        format!("cannot read {}: {err}", ca_file.display()),
                    )
                })?;
                if !String::from_utf8_lossy(&pem).contains("-----BEGIN CERTIFICATE-----") {
                    return Err(invalid(
                        "redis_ca_file",
                        format!("{} holds no PEM certificate", ca_file.display()),
                    ));
                }
                Some(pem)
            }
        };
        Ok(RedisAccess {
            redis,
            sentinel,
            ca_pem,
        })
    }

    /// Whether TLS connections check certificates against `redis_ca_file` (rather than the
    /// built-in web PKI roots).
    pub fn has_ca(&self) -> bool {
        self.ca_pem.is_some()
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
    use std::path::PathBuf;

    use super::*;

    /// The access the settings give for a `redis://` URL (`rediss://` with `tls`), or why
    /// they are refused.
    fn access<'a>(
        tls: bool,
        adjust: impl FnOnce(&mut AccessSettings<'a>),
    ) -> Result<RedisAccess, InvalidSetting> {
        let mut s = AccessSettings::default();
        adjust(&mut s);
        RedisAccess::new(&s, false, tls)
    }

    #[test]
    fn password_file_is_read_without_its_newline_and_never_printed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("password");
        std::fs::write(&path, "s3cret\n").unwrap();
        let access = access(false, |s| s.password_file = Some(&path)).unwrap();
        assert_eq!(access.redis.password.as_deref(), Some("s3cret"));
        assert!(!format!("{access:?}").contains("s3cret"));
    }

    #[test]
    fn bad_combinations_and_files_name_the_setting() {
        let nonexistent = PathBuf::from("/nonexistent");
        let err = access(false, |s| {
            s.password = "a";
            s.password_file = Some(&nonexistent);
        })
        .unwrap_err()
        .to_string();
        assert!(err.contains("redis_password_file"), "{err}");

        let missing = PathBuf::from("/nonexistent/password");
        let err = access(false, |s| s.password_file = Some(&missing))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("redis_password_file") && err.contains("/nonexistent/password"),
            "{err}"
        );

        let not_pem = PathBuf::from("/etc/hostname");
        let err = access(false, |s| s.ca_file = Some(&not_pem))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("redis_ca_file") && err.contains("rediss://"),
            "{err}"
        );

        let err = access(true, |s| s.ca_file = Some(&not_pem))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("redis_ca_file") && err.contains("no PEM"),
            "{err}"
        );
    }
}
