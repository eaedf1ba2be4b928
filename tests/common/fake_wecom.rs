//! A fake WeCom API on 127.0.0.1:0 for end-to-end tests and benches: `gettoken` checks the
//! corp id and secret and issues tokens, `message/send` checks the token (41001 missing,
//! 40014 unknown, 42001 expired) and the body, `webhook/send` checks the robot key (93000).
//! Accepted messages are recorded; failures come on cue. Like the real API it answers HTTP
//! 200 with an errcode, except when told to be down (503) or to fail with a status.
#![allow(dead_code)] // each test binary uses a different part

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{json, Value};

/// What the next `message/send` does instead of its normal answer.
#[derive(Clone, Debug)]
pub enum Cue {
    /// Answer HTTP 200 with this errcode.
    Errcode(i64),
    /// Answer this HTTP status.
    Status(u16),
}

pub struct FakeWeCom {
    pub base: String,
    pub corp_id: String,
    pub secret: String,
    pub agent_id: i64,
    pub robot_key: String,
    /// Tokens gettoken handed out and that are still good.
    tokens: Mutex<HashSet<String>>,
    /// Tokens `expire_tokens` retired: answered 42001.
    expired: Mutex<HashSet<String>>,
    issued: AtomicUsize,
    pub gettoken_calls: AtomicUsize,
    /// Every message/send request, accepted or not.
    pub send_attempts: AtomicUsize,
    sent: Mutex<Vec<Value>>,
    robot: Mutex<Vec<Value>>,
    cues: Mutex<VecDeque<Cue>>,
    down: AtomicBool,
    /// Each message/send takes this long (ms) before it is recorded and answered.
    delay_ms: AtomicU64,
}

impl FakeWeCom {
    /// Serve on a fresh port of the current runtime.
    pub async fn start(corp_id: &str, secret: &str, agent_id: i64, robot_key: &str) -> Arc<Self> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind fake wecom");
        let fake = Arc::new(FakeWeCom {
            base: format!("http://{}", listener.local_addr().expect("addr")),
            corp_id: corp_id.into(),
            secret: secret.into(),
            agent_id,
            robot_key: robot_key.into(),
            tokens: Mutex::default(),
            expired: Mutex::default(),
            issued: AtomicUsize::new(0),
            gettoken_calls: AtomicUsize::new(0),
            send_attempts: AtomicUsize::new(0),
            sent: Mutex::default(),
            robot: Mutex::default(),
            cues: Mutex::default(),
            down: AtomicBool::new(false),
            delay_ms: AtomicU64::new(0),
        });
        let app = Router::new()
            .route("/cgi-bin/gettoken", get(gettoken))
            .route("/cgi-bin/message/send", post(message_send))
            .route("/cgi-bin/webhook/send", post(webhook_send))
            .with_state(fake.clone());
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        fake
    }

    /// The next `message/send` calls fail like this, one cue per call.
    pub fn cue(&self, c: Cue) {
        self.cues.lock().unwrap().push_back(c);
    }

    /// Answer 503 to everything (`true`) or serve again (`false`).
    pub fn set_down(&self, down: bool) {
        self.down.store(down, Ordering::SeqCst);
    }

    /// Make every message/send take `d` (a slow platform).
    pub fn set_delay(&self, d: Duration) {
        self.delay_ms.store(d.as_millis() as u64, Ordering::SeqCst);
    }

    /// WeCom retires every token early: the next call with one gets 42001.
    pub fn expire_tokens(&self) {
        let mut live = self.tokens.lock().unwrap();
        self.expired.lock().unwrap().extend(live.drain());
    }

    pub fn gettoken_calls(&self) -> usize {
        self.gettoken_calls.load(Ordering::SeqCst)
    }

    pub fn send_attempts(&self) -> usize {
        self.send_attempts.load(Ordering::SeqCst)
    }

    /// Accepted message/send bodies, in order.
    pub fn sent(&self) -> Vec<Value> {
        self.sent.lock().unwrap().clone()
    }

    /// The text contents accepted for `user`, in order.
    pub fn sent_to(&self, user: &str) -> Vec<String> {
        self.sent()
            .iter()
            .filter(|m| m["touser"] == user)
            .map(|m| {
                m["text"]["content"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string()
            })
            .collect()
    }

    /// Accepted robot webhook bodies, in order.
    pub fn robot(&self) -> Vec<Value> {
        self.robot.lock().unwrap().clone()
    }

    fn is_down(&self) -> bool {
        self.down.load(Ordering::SeqCst)
    }
}

