//! One async lock per conversation: a customer's messages are handled in order, different
//! customers never wait on each other. Idle locks are dropped (weak references).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};

type Key = (String, String);

#[derive(Default)]
pub struct ConversationLocks {
    map: Mutex<HashMap<Key, Weak<tokio::sync::Mutex<()>>>>,
}

impl ConversationLocks {
    pub fn get(&self, channel: &str, conversation: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        let key = (channel.to_string(), conversation.to_string());
        if let Some(lock) = map.get(&key).and_then(Weak::upgrade) {
            return lock;
        }
        let lock = Arc::new(tokio::sync::Mutex::new(()));
        map.insert(key, Arc::downgrade(&lock));
        if map.len() > 4096 {
            map.retain(|_, w| w.strong_count() > 0);
        }
        lock
    }
}
