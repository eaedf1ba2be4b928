use kefu::knowledge::{Knowledge, RetrievalMode};
use kefu::providers::builtin_embedder::BuiltinEmbedder;
use kefu::providers::{GenerateRequest, Generator};
use std::sync::Arc;
#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let dir = tempfile::tempdir()?;
    let db = sled::open(dir.path())?;
    let kb = Knowledge::open(&db, Arc::new(BuiltinEmbedder::new()))?;
    kb.ingest(&[args[0].clone().into()]).await?;
    for q in &args[1..] {
        let hits = kb.search(q, 5, RetrievalMode::Hybrid).await?;
        println!(
            "== {q}  {:?} {:?}",
            kb.query_shape(q),
            kefu::text::question::Asks::of(q)
        );
        for h in &hits {
            println!("  {:.3} {} {:?}", h.score, h.source, h.heading_path.last());
        }
        let above: Vec<_> = hits
            .into_iter()
            .filter(|h| h.score >= 0.6)
            .take(3)
            .collect();
        let g = kefu::providers::BuiltinGenerator::new();
        let a = g
            .generate(&GenerateRequest {
                question: q,
                hits: &above,
                zh: kefu::text::looks_chinese(q),
                transfer_message: "T",
                other_language_note: "N",
            })
            .await?;
        println!(
            "  -> {:?} conf {:.3} used {:?}",
            a.text.chars().take(200).collect::<String>(),
            a.confidence,
            a.used
        );
    }
    Ok(())
}
