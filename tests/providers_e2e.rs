//! The OpenAI-compatible providers against a fake model server on 127.0.0.1:0: answers reach
//! `/api/chat` through the engine (streamed and not), bad or slow models fall back to the
//! built-in generator / classifier, the circuit breaker stops calls, embeddings batch and a
//! dimension change rebuilds the index. The API key is checked by the fake and must never
//! show in Debug output, errors or metrics.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use axum::body::Body;
use axum::extract::State;
use axum::http::{header, HeaderMap, Request, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use serde_json::{json, Value};
use tower::ServiceExt;

const KEY: &str = "sk-test-7f3a9c1e5b";

/// What the fake does with the next generation request.
#[derive(Clone, Debug)]
enum Cue {
    /// Answer this text (SSE when the request asks for a stream).
    Say(String),
    /// Fail with this status (and `Retry-After: 0` on 429).
    Status(u16),
    /// Never answer.
    Hang,
}

#[derive(Default)]
struct Fake {
    /// Generation cues in order; `default` when empty.
    script: Mutex<VecDeque<Cue>>,
    default: Mutex<Option<Cue>>,
    /// The answer to intent-classification requests.
    intent: Mutex<String>,
    /// Every request body that passed the key check: (path, body).
    seen: Mutex<Vec<(String, Value)>>,
    /// Dimension of the fake embeddings.
    dim: AtomicUsize,
}

impl Fake {
    fn cue(&self, c: Cue) {
        self.script.lock().unwrap().push_back(c);
    }
    fn set_default(&self, c: Cue) {
        *self.default.lock().unwrap() = Some(c);
    }
    fn generations(&self) -> Vec<Value> {
        self.seen
            .lock()
            .unwrap()
            .iter()
            .filter(|(p, b)| p == "chat" && !is_intent(b))
            .map(|(_, b)| b.clone())
            .collect()
    }
    fn embeddings(&self) -> Vec<Value> {
        self.seen
            .lock()
            .unwrap()
            .iter()
            .filter(|(p, _)| p == "embeddings")
            .map(|(_, b)| b.clone())
            .collect()
    }
}

fn is_intent(body: &Value) -> bool {
    body["messages"][0]["content"]
        .as_str()
        .is_some_and(|s| s.contains("You classify one customer-service message"))
}

fn authorized(h: &HeaderMap) -> bool {
    h.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()) == Some(&format!("Bearer {KEY}"))
}

fn unauthorized(h: &HeaderMap) -> Response {
    // Like some real servers, echo the key it was given: kefu must redact it.
    let given = h
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    (
        StatusCode::UNAUTHORIZED,
        format!("{{\"error\":{{\"message\":\"Incorrect API key provided: {given}\"}}}}"),
    )
        .into_response()
}

async fn chat(State(f): State<Arc<Fake>>, h: HeaderMap, Json(body): Json<Value>) -> Response {
    if !authorized(&h) {
        return unauthorized(&h);
    }
    f.seen.lock().unwrap().push(("chat".into(), body.clone()));
    let text = if is_intent(&body) {
        f.intent.lock().unwrap().clone()
    } else {
        let next = f.script.lock().unwrap().pop_front();
        match next.or_else(|| f.default.lock().unwrap().clone()) {
            Some(Cue::Say(t)) => t,
            Some(Cue::Status(s)) => {
                let mut r = (StatusCode::from_u16(s).unwrap(), "{}").into_response();
                if s == 429 {
                    r.headers_mut()
                        .insert(header::RETRY_AFTER, "0".parse().unwrap());
                }
                return r;
            }
            Some(Cue::Hang) => std::future::pending().await,
            None => "nothing scripted".into(),
        }
    };
    if body["stream"] == json!(true) {
        // Deltas of 3 characters, as a model would send them.
        let chars: Vec<char> = text.chars().collect();
        let mut events: Vec<Result<String, std::io::Error>> = chars
            .chunks(3)
            .map(|c| {
                let piece: String = c.iter().collect();
                Ok(format!(
                    "data: {}\n\n",
                    json!({"choices": [{"index": 0, "delta": {"content": piece}}]})
                ))
            })
            .collect();
        events.push(Ok("data: [DONE]\n\n".into()));
        Response::builder()
            .header(header::CONTENT_TYPE, "text/event-stream")
            .body(Body::from_stream(futures::stream::iter(events)))
            .unwrap()
    } else {
        Json(json!({
            "id": "x", "object": "chat.completion",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}]
        }))
        .into_response()
    }
}

