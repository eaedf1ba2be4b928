//! Retrieval quality of an embedder on the public dev sets, and the data to tune it.
//!
//! ```text
//! cargo run --release --example embedder_sweep -- ../shared/data               # built-in
//! cargo run --release --features local-embeddings --example embedder_sweep -- \
//!     ../shared/data --local target/test-models/all-MiniLM-L6-v2 [--blend 0.3]  # local model
//! ```
//!
//! `--blend W[,W…]` blends the model with the built-in embedder
//! (`providers.embedding.builtin_weight`), one pass per weight; `--floor F[,F…]` (`EN:ZH` pairs by the query's language, or one value),
//! `--alpha A[,A…]`, `--pool B[,B…]`, `--lang L[,L…]`, `--faq-body W[,W…]` set the grid of
//! `vector_floor`, hybrid `alpha`, `pool_weight`, `language_offset` and `faq_body_weight`; `--cache FILE` keeps the model's vectors between runs.
//! `--sets a,b` picks the sets (default: banking77, clinc150, bitext, stackfaq; `qingshan`
//! reads `qingshan/cases/answers.jsonl`). `--half odd|even` keeps only the odd or even lines
//! of each cases file (1-based), so knobs tuned on one half can be checked on the other.
//! A local model gets its directory's prefixes (`query: ` / `passage: ` for e5).
//!
//! For each set (`<root>/<set>/knowledge` + `<set>/cases.jsonl`) it ingests the knowledge on
//! a temporary database, then prints hit@1 / hit@3 / MRR per retrieval mode and per hybrid
//! weight `alpha`, and the logistic fit of the calibration (`k`, `c` in `search.rs`) of each
//! mode: the label is "the top hit is the expected source", out-of-scope cases (no
//! `expect_source`) count as negatives. Query vectors are cached, so the grid costs one
//! embedding per case.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use kefu::knowledge::{Knowledge, RetrievalMode, SearchParams};
use kefu::providers::builtin_embedder::BuiltinEmbedder;
use kefu::providers::{Embedder, ProviderError, TextRole};

/// Remembers vectors: the sweep asks for the same queries many times, and with `--cache`
/// the knowledge's too, across runs.
struct Cached {
    inner: Arc<dyn Embedder>,
    seen: Mutex<VectorCache>,
}

/// Vectors by (role, text); `None` = embedded as it is.
type VectorCache = HashMap<(Option<TextRole>, String), Vec<f32>>;

impl Cached {
    async fn cached(
        &self,
        texts: &[String],
        role: Option<TextRole>,
    ) -> Result<Vec<Vec<f32>>, ProviderError> {
        let missing: Vec<String> = {
            let seen = self.seen.lock().unwrap();
            texts
                .iter()
                .filter(|t| !seen.contains_key(&(role, (*t).clone())))
                .cloned()
                .collect()
        };
        if !missing.is_empty() {
            let out = match role {
                None => self.inner.embed(&missing).await?,
                Some(r) => self.inner.embed_as(&missing, r).await?,
            };
            let mut seen = self.seen.lock().unwrap();
            for (t, v) in missing.into_iter().zip(out) {
                seen.insert((role, t), v);
            }
        }
        let seen = self.seen.lock().unwrap();
        Ok(texts
            .iter()
            .map(|t| seen[&(role, t.clone())].clone())
            .collect())
    }
}

#[async_trait]
impl Embedder for Cached {
    fn model(&self) -> &str {
        self.inner.model()
    }
    fn dim(&self) -> usize {
        self.inner.dim()
    }
    fn dense_dims(&self) -> usize {
        self.inner.dense_dims()
    }
    async fn embed(&self, texts: &[String]) -> Result<Vec<Vec<f32>>, ProviderError> {
        self.cached(texts, None).await
    }
    async fn embed_as(
        &self,
        texts: &[String],
        role: TextRole,
    ) -> Result<Vec<Vec<f32>>, ProviderError> {
        self.cached(texts, Some(role)).await
    }
}

#[derive(serde::Deserialize)]
struct Case {
    message: String,
    expect_source: Option<String>,
}

