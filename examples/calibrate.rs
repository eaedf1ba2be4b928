//! The calibration report (docs/calibration.md) and the fit behind `SearchParams::default()`:
//! one command, on development data only.
//!
//! ```text
//! cargo run --release --example calibrate -- [--data ../shared/data] [--half odd|even|all]
//!     [--fit] [--min-score 0.55] [--mode hybrid|vector|lexical]
//!     [--local DIR]   # with --features local-embeddings: a local model and its knobs
//! ```
//!
//! It ingests each knowledge base once (built-in embedder, temporary database) and asks it
//! the questions of each case file. A question with an `expect_source` is a *positive*: the
//! top hit should be that source. A question the knowledge base cannot answer is a
//! *negative*: off-topic questions (`eval/offtopic.jsonl`), clinc150's out-of-scope ones, and
//! each help centre's questions asked of the other help centre (qingshan ↔ the bundled Lumio
//! knowledge: on-domain customer questions the other knowledge does not cover).
//!
//! `--half odd` keeps the odd lines of every case file (tune on them), `--half even` the even
//! ones (report on them). Without `--fit`, scores use the shipped curves and the report says
//! how well they hold: per language, hit@1 of the top hit, expected calibration error (ECE,
//! 10 bins), precision of the hits that clear `--min-score`, the share of positives answered
//! right (clear it and are right) and of negatives handed off (stay under it). With `--fit`,
//! it fits a logistic curve per (query language, chunk kind) on the chosen half, prints the
//! curves as Rust, and reports with them.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use kefu::knowledge::search::{Calibration, Curve, QueryShape};
use kefu::knowledge::{Knowledge, RetrievalMode, SearchParams};
use kefu::providers::builtin_embedder::BuiltinEmbedder;
use kefu::text::Lang;

#[derive(serde::Deserialize)]
struct Case {
    message: String,
    expect_source: Option<String>,
    expect_handoff: Option<bool>,
}

#[derive(Clone, Copy, PartialEq)]
enum Role {
    /// Cases with a source are positives; cases expecting a handoff without one, negatives.
    AsWritten,
    /// Every case is a negative (asked of a knowledge base that does not hold the answer).
    Negative,
}

struct Set {
    name: &'static str,
    knowledge: PathBuf,
    cases: PathBuf,
    role: Role,
    /// Used to fit the curves. The cross-help-centre negatives are reported, not fitted:
    /// some of those questions are answerable (both shops issue invoices).
    fit: bool,
}

/// One question's top hit.
struct Obs {
    set: &'static str,
    fit: bool,
    lang: Lang,
    section: bool,
    raw: f32,
    /// Positive question whose top hit is the expected source.
    correct: bool,
    positive: bool,
    rank: Option<usize>,
    /// The next hits (ranks 2 and 3): raw, is a section, is the expected source.
    next: Vec<(f32, bool, bool)>,
    /// What calibration sees of the question besides similarities.
    shape: QueryShape,
}

fn arg(args: &[String], name: &str) -> Option<String> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

fn sets(data: &Path, repo: &Path) -> Vec<Set> {
    let qs = data.join("qingshan");
    let mut v = vec![
        Set {
            name: "qingshan",
            knowledge: qs.join("knowledge"),
            cases: qs.join("cases/answers.jsonl"),
            role: Role::AsWritten,
            fit: true,
        },
        Set {
            name: "lumio",
            knowledge: repo.join("knowledge"),
            cases: repo.join("eval/bundled.jsonl"),
            role: Role::AsWritten,
            fit: true,
        },
        Set {
            name: "offtopic→lumio",
            knowledge: repo.join("knowledge"),
            cases: repo.join("eval/offtopic.jsonl"),
            role: Role::Negative,
            fit: true,
        },
        Set {
            name: "offtopic→qingshan",
            knowledge: qs.join("knowledge"),
            cases: repo.join("eval/offtopic.jsonl"),
            role: Role::Negative,
            fit: true,
        },
        Set {
            name: "qingshan→lumio",
            knowledge: repo.join("knowledge"),
            cases: qs.join("cases/answers.jsonl"),
            role: Role::Negative,
            fit: false,
        },
        Set {
            name: "lumio→qingshan",
            knowledge: qs.join("knowledge"),
            cases: repo.join("eval/bundled.jsonl"),
            role: Role::Negative,
            fit: false,
        },
    ];
    for name in ["banking77", "clinc150", "bitext", "stackfaq"] {
        v.push(Set {
            name,
            knowledge: data.join(name).join("knowledge"),
            cases: data.join(name).join("cases.jsonl"),
            role: Role::AsWritten,
            fit: true,
        });
    }
    v
}

