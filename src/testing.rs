//! Fakes for tests: a keyword retriever, a scripted generator, and an engine built on them
//! with the in-memory store. Compiled for tests and with the `testing` feature.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;

use crate::clock::FixedClock;
use crate::config::Config;
use crate::engine::actions::{ActionOutcome, ActionRequest, BusinessActions, HandoffActions};
use crate::engine::intent::BuiltinClassifier;
use crate::engine::{Engine, EngineParts, Retriever};
use crate::knowledge::Hit;
use crate::metrics::Metrics;
use crate::providers::{Answer, BuiltinGenerator, GenerateRequest, Generator, ProviderError};
use crate::store::{
    Conversation, DeadLetter, InboxEntry, MemoryStore, Message, OutboxItem, Store, StoreError,
    StoreResult,
};

/// Returns the entries whose every keyword occurs in the (lower-cased) query, with their score.
#[derive(Default)]
pub struct KeywordRetriever {
    pub entries: Vec<(Vec<&'static str>, Hit)>,
}

impl KeywordRetriever {
    pub fn with(mut self, keywords: &[&'static str], source: &str, text: &str, score: f32) -> Self {
        self.entries.push((
            keywords.to_vec(),
            Hit {
                source: source.into(),
                title: source.into(),
                heading_path: vec![],
                category: source.split('/').next().unwrap_or("").into(),
                text: text.into(),
                score,
                kind: if source.contains('#') {
                    crate::knowledge::load::ChunkKind::Faq
                } else {
                    crate::knowledge::load::ChunkKind::Section
                },
            },
        ));
        self
    }
}

#[async_trait]
impl Retriever for KeywordRetriever {
    async fn search(&self, query: &str, top_k: usize) -> anyhow::Result<Vec<Hit>> {
        let q = query.to_lowercase();
        let mut hits: Vec<Hit> = self
            .entries
            .iter()
            .filter(|(kw, _)| kw.iter().all(|k| q.contains(k)))
            .map(|(_, h)| h.clone())
            .collect();
        hits.sort_by(|a, b| b.score.total_cmp(&a.score));
        hits.truncate(top_k);
        Ok(hits)
    }
}

/// Answers from a script, or fails, on cue.
pub struct ScriptedGenerator {
    pub answers: Mutex<Vec<Result<Answer, ProviderError>>>,
}

#[async_trait]
impl Generator for ScriptedGenerator {
    fn name(&self) -> &str {
        "scripted"
    }
    async fn generate(&self, _req: &GenerateRequest<'_>) -> Result<Answer, ProviderError> {
        let mut a = self.answers.lock().unwrap();
        if a.is_empty() {
            Err(ProviderError::Unavailable("script ran out".into()))
        } else {
            a.remove(0)
        }
    }
}

/// Records every business action and answers with a fixed outcome.
pub struct RecordingActions {
    pub outcome: ActionOutcome,
    pub seen: Mutex<Vec<ActionRequest>>,
}

#[async_trait]
impl BusinessActions for RecordingActions {
    async fn run(&self, req: &ActionRequest) -> ActionOutcome {
        self.seen.lock().unwrap().push(req.clone());
        self.outcome.clone()
    }
}

pub struct TestEngine {
    pub engine: Arc<Engine>,
    pub store: Arc<dyn Store>,
    pub clock: Arc<FixedClock>,
    pub metrics: Arc<Metrics>,
}

/// An engine on the in-memory store, the given retriever and the built-in generator.
pub fn engine_with(
    config: Config,
    retriever: Arc<dyn Retriever>,
    store: Arc<dyn Store>,
) -> TestEngine {
    engine_full(
        config,
        retriever,
        store,
        Arc::new(BuiltinGenerator::new()),
        Arc::new(HandoffActions),
    )
}

pub fn engine_full(
    config: Config,
    retriever: Arc<dyn Retriever>,
    store: Arc<dyn Store>,
    generator: Arc<dyn Generator>,
    actions: Arc<dyn BusinessActions>,
) -> TestEngine {
    let clock = Arc::new(FixedClock::at_ms(1_700_000_000_000));
    let metrics = Arc::new(Metrics::new());
    let classifier = Arc::new(
        BuiltinClassifier::new(&config.intent.order_pattern, &config.intent.examples).unwrap(),
    );
    let engine = Engine::new(EngineParts {
        config: Arc::new(config),
        retriever,
        store: store.clone(),
        generator,
        fallback_generator: Arc::new(BuiltinGenerator::new()),
        classifier,
        actions,
        clock: clock.clone(),
        metrics: metrics.clone(),
    })
    .unwrap();
    TestEngine {
        engine: Arc::new(engine),
        store,
        clock,
        metrics,
    }
}

pub fn memory_store() -> Arc<dyn Store> {
    Arc::new(MemoryStore::new())
}

/// A web text message.
pub fn web_message(session: &str, id: &str, text: &str) -> adapters::Inbound {
    adapters::Inbound {
        channel: "site".into(),
        kind: adapters::ChannelKind::Web,
        conversation: session.into(),
        user: adapters::UserRef {
            id: session.into(),
            name: None,
        },
        id: id.into(),
        content: adapters::ContentKind::Text,
        text: text.into(),
        sent_at_ms: 1_700_000_000_000,
        route: Default::default(),
    }
}

/// A store that fails on cue, as a full disk would: writes (`fail_writes`) and flushes
/// (`fail_flush`) answer ENOSPC until the flag is cleared; reads always work. Flushes can be
/// slowed down and are counted.
pub struct FaultyStore {
    inner: Arc<dyn Store>,
    pub fail_writes: AtomicBool,
    pub fail_flush: AtomicBool,
    /// Fail only the engine's turn records (`save_turn`): messages are taken in, turns stall.
    pub fail_turns: AtomicBool,
    pub flush_delay_ms: AtomicU64,
    pub flushes: AtomicUsize,
}

impl FaultyStore {
    pub fn new(inner: Arc<dyn Store>) -> Self {
        FaultyStore {
            inner,
            fail_writes: AtomicBool::new(false),
            fail_flush: AtomicBool::new(false),
            fail_turns: AtomicBool::new(false),
            flush_delay_ms: AtomicU64::new(0),
            flushes: AtomicUsize::new(0),
        }
    }

