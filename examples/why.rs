//! Why did retrieval pick that? Ingests one knowledge directory (a temporary database) and,
//! for each question, prints its analyzed terms and the top hits with calibrated scores,
//! sources, heading paths and the start of each chunk. The built-in embedder, or with
//! `--local DIR` (a build with `--features local-embeddings`) a local sentence model and its
//! search knobs, as `kind = "local"` uses them. `TOPK=10` shows more hits; `MODE=vector` / `MODE=lexical` one side of the hybrid; `TERMS=1` what each
//! query term meets in the index.
//!
//! ```text
//! cargo run --release --example why -- [--local DIR] KNOWLEDGE_DIR "question" ["question" ...]
//! ```

use std::sync::Arc;

use kefu::knowledge::{analyze, Knowledge, RetrievalMode, SearchParams};
use kefu::providers::builtin_embedder::BuiltinEmbedder;
use kefu::providers::Embedder;

#[cfg(feature = "local-embeddings")]
fn local_model(dir: &str) -> anyhow::Result<(Arc<dyn Embedder>, SearchParams)> {
    use kefu::providers::local_embed::{LocalEmbedder, Prefixes};
    let m = LocalEmbedder::open(std::path::Path::new(dir), 32, &Prefixes::default())?;
    let profile = m.profile();
    Ok((Arc::new(m), SearchParams::sentence_model(false, &profile)))
}

#[cfg(not(feature = "local-embeddings"))]
fn local_model(_: &str) -> anyhow::Result<(Arc<dyn Embedder>, SearchParams)> {
    anyhow::bail!("--local needs --features local-embeddings")
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let model = match args.iter().position(|a| a == "--local") {
        Some(i) if i + 1 < args.len() => {
            let dir = args.remove(i + 1);
            args.remove(i);
            Some(local_model(&dir)?)
        }
        _ => None,
    };
    let Some((dir, questions)) = args.split_first() else {
        anyhow::bail!("usage: why [--local DIR] KNOWLEDGE_DIR QUESTION...");
    };
    let top: usize = std::env::var("TOPK")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5);
    // MODE=vector or MODE=lexical looks at one side of the hybrid alone.
    let mode = match std::env::var("MODE").as_deref() {
        Ok("vector") => RetrievalMode::Vector,
        Ok("lexical") => RetrievalMode::Lexical,
        _ => RetrievalMode::Hybrid,
    };
    let tmp = tempfile::tempdir()?;
    let db = sled::open(tmp.path())?;
    let kb = match model {
        Some((embedder, params)) => {
            let kb = Knowledge::open(&db, embedder)?;
            kb.set_params(params);
            kb
        }
        None => Knowledge::open(&db, Arc::new(BuiltinEmbedder::new()))?,
    };
    kb.ingest(&[dir.into()]).await?;
    for q in questions {
        println!("{q}\n  terms: {:?}", analyze::terms(q));
        // TERMS=1: what each term meets (indexed form, IDF, match factor, unit count).
        if std::env::var("TERMS").is_ok() {
            for e in kb.explain_terms(q) {
                println!(
                    "    {:<14} w{:.1} units {:?} sentences {:?}",
                    e.term, e.weight, e.units, e.sentences
                );
            }
        }
        for h in kb.search(q, top, mode).await? {
            let start: String = h.text.chars().take(70).collect();
            println!(
                "  {:.3} {} {:?}\n        {}",
                h.score,
                h.source,
                h.heading_path,
                start.replace('\n', " ")
            );
        }
    }
    Ok(())
}
