//! Scoring: the in-memory snapshot of the index and how a query is ranked against it.
//!
//! Every chunk has *units*, each indexed on its own: **match** units (an FAQ's question and
//! each alternate; a section's "title › heading path" line), for an FAQ with alternates one
//! **pool** unit (question + alternates as one text: the entry as a whole), one **body** unit
//! (the FAQ answer; a section's heading line + text), and a section's **sentence** units. All
//! are in BM25; all but sentences and FAQ answers are embedded too
//! ([`UnitKind::embedded`]), so in the vector signal an FAQ answer's `sim` is 0. Per signal
//! (`sim` = `max(0, cosine)` of the embeddings, or `nbm25`, the query-normalized BM25 of
//! bm25.rs, both 0..1):
//!
//! ```text
//! match(c) = max over match units of sim                     (max-sim: alternates = question)
//!          = (1-β)·match(c) + β·sim(pool)                    (FAQ with alternates, β = 0.7)
//! s(c)     = max(match(c), w_body·sim(body))                 (w_body 0.7 FAQ answer, 1 section)
//! raw      = v(c)                 vector mode
//!          = l(c)                 lexical mode
//!          = α·v(c) + (1-α)·l(c)  hybrid, α = 0.5
//! score    = 1 / (1 + e^(−k_m·(raw − c_m)))                   calibrated per mode m
//! ```
//!
//! One curve per mode, query language and chunk kind (with terms for the query's shape, see
//! [`Curve`]): a logistic regression on the odd lines of the dev sets in `shared/data`
//! (built-in embedder; `examples/calibrate.rs`, docs/calibration.md), the label being "this
//! top hit is the expected source", off-topic and out-of-scope messages counting as negatives. So
//! the score reads the same in every mode: the estimated probability that the hit answers the
//! question (0.5 = a coin flip). The fusion is on similarities, not ranks (reciprocal rank
//! fusion has no absolute scale to calibrate). Another embedder has another cosine scale:
//! refit `calibration` ([`SearchParams`]) with `eval_sources` when changing it. See
//! [`RECOMMENDED_MIN_SCORE`] for the threshold.

use super::analyze::{is_stopword, BIGRAM, UNIGRAM};
use super::bm25::{Bm25, TermWeights};
use super::load::ChunkKind;
use super::vectors::Matrix;
use super::RetrievalMode;
use crate::text::Lang;

/// The threshold recommended for `knowledge.min_score` with the built-in embedder. Through
/// the engine, 0.6 → 0.55: qingshan answers (odd / even halves) contain the fact 0.67 → 0.70
/// / 0.50 → 0.55 and cite the right page first 0.77 → 0.78 / 0.67 → 0.72; off-topic questions
/// left unanswered stay 0.924; clinc150 hands off 0.80 of its out-of-scope messages (0.81 at
/// 0.6) and cites the right entry first for 0.700 of the rest (0.685). 0.5 answers no more on
/// the odd half and lets five more off-topic questions through.
pub const RECOMMENDED_MIN_SCORE: f32 = 0.55;

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum UnitKind {
    Match,
    Body,
    /// All match texts of an FAQ entry as one text: the entry as a whole (a class centroid).
    Pool,
    /// One sentence, list item or table row of a section, under its heading: a question
    /// about one fact of a long section matches the sentence that states it. Lexical only
    /// (kept out of the vector matrix: sections have many, and embedding each would multiply
    /// ingest time with a model embedder).
    Sentence,
}

impl UnitKind {
    /// Whether the unit is embedded (has a row in the vector matrix) in a chunk of kind
    /// `chunk`. Sentences are not (see [`UnitKind::Sentence`]), nor an FAQ entry's answer:
    /// the entry is found by its question, alternates and their pool, and the answer's cosine
    /// (weighed [`SearchParams::faq_body_weight`]) was hardly ever an entry's best signal.
    /// Without it (calibrate, hit@1 on every dev set, both halves): built-in embedder the
    /// same but stackfaq even 0.733 → 0.727; multilingual-e5-small the same but qingshan zh
    /// even 0.857 → 0.829 (one question). The answer is the longest text of an entry, so this
    /// is the largest row of the five or so an entry had, and the longest text a sentence
    /// model had to read at ingest. The answer still counts in BM25. (An index stored before
    /// this holds a vector for the answer after the others, which would not be read; the
    /// analysis version changed with it, so such an index is rebuilt at the next ingest.)
    pub fn embedded(self, chunk: ChunkKind) -> bool {
        match self {
            UnitKind::Sentence => false,
            UnitKind::Body => chunk != ChunkKind::Faq,
            UnitKind::Match | UnitKind::Pool => true,
        }
    }
}

