//! In-memory store for tests and `kefu eval`: the same contract as sled, nothing on disk.

use std::collections::BTreeMap;
use std::sync::Mutex;

use super::sled_store::conv_key;
use super::*;

#[derive(Default)]
pub struct MemoryStore {
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    conversations: BTreeMap<Vec<u8>, Conversation>,
    messages: BTreeMap<(Vec<u8>, u64), Message>,
    dedupe: BTreeMap<String, u64>,
    outbox: BTreeMap<u64, OutboxItem>,
    next_id: u64,
    kv: BTreeMap<String, Vec<u8>>,
    inbox: Vec<(String, adapters::Inbound)>,
}

impl MemoryStore {
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic while holding the lock can't leave these maps half-updated in a way that
        // matters for tests; keep going rather than poisoning every later call.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Store for MemoryStore {
    fn conversation(&self, channel: &str, conversation: &str) -> StoreResult<Option<Conversation>> {
        Ok(self
            .lock()
            .conversations
            .get(&conv_key(channel, conversation))
            .cloned())
    }

    fn save_conversation(&self, c: &Conversation) -> StoreResult<()> {
        self.lock()
            .conversations
            .insert(conv_key(&c.channel, &c.conversation), c.clone());
        Ok(())
    }

    fn handed_off(&self) -> StoreResult<Vec<Conversation>> {
        let mut out: Vec<Conversation> = self
            .lock()
            .conversations
            .values()
            .filter(|c| c.handed_off())
            .cloned()
            .collect();
        out.sort_by_key(|c| c.handoff.as_ref().map_or(0, |h| h.since_ms));
        Ok(out)
    }

    fn append_message(&self, channel: &str, conversation: &str, m: &Message) -> StoreResult<()> {
        self.lock()
            .messages
            .insert((conv_key(channel, conversation), m.seq), m.clone());
        Ok(())
    }

    fn messages(
        &self,
        channel: &str,
        conversation: &str,
        after: u64,
        limit: usize,
    ) -> StoreResult<Vec<Message>> {
        let k = conv_key(channel, conversation);
        Ok(self
            .lock()
            .messages
            .range((k.clone(), after.saturating_add(1))..=(k, u64::MAX))
            .take(limit)
            .map(|(_, m)| m.clone())
            .collect())
    }

    fn messages_before(
        &self,
        channel: &str,
        conversation: &str,
        before: u64,
        limit: usize,
    ) -> StoreResult<Vec<Message>> {
        let k = conv_key(channel, conversation);
        let mut out: Vec<Message> = self
            .lock()
            .messages
            .range((k.clone(), 0)..(k, before))
            .rev()
            .take(limit)
            .map(|(_, m)| m.clone())
            .collect();
        out.reverse();
        Ok(out)
    }

    fn check_and_remember(&self, key: &str, now_ms: u64, ttl_ms: u64) -> StoreResult<bool> {
        let mut g = self.lock();
        if g.dedupe.get(key).is_some_and(|&until| until > now_ms) {
            return Ok(true);
        }
        g.dedupe.retain(|_, until| *until > now_ms);
        g.dedupe
            .insert(key.to_string(), now_ms.saturating_add(ttl_ms));
        Ok(false)
    }

    fn outbox_push(&self, item: &OutboxItem) -> StoreResult<u64> {
        let mut g = self.lock();
        g.next_id += 1;
        let id = g.next_id;
        let mut item = item.clone();
        item.id = id;
        g.outbox.insert(id, item);
        Ok(id)
    }

    fn outbox_items(&self, target: &str, limit: usize) -> StoreResult<Vec<OutboxItem>> {
        Ok(self
            .lock()
            .outbox
            .values()
            .filter(|i| i.target == target)
            .take(limit)
            .cloned()
            .collect())
    }

    fn outbox_len(&self) -> StoreResult<usize> {
        Ok(self.lock().outbox.len())
    }

    fn outbox_update(&self, item: &OutboxItem) -> StoreResult<()> {
        let mut g = self.lock();
        if let Some(slot) = g.outbox.get_mut(&item.id) {
            *slot = item.clone();
        }
        Ok(())
    }

    fn outbox_remove(&self, id: u64) -> StoreResult<()> {
        self.lock().outbox.remove(&id);
        Ok(())
    }

    fn inbox_put(&self, key: &str, m: &adapters::Inbound) -> StoreResult<()> {
        self.lock().inbox.push((key.to_string(), m.clone()));
        Ok(())
    }

    fn inbox_remove(&self, key: &str) -> StoreResult<()> {
        self.lock().inbox.retain(|(k, _)| k != key);
        Ok(())
    }

    fn inbox_all(&self) -> StoreResult<Vec<(String, adapters::Inbound)>> {
        Ok(self.lock().inbox.clone())
    }

    fn kv_get(&self, key: &str) -> StoreResult<Option<Vec<u8>>> {
        Ok(self.lock().kv.get(key).cloned())
    }

    fn kv_put(&self, key: &str, value: &[u8]) -> StoreResult<()> {
        self.lock().kv.insert(key.to_string(), value.to_vec());
        Ok(())
    }

    fn kv_remove(&self, key: &str) -> StoreResult<()> {
        self.lock().kv.remove(key);
        Ok(())
    }

    fn kv_scan(&self, prefix: &str) -> StoreResult<Vec<(String, Vec<u8>)>> {
        Ok(self
            .lock()
            .kv
            .range(prefix.to_string()..)
            .take_while(|(k, _)| k.starts_with(prefix))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect())
    }

    fn flush(&self) -> StoreResult<()> {
        Ok(())
    }
}
