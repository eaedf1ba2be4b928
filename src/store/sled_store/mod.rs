//! The sled-backed store. Keys: conversation = `channel \0 conversation`; message =
//! conversation key `\0` big-endian seq (so a prefix scan lists a conversation in order);
//! outbox, inbox and dead letters = big-endian id; dedupe = the key, value = big-endian
//! expiry (and, since the inbox entry it commits, that entry's id); handoffs = the
//! conversation keys of active handoffs (an index, so the agents' queue does not read every
//! conversation); send_quotas = the caller's customer key.
//!
//! Writes that belong together are ordered so that one single-record write commits them,
//! instead of a sled transaction or batch: those take a lock that stops every other sled
//! call in the process while they run, and with one per message they cost more than half the
//! callback throughput (measured: see `benches/wecom_http.rs` and the notes of issue 15).
//!
//! - A platform message: its inbox entry is written, then its dedupe key, pointing at the
//!   entry, commits it. An entry without its key is a write cut off before the 200.
//! - A turn: its messages, then the conversation record, whose `next_seq` commits them:
//!   `messages` hides what lies at or past it, the next turn overwrites it.
//! - A reply: its outbox entries, marked as held by the inbox entry they answer, then the
//!   removal of that entry commits them; held entries are not sent.
//! - A dead letter: written, then removed from the outbox.
//!
//! `open` finishes or undoes what a crash cut off in between (`repair.rs`), so every one of
//! these reads as one atomic write. Durability is the flush, as ever.
//!
//! A record that does not decode (a bad disk block, a bug in an old version) must not stop
//! everything behind it: scans skip it, move its bytes to the `corrupt` tree (key = tree
//! name `\0` original key), log it and count it (`kefu_store_corrupt_records_total`; see
//! `aside.rs`).

mod aside;
mod repair;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use serde::de::DeserializeOwned;
use serde::Serialize;

use super::*;

pub struct SledStore {
    db: sled::Db,
    conversations: sled::Tree,
    messages: sled::Tree,
    dedupe: sled::Tree,
    outbox: sled::Tree,
    kv: sled::Tree,
    inbox: sled::Tree,
    handoffs: sled::Tree,
    dead_letters: sled::Tree,
    /// Per-customer send allowances (WeCom kf), by the caller's key.
    quotas: sled::Tree,
    /// Undecodable records, moved aside for a person to look at.
    corrupt: sled::Tree,
    corrupt_counts: Mutex<BTreeMap<&'static str, u64>>,
    /// Accepts since start: expired dedupe keys are swept every `SWEEP_EVERY` of them.
    accepts: AtomicU64,
}

/// Sweep expired dedupe keys once per this many accepted messages (a sweep reads 64 keys).
const SWEEP_EVERY: u64 = 32;

/// Set in `kv` once the handoff index covers every conversation (databases from before the
/// index get it built once, on open).
pub(super) const HANDOFF_INDEX_MARKER: &str = "store:handoff_index:v1";

impl SledStore {
    pub fn open(db: &sled::Db) -> StoreResult<Self> {
        SledStore {
            db: db.clone(),
            conversations: db.open_tree("conversations")?,
            messages: db.open_tree("messages")?,
            dedupe: db.open_tree("dedupe")?,
            outbox: db.open_tree("outbox")?,
            kv: db.open_tree("kv")?,
            inbox: db.open_tree("inbox")?,
            handoffs: db.open_tree("handoffs")?,
            dead_letters: db.open_tree("dead_letters")?,
            quotas: db.open_tree("send_quotas")?,
            corrupt: db.open_tree("corrupt")?,
            corrupt_counts: Mutex::default(),
            accepts: AtomicU64::new(0),
        }
        .repaired()
    }

