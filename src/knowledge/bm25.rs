//! In-memory BM25 over match units, with a query-normalized score in 0..1.
//!
//! `nbm25(q, u) = Σ_{t∈q∩u} idf(t)·tf(k1+1)/(tf + k1(1-b+b·|u|/avg)) / Σ_{t∈q} idf(t)·(k1+1)`
//!
//! i.e. the share of the query's IDF mass the unit covers, each term saturating at 1. Query
//! terms absent from the corpus keep their (maximal) IDF in the denominator, so a query that
//! is mostly about something the knowledge base never mentions scores low: that is what lets
//! the score say "out of scope".

use std::collections::HashMap;

use super::analyze::{is_question_word, is_stopword, BIGRAM, UNIGRAM};
use crate::text::concepts::CONCEPT;
use crate::text::{longer_form, MAX_SUFFIX, MIN_FORM};

/// Index-time parameters (baked into the per-unit length norms).
#[derive(Clone, Debug)]
pub struct Bm25Params {
    pub k1: f32,
    pub b: f32,
}

impl Default for Bm25Params {
    fn default() -> Self {
        Self { k1: 1.2, b: 0.5 }
    }
}

/// Query-time weights of a query term by its class, in numerator and denominator alike.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct TermWeights {
    /// A stop word (`how`, `my`, `的`).
    pub stop: f32,
    /// A Chinese character bigram (`2:退款`) against a word: bigrams back up the
    /// segmentation, they should not outvote it.
    pub bigram: f32,
    /// A Chinese character (`1:退`): the weakest evidence, but what lets a one-character
    /// word meet the two-character ones built on it.
    pub unigram: f32,
    /// A question word (`how`, `when`, `多久`, `哪里`): it says what kind of answer is
    /// wanted, not what about; "how do I cook rice" must not match "How do I track my order?"
    /// on "how".
    pub question: f32,
    /// A concept (`~refund`): a synonym or a translation, weaker than the word itself.
    pub concept: f32,
}

impl Default for TermWeights {
    fn default() -> Self {
        Self {
            stop: 0.5,
            bigram: 0.5,
            unigram: 0.3,
            question: 0.3,
            concept: 0.5,
        }
    }
}

impl TermWeights {
    pub fn of(&self, term: &str) -> f32 {
        if term.starts_with(CONCEPT) {
            self.concept
        } else if term.starts_with(BIGRAM) {
            self.bigram
        } else if term.starts_with(UNIGRAM) {
            self.unigram
        } else if is_question_word(term) {
            self.question
        } else if is_stopword(term) {
            self.stop
        } else {
            1.0
        }
    }
}

#[derive(Debug, Default)]
pub struct Bm25 {
    /// Term hash → term id (the term itself in `terms`, to rule out collisions): one copy of
    /// each term string, however many maps point at it.
    vocab: HashMap<u64, u32>,
    terms: Vec<Box<str>>,
    /// Typo tolerance: the hash of each Latin term of 5+ letters and of every one-letter
    /// deletion of it → the terms (SymSpell): a query's `refnd` finds `refund`.
    fuzzy: HashMap<u64, Vec<u32>>,
    /// The Latin terms of 5+ letters, sorted: a word's longer forms are a range of it.
    latin: Vec<u32>,
    /// Per term: (unit, tf).
    postings: Vec<Vec<(u32, u16)>>,
    idf: Vec<f32>,
    /// Per unit: `k1·(1 − b + b·|u|/avg)`, precomputed for the scoring loop.
    unit_norm: Vec<f32>,
}

/// Builds a [`Bm25`] one unit at a time, so an index of many units never holds more than
/// one unit's term strings besides the vocabulary (loading 10k FAQ entries held ~60 MB of
/// per-occurrence strings otherwise).
#[derive(Default)]
pub struct Bm25Builder {
    vocab: HashMap<u64, u32>,
    terms: Vec<Box<str>>,
    postings: Vec<Vec<(u32, u16)>>,
    unit_len: Vec<f32>,
}

