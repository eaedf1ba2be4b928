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
    /// Remember `key` (until `now_ms + ttl_ms`) and keep `m` in the inbox, in one atomic
    /// step; true when `key` was already remembered, and then nothing is written. A pull
    /// channel stores a page this way before it moves its cursor: a crash can leave neither
    /// a remembered key without its message nor a message without its key.
    fn accept_inbound(
        &self,
        key: &str,
        m: &adapters::Inbound,
        now_ms: u64,
        ttl_ms: u64,
    ) -> StoreResult<bool>;
    /// Where a pull channel's stream stands (WeCom kf: `next_cursor` per account).
    fn cursor(&self, stream: &str) -> StoreResult<Option<String>>;
    fn set_cursor(&self, stream: &str, cursor: &str) -> StoreResult<()>;
    /// The customer wrote at `customer_at_ms`: their send allowance starts again from there.
    /// An older time than the one kept changes nothing; the same time (a second message
    /// within the platform's one-second resolution) re-opens it.
    fn quota_open(&self, key: &str, customer_at_ms: u64) -> StoreResult<()>;
    /// Take up to `want` sends from the allowance of `limit` sends within `window_ms` of the
    /// customer's last message; returns how many were granted (0 when the window has closed
    /// or none was ever opened). Atomic: concurrent takers never exceed `limit`.
    fn quota_take(
        &self,
        key: &str,
        now_ms: u64,
        want: u32,
        limit: u32,
        window_ms: u64,
    ) -> StoreResult<u32>;
    fn quota(&self, key: &str) -> StoreResult<Option<Quota>>;
    fn kv_get(&self, key: &str) -> StoreResult<Option<Vec<u8>>>;
    fn kv_put(&self, key: &str, value: &[u8]) -> StoreResult<()>;
    /// Make everything written so far durable (called at shutdown; sled also flushes on a timer).
    fn flush(&self) -> StoreResult<()>;
}

#[cfg(test)]
mod contract_tests;