fn load_cases(path: &Path, half: &str) -> anyhow::Result<Vec<Case>> {
    let text = std::fs::read_to_string(path)?;
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let keep = match half {
            "odd" => i % 2 == 0,
            "even" => i % 2 == 1,
            _ => true,
        };
        if keep && !line.trim().is_empty() {
            out.push(serde_json::from_str(line)?);
        }
    }
    Ok(out)
}

/// Weighted logistic regression by Newton's method over feature vectors `x` (label `y`),
/// with a Gaussian prior per weight.
fn logistic(points: &[(Vec<f64>, bool, f64)], init: Vec<f64>, prior: &[(f64, f64)]) -> Vec<f64> {
    let m = init.len();
    let mut w = init;
    for _ in 0..100 {
        // A Gaussian prior per weight: (mean, strength).
        let mut g: Vec<f64> = (0..m).map(|i| prior[i].1 * (w[i] - prior[i].0)).collect();
        let mut h = vec![vec![0.0f64; m]; m];
        for (i, row) in h.iter_mut().enumerate() {
            row[i] = prior[i].1;
        }
        for (x, y, weight) in points {
            let z: f64 = (0..m).map(|i| w[i] * x[i]).sum();
            let p = 1.0 / (1.0 + (-z).exp());
            let e = weight * (p - f64::from(u8::from(*y)));
            let s = weight * (p * (1.0 - p)).max(1e-9);
            for i in 0..m {
                g[i] += e * x[i];
                for j in 0..m {
                    h[i][j] += s * x[i] * x[j];
                }
            }
        }
        // Solve h·step = g (Gauss–Jordan with partial pivoting).
        let mut aug: Vec<Vec<f64>> = (0..m)
            .map(|i| {
                let mut r = h[i].clone();
                r.push(g[i]);
                r
            })
            .collect();
        for col in 0..m {
            let piv = (col..m)
                .max_by(|&x, &y| aug[x][col].abs().total_cmp(&aug[y][col].abs()))
                .unwrap_or(col);
            aug.swap(col, piv);
            if aug[col][col].abs() < 1e-12 {
                return w;
            }
            let pivot_row = aug[col].clone();
            for (r, row) in aug.iter_mut().enumerate() {
                if r != col {
                    let f = row[col] / pivot_row[col];
                    for (x, p) in row.iter_mut().zip(&pivot_row).skip(col) {
                        *x -= f * p;
                    }
                }
            }
        }
        // Newton's step, shortened when it is long: on near-separable groups a full step
        // overshoots and the iteration runs off to huge weights.
        let step: Vec<f64> = (0..m).map(|i| aug[i][m] / aug[i][i]).collect();
        let longest = step.iter().fold(0f64, |a, s| a.max(s.abs()));
        let scale = if longest > 2.0 { 2.0 / longest } else { 1.0 };
        for i in 0..m {
            w[i] -= scale * step[i];
        }
    }
    w
}

/// One curve for one (language, chunk kind) group. Features: raw similarity, unknown share,
/// question length, 1. The weights are held near (10, 0, 0) by a prior worth a few dozen
/// questions, so a small group moves them only as far as its data insists (and the slope on
/// raw cannot turn negative). Every set weighs the same in the group, however many
/// questions it has: thousands of intent-set utterances must not drown a help centre's
/// hundred.
fn fit_group(points: &[(f32, QueryShape, bool, &str)], with_shape: bool, answerable: f64) -> Curve {
    let mut per_set: BTreeMap<&str, f64> = BTreeMap::new();
    for p in points {
        *per_set.entry(p.3).or_default() += 1.0;
    }
    let sets = per_set.len() as f64;
    let n = points.len() as f64;
    // Then the classes are weighed to the prior: `answerable` of the questions a help centre
    // gets are about what its knowledge covers.
    let set_weight = |set: &str| n / (sets * per_set[set]);
    let (mut wpos, mut wneg) = (0.0, 0.0);
    for p in points {
        if p.2 {
            wpos += set_weight(p.3);
        } else {
            wneg += set_weight(p.3);
        }
    }
    let class = |y: bool| {
        if y {
            answerable * n / wpos.max(1e-9)
        } else {
            (1.0 - answerable) * n / wneg.max(1e-9)
        }
    };
    let on = if with_shape { 1.0 } else { 0.0 };
    let rows: Vec<(Vec<f64>, bool, f64)> = points
        .iter()
        .map(|&(raw, q, y, set)| {
            (
                vec![
                    f64::from(raw),
                    on * f64::from(q.unknown),
                    on * f64::from(q.length),
                    1.0,
                ],
                y,
                set_weight(set) * class(y),
            )
        })
        .collect();
    let prior = [(10.0, 0.05), (0.0, 0.5), (0.0, 0.5), (0.0, 1e-3)];
    let w = logistic(&rows, vec![10.0, 0.0, 0.0, -2.0], &prior);
    let k = w[0].max(1.0);
    Curve {
        k: k as f32,
        c: (-w[3] / k) as f32,
        u: (-w[1]) as f32,
        l: w[2] as f32,
    }
}

