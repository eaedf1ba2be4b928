//! `Embedder` running a BERT-family sentence-embedding model in-process on the CPU (candle),
//! from a model directory the operator names. Built only with the `local-embeddings` cargo
//! feature, so the default binary stays lean.
//!
//! The directory is a sentence-transformers export as Hugging Face ships it:
//! `config.json` (BERT config), `tokenizer.json`, `model.safetensors`, and optionally
//! `1_Pooling/config.json` (mean or CLS pooling; mean when absent) and
//! `sentence_bert_config.json` (`max_seq_length`; 256 when absent). Nothing is downloaded:
//! a missing file is an error naming it.
//!
//! Two traps, both covered by tests against an independent numpy forward pass:
//! - `tokenizer.json` may carry its own padding (all-MiniLM-L6-v2 pads every text to 128
//!   tokens) and a shorter truncation than the model was trained with. Both are replaced:
//!   no padding from the tokenizer (batches are padded here, and pooling honours the mask),
//!   truncation at `max_seq_length`.
//! - Vectors are L2-normalized whatever `modules.json` says: the index compares by cosine.
//!
//! A text the vocabulary cannot spell (more than half its word pieces `[UNK]`, as Chinese is
//! for the English MiniLM) gets an all-zero vector: the model would map every such text to
//! nearly the same point, so "怎么开发票" would look close to any Chinese chunk. Zero
//! tells the search to rank the query on words alone (see `Embedder`).
//!
//! Texts are embedded on the blocking pool (a batch is tens of milliseconds of matrix work),
//! sorted by length within a call so each padded batch wastes little.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use async_trait::async_trait;
use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use candle_transformers::models::bert::{BertModel, Config as BertConfig};
use sha2::{Digest, Sha256};
use tokenizers::{Encoding, Tokenizer, TruncationParams};

use super::{Embedder, ProviderError};

/// Used when the directory has no `sentence_bert_config.json` (sentence-transformers' own default).
const DEFAULT_MAX_SEQ_LEN: usize = 256;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Pooling {
    Mean,
    Cls,
}

struct Model {
    bert: BertModel,
    tokenizer: Tokenizer,
    pooling: Pooling,
    pad_id: u32,
    /// `[UNK]`, when the vocabulary has one.
    unk_id: Option<u32>,
    device: Device,
}

/// A sentence-embedding model loaded from a directory; cheap to clone and share.
#[derive(Clone)]
pub struct LocalEmbedder {
    model: Arc<Model>,
    name: String,
    dim: usize,
    batch_size: usize,
}

impl std::fmt::Debug for LocalEmbedder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalEmbedder")
            .field("name", &self.name)
            .field("dim", &self.dim)
            .finish()
    }
}

