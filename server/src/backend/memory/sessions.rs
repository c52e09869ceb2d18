//! The legacy session records of one node, in a map.

use crate::backend::{BackendError, SessionId, SessionStore};
use app::protocol::Username;
use async_trait::async_trait;
use parking_lot::{Mutex, MutexGuard};
use std::collections::HashMap;

/// Session records in a map.
#[derive(Default)]
pub struct MemorySessions {
    sessions: Mutex<HashMap<SessionId, String>>,
}

impl MemorySessions {
    fn map(&self) -> MutexGuard<'_, HashMap<SessionId, String>> {
        self.sessions.lock()
    }
}

#[async_trait]
impl SessionStore for MemorySessions {
    async fn create(&self, sid: &SessionId) -> Result<(), BackendError> {
        self.map().insert(sid.clone(), String::new());
        Ok(())
    }

    async fn set_username(&self, sid: &SessionId, name: &Username) -> Result<(), BackendError> {
        self.map().insert(sid.clone(), name.to_string());
        Ok(())
    }

    async fn forget_username(&self, sid: &SessionId) -> Result<(), BackendError> {
        if let Some(name) = self.map().get_mut(sid) {
            name.clear();
        }
        Ok(())
    }

    async fn username(&self, sid: &SessionId) -> Result<Option<String>, BackendError> {
        Ok(self.map().get(sid).cloned())
    }

    async fn remove(&self, sid: &SessionId) -> Result<(), BackendError> {
        self.map().remove(sid);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn sessions_are_created_named_and_removed() {
        let (store, s1) = (MemorySessions::default(), SessionId::new("s1"));
        store.create(&s1).await.unwrap();
        assert_eq!(store.username(&s1).await.unwrap().as_deref(), Some(""));
        store.set_username(&s1, &Username::parse("ann").unwrap()).await.unwrap();
        assert_eq!(store.username(&s1).await.unwrap().as_deref(), Some("ann"));
        store.remove(&s1).await.unwrap();
        assert_eq!(store.username(&s1).await.unwrap(), None);
    }
}
