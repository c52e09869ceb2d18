//! A Redis Cluster of real processes on loopback: three masters and a replica of each,
//! made by `redis-cli --cluster create`; a replica takes over two seconds after its
//! master goes silent.

use super::{RedisServer, free_port};
use std::path::PathBuf;
use std::time::Duration;
use tokio::process::Command;

/// Six cluster nodes: three masters, three replicas.
pub struct RedisCluster {
    pub nodes: Vec<RedisServer>,
    /// The nodes' files in the temporary directory, removed with the cluster.
    files: Vec<PathBuf>,
}

impl RedisCluster {
    /// Starts six nodes, makes them one cluster and waits until it serves every slot.
    pub async fn start() -> RedisCluster {
        let mut nodes = Vec::new();
        let mut files = Vec::new();
        for _ in 0..6 {
            let dir = std::env::temp_dir();
            let node = RedisServer::start_on_a_free_port(|port| {
                let config = dir.join(format!("chatroom-cluster-{port}.conf")).display().to_string();
                let (port, bus, dir) = (port.to_string(), free_port().to_string(), dir.display().to_string());
                let node = ["--port", &port, "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", &dir];
                let cluster = ["--cluster-enabled", "yes", "--cluster-config-file", &config, "--cluster-port", &bus];
                // A replica syncs at once (not after five seconds), so it can take over early.
                let failover = ["--cluster-node-timeout", "2000", "--repl-diskless-sync-delay", "0"];
                // A replica loads its master's data from the socket, and a file it would
                // write is its own: no node starts with another's data.
                let file = format!("chatroom-{port}.rdb");
                let replica = ["--repl-diskless-load", "on-empty-db", "--dbfilename", &file];
                node.iter().chain(&cluster).chain(&failover).chain(&replica).map(ToString::to_string).collect()
            })
            .await;
            files.push(dir.join(format!("chatroom-cluster-{}.conf", node.port)));
            files.push(dir.join(format!("chatroom-{}.rdb", node.port)));
            nodes.push(node);
        }
        let cluster = RedisCluster { nodes, files };
        let status = Command::new("redis-cli")
            .args(["--cluster", "create"])
            .args(cluster.nodes.iter().map(|node| format!("127.0.0.1:{}", node.port)))
            .args(["--cluster-replicas", "1", "--cluster-yes"])
            .output()
            .await
            .expect("redis-cli is installed (scripts/test.sh installs it)");
        assert!(
            status.status.success(),
            "redis-cli --cluster create failed: {}",
            String::from_utf8_lossy(&status.stdout)
        );
        for node in &cluster.nodes {
            cluster.wait_until_ok(node.port).await;
        }
        cluster.wait_until_replicas_synced().await;
        cluster
    }

    /// Some of its nodes, as `--redis-cluster` takes them.
    pub fn seeds(&self) -> String {
        self.nodes.iter().take(3).map(|node| format!("127.0.0.1:{}", node.port)).collect::<Vec<_>>().join(",")
    }

    /// The slot of `key`.
    pub async fn slot_of(&self, key: &str) -> u16 {
        redis::cmd("CLUSTER").arg("KEYSLOT").arg(key).query_async(&mut self.nodes[0].connection().await).await.unwrap()
    }

    /// The node that serves `key` now: the one master that answers for it rather than
    /// sending the client elsewhere.
    pub async fn master_of(&self, key: &str) -> usize {
        for _ in 0..100 {
            for (at, node) in self.nodes.iter().enumerate() {
                let Ok(client) = redis::Client::open(node.url()) else { continue };
                let Ok(mut conn) = client.get_multiplexed_async_connection().await else { continue };
                let answer: Result<u64, _> = redis::cmd("EXISTS").arg(key).query_async(&mut conn).await;
                if answer.is_ok() {
                    return at;
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("no node serves {key}");
    }

    /// Waits until each of the three replicas has its master's data and follows its
    /// writes. A replica that never synced cannot take over; and one whose link is up
    /// was seen still at offset 0 seconds later, with the failover tests running
    /// together (its master at 2,283): promoted, it came up empty.
    async fn wait_until_replicas_synced(&self) {
        for _ in 0..300 {
            if self.replicas_follow().await {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("the cluster's replicas did not follow their masters within 30 s");
    }

    /// Whether every master has a replica that acknowledged a write made just now.
    async fn replicas_follow(&self) -> bool {
        let mut following = 0;
        for node in &self.nodes {
            let mut conn = node.connection().await;
            let info: String = redis::cmd("INFO").arg("replication").query_async(&mut conn).await.unwrap();
            if !info.contains("role:master") {
                continue;
            }
            // A write to one of its own slots (another's answers MOVED), then WAIT on the
            // same connection: WAIT counts replicas that have this connection's writes.
            let mut wrote = false;
            for n in 0..200 {
                let probe: Result<(), _> =
                    redis::cmd("SET").arg(format!("probe:{n}")).arg(1).query_async(&mut conn).await;
                if probe.is_ok() {
                    wrote = true;
                    break;
                }
            }
            let acked: i64 = redis::cmd("WAIT").arg(1).arg(200).query_async(&mut conn).await.unwrap();
            following += usize::from(wrote && acked == 1);
        }
        following == 3
    }

    /// Waits until the node on `port` sees the cluster serving every slot.
    pub async fn wait_until_ok(&self, port: u16) {
        let client = redis::Client::open(format!("redis://127.0.0.1:{port}/")).unwrap();
        for _ in 0..300 {
            if let Ok(mut conn) = client.get_multiplexed_async_connection().await {
                let info: String = redis::cmd("CLUSTER").arg("INFO").query_async(&mut conn).await.unwrap_or_default();
                if info.contains("cluster_state:ok") && info.contains("cluster_slots_ok:16384") {
                    return;
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("the cluster node on {port} never saw every slot served");
    }
}

impl Drop for RedisCluster {
    fn drop(&mut self) {
        for file in &self.files {
            let _ = std::fs::remove_file(file);
        }
    }
}