/// A chunk as stored and as returned (everything a `Hit` needs but the score).
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ChunkRecord {
    pub kind: ChunkKind,
    pub source: String,
    pub title: String,
    pub heading_path: Vec<String>,
    pub category: String,
    pub text: String,
    pub units: Vec<UnitKind>,
}

/// Scoring knobs. The defaults are the tuned values; `eval` and benches may vary them.
#[derive(Clone, Debug)]
pub struct SearchParams {
    /// Hybrid weight of the vector similarity.
    pub alpha: f32,
    /// Weight of an FAQ answer against its question/alternates.
    pub faq_body_weight: f32,
    /// Weight of a section body against its heading line.
    pub section_body_weight: f32,
    /// Share of the pooled unit in an FAQ's match similarity (the rest: best single text).
    pub pool_weight: f32,
    /// Weight of a section's best sentence (lexical) against its heading line and body.
    pub sentence_weight: f32,
    /// BM25 query-term weights by class (stop words, Chinese characters and bigrams).
    pub terms: TermWeights,

    /// The calibration curves: per retrieval mode, query language and chunk kind.
    pub calibration: [Calibration; 3],
    /// Cosine an embedder gives unrelated texts (its floor), by the query's language
    /// (`[English and other scripts, Chinese]`): vector similarities are read as
    /// `(cos − floor) / (1 − floor)`, so a model whose cosines all sit high
    /// (multilingual-e5: unrelated texts ≈ 0.77 in English, 0.84 in Chinese) spreads its
    /// signal over 0..1 like the others, the same in both languages.
    pub vector_floor: [f32; 2],
    /// Multilingual models score any text in the question's language above an equally
    /// relevant one in the other. With chunks in both languages, each unit's similarity is
    /// moved by this share of the gap between the mean similarity of the question's language
    /// and of the unit's (`sim + λ·(mean_q − mean_u)`), so an English page can answer a
    /// Chinese question. 0 = off (an embedder with no shared space across languages, such as
    /// the built-in one, must keep it off).
    pub language_offset: f32,
}

/// What calibration knows of a query besides a hit's raw similarity.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct QueryShape {
    /// Share (0..1) of the question's terms the knowledge never uses (see
    /// [`Snapshot::unknown_share`]): a question about passports asked of a tea shop shares a
    /// word or two with some page, but most of what it is about is nowhere in the knowledge.
    pub unknown: f32,
    /// `ln(1 + content words)`: a long, chatty question covers a smaller share of its terms
    /// with the page that answers it than a short one does.
    pub length: f32,
}

impl QueryShape {
    pub fn of(qterms: &[String], unknown: f32) -> Self {
        let words = qterms
            .iter()
            .filter(|t| !t.starts_with(BIGRAM) && !t.starts_with(UNIGRAM) && !is_stopword(t))
            .count();
        QueryShape {
            unknown,
            length: (1.0 + words as f32).ln(),
        }
    }
}

/// One logistic curve: `score = 1 / (1 + e^(−(k·(raw − c) − u·unknown + l·length)))`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Curve {
    pub k: f32,
    pub c: f32,
    pub u: f32,
    pub l: f32,
}

impl Curve {
    pub const IDENTITY: Curve = Curve {
        k: 1.0,
        c: 0.0,
        u: 0.0,
        l: 0.0,
    };

    pub fn apply(self, raw: f32, q: QueryShape) -> f32 {
        let z = self.k * (raw - self.c) - self.u * q.unknown + self.l * q.length;
        1.0 / (1.0 + (-z).exp())
    }
}

/// Curves of one retrieval mode, by the query's language and the hit's chunk kind: a short
/// Chinese question shares fewer terms with a page than an English one for the same
/// relevance, and a section is longer than an FAQ question, so each pair has its own curve
/// and the score means the same everywhere.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Calibration {
    /// `[zh faq, zh section, en faq, en section]`.
    pub curves: [Curve; 4],
}

