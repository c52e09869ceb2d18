//! The `replica` durability mode: a line counts only once a replica of the master holds
//! it, so that a failover to that replica cannot take back a line anyone saw.
//!
//! Invariant: [`Replication::confirm`] returns `true` only when a replica acknowledged
//! every write the master made before the call. It writes a counter and then waits with
//! `WAIT 1 <ms>` on a connection of its own: a replica that acknowledged that write
//! acknowledged everything before it (replication is one ordered stream). Callers that
//! arrive while a wait runs share the next one, so a slow replica costs each caller one
//! wait, not one per line.

use super::{RedisConn, RedisLink};
use crate::backend::BackendError;
use parking_lot::Mutex;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{Notify, oneshot};

/// The counter each confirmation writes (on the master, replicated like everything else).
const SYNC_KEY: &str = "chatroom:{global}:sync";

/// How a published line counts as accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Durability {
    /// When the master has it (a failover can lose the newest lines).
    Async,
    /// When a replica has it too: lines are delivered (to their sender as well) only then.
    Replica,
}

/// Confirms that a replica holds what the master wrote so far.
pub struct Replication {
    waiting: Mutex<Vec<oneshot::Sender<bool>>>,
    kick: Arc<Notify>,
}

impl Replication {
    /// Starts confirming over a connection of its own; a replica has `wait` to answer.
    pub async fn start(link: &RedisLink, wait: Duration) -> Result<Arc<Self>, BackendError> {
        let mut conn = link.connect(wait + Duration::from_secs(2)).await?;
        let info: String = redis::cmd("INFO").arg("replication").query_async(&mut conn).await?;
        if info.lines().any(|line| line.trim() == "connected_slaves:0") {
            tracing::warn!(
                "--redis-durability replica, but the master has no replica: lines are held back until one connects"
            );
        }
        let replication = Arc::new(Self { waiting: Mutex::new(Vec::new()), kick: Arc::new(Notify::new()) });
        tokio::spawn(confirm_in_turns(Arc::downgrade(&replication), conn, wait));
        Ok(replication)
    }

    /// Whether a replica holds every write the master made before this call: `false`
    /// when none acknowledged within the wait, or Redis failed (logged).
    pub async fn confirm(&self) -> bool {
        let (done, confirmed) = oneshot::channel();
        self.waiting.lock().push(done);
        self.kick.notify_one();
        confirmed.await.unwrap_or(false)
    }
}

/// Serves the callers in turns: each turn confirms for everyone who asked before it began.
async fn confirm_in_turns(replication: std::sync::Weak<Replication>, mut conn: RedisConn, wait: Duration) {
    let wait_ms = u64::try_from(wait.as_millis()).unwrap_or(u64::MAX);
    let mut was_confirmed = true;
    loop {
        let Some(shared) = replication.upgrade() else { return };
        let turn: Vec<oneshot::Sender<bool>> = std::mem::take(&mut *shared.waiting.lock());
        if turn.is_empty() {
            let kick = shared.kick.clone();
            drop(shared);
            // Woken by a caller, or looking again now and then to end with the node.
            let _ = tokio::time::timeout(Duration::from_secs(1), kick.notified()).await;
            continue;
        }
        drop(shared);
        let acked: Result<(i64, u64), _> =
            redis::pipe().cmd("INCR").arg(SYNC_KEY).cmd("WAIT").arg(1).arg(wait_ms).query_async(&mut conn).await;
        let confirmed = match acked {
            Ok((_, replicas)) => replicas >= 1,
            Err(err) => {
                tracing::warn!(%err, "cannot ask whether a replica has the newest lines");
                false
            }
        };
        if confirmed != was_confirmed {
            if confirmed {
                tracing::info!("a replica acknowledges the newest lines again: delivering them");
            } else {
                tracing::warn!(wait_ms, "no replica acknowledged the newest lines in time: holding them back");
            }
            was_confirmed = confirmed;
        }
        for done in turn {
            let _ = done.send(confirmed);
        }
    }
}