#[derive(Default)]
struct Report {
    n_pos: usize,
    n_neg: usize,
    hit1: usize,
    hit3: usize,
    answered_right: usize,
    answered_wrong_pos: usize,
    neg_handed: usize,
    cleared: usize,
    cleared_right: usize,
    /// (score, correct) of every top hit, for ECE.
    scored: Vec<(f32, bool)>,
    /// Positives whose expected source is among the hits that clear the threshold.
    found: usize,
}

impl Report {
    fn add(&mut self, o: &Obs, score: f32, min: f32, found: bool) {
        self.scored.push((score, o.correct));
        self.found += usize::from(o.positive && found);
        if o.positive {
            self.n_pos += 1;
            self.hit1 += usize::from(o.rank == Some(0));
            self.hit3 += usize::from(o.rank.is_some_and(|r| r < 3));
        } else {
            self.n_neg += 1;
        }
        if score >= min {
            self.cleared += 1;
            self.cleared_right += usize::from(o.correct);
            if o.positive {
                if o.correct {
                    self.answered_right += 1;
                } else {
                    self.answered_wrong_pos += 1;
                }
            }
        } else if !o.positive {
            self.neg_handed += 1;
        }
    }

    fn ece(&self) -> f64 {
        let mut bins = [(0.0f64, 0.0f64, 0usize); 10];
        for &(s, ok) in &self.scored {
            let b = ((s * 10.0) as usize).min(9);
            bins[b].0 += f64::from(s);
            bins[b].1 += f64::from(u8::from(ok));
            bins[b].2 += 1;
        }
        let n = self.scored.len().max(1) as f64;
        bins.iter()
            .filter(|b| b.2 > 0)
            .map(|(s, a, k)| (*k as f64 / n) * ((s - a) / *k as f64).abs())
            .sum()
    }

    fn row(&self, name: &str) -> String {
        let r = |a: usize, b: usize| {
            if b == 0 {
                "    -".to_string()
            } else {
                format!("{:.3}", a as f64 / b as f64)
            }
        };
        format!(
            "| {name} | {} | {} | {} | {} | {:.3} | {} | {} | {} | {} |",
            self.n_pos,
            self.n_neg,
            r(self.hit1, self.n_pos),
            r(self.hit3, self.n_pos),
            self.ece(),
            r(self.cleared_right, self.cleared),
            r(self.answered_right, self.n_pos),
            r(self.found, self.n_pos),
            r(self.neg_handed, self.n_neg),
        )
    }
}

const HEADER: &str = "| group | positives | negatives | hit@1 | hit@3 | ECE | precision ≥ min | top hit right and ≥ min | expected among hits ≥ min | negatives handed off |\n| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |";

#[cfg(feature = "local-embeddings")]
fn local_model(dir: &Path) -> anyhow::Result<(Arc<dyn kefu::providers::Embedder>, SearchParams)> {
    use kefu::providers::local_embed::{LocalEmbedder, Prefixes};
    let m = LocalEmbedder::open(dir, 32, &Prefixes::default())?;
    let profile = m.profile();
    println!(
        "local model {} ({profile:?})",
        kefu::providers::Embedder::model(&m)
    );
    Ok((Arc::new(m), SearchParams::sentence_model(false, &profile)))
}

