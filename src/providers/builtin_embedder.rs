//! The built-in offline embedder: hashed lexical features, no model file.
//!
//! Features of a text (see [`crate::knowledge::analyze`] for the tokenizer):
//! - word stems (stop words down-weighted) and consecutive stem bigrams;
//! - character 3..=5-grams of each Latin word with `<`/`>` boundaries, so typos and
//!   compounds still meet (`ordedr` ~ `order`);
//! - for Chinese: jieba words, character unigrams and character bigrams.
//!
//! Each feature's count becomes a sublinear weight `1 + ln(tf)`, times its class weight; the
//! feature is hashed (FNV-1a + a splitmix finalizer, stable across platforms and releases)
//! to one of `dim` buckets with a hashed sign, and the vector is L2-normalized. The model
//! name carries the feature-set version: change the features, bump [`MODEL`], and the index
//! rebuilds itself instead of mixing vectors.

use std::collections::HashMap;

use async_trait::async_trait;

use super::{Embedder, ProviderError};
use crate::knowledge::analyze::{is_stopword, tokens, Token};
use crate::text::concepts;

/// Model name recorded in the index. Bump the version when features or weights change.
pub const MODEL: &str = "builtin-hash-v3";
/// Default dimension (see the report in `knowledge/mod.rs` for the measurement).
pub const DEFAULT_DIM: usize = 1024;

/// Class weights of the hashed features. Public so tuning code can vary them; the defaults
/// are what [`MODEL`] means.
#[derive(Clone, Debug)]
pub struct FeatureWeights {
    pub word: f32,
    pub stopword: f32,
    pub bigram: f32,
    /// Total weight of one word's character n-grams (spread over its n-grams).
    pub chars: f32,
    pub cjk_word: f32,
    pub cjk_char: f32,
    pub cjk_bigram: f32,
    /// A concept the word belongs to (`~refund`: synonyms and translations meet).
    pub concept: f32,
}

impl Default for FeatureWeights {
    fn default() -> Self {
        Self {
            word: 1.0,
            stopword: 0.3,
            bigram: 0.3,
            chars: 1.0,
            cjk_word: 1.0,
            cjk_char: 0.4,
            cjk_bigram: 0.7,
            concept: 0.5,
        }
    }
}

/// Hashed word + character n-gram embedder. Deterministic, offline, cheap.
#[derive(Clone, Debug)]
pub struct BuiltinEmbedder {
    dim: usize,
    model: String,
    weights: FeatureWeights,
}

impl Default for BuiltinEmbedder {
    fn default() -> Self {
        Self::new()
    }
}

impl BuiltinEmbedder {
    pub fn new() -> Self {
        Self::with_dim(DEFAULT_DIM)
    }

    /// A different dimension is a different model as far as the index is concerned.
    pub fn with_dim(dim: usize) -> Self {
        Self::with_weights(dim, FeatureWeights::default())
    }

    pub fn with_weights(dim: usize, weights: FeatureWeights) -> Self {
        let dim = dim.max(16);
        Self {
            dim,
            model: MODEL.to_string(),
            weights,
        }
    }

    /// Embed one text synchronously (the trait method batches over this).
    pub fn embed_one(&self, text: &str) -> Vec<f32> {
        let mut features: HashMap<u64, (f32, u32)> = HashMap::new();
        let mut add = |class: u8, key: &str, weight: f32| {
            let e = features.entry(hash(class, key)).or_insert((weight, 0));
            e.1 += 1;
        };
        let w = &self.weights;
        let mut prev_stem: Option<String> = None;
        for token in tokens(text) {
            match token {
                Token::Word { raw, stem } => {
                    let weight = if is_stopword(&stem) || is_stopword(&raw) {
                        w.stopword
                    } else {
                        w.word
                    };
                    add(b'w', &stem, weight);
                    for c in concepts::of(&stem) {
                        add(b'k', c, w.concept);
                    }
                    if let Some(p) = &prev_stem {
                        add(b'b', &format!("{p} {stem}"), w.bigram);
                    }
                    if raw != "#num" {
                        let grams = char_ngrams(&raw);
                        let per = weight * w.chars / (grams.len().max(1) as f32).sqrt();
                        for g in &grams {
                            add(b'c', g, per);
                        }
                    }
                    prev_stem = Some(stem);
                }
                Token::Cjk { words, spans } => {
                    for word in &words {
                        let weight = if is_stopword(word) {
                            w.stopword
                        } else {
                            w.cjk_word
                        };
                        add(b'w', word, weight);
                        for c in concepts::of(word) {
                            add(b'k', c, w.concept);
                        }
                    }
                    let mut buf = [0u8; 8];
                    for span in &spans {
                        let chars: Vec<char> = span.chars().collect();
                        for c in &chars {
                            add(b'u', c.encode_utf8(&mut buf), w.cjk_char);
                        }
                        for p in chars.windows(2) {
                            add(b'p', &format!("{}{}", p[0], p[1]), w.cjk_bigram);
                        }
                    }
                    prev_stem = None;
                }
            }
        }
        let mut v = vec![0f32; self.dim];
        for (h, (weight, tf)) in features {
            let value = weight * (1.0 + (tf as f32).ln());
            let idx = (h % self.dim as u64) as usize;
            if h >> 63 == 1 {
                v[idx] -= value;
            } else {
                v[idx] += value;
            }
        }
        let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
        if norm > 0.0 {
            v.iter_mut().for_each(|x| *x /= norm);
        }
        v
    }
}

