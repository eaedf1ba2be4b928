//! The durable index on sled, and the generation flip that makes ingest crash-safe.
//!
//! Trees (all prefixed `kb_`, the database is shared with the rest of the app):
//!
//! | tree | key | value |
//! | --- | --- | --- |
//! | `kb_meta` | `generation` | u64 BE: the manifest in force |
//! | `kb_manifest` | generation (u64 BE) | JSON [`Manifest`]: model, dim, every file's sha256 and document id |
//! | `kb_documents` | document id (32 bytes) | JSON [`DocRecord`]: source, title, tags, chunk count, problems |
//! | `kb_chunks` | doc id + chunk no (u32 BE) | JSON [`ChunkRecord`] |
//! | `kb_vectors` | chunk key + unit no (u16 BE) | f32 LE scale + i8 codes (see vectors.rs) |
//! | `kb_postings` | chunk key | JSON per unit `[(term, tf)]`: the BM25 forward index |
//!
//! A document id is `sha256(model, dim, source, file sha256)`: content-addressed, so a new
//! ingest only *adds* keys and never overwrites what the generation in force reads. Ingest
//! writes the new documents, then the new manifest under `generation + 1`, flushes, and only
//! then flips `kb_meta/generation` (one key: atomic) and flushes again. An ingest that dies
//! before the flip leaves the old generation answering; its orphans are collected by the next
//! successful ingest. The inverted BM25 lists are rebuilt in memory at open from the stored
//! per-chunk term counts (no tokenizing at open).

use std::borrow::Cow;
use std::collections::{BTreeMap, HashSet};

use anyhow::Context;
use sha2::{Digest, Sha256};

use super::bm25::{Bm25Builder, Bm25Params};
use super::load::{ChunkKind, Problem};
use super::search::{ChunkRecord, PageTitles, Snapshot, UnitKind};
use super::vectors::{self, Matrix};

const GENERATION: &[u8] = b"generation";

/// Every file the index holds, for one generation.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Manifest {
    pub model: String,
    pub dim: usize,
    /// Keyed by the file's absolute path.
    pub files: BTreeMap<String, FileEntry>,
}

#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct FileEntry {
    pub source: String,
    pub sha256: String,
    pub doc: String,
}

#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct DocRecord {
    pub source: String,
    pub title: String,
    pub tags: Vec<String>,
    pub chunks: u32,
    /// Reported again on every ingest while the file is unchanged.
    pub problems: Vec<Problem>,
}

