//! The agent console's hot paths: listing the queue (every console refetches it on each
//! event), the conversation page, and what one login costs (argon2id).
//!
//! `queue_store/*` compares the handoff index with the full scan it replaced, at 20,000
//! conversations of which 50 are handed off. `queue_http/*` is `GET /agent/api/conversations`
//! through the router (cards read the last messages of each handoff). Figures go in notes,
//! never in asserts.

use std::sync::Arc;

use axum::body::Body;
use criterion::{criterion_group, criterion_main, Criterion};
use kefu::app::{App, IngestPolicy};
use kefu::server::{router, AppState};
use kefu::store::{Conversation, Handoff, HandoffCard, Message, Role, SledStore, Store};
use tower::ServiceExt;

const CONVERSATIONS: usize = 20_000;
const HANDOFFS: usize = 50;
const TOKEN: &str = "bench-admin-token";

fn fill(store: &dyn Store) {
    for i in 0..CONVERSATIONS {
        let id = format!("c-{i:05}");
        let mut c = Conversation::new(
            "site",
            adapters::ChannelKind::Web,
            &id,
            Default::default(),
            1,
        );
        for seq in 1..=6u64 {
            let role = if seq % 2 == 1 { Role::User } else { Role::Bot };
            store
                .append_message(
                    "site",
                    &id,
                    &Message::new(c.take_seq(), role, "How do I reset my password?", seq),
                )
                .expect("message");
        }
        if i % (CONVERSATIONS / HANDOFFS) == 0 {
            c.handoff = Some(Handoff::start(
                "human_requested",
                "s".into(),
                HandoffCard::default(),
                i as u64,
            ));
        }
        store.save_conversation(&c).expect("conversation");
    }
}

/// What `handed_off` did before the index: read every conversation.
fn full_scan(db: &sled::Db) -> usize {
    let tree = db.open_tree("conversations").expect("tree");
    tree.iter()
        .values()
        .filter_map(|v| serde_json::from_slice::<Conversation>(&v.ok()?).ok())
        .filter(Conversation::handed_off)
        .count()
}

fn queue(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = sled::Config::new()
        .path(dir.path().join("data"))
        .cache_capacity(16 * 1024 * 1024)
        .open()
        .expect("sled");
    let store = SledStore::open(&db).expect("store");
    fill(&store);
    assert_eq!(store.handed_off().expect("queue").len(), HANDOFFS);
    assert_eq!(full_scan(&db), HANDOFFS);
    c.bench_function("queue_store/handoff_index/20000", |b| {
        b.iter(|| store.handed_off().expect("queue").len())
    });
    c.bench_function("queue_store/full_scan/20000", |b| b.iter(|| full_scan(&db)));

    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let kb = dir.path().join("kb/faq");
    std::fs::create_dir_all(&kb).expect("kb");
    std::fs::write(
        kb.join("faq.jsonl"),
        r#"{"id":"reset","question":"How do I reset my password?","answer":"Open Settings and click Reset password."}"#,
    )
    .expect("faq");
    let toml = format!(
        "[server]\nadmin_token = \"{TOKEN}\"\n[knowledge]\npaths = [{:?}]\n[[channels]]\nname = \"site\"\nkind = \"web\"\n",
        dir.path().join("kb")
    );
    let cfg = kefu::config::parse(&toml, "bench", &|_| None).expect("config");
    drop(store);
    let app = rt.block_on(async {
        let app = App::with_db(Arc::new(cfg), db.clone(), IngestPolicy::WhenStale)
            .await
            .expect("app");
        router(AppState::new(app).expect("state"))
    });
    let get = |path: &str| {
        axum::http::Request::get(path)
            .header("authorization", format!("Bearer {TOKEN}"))
            .body(Body::empty())
            .expect("request")
    };
    c.bench_function("queue_http/50_handoffs", |b| {
        b.iter(|| {
            rt.block_on(async {
                let r = app
                    .clone()
                    .oneshot(get("/agent/api/conversations"))
                    .await
                    .expect("response");
                assert!(r.status().is_success());
                axum::body::to_bytes(r.into_body(), 1 << 22)
                    .await
                    .expect("body")
                    .len()
            })
        })
    });
    c.bench_function("conversation_http/newest_50", |b| {
        b.iter(|| {
            rt.block_on(async {
                let r = app
                    .clone()
                    .oneshot(get("/agent/api/conversations/site/c-00400"))
                    .await
                    .expect("response");
                assert!(r.status().is_success());
            })
        })
    });
}

fn login(c: &mut Criterion) {
    let phc = kefu::agents::password::hash("correct horse battery").expect("hash");
    let mut g = c.benchmark_group("login");
    g.sample_size(20);
    g.bench_function("argon2id_verify", |b| {
        b.iter(|| kefu::agents::password::verify(&phc, "correct horse battery"))
    });
    g.finish();
}

criterion_group!(benches, queue, login);
criterion_main!(benches);
