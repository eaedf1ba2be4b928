//! End-to-end DingTalk callbacks per second through HTTP: kefu in-process on 127.0.0.1:0,
//! a reqwest client posting signed robot callbacks (each with its own msgId, spread over 16
//! conversations), against the fake DingTalk of `tests/common_dingtalk`.
//!
//! - `callback_to_200/*`: timed to the 200: routing, sign check, JSON parse, the persisted
//!   dedupe key and inbox entry, the queue hand-off. Engine turns and replies run in the
//!   background meanwhile, on the same cores, as in production.
//! - `callback_to_reply/8_in_flight`: timed until every reply reached the fake sessionWebhook:
//!   the whole path, engine turn and outbox included.
//!
//! Bodies are built outside the timed part; signing (one HMAC) is inside, as DingTalk's side
//! of the cost is not ours to measure but is negligible. `cargo bench --bench dingtalk_http`;
//! figures go in notes, never in asserts.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use futures::StreamExt;

#[path = "../tests/common_dingtalk/mod.rs"]
mod common_dingtalk;

use common_dingtalk::{now_ms, Callback, Fake, Kefu, Options};

/// FAQ questions: each turn retrieves and answers (no handoff, which would silence the bot
/// in that conversation).
const QUESTIONS: [&str; 3] = [
    "How do I reset my password?",
    "I forgot my password",
    "how can I do a password reset",
];

fn dingtalk_http(c: &mut Criterion) {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let (fake, kefu) = rt.block_on(async {
        let fake = Fake::start().await;
        let kefu = Kefu::start(&fake, Options::default()).await;
        (fake, kefu)
    });
    let webhook = fake.webhook("bench");
    let next = AtomicU64::new(1);
    let batch = |n: u64| -> Vec<String> {
        (0..n)
            .map(|_| {
                let id = next.fetch_add(1, Ordering::Relaxed);
                let msg_id = format!("bench-{id}");
                let conv = format!("cid-{}", id % 16);
                Callback {
                    msg_id: &msg_id,
                    text: QUESTIONS[(id % 3) as usize],
                    group: false,
                    conversation: &conv,
                    staff_id: "staff-bench",
                    webhook: webhook.clone(),
                    webhook_expires_ms: now_ms() + 24 * 3_600_000,
                }
                .json()
            })
            .collect()
    };
    let delivered = || fake.state.webhook_posts.lock().expect("lock").len() as u64;

    let mut group = c.benchmark_group("dingtalk_http");
    group.throughput(Throughput::Elements(1));
    group.sample_size(20);
    group.measurement_time(Duration::from_secs(5));
    group.bench_function("callback_to_200/sequential", |b| {
        b.iter_custom(|iters| {
            let bodies = batch(iters);
            rt.block_on(async {
                let started = Instant::now();
                for body in &bodies {
                    post(&kefu, body).await;
                }
                started.elapsed()
            })
        })
    });
    group.bench_function("callback_to_200/8_in_flight", |b| {
        b.iter_custom(|iters| {
            let bodies = batch(iters);
            rt.block_on(async {
                let started = Instant::now();
                futures::stream::iter(bodies.iter().map(|b| post(&kefu, b)))
                    .buffer_unordered(8)
                    .collect::<Vec<()>>()
                    .await;
                started.elapsed()
            })
        })
    });
    // Let the replies of the runs above drain before timing whole turns.
    rt.block_on(async {
        while !settled(&kefu) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    });
    group.bench_function("callback_to_reply/8_in_flight", |b| {
        b.iter_custom(|iters| {
            let bodies = batch(iters);
            rt.block_on(async {
                let before = delivered();
                let started = Instant::now();
                futures::stream::iter(bodies.iter().map(|b| post(&kefu, b)))
                    .buffer_unordered(8)
                    .collect::<Vec<()>>()
                    .await;
                // Every turn handled (the inbox entry goes after its reply is queued) and
                // every reply sent (the outbox entry goes after DingTalk's "ok").
                while !settled(&kefu) {
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
                assert!(delivered() >= before + iters);
                started.elapsed()
            })
        })
    });
    group.finish();
    let _ = kefu.stop.send(true);
}

/// All turns handled, then (checked second) all replies sent.
fn settled(kefu: &Kefu) -> bool {
    kefu.state.app.store.inbox_all().expect("inbox").is_empty() && kefu.outbox_len() == 0
}

async fn post(kefu: &Kefu, body: &str) {
    let resp = kefu.post(body).await;
    assert_eq!(resp.status(), 200);
}

criterion_group!(benches, dingtalk_http);
criterion_main!(benches);