fn read(dir: &Path, file: &str) -> anyhow::Result<Vec<u8>> {
    let path = dir.join(file);
    std::fs::read(&path).with_context(|| {
        format!(
            "providers.embedding.model_dir: cannot read {} (a sentence-transformers model directory needs config.json, tokenizer.json and model.safetensors)",
            path.display()
        )
    })
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

impl LocalEmbedder {
    /// Load the model in `dir`. `batch_size` texts go through the model at a time.
    pub fn open(dir: &Path, batch_size: usize) -> anyhow::Result<Self> {
        let config_bytes = read(dir, "config.json")?;
        let config: BertConfig = serde_json::from_slice(&config_bytes).with_context(|| {
            format!(
                "{}: not a BERT config this build can run",
                dir.join("config.json").display()
            )
        })?;
        // RoBERTa-family models (XLM-R multilingual ones among them) load into the same
        // shapes but count positions from another offset: their vectors would be quietly
        // wrong, so only BERT itself is accepted.
        if let Some(other) = config.model_type.as_deref().filter(|t| *t != "bert") {
            anyhow::bail!(
                "{}: model_type \"{other}\" is not supported; kind = \"local\" runs BERT models (all-MiniLM-L6-v2, bge-small-zh-v1.5, text2vec-base-chinese, …)",
                dir.join("config.json").display()
            );
        }
        let max_seq_len = optional_json(dir, "sentence_bert_config.json")?
            .and_then(|v| v.get("max_seq_length").and_then(|n| n.as_u64()))
            .map_or(DEFAULT_MAX_SEQ_LEN, |n| n as usize)
            .min(config.max_position_embeddings);

        let tokenizer_path = dir.join("tokenizer.json");
        let tokenizer_bytes = read(dir, "tokenizer.json")?;
        let mut tokenizer = Tokenizer::from_bytes(&tokenizer_bytes)
            .map_err(|e| anyhow::anyhow!("{}: {e}", tokenizer_path.display()))?;
        tokenizer.with_padding(None);
        tokenizer
            .with_truncation(Some(TruncationParams {
                max_length: max_seq_len,
                ..Default::default()
            }))
            .map_err(|e| anyhow::anyhow!("{}: {e}", tokenizer_path.display()))?;
        let pad_id = tokenizer
            .token_to_id("[PAD]")
            .or(config.pad_token_id.try_into().ok())
            .unwrap_or(0);

        let weights = read(dir, "model.safetensors")?;
        // The name the index records: a different file is a different model even when the
        // directory keeps its name, so a swapped model forces a re-ingest.
        let digest = hex::encode(&Sha256::digest(&weights)[..6]);
        let dir_name = dir
            .canonicalize()
            .unwrap_or_else(|_| PathBuf::from(dir))
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "model".into());
        let device = Device::Cpu;
        let vb = VarBuilder::from_buffered_safetensors(weights, DType::F32, &device)
            .with_context(|| format!("{}: not readable safetensors", dir.display()))?;
        let bert = BertModel::load(vb, &config).with_context(|| {
            format!(
                "{}: the weights do not fit a BERT model (is this a BERT-family model?)",
                dir.join("model.safetensors").display()
            )
        })?;
        let model = Model {
            bert,
            unk_id: tokenizer.token_to_id("[UNK]"),
            tokenizer,
            pooling: pooling(dir)?,
            pad_id,
            device,
        };
        Ok(LocalEmbedder {
            model: Arc::new(model),
            name: format!("local:{dir_name}@{digest}"),
            dim: config.hidden_size,
            batch_size: batch_size.max(1),
        })
    }

    /// Embed on the calling thread (the async `embed` moves this to the blocking pool).
    pub fn embed_now(&self, texts: &[String]) -> Result<Vec<Vec<f32>>, ProviderError> {
        let bad =
            |e: &dyn std::fmt::Display| ProviderError::Unavailable(format!("local model: {e}"));
        let mut encodings = Vec::with_capacity(texts.len());
        for t in texts {
            encodings.push(
                self.model
                    .tokenizer
                    .encode(t.as_str(), true)
                    .map_err(|e| bad(&e))?,
            );
        }
        // Texts the vocabulary cannot spell get zeros; the rest go through the model.
        let mut out = vec![vec![0.0; self.dim]; texts.len()];
        let spelled: Vec<usize> = (0..texts.len())
            .filter(|&i| self.model.spells(&encodings[i]))
            .collect();
        let lengths: Vec<usize> = spelled.iter().map(|&i| encodings[i].len()).collect();
        for batch in length_buckets(&lengths, self.batch_size) {
            let batch: Vec<usize> = batch.into_iter().map(|b| spelled[b]).collect();
            let ids: Vec<&[u32]> = batch.iter().map(|&i| encodings[i].get_ids()).collect();
            let vectors = self.model.forward(&ids).map_err(|e| bad(&e))?;
            for (&i, v) in batch.iter().zip(vectors) {
                out[i] = v;
            }
        }
        Ok(out)
    }
}