impl Calibration {
    pub const IDENTITY: Calibration = Calibration {
        curves: [Curve::IDENTITY; 4],
    };

    /// One curve for FAQ hits and one for sections, whatever the language.
    pub const fn by_kind(faq: Curve, section: Curve) -> Self {
        Calibration {
            curves: [faq, section, faq, section],
        }
    }

    pub fn curve(&self, lang: Lang, kind: ChunkKind) -> Curve {
        self.curves[slot(lang, kind)]
    }

    pub fn curve_mut(&mut self, lang: Lang, kind: ChunkKind) -> &mut Curve {
        &mut self.curves[slot(lang, kind)]
    }
}

fn slot(lang: Lang, kind: ChunkKind) -> usize {
    let l = match lang {
        Lang::Zh => 0,
        Lang::En => 2,
    };
    l + usize::from(kind == ChunkKind::Section)
}

const fn curve(k: f32, c: f32, u: f32, l: f32) -> Curve {
    Curve { k, c, u, l }
}

impl Default for SearchParams {
    fn default() -> Self {
        Self {
            alpha: 0.5,
            faq_body_weight: 0.7,
            section_body_weight: 1.0,
            pool_weight: 0.7,
            sentence_weight: 1.0,
            terms: TermWeights::default(),
            vector_floor: [0.0; 2],
            language_offset: 0.0,
            // Fitted by `cargo run --release --example calibrate -- --half odd --fit
            // --mode <mode>` (see docs/calibration.md); order: zh FAQ, zh section, en FAQ,
            // en section; curve(k, c, u, l).
            calibration: [
                Calibration {
                    curves: [
                        curve(14.83, 0.333, 0.93, 0.74),
                        curve(15.29, 0.293, 1.87, 1.26),
                        curve(19.64, 0.336, 3.19, 1.18),
                        curve(14.80, 0.430, 0.56, 1.50),
                    ],
                },
                Calibration {
                    curves: [
                        curve(14.53, 0.413, 0.80, 0.36),
                        curve(12.92, 0.414, 1.50, 1.17),
                        curve(16.33, 0.330, 4.13, 0.26),
                        curve(13.46, 0.448, 0.79, 0.99),
                    ],
                },
                Calibration {
                    curves: [
                        curve(14.55, 0.287, 1.19, 1.26),
                        curve(15.33, 0.233, 1.86, 1.47),
                        curve(19.92, 0.301, 4.12, 1.64),
                        curve(14.59, 0.393, 1.01, 1.73),
                    ],
                },
            ],
        }
    }
}

/// Curves of [`SearchParams::multilingual_model`] for hybrid retrieval, fitted with
/// multilingual-e5-small at α 0.5 by `cargo run --release --features local-embeddings
/// --example calibrate -- --local DIR --half odd --fit --mode hybrid` (order: zh FAQ, zh
/// section, en FAQ, en section); lexical retrieval does not involve the model and keeps the
/// built-in embedder's curves.
const MULTILINGUAL_HYBRID: Calibration = Calibration {
    curves: [
        curve(13.76, 0.352, 0.67, 1.10),
        curve(17.28, 0.219, 1.35, 0.61),
        curve(24.01, 0.340, 0.03, 0.64),
        curve(15.86, 0.342, 0.95, 0.74),
    ],
};
/// Vector retrieval: not fitted yet, the hybrid curves (run the command above with `--mode
/// vector` to fit them).
const MULTILINGUAL_VECTOR: Calibration = MULTILINGUAL_HYBRID;