/// A deterministic vector per text, of the fake's current dimension.
fn fake_vector(text: &str, dim: usize) -> Vec<f32> {
    let mut v = vec![0.0f32; dim];
    for (i, b) in text.bytes().enumerate() {
        v[(i + b as usize) % dim] += 1.0;
    }
    v[0] += text.len() as f32;
    v
}

async fn embeddings(State(f): State<Arc<Fake>>, h: HeaderMap, Json(body): Json<Value>) -> Response {
    if !authorized(&h) {
        return unauthorized(&h);
    }
    f.seen
        .lock()
        .unwrap()
        .push(("embeddings".into(), body.clone()));
    let dim = f.dim.load(Ordering::SeqCst);
    let inputs: Vec<String> = body["input"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect();
    // Listed in reverse: the client must order by `index`.
    let data: Vec<Value> = inputs
        .iter()
        .enumerate()
        .rev()
        .map(|(i, t)| json!({"object": "embedding", "index": i, "embedding": fake_vector(t, dim)}))
        .collect();
    Json(json!({"object": "list", "data": data, "model": body["model"]})).into_response()
}

async fn start_fake() -> (Arc<Fake>, String) {
    let fake = Arc::new(Fake::default());
    fake.dim.store(8, Ordering::SeqCst);
    *fake.intent.lock().unwrap() = "{}".into();
    let app = Router::new()
        .route("/v1/chat/completions", post(chat))
        .route("/v1/embeddings", post(embeddings))
        .with_state(fake.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (fake, format!("http://{addr}/v1"))
}

const FAQ: &str = concat!(
    r#"{"id":"reset","question":"How do I reset my password?","answer":"Open Settings, choose Security and click Reset password.","alternates":["forgot my password","password reset"]}"#,
    "\n",
    r#"{"id":"pro","question":"How much does the Pro plan cost?","answer":"The Pro plan costs ¥129 per month or ¥1,299 per year.","alternates":["Pro plan price","what does Pro cost"]}"#,
    "\n"
);

struct Kefu {
    router: Router,
    app_metrics: Arc<kefu::metrics::Metrics>,
    _dir: tempfile::TempDir,
}

fn env(k: &str) -> Option<String> {
    (k == "TEST_KEY").then(|| KEY.to_string())
}

fn kb_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let kb = dir.path().join("kb/faq");
    std::fs::create_dir_all(&kb).unwrap();
    std::fs::write(kb.join("demo.jsonl"), FAQ).unwrap();
    dir
}

/// kefu on a temporary sled, its chat model at `base` with `chat_extra` keys added.
async fn kefu(base: &str, chat_extra: &str) -> Kefu {
    let dir = kb_dir();
    let toml = format!(
        "[knowledge]\npaths = [{:?}]\n\n[providers.chat]\nkind = \"openai\"\nbase_url = \"{base}\"\nmodel = \"m\"\napi_key = \"${{TEST_KEY}}\"\n{chat_extra}\n\n[[channels]]\nname = \"site\"\nkind = \"web\"\n",
        dir.path().join("kb")
    );
    let cfg = kefu::config::parse(&toml, "test", &env).expect("config");
    let db = sled::Config::new().temporary(true).open().unwrap();
    let app = kefu::app::App::with_db(Arc::new(cfg), db, kefu::app::IngestPolicy::WhenStale)
        .await
        .expect("app");
    let app_metrics = app.metrics.clone();
    let state = kefu::server::AppState::new(app).unwrap();
    Kefu {
        router: kefu::server::router(state),
        app_metrics,
        _dir: dir,
    }
}

async fn ask(k: &Kefu, session: &str, message: &str) -> Value {
    let req = Request::post("/api/chat")
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(
            json!({"session_id": session, "message": message}).to_string(),
        ))
        .unwrap();
    let resp = k.router.clone().oneshot(req).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let bytes = axum::body::to_bytes(resp.into_body(), 1 << 20)
        .await
        .unwrap();
    serde_json::from_slice(&bytes).unwrap()
}