impl Case {
    /// `zh` / `en` by the message's script; `cross` when the expected file is in the
    /// other language (qingshan's `.zh.` files and its Chinese FAQ).
    fn groups(&self) -> Vec<&'static str> {
        let zh = |s: &str| s.chars().any(|c| ('\u{4e00}'..='\u{9fff}').contains(&c));
        let lang = if zh(&self.message) { "zh" } else { "en" };
        let mut g = vec![lang];
        if let Some(src) = &self.expect_source {
            let src_zh = src.contains(".zh.") || src.starts_with("faq/tea.jsonl");
            if src_zh != (lang == "zh") {
                g.push("cross");
            }
        }
        g
    }
}

fn embedder(local: Option<&Path>) -> anyhow::Result<Arc<dyn Embedder>> {
    match local {
        None => Ok(Arc::new(BuiltinEmbedder::new())),
        #[cfg(feature = "local-embeddings")]
        Some(dir) => Ok(Arc::new(kefu::providers::local_embed::LocalEmbedder::open(
            dir,
            32,
            &kefu::providers::local_embed::Prefixes::default(),
        )?)),
        #[cfg(not(feature = "local-embeddings"))]
        Some(_) => anyhow::bail!("--local needs --features local-embeddings"),
    }
}

/// Hit@1 / hit@3 / MRR over some cases.
#[derive(Default, Clone, Copy)]
struct Tally {
    n: f64,
    h1: f64,
    h3: f64,
    rr: f64,
}

impl Tally {
    fn add(&mut self, rank: Option<usize>) {
        self.n += 1.0;
        if let Some(r) = rank {
            self.h1 += f64::from(u8::from(r == 0));
            self.h3 += f64::from(u8::from(r < 3));
            self.rr += 1.0 / (r + 1) as f64;
        }
    }
    fn show(&self) -> String {
        let n = self.n.max(1.0);
        format!(
            "hit@1 {:.3}  hit@3 {:.3}  MRR {:.3}",
            self.h1 / n,
            self.h3 / n,
            self.rr / n
        )
    }
}

