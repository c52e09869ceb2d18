//! Moderation on one node: the sanctions and the audit trail in this process, and the
//! orders on a channel to this node alone.

use crate::backend::moderation::{
    AUDIT_KEPT, AuditEntry, Moderation, Order, Sanction, SanctionKind, Target, sanction_key,
};
use crate::backend::{BackendError, UserId};
use app::protocol::RoomName;
use async_trait::async_trait;
use parking_lot::Mutex;
use std::collections::{BTreeSet, HashMap, VecDeque};
use tokio::sync::broadcast;

/// Moderation of a single node.
pub struct MemoryModeration {
    sanctions: Mutex<HashMap<String, Sanction>>,
    members: Mutex<BTreeSet<(RoomName, String)>>,
    audit: Mutex<VecDeque<AuditEntry>>,
    orders: broadcast::Sender<Order>,
}

impl Default for MemoryModeration {
    fn default() -> Self {
        Self {
            sanctions: Mutex::new(HashMap::new()),
            members: Mutex::new(BTreeSet::new()),
            audit: Mutex::new(VecDeque::new()),
            orders: broadcast::Sender::new(ORDERS_WAITING),
        }
    }
}

/// Orders that may wait for the node to carry them out.
pub const ORDERS_WAITING: usize = 256;

#[async_trait]
impl Moderation for MemoryModeration {
    async fn impose(&self, sanction: &Sanction) -> Result<(), BackendError> {
        self.sanctions.lock().insert(sanction.key(), sanction.clone());
        Ok(())
    }

    async fn lift(&self, kind: SanctionKind, target: &Target) -> Result<bool, BackendError> {
        Ok(self.sanctions.lock().remove(&sanction_key(kind, target)).is_some())
    }

    async fn sanctions(&self) -> Result<Vec<Sanction>, BackendError> {
        let now = crate::clock::now_ms();
        let mut sanctions = self.sanctions.lock();
        sanctions.retain(|_, sanction| sanction.in_force(now));
        Ok(sanctions.values().cloned().collect())
    }

    async fn add_member(&self, room: &RoomName, user: &UserId) -> Result<(), BackendError> {
        self.members.lock().insert((room.clone(), user.as_str().to_owned()));
        Ok(())
    }

    async fn remove_member(&self, room: &RoomName, user: &UserId) -> Result<bool, BackendError> {
        Ok(self.members.lock().remove(&(room.clone(), user.as_str().to_owned())))
    }

    async fn members(&self) -> Result<Vec<(RoomName, UserId)>, BackendError> {
        Ok(self.members.lock().iter().map(|(room, user)| (room.clone(), UserId::from_stored(user.clone()))).collect())
    }

    async fn record(&self, entry: &AuditEntry) -> Result<(), BackendError> {
        let mut audit = self.audit.lock();
        audit.push_back(entry.clone());
        if audit.len() > AUDIT_KEPT {
            audit.pop_front();
        }
        Ok(())
    }

    async fn audit(&self, max: usize) -> Result<Vec<AuditEntry>, BackendError> {
        Ok(self.audit.lock().iter().rev().take(max).cloned().collect())
    }

    async fn broadcast(&self, order: &Order) -> Result<(), BackendError> {
        // Nobody listening (the node is stopping) is no error.
        let _ = self.orders.send(order.clone());
        Ok(())
    }

    fn orders(&self) -> broadcast::Receiver<Order> {
        self.orders.subscribe()
    }
}