async fn metrics_text(k: &Kefu) -> String {
    let resp = k
        .router
        .clone()
        .oneshot(Request::get("/metrics").body(Body::empty()).unwrap())
        .await
        .unwrap();
    let bytes = axum::body::to_bytes(resp.into_body(), 1 << 20)
        .await
        .unwrap();
    String::from_utf8(bytes.to_vec()).unwrap()
}

fn failures(k: &Kefu, provider: &str) -> u64 {
    k.app_metrics
        .get("kefu_provider_failures_total", &[("provider", provider)])
}

const BUILTIN_RESET: &str = "Open Settings, choose Security and click Reset password.";

#[tokio::test]
async fn non_streaming_answer_reaches_api_chat_without_markers() {
    let (fake, base) = start_fake().await;
    let k = kefu(&base, "stream = false").await;
    fake.cue(Cue::Say(
        "Go to Settings → Security, then press Reset password [1].".into(),
    ));
    let v = ask(&k, "s-1", "how do I reset my password").await;
    assert_eq!(
        v["reply"], "Go to Settings → Security, then press Reset password.",
        "{v}"
    );
    assert_eq!(v["intent"], "query");
    assert_eq!(v["sources"][0]["path"], "faq/demo.jsonl#reset");
    let gens = fake.generations();
    assert_eq!(gens.len(), 1);
    assert_ne!(gens[0]["stream"], json!(true));
    assert_eq!(gens[0]["model"], "m");
    let sys = gens[0]["messages"][0]["content"].as_str().unwrap();
    assert!(sys.contains("I need to transfer you to a human agent for this issue."));
    let user = gens[0]["messages"][1]["content"].as_str().unwrap();
    assert!(user.contains("[1] How do I reset my password?"), "{user}");
    assert_eq!(failures(&k, "openai"), 0);
}

#[tokio::test]
async fn streamed_answer_is_collected_checked_and_returned() {
    let (fake, base) = start_fake().await;
    let k = kefu(&base, "").await;
    fake.cue(Cue::Say(
        "The Pro plan is ¥129 a month, or ¥1299 a year [1].".into(),
    ));
    let v = ask(&k, "s-2", "How much does the Pro plan cost?").await;
    assert_eq!(
        v["reply"], "The Pro plan is ¥129 a month, or ¥1299 a year.",
        "{v}"
    );
    assert_eq!(v["sources"][0]["path"], "faq/demo.jsonl#pro");
    assert_eq!(fake.generations()[0]["stream"], json!(true));
}

#[tokio::test]
async fn an_ungrounded_price_is_rejected_and_the_builtin_answers() {
    let (fake, base) = start_fake().await;
    let k = kefu(&base, "").await;
    fake.cue(Cue::Say("The Pro plan is only ¥99 a month [1].".into()));
    let v = ask(&k, "s-3", "How much does the Pro plan cost?").await;
    let reply = v["reply"].as_str().unwrap();
    assert!(!reply.contains("99 a month"), "{v}");
    assert!(reply.contains("¥129 per month"), "{v}");
    assert_eq!(failures(&k, "openai"), 1);
    // An answer that cites nothing is rejected too.
    fake.cue(Cue::Say("Just open the settings page.".into()));
    let v = ask(&k, "s-3b", "how do I reset my password").await;
    assert_eq!(v["reply"], BUILTIN_RESET, "{v}");
    assert_eq!(failures(&k, "openai"), 2);
}

#[tokio::test]
async fn too_many_requests_then_success_is_retried() {
    let (fake, base) = start_fake().await;
    let k = kefu(&base, "max_retries = 2").await;
    fake.cue(Cue::Status(429));
    fake.cue(Cue::Status(503));
    fake.cue(Cue::Say(
        "Use Settings → Security → Reset password [1].".into(),
    ));
    let v = ask(&k, "s-4", "how do I reset my password").await;
    assert_eq!(
        v["reply"], "Use Settings → Security → Reset password.",
        "{v}"
    );
    assert_eq!(fake.generations().len(), 3);
    assert_eq!(failures(&k, "openai"), 0);
}