impl Bm25Builder {
    /// Add the next unit: its (term, tf) list.
    pub fn add_unit<'a>(&mut self, terms: impl IntoIterator<Item = (&'a str, u32)>) {
        let u = self.unit_len.len() as u32;
        let mut len = 0u32;
        for (term, tf) in terms {
            let id = match lookup(&self.vocab, &self.terms, term) {
                Some(id) => id,
                None => {
                    let id = self.terms.len() as u32;
                    // A hash collision between two terms: the later one stays unindexed
                    // (astronomically rare with 64 bits; never wrong, only missed).
                    self.vocab.entry(hash(term)).or_insert(id);
                    self.terms.push(term.into());
                    self.postings.push(Vec::new());
                    id
                }
            };
            self.postings[id as usize].push((u, tf.min(u16::MAX as u32) as u16));
            len = len.saturating_add(tf);
        }
        self.unit_len.push(len as f32);
    }

    pub fn finish(self, params: Bm25Params) -> Bm25 {
        let Bm25Builder {
            vocab,
            terms: terms_of,
            mut postings,
            unit_len,
        } = self;
        for p in &mut postings {
            p.shrink_to_fit();
        }
        let n = unit_len.len() as f32;
        let idf = postings.iter().map(|p| idf(n, p.len() as f32)).collect();
        let avg_len = if unit_len.is_empty() {
            1.0
        } else {
            (unit_len.iter().sum::<f32>() / n).max(1.0)
        };
        let Bm25Params { k1, b } = params;
        let unit_norm = unit_len
            .iter()
            .map(|len| k1 * (1.0 - b + b * len / avg_len))
            .collect();
        let mut fuzzy: HashMap<u64, Vec<u32>> = HashMap::new();
        for (id, t) in terms_of.iter().enumerate() {
            if typo_tolerant(t) {
                for v in std::iter::once(t.to_string()).chain(deletions(t)) {
                    fuzzy.entry(hash(&v)).or_default().push(id as u32);
                }
            }
        }
        let mut latin: Vec<u32> = (0..terms_of.len() as u32)
            .filter(|&id| typo_tolerant(&terms_of[id as usize]))
            .collect();
        latin.sort_by(|a, b| terms_of[*a as usize].cmp(&terms_of[*b as usize]));
        Bm25 {
            vocab,
            terms: terms_of,
            fuzzy,
            latin,
            postings,
            idf,
            unit_norm,
        }
    }
}

impl Bm25 {
    /// `units[i]` = the (term, tf) list of unit `i`.
    pub fn build(units: &[Vec<(String, u32)>], params: Bm25Params) -> Self {
        let mut b = Bm25Builder::default();
        for u in units {
            b.add_unit(u.iter().map(|(t, tf)| (t.as_str(), *tf)));
        }
        b.finish(params)
    }

    /// Does any unit contain `term` (or, for a long Latin word, a one-typo spelling of it)?
    pub fn knows(&self, term: &str) -> bool {
        self.resolve(term).is_some()
    }

    /// The indexed term a query term stands for, and how much it counts: itself (1.0), or
    /// for a Latin word of 5+ letters not in the index, the most frequent indexed word one
    /// typo away (0.8), else the most frequent one that is a longer or shorter form of it
    /// the stemmer leaves apart (remind / reminder, renewal / renew:
    /// [`crate::text::longer_form`]; 0.8).
    fn resolve(&self, term: &str) -> Option<(u32, f32)> {
        if let Some(id) = lookup(&self.vocab, &self.terms, term) {
            return Some((id, 1.0));
        }
        if !typo_tolerant(term) {
            return None;
        }
        let frequent = |id: &u32| (self.postings[*id as usize].len(), std::cmp::Reverse(*id));
        // A word of the concept table is spelled right: "crack" is not a typo of "track"
        // (its concept already meets "broken" on the page that answers it).
        let spelled_right = !crate::text::concepts::of(term).is_empty();
        let typo = if spelled_right {
            None
        } else {
            std::iter::once(term.to_string())
                .chain(deletions(term))
                .filter_map(|v| self.fuzzy.get(&hash(&v)))
                .flatten()
                .copied()
                .filter(|&id| crate::text::within_one_edit(term, &self.terms[id as usize]))
                .max_by_key(frequent)
        };
        typo.or_else(|| {
            let from = self
                .latin
                .partition_point(|&id| &*self.terms[id as usize] < term);
            let longer = self.latin[from..]
                .iter()
                .copied()
                .take_while(|&id| self.terms[id as usize].starts_with(term))
                .filter(|&id| longer_form(term, &self.terms[id as usize]));
            // `term` is ASCII: every cut is on a character boundary.
            let shortest = term.len().saturating_sub(MAX_SUFFIX).max(MIN_FORM);
            let shorter =
                (shortest..term.len()).filter_map(|n| lookup(&self.vocab, &self.terms, &term[..n]));
            longer.chain(shorter).max_by_key(frequent)
        })
        .map(|id| (id, 0.8))
    }

