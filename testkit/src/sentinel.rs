//! A local Redis Sentinel deployment: one master, one replica and three sentinels, all real
//! processes on free ports, torn down on drop. Optionally the way a production deployment is
//! locked down ([`SentinelOptions`]): TLS everywhere (replication, sentinels, clients), a
//! password on the data nodes, and sentinels that require an ACL user of their own.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::tls::TestCertificates;
use crate::{free_port, RedisServer};

/// The master name the sentinels monitor.
pub const MASTER_NAME: &str = "coherence";

/// The sentinels' user for their peers (they authenticate to each other too).
const PEER_USER: &str = "sentinel-peer";
const PEER_PASSWORD: &str = "sentinel-peer-password";

/// How to lock the deployment down (everything off by default).
#[derive(Default)]
pub struct SentinelOptions<'a> {
    /// Serve TLS with these certificates on every process, replicate and gossip over it; the
    /// URL names the TLS ports (`rediss+sentinel://`). The plaintext ports stay open for the
    /// test harness only.
    pub tls: Option<&'a TestCertificates>,
    /// The data nodes require this password (`requirepass`, `masterauth`; the sentinels use
    /// it as `auth-pass`).
    pub data_password: Option<&'a str>,
    /// The sentinels refuse unauthenticated clients and accept this ACL user, allowed only
    /// what a client needs to find the master (`SENTINEL GET-MASTER-ADDR-BY-NAME`).
    pub sentinel_user: Option<(&'a str, &'a str)>,
}

/// One sentinel process: its plaintext port, its TLS port (when TLS is on), the process.
struct Sentinel {
    port: u16,
    tls_port: Option<u16>,
    child: Child,
}

/// A running master + replica + 3 sentinels.
pub struct RedisSentinels {
    pub master: RedisServer,
    pub replica: RedisServer,
    /// The port clients use for each data node (the TLS port when TLS is on).
    master_client_port: u16,
    replica_client_port: u16,
    sentinels: Vec<Sentinel>,
    tls: bool,
    _dir: tempfile::TempDir,
}

fn strings(args: &[String]) -> Vec<&str> {
    args.iter().map(String::as_str).collect()
}

impl RedisSentinels {
    pub fn start() -> RedisSentinels {
        RedisSentinels::start_with(&SentinelOptions::default())
    }

    pub fn start_with(options: &SentinelOptions) -> RedisSentinels {
        let data_args = |tls_port: Option<u16>| -> Vec<String> {
            match (options.tls, tls_port) {
                (Some(certs), Some(port)) => {
                    let mut args = certs.redis_args(port);
                    args.extend(["--tls-replication".into(), "yes".into()]);
                    args
                }
                _ => Vec::new(),
            }
        };
        let master_tls = options.tls.map(|_| free_port());
        let master = RedisServer::start_with(&strings(&data_args(master_tls)));
        let master_client_port = master_tls.unwrap_or(master.port());
        let replica_tls = options.tls.map(|_| free_port());
        let mut replica_args = data_args(replica_tls);
        replica_args.extend([
            "--replicaof".into(),
            "127.0.0.1".into(),
            master_client_port.to_string(),
        ]);
        let replica = RedisServer::start_with(&strings(&replica_args));
        let replica_client_port = replica_tls.unwrap_or(replica.port());
        if let Some(password) = options.data_password {
            // masterauth first, so replication never meets a password it lacks.
            for node in [&replica, &master] {
                let _: () = node
                    .cmd(&["CONFIG", "SET", "masterauth", password])
                    .expect("CONFIG SET masterauth");
            }
            for node in [&master, &replica] {
                let _: () = node
                    .cmd(&["CONFIG", "SET", "requirepass", password])
                    .expect("CONFIG SET requirepass");
            }
        }

        let dir = tempfile::Builder::new()
            .prefix("coherence-sentinel-")
            .tempdir()
            .expect("temporary directory");
        let mut sentinels = Vec::new();
        for i in 0..3 {
            let port = free_port();
            let tls_port = options.tls.map(|_| free_port());
            let mut conf = format!(
                "port {port}\nbind 127.0.0.1\ndir {dir}\nsentinel monitor {MASTER_NAME} 127.0.0.1 {master_client_port} 2\nsentinel down-after-milliseconds {MASTER_NAME} 1000\nsentinel failover-timeout {MASTER_NAME} 5000\nsentinel parallel-syncs {MASTER_NAME} 1\n",
                dir = dir.path().display()
            );
            if let (Some(certs), Some(tls_port)) = (options.tls, tls_port) {
                let args = certs.redis_args(tls_port);
                for pair in args.chunks(2) {
                    conf.push_str(&format!(
                        "{} {}\n",
                        pair[0].trim_start_matches("--"),
                        pair[1]
                    ));
                }
                conf.push_str("tls-replication yes\n");
            }
            if let Some(password) = options.data_password {
                conf.push_str(&format!("sentinel auth-pass {MASTER_NAME} {password}\n"));
            }
            if let Some((user, password)) = options.sentinel_user {
                conf.push_str(&format!(
                    "user default off\nuser {user} on >{password} -@all +sentinel|get-master-addr-by-name +hello +auth +ping\nuser {PEER_USER} on >{PEER_PASSWORD} +@all\nsentinel sentinel-user {PEER_USER}\nsentinel sentinel-pass {PEER_PASSWORD}\n"
                ));
            }
            let path = dir.path().join(format!("sentinel-{i}.conf"));
            std::fs::write(&path, conf).expect("write sentinel.conf");
            let child = Command::new("redis-server")
                .arg(&path)
                .arg("--sentinel")
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("spawn redis-server --sentinel");
            sentinels.push(Sentinel {
                port,
                tls_port,
                child,
            });
        }
        let set = RedisSentinels {
            master,
            replica,
            master_client_port,
            replica_client_port,
            sentinels,
            tls: options.tls.is_some(),
            _dir: dir,
        };
        // Sentinels announce themselves every 2 s and read the master's INFO every 10 s;
        // with TLS on a 2-core machine loaded to 10+ by other work, 30 s was once not enough.
        // How long discovery takes is not what any test here is about.
        assert!(
            set.wait_until(Duration::from_secs(90), |s| s.sentinels_agree()),
            "sentinels did not discover each other and the replica within 90 s"
        );
        set
    }

