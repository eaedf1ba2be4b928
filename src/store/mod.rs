//! Durable state: conversations, messages, dedupe keys, the outbox and small key-values
//! (access tokens). `SledStore` is the default; `MemoryStore` is the fake for tests. Both pass
//! the same contract (`contract_tests`), so the fake cannot drift.
//!
//! The trait is synchronous: sled answers in microseconds, and keeping it sync keeps the
//! engine's locking simple. A networked backend (PostgreSQL) would wrap its calls in
//! `block_in_place`, or the trait grows `async` then.

mod memory;
mod model;
mod sled_store;

pub use memory::MemoryStore;
pub use model::*;
pub use sled_store::SledStore;

/// Storage failures are internal errors: logged, never shown to customers.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("storage: {0}")]
    Backend(String),
    #[error("corrupt record under {key}: {reason}")]
    Corrupt { key: String, reason: String },
}

impl From<sled::Error> for StoreError {
    fn from(e: sled::Error) -> Self {
        StoreError::Backend(e.to_string())
    }
}

pub type StoreResult<T> = Result<T, StoreError>;

pub trait Store: Send + Sync {
    fn conversation(&self, channel: &str, conversation: &str) -> StoreResult<Option<Conversation>>;
    fn save_conversation(&self, c: &Conversation) -> StoreResult<()>;
    /// Conversations whose handoff is active, oldest first (the agents' queue).
    fn handed_off(&self) -> StoreResult<Vec<Conversation>>;
    /// Store `m` under its `seq` (the caller assigns it from `Conversation::next_seq`).
    fn append_message(&self, channel: &str, conversation: &str, m: &Message) -> StoreResult<()>;
    /// Messages with `seq > after`, oldest first, at most `limit`.
    fn messages(
        &self,
        channel: &str,
        conversation: &str,
        after: u64,
        limit: usize,
    ) -> StoreResult<Vec<Message>>;
    /// The newest `limit` messages with `seq < before`, oldest first (`before = u64::MAX`:
    /// the newest of all). Histories open at the end and page backwards with this.
    fn messages_before(
        &self,
        channel: &str,
        conversation: &str,
        before: u64,
        limit: usize,
    ) -> StoreResult<Vec<Message>>;
    /// One message by its seq.
    fn message(&self, channel: &str, conversation: &str, seq: u64) -> StoreResult<Option<Message>> {
        Ok(self
            .messages(channel, conversation, seq.saturating_sub(1), 1)?
            .into_iter()
            .find(|m| m.seq == seq))
    }
    /// Remember `key` until `now_ms + ttl_ms`. True when it was already remembered (a duplicate).
    fn check_and_remember(&self, key: &str, now_ms: u64, ttl_ms: u64) -> StoreResult<bool>;
    /// Queue a delivery; returns its id (increasing).
    fn outbox_push(&self, item: &OutboxItem) -> StoreResult<u64>;
    /// Entries for `target`, due or not, oldest first, at most `limit`.
    fn outbox_items(&self, target: &str, limit: usize) -> StoreResult<Vec<OutboxItem>>;
    /// Every entry (for metrics and tests).
    fn outbox_len(&self) -> StoreResult<usize>;
    fn outbox_update(&self, item: &OutboxItem) -> StoreResult<()>;
    fn outbox_remove(&self, id: u64) -> StoreResult<()>;
    /// Keep a platform message that was acknowledged but not handled yet, so a crash
    /// between the 200 and the reply loses nothing: `serve` replays the inbox on start.
    fn inbox_put(&self, key: &str, m: &adapters::Inbound) -> StoreResult<()>;
    fn inbox_remove(&self, key: &str) -> StoreResult<()>;
    /// Every waiting message, in the order they were put.
    fn inbox_all(&self) -> StoreResult<Vec<(String, adapters::Inbound)>>;
    fn kv_get(&self, key: &str) -> StoreResult<Option<Vec<u8>>>;
    fn kv_put(&self, key: &str, value: &[u8]) -> StoreResult<()>;
    fn kv_remove(&self, key: &str) -> StoreResult<()>;
    /// Every entry whose key starts with `prefix`, in key order.
    fn kv_scan(&self, prefix: &str) -> StoreResult<Vec<(String, Vec<u8>)>>;
    /// Make everything written so far durable (called at shutdown; sled also flushes on a timer).
    fn flush(&self) -> StoreResult<()>;
}

#[cfg(test)]
mod contract_tests;
