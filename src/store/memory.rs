//! In-memory store for tests and `kefu eval`: the same contract as sled, nothing on disk.
//! One lock around everything makes every method atomic, the multi-record writes included.

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
    dead_letters: BTreeMap<u64, DeadLetter>,
    next_id: u64,
    kv: BTreeMap<String, Vec<u8>>,
    inbox: BTreeMap<u64, (String, adapters::Inbound)>,
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

impl Inner {
    fn id(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
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

    fn save_turn(&self, c: &Conversation, messages: &[Message]) -> StoreResult<()> {
        let k = conv_key(&c.channel, &c.conversation);
        let mut g = self.lock();
        for m in messages {
            g.messages.insert((k.clone(), m.seq), m.clone());
        }
        g.conversations.insert(k, c.clone());
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
        let g = self.lock();
        // Only what the conversation record has committed, as in sled.
        let end = g.conversations.get(&k).map_or(u64::MAX, |c| c.next_seq);
        Ok(g.messages
            .range((k.clone(), after.saturating_add(1))..=(k, u64::MAX))
            .take_while(|((_, seq), _)| *seq < end)
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
        let g = self.lock();
        // Only what the conversation record has committed, as in sled.
        let before = before.min(g.conversations.get(&k).map_or(u64::MAX, |c| c.next_seq));
        let mut out: Vec<Message> = g
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

    fn inbox_accept(
        &self,
        key: &str,
        m: &adapters::Inbound,
        now_ms: u64,
        ttl_ms: u64,
    ) -> StoreResult<Option<u64>> {
        let mut g = self.lock();
        if g.dedupe.get(key).is_some_and(|&until| until > now_ms) {
            return Ok(None);
        }
        g.dedupe.retain(|_, until| *until > now_ms);
        g.dedupe
            .insert(key.to_string(), now_ms.saturating_add(ttl_ms));
        let id = g.id();
        g.inbox.insert(id, (key.to_string(), m.clone()));
        Ok(Some(id))
    }

    fn inbox_remove(&self, id: u64) -> StoreResult<()> {
        self.lock().inbox.remove(&id);
        Ok(())
    }

    fn inbox_all(&self) -> StoreResult<Vec<InboxEntry>> {
        Ok(self
            .lock()
            .inbox
            .iter()
            .map(|(id, (key, m))| InboxEntry {
                id: *id,
                key: key.clone(),
                message: m.clone(),
            })
            .collect())
    }

    fn inbox_len(&self) -> StoreResult<usize> {
        Ok(self.lock().inbox.len())
    }

    fn outbox_push(&self, items: &[OutboxItem], answered: Option<u64>) -> StoreResult<Vec<u64>> {
        let mut g = self.lock();
        let mut ids = Vec::with_capacity(items.len());
        for item in items {
            let id = g.id();
            let mut item = item.clone();
            item.id = id;
            g.outbox.insert(id, item);
            ids.push(id);
        }
        if let Some(done) = answered {
            g.inbox.remove(&done);
        }
        Ok(ids)
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

    fn dead_letter(&self, letter: &DeadLetter) -> StoreResult<()> {
        let mut g = self.lock();
        g.outbox.remove(&letter.item.id);
        g.dead_letters.insert(letter.item.id, letter.clone());
        Ok(())
    }

    fn dead_letters(&self, limit: usize) -> StoreResult<Vec<DeadLetter>> {
        Ok(self
            .lock()
            .dead_letters
            .values()
            .rev()
            .take(limit)
            .cloned()
            .collect())
    }

    fn dead_letter_count(&self) -> StoreResult<usize> {
        Ok(self.lock().dead_letters.len())
    }

    fn dead_letter_take(&self, id: u64) -> StoreResult<Option<DeadLetter>> {
        Ok(self.lock().dead_letters.remove(&id))
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