impl SearchParams {
    /// The knobs for `providers.embedding.kind = "local"`, chosen by how the model's
    /// similarities behave (`profile`, measured on probe sentences when it loads).
    ///
    /// English-only models (all-MiniLM-L6-v2; fitted with examples/embedder_sweep.rs on
    /// the four English dev sets): a sentence model's cosine carries more of the signal than
    /// the hashed built-in one, so the hybrid leans on it (α 0.6), and its cosines sit on
    /// another scale, so the vector and hybrid curves are refitted; lexical is unchanged.
    /// `blended`: the model is blended with the built-in embedder (`builtin_weight` > 0,
    /// fitted at the default 0.3), which moves the scale again. Hit@1 (banking77 / clinc150 /
    /// bitext / stackfaq), hybrid: model alone 0.826 / 0.890 / 0.931 / 0.955; blended 0.3:
    /// 0.819 / 0.885 / 0.937 / 0.936; the built-in embedder 0.704 / 0.798 / 0.881 / 0.776.
    ///
    /// Multilingual models: see [`SearchParams::multilingual_model`].
    pub fn sentence_model(blended: bool, profile: &crate::providers::SimilarityProfile) -> Self {
        if profile.multilingual {
            return Self::multilingual_model(profile.background);
        }
        // One curve for FAQ entries and sections: with a sentence model a section's cosine
        // sits on the FAQ scale (a 1.8× section curve put sections over the right FAQ
        // entry: bundled hit@1 0.58 → 0.81 with one curve).
        let both =
            |k: f32, c: f32| Calibration::by_kind(curve(k, c, 0.0, 0.0), curve(k, c, 0.0, 0.0));
        let calibration = if blended {
            [both(10.89, 0.237), both(9.07, 0.310), both(9.0, 0.14)]
        } else {
            [both(10.45, 0.258), both(8.22, 0.362), both(9.0, 0.14)]
        };
        Self {
            alpha: 0.6,
            calibration,
            ..Self::default()
        }
    }

    /// Knobs for a model that reads Chinese and English in one space (fitted with
    /// multilingual-e5-small on the odd lines of the dev sets' cases, checked on the even
    /// ones; numbers in docs/providers.md). Its cosines all sit high (unrelated texts
    /// ≈ 0.77 in English, 0.84 in Chinese), so similarities are read above the measured
    /// `background` of the question's language; it scores texts in the question's language
    /// above equally relevant ones in the other, which the language offset cancels.
    pub fn multilingual_model(background: [f32; 2]) -> Self {
        Self {
            alpha: 0.5,
            vector_floor: background.map(|b| b.clamp(0.0, 0.95)),
            language_offset: 0.9,
            calibration: [
                MULTILINGUAL_HYBRID,
                MULTILINGUAL_VECTOR,
                Self::default().calibration[2],
            ],
            ..Self::default()
        }
    }

    /// Scores are `sigmoid(raw)`: for fitting curves.
    pub fn uncalibrated(&self) -> Self {
        Self {
            calibration: [Calibration::IDENTITY; 3],
            ..self.clone()
        }
    }

    pub fn calibrate(
        &self,
        mode: RetrievalMode,
        lang: Lang,
        kind: ChunkKind,
        raw: f32,
        q: QueryShape,
    ) -> f32 {
        let m = match mode {
            RetrievalMode::Hybrid => 0,
            RetrievalMode::Vector => 1,
            RetrievalMode::Lexical => 2,
        };
        self.calibration[m].curve(lang, kind).apply(raw, q)
    }
}

/// What is searched: built at open and after each ingest, swapped whole.
#[derive(Debug, Default)]
pub struct Snapshot {
    pub chunks: Vec<ChunkRecord>,
    pub unit_chunk: Vec<u32>,
    pub unit_kind: Vec<UnitKind>,
    /// Whether the unit's chunk is an FAQ entry (its body weighs [`SearchParams::faq_body_weight`]).
    pub unit_faq: Vec<bool>,
    /// Per chunk: the language of its text (see [`SearchParams::language_offset`]).
    pub chunk_lang: Vec<Lang>,
    /// `None` when the stored vectors belong to another model (lexical only until re-ingest).
    pub vectors: Option<Matrix>,
    /// Per matrix row: the unit it embeds (units without a vector have no row).
    pub vector_unit: Vec<u32>,
    pub bm25: Bm25,
    /// Sentence units, in their own BM25 index (their statistics are a sentence's, not a
    /// section's): per passage its chunk.
    pub passage_chunk: Vec<u32>,
    pub passages: Bm25,
    /// Page titles another page can refer to ("explained in Returns and refunds",
    /// 按《退货与退款政策》…处理), see [`PageTitles`].
    pub titles: PageTitles,
}

