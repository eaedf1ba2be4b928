//! In-memory BM25 over match units, with a query-normalized score in 0..1.
//!
//! `nbm25(q, u) = Σ_{t∈q∩u} idf(t)·tf(k1+1)/(tf + k1(1-b+b·|u|/avg)) / Σ_{t∈q} idf(t)·(k1+1)`
//!
//! i.e. the share of the query's IDF mass the unit covers, each term saturating at 1. Query
//! terms absent from the corpus keep their (maximal) IDF in the denominator, so a query that
//! is mostly about something the knowledge base never mentions scores low: that is what lets
//! the score say "out of scope".

use std::collections::HashMap;

use super::analyze::is_stopword;

#[derive(Clone, Debug)]
pub struct Bm25Params {
    pub k1: f32,
    pub b: f32,
    /// Weight of a stop word (`how`, `my`, `的`) in the query, numerator and denominator.
    pub stop_weight: f32,
}

impl Default for Bm25Params {
    fn default() -> Self {
        Self {
            k1: 1.2,
            b: 0.5,
            stop_weight: 0.5,
        }
    }
}

#[derive(Debug, Default)]
pub struct Bm25 {
    vocab: HashMap<String, u32>,
    /// Per term: (unit, tf).
    postings: Vec<Vec<(u32, u16)>>,
    idf: Vec<f32>,
    /// Per unit: `k1·(1 − b + b·|u|/avg)`, precomputed for the scoring loop.
    unit_norm: Vec<f32>,
    params: Bm25Params,
}

impl Bm25 {
    /// `units[i]` = the (term, tf) list of unit `i`.
    pub fn build(units: &[Vec<(String, u32)>], params: Bm25Params) -> Self {
        let mut vocab: HashMap<String, u32> = HashMap::new();
        let mut postings: Vec<Vec<(u32, u16)>> = Vec::new();
        let mut unit_len = Vec::with_capacity(units.len());
        for (u, terms) in units.iter().enumerate() {
            let mut len = 0u32;
            for (term, tf) in terms {
                let id = *vocab.entry(term.clone()).or_insert_with(|| {
                    postings.push(Vec::new());
                    (postings.len() - 1) as u32
                });
                postings[id as usize].push((u as u32, (*tf).min(u16::MAX as u32) as u16));
                len = len.saturating_add(*tf);
            }
            unit_len.push(len as f32);
        }
        let n = units.len() as f32;
        let idf = postings.iter().map(|p| idf(n, p.len() as f32)).collect();
        let avg_len = if units.is_empty() {
            1.0
        } else {
            (unit_len.iter().sum::<f32>() / n).max(1.0)
        };
        let Bm25Params { k1, b, .. } = params;
        let unit_norm = unit_len
            .iter()
            .map(|len| k1 * (1.0 - b + b * len / avg_len))
            .collect();
        Self {
            vocab,
            postings,
            idf,
            unit_norm,
            params,
        }
    }

    pub fn units(&self) -> usize {
        self.unit_norm.len()
    }

    /// Add each unit's normalized score into `out` (len = units), returning the units touched.
    pub fn score_into(&self, query_terms: &[String], out: &mut [f32]) -> Vec<u32> {
        let n = self.units() as f32;
        let mut uniq: Vec<&String> = query_terms.iter().collect();
        uniq.sort();
        uniq.dedup();
        let stop_weight = self.params.stop_weight;
        let qweight = |t: &str| if is_stopword(t) { stop_weight } else { 1.0 };
        let denom: f32 = uniq
            .iter()
            .map(|t| {
                qweight(t)
                    * match self.vocab.get(*t) {
                        Some(id) => self.idf[*id as usize],
                        None => idf(n, 0.0),
                    }
            })
            .sum::<f32>();
        let mut touched = Vec::new();
        if denom <= 0.0 {
            return touched;
        }
        for t in uniq {
            let Some(&id) = self.vocab.get(t) else {
                continue;
            };
            let w = qweight(t) * self.idf[id as usize] / denom;
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
        let touched = bm.score_into(&q("refund delay"), &mut out);
        assert_eq!(touched.len(), 2);
        assert!(out[3] > out[0] && out[0] > 0.0 && out[1] == 0.0);
        assert!(out.iter().all(|s| (0.0..=1.0).contains(s)), "{out:?}");
        // A term the corpus never saw still weighs in the denominator.
        let mut out2 = vec![0.0; 4];
        bm.score_into(&q("refund delay zebra"), &mut out2);
        assert!(out2[3] < out[3]);
        let mut none = vec![0.0; 4];
        assert!(bm.score_into(&[], &mut none).is_empty());
    }

    #[test]
    fn empty_index() {
        let bm = Bm25::build(&[], Bm25Params::default());
        assert!(bm.score_into(&q("x"), &mut []).is_empty());
    }
}