#[tokio::test]
async fn a_hanging_model_times_out_to_the_builtin_answer() {
    let (fake, base) = start_fake().await;
    let k = kefu(&base, "timeout_ms = 300\nmax_retries = 0").await;
    fake.set_default(Cue::Hang);
    let v = ask(&k, "s-5", "how do I reset my password").await;
    assert_eq!(v["reply"], BUILTIN_RESET, "{v}");
    assert_eq!(failures(&k, "openai"), 1);
    let m = metrics_text(&k).await;
    assert!(
        m.contains("kefu_provider_failures_total{provider=\"openai\"} 1"),
        "{m}"
    );
}

#[tokio::test]
async fn the_circuit_breaker_stops_calling_a_failing_model() {
    let (fake, base) = start_fake().await;
    let k = kefu(
        &base,
        "max_retries = 0\nbreaker_failures = 3\nbreaker_cooldown_ms = 60000",
    )
    .await;
    fake.set_default(Cue::Status(500));
    for i in 0..6 {
        let v = ask(&k, &format!("s-6-{i}"), "how do I reset my password").await;
        assert_eq!(v["reply"], BUILTIN_RESET, "{v}");
    }
    assert_eq!(
        fake.generations().len(),
        3,
        "no calls while the breaker is open"
    );
    assert_eq!(failures(&k, "openai"), 6);
}

#[tokio::test]
async fn llm_intent_is_used_and_malformed_json_falls_back_to_builtin() {
    let (fake, base) = start_fake().await;
    let k = kefu(&base, "intent = \"llm_with_fallback\"").await;
    // A valid classification wins over the lexicons ("reset my password" is a query).
    *fake.intent.lock().unwrap() =
        r#"{"intent":"praise","urgency":"low","sentiment":"positive","needs_order_info":false}"#
            .into();
    let v = ask(&k, "s-7", "how do I reset my password").await;
    assert_eq!(v["intent"], "praise", "{v}");
    // Malformed, partial, out of vocabulary: the built-in classifier decides.
    for bad in [
        "sure, it's a refund",
        r#"{"intent":"refund"}"#,
        r#"{"intent":"reimbursement","urgency":"low","sentiment":"neutral","needs_order_info":true}"#,
    ] {
        *fake.intent.lock().unwrap() = bad.into();
        fake.cue(Cue::Say("Open Settings, then Security [1].".into()));
        let v = ask(&k, "s-7b", "how do I reset my password").await;
        assert_eq!(v["intent"], "query", "{bad}: {v}");
        assert_eq!(v["reply"], "Open Settings, then Security.", "{v}");
    }
    assert_eq!(failures(&k, "openai_intent"), 3);
}

#[tokio::test]
async fn the_api_key_never_leaks() {
    let (fake, base) = start_fake().await;
    let k = kefu(&base, "timeout_ms = 300\nmax_retries = 0").await;
    fake.set_default(Cue::Hang);
    ask(&k, "s-8", "how do I reset my password").await;
    assert!(!metrics_text(&k).await.contains(KEY));

    let toml = format!(
        "[providers.chat]\nkind = \"openai\"\nbase_url = \"{base}\"\nmodel = \"m\"\napi_key = \"wrong-{KEY}\"\n"
    );
    let cfg = kefu::config::parse(&toml, "test", &env).unwrap();
    assert!(!format!("{cfg:?}").contains(KEY));
    let chat = kefu::providers::openai_chat::OpenAiChat::new(cfg.providers.chat.as_ref().unwrap())
        .unwrap();
    assert!(!format!("{chat:?}").contains(KEY));
    // The fake answers 401 and echoes the wrong key: the error must not carry it.
    let err = chat
        .complete(json!([{"role": "user", "content": "hi"}]), false, 10)
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("401"), "{err}");
    assert!(!err.contains(KEY), "{err}");
}

