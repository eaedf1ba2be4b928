//! Building the running system from a `Config`: open sled, the knowledge index, the
//! providers, the store and the engine. `serve`, `chat`, `ingest` and `eval` all start here.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;

use crate::clock::{Clock, SystemClock};
use crate::config::{ActionKind, Config, IntentMode, ProviderKind, DEFAULT_LOCAL_BUILTIN_WEIGHT};
use crate::engine::actions::{BusinessActions, HandoffActions, HttpActions};
use crate::engine::intent::{BuiltinClassifier, IntentClassifier};
use crate::engine::llm_intent::LlmClassifier;
use crate::engine::neighbours::Neighbours;
use crate::engine::{Engine, EngineParts, KnowledgeRetriever};
use crate::knowledge::{IngestReport, Knowledge, SearchParams};
use crate::metrics::Metrics;
use crate::providers::builtin_embedder::BuiltinEmbedder;
use crate::providers::openai_chat::OpenAiChat;
use crate::providers::openai_embed::OpenAiEmbedder;
use crate::providers::{BuiltinGenerator, Embedder, Generator};
use crate::store::{GroupCommit, SledStore, Store, StoreHealth};

/// Everything a running kefu holds.
pub struct App {
    pub config: Arc<Config>,
    pub db: sled::Db,
    pub knowledge: Arc<Knowledge>,
    pub store: Arc<dyn Store>,
    /// "Is it on disk?" for everyone who answers a platform or a customer (group commit),
    /// and whether writes work at all (`commit.health()`).
    pub commit: Arc<GroupCommit>,
    pub engine: Arc<Engine>,
    pub metrics: Arc<Metrics>,
    pub clock: Arc<dyn Clock>,
    pub http: reqwest::Client,
    /// The data directory whose marker records checkpoints (`store::marker`); `None` for a
    /// database opened by a test.
    marker_dir: Option<PathBuf>,
    /// The last write probe (when, and what it found), shared by /healthz callers.
    last_probe: tokio::sync::Mutex<Option<(std::time::Instant, Result<(), String>)>>,
}

/// How `App::open` treats the knowledge index.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum IngestPolicy {
    /// Ingest when the manifest is stale (files changed since the last ingest).
    WhenStale,
    /// Use the index as it is.
    Never,
}

