//! Knowledge: load markdown / FAQ files into chunks, index them on sled, search them.
//!
//! ```text
//! roots ─walk─► load (markdown.rs, faq.rs) ─► chunks ─► units ─embed─► index.rs (sled, kb_*)
//!                                                                        │ open / after ingest
//! query ─► analyze + embed ─► search.rs (BM25 + cosine, max-sim per chunk) ◄─ Snapshot (memory)
//! ```
//!
//! sled is the durable truth; searches read an in-memory [`search::Snapshot`] loaded at open
//! and swapped whole after each successful ingest. The score of a [`Hit`] is calibrated
//! (see `search.rs`): the same 0..1 meaning in every [`RetrievalMode`].
//!
//! Tuned on the four public dev sets of `shared/data` with the built-in embedder (hit@1,
//! hybrid / vector / lexical): banking77 0.704 / 0.685 / 0.692, clinc150 in-scope
//! 0.798 / 0.766 / 0.798, bitext 0.881 / 0.860 / 0.886, stackfaq 0.776 / 0.672 / 0.653.
//! Parameters were chosen for the average over the four sets, not for any one of them.

use std::path::PathBuf;
use std::sync::{Arc, RwLock};

use crate::providers::{Embedder, TextRole};

pub mod analyze;
pub mod bm25;
pub mod eval;
pub mod faq;
pub mod index;
pub mod load;
pub mod markdown;
pub mod search;
pub mod vectors;

pub use eval::{eval_sources, SourceEval};
pub use load::Problem;
pub use search::{SearchParams, RECOMMENDED_MIN_SCORE};

/// How deep a search looks for the best section of a page the top hit refers to.
const REFERENCE_POOL: usize = 50;

use bm25::{term_counts, Bm25Params};
use index::{DocRecord, FileEntry, Manifest, NewDoc, Trees};
use search::{ChunkRecord, Snapshot};

/// Which signals rank the chunks. Scores mean the same in all three.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Deserialize, serde::Serialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum RetrievalMode {
    #[default]
    Hybrid,
    Vector,
    Lexical,
}

/// One retrieved chunk.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Hit {
    /// `policies/refund.md` or `faq/billing.jsonl#id`, relative to its knowledge root.
    pub source: String,
    /// Front-matter title / first heading / file name; for an FAQ entry its question.
    pub title: String,
    pub heading_path: Vec<String>,
    /// The first directory level under the root (`policies`); an FAQ `category` overrides it.
    pub category: String,
    /// Chunk body (FAQ: the answer).
    pub text: String,
    /// Calibrated 0..1: the estimated probability this hit answers the query.
    pub score: f32,
    /// An FAQ entry (answered whole) or a section of a page (answered by its sentences).
    pub kind: load::ChunkKind,
}

/// What an ingest did. `problems` are `path:line: reason` lines (or `path: reason`), warnings
/// included (an empty knowledge base, a model change): none of them failed the ingest.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct IngestReport {
    pub files_seen: usize,
    pub files_changed: usize,
    pub files_removed: usize,
    pub chunks: usize,
    pub problems: Vec<String>,
}

/// Texts per embedder call: small enough for any HTTP embedder's request limit.
const EMBED_BATCH: usize = 64;

/// The knowledge index. Cheap to share (`Arc<Knowledge>`); searches never wait on an ingest.
pub struct Knowledge {
    trees: Trees,
    embedder: Arc<dyn Embedder>,
    snapshot: RwLock<Arc<Snapshot>>,
    params: RwLock<SearchParams>,
    /// One ingest at a time.
    ingest_lock: tokio::sync::Mutex<()>,
}

