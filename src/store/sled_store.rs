//! The sled-backed store. Keys: conversation = `channel \0 conversation`; message =
//! conversation key `\0` big-endian seq (so a prefix scan lists a conversation in order);
//! outbox = big-endian id; dedupe = the key, value = big-endian expiry; handoffs = the
//! conversation keys of active handoffs (an index, so the agents' queue does not read every
//! conversation).

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
}

/// Set in `kv` once the handoff index covers every conversation (databases from before the
/// index get it built once, on open).
pub(super) const HANDOFF_INDEX_MARKER: &str = "store:handoff_index:v1";

impl SledStore {
    pub fn open(db: &sled::Db) -> StoreResult<Self> {
        let s = SledStore {
            db: db.clone(),
            conversations: db.open_tree("conversations")?,
            messages: db.open_tree("messages")?,
            dedupe: db.open_tree("dedupe")?,
            outbox: db.open_tree("outbox")?,
            kv: db.open_tree("kv")?,
            inbox: db.open_tree("inbox")?,
            handoffs: db.open_tree("handoffs")?,
        };
        if s.kv.get(HANDOFF_INDEX_MARKER)?.is_none() {
            for kv in s.conversations.iter() {
                let (k, v) = kv?;
                let c: Conversation = decode(&k, &v)?;
                if c.handed_off() {
                    s.handoffs.insert(k, &[])?;
                }
            }
            s.kv.insert(HANDOFF_INDEX_MARKER, &[])?;
        }
        Ok(s)
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

fn encode<T: Serialize>(v: &T) -> StoreResult<Vec<u8>> {
    serde_json::to_vec(v).map_err(|e| StoreError::Backend(e.to_string()))
}

fn decode<T: DeserializeOwned>(key: &[u8], bytes: &[u8]) -> StoreResult<T> {
    serde_json::from_slice(bytes).map_err(|e| StoreError::Corrupt {
        key: String::from_utf8_lossy(key).replace('\0', "/"),
        reason: e.to_string(),
    })
}

impl Store for SledStore {
    fn conversation(&self, channel: &str, conversation: &str) -> StoreResult<Option<Conversation>> {
        let k = conv_key(channel, conversation);
        self.conversations
            .get(&k)?
            .map(|v| decode(&k, &v))
            .transpose()
    }

    fn save_conversation(&self, c: &Conversation) -> StoreResult<()> {
        let k = conv_key(&c.channel, &c.conversation);
        // The index may name more conversations than are handed off (a crash between the two
        // writes), never fewer: add before, remove after. Readers check each one.
        if c.handed_off() {
            self.handoffs.insert(&k, &[])?;
            self.conversations.insert(&k, encode(c)?)?;
        } else {
            self.conversations.insert(&k, encode(c)?)?;
            self.handoffs.remove(&k)?;
        }
        Ok(())
    }

    fn handed_off(&self) -> StoreResult<Vec<Conversation>> {
        let mut out = Vec::new();
        for k in self.handoffs.iter().keys() {
            let k = k?;
            if let Some(v) = self.conversations.get(&k)? {
                let c: Conversation = decode(&k, &v)?;
                if c.handed_off() {
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
            out.push(decode(&k, &v)?);
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
        let mut start = conv_key(channel, conversation);
        start.push(0);
        let end = msg_key(channel, conversation, before);
        let mut out = Vec::new();
        for kv in self.messages.range(start..end).rev().take(limit) {
            let (k, v) = kv?;
            out.push(decode(&k, &v)?);
        }
        out.reverse();
        Ok(out)
    }

    fn check_and_remember(&self, key: &str, now_ms: u64, ttl_ms: u64) -> StoreResult<bool> {
        let expiry = now_ms.saturating_add(ttl_ms).to_be_bytes();
        // compare_and_swap makes "seen?" and "remember" one step: two deliveries of the same
        // message racing each other can't both win.
        loop {
            let current = self.dedupe.get(key)?;
            if let Some(cur) = &current {
                let until = u64::from_be_bytes(cur.as_ref().try_into().unwrap_or([0; 8]));
                if until > now_ms {
                    return Ok(true);
                }
            }
            match self
                .dedupe
                .compare_and_swap(key, current, Some(&expiry[..]))?
            {
                Ok(()) => break,
                Err(_) => continue,
            }
        }
        // Sweep a few expired keys so the tree doesn't grow without bound.
        let expired: Vec<sled::IVec> = self
            .dedupe
            .iter()
            .take(64)
            .filter_map(|kv| kv.ok())
            .filter(|(_, v)| u64::from_be_bytes(v.as_ref().try_into().unwrap_or([0; 8])) <= now_ms)
            .map(|(k, _)| k)
            .collect();
        for k in expired {
            self.dedupe.remove(k)?;
        }
        Ok(false)
    }

    fn outbox_push(&self, item: &OutboxItem) -> StoreResult<u64> {
        let id = self.db.generate_id()? + 1;
        let mut item = item.clone();
        item.id = id;
        self.outbox.insert(id.to_be_bytes(), encode(&item)?)?;
        Ok(id)
    }

    fn outbox_items(&self, target: &str, limit: usize) -> StoreResult<Vec<OutboxItem>> {
        let mut out = Vec::new();
        for kv in self.outbox.iter() {
            let (k, v) = kv?;
            let item: OutboxItem = decode(&k, &v)?;
            if item.target == target {
                out.push(item);
                if out.len() >= limit {
                    break;
                }
            }
        }
        Ok(out)
    }

    fn outbox_len(&self) -> StoreResult<usize> {
        Ok(self.outbox.len())
    }

    fn outbox_update(&self, item: &OutboxItem) -> StoreResult<()> {
        let k = item.id.to_be_bytes();
        if self.outbox.contains_key(k)? {
            self.outbox.insert(k, encode(item)?)?;
        }
        Ok(())
    }

    fn outbox_remove(&self, id: u64) -> StoreResult<()> {
        self.outbox.remove(id.to_be_bytes())?;
        Ok(())
    }

    fn inbox_put(&self, key: &str, m: &adapters::Inbound) -> StoreResult<()> {
        // Keyed by a sequence so replay keeps arrival order; the value carries the key.
        let seq = self.db.generate_id()?;
        self.inbox.insert(seq.to_be_bytes(), encode(&(key, m))?)?;
        Ok(())
    }

    fn inbox_remove(&self, key: &str) -> StoreResult<()> {
        for kv in self.inbox.iter() {
            let (k, v) = kv?;
            let (stored, _): (String, adapters::Inbound) = decode(&k, &v)?;
            if stored == key {
                self.inbox.remove(k)?;
            }
        }
        Ok(())
    }

    fn inbox_all(&self) -> StoreResult<Vec<(String, adapters::Inbound)>> {
        self.inbox
            .iter()
            .map(|kv| {
                let (k, v) = kv?;
                decode(&k, &v)
            })
            .collect()
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
}
