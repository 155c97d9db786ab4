//! The Redis settings, read once at start: which deployment `redis_url` names, the
//! credentials and TLS roots to reach it, and whether an evicting policy is accepted. Every
//! part of the sidecar that talks to Redis gets the [`RedisConfig`]; none parses `redis_url`
//! again.

use crate::invalid_setting::InvalidSetting;
use crate::redis::access::{AccessSettings, RedisAccess};
use crate::redis::scripts::ScriptMode;
use crate::redis::target::RedisTarget;
use crate::redis::url::{redact_url, url_secrets};

/// The settings about Redis, as given (see the configuration reference for each).
#[derive(Debug, Clone, Copy, Default)]
pub struct RedisSettings<'a> {
    pub url: &'a str,
    pub access: AccessSettings<'a>,
    pub allow_evicting_policy: bool,
    /// `redis_scripts`, parsed.
    pub scripts: ScriptMode,
}

/// How to reach Redis, resolved once (password and CA files read). `Debug` counts the
/// secrets, never shows them.
#[derive(Clone)]
pub struct RedisConfig {
    /// The deployment, with the credentials and TLS roots of every connection.
    pub target: RedisTarget,
    /// `redis_url` with its password replaced by `***`, for logs.
    pub url_for_logs: String,
    /// Serve even when Redis can evict keys without a time to live (see [`crate::redis::link`]).
    pub allow_evicting_policy: bool,
    /// How the scripts run (`redis_scripts`).
    pub scripts: ScriptMode,
    /// Every password this configuration holds, the URL's included.
    secrets: Vec<String>,
}

impl std::fmt::Debug for RedisConfig {
    /// Found by fuzzing `redis_url`: the derived `Debug` printed every password (and a
    /// `Config` is `Debug`).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisConfig")
            .field("target", &self.target)
            .field("url_for_logs", &self.url_for_logs)
            .field("allow_evicting_policy", &self.allow_evicting_policy)
            .field("scripts", &self.scripts)
            .field("secrets", &format_args!("{} hidden", self.secrets.len()))
            .finish()
    }
}

impl RedisConfig {
    /// Parses `redis_url`, reads the files the settings name and builds every client the URL
    /// names, so that whatever redis-rs would refuse at connect time is refused now, naming
    /// the setting. No message quotes a password.
    pub fn new(s: &RedisSettings<'_>) -> Result<RedisConfig, InvalidSetting> {
        let target = RedisTarget::parse(s.url).map_err(|err| {
            InvalidSetting::new(
                "redis_url",
                format!(
                    "{}: {err} (expected redis://, rediss://, unix://, redis+sentinel://host:port,.../master or redis+cluster://host:port,...)",
                    redact_url(s.url)
                ),
            )
        })?;
        let access = RedisAccess::new(&s.access, target.is_sentinel(), target.is_tls())?;
        let has_ca = access.has_ca();
        let mut secrets = access.secrets();
        secrets.extend(url_secrets(s.url));
        let target = target.with_access(access);
        target.check().map_err(|err| {
            InvalidSetting::new(
                if has_ca { "redis_ca_file" } else { "redis_url" },
                err.to_string(),
            )
        })?;
        Ok(RedisConfig {
            target,
            url_for_logs: redact_url(s.url),
            allow_evicting_policy: s.allow_evicting_policy,
            scripts: s.scripts,
            secrets,
        })
    }

    /// The passwords held (for scrubbing output).
    pub fn secrets(&self) -> &[String] {
        &self.secrets
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::redis::url::tests::urls_with_a_password;
    use coherence_testkit::fuzz;
    use proptest::prelude::*;

    #[test]
    fn debug_hides_the_passwords() {
        let url = "redis://u:hunter2@h:1";
        let config = RedisConfig::new(&RedisSettings {
            url,
            ..RedisSettings::default()
        })
        .unwrap();
        assert_eq!(config.secrets(), ["hunter2", "hunter2"]);
        let debug = format!("{config:?}");
        assert!(!debug.contains("hunter2"), "{debug}");
    }

    proptest! {
        #![proptest_config(fuzz::config())]

        /// The whole of `redis_url`'s reading (redis-rs's parser included): a password in it
        /// reaches no error, no log form and no `Debug`, and the scrubber is handed it.
        #[test]
        fn fuzz_redis_url_setting_never_shows_the_password((url, password) in urls_with_a_password()) {
            let settings = RedisSettings { url: &url, ..RedisSettings::default() };
            match RedisConfig::new(&settings) {
                Ok(config) => {
                    prop_assert!(!config.url_for_logs.contains("SECRET"), "{}", config.url_for_logs);
                    let debug = format!("{config:?}");
                    prop_assert!(!debug.contains("SECRET"), "{debug}");
                    prop_assert!(config.secrets().iter().any(|s| s.contains(&password)));
                }
                Err(err) => prop_assert!(!err.to_string().contains("SECRET"), "{err}"),
            }
        }
    }
}
