//! Acknowledged means durable, through the router: a full disk (injected in the store)
//! answers 503 and never a false 200, the service recovers by itself once writes work
//! again, a full conversation queue pushes back, and a replayed message whose turn was
//! already recorded is not answered twice.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use adapters::wecom::{signature, Cipher};
use axum::body::Body;
use axum::http::{header, Request, StatusCode};
use axum::Router;
use tower::ServiceExt;

use super::*;
use crate::app::{App, IngestPolicy};
use crate::store::SledStore;
use crate::testing::FaultyStore;

struct Rig {
    router: Router,
    state: AppState,
    faulty: Arc<FaultyStore>,
    seal: Seal,
    _dir: tempfile::TempDir,
}

/// WeCom callbacks sealed with the official sample corp's keys.
struct Seal {
    corp_id: String,
    token: String,
    cipher: Cipher,
}

impl Seal {
    fn official() -> (Self, String) {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/adapters/tests/vectors/wecom.json"
        );
        let all: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        let v = all["vectors"]
            .as_array()
            .unwrap()
            .iter()
            .find(|v| v["name"] == "B.post_text")
            .unwrap();
        let s = |k: &str| v[k].as_str().unwrap().to_string();
        let key = s("encoding_aes_key");
        (
            Seal {
                corp_id: s("corp_id"),
                token: s("token"),
                cipher: Cipher::new(&key).unwrap(),
            },
            key,
        )
    }

    /// A text callback `msg_id` from `from`, as a request.
    fn text(&self, from: &str, msg_id: u64, content: &str) -> Request<Body> {
        let inner = format!(
            "<xml><ToUserName><![CDATA[{c}]]></ToUserName><FromUserName><![CDATA[{from}]]></FromUserName><CreateTime>1700000000</CreateTime><MsgType><![CDATA[text]]></MsgType><Content><![CDATA[{content}]]></Content><MsgId>{msg_id}</MsgId><AgentID>1000002</AgentID></xml>",
            c = self.corp_id
        );
        let encrypt = self
            .cipher
            .encrypt(inner.as_bytes(), &self.corp_id, &mut rand::thread_rng());
        // Signed now: callbacks signed outside `timestamp_window_ms` are refused as replays.
        let ts = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs()
            .to_string();
        let nonce = "1597212914";
        let sig = signature(&self.token, &ts, nonce, &encrypt);
        Request::post(format!(
            "/wecom/support?msg_signature={sig}&timestamp={ts}&nonce={nonce}"
        ))
        .body(Body::from(format!(
            "<xml><ToUserName><![CDATA[{}]]></ToUserName><Encrypt><![CDATA[{encrypt}]]></Encrypt><AgentID><![CDATA[1000002]]></AgentID></xml>",
            self.corp_id
        )))
        .unwrap()
    }
}

async fn rig(queue_per_conversation: usize) -> Rig {
    let dir = tempfile::tempdir().unwrap();
    let kb = dir.path().join("kb/faq");
    std::fs::create_dir_all(&kb).unwrap();
    std::fs::write(
        kb.join("demo.jsonl"),
        r#"{"id":"reset","question":"How do I reset my password?","answer":"Open Settings, choose Security and click Reset password."}"#,
    )
    .unwrap();
    let (seal, aes_key) = Seal::official();
    let toml = format!(
        r#"
[server]
queue_per_conversation = {queue_per_conversation}

[knowledge]
paths = [{kb:?}]

[[channels]]
name = "site"
kind = "web"

[[channels]]
name = "support"
kind = "wecom"
corp_id = "{corp}"
agent_id = 1000002
secret = "s"
token = "{token}"
encoding_aes_key = "{aes_key}"
api_base = "http://127.0.0.1:9"
"#,
        kb = dir.path().join("kb").display().to_string(),
        corp = seal.corp_id,
        token = seal.token,
    );
    let config = crate::config::parse(&toml, "test", &|_| None).unwrap();
    let db = sled::Config::new().temporary(true).open().unwrap();
    let faulty = Arc::new(FaultyStore::new(Arc::new(SledStore::open(&db).unwrap())));
    let app = App::with_store(
        Arc::new(config),
        db,
        faulty.clone(),
        IngestPolicy::WhenStale,
    )
    .await
    .unwrap();
    let state = AppState::new(app).unwrap();
    Rig {
        router: router(state.clone()),
        state,
        faulty,
        seal,
        _dir: dir,
    }
}