    /// Write a conversation record, keeping the handoff index in step: it may name more
    /// conversations than are handed off (a crash between the two writes), never fewer: add
    /// before, remove after. Readers check each one.
    fn write_conversation(&self, k: &[u8], record: Vec<u8>, c: &Conversation) -> StoreResult<()> {
        if c.handed_off() {
            self.handoffs.insert(k, &[])?;
            self.conversations.insert(k, record)?;
        } else {
            self.conversations.insert(k, record)?;
            self.handoffs.remove(k)?;
        }
        Ok(())
    }

    /// Read-modify-write one quota atomically (compare-and-swap on the one record, retried
    /// on a race); `change` returns the new value, or `None` to leave it.
    fn quota_update(
        &self,
        key: &str,
        mut change: impl FnMut(Quota) -> Option<Quota>,
    ) -> StoreResult<()> {
        loop {
            let current = self.quotas.get(key)?;
            let q: Quota = match &current {
                Some(v) => decode(key.as_bytes(), v)?,
                None => Quota::default(),
            };
            let Some(next) = change(q) else {
                return Ok(());
            };
            if self
                .quotas
                .compare_and_swap(key, current, Some(encode(&next)?))?
                .is_ok()
            {
                return Ok(());
            }
        }
    }

    fn sweep_dedupe(&self, now_ms: u64) -> StoreResult<()> {
        let expired: Vec<sled::IVec> = self
            .dedupe
            .iter()
            .take(64)
            .filter_map(|kv| kv.ok())
            .filter(|(_, v)| expiry(v) <= now_ms)
            // A key that commits a waiting inbox entry stays until the entry is answered.
            .filter(|(_, v)| {
                committed(v)
                    .is_none_or(|id| !self.inbox.contains_key(id.to_be_bytes()).unwrap_or(true))
            })
            .map(|(k, _)| k)
            .collect();
        for k in expired {
            self.dedupe.remove(k)?;
        }
        Ok(())
    }
}

pub(super) fn conv_key(channel: &str, conversation: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(channel.len() + conversation.len() + 1);
    k.extend_from_slice(channel.as_bytes());
    k.push(0);
    k.extend_from_slice(conversation.as_bytes());
    k
}

fn msg_key(channel: &str, conversation: &str, seq: u64) -> Vec<u8> {
    let mut k = conv_key(channel, conversation);
    k.push(0);
    k.extend_from_slice(&seq.to_be_bytes());
    k
}

fn printable(k: &[u8]) -> String {
    if k.len() == 8 {
        // The id trees' keys.
        return u64::from_be_bytes(k.try_into().unwrap_or([0; 8])).to_string();
    }
    String::from_utf8_lossy(k).replace('\0', "/")
}

/// A dedupe value: big-endian expiry, then (since kefu commits inbox entries with it) the
/// big-endian id of the inbox entry it commits. Anything unreadable counts as expired.
fn expiry(v: &[u8]) -> u64 {
    v.get(..8)
        .and_then(|b| b.try_into().ok())
        .map_or(0, u64::from_be_bytes)
}

/// The inbox entry a dedupe value commits; `None` for a key written before commits existed.
fn committed(v: &[u8]) -> Option<u64> {
    v.get(8..16)
        .and_then(|b| b.try_into().ok())
        .map(u64::from_be_bytes)
}

fn dedupe_value(until_ms: u64, inbox_id: u64) -> [u8; 16] {
    let mut v = [0; 16];
    v[..8].copy_from_slice(&until_ms.to_be_bytes());
    v[8..].copy_from_slice(&inbox_id.to_be_bytes());
    v
}

fn id_of(k: &[u8]) -> u64 {
    u64::from_be_bytes(k.try_into().unwrap_or([0; 8]))
}

fn encode<T: Serialize>(v: &T) -> StoreResult<Vec<u8>> {
    serde_json::to_vec(v).map_err(|e| StoreError::Backend(e.to_string()))
}

