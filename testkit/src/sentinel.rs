//! A local Redis Sentinel deployment: one master, one replica and three sentinels, all real
//! processes on free ports, torn down on drop.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::{free_port, RedisServer};

/// The master name the sentinels monitor.
pub const MASTER_NAME: &str = "coherence";

/// A running master + replica + 3 sentinels.
pub struct RedisSentinels {
    pub master: RedisServer,
    pub replica: RedisServer,
    sentinels: Vec<(u16, Child)>,
    _dir: tempfile::TempDir,
}

impl RedisSentinels {
    pub fn start() -> RedisSentinels {
        let master = RedisServer::start();
        let master_port = master.port().to_string();
        let replica = RedisServer::start_with(&["--replicaof", "127.0.0.1", &master_port]);
        let dir = tempfile::Builder::new()
            .prefix("coherence-sentinel-")
            .tempdir()
            .expect("temporary directory");
        let mut sentinels = Vec::new();
        for i in 0..3 {
            let port = free_port();
            let conf = dir.path().join(format!("sentinel-{i}.conf"));
            std::fs::write(
                &conf,
                format!(
                    "port {port}\nbind 127.0.0.1\ndir {dir}\nsentinel monitor {MASTER_NAME} 127.0.0.1 {master_port} 2\nsentinel down-after-milliseconds {MASTER_NAME} 1000\nsentinel failover-timeout {MASTER_NAME} 5000\nsentinel parallel-syncs {MASTER_NAME} 1\n",
                    dir = dir.path().display()
                ),
            )
            .expect("write sentinel.conf");
            let child = Command::new("redis-server")
                .arg(&conf)
                .arg("--sentinel")
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("spawn redis-server --sentinel");
            sentinels.push((port, child));
        }
        let set = RedisSentinels {
            master,
            replica,
            sentinels,
            _dir: dir,
        };
        assert!(
            set.wait_until(Duration::from_secs(30), |s| s.sentinels_agree()),
            "sentinels did not discover each other and the replica"
        );
        set
    }

    fn sentinel_cmd<T: redis::FromRedisValue>(port: u16, args: &[&str]) -> redis::RedisResult<T> {
        let client = redis::Client::open(format!("redis://127.0.0.1:{port}"))?;
        let mut conn = client.get_connection_with_timeout(Duration::from_millis(500))?;
        let mut cmd = redis::cmd(args[0]);
        for a in &args[1..] {
            cmd.arg(*a);
        }
        cmd.query(&mut conn)
    }

    fn sentinels_agree(&self) -> bool {
        self.sentinels.iter().all(|(port, _)| {
            let info: redis::RedisResult<String> = Self::sentinel_cmd(*port, &["INFO", "sentinel"]);
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

    /// `redis+sentinel://127.0.0.1:s1,127.0.0.1:s2,127.0.0.1:s3/<master name>`.
    pub fn url(&self) -> String {
        let addrs: Vec<String> = self
            .sentinels
            .iter()
            .map(|(p, _)| format!("127.0.0.1:{p}"))
            .collect();
        format!("redis+sentinel://{}/{MASTER_NAME}", addrs.join(","))
    }

    /// The port the sentinels currently name as master.
    pub fn master_port(&self) -> Option<u16> {
        self.sentinels.iter().find_map(|(port, _)| {
            let addr: redis::RedisResult<Vec<String>> =
                Self::sentinel_cmd(*port, &["SENTINEL", "get-master-addr-by-name", MASTER_NAME]);
            addr.ok()
                .and_then(|a| a.get(1).and_then(|p| p.parse().ok()))
        })
    }

    /// SIGKILLs the master and waits until the sentinels have promoted the replica.
    pub fn kill_master_and_wait_failover(&mut self, limit: Duration) {
        let old = self.master.port();
        self.master.kill();
        let replica = self.replica.port();
        assert!(
            self.wait_until(limit, |s| s.master_port() == Some(replica)),
            "no failover from {old} to {replica} within {limit:?}"
        );
    }
}

impl Drop for RedisSentinels {
    fn drop(&mut self) {
        for (_, child) in &mut self.sentinels {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