/// The titles of the knowledge's pages that are long enough not to occur in passing (three
/// words, or four Chinese characters), lower-cased, each with its source, in title order; a
/// title two pages share names neither. One automaton over them all, built with the snapshot:
/// which titles a text names is one pass over the text, not one per title (a search looks
/// at every hit it returns).
#[derive(Debug, Default)]
pub struct PageTitles {
    sources: Vec<String>,
    finder: Option<aho_corasick::AhoCorasick>,
}

impl PageTitles {
    pub fn of(chunks: &[ChunkRecord]) -> Self {
        let mut sources: std::collections::BTreeMap<String, Vec<&str>> = Default::default();
        for c in chunks.iter().filter(|c| c.kind == ChunkKind::Section) {
            let title = c.title.trim().to_lowercase();
            let long = title.split_whitespace().count() >= 3
                || title.chars().filter(|ch| crate::text::is_cjk(*ch)).count() >= 4;
            let named = sources.entry(title).or_default();
            if long && !named.contains(&c.source.as_str()) {
                named.push(&c.source);
            }
        }
        let (titles, sources): (Vec<String>, Vec<String>) = sources
            .into_iter()
            .filter_map(|(title, named)| match named.as_slice() {
                [one] => Some((title, one.to_string())),
                _ => None,
            })
            .unzip();
        let finder = if titles.is_empty() {
            None
        } else {
            aho_corasick::AhoCorasick::new(&titles)
                .map_err(|e| tracing::warn!(error = %e, "page titles not indexed; references not followed"))
                .ok()
        };
        PageTitles { sources, finder }
    }

    /// The page that `text` (lower-cased) names by its title, other than `own`: of several,
    /// the first title in title order.
    pub fn named_in(&self, text: &str, own: &str) -> Option<&str> {
        let finder = self.finder.as_ref()?;
        finder
            .find_overlapping_iter(text)
            .map(|m| m.pattern().as_usize())
            .filter(|&t| self.sources[t] != own)
            .min()
            .map(|t| self.sources[t].as_str())
    }
}

/// One ranked chunk: index into `Snapshot::chunks`, calibrated score, raw fused similarity.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Ranked {
    pub chunk: usize,
    pub score: f32,
    pub raw: f32,
}