impl Knowledge {
    /// Open the index in `db` and load the generation in force. If it was built with another
    /// embedding model or dimension, vectors are not loaded (searches are lexical) and the
    /// next ingest rebuilds everything.
    pub fn open(db: &sled::Db, embedder: Arc<dyn Embedder>) -> anyhow::Result<Self> {
        let trees = Trees::open(db)?;
        let manifest = trees.current()?;
        let snapshot = Self::load(&trees, &manifest, embedder.as_ref())?;
        Ok(Self {
            trees,
            embedder,
            snapshot: RwLock::new(Arc::new(snapshot)),
            params: RwLock::new(SearchParams::default()),
            ingest_lock: tokio::sync::Mutex::new(()),
        })
    }

    fn load(trees: &Trees, m: &Manifest, e: &dyn Embedder) -> anyhow::Result<Snapshot> {
        let matches = m.model == e.model() && m.dim == e.dim();
        if !matches && !m.files.is_empty() {
            tracing::warn!(
                indexed = %format!("{} ({})", m.model, m.dim),
                configured = %format!("{} ({})", e.model(), e.dim()),
                "knowledge index was built with another embedding model; lexical search only until the next ingest rebuilds it"
            );
        }
        trees.load(
            m,
            matches.then_some((e.dim(), e.dense_dims())),
            Bm25Params::default(),
        )
    }

    /// The embedding model the index is built with (`Embedder::model`).
    pub fn embedding_model(&self) -> &str {
        self.embedder.model()
    }

    pub fn chunk_count(&self) -> usize {
        self.snapshot().chunks.len()
    }

