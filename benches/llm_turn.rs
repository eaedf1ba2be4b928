//! The kefu-side cost of an LLM turn: `Engine::handle` with the OpenAI-compatible generator
//! aimed at a fake model on 127.0.0.1 that answers instantly, against the bare HTTP round trip
//! to that fake with the same request (what kefu waits on). The difference is what kefu adds:
//! intent, retrieval, prompt building, JSON / SSE parsing, the grounding check, quality,
//! storage. The built-in generator's turn is measured too, for scale. Figures for the notes.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use criterion::{criterion_group, criterion_main, Criterion};
use kefu::app::{App, IngestPolicy};
use kefu::engine::Engine;
use serde_json::{json, Value};

const ANSWER: &str = "Open Settings, choose Security and click Reset password [1].";

const FAQ: &str = concat!(
    r#"{"id":"reset","question":"How do I reset my password?","answer":"Open Settings, choose Security and click Reset password.","alternates":["forgot my password","password reset"]}"#,
    "\n",
    r#"{"id":"export","question":"How do I export my data?","answer":"Open Settings, choose Data and click Export to download a ZIP file.","alternates":["download my data"]}"#,
    "\n",
    r#"{"id":"invoice","question":"Where can I find my invoices?","answer":"Invoices are under Billing, in the Invoices tab.","alternates":["get an invoice"]}"#,
    "\n",
);
const QUESTIONS: [&str; 3] = [
    "how do I reset my password",
    "how do I export my data",
    "where can I find my invoices",
];

async fn fake_chat(Json(body): Json<Value>) -> Response {
    if body["stream"] == json!(true) {
        let mut sse = String::new();
        for piece in ANSWER.split_inclusive(' ') {
            sse.push_str(&format!(
                "data: {}\n\n",
                json!({"choices": [{"index": 0, "delta": {"content": piece}}]})
            ));
        }
        sse.push_str("data: [DONE]\n\n");
        ([(header::CONTENT_TYPE, "text/event-stream")], sse).into_response()
    } else {
        Json(
            json!({"choices": [{"index": 0, "message": {"role": "assistant", "content": ANSWER}}]}),
        )
        .into_response()
    }
}

struct Setup {
    rt: tokio::runtime::Runtime,
    base: String,
    _dir: tempfile::TempDir,
}

fn setup() -> Setup {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let dir = tempfile::tempdir().expect("tempdir");
    let kb = dir.path().join("kb/faq");
    std::fs::create_dir_all(&kb).expect("kb");
    std::fs::write(kb.join("demo.jsonl"), FAQ).expect("faq");
    let base = rt.block_on(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let app = Router::new().route("/v1/chat/completions", post(fake_chat));
        tokio::spawn(async move { axum::serve(listener, app).await });
        format!("http://{addr}/v1")
    });
    Setup {
        rt,
        base,
        _dir: dir,
    }
}

fn engine(s: &Setup, chat: Option<bool>) -> Arc<Engine> {
    let providers = match chat {
        Some(stream) => format!(
            "[providers.chat]\nkind = \"openai\"\nbase_url = \"{}\"\nmodel = \"m\"\napi_key = \"${{KEY}}\"\nstream = {stream}\n",
            s.base
        ),
        None => String::new(),
    };
    let toml = format!(
        "[knowledge]\npaths = [{:?}]\nmin_score = 0.0\n{providers}",
        s._dir.path().join("kb")
    );
    let cfg = kefu::config::parse(&toml, "bench", &|_| Some("sk-bench".into())).expect("config");
    let db = sled::Config::new().temporary(true).open().expect("sled");
    s.rt.block_on(async {
        App::with_db(Arc::new(cfg), db, IngestPolicy::WhenStale)
            .await
            .expect("app")
            .engine
    })
}

fn inbound(i: usize) -> adapters::Inbound {
    adapters::Inbound {
        channel: "site".into(),
        kind: adapters::ChannelKind::Web,
        conversation: format!("bench-{}", i % 512),
        user: adapters::UserRef {
            id: format!("u-{}", i % 512),
            name: None,
        },
        id: format!("m-{i}"),
        content: adapters::ContentKind::Text,
        text: QUESTIONS[i % QUESTIONS.len()].into(),
        sent_at_ms: 1,
        route: Default::default(),
    }
}