impl Snapshot {
    /// Rank chunks for a query. `qvec` is the query embedding (None = no vector signal);
    /// `lang` the query's language (it picks the calibration curve).
    pub fn rank(
        &self,
        qvec: Option<&[f32]>,
        qterms: &[String],
        lang: Lang,
        top_k: usize,
        mode: RetrievalMode,
        p: &SearchParams,
    ) -> Vec<Ranked> {
        let n = self.chunks.len();
        if n == 0 || top_k == 0 {
            return Vec::new();
        }
        // Without vectors (model changed, not re-ingested yet) every mode is lexical.
        let vectors = self.vectors.as_ref().zip(qvec);
        let mode = if vectors.is_none() {
            RetrievalMode::Lexical
        } else {
            mode
        };
        // Per unit kind and chunk kind; looked up without touching the chunk records.
        let weight = |u: usize| match self.unit_kind[u] {
            UnitKind::Match | UnitKind::Pool | UnitKind::Sentence => 1.0,
            UnitKind::Body if self.unit_faq[u] => p.faq_body_weight,
            UnitKind::Body => p.section_body_weight,
        };
        SCRATCH.with(|scratch| {
            let mut guard = scratch.borrow_mut();
            let Scratch {
                units,
                v,
                l,
                candidates,
            } = &mut *guard;
            v.reset(n);
            l.reset(n);
            if mode != RetrievalMode::Lexical {
                if let Some((m, q)) = vectors {
                    m.cosines_into(q, units);
                    let floor = p.vector_floor[usize::from(lang == Lang::Zh)];
                    if floor != 0.0 {
                        let spread = 1.0 / (1.0 - floor);
                        for cos in units.iter_mut() {
                            *cos = (*cos - floor) * spread;
                        }
                    }
                    if p.language_offset != 0.0 {
                        self.offset_languages(units, lang, p.language_offset);
                    }
                    for (row, cos) in units.iter().enumerate() {
                        let u = self.vector_unit[row] as usize;
                        let s = weight(u) * cos.max(0.0);
                        v.add(self.unit_chunk[u] as usize, self.unit_kind[u], s);
                    }
                }
            }
            if mode != RetrievalMode::Vector {
                units.clear();
                units.resize(self.unit_chunk.len(), 0.0);
                for u in self.bm25.score_into(qterms, &p.terms, units) {
                    let u = u as usize;
                    let s = weight(u) * units[u];
                    l.add(self.unit_chunk[u] as usize, self.unit_kind[u], s);
                }
                units.clear();
                units.resize(self.passage_chunk.len(), 0.0);
                for u in self.passages.score_into(qterms, &p.terms, units) {
                    let u = u as usize;
                    let c = self.passage_chunk[u] as usize;
                    l.add(c, UnitKind::Sentence, p.sentence_weight * units[u]);
                }
            }
            candidates.clear();
            for c in 0..n {
                let raw = match mode {
                    RetrievalMode::Vector => v.get(c, p.pool_weight),
                    RetrievalMode::Lexical => l.get(c, p.pool_weight),
                    RetrievalMode::Hybrid => {
                        p.alpha * v.get(c, p.pool_weight)
                            + (1.0 - p.alpha) * l.get(c, p.pool_weight)
                    }
                };
                if raw > 0.0 {
                    candidates.push((raw, c as u32));
                }
            }
            // Ties break on chunk order, so results are the same run after run.
            let order = |a: &(f32, u32), b: &(f32, u32)| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1));
            // FAQ entries and sections sit on different curves, so the best few by raw
            // similarity are re-ordered by calibrated score; a few spare candidates let a
            // section that calibrates higher than an FAQ entry above it come in.
            let pool = top_k + top_k.div_ceil(2);
            if candidates.len() > pool {
                candidates.select_nth_unstable_by(pool - 1, order);
                candidates.truncate(pool);
            }
            candidates.sort_by(order);
            let shape = QueryShape::of(qterms, self.unknown_share(qterms, &p.terms));
            let mut ranked: Vec<Ranked> = candidates
                .iter()
                .map(|&(raw, c)| Ranked {
                    chunk: c as usize,
                    score: p.calibrate(mode, lang, self.chunks[c as usize].kind, raw, shape),
                    raw,
                })
                .collect();
            ranked.sort_by(|a, b| {
                b.score
                    .total_cmp(&a.score)
                    .then(b.raw.total_cmp(&a.raw))
                    .then(a.chunk.cmp(&b.chunk))
            });
            ranked.truncate(top_k);
            ranked
        })
    }
}

impl Snapshot {
    /// The page `chunk` refers the reader to by its title, if any (not its own).
    pub fn referred(&self, chunk: usize) -> Option<&str> {
        let c = &self.chunks[chunk];
        self.titles.named_in(&c.text.to_lowercase(), &c.source)
    }

    /// See [`SearchParams::language_offset`]: `sims` are the similarities of the matrix rows.
    fn offset_languages(&self, sims: &mut [f32], query: Lang, lambda: f32) {
        let lang_of = |row: usize| {
            let u = self.vector_unit[row] as usize;
            usize::from(self.chunk_lang[self.unit_chunk[u] as usize] == Lang::Zh)
        };
        let (mut sum, mut n) = ([0f32; 2], [0usize; 2]);
        for (row, s) in sims.iter().enumerate() {
            sum[lang_of(row)] += s;
            n[lang_of(row)] += 1;
        }
        if n[0] == 0 || n[1] == 0 {
            return;
        }
        let mean = [sum[0] / n[0] as f32, sum[1] / n[1] as f32];
        let q = mean[usize::from(query == Lang::Zh)];
        let shift = [lambda * (q - mean[0]), lambda * (q - mean[1])];
        for (row, s) in sims.iter_mut().enumerate() {
            *s += shift[lang_of(row)];
        }
    }

    /// Weighted share (0..1) of the query's distinct terms that appear nowhere in the
    /// knowledge (neither in a unit nor in a sentence).
    pub fn unknown_share(&self, qterms: &[String], w: &TermWeights) -> f32 {
        let mut uniq: Vec<&String> = qterms.iter().collect();
        uniq.sort();
        uniq.dedup();
        let (mut all, mut unknown) = (0.0, 0.0);
        for t in uniq {
            let weight = w.of(t);
            all += weight;
            if !self.bm25.knows(t) && !self.passages.knows(t) {
                unknown += weight;
            }
        }
        if all > 0.0 {
            unknown / all
        } else {
            0.0
        }
    }
}

