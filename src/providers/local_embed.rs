//! `Embedder` running a BERT-family sentence-embedding model in-process on the CPU (the
//! forward pass in the `kefu-bert` crate), from a model directory the operator names. Built only
//! with the `local-embeddings` cargo feature, so the default binary stays lean.
//!
//! The directory is a sentence-transformers export as Hugging Face ships it, or as
//! `kefu model import` writes it: `config.json` (BERT / XLM-R config), `tokenizer.json`,
//! `model.safetensors`, and optionally `1_Pooling/config.json` (mean or CLS pooling; mean
//! when absent), `sentence_bert_config.json` (`max_seq_length`; 256 when absent) and
//! `config_sentence_transformers.json` (`prompts.query` / `prompts.passage`: the prefixes
//! a model such as multilingual-e5 was trained with). Nothing is downloaded: a missing file
//! is an error naming it.
//!
//! Traps, covered by tests against independent reference outputs:
//! - `tokenizer.json` may carry its own padding (all-MiniLM-L6-v2 pads every text to 128
//!   tokens) and a shorter truncation than the model was trained with. Both are replaced:
//!   no padding at all (a batch runs end to end, see `kefu_bert::Bert`), truncation at `max_seq_length`.
//! - Vectors are L2-normalized whatever `modules.json` says: the index compares by cosine.
//! - Prefixes: e5 expects `query: ` before questions and `passage: ` before documents;
//!   without them its cosines are flatter. `embed_as` applies them by [`TextRole`].
//!
//! A text the vocabulary cannot spell (more than half its word pieces unknown, as Chinese
//! is for the English MiniLM) gets an all-zero vector: the model would map every such text
//! to nearly the same point, so "怎么开发票" would look close to any Chinese chunk. Zero
//! tells the search to rank the query on words alone (see `Embedder`).
//!
//! Texts are embedded on the blocking pool; the forward pass spreads over the CPU cores.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use async_trait::async_trait;
use sha2::{Digest, Sha256};
use tokenizers::{Encoding, TruncationParams};

use super::unigram::LocalTokenizer;
use super::{mean_pairwise_cosine, Embedder, ProviderError, SimilarityProfile, TextRole, PROBES};
use kefu_bert::{Bert, BertConfig};

/// Used when the directory has no `sentence_bert_config.json` (sentence-transformers' own default).
const DEFAULT_MAX_SEQ_LEN: usize = 256;
/// Tokens per forward pass at most (bounds the activations: ~25 MB for a 384-wide model).
const MAX_BATCH_TOKENS: usize = 4096;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Pooling {
    Mean,
    Cls,
}

/// The prefix put before a text of each role (operator's config, else the directory's).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Prefixes {
    pub query: Option<String>,
    pub passage: Option<String>,
}

struct Model {
    bert: Bert,
    tokenizer: LocalTokenizer,
    pooling: Pooling,
    /// The unknown-word piece (`[UNK]`, `<unk>`), when the vocabulary has one.
    unk_id: Option<u32>,
    query_prefix: String,
    passage_prefix: String,
}

/// A sentence-embedding model loaded from a directory; cheap to clone and share.
#[derive(Clone)]
pub struct LocalEmbedder {
    model: Arc<Model>,
    name: String,
    dim: usize,
    batch_size: usize,
    profile: SimilarityProfile,
}

impl std::fmt::Debug for LocalEmbedder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalEmbedder")
            .field("name", &self.name)
            .field("dim", &self.dim)
            .finish()
    }
}

fn missing(path: &Path) -> String {
    format!(
        "providers.embedding.model_dir: cannot read {} (a sentence-transformers model directory needs config.json, tokenizer.json and model.safetensors)",
        path.display()
    )
}

fn read(dir: &Path, file: &str) -> anyhow::Result<Vec<u8>> {
    let path = dir.join(file);
    std::fs::read(&path).with_context(|| missing(&path))
}