impl App {
    pub async fn open(config: Config, policy: IngestPolicy) -> anyhow::Result<App> {
        let config = Arc::new(config);
        let dir = config.server.data_dir.clone();
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("server.data_dir: cannot create {}", dir.display()))?;
        // sled's page cache defaults to 1 GB; the working set here is the index (held in
        // memory by `Knowledge` anyway, so its pages are read once, at start) and recent
        // conversations. Loading the index fills whatever the cache holds: 8 MB, not 16,
        // is ~7 MB less resident at 12k FAQ entries and still thousands of sessions' pages.
        let db = crate::store::open_db(&dir, 8 * 1024 * 1024)?;
        let store: Arc<dyn Store> = Arc::new(SledStore::open(&db)?);
        // Before anything writes: a database that lost what the marker remembers is refused.
        crate::store::marker::check(&dir, store.as_ref(), SystemClock.now_ms())?;
        Self::build(config, db, store, policy, Some(dir)).await
    }

    /// Open on an already-open sled database (tests use a temporary one).
    pub async fn with_db(
        config: Arc<Config>,
        db: sled::Db,
        policy: IngestPolicy,
    ) -> anyhow::Result<App> {
        let store: Arc<dyn Store> = Arc::new(SledStore::open(&db)?);
        Self::build(config, db, store, policy, None).await
    }

    /// Open with `store` in front of the database (tests put a fault-injecting store there).
    pub async fn with_store(
        config: Arc<Config>,
        db: sled::Db,
        store: Arc<dyn Store>,
        policy: IngestPolicy,
    ) -> anyhow::Result<App> {
        Self::build(config, db, store, policy, None).await
    }

    async fn build(
        config: Arc<Config>,
        db: sled::Db,
        app_store: Arc<dyn Store>,
        policy: IngestPolicy,
        marker_dir: Option<PathBuf>,
    ) -> anyhow::Result<App> {
        let http = reqwest::Client::builder()
            .user_agent(concat!("kefu/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(std::time::Duration::from_secs(5))
            .build()?;
        let (embedder, search_params) = embedder(&config)?;
        let knowledge = Arc::new(Knowledge::open(&db, embedder.clone())?);
        knowledge.set_params(search_params);
        let commit = GroupCommit::start(app_store.clone(), StoreHealth::new());
        let metrics = Arc::new(Metrics::new());
        let clock: Arc<dyn Clock> = Arc::new(SystemClock);
        if policy == IngestPolicy::WhenStale && knowledge.is_stale(&config.knowledge.paths)? {
            let report = knowledge.ingest(&config.knowledge.paths).await?;
            log_report(&report);
        }
        // `Never` is the ingest command's policy: it ingests next and warns after, if the
        // ingest itself produced nothing (see `warn_if_empty`).
        if policy == IngestPolicy::WhenStale {
            warn_if_empty(&knowledge, &config.knowledge.paths);
        }
        // The chat model, when configured: the generator and the LLM intent classifier share
        // it (one connection pool, one circuit breaker).
        let chat_model: Option<Arc<OpenAiChat>> = match config.providers.chat.as_ref() {
            None => None,
            Some(c) => match c.kind {
                ProviderKind::Builtin => None,
                ProviderKind::Openai => Some(Arc::new(OpenAiChat::new(c)?)),
                ProviderKind::Local => anyhow::bail!(
                    "providers.chat.kind = \"local\" is not supported; use \"builtin\" or \"openai\""
                ),
            },
        };
        let generator: Arc<dyn Generator> = match &chat_model {
            None => Arc::new(BuiltinGenerator::new()),
            Some(chat) => chat.clone(),
        };
        let actions: Arc<dyn BusinessActions> = match config.flows.action {
            ActionKind::Handoff => Arc::new(HandoffActions),
            ActionKind::Http => Arc::new(HttpActions {
                client: http.clone(),
                url: config.flows.action_url.clone().unwrap_or_default(),
                token: config.flows.action_token.clone(),
            }),
        };
        // With `intent.neighbour_weight` above 0 the intent examples are embedded with the
        // knowledge's embedder; if it cannot (a model server down at start), the lexicons
        // classify alone and that is logged.
        let neighbours = match Neighbours::build(
            embedder.clone(),
            &config.intent.examples,
            config.intent.neighbour_weight,
        )
        .await
        {
            Ok(n) => Some(Arc::new(n)),
            Err(e) => {
                tracing::warn!(error = %e, "intent examples not embedded; intent from the lexicons only");
                None
            }
        };
        let mut builtin_classifier =
            BuiltinClassifier::new(&config.intent.order_pattern, &config.intent.examples)?;
        if let Some(n) = neighbours {
            builtin_classifier = builtin_classifier.with_neighbours(n);
        }
        let builtin_classifier = Arc::new(builtin_classifier);
        let intent_mode = config
            .providers
            .chat
            .as_ref()
            .map_or(IntentMode::Builtin, |c| c.intent);
        let classifier: Arc<dyn IntentClassifier> = match (intent_mode, &chat_model) {
            (IntentMode::Builtin, _) => builtin_classifier,
            (mode, Some(chat)) => Arc::new(LlmClassifier::new(
                chat.clone(),
                builtin_classifier,
                mode,
                metrics.clone(),
            )),
            (_, None) => {
                tracing::warn!(
                    "providers.chat.intent asks for the LLM but no chat model is configured (kind = \"openai\"); using the built-in classifier"
                );
                builtin_classifier
            }
        };
        let engine = Arc::new(Engine::new(EngineParts {
            config: config.clone(),
            retriever: Arc::new(KnowledgeRetriever {
                knowledge: knowledge.clone(),
                mode: config.knowledge.retrieval,
            }),
            store: app_store.clone(),
            generator,
            fallback_generator: Arc::new(BuiltinGenerator::new()),
            classifier,
            actions,
            clock: clock.clone(),
            metrics: metrics.clone(),
        })?);
        Ok(App {
            config,
            db,
            knowledge,
            store: app_store,
            commit,
            engine,
            metrics,
            clock,
            http,
            marker_dir,
            last_probe: tokio::sync::Mutex::new(None),
        })
    }

    /// Record a checkpoint in the database and in the data directory's marker (see
    /// `store::marker`). Blocking (a flush and a small file write); nothing to do for a
    /// database opened by a test.
    pub fn checkpoint(&self) -> anyhow::Result<()> {
        if let Some(dir) = &self.marker_dir {
            crate::store::marker::checkpoint(dir, self.store.as_ref(), self.clock.now_ms())?;
        }
        Ok(())
    }

    /// Can the store write? Writes a small key and waits for the flush; the answer is reused
    /// for `fresh` (so a busy /healthz costs one write a second at most). A probe that
    /// succeeds declares the store healthy again.
    pub async fn probe_store(&self, fresh: std::time::Duration) -> Result<(), String> {
        let mut last = self.last_probe.lock().await;
        if let Some((at, result)) = last.as_ref() {
            if at.elapsed() < fresh {
                return result.clone();
            }
        }
        let now = self.clock.now_ms();
        let result = match self.store.kv_put("kefu:probe", &now.to_be_bytes()) {
            Ok(()) => self.commit.durable().await.map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        match &result {
            Ok(()) => self.commit.health().recovered(),
            Err(e) => self.commit.health().failed(e),
        }
        *last = Some((std::time::Instant::now(), result.clone()));
        result
    }
}

/// The configured embedder and the search knobs fitted for its similarity scale.
fn embedder(config: &Config) -> anyhow::Result<(Arc<dyn Embedder>, SearchParams)> {
    let builtin = || -> (Arc<dyn Embedder>, SearchParams) {
        (Arc::new(BuiltinEmbedder::new()), SearchParams::default())
    };
    let Some(e) = config.providers.embedding.as_ref() else {
        return Ok(builtin());
    };
    let (model, blend, params): (Arc<dyn Embedder>, f32, SearchParams) = match e.kind {
        ProviderKind::Builtin => return Ok(builtin()),
        // Not fitted for hosted models yet: the built-in knobs (see the notes on search.rs).
        ProviderKind::Openai => (
            Arc::new(OpenAiEmbedder::new(e)?),
            e.builtin_weight.unwrap_or(0.0),
            SearchParams::default(),
        ),
        ProviderKind::Local => {
            let (model, profile) = local_embedder(e)?;
            // A model that reads both scripts needs no help from the built-in embedder
            // (measured: blending lowers multilingual-e5's hit@1); an English one does.
            let blend = e.builtin_weight.unwrap_or(if profile.multilingual {
                0.0
            } else {
                DEFAULT_LOCAL_BUILTIN_WEIGHT
            });
            // The blended cosine is (1 − w)·model + w·built-in, and so is its background.
            let mut background = profile.background;
            for (b, probes) in background.iter_mut().zip(crate::providers::PROBES) {
                let builtin: Vec<Vec<f32>> = probes
                    .iter()
                    .map(|p| BuiltinEmbedder::hashed().embed_one(p))
                    .collect();
                *b = (1.0 - blend) * *b + blend * crate::providers::mean_pairwise_cosine(&builtin);
            }
            let profile = crate::providers::SimilarityProfile {
                background,
                ..profile
            };
            (
                model,
                blend,
                SearchParams::sentence_model(blend > 0.0, &profile),
            )
        }
    };
    let model = match blend {
        w if w > 0.0 => Arc::new(crate::providers::blend::BlendedEmbedder::new(model, w)),
        _ => model,
    };
    Ok((model, params))
}

#[cfg(feature = "local-embeddings")]
fn local_embedder(
    e: &crate::config::EmbeddingConfig,
) -> anyhow::Result<(Arc<dyn Embedder>, crate::providers::SimilarityProfile)> {
    let Some(dir) = e.model_dir.as_deref() else {
        anyhow::bail!("providers.embedding.model_dir is required for kind = \"local\"")
    };
    let prefixes = crate::providers::local_embed::Prefixes {
        query: e.query_prefix.clone(),
        passage: e.passage_prefix.clone(),
    };
    let local = crate::providers::local_embed::LocalEmbedder::open(dir, e.batch_size, &prefixes)?;
    let profile = local.profile();
    tracing::info!(
        model = local.model(),
        weights_mb = local.weight_bytes() / 1_000_000,
        query_prefix = local.prefixes().0,
        passage_prefix = local.prefixes().1,
        multilingual = profile.multilingual,
        background_en = profile.background[0],
        background_zh = profile.background[1],
        "local embedding model loaded"
    );
    if let Some(dim) = e.dim.filter(|d| *d != local.dim()) {
        anyhow::bail!(
            "providers.embedding.dim = {dim}, but the model in {} returns {} dimensions",
            dir.display(),
            local.dim()
        );
    }
    Ok((Arc::new(local), profile))
}

#[cfg(not(feature = "local-embeddings"))]
fn local_embedder(
    _: &crate::config::EmbeddingConfig,
) -> anyhow::Result<(Arc<dyn Embedder>, crate::providers::SimilarityProfile)> {
    anyhow::bail!(
        "providers.embedding.kind = \"local\" needs a build with the `local-embeddings` feature (cargo build --release --features local-embeddings), which this build does not have"
    )
}

/// Warn that every question will go to a human when the index holds nothing (after an
/// ingest, or on an index an earlier ingest left empty).
pub fn warn_if_empty(knowledge: &Knowledge, paths: &[PathBuf]) -> bool {
    let empty = knowledge.chunk_count() == 0;
    if empty {
        tracing::warn!(
            ?paths,
            "the knowledge base is empty: every question will be handed to a human"
        );
    }
    empty
}

/// Print an ingest report the way operators read it: problems one per line.
pub fn log_report(r: &IngestReport) {
    tracing::info!(
        files = r.files_seen,
        changed = r.files_changed,
        removed = r.files_removed,
        chunks = r.chunks,
        "knowledge ingested"
    );
    for p in &r.problems {
        tracing::warn!("{p}");
    }
}

/// Parse every knowledge file under `roots` without indexing: the problems `kefu check`
/// prints (`path:line: reason`).
pub fn check_knowledge(roots: &[PathBuf]) -> Vec<String> {
    let mut problems = Vec::new();
    let mut files = 0usize;
    for root in roots {
        let (found, walk_problems) = crate::knowledge::load::walk(root);
        problems.extend(walk_problems.iter().map(ToString::to_string));
        for f in found {
            files += 1;
            match std::fs::read(&f.path) {
                Ok(bytes) => {
                    let loaded = crate::knowledge::load::load_file(&f.rel, &bytes);
                    problems.extend(loaded.problems.iter().map(ToString::to_string));
                }
                Err(e) => problems.push(format!("{}: cannot read: {e}", f.rel)),
            }
        }
    }
    if files == 0 {
        problems.push(format!(
            "knowledge.paths {roots:?}: no knowledge files found (.md, .jsonl, .csv)"
        ));
    }
    problems
}
