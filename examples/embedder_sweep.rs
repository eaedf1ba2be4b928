//! Retrieval quality of an embedder on the public dev sets, and the data to tune it.
//!
//! ```text
//! cargo run --release --example embedder_sweep -- ../shared/data               # built-in
//! cargo run --release --features local-embeddings --example embedder_sweep -- \
//!     ../shared/data --local target/test-models/all-MiniLM-L6-v2 [--blend 0.3]  # local model
//! ```
//!
//! `--blend W` blends the model with the built-in embedder (`providers.embedding.builtin_weight`).
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
use kefu::providers::{Embedder, ProviderError};

/// Remembers query vectors: the sweep asks for the same queries many times.
struct Cached {
    inner: Arc<dyn Embedder>,
    seen: Mutex<HashMap<String, Vec<f32>>>,
}

#[async_trait]
impl Embedder for Cached {
    fn model(&self) -> &str {
        self.inner.model()
    }
    fn dim(&self) -> usize {
        self.inner.dim()
    }
    async fn embed(&self, texts: &[String]) -> Result<Vec<Vec<f32>>, ProviderError> {
        if let [one] = texts {
            if let Some(v) = self.seen.lock().unwrap().get(one) {
                return Ok(vec![v.clone()]);
            }
        }
        let out = self.inner.embed(texts).await?;
        if let [one] = texts {
            self.seen
                .lock()
                .unwrap()
                .insert(one.clone(), out[0].clone());
        }
        Ok(out)
    }
}

#[derive(serde::Deserialize)]
struct Case {
    message: String,
    expect_source: Option<String>,
}

fn embedder(local: Option<&Path>) -> anyhow::Result<Arc<dyn Embedder>> {
    match local {
        None => Ok(Arc::new(BuiltinEmbedder::new())),
        #[cfg(feature = "local-embeddings")]
        Some(dir) => Ok(Arc::new(kefu::providers::local_embed::LocalEmbedder::open(
            dir, 32,
        )?)),
        #[cfg(not(feature = "local-embeddings"))]
        Some(_) => anyhow::bail!("--local needs --features local-embeddings"),
    }
}

/// (hit@1, hit@3, MRR) over the in-scope cases, and (raw similarity of the top hit,
/// top hit is right) for every case.
async fn run(
    kb: &Knowledge,
    cases: &[Case],
    mode: RetrievalMode,
    p: &SearchParams,
) -> anyhow::Result<((f64, f64, f64), Vec<(f64, bool)>)> {
    let (mut h1, mut h3, mut rr, mut n) = (0.0, 0.0, 0.0, 0.0);
    let mut points = Vec::new();
    for c in cases {
        let hits = kb.search_with(&c.message, 10, mode, p).await?;
        let rank = c
            .expect_source
            .as_ref()
            .and_then(|e| hits.iter().position(|h| &h.source == e));
        if c.expect_source.is_some() {
            n += 1.0;
            if let Some(r) = rank {
                h1 += f64::from(u8::from(r == 0));
                h3 += f64::from(u8::from(r < 3));
                rr += 1.0 / (r + 1) as f64;
            }
        }
        if let Some(top) = hits.first() {
            // The sweep runs with calibration (1, 0): score = sigmoid(raw).
            let s = f64::from(top.score).clamp(1e-9, 1.0 - 1e-9);
            points.push(((s / (1.0 - s)).ln(), rank == Some(0)));
        }
    }
    Ok(((h1 / n, h3 / n, rr / n), points))
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

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let root = PathBuf::from(args.first().map_or("../shared/data", String::as_str));
    let local = args
        .iter()
        .position(|a| a == "--local")
        .and_then(|i| args.get(i + 1))
        .map(PathBuf::from);
    let blend: Option<f32> = args
        .iter()
        .position(|a| a == "--blend")
        .and_then(|i| args.get(i + 1))
        .map(|w| w.parse())
        .transpose()?;
    let sets = ["banking77", "clinc150", "bitext", "stackfaq"];
    let mut base = embedder(local.as_deref())?;
    if let Some(w) = blend {
        base = Arc::new(kefu::providers::blend::BlendedEmbedder::new(base, w));
    }
    println!("embedder {} ({} dims)", base.model(), base.dim());
    let mut all_points: HashMap<String, Vec<(f64, bool)>> = HashMap::new();
    for set in sets {
        let dir = tempfile::tempdir()?;
        let db = sled::open(dir.path())?;
        let cached: Arc<dyn Embedder> = Arc::new(Cached {
            inner: base.clone(),
            seen: Mutex::new(HashMap::new()),
        });
        let kb = Knowledge::open(&db, cached)?;
        let t = std::time::Instant::now();
        let report = kb.ingest(&[root.join(set).join("knowledge")]).await?;
        let ingest = t.elapsed();
        let text = std::fs::read_to_string(root.join(set).join("cases.jsonl"))?;
        let cases: Vec<Case> = text
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(serde_json::from_str)
            .collect::<Result<_, _>>()?;
        println!(
            "\n{set}: {} chunks ingested in {:.1} s, {} cases",
            report.chunks,
            ingest.as_secs_f64(),
            cases.len()
        );
        let plain = SearchParams::default().uncalibrated();
        for (name, mode) in [
            ("vector", RetrievalMode::Vector),
            ("lexical", RetrievalMode::Lexical),
        ] {
            let ((h1, h3, mrr), points) = run(&kb, &cases, mode, &plain).await?;
            println!("  {name:<12} hit@1 {h1:.3}  hit@3 {h3:.3}  MRR {mrr:.3}");
            all_points
                .entry(name.to_string())
                .or_default()
                .extend(points);
        }
        for pool_weight in [0.4f32, 0.7] {
            for alpha in [0.4f32, 0.5, 0.6, 0.7, 0.8] {
                let p = SearchParams {
                    alpha,
                    pool_weight,
                    ..plain.clone()
                };
                let ((h1, h3, mrr), points) = run(&kb, &cases, RetrievalMode::Hybrid, &p).await?;
                let key = format!("hybrid α={alpha:.1} β={pool_weight:.1}");
                println!("  {key} hit@1 {h1:.3}  hit@3 {h3:.3}  MRR {mrr:.3}");
                all_points.entry(key).or_default().extend(points);
            }
        }
    }
    println!("\ncalibration fit over all sets (k, c): score = 1 / (1 + e^(-k (raw - c)))");
    let mut fits: Vec<_> = all_points.iter().collect();
    fits.sort_by(|a, b| a.0.cmp(b.0));
    for (name, points) in fits {
        let (k, c) = fit(points);
        println!("  {name:<12} k {k:.2}  c {c:.3}");
    }
    Ok(())
}