    /// Fail every write and flush (`true`), or work again (`false`).
    pub fn set_disk_full(&self, full: bool) {
        self.fail_writes.store(full, Ordering::SeqCst);
        self.fail_flush.store(full, Ordering::SeqCst);
    }

    fn write(&self) -> StoreResult<()> {
        if self.fail_writes.load(Ordering::SeqCst) {
            return Err(StoreError::Backend(
                "No space left on device (os error 28) [injected]".into(),
            ));
        }
        Ok(())
    }
}

impl Store for FaultyStore {
    fn conversation(&self, channel: &str, conversation: &str) -> StoreResult<Option<Conversation>> {
        self.inner.conversation(channel, conversation)
    }
    fn save_conversation(&self, c: &Conversation) -> StoreResult<()> {
        self.write()?;
        self.inner.save_conversation(c)
    }
    fn handed_off(&self) -> StoreResult<Vec<Conversation>> {
        self.inner.handed_off()
    }
    fn append_message(&self, channel: &str, conversation: &str, m: &Message) -> StoreResult<()> {
        self.write()?;
        self.inner.append_message(channel, conversation, m)
    }
    fn save_turn(&self, c: &Conversation, messages: &[Message]) -> StoreResult<()> {
        self.write()?;
        if self.fail_turns.load(Ordering::SeqCst) {
            return Err(StoreError::Backend("turn write failed [injected]".into()));
        }
        self.inner.save_turn(c, messages)
    }
    fn messages(
        &self,
        channel: &str,
        conversation: &str,
        after: u64,
        limit: usize,
    ) -> StoreResult<Vec<Message>> {
        self.inner.messages(channel, conversation, after, limit)
    }
    fn messages_before(
        &self,
        channel: &str,
        conversation: &str,
        before: u64,
        limit: usize,
    ) -> StoreResult<Vec<Message>> {
        self.inner
            .messages_before(channel, conversation, before, limit)
    }
    fn kv_remove(&self, key: &str) -> StoreResult<()> {
        self.write()?;
        self.inner.kv_remove(key)
    }
    fn kv_scan(&self, prefix: &str) -> StoreResult<Vec<(String, Vec<u8>)>> {
        self.inner.kv_scan(prefix)
    }
    fn check_and_remember(&self, key: &str, now_ms: u64, ttl_ms: u64) -> StoreResult<bool> {
        self.write()?;
        self.inner.check_and_remember(key, now_ms, ttl_ms)
    }
    fn inbox_accept(
        &self,
        key: &str,
        m: &adapters::Inbound,
        now_ms: u64,
        ttl_ms: u64,
    ) -> StoreResult<Option<u64>> {
        self.write()?;
        self.inner.inbox_accept(key, m, now_ms, ttl_ms)
    }
    fn inbox_remove(&self, id: u64) -> StoreResult<()> {
        self.write()?;
        self.inner.inbox_remove(id)
    }
    fn inbox_all(&self) -> StoreResult<Vec<InboxEntry>> {
        self.inner.inbox_all()
    }
    fn inbox_len(&self) -> StoreResult<usize> {
        self.inner.inbox_len()
    }
    fn outbox_push(&self, items: &[OutboxItem], answered: Option<u64>) -> StoreResult<Vec<u64>> {
        self.write()?;
        self.inner.outbox_push(items, answered)
    }
    fn outbox_items(&self, target: &str, limit: usize) -> StoreResult<Vec<OutboxItem>> {
        self.inner.outbox_items(target, limit)
    }
    fn outbox_len(&self) -> StoreResult<usize> {
        self.inner.outbox_len()
    }
    fn outbox_update(&self, item: &OutboxItem) -> StoreResult<()> {
        self.write()?;
        self.inner.outbox_update(item)
    }
    fn outbox_remove(&self, id: u64) -> StoreResult<()> {
        self.write()?;
        self.inner.outbox_remove(id)
    }
    fn dead_letter(&self, letter: &DeadLetter) -> StoreResult<()> {
        self.write()?;
        self.inner.dead_letter(letter)
    }
    fn dead_letters(&self, limit: usize) -> StoreResult<Vec<DeadLetter>> {
        self.inner.dead_letters(limit)
    }
    fn dead_letter_count(&self) -> StoreResult<usize> {
        self.inner.dead_letter_count()
    }
    fn dead_letter_take(&self, id: u64) -> StoreResult<Option<DeadLetter>> {
        self.write()?;
        self.inner.dead_letter_take(id)
    }
    fn kv_get(&self, key: &str) -> StoreResult<Option<Vec<u8>>> {
        self.inner.kv_get(key)
    }
    fn kv_put(&self, key: &str, value: &[u8]) -> StoreResult<()> {
        self.write()?;
        self.inner.kv_put(key, value)
    }
    fn flush(&self) -> StoreResult<()> {
        let delay = self.flush_delay_ms.load(Ordering::SeqCst);
        if delay > 0 {
            std::thread::sleep(std::time::Duration::from_millis(delay));
        }
        self.flushes.fetch_add(1, Ordering::SeqCst);
        if self.fail_flush.load(Ordering::SeqCst) {
            return Err(StoreError::Backend(
                "No space left on device (os error 28) [injected]".into(),
            ));
        }
        self.inner.flush()
    }
    fn corrupt_records(&self) -> Vec<(&'static str, u64)> {
        self.inner.corrupt_records()
    }
}
