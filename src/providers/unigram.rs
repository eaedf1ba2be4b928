//! A compact in-memory Unigram (SentencePiece) model for `tokenizers`' pipeline.
//!
//! Why: `tokenizers`' own Unigram keeps a byte trie with a hash map per node; for the 250k
//! pieces of an XLM-R vocabulary (multilingual-e5) that is ~290 MB of RSS, more than the
//! model's weights. This one keeps the pieces in one string, their scores in one array and an
//! open-addressing table of ids (~15 MB), and finds candidate pieces by hashing each prefix of
//! the remaining text up to the longest piece. The rest of the pipeline (added tokens,
//! normalizer, pre-tokenizer, truncation, `<s> … </s>`) is `tokenizers`' own, read from
//! `tokenizer.json` as usual: only the `model` section is built here when it is a Unigram
//! without byte fallback; any other model is `tokenizers`' ([`TokenModel::Other`]).
//!
//! The segmentation is `tokenizers`' `Unigram::encode_optimized` step for step (the same
//! Viterbi over byte positions, candidates in order of length, ties keep the first, unknown
//! characters scored `min_score − 10` when no one-character piece exists, adjacent unknowns
//! fused into one `<unk>`), so the ids are the same; a test compares the two.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Deserializer};
use tokenizers::models::unigram::UnigramTrainer;
use tokenizers::models::{ModelWrapper, TrainerWrapper};
use tokenizers::{
    DecoderWrapper, Model, NormalizerWrapper, PostProcessorWrapper, PreTokenizerWrapper, Token,
    TokenizerImpl,
};

/// `tokenizers`' penalty for an unknown character below the lowest piece score.
const UNK_PENALTY: f64 = 10.0;

/// A `tokenizer.json` pipeline with [`TokenModel`] as its model.
pub type LocalTokenizer = TokenizerImpl<
    TokenModel,
    NormalizerWrapper,
    PreTokenizerWrapper,
    PostProcessorWrapper,
    DecoderWrapper,
>;

/// The model section of a `tokenizer.json`.
pub enum TokenModel {
    Unigram(CompactUnigram),
    /// Boxed: `tokenizers`' model enum is large and there is one per tokenizer.
    Other(Box<ModelWrapper>),
}

impl<'de> Deserialize<'de> for TokenModel {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v = serde_json::Value::deserialize(d)?;
        let compact = v.get("type").and_then(|t| t.as_str()) == Some("Unigram")
            && !v
                .get("byte_fallback")
                .and_then(|b| b.as_bool())
                .unwrap_or(false);
        if compact {
            let spec: UnigramSpec = serde_json::from_value(v).map_err(serde::de::Error::custom)?;
            CompactUnigram::new(spec.vocab, spec.unk_id)
                .map(TokenModel::Unigram)
                .map_err(serde::de::Error::custom)
        } else {
            ModelWrapper::deserialize(v)
                .map(|m| TokenModel::Other(Box::new(m)))
                .map_err(serde::de::Error::custom)
        }
    }
}

#[derive(Deserialize)]
struct UnigramSpec {
    vocab: Vec<(String, f64)>,
    unk_id: Option<usize>,
}

/// The pieces, their scores and a hash table from piece to id.
pub struct CompactUnigram {
    text: String,
    /// `offsets[i]..offsets[i + 1]` is piece `i` in `text`.
    offsets: Vec<u32>,
    scores: Vec<f64>,
    /// Open addressing: `id + 1`, 0 = empty.
    table: Vec<u32>,
    /// Longest piece, in bytes.
    longest: usize,
    min_score: f64,
    unk_id: Option<u32>,
}

