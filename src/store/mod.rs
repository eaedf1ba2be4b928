//! Durable state: conversations, messages, dedupe keys, the inbox, the outbox and its dead
//! letters, and small key-values (access tokens). `SledStore` is the default; `MemoryStore`
//! is the fake for tests. Both pass the same contract (`contract_tests`), so the fake cannot
//! drift.
//!
//! The trait is synchronous: sled answers in microseconds, and keeping it sync keeps the
//! engine's locking simple. A networked backend (PostgreSQL) would wrap its calls in
//! `block_in_place`, or the trait grows `async` then.
//!
//! Writes that belong together are one atomic write: a turn's messages with its
//! conversation record (`save_turn`), a platform message's dedupe key with its inbox entry
//! (`inbox_accept`), a reply's outbox entries with the removal of the inbox entry they answer
//! (`outbox_push`), an outbox entry's move to the dead letters (`dead_letter`). A crash
//! between any two writes of one of these can then neither lose a message nor answer it twice.
//! Durability (the flush) is separate: [`GroupCommit`] makes it cheap to wait for.

mod commit;
pub mod marker;
mod memory;
mod model;
mod sled_open;
mod sled_store;

pub use commit::{watch, GroupCommit, StoreHealth, Ticket};
pub use memory::MemoryStore;
pub use model::*;
pub use sled_open::open_db;
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
    /// A turn's writes as one: `messages` (under their seqs) and the conversation record
    /// (whose `next_seq` is past them) land together or not at all, so a failure can't leave
    /// a stored message whose seq the conversation hands out again.
    fn save_turn(&self, c: &Conversation, messages: &[Message]) -> StoreResult<()>;
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
    /// Remember `key` until `now_ms + ttl_ms`. True when it was already remembered (a
    /// duplicate). For keys that commit nothing (see `inbox_accept` for those that do).
    fn check_and_remember(&self, key: &str, now_ms: u64, ttl_ms: u64) -> StoreResult<bool>;
    /// Take in a platform message: remember its dedupe `key` until `now_ms + ttl_ms` and
    /// keep the message in the inbox, in one atomic write. Returns the inbox id, or `None`
    /// when the key is already remembered (a duplicate: nothing is written).
    ///
    /// The inbox keeps a message that was acknowledged but not answered yet, so a crash
    /// between the 200 and the reply loses nothing: `serve` replays the inbox on start.
    fn inbox_accept(
        &self,
        key: &str,
        m: &adapters::Inbound,
        now_ms: u64,
        ttl_ms: u64,
    ) -> StoreResult<Option<u64>>;
    fn inbox_remove(&self, id: u64) -> StoreResult<()>;
    /// Every waiting message, in the order they were accepted.
    fn inbox_all(&self) -> StoreResult<Vec<InboxEntry>>;
    fn inbox_len(&self) -> StoreResult<usize>;
    /// Queue deliveries (ids assigned, increasing) and, in the same atomic write, remove the
    /// inbox entry `answered` they reply to.
    fn outbox_push(&self, items: &[OutboxItem], answered: Option<u64>) -> StoreResult<Vec<u64>>;
    /// Entries for `target`, due or not, oldest first, at most `limit`.
    fn outbox_items(&self, target: &str, limit: usize) -> StoreResult<Vec<OutboxItem>>;
    /// Every entry (for metrics and tests).
    fn outbox_len(&self) -> StoreResult<usize>;
    /// Rewrite an entry that is still queued (a removed one stays removed).
    fn outbox_update(&self, item: &OutboxItem) -> StoreResult<()>;
    fn outbox_remove(&self, id: u64) -> StoreResult<()>;
    /// Move `letter.item` from the outbox to the dead letters, atomically.
    fn dead_letter(&self, letter: &DeadLetter) -> StoreResult<()>;
    /// Dead letters, newest first, at most `limit`.
    fn dead_letters(&self, limit: usize) -> StoreResult<Vec<DeadLetter>>;
    fn dead_letter_count(&self) -> StoreResult<usize>;
    /// Remove a dead letter and return it (an agent discards it or queues it again).
    fn dead_letter_take(&self, id: u64) -> StoreResult<Option<DeadLetter>>;
    fn kv_get(&self, key: &str) -> StoreResult<Option<Vec<u8>>>;
    fn kv_put(&self, key: &str, value: &[u8]) -> StoreResult<()>;
    fn kv_remove(&self, key: &str) -> StoreResult<()>;
    /// Every entry whose key starts with `prefix`, in key order.
    fn kv_scan(&self, prefix: &str) -> StoreResult<Vec<(String, Vec<u8>)>>;
    /// Make everything written so far durable. Callers that answer someone use
    /// [`GroupCommit::durable`], which shares one flush among everyone waiting.
    fn flush(&self) -> StoreResult<()>;
    /// Undecodable records found (skipped and moved aside), by tree, since start.
    fn corrupt_records(&self) -> Vec<(&'static str, u64)> {
        Vec::new()
    }
}

#[cfg(test)]
mod contract_tests;