thread_local! {
    /// Per-thread buffers reused across searches: at 100k chunks a fresh set costs more in
    /// page faults than the scoring itself.
    static SCRATCH: std::cell::RefCell<Scratch> = std::cell::RefCell::default();
}

#[derive(Default)]
struct Scratch {
    /// Per unit: cosines, then BM25 scores.
    units: Vec<f32>,
    v: Signal,
    l: Signal,
    candidates: Vec<(f32, u32)>,
}

/// Per chunk: best match unit, pooled unit (NaN = none), best weighted body or sentence unit.
#[derive(Default)]
struct Signal {
    best: Vec<f32>,
    pool: Vec<f32>,
    body: Vec<f32>,
}

impl Signal {
    fn reset(&mut self, n: usize) {
        for (v, fill) in [
            (&mut self.best, 0.0),
            (&mut self.pool, f32::NAN),
            (&mut self.body, 0.0),
        ] {
            v.clear();
            v.resize(n, fill);
        }
    }

    fn add(&mut self, chunk: usize, kind: UnitKind, s: f32) {
        match kind {
            UnitKind::Match => self.best[chunk] = self.best[chunk].max(s),
            UnitKind::Pool => self.pool[chunk] = s,
            UnitKind::Body | UnitKind::Sentence => self.body[chunk] = self.body[chunk].max(s),
        }
    }

    /// `max((1-β)·best + β·pool, body)`; without a pool unit (a single match text),
    /// `max(best, body)`.
    fn get(&self, c: usize, beta: f32) -> f32 {
        let (best, pool) = (self.best[c], self.pool[c]);
        let m = if pool.is_nan() {
            best
        } else {
            (1.0 - beta) * best + beta * pool
        };
        m.max(self.body[c])
    }
}

/// How a unit is put to an embedder with roles (multilingual-e5's `query: ` / `passage: `):
/// questions and heading lines are matched against questions, a symmetric comparison the
/// model is trained to make between two queries; bodies are the documents a question is
/// asked about (sentences are not embedded).
pub fn unit_role(kind: UnitKind) -> crate::providers::TextRole {
    match kind {
        UnitKind::Match | UnitKind::Pool => crate::providers::TextRole::Query,
        UnitKind::Body | UnitKind::Sentence => crate::providers::TextRole::Passage,
    }
}