fn optional_json(dir: &Path, file: &str) -> anyhow::Result<Option<serde_json::Value>> {
    let path = dir.join(file);
    if !path.exists() {
        return Ok(None);
    }
    let bytes = read(dir, file)?;
    let v = serde_json::from_slice(&bytes)
        .with_context(|| format!("{}: not valid JSON", path.display()))?;
    Ok(Some(v))
}

fn pooling(dir: &Path) -> anyhow::Result<Pooling> {
    let Some(cfg) = optional_json(dir, "1_Pooling/config.json")? else {
        return Ok(Pooling::Mean);
    };
    let on = |k: &str| cfg.get(k).and_then(|v| v.as_bool()).unwrap_or(false);
    match (on("pooling_mode_mean_tokens"), on("pooling_mode_cls_token")) {
        (true, false) => Ok(Pooling::Mean),
        (false, true) => Ok(Pooling::Cls),
        _ => anyhow::bail!(
            "{}: only mean or CLS pooling (exactly one) is supported",
            dir.join("1_Pooling/config.json").display()
        ),
    }
}

/// The prompts the directory names (sentence-transformers' `config_sentence_transformers.json`).
fn directory_prefixes(dir: &Path) -> anyhow::Result<(String, String)> {
    let cfg = optional_json(dir, "config_sentence_transformers.json")?;
    let prompt = |role: &str| {
        cfg.as_ref()
            .and_then(|c| c.get("prompts"))
            .and_then(|p| p.get(role))
            .and_then(|v| v.as_str())
            .unwrap_or_default()
            .to_string()
    };
    Ok((prompt("query"), prompt("passage")))
}

/// sha256 of a file, streamed.
fn file_digest(path: &Path) -> anyhow::Result<String> {
    let mut f = std::fs::File::open(path).with_context(|| missing(path))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(hex::encode(h.finalize()))
}