    /// What a query term meets in this index (tuning tools): the indexed term it resolves
    /// to, its IDF, how much a match counts (1.0, or 0.8 for a typo or another form) and in
    /// how many units it occurs; `None` = nowhere.
    pub fn explain(&self, term: &str) -> Option<(String, f32, f32, usize)> {
        let (id, typo) = self.resolve(term)?;
        let id = id as usize;
        Some((
            self.terms[id].to_string(),
            self.idf[id],
            typo,
            self.postings[id].len(),
        ))
    }

    pub fn units(&self) -> usize {
        self.unit_norm.len()
    }

    /// Add each unit's normalized score into `out` (len = units), returning the units touched.
    pub fn score_into(
        &self,
        query_terms: &[String],
        weights: &TermWeights,
        out: &mut [f32],
    ) -> Vec<u32> {
        let n = self.units() as f32;
        let mut uniq: Vec<&String> = query_terms.iter().collect();
        uniq.sort();
        uniq.dedup();
        let mut resolved: Vec<(f32, Option<(u32, f32)>)> = uniq
            .iter()
            .map(|t| (weights.of(t), self.resolve(t)))
            .collect();
        carry_by_concept(&uniq, &mut resolved, weights);
        let denom: f32 = resolved
            .iter()
            .map(|(w, r)| {
                w * match r {
                    Some((id, _)) => self.idf[*id as usize],
                    None => idf(n, 0.0),
                }
            })
            .sum::<f32>();
        let mut touched = Vec::new();
        if denom <= 0.0 {
            return touched;
        }
        for (weight, r) in resolved {
            let Some((id, typo)) = r else {
                continue;
            };
            let w = typo * weight * self.idf[id as usize] / denom;
            for &(u, tf) in &self.postings[id as usize] {
                let tf = f32::from(tf);
                let slot = &mut out[u as usize];
                if *slot == 0.0 {
                    touched.push(u);
                }
                // tf(k1+1)/(tf+norm), divided by its maximum (k1+1): saturates at 1.
                *slot += w * tf / (tf + self.unit_norm[u as usize]);
            }
        }
        touched
    }
}

/// A query word the knowledge never uses whose concept it does ("crack" where the page says
/// "broken"): the concept is all that can carry the word's meaning, so it counts as much as
/// the word would have. The word itself stays in the denominator: taking it out raised every
/// lexical score of such a question and tipped the hybrid towards pages in the question's
/// language (an English question about a page written only in Chinese lost it to an English
/// page sharing "bank" and "card"). `uniq` is sorted; `resolved[i]` is the (weight, match) of
/// `uniq[i]`.
fn carry_by_concept(
    uniq: &[&String],
    resolved: &mut [(f32, Option<(u32, f32)>)],
    weights: &TermWeights,
) {
    for i in 0..uniq.len() {
        if resolved[i].1.is_some() || uniq[i].starts_with(CONCEPT) {
            continue;
        }
        let word = weights.of(uniq[i]);
        for c in crate::text::concepts::of(uniq[i]) {
            if let Ok(j) = uniq.binary_search(&c) {
                if resolved[j].1.is_some() {
                    resolved[j].0 = resolved[j].0.max(word);
                }
            }
        }
    }
}

fn hash(s: &str) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    s.hash(&mut h);
    h.finish()
}

fn lookup(vocab: &HashMap<u64, u32>, terms: &[Box<str>], term: &str) -> Option<u32> {
    vocab
        .get(&hash(term))
        .copied()
        .filter(|&id| &*terms[id as usize] == term)
}

/// Latin words long enough that one typo leaves them recognizable.
fn typo_tolerant(term: &str) -> bool {
    term.len() >= 5 && term.bytes().all(|b| b.is_ascii_lowercase())
}

/// The term with one letter left out, each way.
fn deletions(term: &str) -> impl Iterator<Item = String> + '_ {
    (0..term.len()).map(move |i| format!("{}{}", &term[..i], &term[i + 1..]))
}

/// Robertson–Spärck Jones IDF, floored at a small positive value so common terms still count.
fn idf(n: f32, df: f32) -> f32 {
    ((n - df + 0.5) / (df + 0.5)).ln_1p().max(0.01)
}