fn embed_cfg(base: &str, dim: usize, batch: usize) -> kefu::config::Config {
    let toml = format!(
        "[providers.embedding]\nkind = \"openai\"\nbase_url = \"{base}\"\nmodel = \"bge-m3\"\napi_key = \"${{TEST_KEY}}\"\ndim = {dim}\nbatch_size = {batch}\n"
    );
    kefu::config::parse(&toml, "test", &env).expect("config")
}

#[tokio::test]
async fn embeddings_are_batched_and_kept_in_order() {
    use kefu::providers::Embedder;
    let (fake, base) = start_fake().await;
    let cfg = embed_cfg(&base, 8, 2);
    let e = kefu::providers::openai_embed::OpenAiEmbedder::new(
        cfg.providers.embedding.as_ref().unwrap(),
    )
    .unwrap();
    assert!(!format!("{e:?}").contains(KEY));
    let texts: Vec<String> = ["a", "bb", "ccc", "dddd", "eeeee"]
        .map(String::from)
        .to_vec();
    let v = e.embed(&texts).await.unwrap();
    let calls = fake.embeddings();
    let sizes: Vec<usize> = calls
        .iter()
        .map(|b| b["input"].as_array().unwrap().len())
        .collect();
    assert_eq!(sizes, [2, 2, 1]);
    assert_eq!(calls[0]["model"], "bge-m3");
    let want: Vec<Vec<f32>> = texts.iter().map(|t| fake_vector(t, 8)).collect();
    assert_eq!(v, want);

    // The model answers another dimension than configured: a clear error.
    fake.dim.store(4, Ordering::SeqCst);
    let err = e.embed(&texts[..1]).await.unwrap_err().to_string();
    assert!(
        err.contains("dimension 4") && err.contains("dim = 8"),
        "{err}"
    );
}

#[tokio::test]
async fn a_dimension_change_rebuilds_the_index_on_ingest() {
    let (fake, base) = start_fake().await;
    let dir = kb_dir();
    let paths = vec![dir.path().join("kb")];
    let db = sled::Config::new().temporary(true).open().unwrap();
    let mut cfg = embed_cfg(&base, 8, 16);
    cfg.knowledge.paths = paths.clone();
    let app = kefu::app::App::with_db(Arc::new(cfg), db.clone(), kefu::app::IngestPolicy::Never)
        .await
        .unwrap();
    let first = app.knowledge.ingest(&paths).await.unwrap();
    assert!(first.chunks > 0);
    assert!(!fake.embeddings().is_empty());
    drop(app);

    // Same files, the operator switches to a 4-dimensional model.
    fake.dim.store(4, Ordering::SeqCst);
    let mut cfg = embed_cfg(&base, 4, 16);
    cfg.knowledge.paths = paths.clone();
    let app = kefu::app::App::with_db(Arc::new(cfg), db, kefu::app::IngestPolicy::Never)
        .await
        .unwrap();
    assert!(app.knowledge.is_stale(&paths).unwrap());
    let report = app.knowledge.ingest(&paths).await.unwrap();
    assert!(
        report
            .problems
            .iter()
            .any(|p| p.contains("embedding model changed (bge-m3 8 → bge-m3 4): index rebuilt")),
        "{:?}",
        report.problems
    );
    assert_eq!(report.files_changed, 1, "everything re-embedded");
    assert_eq!(report.chunks, first.chunks);
}

/// Without the `local-embeddings` feature (the default build) the key is refused, saying how
/// to get it; with it, tests/local_embedder.rs runs the model.
#[cfg(not(feature = "local-embeddings"))]
#[tokio::test]
async fn local_embeddings_are_refused_with_a_clear_error() {
    let toml = "[providers.embedding]\nkind = \"local\"\nmodel_dir = \"/models/minilm\"\n";
    let cfg = kefu::config::parse(toml, "test", &env).expect("config");
    let db = sled::Config::new().temporary(true).open().unwrap();
    let err = match kefu::app::App::with_db(Arc::new(cfg), db, kefu::app::IngestPolicy::Never).await
    {
        Ok(_) => panic!("local embeddings must be refused"),
        Err(e) => e.to_string(),
    };
    assert_eq!(
        err,
        "providers.embedding.kind = \"local\" needs a build with the `local-embeddings` feature (cargo build --release --features local-embeddings), which this build does not have"
    );
}
