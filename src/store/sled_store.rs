//! The sled-backed store. Keys: conversation = `channel \0 conversation`; message =
//! conversation key `\0` big-endian seq (so a prefix scan lists a conversation in order);
//! outbox, inbox and dead letters = big-endian id; dedupe = the key, value = big-endian
//! expiry.
//!
//! A record that does not decode (a bad disk block, a bug in an old version) must not stop
//! everything behind it: scans skip it, move its bytes to the `corrupt` tree (key = tree
//! name `\0` original key), log it and count it (`kefu_store_corrupt_records_total`).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use serde::de::DeserializeOwned;
use serde::Serialize;
use sled::transaction::{ConflictableTransactionError, TransactionError};
use sled::Transactional;

use super::*;

pub struct SledStore {
    db: sled::Db,
    conversations: sled::Tree,
    messages: sled::Tree,
    dedupe: sled::Tree,
    outbox: sled::Tree,
    kv: sled::Tree,
    inbox: sled::Tree,
    dead_letters: sled::Tree,
    /// Undecodable records, moved aside for a person to look at.
    corrupt: sled::Tree,
    corrupt_counts: Mutex<BTreeMap<&'static str, u64>>,
    /// Accepts since start: expired dedupe keys are swept every `SWEEP_EVERY` of them.
    accepts: AtomicU64,
}

/// Sweep expired dedupe keys once per this many accepted messages (a sweep reads 64 keys).
const SWEEP_EVERY: u64 = 32;

impl SledStore {
    pub fn open(db: &sled::Db) -> StoreResult<Self> {
        Ok(SledStore {
            db: db.clone(),
            conversations: db.open_tree("conversations")?,
            messages: db.open_tree("messages")?,
            dedupe: db.open_tree("dedupe")?,
            outbox: db.open_tree("outbox")?,
            kv: db.open_tree("kv")?,
            inbox: db.open_tree("inbox")?,
            dead_letters: db.open_tree("dead_letters")?,
            corrupt: db.open_tree("corrupt")?,
            corrupt_counts: Mutex::default(),
            accepts: AtomicU64::new(0),
        })
    }

    /// Decode `v`, or move the record aside and say nothing more about it.
    fn decode_or_set_aside<T: DeserializeOwned>(
        &self,
        tree: &sled::Tree,
        name: &'static str,
        k: &[u8],
        v: &[u8],
    ) -> Option<T> {
        match serde_json::from_slice(v) {
            Ok(t) => Some(t),
            Err(e) => {
                self.set_aside(tree, name, k, v, &e.to_string());
                None
            }
        }
    }

    /// Copy the record to `corrupt`, then remove it (only if unchanged meanwhile): a crash
    /// in between leaves a copy, never nothing.
    fn set_aside(&self, tree: &sled::Tree, name: &'static str, k: &[u8], v: &[u8], why: &str) {
        tracing::error!(
            tree = name,
            key = %printable(k),
            error = why,
            "corrupt record moved to the `corrupt` tree and skipped"
        );
        *self
            .corrupt_counts
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(name)
            .or_default() += 1;
        let mut aside = name.as_bytes().to_vec();
        aside.push(0);
        aside.extend_from_slice(k);
        if let Err(e) = self.corrupt.insert(aside, v) {
            tracing::error!(error = %e, "cannot set the corrupt record aside; skipped only");
            return;
        }
        if tree.compare_and_swap(k, Some(v), None::<&[u8]>).is_ok() && name == "conversations" {
            self.set_aside_messages(k);
        }
    }

    /// A conversation whose record was set aside starts over at seq 1: its old messages go
    /// aside too (under `messages`), or the new ones would overwrite them.
    fn set_aside_messages(&self, conv: &[u8]) {
        let mut prefix = conv.to_vec();
        prefix.push(0);
        for (k, v) in self.messages.scan_prefix(&prefix).flatten() {
            let mut aside = b"messages\0".to_vec();
            aside.extend_from_slice(&k);
            if self.corrupt.insert(aside, v).is_ok() {
                let _ = self.messages.remove(k);
            }
        }
    }

    /// Decode every record of `tree`, setting aside those that don't.
    fn scan<T: DeserializeOwned>(
        &self,
        tree: &sled::Tree,
        name: &'static str,
        mut keep: impl FnMut(T) -> bool,
    ) -> StoreResult<()> {
        for kv in tree.iter() {
            let (k, v) = kv?;
            if let Some(t) = self.decode_or_set_aside(tree, name, &k, &v) {
                if !keep(t) {
                    break;
                }
            }
        }
        Ok(())
    }

