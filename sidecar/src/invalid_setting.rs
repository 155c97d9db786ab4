//! A setting refused at start, named. Each module that reads settings checks its own and
//! answers this; the configuration reports it and the binary exits with code 64
//! ([`crate::process::config::ConfigError`]).

/// Why the value of `setting` was refused. The message never quotes a secret.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid setting {setting}: {message}")]
pub struct InvalidSetting {
    pub setting: &'static str,
    pub message: String,
}

impl InvalidSetting {
    pub fn new(setting: &'static str, message: impl Into<String>) -> InvalidSetting {
        InvalidSetting {
            setting,
            message: message.into(),
        }
    }
}