fn decode<T: DeserializeOwned>(key: &[u8], bytes: &[u8]) -> StoreResult<T> {
    serde_json::from_slice(bytes).map_err(|e| StoreError::Corrupt {
        key: printable(key),
        reason: e.to_string(),
    })
}

impl Store for SledStore {
    fn conversation(&self, channel: &str, conversation: &str) -> StoreResult<Option<Conversation>> {
        let k = conv_key(channel, conversation);
        Ok(self
            .conversations
            .get(&k)?
            .and_then(|v| self.decode_or_set_aside(&self.conversations, "conversations", &k, &v)))
    }

    fn save_conversation(&self, c: &Conversation) -> StoreResult<()> {
        self.write_conversation(&conv_key(&c.channel, &c.conversation), encode(c)?, c)
    }

    fn handed_off(&self) -> StoreResult<Vec<Conversation>> {
        let mut out = Vec::new();
        for k in self.handoffs.iter().keys() {
            let k = k?;
            if let Some(v) = self.conversations.get(&k)? {
                let decoded: Option<Conversation> =
                    self.decode_or_set_aside(&self.conversations, "conversations", &k, &v);
                if let Some(c) = decoded.filter(Conversation::handed_off) {
                    out.push(c);
                }
            }
        }
        out.sort_by_key(|c| c.handoff.as_ref().map_or(0, |h| h.since_ms));
        Ok(out)
    }

    fn append_message(&self, channel: &str, conversation: &str, m: &Message) -> StoreResult<()> {
        self.messages
            .insert(msg_key(channel, conversation, m.seq), encode(m)?)?;
        Ok(())
    }

    fn save_turn(&self, c: &Conversation, messages: &[Message]) -> StoreResult<()> {
        let record = encode(c)?;
        for m in messages {
            self.messages
                .insert(msg_key(&c.channel, &c.conversation, m.seq), encode(m)?)?;
        }
        // The commit: until this lands, the messages lie at or past the stored `next_seq`,
        // where `messages` does not look and the next turn writes again.
        self.write_conversation(&conv_key(&c.channel, &c.conversation), record, c)
    }

    fn messages(
        &self,
        channel: &str,
        conversation: &str,
        after: u64,
        limit: usize,
    ) -> StoreResult<Vec<Message>> {
        // Only what a conversation record has committed (see `save_turn`); a conversation
        // without a record shows what there is.
        let end = self
            .conversation(channel, conversation)?
            .map_or(u64::MAX, |c| c.next_seq);
        if after.saturating_add(1) >= end {
            return Ok(Vec::new());
        }
        let start = msg_key(channel, conversation, after.saturating_add(1));
        let mut prefix = conv_key(channel, conversation);
        prefix.push(0);
        let mut out = Vec::new();
        for kv in self
            .messages
            .range(start..msg_key(channel, conversation, end))
        {
            let (k, v) = kv?;
            if !k.starts_with(&prefix) || out.len() >= limit {
                break;
            }
            if let Some(m) = self.decode_or_set_aside(&self.messages, "messages", &k, &v) {
                out.push(m);
            }
        }
        Ok(out)
    }

    fn messages_before(
        &self,
        channel: &str,
        conversation: &str,
        before: u64,
        limit: usize,
    ) -> StoreResult<Vec<Message>> {
        // Only what the conversation record has committed (see `save_turn`).
        let before = before.min(
            self.conversation(channel, conversation)?
                .map_or(u64::MAX, |c| c.next_seq),
        );
        let mut start = conv_key(channel, conversation);
        start.push(0);
        let end = msg_key(channel, conversation, before);
        let mut out = Vec::new();
        for kv in self.messages.range(start..end).rev() {
            if out.len() >= limit {
                break;
            }
            let (k, v) = kv?;
            if let Some(m) = self.decode_or_set_aside(&self.messages, "messages", &k, &v) {
                out.push(m);
            }
        }
        out.reverse();
        Ok(out)
    }