/// Character 3..=5-grams of `<word>`; a word of one or two letters is its own feature.
fn char_ngrams(word: &str) -> Vec<String> {
    let chars: Vec<char> = std::iter::once('<')
        .chain(word.chars())
        .chain(std::iter::once('>'))
        .collect();
    let mut out = Vec::new();
    for n in 3..=5 {
        for w in chars.windows(n) {
            out.push(w.iter().collect());
        }
    }
    if out.is_empty() {
        out.push(chars.iter().collect());
    }
    out
}

/// FNV-1a over a class tag and the key, then splitmix64's finalizer so every bit (the sign
/// bit included) is well mixed. Stable: persisted vectors depend on it.
fn hash(class: u8, key: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in std::iter::once(class).chain(key.bytes()) {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h ^= h >> 30;
    h = h.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h ^= h >> 27;
    h = h.wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^ (h >> 31)
}

#[async_trait]
impl Embedder for BuiltinEmbedder {
    fn model(&self) -> &str {
        &self.model
    }

    fn dim(&self) -> usize {
        self.dim
    }

    async fn embed(&self, texts: &[String]) -> Result<Vec<Vec<f32>>, ProviderError> {
        Ok(texts.iter().map(|t| self.embed_one(t)).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cos(a: &[f32], b: &[f32]) -> f32 {
        a.iter().zip(b).map(|(x, y)| x * y).sum()
    }

    #[test]
    fn normalized_and_deterministic() {
        let e = BuiltinEmbedder::new();
        let a = e.embed_one("How do I activate my new card?");
        let n: f32 = a.iter().map(|x| x * x).sum();
        assert!((n - 1.0).abs() < 1e-4);
        assert_eq!(a, e.embed_one("How do I activate my new card?"));
        assert!(e.embed_one("").iter().all(|x| *x == 0.0));
        assert!(e.embed_one("?!").iter().all(|x| *x == 0.0));
    }

    #[test]
    fn paraphrase_beats_unrelated() {
        let e = BuiltinEmbedder::new();
        let q = e.embed_one("activating my card");
        let near = e.embed_one("How can I activate the new card?");
        let far = e.embed_one("What is the weather in Paris tomorrow?");
        assert!(cos(&q, &near) > 0.3, "{}", cos(&q, &near));
        assert!(cos(&q, &far) < 0.1, "{}", cos(&q, &far));
        let typo = e.embed_one("cancel ordedr");
        assert!(cos(&typo, &e.embed_one("cancel order")) > 0.5);
    }

    #[test]
    fn chinese_paraphrase_beats_unrelated() {
        let e = BuiltinEmbedder::new();
        let q = e.embed_one("怎么申请退款");
        let near = e.embed_one("退款申请流程是什么");
        let far = e.embed_one("明天北京天气怎么样");
        assert!(cos(&q, &near) > cos(&q, &far) + 0.2);
    }

    #[test]
    fn hash_is_stable() {
        // Persisted vectors depend on these exact values.
        assert_eq!(hash(b'w', "card"), hash(b'w', "card"));
        assert_ne!(hash(b'w', "card"), hash(b'c', "card"));
        assert_eq!(char_ngrams("ab"), ["<ab", "ab>", "<ab>"]);
    }
}