    fn sweep_dedupe(&self, now_ms: u64) -> StoreResult<()> {
        let expired: Vec<sled::IVec> = self
            .dedupe
            .iter()
            .take(64)
            .filter_map(|kv| kv.ok())
            .filter(|(_, v)| expiry(v) <= now_ms)
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

/// A dedupe value: big-endian expiry; anything else counts as expired.
fn expiry(v: &[u8]) -> u64 {
    u64::from_be_bytes(v.try_into().unwrap_or([0; 8]))
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

fn tx_error(e: TransactionError<()>) -> StoreError {
    match e {
        TransactionError::Storage(e) => e.into(),
        TransactionError::Abort(()) => StoreError::Backend("transaction aborted".into()),
    }
}

type TxResult<T> = Result<T, ConflictableTransactionError<()>>;

impl Store for SledStore {
    fn conversation(&self, channel: &str, conversation: &str) -> StoreResult<Option<Conversation>> {
        let k = conv_key(channel, conversation);
        Ok(self
            .conversations
            .get(&k)?
            .and_then(|v| self.decode_or_set_aside(&self.conversations, "conversations", &k, &v)))
    }

    fn save_conversation(&self, c: &Conversation) -> StoreResult<()> {
        self.conversations
            .insert(conv_key(&c.channel, &c.conversation), encode(c)?)?;
        Ok(())
    }

    fn handed_off(&self) -> StoreResult<Vec<Conversation>> {
        let mut out = Vec::new();
        self.scan(&self.conversations, "conversations", |c: Conversation| {
            if c.handed_off() {
                out.push(c);
            }
            true
        })?;
        out.sort_by_key(|c| c.handoff.as_ref().map_or(0, |h| h.since_ms));
        Ok(out)
    }

    fn append_message(&self, channel: &str, conversation: &str, m: &Message) -> StoreResult<()> {
        self.messages
            .insert(msg_key(channel, conversation, m.seq), encode(m)?)?;
        Ok(())
    }

    fn save_turn(&self, c: &Conversation, messages: &[Message]) -> StoreResult<()> {
        let conv = (conv_key(&c.channel, &c.conversation), encode(c)?);
        let msgs = messages
            .iter()
            .map(|m| Ok((msg_key(&c.channel, &c.conversation, m.seq), encode(m)?)))
            .collect::<StoreResult<Vec<_>>>()?;
        (&self.conversations, &self.messages)
            .transaction(|(convs, msg_tree)| -> TxResult<()> {
                for (k, v) in &msgs {
                    msg_tree.insert(k.as_slice(), v.as_slice())?;
                }
                convs.insert(conv.0.as_slice(), conv.1.as_slice())?;
                Ok(())
            })
            .map_err(tx_error)
    }

    fn messages(
        &self,
        channel: &str,
        conversation: &str,
        after: u64,
        limit: usize,
    ) -> StoreResult<Vec<Message>> {
        let start = msg_key(channel, conversation, after.saturating_add(1));
        let mut prefix = conv_key(channel, conversation);
        prefix.push(0);
        let mut out = Vec::new();
        for kv in self.messages.range(start..) {
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

    fn inbox_accept(
        &self,
        key: &str,
        m: &adapters::Inbound,
        now_ms: u64,
        ttl_ms: u64,
    ) -> StoreResult<Option<u64>> {
        let until = now_ms.saturating_add(ttl_ms).to_be_bytes();
        // The value carries the key, so replay knows which dedupe key a message had.
        let entry = encode(&(key, m))?;
        // One transaction: "seen?", "remember" and "keep" are one step, so two deliveries
        // racing can't both win, and a remembered key always has its message stored.
        let accepted = (&self.dedupe, &self.inbox)
            .transaction(|(dedupe, inbox)| -> TxResult<Option<u64>> {
                if let Some(cur) = dedupe.get(key)? {
                    if expiry(&cur) > now_ms {
                        return Ok(None);
                    }
                }
                dedupe.insert(key, &until[..])?;
                // Keyed by a sequence so replay keeps arrival order.
                let id = inbox.generate_id()?;
                inbox.insert(&id.to_be_bytes()[..], entry.as_slice())?;
                Ok(Some(id))
            })
            .map_err(tx_error)?;
        if accepted.is_some()
            && self
                .accepts
                .fetch_add(1, Ordering::Relaxed)
                .is_multiple_of(SWEEP_EVERY)
        {
            self.sweep_dedupe(now_ms)?;
        }
        Ok(accepted)
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
                    id: u64::from_be_bytes(k.as_ref().try_into().unwrap_or([0; 8])),
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
        (&self.outbox, &self.inbox)
            .transaction(|(outbox, inbox)| -> TxResult<Vec<u64>> {
                let mut ids = Vec::with_capacity(items.len());
                for item in items {
                    let id = outbox.generate_id()? + 1;
                    let mut item = item.clone();
                    item.id = id;
                    let bytes = serde_json::to_vec(&item)
                        .map_err(|_| ConflictableTransactionError::Abort(()))?;
                    outbox.insert(&id.to_be_bytes()[..], bytes)?;
                    ids.push(id);
                }
                if let Some(done) = answered {
                    inbox.remove(&done.to_be_bytes()[..])?;
                }
                Ok(ids)
            })
            .map_err(tx_error)
    }

    fn outbox_items(&self, target: &str, limit: usize) -> StoreResult<Vec<OutboxItem>> {
        let mut out = Vec::new();
        self.scan(&self.outbox, "outbox", |item: OutboxItem| {
            if item.target == target {
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
        let k = letter.item.id.to_be_bytes();
        let v = encode(letter)?;
        (&self.outbox, &self.dead_letters)
            .transaction(|(outbox, dead)| -> TxResult<()> {
                outbox.remove(&k[..])?;
                dead.insert(&k[..], v.as_slice())?;
                Ok(())
            })
            .map_err(tx_error)
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

    fn kv_get(&self, key: &str) -> StoreResult<Option<Vec<u8>>> {
        Ok(self.kv.get(key)?.map(|v| v.to_vec()))
    }

    fn kv_put(&self, key: &str, value: &[u8]) -> StoreResult<()> {
        self.kv.insert(key, value)?;
        Ok(())
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
