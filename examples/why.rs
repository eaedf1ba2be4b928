//! Why did retrieval pick that? Ingests one knowledge directory (built-in embedder, a
//! temporary database) and, for each question, prints its analyzed terms and the top hits
//! with calibrated scores, sources, heading paths and the start of each chunk.
//!
//! ```text
//! cargo run --release --example why -- KNOWLEDGE_DIR "question" ["question" ...]
//! ```

use std::sync::Arc;

use kefu::knowledge::{analyze, Knowledge, RetrievalMode};
use kefu::providers::builtin_embedder::BuiltinEmbedder;

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some((dir, questions)) = args.split_first() else {
        anyhow::bail!("usage: why KNOWLEDGE_DIR QUESTION...");
    };
    let tmp = tempfile::tempdir()?;
    let db = sled::open(tmp.path())?;
    let kb = Knowledge::open(&db, Arc::new(BuiltinEmbedder::new()))?;
    kb.ingest(&[dir.into()]).await?;
    for q in questions {
        println!("{q}\n  terms: {:?}", analyze::terms(q));
        let top: usize = std::env::var("TOPK")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(5);
        for h in kb.search(q, top, RetrievalMode::Hybrid).await? {
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
