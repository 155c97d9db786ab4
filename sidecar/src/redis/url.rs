//! The one reader of the credentials in a `redis_url`.
//!
//! A password may sit in a URL's user info (`redis://user:password@host`, also in the
//! sentinel and cluster forms) or, for `unix://`, in its query (`?user=…&pass=…`). Every other
//! part of the sidecar used to look at the whole URL, so any error that quoted a piece of it
//! (a "bad port" naming the host, say) could quote the password. Here the credentials are cut
//! off first — at the *last* `@`, since an unencoded password may hold a `/`, `:` or `@` — and
//! what the rest of the sidecar parses, connects to and logs is the URL without them: the
//! parser cannot echo what it never sees. [`redact_url`] shows a URL for humans with the same
//! cut.

use percent_encoding::percent_decode_str;

/// A user name and password (from a URL, percent-decoded, or from settings). `Debug` hides
/// the password.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Credentials {
    pub username: Option<String>,
    pub password: Option<String>,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "***"))
            .finish()
    }
}

impl Credentials {
    /// These credentials, each missing part taken from `fallback`.
    pub fn or(self, fallback: Credentials) -> Credentials {
        Credentials {
            username: self.username.or(fallback.username),
            password: self.password.or(fallback.password),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.username.is_none() && self.password.is_none()
    }
}

/// Why a URL's credentials could not be read. Never quotes the URL.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UrlError {
    #[error("not a URL (no scheme://)")]
    NoScheme,
    #[error("the {0} is not valid UTF-8 once percent-decoded")]
    NotUtf8(&'static str),
}

/// Schemes whose credentials ride in the query string, the way redis-rs reads them.
fn is_unix(scheme: &str) -> bool {
    matches!(
        scheme.to_ascii_lowercase().as_str(),
        "unix" | "redis+unix" | "valkey+unix"
    )
}

/// Query parameters of a `unix://` URL that hold credentials.
const UNIX_USER: &str = "user";
const UNIX_PASSWORD: &str = "pass";

/// Splits `url` into the URL without credentials and the credentials.
pub fn split_credentials(url: &str) -> Result<(String, Credentials), UrlError> {
    let (scheme, rest) = url.split_once("://").ok_or(UrlError::NoScheme)?;
    if is_unix(scheme) {
        let (path, query) = rest.split_once('?').unwrap_or((rest, ""));
        let mut credentials = Credentials::default();
        let mut kept = Vec::new();
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let name = pair.split('=').next().unwrap_or("");
            if name == UNIX_USER || name == UNIX_PASSWORD {
                let value = form_urlencoded::parse(pair.as_bytes())
                    .next()
                    .map(|(_, v)| v.into_owned())
                    .filter(|v| !v.is_empty());
                if name == UNIX_USER {
                    credentials.username = value;
                } else {
                    credentials.password = value;
                }
            } else {
                kept.push(pair);
            }
        }
        let url = if kept.is_empty() {
            format!("{scheme}://{path}")
        } else {
            format!("{scheme}://{path}?{}", kept.join("&"))
        };
        return Ok((url, credentials));
    }
    let Some((userinfo, after)) = rest.rsplit_once('@') else {
        return Ok((url.to_string(), Credentials::default()));
    };
    let (user, password) = match userinfo.split_once(':') {
        Some((user, password)) => (user, Some(password)),
        None => (userinfo, None),
    };
    let decode = |what: &'static str, text: &str| -> Result<Option<String>, UrlError> {
        let decoded = percent_decode_str(text)
            .decode_utf8()
            .map_err(|_| UrlError::NotUtf8(what))?;
        Ok(Some(decoded.into_owned()).filter(|s| !s.is_empty()))
    };
    let credentials = Credentials {
        username: decode("user name in redis_url", user)?,
        password: match password {
            Some(p) => decode("password in redis_url", p)?,
            None => None,
        },
    };
    Ok((format!("{scheme}://{after}"), credentials))
}

/// The password in `url` as written and as decoded (for scrubbing output; empty when none).
pub fn url_secrets(url: &str) -> Vec<String> {
    let mut secrets = Vec::new();
    if let Ok((_, credentials)) = split_credentials(url) {
        secrets.extend(credentials.password);
    }
    if let Some((_, rest)) = url.split_once("://") {
        if let Some((userinfo, _)) = rest.rsplit_once('@') {
            secrets.extend(userinfo.split_once(':').map(|(_, p)| p.to_string()));
        }
        if let Some((_, query)) = rest.split_once('?') {
            secrets.extend(query.split('&').filter_map(|pair| {
                pair.strip_prefix(UNIX_PASSWORD)?
                    .strip_prefix('=')
                    .map(String::from)
            }));
        }
    }
    secrets.retain(|s| !s.is_empty());
    secrets
}

