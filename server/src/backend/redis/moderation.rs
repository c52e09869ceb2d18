//! Moderation of a cluster: the sanctions in a hash (`chatroom:{global}:sanctions`, key →
//! JSON), the users added to private rooms in a set (`chatroom:{global}:members`), the audit trail in a capped stream (`chatroom:{global}:audit`), and the orders
//! on a channel (`chatroom:orders`) that every node follows.

use super::keys::{AUDIT_KEY, MEMBERS_KEY, ORDERS_CHANNEL, SANCTIONS_KEY};
use super::{RedisConn, RedisLink};
use crate::backend::memory::ORDERS_WAITING;
use crate::backend::moderation::{
    AUDIT_KEPT, AuditEntry, Moderation, Order, Sanction, SanctionKind, Target, member_key, member_of_key, sanction_key,
};
use crate::backend::{BackendError, UserId};
use app::protocol::RoomName;
use async_trait::async_trait;
use futures::StreamExt;
use redis::streams::StreamRangeReply;
use std::collections::HashMap;
use std::time::Duration;
use tokio::sync::broadcast;

/// How long to wait before subscribing to the orders again.
const RESUBSCRIBE: Duration = Duration::from_secs(1);

/// Moderation shared by every node of a cluster.
pub struct RedisModeration {
    conn: RedisConn,
    orders: broadcast::Sender<Order>,
}

impl RedisModeration {
    /// Connects, and follows the orders channel for the life of the process.
    pub async fn connect(link: &RedisLink) -> Result<Self, BackendError> {
        let orders = broadcast::Sender::new(ORDERS_WAITING);
        tokio::spawn(listen(link.clone(), orders.clone()));
        Ok(Self { conn: link.connect(Duration::from_secs(2)).await?, orders })
    }
}

/// Passes every order published on the channel to this node; subscribes again after a
/// failure, and then asks for a refresh (an order may have been missed meanwhile).
async fn listen(link: RedisLink, orders: broadcast::Sender<Order>) {
    loop {
        match link.client().get_async_pubsub().await {
            Ok(mut pubsub) => match pubsub.subscribe(ORDERS_CHANNEL).await {
                Ok(()) => {
                    let mut messages = pubsub.on_message();
                    while let Some(message) = messages.next().await {
                        match message.get_payload::<String>().map(|json| serde_json::from_str::<Order>(&json)) {
                            Ok(Ok(order)) => drop(orders.send(order)),
                            _ => tracing::warn!("skipping an order that is not one"),
                        }
                    }
                    tracing::warn!("the orders channel's subscription ended; subscribing again");
                }
                Err(err) => tracing::warn!(%err, "cannot subscribe to the orders channel; retrying"),
            },
            Err(err) => tracing::warn!(%err, "cannot open the orders channel's connection; retrying"),
        }
        let _ = orders.send(Order::Refresh);
        tokio::time::sleep(RESUBSCRIBE).await;
    }
}

#[async_trait]
impl Moderation for RedisModeration {
    async fn impose(&self, sanction: &Sanction) -> Result<(), BackendError> {
        let json = serde_json::to_string(sanction)?;
        let () = redis::cmd("HSET")
            .arg(SANCTIONS_KEY)
            .arg(sanction.key())
            .arg(json)
            .query_async(&mut self.conn.clone())
            .await?;
        Ok(())
    }

    async fn lift(&self, kind: SanctionKind, target: &Target) -> Result<bool, BackendError> {
        let removed: u64 = redis::cmd("HDEL")
            .arg(SANCTIONS_KEY)
            .arg(sanction_key(kind, target))
            .query_async(&mut self.conn.clone())
            .await?;
        Ok(removed > 0)
    }

    async fn sanctions(&self) -> Result<Vec<Sanction>, BackendError> {
        let mut conn = self.conn.clone();
        let all: HashMap<String, String> = redis::cmd("HGETALL").arg(SANCTIONS_KEY).query_async(&mut conn).await?;
        let now = crate::clock::now_ms();
        let mut in_force = Vec::new();
        let mut ended = Vec::new();
        for (key, json) in all {
            match serde_json::from_str::<Sanction>(&json) {
                Ok(sanction) if sanction.in_force(now) => in_force.push(sanction),
                _ => ended.push(key),
            }
        }
        if !ended.is_empty() {
            let () = redis::cmd("HDEL").arg(SANCTIONS_KEY).arg(&ended).query_async(&mut conn).await?;
        }
        Ok(in_force)
    }

    async fn add_member(&self, room: &RoomName, user: &UserId) -> Result<(), BackendError> {
        let _: u64 =
            redis::cmd("SADD").arg(MEMBERS_KEY).arg(member_key(room, user)).query_async(&mut self.conn.clone()).await?;
        Ok(())
    }

    async fn remove_member(&self, room: &RoomName, user: &UserId) -> Result<bool, BackendError> {
        let removed: u64 =
            redis::cmd("SREM").arg(MEMBERS_KEY).arg(member_key(room, user)).query_async(&mut self.conn.clone()).await?;
        Ok(removed > 0)
    }

    async fn members(&self) -> Result<Vec<(RoomName, UserId)>, BackendError> {
        let keys: Vec<String> = redis::cmd("SMEMBERS").arg(MEMBERS_KEY).query_async(&mut self.conn.clone()).await?;
        Ok(keys.iter().filter_map(|key| member_of_key(key)).collect())
    }

    async fn record(&self, entry: &AuditEntry) -> Result<(), BackendError> {
        let json = serde_json::to_string(entry)?;
        let _: String = redis::cmd("XADD")
            .arg(AUDIT_KEY)
            .arg("MAXLEN")
            .arg("~")
            .arg(AUDIT_KEPT)
            .arg("*")
            .arg("a")
            .arg(json)
            .query_async(&mut self.conn.clone())
            .await?;
        Ok(())
    }

    async fn audit(&self, max: usize) -> Result<Vec<AuditEntry>, BackendError> {
        let newest: StreamRangeReply = redis::cmd("XREVRANGE")
            .arg(AUDIT_KEY)
            .arg("+")
            .arg("-")
            .arg("COUNT")
            .arg(max)
            .query_async(&mut self.conn.clone())
            .await?;
        Ok(newest
            .ids
            .iter()
            .filter_map(|entry| entry.get::<String>("a"))
            .filter_map(|json| serde_json::from_str(&json).ok())
            .collect())
    }

    async fn broadcast(&self, order: &Order) -> Result<(), BackendError> {
        let json = serde_json::to_string(order)?;
        let _: u64 = redis::cmd("PUBLISH").arg(ORDERS_CHANNEL).arg(json).query_async(&mut self.conn.clone()).await?;
        Ok(())
    }

    fn orders(&self) -> broadcast::Receiver<Order> {
        self.orders.subscribe()
    }
}