    fn check_and_remember(&self, key: &str, now_ms: u64, ttl_ms: u64) -> StoreResult<bool> {
        let until = now_ms.saturating_add(ttl_ms).to_be_bytes();
        // One compare-and-swap: "seen?" and "remember" are one step.
        loop {
            let current = self.dedupe.get(key)?;
            if current.as_ref().is_some_and(|c| expiry(c) > now_ms) {
                return Ok(true);
            }
            if self
                .dedupe
                .compare_and_swap(key, current, Some(&until[..]))?
                .is_ok()
            {
                return Ok(false);
            }
        }
    }

    fn inbox_accept(
        &self,
        key: &str,
        m: &adapters::Inbound,
        now_ms: u64,
        ttl_ms: u64,
    ) -> StoreResult<Option<u64>> {
        // The entry first (keyed by a sequence so replay keeps arrival order; the value
        // carries the key), then the dedupe key pointing at it, which commits it. "Seen?"
        // and "remember" are one compare-and-swap: two deliveries racing can't both win.
        // A platform's resend is answered from the key alone, read before anything is
        // written, without writing (and then removing) an entry that would never count.
        let live = |c: &Option<sled::IVec>| c.as_ref().is_some_and(|c| expiry(c) > now_ms);
        let mut current = self.dedupe.get(key)?;
        if live(&current) {
            return Ok(None);
        }
        let id = self.db.generate_id()?;
        self.inbox.insert(id.to_be_bytes(), encode(&(key, m))?)?;
        let value = dedupe_value(now_ms.saturating_add(ttl_ms), id);
        while let Err(lost) = self
            .dedupe
            .compare_and_swap(key, current, Some(&value[..]))?
        {
            // Another delivery changed the key since it was read.
            current = lost.current;
            if live(&current) {
                // A duplicate: the entry just written never counted.
                self.inbox.remove(id.to_be_bytes())?;
                return Ok(None);
            }
        }
        if self
            .accepts
            .fetch_add(1, Ordering::Relaxed)
            .is_multiple_of(SWEEP_EVERY)
        {
            self.sweep_dedupe(now_ms)?;
        }
        Ok(Some(id))
    }

    fn inbox_remove(&self, id: u64) -> StoreResult<()> {
        self.inbox.remove(id.to_be_bytes())?;
        Ok(())
    }

    fn inbox_all(&self) -> StoreResult<Vec<InboxEntry>> {
        let mut out = Vec::new();
        for kv in self.inbox.iter() {
            let (k, v) = kv?;
            let decoded: Option<(String, adapters::Inbound)> =
                self.decode_or_set_aside(&self.inbox, "inbox", &k, &v);
            if let Some((key, message)) = decoded {
                out.push(InboxEntry {
                    id: id_of(&k),
                    key,
                    message,
                });
            }
        }
        Ok(out)
    }

    fn inbox_len(&self) -> StoreResult<usize> {
        Ok(self.inbox.len())
    }

    fn outbox_push(&self, items: &[OutboxItem], answered: Option<u64>) -> StoreResult<Vec<u64>> {
        // The entries first, held by the inbox entry they answer; its removal commits them
        // (held entries are not sent, and `open` drops them if the removal never came).
        let mut ids = Vec::with_capacity(items.len());
        for item in items {
            let id = self.db.generate_id()? + 1;
            let mut item = item.clone();
            item.id = id;
            item.held_by = answered;
            self.outbox.insert(id.to_be_bytes(), encode(&item)?)?;
            ids.push(id);
        }
        if let Some(done) = answered {
            self.inbox.remove(done.to_be_bytes())?;
        }
        Ok(ids)
    }

    fn outbox_items(&self, target: &str, limit: usize) -> StoreResult<Vec<OutboxItem>> {
        let mut out = Vec::new();
        self.scan(&self.outbox, "outbox", |item: OutboxItem| {
            let held = item
                .held_by
                .is_some_and(|id| self.inbox.contains_key(id.to_be_bytes()).unwrap_or(true));
            if item.target == target && !held {
                out.push(item);
            }
            out.len() < limit
        })?;
        Ok(out)
    }