/// The texts embedded and indexed for a loaded chunk, in unit order.
pub fn unit_texts(c: &super::load::LoadedChunk) -> Vec<(UnitKind, String)> {
    let mut out: Vec<(UnitKind, String)> = c
        .match_texts
        .iter()
        .map(|t| (UnitKind::Match, t.clone()))
        .collect();
    if c.kind == ChunkKind::Faq && c.match_texts.len() > 1 {
        out.push((UnitKind::Pool, c.match_texts.join("\n")));
    }
    let body = match c.kind {
        ChunkKind::Faq => c.text.clone(),
        ChunkKind::Section => match c.match_texts.first() {
            Some(line) => format!("{line}\n{}", c.text),
            None => c.text.clone(),
        },
    };
    out.push((UnitKind::Body, body));
    if c.kind == ChunkKind::Section {
        // Each sentence under the nearest heading: the heading names what the sentence is
        // about ("## Sample packs" + "Each costs ¥9.9.").
        let heading = c.heading_path.last().unwrap_or(&c.title);
        let pieces = crate::text::sentences::pieces(&c.text);
        if pieces.len() > 1 {
            out.extend(
                pieces
                    .into_iter()
                    .map(|p| (UnitKind::Sentence, format!("{heading}\n{}", p.searchable))),
            );
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::knowledge::bm25::{term_counts, Bm25Params};

    fn snapshot() -> Snapshot {
        let mk = |source: &str| ChunkRecord {
            kind: ChunkKind::Faq,
            source: source.into(),
            title: source.into(),
            heading_path: vec![],
            category: "faq".into(),
            text: "answer".into(),
            units: vec![UnitKind::Match, UnitKind::Body],
        };
        let units = [("refund late", "money back"), ("card lost", "block it")];
        let mut m = Matrix::new(2);
        let mut terms = Vec::new();
        for (i, (q, a)) in units.iter().enumerate() {
            m.push_f32(&[1.0 - i as f32, i as f32]);
            m.push_f32(&[0.5, 0.5]);
            terms.push(term_counts(q.split(' ').map(str::to_string).collect()));
            terms.push(term_counts(a.split(' ').map(str::to_string).collect()));
        }
        Snapshot {
            chunks: vec![mk("a"), mk("b")],
            unit_chunk: vec![0, 0, 1, 1],
            unit_kind: vec![
                UnitKind::Match,
                UnitKind::Body,
                UnitKind::Match,
                UnitKind::Body,
            ],
            unit_faq: vec![true; 4],
            vectors: Some(m),
            vector_unit: vec![0, 1, 2, 3],
            bm25: Bm25::build(&terms, Bm25Params::default()),
            ..Snapshot::default()
        }
    }

    #[test]
    fn fused_scores_stay_in_range_and_rank() {
        let s = snapshot();
        let p = SearchParams::default();
        let terms = vec!["card".to_string(), "lost".to_string()];
        for mode in [
            RetrievalMode::Hybrid,
            RetrievalMode::Vector,
            RetrievalMode::Lexical,
        ] {
            let r = s.rank(Some(&[0.0, 1.0]), &terms, Lang::En, 5, mode, &p);
            assert_eq!(r[0].chunk, 1, "{mode:?}");
            for h in &r {
                assert!(
                    (0.0..=1.0).contains(&h.score) && (0.0..=1.0).contains(&h.raw),
                    "{h:?}"
                );
            }
        }
        assert!(s
            .rank(None, &[], Lang::En, 5, RetrievalMode::Lexical, &p)
            .is_empty());
        assert_eq!(
            s.rank(
                Some(&[0.0, 1.0]),
                &terms,
                Lang::En,
                1,
                RetrievalMode::Hybrid,
                &p
            )
            .len(),
            1
        );
    }

    #[test]
    fn calibration_is_monotonic_and_bounded() {
        let p = SearchParams::default();
        for mode in [
            RetrievalMode::Hybrid,
            RetrievalMode::Vector,
            RetrievalMode::Lexical,
        ] {
            let mut last = 0.0;
            for i in 0..=100 {
                let shape = QueryShape {
                    unknown: 0.2,
                    length: 1.5,
                };
                let s = p.calibrate(mode, Lang::Zh, ChunkKind::Section, i as f32 / 100.0, shape);
                assert!((0.0..=1.0).contains(&s) && s >= last);
                last = s;
            }
        }
    }

    #[test]
    fn page_titles_are_found_in_one_pass_and_never_name_their_own_page() {
        let section = |source: &str, title: &str| ChunkRecord {
            kind: ChunkKind::Section,
            source: source.into(),
            title: title.into(),
            heading_path: vec![],
            category: String::new(),
            text: String::new(),
            units: vec![],
        };
        let titles = PageTitles::of(&[
            section("policies/claims.md", "Claims and repairs policy"),
            section("policies/claims-b.md", "Claims and repairs"),
            section("policies/returns.zh.md", "退货与退款政策"),
            section("guides/short.md", "FAQ"),
            section("a.md", "Shared page title"),
            section("b.md", "Shared page title"),
        ]);
        let text = "see claims and repairs policy, or 《退货与退款政策》";
        // Both claims titles occur (one inside the other): the first in title order.
        assert_eq!(
            titles.named_in(text, "product/bikes.md"),
            Some("policies/claims-b.md")
        );
        assert_eq!(
            titles.named_in(text, "policies/claims-b.md"),
            Some("policies/claims.md")
        );
        assert_eq!(
            titles.named_in("按《退货与退款政策》处理", "product/gift.md"),
            Some("policies/returns.zh.md")
        );
        assert_eq!(
            titles.named_in("按《退货与退款政策》处理", "policies/returns.zh.md"),
            None
        );
        // Too short to be a reference, or named by two pages.
        assert_eq!(titles.named_in("read the faq", "x.md"), None);
        assert_eq!(titles.named_in("see shared page title", "x.md"), None);
        assert_eq!(PageTitles::default().named_in(text, "x.md"), None);
    }
}