fn errcode(code: i64, msg: &str) -> Response {
    Json(json!({"errcode": code, "errmsg": msg})).into_response()
}

async fn gettoken(
    State(f): State<Arc<FakeWeCom>>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    if f.is_down() {
        return StatusCode::SERVICE_UNAVAILABLE.into_response();
    }
    f.gettoken_calls.fetch_add(1, Ordering::SeqCst);
    if q.get("corpid") != Some(&f.corp_id) {
        return errcode(40013, "invalid corpid");
    }
    if q.get("corpsecret") != Some(&f.secret) {
        return errcode(40001, "invalid credential");
    }
    let n = f.issued.fetch_add(1, Ordering::SeqCst) + 1;
    let token = format!("ACCESS_TOKEN_{n}");
    f.tokens.lock().unwrap().insert(token.clone());
    Json(json!({"errcode": 0, "errmsg": "ok", "access_token": token, "expires_in": 7200}))
        .into_response()
}

async fn message_send(
    State(f): State<Arc<FakeWeCom>>,
    Query(q): Query<HashMap<String, String>>,
    body: String,
) -> Response {
    if f.is_down() {
        return StatusCode::SERVICE_UNAVAILABLE.into_response();
    }
    f.send_attempts.fetch_add(1, Ordering::SeqCst);
    let delay = f.delay_ms.load(Ordering::SeqCst);
    if delay > 0 {
        tokio::time::sleep(Duration::from_millis(delay)).await;
    }
    let Some(token) = q.get("access_token") else {
        return errcode(41001, "access_token missing");
    };
    if f.expired.lock().unwrap().contains(token) {
        return errcode(42001, "access_token expired");
    }
    if !f.tokens.lock().unwrap().contains(token) {
        return errcode(40014, "invalid access_token");
    }
    let cue = f.cues.lock().unwrap().pop_front();
    match cue {
        Some(Cue::Errcode(c)) => return errcode(c, "cued"),
        Some(Cue::Status(s)) => {
            return (StatusCode::from_u16(s).expect("status"), "cued").into_response()
        }
        None => {}
    }
    let Ok(m) = serde_json::from_str::<Value>(&body) else {
        return errcode(47001, "data format error");
    };
    if m["agentid"] != f.agent_id {
        return errcode(40056, "invalid agentid");
    }
    if m["touser"].as_str().is_none_or(str::is_empty) {
        return errcode(40003, "invalid userid");
    }
    let content = m[m["msgtype"].as_str().unwrap_or("text")]["content"]
        .as_str()
        .unwrap_or_default();
    if content.is_empty() || content.len() > 2048 {
        return errcode(44004, "content size out of limit");
    }
    f.sent.lock().unwrap().push(m);
    Json(json!({"errcode": 0, "errmsg": "ok", "invaliduser": "", "msgid": "MSGID"})).into_response()
}

async fn webhook_send(
    State(f): State<Arc<FakeWeCom>>,
    Query(q): Query<HashMap<String, String>>,
    body: String,
) -> Response {
    if f.is_down() {
        return StatusCode::SERVICE_UNAVAILABLE.into_response();
    }
    if q.get("key") != Some(&f.robot_key) {
        return errcode(93000, "invalid webhook url");
    }
    let Ok(m) = serde_json::from_str::<Value>(&body) else {
        return errcode(40008, "invalid message type");
    };
    if m["text"]["content"]
        .as_str()
        .is_none_or(|c| c.is_empty() || c.len() > 2048)
    {
        return errcode(44004, "content size out of limit");
    }
    f.robot.lock().unwrap().push(m);
    errcode(0, "ok")
}

/// Poll `check` until it gives a value, for at most 10 s (then panic naming `what`).
pub async fn eventually<T>(what: &str, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(v) = check() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
