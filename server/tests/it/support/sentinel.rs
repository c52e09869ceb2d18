//! A Redis Sentinel deployment of real processes on loopback: a master, its replicas and
//! three sentinels that fail over after two seconds without the master.

use super::{RedisServer, free_port, wait_for_port};
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;
use tokio::process::{Child, Command};

/// The name the sentinels know the master by.
pub const MASTER_NAME: &str = "chatroom";

/// A master, its replicas and three sentinels.
pub struct SentinelGroup {
    pub master: RedisServer,
    pub replicas: Vec<RedisServer>,
    sentinels: Vec<(u16, Child, PathBuf)>,
}

impl SentinelGroup {
    /// Starts a master, one replica and the sentinels.
    pub async fn start() -> SentinelGroup {
        Self::start_with_replicas(1).await
    }

    /// Starts a master, `replicas` replicas and the sentinels, and waits until every
    /// sentinel knows the replicas and the other sentinels.
    pub async fn start_with_replicas(replicas: usize) -> SentinelGroup {
        let master = RedisServer::start().await;
        // The first sync starts at once, not after the default five seconds.
        let () = redis::cmd("CONFIG")
            .arg("SET")
            .arg("repl-diskless-sync-delay")
            .arg(0)
            .query_async(&mut master.connection().await)
            .await
            .unwrap();
        let mut started = Vec::new();
        for _ in 0..replicas {
            let replica = RedisServer::start_replica_of(master.port).await;
            wait_until_synced(&replica).await;
            started.push(replica);
        }
        let mut sentinels = Vec::new();
        for _ in 0..3 {
            sentinels.push(start_sentinel(master.port).await);
        }
        let group = SentinelGroup { master, replicas: started, sentinels };
        group.wait_until_known().await;
        group
    }

    /// The first replica.
    pub fn replica(&self) -> &RedisServer {
        &self.replicas[0]
    }

    /// The sentinels, as `--redis-sentinel` takes them.
    pub fn addresses(&self) -> String {
        self.sentinels.iter().map(|(port, _, _)| format!("127.0.0.1:{port}")).collect::<Vec<_>>().join(",")
    }

    /// The flags that make a node use this group.
    pub fn node_flags(&self) -> Vec<String> {
        ["--redis-sentinel", &self.addresses(), "--redis-sentinel-master", MASTER_NAME].map(str::to_owned).to_vec()
    }

    /// The port of the server the sentinels take for the master now.
    pub async fn master_port(&self) -> Option<u16> {
        let (port, _, _) = self.sentinels.first()?;
        let reply: Option<(String, String)> = redis::cmd("SENTINEL")
            .arg("get-master-addr-by-name")
            .arg(MASTER_NAME)
            .query_async(&mut sentinel_connection(*port).await)
            .await
            .ok()?;
        reply?.1.parse().ok()
    }

    /// Waits until the sentinels name another master than the server on `old` port.
    pub async fn wait_for_failover_from(&self, old: u16) -> u16 {
        for _ in 0..300 {
            if let Some(port) = self.master_port().await.filter(|port| *port != old) {
                return port;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("the sentinels never promoted another master than {old}");
    }

    async fn wait_until_known(&self) {
        for _ in 0..200 {
            let mut known = true;
            for (port, _, _) in &self.sentinels {
                let mut conn = sentinel_connection(*port).await;
                let replicas: Vec<redis::Value> =
                    redis::cmd("SENTINEL").arg("replicas").arg(MASTER_NAME).query_async(&mut conn).await.unwrap();
                let others: Vec<redis::Value> =
                    redis::cmd("SENTINEL").arg("sentinels").arg(MASTER_NAME).query_async(&mut conn).await.unwrap();
                known &= replicas.len() == self.replicas.len() && others.len() == 2;
            }
            if known {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("the sentinels did not find the replicas and each other within 20 s");
    }
}

impl Drop for SentinelGroup {
    fn drop(&mut self) {
        for (_, _, conf) in &self.sentinels {
            let _ = std::fs::remove_file(conf);
        }
    }
}

/// Waits until `replica` has its master's data and follows its writes.
async fn wait_until_synced(replica: &RedisServer) {
    let mut conn = replica.connection().await;
    for _ in 0..200 {
        let info: String = redis::cmd("INFO").arg("replication").query_async(&mut conn).await.unwrap();
        if info.contains("master_link_status:up") {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the replica did not sync with its master within 20 s");
}

/// A sentinel watching the master on `master_port`: it takes the master for down after
/// two seconds of silence, and two of three sentinels must agree.
async fn start_sentinel(master_port: u16) -> (u16, Child, PathBuf) {
    let port = free_port();
    // A sentinel rewrites its configuration file: each gets one of its own.
    let conf = std::env::temp_dir().join(format!("chatroom-sentinel-{port}.conf"));
    let text = format!(
        "port {port}\nbind 127.0.0.1\nsentinel monitor {MASTER_NAME} 127.0.0.1 {master_port} 2\n\
         sentinel down-after-milliseconds {MASTER_NAME} 2000\nsentinel failover-timeout {MASTER_NAME} 10000\n\
         sentinel parallel-syncs {MASTER_NAME} 1\n"
    );
    std::fs::write(&conf, text).expect("write the sentinel's configuration");
    let child = Command::new("redis-server")
        .arg(&conf)
        .arg("--sentinel")
        .stdout(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("redis-server is installed (scripts/test.sh installs it)");
    wait_for_port(port, "redis sentinel").await;
    (port, child, conf)
}

async fn sentinel_connection(port: u16) -> redis::aio::MultiplexedConnection {
    redis::Client::open(format!("redis://127.0.0.1:{port}/"))
        .expect("valid URL")
        .get_multiplexed_async_connection()
        .await
        .expect("connect to a sentinel")
}