impl LocalEmbedder {
    /// Load the model in `dir`. At most `batch_size` texts go through the model at a time.
    pub fn open(dir: &Path, batch_size: usize, prefixes: &Prefixes) -> anyhow::Result<Self> {
        let config_path = dir.join("config.json");
        let config: BertConfig =
            serde_json::from_slice(&read(dir, "config.json")?).with_context(|| {
                format!(
                    "{}: not a BERT config this build can run",
                    config_path.display()
                )
            })?;
        config
            .check()
            .map_err(|e| anyhow::anyhow!("{}: {e}", config_path.display()))?;
        let max_seq_len = optional_json(dir, "sentence_bert_config.json")?
            .and_then(|v| v.get("max_seq_length").and_then(|n| n.as_u64()))
            .map_or(DEFAULT_MAX_SEQ_LEN, |n| n as usize)
            .min(config.max_tokens());

        let tokenizer_path = dir.join("tokenizer.json");
        let tokenizer_bytes = read(dir, "tokenizer.json")?;
        let mut tokenizer: LocalTokenizer = serde_json::from_slice(&tokenizer_bytes)
            .map_err(|e| anyhow::anyhow!("{}: {e}", tokenizer_path.display()))?;
        drop(tokenizer_bytes);
        tokenizer.with_padding(None);
        tokenizer
            .with_truncation(Some(TruncationParams {
                max_length: max_seq_len,
                ..Default::default()
            }))
            .map_err(|e| anyhow::anyhow!("{}: {e}", tokenizer_path.display()))?;
        let unk_id = ["[UNK]", "<unk>"]
            .iter()
            .find_map(|t| tokenizer.token_to_id(t));

        let weights = dir.join("model.safetensors");
        // The name the index records: a different file is a different model even when the
        // directory keeps its name, so a swapped model forces a re-ingest.
        let digest = file_digest(&weights)?;
        let bert = Bert::load(config.clone(), &weights)
            .map_err(|e| anyhow::anyhow!("{}: {e:#}", dir.display()))?;
        let (dir_query, dir_passage) = directory_prefixes(dir)?;
        let query_prefix = prefixes.query.clone().unwrap_or(dir_query);
        let passage_prefix = prefixes.passage.clone().unwrap_or(dir_passage);
        let dir_name = dir
            .canonicalize()
            .unwrap_or_else(|_| PathBuf::from(dir))
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "model".into());
        let mut name = format!("local:{dir_name}@{}", &digest[..12]);
        // Stored vectors carry the prefixes too: changing one re-embeds the knowledge.
        if !(query_prefix.is_empty() && passage_prefix.is_empty()) {
            let h = Sha256::digest(format!("{query_prefix}\u{0}{passage_prefix}"));
            name.push_str(&format!("~{}", &hex::encode(h)[..8]));
        }
        let model = Model {
            bert,
            tokenizer,
            pooling: pooling(dir)?,
            unk_id,
            query_prefix,
            passage_prefix,
        };
        let mut embedder = LocalEmbedder {
            model: Arc::new(model),
            name,
            dim: config.hidden_size,
            batch_size: batch_size.max(1),
            profile: SimilarityProfile {
                multilingual: false,
                background: [0.0; 2],
            },
        };
        let mut multilingual = true;
        let mut background = [0.0; 2];
        for (lang, probes) in PROBES.iter().enumerate() {
            let probes: Vec<String> = probes.iter().map(|p| p.to_string()).collect();
            let vectors = embedder
                .embed_now(&probes, Some(TextRole::Query))
                .map_err(|e| {
                    anyhow::anyhow!(
                        "{}: the model fails on a probe sentence: {e}",
                        dir.display()
                    )
                })?;
            multilingual &= vectors.iter().all(|v| v.iter().any(|x| *x != 0.0));
            background[lang] = mean_pairwise_cosine(&vectors);
        }
        embedder.profile = SimilarityProfile {
            multilingual,
            background,
        };
        Ok(embedder)
    }

    /// How this model's similarities behave (measured on [`PROBES`] at load).
    pub fn profile(&self) -> SimilarityProfile {
        self.profile
    }

    /// The prefixes in use (query, passage).
    pub fn prefixes(&self) -> (&str, &str) {
        (&self.model.query_prefix, &self.model.passage_prefix)
    }

    /// Bytes of model weights held in memory.
    pub fn weight_bytes(&self) -> usize {
        self.model.bert.weight_bytes()
    }

    /// The token ids of `text` as the model sees it in `role` (prefix and special tokens
    /// included); `None` = no prefix.
    pub fn token_ids(&self, text: &str, role: Option<TextRole>) -> Result<Vec<u32>, ProviderError> {
        let text = format!("{}{text}", self.model.prefix(role));
        let e = self
            .model
            .tokenizer
            .encode(text.as_str(), true)
            .map_err(|e| ProviderError::Unavailable(format!("local model: {e}")))?;
        Ok(e.get_ids().to_vec())
    }

    /// Embed on the calling thread (the async `embed` moves this to the blocking pool).
    /// `role` picks the prefix; `None` embeds the texts as they are.
    pub fn embed_now(
        &self,
        texts: &[String],
        role: Option<TextRole>,
    ) -> Result<Vec<Vec<f32>>, ProviderError> {
        let bad =
            |e: &dyn std::fmt::Display| ProviderError::Unavailable(format!("local model: {e}"));
        let m = &self.model;
        let prefix = m.prefix(role);
        let prefix_len = if prefix.is_empty() {
            0
        } else {
            m.tokenizer
                .encode(prefix, false)
                .map_err(|e| bad(&e))?
                .len()
        };
        let mut encodings = Vec::with_capacity(texts.len());
        for t in texts {
            let input = format!("{prefix}{t}");
            encodings.push(
                m.tokenizer
                    .encode(input.as_str(), true)
                    .map_err(|e| bad(&e))?,
            );
        }
        // Texts the vocabulary cannot spell get zeros; the rest go through the model.
        let mut out = vec![vec![0.0; self.dim]; texts.len()];
        let spelled: Vec<usize> = (0..texts.len())
            .filter(|&i| m.spells(&encodings[i], prefix_len))
            .collect();
        let mut from = 0;
        while from < spelled.len() {
            let mut to = from;
            let mut tokens = 0;
            while to < spelled.len()
                && to - from < self.batch_size
                && (to == from || tokens + encodings[spelled[to]].len() <= MAX_BATCH_TOKENS)
            {
                tokens += encodings[spelled[to]].len();
                to += 1;
            }
            let batch = &spelled[from..to];
            let ids: Vec<&[u32]> = batch.iter().map(|&i| encodings[i].get_ids()).collect();
            let vectors = m.embed_ids(&ids).map_err(|e| bad(&e))?;
            for (&i, v) in batch.iter().zip(vectors) {
                out[i] = v;
            }
            from = to;
        }
        Ok(out)
    }
}