    /// One command to a sentinel over its plaintext port, as the peers' admin user.
    fn sentinel_cmd<T: redis::FromRedisValue>(port: u16, args: &[&str]) -> redis::RedisResult<T> {
        // The peer user exists only on locked-down sentinels; the default user elsewhere.
        let client = redis::Client::open(format!("redis://127.0.0.1:{port}"))?;
        let mut conn = client.get_connection_with_timeout(Duration::from_millis(500))?;
        let authenticated: redis::RedisResult<String> = redis::cmd("AUTH")
            .arg(PEER_USER)
            .arg(PEER_PASSWORD)
            .query(&mut conn);
        drop(authenticated);
        let mut cmd = redis::cmd(args[0]);
        for a in &args[1..] {
            cmd.arg(*a);
        }
        cmd.query(&mut conn)
    }

    fn sentinels_agree(&self) -> bool {
        self.sentinels.iter().all(|s| {
            let info: redis::RedisResult<String> =
                Self::sentinel_cmd(s.port, &["INFO", "sentinel"]);
            info.is_ok_and(|i| i.contains("slaves=1") && i.contains("sentinels=3"))
        })
    }

    fn wait_until(&self, limit: Duration, mut ok: impl FnMut(&Self) -> bool) -> bool {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if ok(self) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        false
    }

    /// `redis+sentinel://127.0.0.1:s1,127.0.0.1:s2,127.0.0.1:s3/<master name>`, or with TLS
    /// `rediss+sentinel://` and the sentinels' TLS ports. No credentials.
    pub fn url(&self) -> String {
        let addrs: Vec<String> = self
            .sentinels
            .iter()
            .map(|s| format!("127.0.0.1:{}", s.tls_port.unwrap_or(s.port)))
            .collect();
        let scheme = if self.tls {
            "rediss+sentinel"
        } else {
            "redis+sentinel"
        };
        format!("{scheme}://{}/{MASTER_NAME}", addrs.join(","))
    }

    /// The port clients reach the master on (the TLS port when TLS is on).
    pub fn master_client_port(&self) -> u16 {
        self.master_client_port
    }

    /// The port the sentinels currently name as master.
    pub fn master_port(&self) -> Option<u16> {
        self.sentinels.iter().find_map(|s| {
            let addr: redis::RedisResult<Vec<String>> = Self::sentinel_cmd(
                s.port,
                &["SENTINEL", "get-master-addr-by-name", MASTER_NAME],
            );
            addr.ok()
                .and_then(|a| a.get(1).and_then(|p| p.parse().ok()))
        })
    }

    /// SIGKILLs the master and waits until the sentinels have promoted the replica.
    pub fn kill_master_and_wait_failover(&mut self, limit: Duration) {
        let old = self.master_client_port;
        self.master.kill();
        let replica = self.replica_client_port;
        assert!(
            self.wait_until(limit, |s| s.master_port() == Some(replica)),
            "no failover from {old} to {replica} within {limit:?}"
        );
    }
}

impl Drop for RedisSentinels {
    fn drop(&mut self) {
        for sentinel in &mut self.sentinels {
            let _ = sentinel.child.kill();
            let _ = sentinel.child.wait();
        }
    }
}