async fn send(r: &Rig, req: Request<Body>) -> (StatusCode, String) {
    let post = req.method() == axum::http::Method::POST;
    let resp = r.router.clone().oneshot(req).await.unwrap();
    let status = resp.status();
    if post && status == StatusCode::SERVICE_UNAVAILABLE {
        assert_eq!(
            resp.headers().get(header::RETRY_AFTER).unwrap(),
            "1",
            "a 503 says when to try again"
        );
    }
    let body = axum::body::to_bytes(resp.into_body(), 1 << 20)
        .await
        .unwrap();
    (status, String::from_utf8_lossy(&body).to_string())
}

fn chat(session: &str, text: &str) -> Request<Body> {
    Request::post("/api/chat")
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(
            serde_json::json!({"session_id": session, "message": text}).to_string(),
        ))
        .unwrap()
}

fn get(path: &str) -> Request<Body> {
    Request::get(path).body(Body::empty()).unwrap()
}

/// The user messages stored for WeCom user `from` with platform id `msg_id`.
fn stored(r: &Rig, from: &str, msg_id: u64) -> usize {
    r.state
        .app
        .store
        .messages("support", from, 0, 1000)
        .unwrap()
        .iter()
        .filter(|m| m.platform_id.as_deref() == Some(&msg_id.to_string()))
        .count()
}

