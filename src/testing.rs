//! Fakes for tests: a keyword retriever, a scripted generator, and an engine built on them
//! with the in-memory store. Compiled for tests and with the `testing` feature.

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
use crate::store::{MemoryStore, Store};

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