#[cfg(not(feature = "local-embeddings"))]
fn local_model(_: &Path) -> anyhow::Result<(Arc<dyn kefu::providers::Embedder>, SearchParams)> {
    anyhow::bail!("--local needs --features local-embeddings")
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let repo = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let data = arg(&args, "--data")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo.join("../shared/data"));
    let half = arg(&args, "--half").unwrap_or_else(|| "all".into());
    let min: f32 = arg(&args, "--min-score")
        .map_or(Ok(kefu::knowledge::RECOMMENDED_MIN_SCORE), |s| s.parse())?;
    let mode = match arg(&args, "--mode").as_deref() {
        None | Some("hybrid") => RetrievalMode::Hybrid,
        Some("vector") => RetrievalMode::Vector,
        Some("lexical") => RetrievalMode::Lexical,
        Some(m) => anyhow::bail!("unknown mode {m}"),
    };
    let mode_slot = mode as usize;
    let do_fit = args.iter().any(|a| a == "--fit");
    let with_shape = !args.iter().any(|a| a == "--raw-only");
    // The share of questions a help centre gets that its knowledge covers (the prior the
    // curves are fitted for).
    let answerable: f64 = arg(&args, "--answerable").map_or(Ok(0.75), |s| s.parse())?;
    // `--show SET`: print the questions of that set whose top hit is wrong.
    let show = arg(&args, "--show");
    // `--local DIR`: the model kefu would load for `kind = "local"`, with the knobs it picks
    // for it (`SearchParams::sentence_model`, from the model's measured profile).
    let (embedder, mut shipped) = match arg(&args, "--local") {
        None => (
            Arc::new(BuiltinEmbedder::new()) as Arc<dyn kefu::providers::Embedder>,
            SearchParams::default(),
        ),
        Some(dir) => local_model(Path::new(&dir))?,
    };
    // `--set name=value,...`: try other knobs (alpha, sentence, faq_body, section_body, pool,
    // stop, bigram, unigram, question, concept, language_offset).
    if let Some(sets) = arg(&args, "--set") {
        for kv in sets.split(',') {
            let (k, v) = kv
                .split_once('=')
                .ok_or_else(|| anyhow::anyhow!("--set {kv}"))?;
            let v: f32 = v.parse()?;
            match k {
                "alpha" => shipped.alpha = v,
                "sentence" => shipped.sentence_weight = v,
                "faq_body" => shipped.faq_body_weight = v,
                "section_body" => shipped.section_body_weight = v,
                "pool" => shipped.pool_weight = v,
                "stop" => shipped.terms.stop = v,
                "bigram" => shipped.terms.bigram = v,
                "unigram" => shipped.terms.unigram = v,
                "question" => shipped.terms.question = v,
                "concept" => shipped.terms.concept = v,
                "language_offset" => shipped.language_offset = v,
                _ => anyhow::bail!("unknown knob {k}"),
            }
        }
    }
    let plain = shipped.uncalibrated();

    let mut obs = Vec::new();
    let mut kbs: BTreeMap<PathBuf, (tempfile::TempDir, Knowledge)> = BTreeMap::new();
    // A `--data` directory without some of the public sets (only qingshan, say) checks the
    // others alone: the language offset, for one, only acts on the bilingual help centres.
    for set in sets(&data, &repo)
        .into_iter()
        .filter(|s| s.knowledge.exists())
    {
        if !kbs.contains_key(&set.knowledge) {
            let dir = tempfile::tempdir()?;
            let db = sled::open(dir.path())?;
            let kb = Knowledge::open(&db, embedder.clone())?;
            kb.ingest(std::slice::from_ref(&set.knowledge)).await?;
            kbs.insert(set.knowledge.clone(), (dir, kb));
        }
        let kb = &kbs[&set.knowledge].1;
        for case in load_cases(&set.cases, &half)? {
            let positive = set.role == Role::AsWritten && case.expect_source.is_some();
            let negative = set.role == Role::Negative
                || (case.expect_source.is_none() && case.expect_handoff == Some(true));
            if !positive && !negative {
                continue;
            }
            let hits = kb.search_with(&case.message, 10, mode, &plain).await?;
            let Some(top) = hits.first() else {
                continue;
            };
            let rank = case
                .expect_source
                .as_ref()
                .filter(|_| positive)
                .and_then(|e| hits.iter().position(|h| &h.source == e));
            // Uncalibrated: score = sigmoid(raw).
            let s = top.score.clamp(1e-7, 1.0 - 1e-7);
            if show.as_deref() == Some(set.name)
                && (rank != Some(0) || args.iter().any(|a| a == "--all"))
            {
                println!(
                    "{:.3} u{:.2} {:?}: want {} (rank {:?}), got {} {:?} raw {:.3}",
                    (s / (1.0 - s)).ln(),
                    kb.query_shape(&case.message).unknown,
                    case.message,
                    case.expect_source.as_deref().unwrap_or(""),
                    rank,
                    top.source,
                    top.heading_path.last(),
                    (s / (1.0 - s)).ln()
                );
            }
            let logit = |score: f32| {
                let s = score.clamp(1e-7, 1.0 - 1e-7);
                (s / (1.0 - s)).ln()
            };
            obs.push(Obs {
                set: set.name,
                fit: set.fit,
                lang: Lang::of(&case.message),
                section: !top.source.contains('#'),
                raw: logit(top.score),
                correct: positive && rank == Some(0),
                positive,
                rank,
                next: hits
                    .iter()
                    .enumerate()
                    .skip(1)
                    .take(2)
                    .map(|(r, h)| {
                        (
                            logit(h.score),
                            !h.source.contains('#'),
                            positive && rank == Some(r),
                        )
                    })
                    .collect(),
                shape: kb.query_shape(&case.message),
            });
        }
    }

    if let Some(lang) = arg(&args, "--dump") {
        // raw, label, set: for looking at the separation by eye.
        let mut v: Vec<&Obs> = obs
            .iter()
            .filter(|o| {
                o.lang.as_str() == lang
                    && !o.set.contains("banking")
                    && !o.set.contains("clinc")
                    && !o.set.contains("bitext")
                    && !o.set.contains("stackfaq")
            })
            .collect();
        v.sort_by(|a, b| b.raw.total_cmp(&a.raw));
        for o in v {
            let tag = if o.correct {
                "RIGHT"
            } else if o.positive {
                "wrong"
            } else {
                "neg"
            };
            let kind = if o.section { "section" } else { "faq" };
            println!("{:.3} {tag:<5} {kind} {}", o.raw, o.set);
        }
    }
    let mut params = shipped.clone();
    if do_fit {
        let mut cal = shipped.calibration[mode_slot];
        println!(
            "fitted on half = {half} ({} questions), mode {mode:?}:",
            obs.len()
        );
        for lang in [Lang::Zh, Lang::En] {
            for kind in [
                kefu::knowledge::load::ChunkKind::Faq,
                kefu::knowledge::load::ChunkKind::Section,
            ] {
                let section = kind == kefu::knowledge::load::ChunkKind::Section;
                // One point per question, its top hit's raw similarity; the label: the
                // answer is among the first three hits (the generator quotes from them). So
                // the top hit's score reads "the knowledge retrieved answers this question".
                let pts: Vec<(f32, QueryShape, bool, &str)> = obs
                    .iter()
                    .filter(|o| o.fit && o.lang == lang && o.section == section)
                    .map(|o| (o.raw, o.shape, o.rank.is_some_and(|r| r < 3), o.set))
                    .collect();
                let c = fit_group(&pts, with_shape, answerable);
                println!(
                    "  {lang:?} {kind:?}: curve({:.2}, {:.3}, {:.2}, {:.2})  ({} points)",
                    c.k,
                    c.c,
                    c.u,
                    c.l,
                    pts.len()
                );
                *cal.curve_mut(lang, kind) = c;
            }
        }
        params.calibration[mode_slot] = cal;
    }
    let cal: Calibration = params.calibration[mode_slot];
    let mut by_lang: BTreeMap<String, Report> = BTreeMap::new();
    let mut by_set: BTreeMap<String, Report> = BTreeMap::new();
    for o in &obs {
        let kind = if o.section {
            kefu::knowledge::load::ChunkKind::Section
        } else {
            kefu::knowledge::load::ChunkKind::Faq
        };
        let score = cal.curve(o.lang, kind).apply(o.raw, o.shape);
        let kind_of = |section: bool| {
            if section {
                kefu::knowledge::load::ChunkKind::Section
            } else {
                kefu::knowledge::load::ChunkKind::Faq
            }
        };
        let found = (o.correct && score >= min)
            || o.next.iter().any(|&(raw, sec, ok)| {
                ok && cal.curve(o.lang, kind_of(sec)).apply(raw, o.shape) >= min
            });
        let group = if o.fit {
            o.lang.as_str().to_string()
        } else {
            format!("{} (other help centre's questions)", o.lang.as_str())
        };
        by_lang.entry(group).or_default().add(o, score, min, found);
        by_set
            .entry(format!("{} [{}]", o.set, o.lang.as_str()))
            .or_default()
            .add(o, score, min, found);
    }
    println!("\nhalf = {half}, mode {mode:?}, min_score {min}\n\n{HEADER}");
    for (lang, r) in &by_lang {
        println!("{}", r.row(lang));
    }
    println!("\nper set:\n\n{HEADER}");
    for (name, r) in &by_set {
        println!("{}", r.row(name));
    }
    Ok(())
}