/// Indexes of the sequences grouped into batches of similar length (shortest first), at most
/// `max` a batch. A batch is padded to its longest sequence and the model's cost is per
/// padded token, so one 150-token text in a batch of 12-token questions would make the
/// batch cost ten times its worth (seen on FAQ files: each entry's pooled alternates).
fn length_buckets(lengths: &[usize], max: usize) -> Vec<Vec<usize>> {
    let mut order: Vec<usize> = (0..lengths.len()).collect();
    order.sort_by_key(|&i| lengths[i]);
    let mut batches: Vec<Vec<usize>> = Vec::new();
    for i in order {
        match batches.last_mut() {
            // Up to a quarter (plus a few tokens) longer than the batch's shortest.
            Some(b) if b.len() < max && lengths[i] <= lengths[b[0]] * 5 / 4 + 4 => b.push(i),
            _ => batches.push(vec![i]),
        }
    }
    batches
}

impl Model {
    /// At most half of the text's word pieces are `[UNK]`.
    fn spells(&self, e: &Encoding) -> bool {
        let (mut words, mut unknown) = (0usize, 0usize);
        for (id, special) in e.get_ids().iter().zip(e.get_special_tokens_mask()) {
            if *special == 0 {
                words += 1;
                unknown += usize::from(Some(*id) == self.unk_id);
            }
        }
        unknown * 2 <= words
    }

    /// One padded batch → one normalized vector per sequence.
    fn forward(&self, seqs: &[&[u32]]) -> candle_core::Result<Vec<Vec<f32>>> {
        let len = seqs.iter().map(|s| s.len()).max().unwrap_or(0).max(1);
        let mut ids = Vec::with_capacity(seqs.len() * len);
        let mut mask = Vec::with_capacity(seqs.len() * len);
        for s in seqs {
            ids.extend_from_slice(s);
            ids.extend(std::iter::repeat_n(self.pad_id, len - s.len()));
            mask.extend(std::iter::repeat_n(1u32, s.len()));
            mask.extend(std::iter::repeat_n(0u32, len - s.len()));
        }
        let ids = Tensor::from_vec(ids, (seqs.len(), len), &self.device)?;
        let mask = Tensor::from_vec(mask, (seqs.len(), len), &self.device)?;
        let token_types = ids.zeros_like()?;
        let hidden = self.bert.forward(&ids, &token_types, Some(&mask))?;
        let pooled = match self.pooling {
            Pooling::Cls => hidden.narrow(1, 0, 1)?.squeeze(1)?,
            Pooling::Mean => {
                let m = mask.to_dtype(DType::F32)?.unsqueeze(2)?;
                let summed = hidden.broadcast_mul(&m)?.sum(1)?;
                summed.broadcast_div(&m.sum(1)?.clamp(1e-9, f32::MAX)?)?
            }
        };
        let norm = pooled
            .sqr()?
            .sum_keepdim(1)?
            .sqrt()?
            .clamp(1e-12, f32::MAX)?;
        pooled.broadcast_div(&norm)?.to_vec2::<f32>()
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
        let this = self.clone();
        let texts = texts.to_vec();
        tokio::task::spawn_blocking(move || this.embed_now(&texts))
            .await
            .map_err(|e| ProviderError::Unavailable(format!("local model: {e}")))?
    }
}

#[cfg(test)]
mod tests {
    use super::length_buckets;

    #[test]
    fn buckets_keep_similar_lengths_together_and_every_index_once() {
        let lengths = [12, 150, 11, 13, 148, 40, 12];
        let b = length_buckets(&lengths, 3);
        assert_eq!(b, vec![vec![2, 0, 6], vec![3], vec![5], vec![4, 1]]);
        let mut all: Vec<usize> = b.concat();
        all.sort_unstable();
        assert_eq!(all, (0..lengths.len()).collect::<Vec<_>>());
        assert!(length_buckets(&[], 8).is_empty());
    }
}
