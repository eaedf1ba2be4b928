//! End-to-end WeCom callbacks per second through HTTP: kefu in-process on 127.0.0.1:0, a
//! reqwest client posting encrypted, signed text callbacks (each with its own MsgId, spread
//! over 16 users), timed to the 200. The full path runs: routing, signature check,
//! decryption, XML parse, the persisted dedupe key and inbox entry, the queue hand-off. The
//! engine turns and the replies to a fake WeCom run in the background meanwhile, on the same
//! cores, as they would in production. Callbacks are sealed outside the timed part.
//!
//! `cargo bench --bench wecom_http`; figures go in notes, never in asserts.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use futures::StreamExt;

#[path = "../tests/common/fake_wecom.rs"]
mod fake_wecom;
#[path = "../tests/common/wecom_kefu.rs"]
mod wecom_kefu;

use wecom_kefu::{config, write_kb, Callback, Kefu, Sealer, AGENT_ID, APP_SECRET, ROBOT_KEY};

const QUESTIONS: [&str; 3] = [
    "How do I reset my password?",
    "What is the refund policy?",
    "can I get my money back",
];

fn wecom_http(c: &mut Criterion) {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let seal = Sealer::official();
    let dir = tempfile::tempdir().expect("tempdir");
    let kb = write_kb(dir.path());
    let kefu = rt.block_on(async {
        let fake =
            fake_wecom::FakeWeCom::start(&seal.corp_id, APP_SECRET, AGENT_ID, ROBOT_KEY).await;
        let db = sled::Config::new()
            .path(dir.path().join("db"))
            .open()
            .expect("sled");
        Kefu::start(config(&kb, &fake.base), db).await
    });
    let next = AtomicU64::new(1);
    let batch = |n: u64| -> Vec<Callback> {
        (0..n)
            .map(|_| {
                let id = next.fetch_add(1, Ordering::Relaxed);
                let user = format!("user{}", id % 16);
                seal.text(&user, id, QUESTIONS[(id % 3) as usize])
            })
            .collect()
    };

    let mut group = c.benchmark_group("wecom_http");
    group.throughput(Throughput::Elements(1));
    group.sample_size(20);
    group.measurement_time(Duration::from_secs(5));
    group.bench_function("text_callback_to_200/sequential", |b| {
        b.iter_custom(|iters| {
            let cbs = batch(iters);
            rt.block_on(async {
                let started = Instant::now();
                for cb in &cbs {
                    let (status, _, _) = kefu.post(cb).await;
                    assert_eq!(status, 200);
                }
                started.elapsed()
            })
        })
    });
    // 32 in flight is the load of the issue-15 measurement (wrk, 32 connections): where
    // group commit lets one flush cover many acknowledgements.
    for in_flight in [8, 32] {
        group.bench_function(format!("text_callback_to_200/{in_flight}_in_flight"), |b| {
            b.iter_custom(|iters| {
                let cbs = batch(iters);
                rt.block_on(async {
                    let started = Instant::now();
                    let mut answers = futures::stream::iter(cbs.iter().map(|cb| kefu.post(cb)))
                        .buffer_unordered(in_flight);
                    while let Some((status, _, _)) = answers.next().await {
                        assert_eq!(status, 200);
                    }
                    started.elapsed()
                })
            })
        });
    }
    group.finish();
    kefu.stop();
}

criterion_group!(benches, wecom_http);
criterion_main!(benches);