/// A Redis URL with any password replaced by `***`, safe for logs and error messages.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        // Not a URL (a typo like `redis//:pw@host`): still never echo what precedes an '@'.
        return match url.rsplit_once('@') {
            Some((_, after)) => format!("***@{after}"),
            None => url.to_string(),
        };
    };
    if is_unix(scheme) {
        let Some((path, query)) = rest.split_once('?') else {
            return url.to_string();
        };
        let query: Vec<String> = query
            .split('&')
            .map(|pair| match pair.split_once('=') {
                Some((name, _)) if name == UNIX_PASSWORD => format!("{name}=***"),
                _ => pair.to_string(),
            })
            .collect();
        return format!("{scheme}://{path}?{}", query.join("&"));
    }
    match rest.rsplit_once('@') {
        Some((userinfo, after)) => {
            let redacted = match userinfo.split_once(':') {
                Some((user, _)) => format!("{user}:***"),
                None => "***".to_string(),
            };
            format!("{scheme}://{redacted}@{after}")
        }
        None => url.to_string(),
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    fn creds(user: Option<&str>, password: Option<&str>) -> Credentials {
        Credentials {
            username: user.map(String::from),
            password: password.map(String::from),
        }
    }

    #[test]
    fn credentials_are_cut_at_the_last_at_sign_and_decoded() {
        assert_eq!(
            split_credentials("redis://u:p%40ss@h:1/0").unwrap(),
            ("redis://h:1/0".into(), creds(Some("u"), Some("p@ss")))
        );
        assert_eq!(
            split_credentials("redis+sentinel://u:se/c:r@t@h:1,h:2/m").unwrap(),
            (
                "redis+sentinel://h:1,h:2/m".into(),
                creds(Some("u"), Some("se/c:r@t"))
            )
        );
        assert_eq!(
            split_credentials("redis://:pw@h").unwrap(),
            ("redis://h".into(), creds(None, Some("pw")))
        );
        assert_eq!(
            split_credentials("redis://h:1").unwrap(),
            ("redis://h:1".into(), creds(None, None))
        );
        assert_eq!(
            split_credentials("unix:///run/redis.sock?db=2&user=u&pass=s%26cret").unwrap(),
            (
                "unix:///run/redis.sock?db=2".into(),
                creds(Some("u"), Some("s&cret"))
            )
        );
        assert_eq!(
            split_credentials("redis//:pw@h"),
            Err(UrlError::NoScheme),
            "no scheme"
        );
        let err = split_credentials("redis://u:%ffsecret@h").unwrap_err();
        assert!(!err.to_string().contains("secret"), "{err}");
        assert!(!format!("{:?}", creds(None, Some("secret"))).contains("secret"));
    }

    #[test]
    fn redacts_passwords_in_every_form() {
        assert_eq!(
            redact_url("redis://user:secret@host:6379/0"),
            "redis://user:***@host:6379/0"
        );
        assert_eq!(redact_url("redis://:secret@host"), "redis://:***@host");
        assert_eq!(redact_url("redis://host:6379"), "redis://host:6379");
        assert_eq!(redact_url("redis://:se/cret@host/0"), "redis://:***@host/0");
        assert_eq!(redact_url("redis//:secret@host"), "***@host");
        assert_eq!(
            redact_url("rediss+cluster://u:se/c@ret@h:1,h:2"),
            "rediss+cluster://u:***@h:1,h:2"
        );
        assert_eq!(
            redact_url("unix:///s.sock?user=u&pass=secret&db=1"),
            "unix:///s.sock?user=u&pass=***&db=1"
        );
    }

    use coherence_testkit::fuzz;
    use proptest::prelude::*;

    /// A `redis_url` whose password holds the marker `SECRET` among characters a password
    /// may hold (the rest of the URL is drawn from an alphabet without capitals, so the marker
    /// can come from the password only), and the password as written.
    pub(crate) fn urls_with_a_password() -> impl Strategy<Value = (String, String)> {
        let scheme = prop_oneof![
            Just("redis"),
            Just("rediss"),
            Just("valkey"),
            Just("redis+sentinel"),
            Just("rediss+sentinel"),
            Just("redis+cluster"),
            Just("rediss+cluster"),
            Just("unix"),
            Just("redis+unix"),
            Just("http"),
        ];
        (
            scheme,
            "[a-z0-9%_-]{0,6}",
            "[!-~]{0,6}",
            "[!-~]{0,6}",
            "[a-z0-9.:,\\[\\]-]{0,24}",
            "[a-z0-9/?=&@#%]{0,12}",
        )
            .prop_map(|(scheme, user, before, after, hosts, tail)| {
                if is_unix(scheme) {
                    // In a query a password cannot hold '&' or '#' unencoded.
                    let clean = |t: String| t.replace(['&', '#'], "_");
                    let password = format!("{}SECRET{}", clean(before), clean(after));
                    let url =
                        format!("{scheme}:///{hosts}?db=1&user={user}&pass={password}&{tail}");
                    (url, password)
                } else {
                    let password = format!("{before}SECRET{after}");
                    (
                        format!("{scheme}://{user}:{password}@{hosts}{tail}"),
                        password,
                    )
                }
            })
    }

    proptest! {
        #![proptest_config(fuzz::config())]

        /// Any text as `redis_url`: no panic, and the URL passed on keeps no part of the
        /// user info it cut.
        #[test]
        fn fuzz_url_any_text(url in "\\PC{0,64}") {
            let _ = url_secrets(&url);
            let redacted = redact_url(&url);
            prop_assert!(redacted.len() <= url.len() + 4);
            if let Ok((rest, credentials)) = split_credentials(&url) {
                prop_assert!(rest.len() <= url.len());
                for secret in credentials.password.iter().filter(|p| p.len() >= 4) {
                    prop_assert!(!rest.contains(secret.as_str()), "{rest:?} holds {secret:?}");
                }
            }
        }

        /// A password never reaches what is shown or passed on, and the scrubber knows it.
        #[test]
        fn fuzz_url_password_never_shown((url, password) in urls_with_a_password()) {
            let redacted = redact_url(&url);
            prop_assert!(!redacted.contains("SECRET"), "{redacted}");
            match split_credentials(&url) {
                Ok((rest, _)) => prop_assert!(!rest.contains("SECRET"), "{rest}"),
                Err(err) => prop_assert!(!err.to_string().contains("SECRET"), "{err}"),
            }
            prop_assert!(url_secrets(&url).iter().any(|s| s.contains(&password)), "{url}");
        }
    }
}