/// The request kefu sends for a turn, sent by a bare client: the model wait alone.
fn model_body(stream: bool) -> Value {
    json!({
        "model": "m",
        "messages": [
            {"role": "system", "content": kefu::providers::prompt::system_prompt(None, "I need to transfer you to a human agent for this issue.")},
            {"role": "user", "content": "Sources:\n[1] How do I reset my password?\nOpen Settings, choose Security and click Reset password.\n\nCustomer question: how do I reset my password"},
        ],
        "temperature": 0.2,
        "max_tokens": 600,
        "stream": stream,
    })
}

fn median(f: &mut dyn FnMut(usize), n: usize) -> Duration {
    let mut v: Vec<Duration> = (0..n)
        .map(|i| {
            let t = Instant::now();
            f(i);
            t.elapsed()
        })
        .collect();
    v.sort();
    v[n / 2]
}

fn bench(c: &mut Criterion) {
    let s = setup();
    let builtin = engine(&s, None);
    let llm_json = engine(&s, Some(false));
    let llm_sse = engine(&s, Some(true));
    // The LLM path really answers (grounded, markers stripped).
    let t = s.rt.block_on(llm_sse.handle(inbound(0))).expect("turn");
    assert_eq!(
        t.reply,
        "Open Settings, choose Security and click Reset password."
    );
    let client = reqwest::Client::new();
    let url = format!("{}/chat/completions", s.base);

    let mut g = c.benchmark_group("llm_turn");
    for (name, e) in [
        ("handle/builtin", &builtin),
        ("handle/openai_json", &llm_json),
        ("handle/openai_sse", &llm_sse),
    ] {
        let mut i = 0usize;
        g.bench_function(name, |b| {
            b.iter(|| {
                i += 1;
                s.rt.block_on(e.handle(inbound(i))).expect("turn")
            })
        });
    }
    for stream in [false, true] {
        let body = model_body(stream);
        let name = if stream {
            "model_roundtrip/sse"
        } else {
            "model_roundtrip/json"
        };
        g.bench_function(name, |b| {
            b.iter(|| {
                s.rt.block_on(async {
                    client
                        .post(&url)
                        .bearer_auth("sk-bench")
                        .json(&body)
                        .send()
                        .await
                        .expect("send")
                        .bytes()
                        .await
                        .expect("body")
                })
            })
        });
    }
    g.finish();

    // Medians of a fixed run, and the difference the notes report.
    let n = 2000;
    let rt = &s.rt;
    let mut k = 1_000_000usize;
    let mut turn = |e: &Arc<Engine>| {
        median(
            &mut |_| {
                k += 1;
                rt.block_on(e.handle(inbound(k))).expect("turn");
            },
            n,
        )
    };
    let h_builtin = turn(&builtin);
    let h_json = turn(&llm_json);
    let h_sse = turn(&llm_sse);
    let rt_of = |stream: bool| {
        let body = model_body(stream);
        median(
            &mut |_| {
                rt.block_on(async {
                    client
                        .post(&url)
                        .bearer_auth("sk-bench")
                        .json(&body)
                        .send()
                        .await
                        .expect("send")
                        .bytes()
                        .await
                        .expect("body")
                });
            },
            n,
        )
    };
    let (rt_json, rt_sse) = (rt_of(false), rt_of(true));
    println!(
        "llm_turn medians over {n}: builtin turn {h_builtin:?}; openai json turn {h_json:?} (model round trip {rt_json:?}, kefu side {:?}); openai sse turn {h_sse:?} (model round trip {rt_sse:?}, kefu side {:?})",
        h_json.saturating_sub(rt_json),
        h_sse.saturating_sub(rt_sse)
    );
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(50).measurement_time(Duration::from_secs(3));
    targets = bench
}
criterion_main!(benches);
