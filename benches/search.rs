//! Search latency over 1k / 10k / 100k synthetic FAQ chunks (question + answer, no
//! alternates: two units a chunk), hybrid / vector / lexical, through `Knowledge::search`
//! (query analysis + embedding + scoring). The index is built outside the timed closure.

use std::sync::Arc;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use kefu::knowledge::{Knowledge, RetrievalMode};
use kefu::providers::builtin_embedder::BuiltinEmbedder;

#[path = "support/synthetic.rs"]
mod synthetic;

fn search(c: &mut Criterion) {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let sizes: Vec<usize> = std::env::var("KEFU_BENCH_SIZES")
        .ok()
        .map(|s| s.split(',').filter_map(|n| n.trim().parse().ok()).collect())
        .unwrap_or_else(|| vec![1_000, 10_000, 100_000]);
    let mut group = c.benchmark_group("search");
    for n in sizes {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path().join("knowledge");
        let questions = synthetic::write_faq(&root, n, 0, 7);
        let db = sled::Config::new()
            .path(dir.path().join("db"))
            .open()
            .expect("sled");
        let kb = Knowledge::open(&db, Arc::new(BuiltinEmbedder::new())).expect("open");
        rt.block_on(kb.ingest(&[root])).expect("ingest");
        // Queries: real questions with a word dropped and a word from another question added.
        let mut rng = synthetic::Rng::new(11);
        let queries: Vec<String> = (0..64)
            .map(|_| {
                let mut words: Vec<&str> = questions[rng.below(n)].split(' ').collect();
                words.remove(rng.below(words.len()));
                let other = &questions[rng.below(n)];
                words.push(other.split(' ').next().unwrap_or("x"));
                words.join(" ")
            })
            .collect();
        for mode in [
            RetrievalMode::Hybrid,
            RetrievalMode::Vector,
            RetrievalMode::Lexical,
        ] {
            let mut i = 0;
            group.bench_with_input(
                BenchmarkId::new(format!("{mode:?}").to_lowercase(), n),
                &n,
                |b, _| {
                    b.iter(|| {
                        i = (i + 1) % queries.len();
                        rt.block_on(kb.search(&queries[i], 3, mode))
                            .expect("search")
                    })
                },
            );
        }
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(30).warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(3));
    targets = search
}
criterion_main!(benches);