    fn snapshot(&self) -> Arc<Snapshot> {
        self.snapshot
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Replace the scoring knobs (tuning, benches). Defaults are the tuned values.
    pub fn set_params(&self, p: SearchParams) {
        *self.params.write().unwrap_or_else(|e| e.into_inner()) = p;
    }

    /// The file manifest the files under `roots` would produce, without loading them.
    fn scan(&self, roots: &[PathBuf], old: &Manifest) -> (Vec<Scanned>, Vec<String>) {
        let (model, dim) = (self.embedder.model(), self.embedder.dim());
        let mut out = Vec::new();
        let mut problems = Vec::new();
        for root in roots {
            let (found, walk_problems) = load::walk(root);
            problems.extend(walk_problems.iter().map(ToString::to_string));
            for f in found {
                let key = std::path::absolute(&f.path)
                    .unwrap_or_else(|_| f.path.clone())
                    .display()
                    .to_string();
                match std::fs::read(&f.path) {
                    Ok(bytes) => {
                        let sha256 = index::sha256_hex(&bytes);
                        let doc = index::doc_id(model, dim, &f.rel, &sha256);
                        out.push(Scanned {
                            key,
                            entry: FileEntry {
                                source: f.rel,
                                sha256,
                                doc,
                            },
                            bytes: Some(bytes),
                        });
                    }
                    Err(e) => {
                        problems.push(
                            Problem::new(
                                &f.rel,
                                0,
                                format!("cannot read: {e}; previous version kept"),
                            )
                            .to_string(),
                        );
                        // A transient read error must not drop the file from the index.
                        if let Some(prev) = old.files.get(&key) {
                            out.push(Scanned {
                                key,
                                entry: prev.clone(),
                                bytes: None,
                            });
                        }
                    }
                }
            }
        }
        (out, problems)
    }

    /// Would an ingest change anything? (files added, changed, removed, or another model)
    pub fn is_stale(&self, roots: &[PathBuf]) -> anyhow::Result<bool> {
        let old = self.trees.current()?;
        let (scanned, _) = self.scan(roots, &old);
        let new: std::collections::BTreeMap<_, _> =
            scanned.into_iter().map(|s| (s.key, s.entry)).collect();
        Ok(
            new != old.files
                || old.model != self.embedder.model()
                || old.dim != self.embedder.dim(),
        )
    }

    /// Bring the index in line with the files under `roots`: unchanged files are kept as they
    /// are, changed and new ones parsed and embedded, missing ones dropped. Crash-safe: until
    /// the final flip, the previous index keeps answering (see `index.rs`). An embedder
    /// failure aborts the ingest with the previous index intact.
    pub async fn ingest(&self, roots: &[PathBuf]) -> anyhow::Result<IngestReport> {
        let _one_at_a_time = self.ingest_lock.lock().await;
        let old = self.trees.current()?;
        let (model, dim) = (self.embedder.model().to_string(), self.embedder.dim());
        let mut report = IngestReport::default();
        if !old.files.is_empty() && (old.model != model || old.dim != dim) {
            report.problems.push(format!(
                "embedding model changed ({} {} → {model} {dim}): index rebuilt",
                old.model, old.dim
            ));
        }
        let (scanned, problems) = self.scan(roots, &old);
        report.problems.extend(problems);
        let mut manifest = Manifest {
            model: model.clone(),
            dim,
            files: Default::default(),
        };
        let mut pending = Vec::new();
        for s in scanned {
            report.files_seen += 1;
            let unchanged = old.files.get(&s.key).is_some_and(|p| p.doc == s.entry.doc);
            match (
                unchanged
                    .then(|| self.trees.doc(&s.entry.doc))
                    .transpose()?
                    .flatten(),
                s.bytes,
            ) {
                (Some(doc), _) => report
                    .problems
                    .extend(doc.problems.iter().map(ToString::to_string)),
                (None, Some(bytes)) => {
                    report.files_changed += 1;
                    let loaded = load::load_file(&s.entry.source, &bytes);
                    report
                        .problems
                        .extend(loaded.problems.iter().map(ToString::to_string));
                    pending.push((s.entry.clone(), loaded));
                }
                // Unreadable now and its record is gone: nothing to keep.
                (None, None) => continue,
            }
            manifest.files.insert(s.key, s.entry);
        }
        report.files_removed = old
            .files
            .keys()
            .filter(|k| !manifest.files.contains_key(*k))
            .count();

        for (entry, loaded) in pending {
            let doc = self.prepare(entry, loaded).await?;
            self.trees.write_doc(&doc)?;
        }
        if manifest != old {
            self.trees.commit(&manifest).await?;
        }
        self.trees.collect_garbage(&manifest)?;
        let snapshot = Self::load(&self.trees, &manifest, self.embedder.as_ref())?;
        report.chunks = snapshot.chunks.len();
        *self.snapshot.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(snapshot);
        if report.files_seen == 0 {
            let shown: Vec<_> = roots.iter().map(|r| r.display().to_string()).collect();
            report.problems.push(format!(
                "{}: no knowledge files (.md, .jsonl, .csv) found; the bot has nothing to answer from",
                shown.join(", ")
            ));
        } else if report.chunks == 0 {
            report
                .problems
                .push("knowledge files hold no usable chunks".to_string());
        }
        Ok(report)
    }

    /// Embed texts each in its role (one call per role), in the given order.
    async fn embed_roles(
        &self,
        texts: &[(TextRole, String)],
    ) -> Result<Vec<Vec<f32>>, crate::providers::ProviderError> {
        let mut out = vec![Vec::new(); texts.len()];
        for role in [TextRole::Query, TextRole::Passage] {
            let (at, group): (Vec<usize>, Vec<String>) = texts
                .iter()
                .enumerate()
                .filter(|(_, (r, _))| *r == role)
                .map(|(i, (_, t))| (i, t.clone()))
                .unzip();
            if group.is_empty() {
                continue;
            }
            let vecs = self.embedder.embed_as(&group, role).await?;
            if vecs.len() != group.len() {
                return Err(crate::providers::ProviderError::BadAnswer(format!(
                    "{} vectors for {} texts",
                    vecs.len(),
                    group.len()
                )));
            }
            for (i, v) in at.into_iter().zip(vecs) {
                out[i] = v;
            }
        }
        Ok(out)
    }

    /// Embed one loaded file's units and shape its records.
    async fn prepare(&self, entry: FileEntry, loaded: load::LoadedFile) -> anyhow::Result<NewDoc> {
        let dim = self.embedder.dim();
        let mut chunks = Vec::new();
        let mut texts = Vec::new();
        let mut postings = Vec::new();
        for c in &loaded.chunks {
            let units = search::unit_texts(c);
            postings.push(
                units
                    .iter()
                    .map(|(_, t)| term_counts(analyze::terms(t)))
                    .collect::<Vec<_>>(),
            );
            chunks.push(ChunkRecord {
                kind: c.kind,
                source: c.source.clone(),
                title: c.title.clone(),
                heading_path: c.heading_path.clone(),
                category: c.category.clone(),
                text: c.text.clone(),
                units: units.iter().map(|(k, _)| *k).collect(),
            });
            texts.extend(
                units
                    .into_iter()
                    .filter(|(k, _)| k.embedded(c.kind))
                    .map(|(k, t)| (search::unit_role(k), t)),
            );
        }
        let mut encoded = Vec::with_capacity(texts.len());
        for batch in texts.chunks(EMBED_BATCH) {
            let vecs = self
                .embed_roles(batch)
                .await
                .map_err(|e| anyhow::anyhow!("embedding {}: {e}", entry.source))?;
            if vecs.len() != batch.len() || vecs.iter().any(|v| v.len() != dim) {
                anyhow::bail!(
                    "embedding {}: the embedder returned {} vectors for {} texts, or not of dimension {dim}",
                    entry.source,
                    vecs.len(),
                    batch.len()
                );
            }
            encoded.extend(vecs.iter().map(|v| {
                let (codes, scale) = vectors::quantize(v);
                vectors::encode(&codes, scale)
            }));
        }
        let mut it = encoded.into_iter();
        let vectors = chunks
            .iter()
            .map(|c| {
                let n = c.units.iter().filter(|k| k.embedded(c.kind)).count();
                it.by_ref().take(n).collect()
            })
            .collect();
        Ok(NewDoc {
            record: DocRecord {
                source: entry.source,
                title: loaded.title,
                tags: loaded.tags,
                chunks: chunks.len() as u32,
                problems: loaded.problems,
            },
            id: entry.doc,
            chunks,
            vectors,
            postings,
        })
    }

    /// Top `top_k` chunks for `query`, best first, with calibrated scores. An embedder
    /// failure degrades to lexical search (logged) rather than failing the answer.
    pub async fn search(
        &self,
        query: &str,
        top_k: usize,
        mode: RetrievalMode,
    ) -> anyhow::Result<Vec<Hit>> {
        let params = self
            .params
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        self.search_with(query, top_k, mode, &params).await
    }

    /// [`Knowledge::search`] with explicit scoring knobs.
    pub async fn search_with(
        &self,
        query: &str,
        top_k: usize,
        mode: RetrievalMode,
        params: &SearchParams,
    ) -> anyhow::Result<Vec<Hit>> {
        let snap = self.snapshot();
        if snap.chunks.is_empty() || query.trim().is_empty() {
            return Ok(Vec::new());
        }
        let qvec = if mode == RetrievalMode::Lexical || snap.vectors.is_none() {
            None
        } else {
            match self
                .embedder
                .embed_as(&[query.to_string()], TextRole::Query)
                .await
            {
                // All zeros: the model cannot represent the query (see `Embedder`).
                Ok(mut v) if v.len() == 1 && v[0].iter().any(|x| *x != 0.0) => Some(v.remove(0)),
                Ok(_) => None,
                Err(e) => {
                    tracing::warn!(error = %e, "query embedding failed; lexical search only");
                    None
                }
            }
        };
        let qterms = analyze::terms(query);
        let lang = crate::text::Lang::of(query);
        let mut ranked = snap.rank(qvec.as_deref(), &qterms, lang, top_k, mode, params);
        // A hit that says where its answer is ("… is explained in Returns and refunds") brings
        // the section it points at along, right after it and as likely as it.
        if let Some((at, chunk)) = referent(&snap, &ranked, || {
            snap.rank(qvec.as_deref(), &qterms, lang, REFERENCE_POOL, mode, params)
        }) {
            ranked.retain(|r| r.chunk != chunk);
            let pointer = ranked[at];
            ranked.insert(at + 1, search::Ranked { chunk, ..pointer });
            ranked.truncate(top_k);
        }
        Ok(ranked
            .into_iter()
            .map(|r| {
                let c = &snap.chunks[r.chunk];
                Hit {
                    source: c.source.clone(),
                    title: c.title.clone(),
                    heading_path: c.heading_path.clone(),
                    category: c.category.clone(),
                    text: c.text.clone(),
                    score: r.score,
                    kind: c.kind,
                }
            })
            .collect())
    }

    /// What calibration sees of `query` besides similarities (tuning tools).
    pub fn query_shape(&self, query: &str) -> search::QueryShape {
        let params = self
            .params
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let terms = analyze::terms(query);
        let unknown = self.snapshot().unknown_share(&terms, &params.terms);
        search::QueryShape::of(&terms, unknown)
    }

    /// Per distinct query term: its weight class and what it meets in the unit index and in
    /// the sentence index ([`bm25::Bm25::explain`]); for `examples/why`.
    pub fn explain_terms(&self, query: &str) -> Vec<TermExplanation> {
        let weights = self.params.read().unwrap_or_else(|e| e.into_inner()).terms;
        let snap = self.snapshot();
        let mut terms = analyze::terms(query);
        terms.sort();
        terms.dedup();
        terms
            .into_iter()
            .map(|t| TermExplanation {
                weight: weights.of(&t),
                units: snap.bm25.explain(&t),
                sentences: snap.passages.explain(&t),
                term: t,
            })
            .collect()
    }

    /// Bytes of keys and values in the `kb_` trees (for size reports).
    pub fn payload_bytes(&self) -> u64 {
        self.trees.payload_bytes()
    }
}

/// See [`Knowledge::explain_terms`].
#[derive(Debug)]
pub struct TermExplanation {
    pub term: String,
    pub weight: f32,
    /// (indexed term, IDF, match factor, units holding it)
    pub units: Option<(String, f32, f32, usize)>,
    pub sentences: Option<(String, f32, f32, usize)>,
}

struct Scanned {
    key: String,
    entry: FileEntry,
    /// `None`: unreadable now, previous entry kept.
    bytes: Option<Vec<u8>>,
}

/// The first of `ranked` that refers the reader to another page by its title
/// ([`search::Snapshot::referred`]), and the chunk it points at: the page's section under the
/// same heading when it has one (a product page's "Teaware broken on arrival" → the returns
/// policy's "Teaware broken on arrival"), else the page's best section for the question in
/// `wide` (searched only then). None when there is no such hit or its target already follows
/// it.
fn referent(
    snap: &search::Snapshot,
    ranked: &[search::Ranked],
    wide: impl FnOnce() -> Vec<search::Ranked>,
) -> Option<(usize, usize)> {
    let (at, source) = ranked
        .iter()
        .enumerate()
        .find_map(|(i, r)| snap.referred(r.chunk).map(|s| (i, s)))?;
    let heading = |c: usize| snap.chunks[c].heading_path.last().map(|h| h.to_lowercase());
    let same_heading = heading(ranked[at].chunk).and_then(|h| {
        (0..snap.chunks.len())
            .find(|&c| snap.chunks[c].source == source && heading(c).as_ref() == Some(&h))
    });
    let target = match same_heading {
        Some(c) => c,
        None => {
            wide()
                .iter()
                .find(|r| snap.chunks[r.chunk].source == source)?
                .chunk
        }
    };
    let placed = ranked.iter().take(at + 2).any(|r| r.chunk == target);
    (!placed).then_some((at, target))
}