    fn outbox_len(&self) -> StoreResult<usize> {
        Ok(self.outbox.len())
    }

    fn outbox_update(&self, item: &OutboxItem) -> StoreResult<()> {
        let k = item.id.to_be_bytes();
        let v = encode(item)?;
        // Only while it is still queued: a concurrent remove must win.
        self.outbox
            .update_and_fetch(k, |old| old.map(|_| v.clone()))?;
        Ok(())
    }

    fn outbox_remove(&self, id: u64) -> StoreResult<()> {
        self.outbox.remove(id.to_be_bytes())?;
        Ok(())
    }

    fn dead_letter(&self, letter: &DeadLetter) -> StoreResult<()> {
        // Written, then taken out of the outbox (`open` finishes the move after a crash).
        let k = letter.item.id.to_be_bytes();
        self.dead_letters.insert(k, encode(letter)?)?;
        self.outbox.remove(k)?;
        Ok(())
    }

    fn dead_letters(&self, limit: usize) -> StoreResult<Vec<DeadLetter>> {
        let mut out = Vec::new();
        for kv in self.dead_letters.iter().rev() {
            let (k, v) = kv?;
            if out.len() >= limit {
                break;
            }
            if let Some(d) = self.decode_or_set_aside(&self.dead_letters, "dead_letters", &k, &v) {
                out.push(d);
            }
        }
        Ok(out)
    }

    fn dead_letter_count(&self) -> StoreResult<usize> {
        Ok(self.dead_letters.len())
    }

    fn dead_letter_take(&self, id: u64) -> StoreResult<Option<DeadLetter>> {
        let k = id.to_be_bytes();
        match self.dead_letters.remove(k)? {
            None => Ok(None),
            Some(v) => decode(&k, &v).map(Some),
        }
    }

    fn quota_open(&self, key: &str, customer_at_ms: u64) -> StoreResult<()> {
        self.quota_update(key, |mut q| q.reopen(customer_at_ms).then_some(q))
    }

    fn quota_take(
        &self,
        key: &str,
        now_ms: u64,
        want: u32,
        limit: u32,
        window_ms: u64,
    ) -> StoreResult<u32> {
        let mut granted = 0;
        self.quota_update(key, |mut q| {
            granted = q.take(now_ms, want, limit, window_ms);
            (granted > 0).then_some(q)
        })?;
        Ok(granted)
    }

    fn quota(&self, key: &str) -> StoreResult<Option<Quota>> {
        self.quotas
            .get(key)?
            .map(|v| decode(key.as_bytes(), &v))
            .transpose()
    }

    fn kv_get(&self, key: &str) -> StoreResult<Option<Vec<u8>>> {
        Ok(self.kv.get(key)?.map(|v| v.to_vec()))
    }

    fn kv_put(&self, key: &str, value: &[u8]) -> StoreResult<()> {
        self.kv.insert(key, value)?;
        Ok(())
    }

    fn kv_remove(&self, key: &str) -> StoreResult<()> {
        self.kv.remove(key)?;
        Ok(())
    }

    fn kv_scan(&self, prefix: &str) -> StoreResult<Vec<(String, Vec<u8>)>> {
        self.kv
            .scan_prefix(prefix)
            .map(|kv| {
                let (k, v) = kv?;
                Ok((String::from_utf8_lossy(&k).into_owned(), v.to_vec()))
            })
            .collect()
    }

    fn flush(&self) -> StoreResult<()> {
        self.db.flush()?;
        Ok(())
    }

    fn corrupt_records(&self) -> Vec<(&'static str, u64)> {
        self.corrupt_counts
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(|(k, v)| (*k, *v))
            .collect()
    }
}