/// A document ready to be written: its chunks, per chunk its unit vectors (encoded) and
/// per-unit term counts.
pub struct NewDoc {
    pub id: String,
    pub record: DocRecord,
    pub chunks: Vec<ChunkRecord>,
    pub vectors: Vec<Vec<Vec<u8>>>,
    pub postings: Vec<Vec<Vec<(String, u32)>>>,
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Version of what ingest derives from a file besides its vectors (chunking, units, the
/// analyzer's terms). Part of the document id, so changing them re-ingests every file even
/// when the embedding model stays the same.
pub const ANALYSIS_VERSION: &str = "analysis-9";

pub fn doc_id(model: &str, dim: usize, source: &str, sha256: &str) -> String {
    let mut h = Sha256::new();
    for part in [ANALYSIS_VERSION, model, &dim.to_string(), source, sha256] {
        h.update(part.as_bytes());
        h.update([0]);
    }
    hex::encode(h.finalize())
}

pub struct Trees {
    meta: sled::Tree,
    manifest: sled::Tree,
    documents: sled::Tree,
    chunks: sled::Tree,
    vectors: sled::Tree,
    postings: sled::Tree,
}

fn chunk_key(doc: &[u8], n: u32) -> Vec<u8> {
    let mut k = doc.to_vec();
    k.extend_from_slice(&n.to_be_bytes());
    k
}

fn doc_key(id: &str) -> anyhow::Result<Vec<u8>> {
    hex::decode(id).context("bad document id in manifest")
}

impl Trees {
    pub fn open(db: &sled::Db) -> anyhow::Result<Self> {
        let t = |name: &str| {
            db.open_tree(name)
                .with_context(|| format!("opening sled tree {name}"))
        };
        Ok(Self {
            meta: t("kb_meta")?,
            manifest: t("kb_manifest")?,
            documents: t("kb_documents")?,
            chunks: t("kb_chunks")?,
            vectors: t("kb_vectors")?,
            postings: t("kb_postings")?,
        })
    }

    pub fn generation(&self) -> anyhow::Result<u64> {
        Ok(match self.meta.get(GENERATION)? {
            Some(v) => u64::from_be_bytes(v.as_ref().try_into().context("bad kb_meta/generation")?),
            None => 0,
        })
    }

    /// The manifest in force (empty before the first ingest).
    pub fn current(&self) -> anyhow::Result<Manifest> {
        let generation = self.generation()?;
        match self.manifest.get(generation.to_be_bytes())? {
            Some(v) => serde_json::from_slice(&v).context("bad manifest"),
            None => Ok(Manifest::default()),
        }
    }

    pub fn doc(&self, id: &str) -> anyhow::Result<Option<DocRecord>> {
        match self.documents.get(doc_key(id)?)? {
            Some(v) => Ok(Some(
                serde_json::from_slice(&v).context("bad document record")?,
            )),
            None => Ok(None),
        }
    }

    /// Write a new document's records. Its keys are new (content-addressed): the
    /// generation in force is not affected.
    pub fn write_doc(&self, d: &NewDoc) -> anyhow::Result<()> {
        let key = doc_key(&d.id)?;
        // In batches of a few hundred chunks: one sled batch for a 10k-entry FAQ file held
        // its whole payload in sled's write buffers at once (ingest peaked near 1 GB).
        const CHUNKS_PER_BATCH: usize = 256;
        for start in (0..d.chunks.len()).step_by(CHUNKS_PER_BATCH) {
            let (mut chunks, mut vecs, mut posts) = (
                sled::Batch::default(),
                sled::Batch::default(),
                sled::Batch::default(),
            );
            for n in start..(start + CHUNKS_PER_BATCH).min(d.chunks.len()) {
                let ck = chunk_key(&key, n as u32);
                chunks.insert(ck.clone(), serde_json::to_vec(&d.chunks[n])?);
                for (u, v) in d.vectors[n].iter().enumerate() {
                    let mut vk = ck.clone();
                    vk.extend_from_slice(&(u as u16).to_be_bytes());
                    vecs.insert(vk, v.as_slice());
                }
                posts.insert(ck, serde_json::to_vec(&d.postings[n])?);
            }
            self.chunks.apply_batch(chunks)?;
            self.vectors.apply_batch(vecs)?;
            self.postings.apply_batch(posts)?;
        }
        // The document record last: its presence says the document is complete.
        self.documents.insert(key, serde_json::to_vec(&d.record)?)?;
        Ok(())
    }

    /// Make `m` the manifest in force: write it under the next generation, flush, flip.
    pub async fn commit(&self, m: &Manifest) -> anyhow::Result<u64> {
        let next = self.generation()? + 1;
        self.manifest
            .insert(next.to_be_bytes(), serde_json::to_vec(m)?)?;
        self.flush().await?;
        self.meta.insert(GENERATION, &next.to_be_bytes())?;
        self.flush().await?;
        Ok(next)
    }

    async fn flush(&self) -> anyhow::Result<()> {
        for t in [
            &self.chunks,
            &self.vectors,
            &self.postings,
            &self.documents,
            &self.manifest,
            &self.meta,
        ] {
            t.flush_async().await?;
        }
        Ok(())
    }

    /// Drop old manifests and every document the manifest in force does not name.
    pub fn collect_garbage(&self, m: &Manifest) -> anyhow::Result<usize> {
        let generation = self.generation()?.to_be_bytes();
        for k in self.manifest.iter().keys() {
            let k = k?;
            if k.as_ref() != generation {
                self.manifest.remove(k)?;
            }
        }
        let live: HashSet<Vec<u8>> = m
            .files
            .values()
            .filter_map(|f| hex::decode(&f.doc).ok())
            .collect();
        let mut removed = 0;
        // Documents, and orphans of interrupted ingests that never got their record.
        for tree in [&self.documents, &self.chunks, &self.vectors, &self.postings] {
            for k in tree.iter().keys() {
                let k = k?;
                if k.len() >= 32 && !live.contains(&k[..32]) {
                    tree.remove(&k)?;
                    removed += 1;
                }
            }
        }
        Ok(removed)
    }

    /// Build the in-memory snapshot of `m`. Vectors are loaded only if `vectors` is given
    /// (the embedder matches the manifest's model and dimension): their dimension and how
    /// many trailing ones every vector fills ([`crate::providers::Embedder::dense_dims`]).
    pub fn load(
        &self,
        m: &Manifest,
        vectors: Option<(usize, usize)>,
        bm25: Bm25Params,
    ) -> anyhow::Result<Snapshot> {
        let mut snap = Snapshot::default();
        let mut matrix = vectors.map(|(dim, tail)| Matrix::with_dense_tail(dim, tail));
        let mut unit_terms = Bm25Builder::default();
        let mut passage_terms = Bm25Builder::default();
        let mut seen = HashSet::new();
        for f in m.files.values() {
            // The same file reachable twice (overlapping roots) is indexed once.
            if !seen.insert(f.doc.clone()) {
                continue;
            }
            let key = doc_key(&f.doc)?;
            let Some(doc) = self.doc(&f.doc)? else {
                anyhow::bail!("index is missing document {} ({})", f.doc, f.source);
            };
            for n in 0..doc.chunks {
                let ck = chunk_key(&key, n);
                let rec: ChunkRecord = serde_json::from_slice(
                    &self
                        .chunks
                        .get(&ck)?
                        .with_context(|| format!("missing chunk {n} of {}", f.source))?,
                )?;
                let stored = self
                    .postings
                    .get(&ck)?
                    .with_context(|| format!("missing postings of {}", f.source))?;
                // Borrowed from the stored bytes where the JSON allows it.
                let terms: Vec<Vec<(Cow<'_, str>, u32)>> = serde_json::from_slice(&stored)?;
                if terms.len() != rec.units.len() {
                    anyhow::bail!("postings of {} do not match its units", f.source);
                }
                let c = snap.chunks.len() as u32;
                // Vectors are stored for the embedded units only, numbered among them.
                let mut row = 0u16;
                for (kind, terms) in rec.units.iter().zip(terms) {
                    let terms = terms.iter().map(|(t, tf)| (t.as_ref(), *tf));
                    if *kind == UnitKind::Sentence {
                        snap.passage_chunk.push(c);
                        passage_terms.add_unit(terms);
                        continue;
                    }
                    // Numbered among the embedded units; the rest are searched by words.
                    if kind.embedded(rec.kind) {
                        if let Some(matrix) = matrix.as_mut() {
                            let mut vk = ck.clone();
                            vk.extend_from_slice(&row.to_be_bytes());
                            let bytes = self
                                .vectors
                                .get(&vk)?
                                .with_context(|| format!("missing vector of {}", f.source))?;
                            let (codes, scale) = vectors::decode(&bytes, matrix.dim())
                                .with_context(|| {
                                    format!("vector of {} has the wrong size", f.source)
                                })?;
                            matrix.push(codes, scale);
                            snap.vector_unit.push(snap.unit_chunk.len() as u32);
                        }
                        row += 1;
                    }
                    snap.unit_chunk.push(c);
                    snap.unit_kind.push(*kind);
                    snap.unit_faq.push(rec.kind == ChunkKind::Faq);
                    unit_terms.add_unit(terms);
                }
                snap.chunk_lang.push(crate::text::Lang::of(&rec.text));
                snap.chunks.push(rec);
            }
        }
        snap.passages = passage_terms.finish(bm25.clone());
        snap.bm25 = unit_terms.finish(bm25);
        snap.vectors = matrix.map(|mut m| {
            m.shrink_to_fit();
            m
        });
        snap.titles = PageTitles::of(&snap.chunks);
        Ok(snap)
    }

    /// Bytes used by the kb_ trees' keys and values (sled's own overhead excluded).
    pub fn payload_bytes(&self) -> u64 {
        [
            &self.meta,
            &self.manifest,
            &self.documents,
            &self.chunks,
            &self.vectors,
            &self.postings,
        ]
        .iter()
        .flat_map(|t| t.iter().flatten())
        .map(|(k, v)| (k.len() + v.len()) as u64)
        .sum()
    }
}
