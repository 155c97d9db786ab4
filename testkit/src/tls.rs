//! Certificates for TLS tests: a private CA and a server certificate for `127.0.0.1` signed by
//! it, made by the `openssl` command in a temporary directory — the way a cluster's private CA
//! signs its Redis servers. Also the `redis-server` arguments that serve TLS with them.

use std::path::{Path, PathBuf};
use std::process::Command;

/// A CA (`ca.crt`) and a server certificate and key for 127.0.0.1 (`server.crt`, `server.key`).
pub struct TestCertificates {
    dir: tempfile::TempDir,
}

fn openssl(dir: &Path, args: &[&str]) {
    let output = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("openssl is not installed: `apt-get install openssl` (bash .ci/run installs it)");
    assert!(
        output.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

impl TestCertificates {
    pub fn make() -> TestCertificates {
        let dir = tempfile::Builder::new()
            .prefix("coherence-certs-")
            .tempdir()
            .expect("temporary directory");
        let d = dir.path();
        let new_key = ["-newkey", "rsa:2048", "-nodes"];
        let ca = ["-subj", "/CN=coherence test CA", "-keyout", "ca.key"];
        openssl(
            d,
            &[
                &["req", "-x509"][..],
                &new_key,
                &ca,
                &["-days", "2", "-out", "ca.crt"],
            ]
            .concat(),
        );
        let server = ["-subj", "/CN=127.0.0.1", "-keyout", "server.key"];
        openssl(
            d,
            &[&["req"][..], &new_key, &server, &["-out", "server.csr"]].concat(),
        );
        std::fs::write(d.join("san.ext"), "subjectAltName=IP:127.0.0.1\n").expect("san.ext");
        openssl(
            d,
            &[
                "x509",
                "-req",
                "-in",
                "server.csr",
                "-CA",
                "ca.crt",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-days",
                "2",
                "-extfile",
                "san.ext",
                "-out",
                "server.crt",
            ],
        );
        TestCertificates { dir }
    }

    /// The CA certificate (PEM): what `redis_ca_file` names.
    pub fn ca(&self) -> PathBuf {
        self.dir.path().join("ca.crt")
    }

    pub fn cert(&self) -> PathBuf {
        self.dir.path().join("server.crt")
    }

    pub fn key(&self) -> PathBuf {
        self.dir.path().join("server.key")
    }

    /// `redis-server` arguments that also serve TLS on `tls_port` (clients need no
    /// certificate of their own).
    pub fn redis_args(&self, tls_port: u16) -> Vec<String> {
        let path = |p: PathBuf| p.to_str().expect("UTF-8 path").to_string();
        vec![
            "--tls-port".into(),
            tls_port.to_string(),
            "--tls-cert-file".into(),
            path(self.cert()),
            "--tls-key-file".into(),
            path(self.key()),
            "--tls-ca-cert-file".into(),
            path(self.ca()),
            "--tls-auth-clients".into(),
            "no".into(),
        ]
    }
}
