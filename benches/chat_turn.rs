//! A full non-LLM turn through HTTP at 10k chunks: `POST /api/chat` on a real socket →
//! intent → retrieval → extractive answer → quality check → stored in sled → JSON.
//! Criterion measures one request at a time; afterwards a fixed run prints p50 / p99 and
//! turns/s with 8 concurrent clients (figures for the notes, never asserted).

use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion};
use kefu::app::{App, IngestPolicy};
use kefu::server::{router, AppState};

#[path = "support/synthetic.rs"]
mod synthetic;

struct Bench {
    rt: tokio::runtime::Runtime,
    url: String,
    questions: Vec<String>,
    _dir: tempfile::TempDir,
}

fn setup(n: usize) -> Bench {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().join("knowledge");
    let questions = synthetic::write_faq(&root, n, 0, 7);
    let toml = format!(
        "[server]\ndata_dir = {:?}\n[knowledge]\npaths = [{:?}]\nmin_score = 0.0\n[[channels]]\nname = \"site\"\nkind = \"web\"\n",
        dir.path().join("data"),
        root
    );
    let cfg = kefu::config::parse(&toml, "bench", &|_| None).expect("config");
    let url = rt.block_on(async {
        let app = App::open(cfg, IngestPolicy::WhenStale).await.expect("app");
        let state = AppState::new(app).expect("state");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move { axum::serve(listener, router(state)).await });
        format!("http://{addr}/api/chat")
    });
    Bench {
        rt,
        url,
        questions,
        _dir: dir,
    }
}

fn body(i: usize, q: &str) -> String {
    serde_json::json!({ "session_id": format!("bench-{}", i % 512), "message": q }).to_string()
}

fn turn(c: &mut Criterion) {
    let b = setup(10_000);
    let client = reqwest::Client::new();
    let mut i = 0usize;
    c.bench_function("chat_turn_http/10000", |bench| {
        bench.iter(|| {
            i += 1;
            let q = &b.questions[i % b.questions.len()];
            b.rt.block_on(async {
                client
                    .post(&b.url)
                    .header("content-type", "application/json")
                    .body(body(i, q))
                    .send()
                    .await
                    .expect("send")
                    .bytes()
                    .await
                    .expect("body")
            })
        })
    });

    // Percentiles and throughput with concurrent clients.
    let total = 4000usize;
    let clients = 8usize;
    let (lat, elapsed) = b.rt.block_on(async {
        let start = Instant::now();
        let mut tasks = Vec::new();
        for c in 0..clients {
            let client = client.clone();
            let url = b.url.clone();
            let qs: Vec<String> = b
                .questions
                .iter()
                .skip(c)
                .step_by(clients)
                .take(total / clients)
                .cloned()
                .collect();
            tasks.push(tokio::spawn(async move {
                let mut lat = Vec::new();
                for (k, q) in qs.iter().enumerate() {
                    let t = Instant::now();
                    client
                        .post(&url)
                        .header("content-type", "application/json")
                        .body(body(c * 10_000 + k, q))
                        .send()
                        .await
                        .expect("send")
                        .bytes()
                        .await
                        .expect("body");
                    lat.push(t.elapsed());
                }
                lat
            }));
        }
        let mut all: Vec<Duration> = Vec::new();
        for t in tasks {
            all.extend(t.await.expect("task"));
        }
        (all, start.elapsed())
    });
    let mut lat = lat;
    lat.sort();
    let p = |q: f64| lat[((lat.len() as f64 * q) as usize).min(lat.len() - 1)];
    println!(
        "chat_turn_http/10000 with {clients} clients: {} turns, p50 {:?}, p99 {:?}, {:.0} turns/s",
        lat.len(),
        p(0.50),
        p(0.99),
        lat.len() as f64 / elapsed.as_secs_f64()
    );
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(50).measurement_time(Duration::from_secs(5));
    targets = turn
}
criterion_main!(benches);
