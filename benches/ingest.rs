//! Ingest throughput: 10k FAQ entries (question + 3 alternates + answer) from scratch into
//! a fresh sled, built-in embedder. Prints the index size on disk per 1k chunks.

use std::sync::Arc;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use kefu::knowledge::Knowledge;
use kefu::providers::builtin_embedder::BuiltinEmbedder;

#[path = "support/synthetic.rs"]
mod synthetic;

fn ingest(c: &mut Criterion) {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let n = 10_000;
    let src = tempfile::tempdir().expect("tempdir");
    let root = src.path().join("knowledge");
    synthetic::write_faq(&root, n, 3, 5);

    // One ingest outside criterion for the size report.
    {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = sled::Config::new().path(dir.path()).open().expect("sled");
        let kb = Knowledge::open(&db, Arc::new(BuiltinEmbedder::new())).expect("open");
        let report = rt
            .block_on(kb.ingest(std::slice::from_ref(&root)))
            .expect("ingest");
        db.flush().expect("flush");
        let disk = synthetic::dir_size(dir.path());
        let per_k = |bytes: u64| bytes as f64 / (report.chunks as f64 / 1000.0) / 1e6;
        println!(
            "index size: {} chunks, {:.2} MB on disk = {:.2} MB per 1k chunks (kb_ payload {:.2} MB per 1k)",
            report.chunks,
            disk as f64 / 1e6,
            per_k(disk),
            per_k(kb.payload_bytes())
        );
    }

    let mut group = c.benchmark_group("ingest");
    group.sample_size(10);
    group.bench_with_input(BenchmarkId::new("faq_entries", n), &n, |b, _| {
        b.iter_with_setup(
            || {
                let dir = tempfile::tempdir().expect("tempdir");
                let db = sled::Config::new().path(dir.path()).open().expect("sled");
                (dir, db)
            },
            |(dir, db)| {
                let kb = Knowledge::open(&db, Arc::new(BuiltinEmbedder::new())).expect("open");
                rt.block_on(kb.ingest(std::slice::from_ref(&root)))
                    .expect("ingest");
                (dir, db)
            },
        )
    });
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().warm_up_time(Duration::from_millis(100)).measurement_time(Duration::from_secs(5));
    targets = ingest
}
criterion_main!(benches);