async fn until(what: &str, mut f: impl FnMut() -> bool) {
    for _ in 0..500 {
        if f() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("timed out waiting for {what}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_answers_503_never_a_false_200_and_recovers_without_a_restart() {
    let r = rig(64).await;
    let q = "How do I reset my password?";
    assert_eq!(send(&r, r.seal.text("alice", 1, q)).await.0, StatusCode::OK);
    assert_eq!(send(&r, chat("web-1", q)).await.0, StatusCode::OK);

    // The disk fills up: nothing can be written, nothing is acknowledged.
    r.faulty.set_disk_full(true);
    let (status, body) = send(&r, r.seal.text("bob", 2, q)).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert!(body.contains("try again"), "{body}");
    assert_eq!(
        send(&r, chat("web-1", "and my refund?")).await.0,
        StatusCode::SERVICE_UNAVAILABLE
    );
    let (status, body) = send(&r, get("/healthz")).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(body.contains("No space left on device"), "{body}");
    // Written but not flushed is not acknowledged either, not even for the platform's
    // retry, which finds the key already remembered.
    r.faulty.fail_writes.store(false, Ordering::SeqCst);
    for _ in 0..2 {
        assert_eq!(
            send(&r, r.seal.text("carol", 3, q)).await.0,
            StatusCode::SERVICE_UNAVAILABLE
        );
    }
    tokio::time::sleep(Duration::from_millis(1100)).await; // the last probe goes stale
    let (_, metrics) = send(&r, get("/metrics")).await;
    assert!(metrics.contains("kefu_store_writable 0"), "{metrics}");

    // Space returns. No restart: the platforms' retries are taken, /healthz is ok again.
    r.faulty.set_disk_full(false);
    assert_eq!(send(&r, r.seal.text("bob", 2, q)).await.0, StatusCode::OK);
    assert_eq!(send(&r, r.seal.text("carol", 3, q)).await.0, StatusCode::OK);
    assert_eq!(
        send(&r, chat("web-1", "and my refund?")).await.0,
        StatusCode::OK
    );
    let (status, body) = send(&r, get("/healthz")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (_, metrics) = send(&r, get("/metrics")).await;
    assert!(metrics.contains("kefu_store_writable 1"), "{metrics}");

    // Every acknowledged message is stored once; the one refused while full was taken
    // on its retry.
    let store = r.state.app.store.clone();
    until("every turn", || store.inbox_len().unwrap() == 0).await;
    for (from, id) in [("alice", 1), ("bob", 2), ("carol", 3)] {
        assert_eq!(stored(&r, from, id), 1, "{from}");
    }
    let web: Vec<_> = store
        .messages("site", "web-1", 0, 100)
        .unwrap()
        .into_iter()
        .map(|m| m.text)
        .collect();
    assert_eq!(
        web.len(),
        4,
        "two turns, the refused one not among them: {web:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resend_of_a_message_already_on_disk_is_answered_without_a_flush() {
    let r = rig(64).await;
    let q = "How do I reset my password?";
    assert_eq!(send(&r, r.seal.text("alice", 1, q)).await.0, StatusCode::OK);
    // From now on no flush succeeds: only what is already on disk can be acknowledged.
    r.faulty.fail_flush.store(true, Ordering::SeqCst);
    let (status, body) = send(&r, r.seal.text("alice", 1, q)).await;
    assert_eq!(status, StatusCode::OK, "the platform's resend: {body}");
    assert_eq!(
        send(&r, r.seal.text("alice", 2, q)).await.0,
        StatusCode::SERVICE_UNAVAILABLE,
        "a new message cannot be made durable"
    );
    assert_eq!(
        send(&r, r.seal.text("alice", 2, q)).await.0,
        StatusCode::SERVICE_UNAVAILABLE,
        "nor its resend: its first copy was written, never flushed"
    );
    r.faulty.fail_flush.store(false, Ordering::SeqCst);
    assert_eq!(send(&r, r.seal.text("alice", 2, q)).await.0, StatusCode::OK);
    let store = r.state.app.store.clone();
    until("every turn", || store.inbox_len().unwrap() == 0).await;
    for id in [1, 2] {
        assert_eq!(stored(&r, "alice", id), 1, "message {id} stored once");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_conversation_queue_pushes_back_before_writing_anything() {
    let r = rig(2).await;
    let q = "How do I reset my password?";
    // Turns stall (their writes fail and are retried), so dave's queue fills up.
    r.faulty.fail_turns.store(true, Ordering::SeqCst);
    for id in [10, 11] {
        assert_eq!(send(&r, r.seal.text("dave", id, q)).await.0, StatusCode::OK);
    }
    let (status, body) = send(&r, r.seal.text("dave", 12, q)).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(body.contains("queue is full"), "{body}");
    assert_eq!(
        r.state.app.store.inbox_len().unwrap(),
        2,
        "the refused message was not written"
    );
    // Other customers are not held up by dave's queue.
    assert_eq!(send(&r, r.seal.text("erin", 20, q)).await.0, StatusCode::OK);
    let (_, metrics) = send(&r, get("/metrics")).await;
    assert!(
        metrics.contains("kefu_callbacks_total{channel=\"support\",outcome=\"busy\"} 1"),
        "{metrics}"
    );

    r.faulty.fail_turns.store(false, Ordering::SeqCst);
    let store = r.state.app.store.clone();
    until("the stalled turns", || store.inbox_len().unwrap() == 0).await;
    assert_eq!(send(&r, r.seal.text("dave", 12, q)).await.0, StatusCode::OK);
    until("the retried message", || stored(&r, "dave", 12) == 1).await;
    for id in [10, 11] {
        assert_eq!(stored(&r, "dave", id), 1);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replayed_message_whose_turn_was_recorded_gets_that_reply_not_a_second_turn() {
    let r = rig(64).await;
    let store = r.state.app.store.clone();
    // What a crash between a turn's record and its reply's queueing leaves behind: the
    // message in the inbox, its turn in the conversation, nothing in the outbox.
    let m = adapters::Inbound {
        channel: "support".into(),
        kind: adapters::ChannelKind::WeCom,
        conversation: "frank".into(),
        user: adapters::UserRef {
            id: "frank".into(),
            name: None,
        },
        id: "77".into(),
        content: adapters::ContentKind::Text,
        text: "How do I reset my password?".into(),
        sent_at_ms: 1_700_000_000_000,
        route: Default::default(),
    };
    store.inbox_accept("support:77", &m, 1, 86_400_000).unwrap();
    let turn = r.state.app.engine.handle(m).await.unwrap();
    assert!(turn.reply.contains("Reset password"));

    r.state.start_background();
    until("the replay", || store.inbox_len().unwrap() == 0).await;
    r.state.stop_background();
    assert_eq!(
        store.messages("support", "frank", 0, 10).unwrap().len(),
        2,
        "one turn, not two"
    );
    let queued = store.outbox_items("support", 10).unwrap();
    assert_eq!(queued.len(), 1, "the recorded reply, once");
    assert!(queued[0].call.body.contains("Reset password"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stop_keeps_unfinished_turns_in_the_inbox_for_the_next_start() {
    let r = rig(64).await;
    let q = "How do I reset my password?";
    // Turns stall: one in hand (retried), one queued behind it.
    r.faulty.fail_turns.store(true, Ordering::SeqCst);
    for id in [30, 31] {
        assert_eq!(send(&r, r.seal.text("gina", id, q)).await.0, StatusCode::OK);
    }
    // The conversation worker stops between attempts; nothing is lost or half done.
    assert!(
        r.state.shutdown(Duration::from_secs(20)).await,
        "every worker stopped in time"
    );
    let store = r.state.app.store.clone();
    assert_eq!(store.inbox_len().unwrap(), 2);
    assert_eq!(stored(&r, "gina", 30), 0);
    // While stopping, new platform messages are turned away with a 503.
    assert_eq!(
        send(&r, r.seal.text("gina", 32, q)).await.0,
        StatusCode::SERVICE_UNAVAILABLE
    );
    let (status, body) = send(&r, get("/healthz")).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(body.contains("stopping"), "{body}");

    // The next start (same store) replays both, in order, once.
    r.faulty.fail_turns.store(false, Ordering::SeqCst);
    let next = AppState::new(
        App::with_store(
            r.state.app.config.clone(),
            r.state.app.db.clone(),
            r.faulty.clone(),
            IngestPolicy::Never,
        )
        .await
        .unwrap(),
    )
    .unwrap();
    next.start_background();
    until("the replayed turns", || store.inbox_len().unwrap() == 0).await;
    next.stop_background();
    let texts: Vec<_> = store
        .messages("support", "gina", 0, 10)
        .unwrap()
        .into_iter()
        .map(|m| (m.role, m.platform_id))
        .collect();
    assert_eq!(texts.len(), 4, "{texts:?}");
    assert_eq!(texts[0].1.as_deref(), Some("30"));
    assert_eq!(texts[2].1.as_deref(), Some("31"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_letters_are_listed_for_agents_and_can_be_queued_again_or_discarded() {
    let r = rig(64).await;
    let store = r.state.app.store.clone();
    let items = r.state.platforms.outbox.items(
        "support",
        "hank",
        None,
        vec![(
            adapters::Call {
                method: "POST".into(),
                url: "/cgi-bin/message/send".into(),
                body: r#"{"touser":"hank","text":{"content":"your refund"}}"#.into(),
                auth: adapters::CallAuth::WeComToken,
            },
            vec![],
        )],
    );
    for _ in 0..2 {
        r.state.platforms.outbox.push(&items, None).unwrap();
    }
    for item in store.outbox_items("support", 10).unwrap() {
        store
            .dead_letter(&crate::store::DeadLetter {
                item,
                reason: "refused by the platform: errcode 81013".into(),
                dead_ms: 5,
            })
            .unwrap();
    }
    let (status, body) = send(&r, get("/agent/api/dead-letters")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["total"], 2);
    let first = &v["dead_letters"][0];
    assert_eq!(first["conversation"], "hank");
    assert_eq!(first["target"], "support");
    assert!(first["reason"].as_str().unwrap().contains("81013"));
    assert!(first["body"].as_str().unwrap().contains("your refund"));
    assert!(first.get("url").is_none(), "no call URL for agents");
    let (_, metrics) = send(&r, get("/metrics")).await;
    assert!(metrics.contains("kefu_outbox_dead_letters 2"), "{metrics}");

    let (a, b) = (
        first["id"].as_u64().unwrap(),
        v["dead_letters"][1]["id"].as_u64().unwrap(),
    );
    let post = |path: String| Request::post(path).body(Body::empty()).unwrap();
    let (status, _) = send(&r, post(format!("/agent/api/dead-letters/{a}/retry"))).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(store.outbox_len().unwrap(), 1, "queued again");
    let (status, _) = send(&r, post(format!("/agent/api/dead-letters/{b}/discard"))).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(store.dead_letter_count().unwrap(), 0);
    let (status, _) = send(&r, post(format!("/agent/api/dead-letters/{b}/retry"))).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_stops_with_an_error_when_the_store_keeps_failing() {
    let r = rig(64).await;
    let state = r.state.clone();
    // The config says 30 s; this test cannot wait that long: the same rig, 1 s.
    let mut config = (*state.app.config).clone();
    config.server.store_failure_exit_secs = 1;
    let app = App::with_store(
        Arc::new(config),
        state.app.db.clone(),
        r.faulty.clone(),
        IngestPolicy::Never,
    )
    .await
    .unwrap();
    let state = AppState::new(app).unwrap();
    let serving = tokio::spawn(serve(state.clone(), "127.0.0.1:0"));
    r.faulty.set_disk_full(true);
    state
        .app
        .commit
        .health()
        .failed("No space left on device [injected]");
    let ended = tokio::time::timeout(Duration::from_secs(20), serving)
        .await
        .expect("serve stopped by itself")
        .unwrap();
    let err = ended.expect_err("a failing store ends serve with an error");
    let msg = format!("{err:#}");
    assert!(msg.contains("could not write"), "{msg}");
    assert!(msg.contains("supervisor"), "{msg}");
}

/// A message of the WeCom channel as a pull API hands it over (no callback of its own).
fn fetched_message(user: &str, id: u64) -> adapters::Inbound {
    let mut m = crate::testing::web_message(user, &id.to_string(), "How do I reset my password?");
    m.channel = "support".into();
    m.kind = adapters::ChannelKind::WeCom;
    m
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fetched_page_is_on_disk_before_ok_and_a_refetch_skips_what_was_stored() {
    use axum::response::IntoResponse;
    let r = rig(2).await;
    let page: Vec<_> = (1..=3).map(|i| fetched_message("ann", i)).collect();
    let take = |page: Vec<adapters::Inbound>| fetched::accept_fetched(&r.state, "support", page);

    // A full disk: refused (the cursor stays), nothing kept.
    r.faulty.set_disk_full(true);
    let err = take(page.clone()).await.unwrap_err();
    assert_eq!(
        err.into_response().status(),
        StatusCode::SERVICE_UNAVAILABLE
    );
    assert_eq!(r.state.app.store.inbox_len().unwrap(), 0);
    r.faulty.set_disk_full(false);

    // A queue of two: the first two go in, the third pushes back.
    let flushes = r.faulty.flushes.load(Ordering::SeqCst);
    let err = take(page.clone()).await.unwrap_err();
    assert_eq!(
        err.into_response().status(),
        StatusCode::SERVICE_UNAVAILABLE
    );
    assert!(
        r.faulty.flushes.load(Ordering::SeqCst) > flushes,
        "what went in was flushed"
    );
    until("the first two answered", || {
        stored(&r, "ann", 1) == 1
            && stored(&r, "ann", 2) == 1
            && r.state.app.store.inbox_len().unwrap() == 0
    })
    .await;

    // The same page again: the stored two are duplicates, the third goes in.
    let done = take(page).await.unwrap();
    assert_eq!(
        done,
        fetched::Fetched {
            accepted: 1,
            duplicates: 2
        }
    );
    until("the third answered", || stored(&r, "ann", 3) == 1).await;
    for id in 1..=3 {
        assert_eq!(stored(&r, "ann", id), 1, "message {id} handled once");
    }
}