fn hash(s: &[u8]) -> u64 {
    // FNV-1a: short keys, no adversary (the keys are the model's own pieces).
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in s {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

impl CompactUnigram {
    pub fn new(vocab: Vec<(String, f64)>, unk_id: Option<usize>) -> Result<Self, String> {
        if vocab.is_empty() {
            return Err("Unigram vocabulary is empty".into());
        }
        if unk_id.is_some_and(|u| u >= vocab.len()) {
            return Err("Unigram unk_id is outside the vocabulary".into());
        }
        let n = vocab.len();
        let mut text = String::with_capacity(vocab.iter().map(|(p, _)| p.len()).sum());
        let mut offsets = Vec::with_capacity(n + 1);
        let mut scores = Vec::with_capacity(n);
        let mut min_score = f64::INFINITY;
        let mut longest = 0;
        offsets.push(0u32);
        for (piece, score) in &vocab {
            text.push_str(piece);
            offsets.push(u32::try_from(text.len()).map_err(|_| "vocabulary too large")?);
            scores.push(*score);
            min_score = min_score.min(*score);
            longest = longest.max(piece.len());
        }
        let size = (n * 2).next_power_of_two();
        let mut m = CompactUnigram {
            text,
            offsets,
            scores,
            table: vec![0; size],
            longest,
            min_score,
            unk_id: unk_id.map(|u| u as u32),
        };
        for id in 0..n {
            m.insert(id);
        }
        Ok(m)
    }

    fn piece(&self, id: usize) -> &str {
        &self.text[self.offsets[id] as usize..self.offsets[id + 1] as usize]
    }

    fn insert(&mut self, id: usize) {
        let mask = self.table.len() - 1;
        let mut slot = hash(self.piece(id).as_bytes()) as usize & mask;
        loop {
            match self.table[slot] {
                0 => break,
                // A repeated piece maps to its last id (as tokenizers' map does).
                other if self.piece(other as usize - 1) == self.piece(id) => break,
                _ => slot = (slot + 1) & mask,
            }
        }
        self.table[slot] = id as u32 + 1;
    }

    fn lookup(&self, piece: &str) -> Option<usize> {
        let mask = self.table.len() - 1;
        let mut slot = hash(piece.as_bytes()) as usize & mask;
        loop {
            match self.table[slot] {
                0 => return None,
                id if self.piece(id as usize - 1) == piece => return Some(id as usize - 1),
                _ => slot = (slot + 1) & mask,
            }
        }
    }

    /// The best segmentation of `s` as (id, byte range); adjacent unknowns fused.
    fn segment(&self, s: &str) -> Vec<(u32, usize, usize)> {
        #[derive(Clone)]
        struct Best {
            id: u32,
            score: f64,
            start: Option<usize>,
        }
        let size = s.len();
        let unk_score = self.min_score - UNK_PENALTY;
        let unk = self.unk_id.unwrap_or(0);
        let mut best = vec![
            Best {
                id: 0,
                score: 0.0,
                start: None
            };
            size + 1
        ];
        let mut at = 0;
        while at < size {
            let here = best[at].score;
            let first = s[at..].chars().next().map_or(1, char::len_utf8);
            let mut single = false;
            let mut end = at;
            for c in s[at..].chars() {
                end += c.len_utf8();
                if end - at > self.longest {
                    break;
                }
                if let Some(id) = self.lookup(&s[at..end]) {
                    let score = self.scores[id] + here;
                    let node = &mut best[end];
                    if node.start.is_none() || score > node.score {
                        *node = Best {
                            id: id as u32,
                            score,
                            start: Some(at),
                        };
                    }
                    single |= end - at == first;
                }
            }
            if !single {
                let score = unk_score + here;
                let node = &mut best[at + first];
                if node.start.is_none() || score > node.score {
                    *node = Best {
                        id: unk,
                        score,
                        start: Some(at),
                    };
                }
            }
            at += first;
        }
        let mut out: Vec<(u32, usize, usize)> = Vec::new();
        let mut end = size;
        while end > 0 {
            let node = &best[end];
            let start = node.start.unwrap_or(0);
            match out.last_mut() {
                // Backtracking: the previous token found starts where this one ends.
                Some(last) if node.id == unk && last.0 == unk && self.unk_id.is_some() => {
                    last.1 = start;
                }
                _ => out.push((node.id, start, end)),
            }
            end = start;
        }
        out.reverse();
        out
    }
}

impl Model for CompactUnigram {
    type Trainer = UnigramTrainer;

    fn tokenize(&self, sequence: &str) -> tokenizers::Result<Vec<Token>> {
        if self.unk_id.is_none() {
            return Err("Unigram without unk_id: cannot tokenize unknown characters".into());
        }
        Ok(self
            .segment(sequence)
            .into_iter()
            .map(|(id, a, b)| Token::new(id, sequence[a..b].to_string(), (a, b)))
            .collect())
    }

    fn token_to_id(&self, token: &str) -> Option<u32> {
        self.lookup(token).map(|id| id as u32)
    }

    fn id_to_token(&self, id: u32) -> Option<String> {
        ((id as usize) < self.scores.len()).then(|| self.piece(id as usize).to_string())
    }

    fn get_vocab(&self) -> HashMap<String, u32> {
        (0..self.scores.len())
            .map(|i| (self.piece(i).to_string(), i as u32))
            .collect()
    }

    fn get_vocab_size(&self) -> usize {
        self.scores.len()
    }

    fn save(&self, _: &Path, _: Option<&str>) -> tokenizers::Result<Vec<PathBuf>> {
        Err("kefu's compact Unigram model is read-only".into())
    }

    fn get_trainer(&self) -> UnigramTrainer {
        UnigramTrainer::default()
    }
}

impl Model for TokenModel {
    type Trainer = TrainerWrapper;

    fn tokenize(&self, sequence: &str) -> tokenizers::Result<Vec<Token>> {
        match self {
            TokenModel::Unigram(m) => m.tokenize(sequence),
            TokenModel::Other(m) => m.tokenize(sequence),
        }
    }
    fn token_to_id(&self, token: &str) -> Option<u32> {
        match self {
            TokenModel::Unigram(m) => m.token_to_id(token),
            TokenModel::Other(m) => m.token_to_id(token),
        }
    }
    fn id_to_token(&self, id: u32) -> Option<String> {
        match self {
            TokenModel::Unigram(m) => m.id_to_token(id),
            TokenModel::Other(m) => m.id_to_token(id),
        }
    }
    fn get_vocab(&self) -> HashMap<String, u32> {
        match self {
            TokenModel::Unigram(m) => m.get_vocab(),
            TokenModel::Other(m) => m.get_vocab(),
        }
    }
    fn get_vocab_size(&self) -> usize {
        match self {
            TokenModel::Unigram(m) => m.get_vocab_size(),
            TokenModel::Other(m) => m.get_vocab_size(),
        }
    }
    fn save(&self, folder: &Path, prefix: Option<&str>) -> tokenizers::Result<Vec<PathBuf>> {
        match self {
            TokenModel::Unigram(m) => m.save(folder, prefix),
            TokenModel::Other(m) => m.save(folder, prefix),
        }
    }
    fn get_trainer(&self) -> TrainerWrapper {
        match self {
            TokenModel::Unigram(m) => m.get_trainer().into(),
            TokenModel::Other(m) => m.get_trainer(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use tokenizers::models::unigram::Unigram;

    fn both(vocab: &[(&str, f64)], unk: usize) -> (CompactUnigram, Unigram) {
        let v: Vec<(String, f64)> = vocab.iter().map(|(p, s)| (p.to_string(), *s)).collect();
        (
            CompactUnigram::new(v.clone(), Some(unk)).unwrap(),
            Unigram::from(v, Some(unk), false).unwrap(),
        )
    }

    fn same(a: &CompactUnigram, b: &Unigram, text: &str) -> Result<(), String> {
        let ta: Vec<(u32, String, (usize, usize))> = a
            .tokenize(text)
            .unwrap()
            .into_iter()
            .map(|t| (t.id, t.value, t.offsets))
            .collect();
        let tb: Vec<(u32, String, (usize, usize))> = b
            .tokenize(text)
            .unwrap()
            .into_iter()
            .map(|t| (t.id, t.value, t.offsets))
            .collect();
        if ta == tb {
            Ok(())
        } else {
            Err(format!("{text:?}: {ta:?} vs {tb:?}"))
        }
    }

    const VOCAB: &[(&str, f64)] = &[
        ("<unk>", 0.0),
        ("▁", -2.0),
        ("a", -3.0),
        ("b", -3.5),
        ("ab", -4.0),
        ("▁ab", -4.5),
        ("abc", -6.0),
        ("c", -4.0),
        ("退", -5.0),
        ("退款", -6.0),
        ("款", -5.5),
        ("ba", -7.0),
        ("aa", -6.5),
        ("b", -1.0), // repeated piece: the later id wins, as in tokenizers
    ];

    #[test]
    fn the_same_segmentation_as_tokenizers_unigram() {
        let (a, b) = both(VOCAB, 0);
        for text in [
            "",
            "▁ab",
            "abcab",
            "xyz",
            "a退款b",
            "退z款",
            "▁▁aab",
            "zz▁ab€€",
        ] {
            same(&a, &b, text).unwrap();
        }
        assert_eq!(a.token_to_id("b"), Some(13));
        assert_eq!(a.token_to_id("zz"), None);
        assert_eq!(a.id_to_token(4).as_deref(), Some("ab"));
        assert_eq!(a.get_vocab_size(), VOCAB.len());
    }

    proptest! {
        #[test]
        fn random_texts_segment_identically(text in "[ab▁c退款xé]{0,24}") {
            let (a, b) = both(VOCAB, 0);
            prop_assert_eq!(same(&a, &b, &text), Ok(()));
        }
    }
}
