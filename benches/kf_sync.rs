//! WeCom kf sync throughput: a backlog of 1,000 customer messages (250 customers, 4 each:
//! within the 5 replies WeCom allows after a customer's last message; new customers in every
//! sample, see `backlog`)
//! waits in a fake kf API as 10 pages of 100 with `has_more`; one notification, then timed
//! until every message is stored (the cursor at the end: pages pulled, each item's dedupe
//! key and inbox entry written, each page flushed before its cursor) and until every
//! message is answered (engine turn, outbox, `kf/send_msg` accepted by the fake). kefu runs
//! in-process with sled on disk, the fake on the same runtime and cores.
//!
//! `cargo bench --bench kf_sync`; figures go in notes, never in asserts.

use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};

#[path = "../tests/common/fake_kf.rs"]
mod fake_kf;
#[path = "../tests/common/fake_wecom.rs"]
mod fake_wecom;
#[path = "../tests/common/kf_kefu.rs"]
mod kf_kefu;
#[path = "../tests/common/wecom_kefu.rs"]
mod wecom_kefu;

use fake_kf::{FakeKf, KFID};
use kf_kefu::{kf_config, notify, KF_CHANNEL, KF_SECRET};
use wecom_kefu::{write_kb, Kefu, Sealer};

const BACKLOG: usize = 1000;
const CUSTOMERS: usize = 250;
const PAGE: usize = 100;
const QUESTIONS: [&str; 3] = [
    "How do I reset my password?",
    "What is the refund policy?",
    "can I get my money back",
];

/// Poll until `done`, at most a minute; a stall panics with `state()` (what kefu and the
/// fake saw) so the cause shows.
async fn until(mut done: impl FnMut() -> bool, state: impl Fn() -> String) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !done() {
        assert!(
            Instant::now() < deadline,
            "kf sync bench stalled:\n{}",
            state()
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

/// The kf counters, the cursor and the fake's sends and refusals.
fn state(kefu: &Kefu, fake: &FakeKf, cursor_key: &str) -> String {
    let metrics = kefu.state.app.metrics.render(&[]);
    let kf: Vec<&str> = metrics
        .lines()
        .filter(|l| l.starts_with("kefu_") && !l.starts_with("kefu_turn"))
        .collect();
    let cursor = kefu.state.app.store.kv_get(cursor_key).ok().flatten();
    let refusals = fake.send_refusals();
    format!(
        "cursor {:?}\nsent {} refused {} (first {:?})\n{}",
        cursor.map(|c| String::from_utf8_lossy(&c).into_owned()),
        fake.sent_count(),
        refusals.len(),
        refusals.first(),
        kf.join("\n")
    )
}

fn kf_sync(c: &mut Criterion) {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let seal = Sealer::official();
    let dir = tempfile::tempdir().expect("tempdir");
    let kb = write_kb(dir.path());
    let (fake, kefu) = rt.block_on(async {
        let fake = FakeKf::start(&seal.corp_id, KF_SECRET).await;
        fake.set_page_size(PAGE);
        let db = sled::Config::new()
            .path(dir.path().join("db"))
            .open()
            .expect("sled");
        let kefu = Kefu::start(kf_config(&kb, &fake.base, "", ""), db).await;
        (fake, kefu)
    });
    let mut pulled = 0usize;
    // Each sample's customers are new. kf `send_time` has whole seconds, so kefu counts a
    // send made in the same second as a customer message against that message's allowance
    // (it cannot tell which came first; `Quota::reopen`). Samples follow each other within
    // milliseconds, so the same customers writing again would find up to 4 of the previous
    // sample's replies counted and their 4th reply cut: a stall, not a throughput figure.
    let mut backlog = |fake: &FakeKf| {
        let sample = pulled / BACKLOG;
        for i in 0..BACKLOG {
            let user = format!("wmBench{sample:03}x{:03}", i % CUSTOMERS);
            fake.customer_writes(KFID, &user, QUESTIONS[i % QUESTIONS.len()]);
        }
        pulled += BACKLOG;
        format!("CUR-{pulled}")
    };
    let cursor_key = kefu::server::channels::kf::sync::cursor_key(KF_CHANNEL, KFID);

    let mut group = c.benchmark_group("kf_sync");
    group.throughput(Throughput::Elements(BACKLOG as u64));
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(20));
    group.bench_function("backlog_1000_to_stored", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let end = backlog(&fake);
                let answered = fake.sent_count() + BACKLOG;
                total += rt.block_on(async {
                    let store = kefu.state.app.store.clone();
                    let started = Instant::now();
                    notify(&kefu, &fake, &seal).await;
                    until(
                        || {
                            store.kv_get(&cursor_key).ok().flatten().as_deref()
                                == Some(end.as_bytes())
                        },
                        || state(&kefu, &fake, &cursor_key),
                    )
                    .await;
                    let took = started.elapsed();
                    // Let the answers drain before the next sample.
                    until(
                        || fake.sent_count() >= answered,
                        || state(&kefu, &fake, &cursor_key),
                    )
                    .await;
                    took
                });
            }
            total
        })
    });
    group.bench_function("backlog_1000_to_answered", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                backlog(&fake);
                let answered = fake.sent_count() + BACKLOG;
                total += rt.block_on(async {
                    let started = Instant::now();
                    notify(&kefu, &fake, &seal).await;
                    until(
                        || fake.sent_count() >= answered,
                        || state(&kefu, &fake, &cursor_key),
                    )
                    .await;
                    started.elapsed()
                });
            }
            total
        })
    });
    group.finish();
    kefu.stop();
}

criterion_group!(benches, kf_sync);
criterion_main!(benches);
