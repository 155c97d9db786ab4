//! A local Redis Cluster made of real `redis-server` processes on free ports.
//!
//! Started with `redis-cli --cluster create`, waited on until every slot is served, and torn
//! down on drop. Tests kill masters (their replicas take over) and move slots between live
//! masters, for real. [`RedisCluster::start_tls`] makes one whose clients, bus and replication
//! speak only TLS (the plaintext ports stay open for the test harness).

use std::process::Command;
use std::time::{Duration, Instant};

use crate::tls::TestCertificates;
use crate::{free_port, RedisServer};

/// A running local cluster.
pub struct RedisCluster {
    nodes: Vec<RedisServer>,
    /// The port the cluster announces for each node (its TLS port in a TLS cluster).
    client_ports: Vec<u16>,
    tls: bool,
}

/// Redis's slot of a key (CRC16/XMODEM of the hash tag, or of the key, mod 16384).
pub fn key_slot(key: &str) -> u16 {
    let bytes = key.as_bytes();
    let tagged = match key.find('{') {
        Some(open) => match key[open + 1..].find('}') {
            Some(len) if len > 0 => &bytes[open + 1..open + 1 + len],
            _ => bytes,
        },
        None => bytes,
    };
    crc16(tagged) % 16384
}

fn crc16(bytes: &[u8]) -> u16 {
    let mut crc: u16 = 0;
    for b in bytes {
        crc ^= u16::from(*b) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
        }
    }
    crc
}

impl RedisCluster {
    /// Starts `masters` masters with `replicas` replicas each and forms the cluster.
    pub fn start(masters: usize, replicas: usize) -> RedisCluster {
        RedisCluster::start_with(masters, replicas, None)
    }

    /// [`RedisCluster::start`] with TLS everywhere, certificates signed by `certs`' CA.
    pub fn start_tls(masters: usize, replicas: usize, certs: &TestCertificates) -> RedisCluster {
        RedisCluster::start_with(masters, replicas, Some(certs))
    }

    fn start_with(
        masters: usize,
        replicas: usize,
        certs: Option<&TestCertificates>,
    ) -> RedisCluster {
        let mut client_ports = Vec::new();
        let nodes: Vec<RedisServer> = (0..masters * (1 + replicas))
            .map(|_| {
                let mut args: Vec<String> = [
                    "--cluster-enabled",
                    "yes",
                    "--cluster-config-file",
                    "nodes.conf",
                    "--cluster-node-timeout",
                    "1000",
                    "--cluster-replica-validity-factor",
                    "0",
                ]
                .map(String::from)
                .to_vec();
                let tls_port = certs.map(|certs| {
                    let port = free_port();
                    args.extend(certs.redis_args(port));
                    args.extend(
                        ["--tls-cluster", "yes", "--tls-replication", "yes"].map(String::from),
                    );
                    port
                });
                let node =
                    RedisServer::start_with(&args.iter().map(String::as_str).collect::<Vec<_>>());
                client_ports.push(tls_port.unwrap_or(node.port()));
                node
            })
            .collect();
        let addrs: Vec<String> = client_ports
            .iter()
            .map(|port| format!("127.0.0.1:{port}"))
            .collect();
        let mut create = Command::new("redis-cli");
        if let Some(certs) = certs {
            create.arg("--tls").arg("--cacert").arg(certs.ca());
        }
        let status = create
            .arg("--cluster")
            .arg("create")
            .args(&addrs)
            .arg("--cluster-replicas")
            .arg(replicas.to_string())
            .arg("--cluster-yes")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .expect("run redis-cli --cluster create (is redis-tools installed?)");
        assert!(status.success(), "redis-cli --cluster create failed");
        let cluster = RedisCluster {
            nodes,
            client_ports,
            tls: certs.is_some(),
        };
        assert!(
            cluster.wait_healthy(Duration::from_secs(30)),
            "cluster did not become healthy"
        );
        cluster
    }

    /// `redis+cluster://127.0.0.1:p1,127.0.0.1:p2,...` (the sidecar's cluster URL form), or
    /// `rediss+cluster://` and the TLS ports for a TLS cluster.
    pub fn url(&self) -> String {
        let addrs: Vec<String> = self
            .client_ports
            .iter()
            .map(|port| format!("127.0.0.1:{port}"))
            .collect();
        let scheme = if self.tls {
            "rediss+cluster"
        } else {
            "redis+cluster"
        };
        format!("{scheme}://{}", addrs.join(","))
    }

