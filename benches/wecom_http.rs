//! End-to-end WeCom callbacks per second through HTTP: kefu on 127.0.0.1:0 with its own
//! runtime (as a server process has), a reqwest client on another runtime posting
//! encrypted, signed text callbacks (each with its own MsgId, spread over 16 users), timed
//! to the 200. The full path runs: routing, signature check, decryption, XML parse, the
//! dedupe key and inbox entry written and flushed, the queue hand-off. The engine turns and
//! the replies to a fake WeCom run in the background meanwhile, on the same cores, as they
//! would in production. Callbacks are sealed outside the timed part.
//!
//! `cargo bench --bench wecom_http`; figures go in notes, never in asserts. At the end it
//! prints how many acknowledgements a flush covered (`kefu_store_*` in /metrics), when the
//! build has them.

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
    // kefu and the fake WeCom on the server runtime; the load on the client runtime.
    let server = tokio::runtime::Runtime::new().expect("server runtime");
    let client_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("client runtime");
    let seal = Sealer::official();
    let dir = tempfile::tempdir().expect("tempdir");
    let kb = write_kb(dir.path());
    let kefu = server.block_on(async {
        let fake =
            fake_wecom::FakeWeCom::start(&seal.corp_id, APP_SECRET, AGENT_ID, ROBOT_KEY).await;
        let db = sled::Config::new()
            .path(dir.path().join("db"))
            .open()
            .expect("sled");
        Kefu::start(config(&kb, &fake.base), db).await
    });
    let http = client_rt.block_on(async { reqwest::Client::new() });
    let post = |cb: &Callback| {
        let req = http
            .post(format!(
                "{}/wecom/{}?{}",
                kefu.base,
                wecom_kefu::CHANNEL,
                cb.query
            ))
            .body(cb.body.clone());
        async move {
            let status = req.send().await.expect("callback").status();
            assert_eq!(status, 200);
        }
    };
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
            client_rt.block_on(async {
                let started = Instant::now();
                for cb in &cbs {
                    post(cb).await;
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
                client_rt.block_on(async {
                    let started = Instant::now();
                    let mut answers =
                        futures::stream::iter(cbs.iter().map(&post)).buffer_unordered(in_flight);
                    while answers.next().await.is_some() {}
                    started.elapsed()
                })
            })
        });
    }
    group.finish();
    let metrics = client_rt.block_on(async {
        http.get(format!("{}/metrics", kefu.base))
            .send()
            .await
            .expect("metrics")
            .text()
            .await
            .expect("metrics text")
    });
    let value = |name: &str| {
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{name} ")))
            .and_then(|v| v.trim().parse::<f64>().ok())
    };
    if let (Some(waits), Some(flushes)) = (
        value("kefu_store_durable_waits_total"),
        value("kefu_store_flushes_total"),
    ) {
        println!(
            "group commit: {waits} waits answered by {flushes} flushes ({:.1} per flush)",
            waits / flushes.max(1.0)
        );
    }
    kefu.stop();
}

criterion_group!(benches, wecom_http);
criterion_main!(benches);
