//! The kefu-side cost of an LLM turn: `Engine::handle` with the OpenAI-compatible generator
//! aimed at a fake model on 127.0.0.1 that answers instantly, against the bare HTTP round trip
//! to that fake with the same request (what kefu waits on). The difference is what kefu adds:
//! intent, retrieval, prompt building, JSON / SSE parsing, the grounding check, quality,
//! storage. The built-in generator's turn is measured too, for scale. Figures for the notes.
//!
//! Streaming: time to first delta of `Engine::handle_streaming` (what the widget waits for
//! before text shows) with a fake model that streams at a set pace (`tests/paced_model`),
//! against the bare client's time to the model's first complete sentence; and the built-in
//! generator's time to first delta (it has no model to wait for).

#[path = "../tests/paced_model/mod.rs"]
mod paced_model;

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
    engine_at(s, &s.base, chat)
}

fn engine_at(s: &Setup, base: &str, chat: Option<bool>) -> Arc<Engine> {
    let providers = match chat {
        Some(stream) => format!(
            "[providers.chat]\nkind = \"openai\"\nbase_url = \"{base}\"\nmodel = \"m\"\napi_key = \"${{KEY}}\"\nstream = {stream}\n",
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
    time_to_first_delta(&s, &builtin);
    println!(
        "llm_turn medians over {n}: builtin turn {h_builtin:?}; openai json turn {h_json:?} (model round trip {rt_json:?}, kefu side {:?}); openai sse turn {h_sse:?} (model round trip {rt_sse:?}, kefu side {:?})",
        h_json.saturating_sub(rt_json),
        h_sse.saturating_sub(rt_sse)
    );
}

/// The paced model's answer: the first sentence is complete after 4 pieces.
const PACED: [&str; 7] = [
    "Open Settings, ",
    "choose Security ",
    "and click ",
    "Reset password [1]. ",
    "The link ",
    "arrives by e-mail ",
    "soon [1].",
];
const PACE_MS: u64 = 20;

/// Time to the first `delta` of a streamed turn, paced model and built-in generator, against
/// the bare client's wait for the model's first complete sentence.
fn time_to_first_delta(s: &Setup, builtin: &Arc<Engine>) {
    let rt = &s.rt;
    let (model, base) = rt.block_on(paced_model::start());
    model.set_default(paced_model::Script::new(&PACED, PACE_MS));
    let llm = engine_at(s, &base, Some(true));
    let first_delta = |e: &Arc<Engine>, i: usize| -> Duration {
        rt.block_on(async {
            let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
            let t = Instant::now();
            let e2 = e.clone();
            let turn = tokio::spawn(async move { e2.handle_streaming(inbound(i), tx).await });
            let first = loop {
                match rx.recv().await {
                    Some(kefu::engine::StreamEvent::Delta(_)) => break t.elapsed(),
                    Some(_) => continue,
                    None => panic!("no delta"),
                }
            };
            turn.await.expect("join").expect("turn");
            first
        })
    };
    let client = reqwest::Client::new();
    let url = format!("{base}/chat/completions");
    let model_first_sentence = || -> Duration {
        rt.block_on(async {
            let t = Instant::now();
            let mut body = client
                .post(&url)
                .json(&model_body(true))
                .send()
                .await
                .expect("send")
                .bytes_stream();
            let mut seen = String::new();
            while let Some(chunk) = futures::StreamExt::next(&mut body).await {
                seen.push_str(&String::from_utf8_lossy(&chunk.expect("chunk")));
                if seen.contains("[1]. ") {
                    return t.elapsed();
                }
            }
            panic!("no first sentence");
        })
    };
    let n = 40;
    let mut k = 1_999_998usize;
    let median_of = |v: &mut Vec<Duration>| {
        v.sort();
        v[v.len() / 2]
    };
    // Questions 0, 3, 6 … ask for the password reset, which the paced answer cites.
    let llm_ttfd = median_of(
        &mut (0..n)
            .map(|_| {
                k += 3;
                first_delta(&llm, k)
            })
            .collect(),
    );
    let model_ttfs = median_of(&mut (0..n).map(|_| model_first_sentence()).collect());
    let builtin_ttfd = median_of(
        &mut (0..n)
            .map(|_| {
                k += 3;
                first_delta(builtin, k)
            })
            .collect(),
    );
    println!(
        "llm_turn time to first delta (medians over {n}, model pace {PACE_MS} ms/piece): openai sse {llm_ttfd:?} (model's first sentence at {model_ttfs:?}, kefu adds {:?}); builtin {builtin_ttfd:?}",
        llm_ttfd.saturating_sub(model_ttfs)
    );
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(50).measurement_time(Duration::from_secs(3));
    targets = bench
}
criterion_main!(benches);