/// Count terms into a (term, tf) list, sorted for a stable stored form.
pub fn term_counts(terms: Vec<String>) -> Vec<(String, u32)> {
    let mut m: HashMap<String, u32> = HashMap::new();
    for t in terms {
        *m.entry(t).or_default() += 1;
    }
    let mut v: Vec<_> = m.into_iter().collect();
    v.sort();
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unit(words: &str) -> Vec<(String, u32)> {
        term_counts(words.split_whitespace().map(str::to_string).collect())
    }

    fn q(words: &str) -> Vec<String> {
        words.split_whitespace().map(str::to_string).collect()
    }

    #[test]
    fn scores_are_normalized_and_ranked() {
        let units = vec![
            unit("refund card money"),
            unit("card activate new"),
            unit("weather today sunny"),
            unit("refund refund delay"),
        ];
        let bm = Bm25::build(&units, Bm25Params::default());
        let mut out = vec![0.0; 4];
        let touched = bm.score_into(&q("refund delay"), &TermWeights::default(), &mut out);
        assert_eq!(touched.len(), 2);
        assert!(out[3] > out[0] && out[0] > 0.0 && out[1] == 0.0);
        assert!(out.iter().all(|s| (0.0..=1.0).contains(s)), "{out:?}");
        // A term the corpus never saw still weighs in the denominator.
        let mut out2 = vec![0.0; 4];
        bm.score_into(&q("refund delay zebra"), &TermWeights::default(), &mut out2);
        assert!(out2[3] < out[3]);
        let mut none = vec![0.0; 4];
        assert!(bm
            .score_into(&[], &TermWeights::default(), &mut none)
            .is_empty());
    }

    #[test]
    fn one_typo_still_matches_long_words() {
        let units = vec![unit("refund card money"), unit("dishwasher safe")];
        let bm = Bm25::build(&units, Bm25Params::default());
        let w = TermWeights::default();
        for typo in ["refnd", "refudn", "rufund", "dishwaser", "dishwashe"] {
            let mut out = vec![0.0; 2];
            let touched = bm.score_into(&q(typo), &w, &mut out);
            assert_eq!(touched.len(), 1, "{typo}");
            assert!(bm.knows(typo), "{typo}");
        }
        // Short words and two typos do not match.
        assert!(!bm.knows("crd") && !bm.knows("rfnd"));
        let mut exact = vec![0.0; 2];
        let mut typo = vec![0.0; 2];
        bm.score_into(&q("refund"), &w, &mut exact);
        bm.score_into(&q("refnd"), &w, &mut typo);
        assert!(typo[0] < exact[0] && typo[0] > 0.0);
    }

    #[test]
    fn a_word_of_the_concept_table_is_not_read_as_a_typo() {
        // "crack" (a damage word) is one letter from "track"; it must not meet it.
        let units = vec![unit("track parcel"), unit("broken teapot")];
        let bm = Bm25::build(&units, Bm25Params::default());
        assert!(!bm.knows("crack"));
        // A misspelling that is no word of the table still meets its word.
        assert!(bm.knows("trackk"));
    }

    #[test]
    fn a_word_the_knowledge_lacks_counts_through_its_concept() {
        // The page says "broken"; the question "cracked". Both index `~damage`.
        let units = vec![
            unit("~damage broken teapot report"),
            unit("teapot clay price"),
        ];
        let bm = Bm25::build(&units, Bm25Params::default());
        let w = TermWeights::default();
        let mut synonym = vec![0.0; 2];
        bm.score_into(&q("~damage crack teapot"), &w, &mut synonym);
        assert!(synonym[0] > synonym[1], "{synonym:?}");
        // The same concept beside a word outside the concept table (nothing to carry) keeps
        // its concept weight: the page that answers "crack" scores higher.
        let mut unknown = vec![0.0; 2];
        bm.score_into(&q("~damage zebra teapot"), &w, &mut unknown);
        assert!(unknown[0] < synonym[0], "{unknown:?} {synonym:?}");
        // The unknown word still counts against every page alike.
        let mut word = vec![0.0; 2];
        bm.score_into(&q("~damage broken teapot"), &w, &mut word);
        assert!(synonym[0] < word[0], "{synonym:?} {word:?}");
    }

    #[test]
    fn a_longer_or_shorter_form_of_a_word_matches() {
        let units = vec![unit("reminder sent"), unit("renew cancellat"), unit("ord")];
        let bm = Bm25::build(&units, Bm25Params::default());
        let w = TermWeights::default();
        for (form, unit) in [("remind", 0), ("renewal", 1), ("cancel", 1)] {
            let mut out = vec![0.0; 3];
            assert_eq!(bm.score_into(&q(form), &w, &mut out), [unit], "{form}");
        }
        // Too short to match by its start, or too many letters apart.
        assert!(!bm.knows("orde") && !bm.knows("remi") && !bm.knows("renewables"));
    }

    #[test]
    fn empty_index() {
        let bm = Bm25::build(&[], Bm25Params::default());
        assert!(bm
            .score_into(&q("x"), &TermWeights::default(), &mut [])
            .is_empty());
    }
}
