//! The configuration reference cannot drift: README.md's table is the generated one, and
//! `--print-config` shows every setting of the table with secrets redacted.

use std::process::Command;

use coherence_sidecar::process::config::{reference_table, SETTINGS};

const START: &str = "<!-- config-reference:start -->\n";
const END: &str = "<!-- config-reference:end -->";

#[test]
fn readme_table_is_the_generated_reference() {
    let readme_path = concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md");
    let readme = std::fs::read_to_string(readme_path).expect("read README.md");
    let start = readme
        .find(START)
        .expect("README.md has the config-reference:start marker")
        + START.len();
    let end = readme
        .find(END)
        .expect("README.md has the config-reference:end marker");
    let documented = &readme[start..end];
    assert!(
        documented == reference_table(),
        "README.md's configuration table differs from the settings in sidecar/src/config.rs; \
         regenerate it with `cargo run -p coherence-sidecar -- --print-config-reference`.\n\
         --- README.md ---\n{documented}\n--- generated ---\n{}",
        reference_table()
    );
}

fn sidecar() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_coherence-sidecar"));
    // Only what a test sets: no COHERENCE_* from the environment running the tests.
    for (key, _) in std::env::vars() {
        if key.starts_with("COHERENCE_") {
            cmd.env_remove(key);
        }
    }
    cmd
}

#[test]
fn print_config_shows_every_setting_and_no_secret() {
    let dir = tempfile::tempdir().unwrap();
    let password_file = dir.path().join("redis-password");
    std::fs::write(&password_file, "from-the-file\n").unwrap();
    let out = sidecar()
        .args([
            "--print-config",
            "--redis-url",
            "redis://app:in-the-url@redis:6379/0",
        ])
        .env("COHERENCE_REDIS_USERNAME", "coherence-app")
        .env("COHERENCE_REDIS_PASSWORD_FILE", &password_file)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for setting in SETTINGS {
        let shown = text.lines().any(|l| {
            l.starts_with(&format!("{} = ", setting.toml))
                || l == format!("# {} is not set", setting.toml)
        });
        assert!(
            shown,
            "--print-config does not show {}:\n{text}",
            setting.toml
        );
    }
    assert!(
        !text.contains("in-the-url") && !text.contains("from-the-file"),
        "{text}"
    );
    assert!(
        text.contains("redis_url = \"redis://app:***@redis:6379/0\""),
        "{text}"
    );
    assert!(
        text.contains("redis_username = \"coherence-app\""),
        "{text}"
    );
    // The output is a valid TOML config file again.
    let reparsed: toml::Table = text.parse().expect("--print-config prints TOML");
    assert_eq!(
        reparsed.get("namespace").and_then(|v| v.as_str()),
        Some("default")
    );

    let out = sidecar()
        .args(["--print-config"])
        .env("COHERENCE_REDIS_PASSWORD", "from-the-env")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        !text.contains("from-the-env") && text.contains("redis_password = \"***\""),
        "{text}"
    );
}

#[test]
fn unreadable_password_file_is_a_configuration_error() {
    let out = sidecar()
        .args([
            "--print-config",
            "--redis-password-file",
            "/nonexistent/secret",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("redis_password_file"), "{err}");
}