    /// The port the cluster announces for node `i` (its TLS port in a TLS cluster).
    pub fn client_port(&self, i: usize) -> u16 {
        self.client_ports[i]
    }

    pub fn nodes(&self) -> &[RedisServer] {
        &self.nodes
    }

    pub fn node_mut(&mut self, i: usize) -> &mut RedisServer {
        &mut self.nodes[i]
    }

    fn live_nodes(&self) -> impl Iterator<Item = &RedisServer> {
        self.nodes.iter().filter(|n| n.pid().is_some())
    }

    /// Every live node says `cluster_state:ok` and agrees that all 16384 slots are served.
    pub fn is_healthy(&self) -> bool {
        self.live_nodes().all(|n| {
            n.cmd::<String>(&["CLUSTER", "INFO"]).is_ok_and(|info| {
                info.contains("cluster_state:ok") && info.contains("cluster_slots_ok:16384")
            })
        })
    }

    pub fn wait_healthy(&self, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if self.is_healthy() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        false
    }

    /// Index of the live node that masters `slot`, per `CLUSTER SHARDS` of a live node.
    pub fn master_of_slot(&self, slot: u16) -> Option<usize> {
        let node = self.live_nodes().next()?;
        let nodes: String = node.cmd(&["CLUSTER", "NODES"]).ok()?;
        for line in nodes.lines() {
            let fields: Vec<&str> = line.split_whitespace().collect();
            if fields.len() < 9 || !fields[2].contains("master") || fields[2].contains("fail") {
                continue;
            }
            let serves = fields[8..].iter().any(|range| match range.split_once('-') {
                Some((a, b)) => {
                    a.parse::<u16>().is_ok_and(|a| a <= slot)
                        && b.parse::<u16>().is_ok_and(|b| slot <= b)
                }
                None => range.parse::<u16>().is_ok_and(|s| s == slot),
            });
            if serves {
                let port: u16 = fields[1].split(['@', ':']).nth(1)?.parse().ok()?;
                // The plaintext or the TLS port, depending on how the asking connection came.
                return (0..self.nodes.len())
                    .find(|&i| self.nodes[i].port() == port || self.client_ports[i] == port);
            }
        }
        None
    }

    /// The cluster node id of node `i`.
    pub fn node_id(&self, i: usize) -> String {
        self.nodes[i]
            .cmd::<String>(&["CLUSTER", "MYID"])
            .expect("CLUSTER MYID")
    }

    /// SIGKILLs the master of `slot` and waits until a replica serves it and the cluster is
    /// healthy again; returns the killed node's index.
    pub fn fail_over_slot(&mut self, slot: u16, limit: Duration) -> usize {
        let old = self.master_of_slot(slot).expect("slot has a master");
        self.nodes[old].kill();
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if self.master_of_slot(slot).is_some_and(|m| m != old) && self.is_healthy() {
                return old;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("no replica took over slot {slot} within {limit:?}");
    }

    /// Moves `slot` (and its keys) from its master to master node `to`, the way
    /// `redis-cli --cluster reshard` does: IMPORTING/MIGRATING, MIGRATE, then SETSLOT NODE.
    pub fn move_slot(&self, slot: u16, to: usize) {
        let from = self.master_of_slot(slot).expect("slot has a master");
        assert_ne!(from, to, "slot {slot} is already on node {to}");
        let (from_id, to_id) = (self.node_id(from), self.node_id(to));
        let slot_s = slot.to_string();
        let _: String = self.nodes[to]
            .cmd(&["CLUSTER", "SETSLOT", &slot_s, "IMPORTING", &from_id])
            .expect("SETSLOT IMPORTING");
        let _: String = self.nodes[from]
            .cmd(&["CLUSTER", "SETSLOT", &slot_s, "MIGRATING", &to_id])
            .expect("SETSLOT MIGRATING");
        loop {
            let keys: Vec<String> = self.nodes[from]
                .cmd(&["CLUSTER", "GETKEYSINSLOT", &slot_s, "100"])
                .expect("GETKEYSINSLOT");
            if keys.is_empty() {
                break;
            }
            let port = self.nodes[to].port().to_string();
            let mut args = vec!["MIGRATE", "127.0.0.1", &port, "", "0", "5000", "KEYS"];
            args.extend(keys.iter().map(String::as_str));
            let _: String = self.nodes[from].cmd(&args).expect("MIGRATE");
        }
        for node in self.live_nodes() {
            let _: redis::RedisResult<String> =
                node.cmd(&["CLUSTER", "SETSLOT", &slot_s, "NODE", &to_id]);
        }
    }
}