impl Model {
    fn prefix(&self, role: Option<TextRole>) -> &str {
        match role {
            None => "",
            Some(TextRole::Query) => &self.query_prefix,
            Some(TextRole::Passage) => &self.passage_prefix,
        }
    }

    /// At most half of the text's word pieces (after the prefix's) are unknown.
    fn spells(&self, e: &Encoding, prefix_len: usize) -> bool {
        let (mut words, mut unknown) = (0usize, 0usize);
        let pieces = e
            .get_ids()
            .iter()
            .zip(e.get_special_tokens_mask())
            .filter(|(_, special)| **special == 0)
            .skip(prefix_len);
        for (id, _) in pieces {
            words += 1;
            unknown += usize::from(Some(*id) == self.unk_id);
        }
        unknown * 2 <= words
    }

    /// Token id sequences → one pooled, L2-normalized vector each.
    fn embed_ids(&self, seqs: &[&[u32]]) -> anyhow::Result<Vec<Vec<f32>>> {
        let h = self.bert.config.hidden_size;
        let hidden = self.bert.forward(seqs)?;
        let mut out = Vec::with_capacity(seqs.len());
        let mut start = 0;
        for s in seqs {
            let rows = &hidden[start * h..(start + s.len()) * h];
            start += s.len();
            let mut v = match self.pooling {
                Pooling::Cls => rows[..h].to_vec(),
                Pooling::Mean => {
                    let mut sum = vec![0.0f32; h];
                    for row in rows.chunks_exact(h) {
                        for (a, b) in sum.iter_mut().zip(row) {
                            *a += b;
                        }
                    }
                    let n = s.len().max(1) as f32;
                    sum.iter_mut().for_each(|x| *x /= n);
                    sum
                }
            };
            let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt().max(1e-12);
            v.iter_mut().for_each(|x| *x /= norm);
            out.push(v);
        }
        Ok(out)
    }
}

#[async_trait]
impl Embedder for LocalEmbedder {
    fn model(&self) -> &str {
        &self.name
    }

    fn dim(&self) -> usize {
        self.dim
    }

    async fn embed(&self, texts: &[String]) -> Result<Vec<Vec<f32>>, ProviderError> {
        self.embed_role(texts, None).await
    }

    async fn embed_as(
        &self,
        texts: &[String],
        role: TextRole,
    ) -> Result<Vec<Vec<f32>>, ProviderError> {
        self.embed_role(texts, Some(role)).await
    }
}

impl LocalEmbedder {
    async fn embed_role(
        &self,
        texts: &[String],
        role: Option<TextRole>,
    ) -> Result<Vec<Vec<f32>>, ProviderError> {
        let this = self.clone();
        let texts = texts.to_vec();
        tokio::task::spawn_blocking(move || this.embed_now(&texts, role))
            .await
            .map_err(|e| ProviderError::Unavailable(format!("local model: {e}")))?
    }
}