/// Tallies (all in-scope cases, then per group), and (raw similarity of the top hit, top
/// hit is right) for every case.
async fn run(
    kb: &Knowledge,
    cases: &[Case],
    mode: RetrievalMode,
    p: &SearchParams,
) -> anyhow::Result<(Tally, Vec<(&'static str, Tally)>, Vec<(f64, bool)>)> {
    let mut all = Tally::default();
    let mut groups: Vec<(&'static str, Tally)> = Vec::new();
    let mut points = Vec::new();
    for c in cases {
        let hits = kb.search_with(&c.message, 10, mode, p).await?;
        let rank = c
            .expect_source
            .as_ref()
            .and_then(|e| hits.iter().position(|h| &h.source == e));
        if c.expect_source.is_some() {
            all.add(rank);
            for g in c.groups() {
                match groups.iter_mut().find(|(n, _)| *n == g) {
                    Some((_, t)) => t.add(rank),
                    None => {
                        let mut t = Tally::default();
                        t.add(rank);
                        groups.push((g, t));
                    }
                }
            }
        }
        if let Some(top) = hits.first() {
            // The sweep runs with calibration (1, 0): score = sigmoid(raw).
            let s = f64::from(top.score).clamp(1e-9, 1.0 - 1e-9);
            points.push(((s / (1.0 - s)).ln(), rank == Some(0)));
        }
    }
    groups.sort_by_key(|(n, _)| *n);
    Ok((all, groups, points))
}

/// Query and knowledge vectors kept across runs in a file (`--cache FILE`), keyed by model,
/// role and text: the grid over blend weights and knobs then embeds each text once.
fn load_cache(path: Option<&Path>) -> VectorCache {
    let Some(Ok(bytes)) = path.map(std::fs::read) else {
        return HashMap::new();
    };
    let rows: Vec<(Option<String>, String, Vec<f32>)> =
        serde_json::from_slice(&bytes).unwrap_or_default();
    rows.into_iter()
        .map(|(r, t, v)| {
            let role = match r.as_deref() {
                Some("query") => Some(TextRole::Query),
                Some("passage") => Some(TextRole::Passage),
                _ => None,
            };
            ((role, t), v)
        })
        .collect()
}

fn save_cache(
    path: &Path,
    seen: &HashMap<(Option<TextRole>, String), Vec<f32>>,
) -> anyhow::Result<()> {
    let rows: Vec<(Option<&str>, &str, &Vec<f32>)> = seen
        .iter()
        .map(|((r, t), v)| {
            let role = r.map(|r| match r {
                TextRole::Query => "query",
                TextRole::Passage => "passage",
            });
            (role, t.as_str(), v)
        })
        .collect();
    std::fs::write(path, serde_json::to_vec(&rows)?)?;
    Ok(())
}

/// Logistic regression p = 1 / (1 + e^(-k (x - c))) by Newton's method.
fn fit(points: &[(f64, bool)]) -> (f64, f64) {
    let (mut a, mut b) = (0.0f64, 0.0f64); // p = sigmoid(a x + b)
    for _ in 0..50 {
        let (mut ga, mut gb, mut haa, mut hab, mut hbb) = (0.0, 0.0, 0.0, 0.0, 0.0);
        for &(x, y) in points {
            let p = 1.0 / (1.0 + (-(a * x + b)).exp());
            let e = p - f64::from(u8::from(y));
            let w = (p * (1.0 - p)).max(1e-9);
            ga += e * x;
            gb += e;
            haa += w * x * x;
            hab += w * x;
            hbb += w;
        }
        let det = haa * hbb - hab * hab;
        if det.abs() < 1e-12 {
            break;
        }
        a -= (hbb * ga - hab * gb) / det;
        b -= (haa * gb - hab * ga) / det;
    }
    (a, -b / a)
}

fn list(arg: Option<String>, default: &str) -> anyhow::Result<Vec<f32>> {
    arg.as_deref()
        .unwrap_or(default)
        .split(',')
        .map(|v| Ok(v.trim().parse()?))
        .collect()
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let root = PathBuf::from(args.first().map_or("../shared/data", String::as_str));
    let arg = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .cloned()
    };
    let local = arg("--local").map(PathBuf::from);
    let blends = list(arg("--blend"), "0")?;
    // `EN:ZH` (by the query's language) or one value for both.
    let floors: Vec<[f32; 2]> = arg("--floor")
        .as_deref()
        .unwrap_or("0")
        .split(',')
        .map(|f| -> anyhow::Result<[f32; 2]> {
            Ok(match f.split_once(':') {
                Some((en, zh)) => [en.trim().parse()?, zh.trim().parse()?],
                None => [f.trim().parse()?; 2],
            })
        })
        .collect::<anyhow::Result<_>>()?;
    let alphas = list(arg("--alpha"), "0.4,0.5,0.6,0.7,0.8")?;
    let pools = list(arg("--pool"), "0.4,0.7")?;
    let langs = list(arg("--lang"), "0")?;
    let faq_bodies = list(arg("--faq-body"), "0.7")?;
    let cache_file = arg("--cache").map(PathBuf::from);
    let sets: Vec<String> = arg("--sets")
        .unwrap_or_else(|| "banking77,clinc150,bitext,stackfaq".into())
        .split(',')
        .map(String::from)
        .collect();
    let half = arg("--half");
    if let Some(h) = half.as_deref().filter(|h| *h != "odd" && *h != "even") {
        anyhow::bail!("--half {h}: expected odd or even");
    }
    let model = embedder(local.as_deref())?;
    let cached = Arc::new(Cached {
        inner: model.clone(),
        seen: Mutex::new(load_cache(cache_file.as_deref())),
    });
    for &blend in &blends {
        let base: Arc<dyn Embedder> = if blend > 0.0 {
            Arc::new(kefu::providers::blend::BlendedEmbedder::new(
                cached.clone(),
                blend,
            ))
        } else {
            cached.clone()
        };
        println!("\n=== embedder {} ({} dims)", base.model(), base.dim());
        let mut all_points: HashMap<String, Vec<(f64, bool)>> = HashMap::new();
        for set in &sets {
            let dir = tempfile::tempdir()?;
            let db = sled::open(dir.path())?;
            let kb = Knowledge::open(&db, base.clone())?;
            let t = std::time::Instant::now();
            let report = kb.ingest(&[root.join(set).join("knowledge")]).await?;
            let ingest = t.elapsed();
            if let Some(f) = &cache_file {
                save_cache(f, &cached.seen.lock().unwrap())?;
            }
            let cases_file = match set.as_str() {
                "qingshan" => root.join(set).join("cases/answers.jsonl"),
                _ => root.join(set).join("cases.jsonl"),
            };
            let text = std::fs::read_to_string(cases_file)?;
            let keep = |i: usize| match half.as_deref() {
                Some("odd") => i.is_multiple_of(2), // line 1, 3, … (0-based even)
                Some("even") => !i.is_multiple_of(2),
                _ => true,
            };
            let cases: Vec<Case> = text
                .lines()
                .enumerate()
                .filter(|(i, l)| !l.trim().is_empty() && keep(*i))
                .map(|(_, l)| serde_json::from_str(l))
                .collect::<Result<_, _>>()?;
            println!(
                "\n{set}: {} chunks ingested in {:.1} s, {} cases",
                report.chunks,
                ingest.as_secs_f64(),
                cases.len()
            );
            let show = |key: &str, all: &Tally, groups: &[(&str, Tally)]| {
                let mut line = format!("  {key:<46} {}", all.show());
                if groups.len() > 1 {
                    for (g, t) in groups {
                        line.push_str(&format!(" | {g} {:.3}", t.h1 / t.n.max(1.0)));
                    }
                }
                println!("{line}");
            };
            let lexical = SearchParams::default().uncalibrated();
            let (all, groups, points) = run(&kb, &cases, RetrievalMode::Lexical, &lexical).await?;
            show("lexical", &all, &groups);
            all_points
                .entry("lexical".into())
                .or_default()
                .extend(points);
            for &floor in &floors {
                let plain = SearchParams {
                    vector_floor: floor,
                    ..lexical.clone()
                };
                let key = format!("vector f={:.2}:{:.2}", floor[0], floor[1]);
                let (all, groups, points) = run(&kb, &cases, RetrievalMode::Vector, &plain).await?;
                show(&key, &all, &groups);
                all_points.entry(key).or_default().extend(points);
                for &pool_weight in &pools {
                    let grid: Vec<(f32, f32, f32)> = alphas
                        .iter()
                        .flat_map(|&a| langs.iter().map(move |&l| (a, l)))
                        .flat_map(|(a, l)| faq_bodies.iter().map(move |&b| (a, l, b)))
                        .collect();
                    for (alpha, lang, faq_body) in grid {
                        {
                            let p = SearchParams {
                                alpha,
                                pool_weight,
                                language_offset: lang,
                                faq_body_weight: faq_body,
                                ..plain.clone()
                            };
                            let (all, groups, points) =
                                run(&kb, &cases, RetrievalMode::Hybrid, &p).await?;
                            let key = format!(
                                "hybrid f={:.2}:{:.2} α={alpha:.2} β={pool_weight:.1} λ={lang:.2} b={faq_body:.2}",
                                floor[0],
                                floor[1]
                            );
                            show(&key, &all, &groups);
                            all_points.entry(key).or_default().extend(points);
                        }
                    }
                }
                for &lang in langs.iter().filter(|l| **l != 0.0) {
                    let p = SearchParams {
                        language_offset: lang,
                        ..plain.clone()
                    };
                    let key = format!("vector f={:.2}:{:.2} λ={lang:.2}", floor[0], floor[1]);
                    let (all, groups, points) = run(&kb, &cases, RetrievalMode::Vector, &p).await?;
                    show(&key, &all, &groups);
                    all_points.entry(key).or_default().extend(points);
                }
            }
        }
        println!("\ncalibration fit over all sets (k, c): score = 1 / (1 + e^(-k (raw - c)))");
        let mut fits: Vec<_> = all_points.iter().collect();
        fits.sort_by(|a, b| a.0.cmp(b.0));
        for (name, points) in fits {
            let (k, c) = fit(points);
            println!("  {name:<38} k {k:.2}  c {c:.3}");
        }
    }
    Ok(())
}
