//! The sled-backed store. Keys: conversation = `channel \0 conversation`; message =
//! conversation key `\0` big-endian seq (so a prefix scan lists a conversation in order);
//! outbox = big-endian id; dedupe = the key, value = big-endian expiry; sync_cursors and
//! send_quotas = the stream / customer key.

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
    /// `key \0 seq` → (): finds a key's inbox entries without scanning the inbox.
    inbox_keys: sled::Tree,
    cursors: sled::Tree,
    quotas: sled::Tree,
}

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
            inbox_keys: db.open_tree("inbox_keys")?,
            cursors: db.open_tree("sync_cursors")?,
            quotas: db.open_tree("send_quotas")?,
        })
    }
}

pub(super) fn conv_key(channel: &str, conversation: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(channel.len() + conversation.len() + 1);
    k.extend_from_slice(channel.as_bytes());
    k.push(0);
    k.extend_from_slice(conversation.as_bytes());
    k
}

/// `key \0 seq`: the inbox index entry of one inbox entry.
fn inbox_index_key(key: &str, seq: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(key.len() + 1 + seq.len());
    k.extend_from_slice(key.as_bytes());
    k.push(0);
    k.extend_from_slice(seq);
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

impl SledStore {
    /// Read-modify-write one quota atomically (compare-and-swap, retried on a race);
    /// `change` returns the new value, or `None` to leave it.
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
        self.conversations
            .insert(conv_key(&c.channel, &c.conversation), encode(c)?)?;
        Ok(())
    }

    fn handed_off(&self) -> StoreResult<Vec<Conversation>> {
        let mut out = Vec::new();
        for kv in self.conversations.iter() {
            let (k, v) = kv?;
            let c: Conversation = decode(&k, &v)?;
            if c.handed_off() {
                out.push(c);
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
        use sled::transaction::ConflictableTransactionError;
        use sled::Transactional;
        // Keyed by a sequence so replay keeps arrival order; the value carries the key.
        let seq = self.db.generate_id()?.to_be_bytes();
        let value = encode(&(key, m))?;
        let index = inbox_index_key(key, &seq);
        (&self.inbox, &self.inbox_keys)
            .transaction(|(inbox, keys)| {
                inbox.insert(&seq[..], value.as_slice())?;
                keys.insert(index.as_slice(), &[][..])?;
                Ok::<(), ConflictableTransactionError<()>>(())
            })
            .map_err(|e| StoreError::Backend(format!("inbox write: {e:?}")))
    }

    fn inbox_remove(&self, key: &str) -> StoreResult<()> {
        let prefix = inbox_index_key(key, &[]);
        let mut found = false;
        for kv in self.inbox_keys.scan_prefix(&prefix) {
            let (k, _) = kv?;
            self.inbox.remove(&k[prefix.len()..])?;
            self.inbox_keys.remove(&k)?;
            found = true;
        }
        if !found {
            // Entries written before the index existed: the slow way.
            for kv in self.inbox.iter() {
                let (k, v) = kv?;
                let (stored, _): (String, adapters::Inbound) = decode(&k, &v)?;
                if stored == key {
                    self.inbox.remove(k)?;
                }
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

    fn accept_inbound(
        &self,
        key: &str,
        m: &adapters::Inbound,
        now_ms: u64,
        ttl_ms: u64,
    ) -> StoreResult<bool> {
        use sled::transaction::{ConflictableTransactionError, TransactionError};
        use sled::Transactional;
        let seq = self.db.generate_id()?.to_be_bytes();
        let value = encode(&(key, m))?;
        let expiry = now_ms.saturating_add(ttl_ms).to_be_bytes();
        let index = inbox_index_key(key, &seq);
        let outcome =
            (&self.dedupe, &self.inbox, &self.inbox_keys).transaction(|(dedupe, inbox, keys)| {
                if let Some(cur) = dedupe.get(key)? {
                    let until = u64::from_be_bytes(cur.as_ref().try_into().unwrap_or([0; 8]));
                    if until > now_ms {
                        return Ok(true);
                    }
                }
                dedupe.insert(key, &expiry[..])?;
                inbox.insert(&seq[..], value.as_slice())?;
                keys.insert(index.as_slice(), &[][..])?;
                Ok::<bool, ConflictableTransactionError<()>>(false)
            });
        match outcome {
            Ok(dup) => Ok(dup),
            Err(TransactionError::Storage(e)) => Err(e.into()),
            Err(TransactionError::Abort(())) => Err(StoreError::Backend("accept aborted".into())),
        }
    }

    fn cursor(&self, stream: &str) -> StoreResult<Option<String>> {
        Ok(self
            .cursors
            .get(stream)?
            .map(|v| String::from_utf8_lossy(&v).into_owned()))
    }

    fn set_cursor(&self, stream: &str, cursor: &str) -> StoreResult<()> {
        self.cursors.insert(stream, cursor.as_bytes())?;
        Ok(())
    }

    fn quota_open(&self, key: &str, customer_at_ms: u64) -> StoreResult<()> {
        self.quota_update(key, |q| {
            (customer_at_ms >= q.opened_ms).then_some(Quota {
                opened_ms: customer_at_ms,
                used: 0,
            })
        })?;
        Ok(())
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
        self.quota_update(key, |q| {
            granted = q.grant(now_ms, want, limit, window_ms);
            (granted > 0).then_some(Quota {
                used: q.used + granted,
                ..q
            })
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

    fn flush(&self) -> StoreResult<()> {
        self.db.flush()?;
        Ok(())
    }
}
