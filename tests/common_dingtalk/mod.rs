//! A fake DingTalk for end-to-end tests, all on 127.0.0.1:0:
//!
//! - sessionWebhooks (`/robot/sendBySession?session=…`), answering per session as told;
//! - the OpenAPI: `/v1.0/oauth2/accessToken` (checks the app's credentials, issues `tok-N`),
//!   `/v1.0/robot/oToMessages/batchSend` and `/v1.0/robot/groupMessages/send` (check the
//!   `x-acs-dingtalk-access-token` header against the last token issued);
//! - a custom group robot, `/robot/send?access_token=…&timestamp=…&sign=…` (checks the sign);
//! - the Stream gateway: `/v1.0/gateway/connections/open` hands out single-use tickets for a
//!   WebSocket server on its own raw TcpListener (tokio-tungstenite `accept_hdr_async`).
//!
//! And kefu itself, in-process on a temporary sled database, configured to use all of it.

#![allow(dead_code)] // each test binary uses a different part

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use adapters::Secret;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use futures::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};
use tokio_tungstenite::tungstenite::Message;

pub const APP_KEY: &str = "dingappkey";
pub const APP_SECRET: &str = "app-secret-for-tests";
pub const ROBOT_CODE: &str = "dingrobot";
pub const ROBOT_TOKEN: &str = "robot-token";
pub const ROBOT_SECRET: &str = "SECrobotsecret";
pub const CHANNEL: &str = "helpdesk";

pub const FAQ: &str = concat!(
    r#"{"id":"reset","question":"How do I reset my password?","answer":"Open Settings, choose Security and click Reset password.","alternates":["forgot my password","password reset"]}"#,
    "\n",
    r#"{"id":"refund","question":"What is the refund policy?","answer":"Annual plans get a full refund within 30 days.","alternates":["can I get my money back"]}"#,
    "\n"
);
/// Words every answer to "how do I reset my password" contains.
pub const RESET_ANSWER: &str = "Reset password";

pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("after 1970")
        .as_millis() as u64
}

/// How a sessionWebhook answers.
#[derive(Clone, Debug)]
pub enum Hook {
    Ok,
    Errcode(i64),
    Status(u16),
}

/// What the gateway's current connection should do.
pub enum GwCmd {
    Send(String),
    /// Drop the TCP connection without a Close frame.
    Drop,
}

#[derive(Default)]
pub struct FakeState {
    pub ws_addr: Mutex<Option<SocketAddr>>,
    /// (session, body) of every sessionWebhook POST, delivered or not.
    pub webhook_posts: Mutex<Vec<(String, Value)>>,
    pub hooks: Mutex<HashMap<String, Hook>>,
    pub tokens_issued: AtomicUsize,
    pub current_token: Mutex<Option<String>>,
    /// (path, token header, body) of every OpenAPI send that was accepted.
    pub openapi_sends: Mutex<Vec<(String, String, Value)>>,
    pub openapi_refused: AtomicUsize,
    /// Answer OpenAPI sends with this status and code instead.
    pub openapi_fail: Mutex<Option<(u16, String)>>,
    /// (query, body) of every custom robot POST with a valid sign.
    pub robot_posts: Mutex<Vec<(HashMap<String, String>, Value)>>,
    pub robot_bad_sign: AtomicUsize,
    pub opens: AtomicUsize,
    pub tickets: Mutex<HashSet<String>>,
    pub ws_connections: AtomicUsize,
    pub ws_refused: AtomicUsize,
    /// Text frames kefu sent on the gateway.
    pub ws_received: Mutex<Vec<Value>>,
    /// Close frames kefu sent.
    pub ws_closes: AtomicUsize,
    pub ws_current: Mutex<Option<mpsc::UnboundedSender<GwCmd>>>,
}

pub struct Fake {
    pub base: String,
    pub state: Arc<FakeState>,
}

impl Fake {
    pub async fn start() -> Fake {
        let state = Arc::new(FakeState::default());
        let ws = TcpListener::bind("127.0.0.1:0").await.expect("bind ws");
        *state.ws_addr.lock().unwrap() = Some(ws.local_addr().expect("addr"));
        tokio::spawn(gateway(ws, state.clone()));
        let app = Router::new()
            .route("/robot/sendBySession", post(session_webhook))
            .route("/robot/send", post(custom_robot))
            .route("/v1.0/oauth2/accessToken", post(access_token))
            .route("/v1.0/robot/oToMessages/batchSend", post(openapi_send))
            .route("/v1.0/robot/groupMessages/send", post(openapi_send))
            .route("/v1.0/gateway/connections/open", post(open_connection))
            .with_state(state.clone());
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Fake {
            base: format!("http://{addr}"),
            state,
        }
    }

    pub fn webhook(&self, session: &str) -> String {
        format!("{}/robot/sendBySession?session={session}", self.base)
    }

    pub fn set_hook(&self, session: &str, hook: Hook) {
        self.state
            .hooks
            .lock()
            .unwrap()
            .insert(session.to_string(), hook);
    }

    pub fn posts_to(&self, session: &str) -> Vec<Value> {
        self.state
            .webhook_posts
            .lock()
            .unwrap()
            .iter()
            .filter(|(s, _)| s == session)
            .map(|(_, v)| v.clone())
            .collect()
    }

    pub fn openapi_sends(&self) -> Vec<(String, String, Value)> {
        self.state.openapi_sends.lock().unwrap().clone()
    }

    /// Push a frame on the gateway's current connection.
    pub fn push(&self, frame: String) {
        let tx = self.state.ws_current.lock().unwrap().clone();
        tx.expect("a live gateway connection")
            .send(GwCmd::Send(frame))
            .expect("connection task alive");
    }

    pub fn drop_connection(&self) {
        if let Some(tx) = self.state.ws_current.lock().unwrap().take() {
            let _ = tx.send(GwCmd::Drop);
        }
    }

    pub fn ws_received(&self) -> Vec<Value> {
        self.state.ws_received.lock().unwrap().clone()
    }
}

/// Deliver on `session` as told by `hooks` (default: ok).
async fn session_webhook(
    State(s): State<Arc<FakeState>>,
    Query(q): Query<HashMap<String, String>>,
    body: String,
) -> Response {
    let session = q.get("session").cloned().unwrap_or_default();
    let v: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
    s.webhook_posts.lock().unwrap().push((session.clone(), v));
    let hook = s
        .hooks
        .lock()
        .unwrap()
        .get(&session)
        .cloned()
        .unwrap_or(Hook::Ok);
    match hook {
        Hook::Ok => Json(json!({"errcode": 0, "errmsg": "ok"})).into_response(),
        Hook::Errcode(code) => {
            Json(json!({"errcode": code, "errmsg": "session invalid"})).into_response()
        }
        Hook::Status(st) => StatusCode::from_u16(st).expect("status").into_response(),
    }
}

async fn custom_robot(
    State(s): State<Arc<FakeState>>,
    Query(q): Query<HashMap<String, String>>,
    body: String,
) -> Response {
    let ok_token = q.get("access_token").map(String::as_str) == Some(ROBOT_TOKEN);
    let signed = adapters::dingtalk::sign::verify(
        q.get("timestamp").map(String::as_str),
        q.get("sign").map(String::as_str),
        &Secret::new(ROBOT_SECRET),
        now_ms(),
    )
    .is_ok();
    if !ok_token {
        return Json(json!({"errcode": 300001, "errmsg": "token is not exist"})).into_response();
    }
    if !signed {
        s.robot_bad_sign.fetch_add(1, Ordering::SeqCst);
        return Json(json!({"errcode": 310000, "errmsg": "sign not match"})).into_response();
    }
    let v: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
    s.robot_posts.lock().unwrap().push((q, v));
    Json(json!({"errcode": 0, "errmsg": "ok"})).into_response()
}

async fn access_token(State(s): State<Arc<FakeState>>, Json(v): Json<Value>) -> Response {
    if v["appKey"] != APP_KEY || v["appSecret"] != APP_SECRET {
        return (
            StatusCode::BAD_REQUEST,
            Json(json!({"code": "invalidClientSecret", "message": "bad"})),
        )
            .into_response();
    }
    let n = s.tokens_issued.fetch_add(1, Ordering::SeqCst) + 1;
    let token = format!("tok-{n}");
    *s.current_token.lock().unwrap() = Some(token.clone());
    Json(json!({"accessToken": token, "expireIn": 7200})).into_response()
}

async fn openapi_send(
    State(s): State<Arc<FakeState>>,
    uri: axum::http::Uri,
    headers: HeaderMap,
    Json(v): Json<Value>,
) -> Response {
    let given = headers
        .get("x-acs-dingtalk-access-token")
        .and_then(|h| h.to_str().ok())
        .unwrap_or_default()
        .to_string();
    let current = s.current_token.lock().unwrap().clone();
    if current.as_deref() != Some(given.as_str()) {
        s.openapi_refused.fetch_add(1, Ordering::SeqCst);
        return (
            StatusCode::UNAUTHORIZED,
            Json(json!({"code": "InvalidAuthentication", "message": "不合法的access_token"})),
        )
            .into_response();
    }
    if let Some((status, code)) = s.openapi_fail.lock().unwrap().clone() {
        return (
            StatusCode::from_u16(status).expect("status"),
            Json(json!({"code": code, "message": "told to fail"})),
        )
            .into_response();
    }
    s.openapi_sends
        .lock()
        .unwrap()
        .push((uri.path().to_string(), given, v));
    Json(json!({"processQueryKey": "pqk"})).into_response()
}

async fn open_connection(State(s): State<Arc<FakeState>>, Json(v): Json<Value>) -> Response {
    let topic = &v["subscriptions"][0];
    if v["clientId"] != APP_KEY
        || v["clientSecret"] != APP_SECRET
        || topic["type"] != "CALLBACK"
        || topic["topic"] != "/v1.0/im/bot/messages/get"
    {
        return (
            StatusCode::BAD_REQUEST,
            Json(json!({"code": "invalidClient", "message": "bad"})),
        )
            .into_response();
    }
    let n = s.opens.fetch_add(1, Ordering::SeqCst) + 1;
    let ticket = format!("ticket+{n}/=");
    s.tickets.lock().unwrap().insert(ticket.clone());
    let addr = s.ws_addr.lock().unwrap().expect("ws addr");
    Json(json!({"endpoint": format!("ws://{addr}/connect"), "ticket": ticket})).into_response()
}

/// The Stream gateway's WebSocket side: one task per connection, the newest one steerable
/// through `ws_current`. A ticket works once.
async fn gateway(listener: TcpListener, s: Arc<FakeState>) {
    loop {
        let Ok((tcp, _)) = listener.accept().await else {
            return;
        };
        let s = s.clone();
        tokio::spawn(async move {
            // The callback's types are tungstenite's (a large `ErrorResponse`).
            #[allow(clippy::result_large_err)]
            let check = |req: &tokio_tungstenite::tungstenite::handshake::server::Request, resp| {
                let ticket = req
                    .uri()
                    .query()
                    .and_then(|q| {
                        url::form_urlencoded::parse(q.as_bytes())
                            .find(|(k, _)| k == "ticket")
                            .map(|(_, v)| v.into_owned())
                    })
                    .unwrap_or_default();
                if req.uri().path() == "/connect" && s.tickets.lock().unwrap().remove(&ticket) {
                    Ok(resp)
                } else {
                    s.ws_refused.fetch_add(1, Ordering::SeqCst);
                    let mut refuse =
                        tokio_tungstenite::tungstenite::handshake::server::ErrorResponse::new(None);
                    *refuse.status_mut() = StatusCode::UNAUTHORIZED;
                    Err(refuse)
                }
            };
            let Ok(mut ws) = tokio_tungstenite::accept_hdr_async(tcp, check).await else {
                return;
            };
            s.ws_connections.fetch_add(1, Ordering::SeqCst);
            let (tx, mut rx) = mpsc::unbounded_channel();
            *s.ws_current.lock().unwrap() = Some(tx);
            loop {
                tokio::select! {
                    cmd = rx.recv() => match cmd {
                        Some(GwCmd::Send(text)) => {
                            if ws.send(Message::text(text)).await.is_err() {
                                return;
                            }
                        }
                        Some(GwCmd::Drop) | None => return, // drops the socket, no Close frame
                    },
                    msg = ws.next() => match msg {
                        Some(Ok(Message::Text(t))) => {
                            let v: Value = serde_json::from_str(t.as_str()).unwrap_or(Value::Null);
                            s.ws_received.lock().unwrap().push(v);
                        }
                        Some(Ok(Message::Close(_))) => {
                            s.ws_closes.fetch_add(1, Ordering::SeqCst);
                        }
                        Some(Ok(_)) => {}
                        Some(Err(_)) | None => return,
                    },
                }
            }
        });
    }
}

/// A robot callback body (dingtalk.md §2).
pub struct Callback<'a> {
    pub msg_id: &'a str,
    pub text: &'a str,
    pub group: bool,
    pub conversation: &'a str,
    pub staff_id: &'a str,
    pub webhook: String,
    pub webhook_expires_ms: u64,
}

impl Callback<'_> {
    pub fn json(&self) -> String {
        json!({
            "msgtype": "text",
            "text": {"content": self.text},
            "msgId": self.msg_id,
            "createAt": now_ms(),
            "conversationType": if self.group { "2" } else { "1" },
            "conversationId": self.conversation,
            "conversationTitle": if self.group { "客服群" } else { "" },
            "senderStaffId": self.staff_id,
            "senderId": format!("$:LWCP_v1:${}", self.staff_id),
            "senderNick": "张三",
            "senderCorpId": "dingcorp",
            "chatbotUserId": "$:LWCP_v1:$robot",
            "chatbotCorpId": "dingcorp",
            "robotCode": ROBOT_CODE,
            "isAdmin": false,
            "isInAtList": self.group,
            "sessionWebhook": self.webhook,
            "sessionWebhookExpiredTime": self.webhook_expires_ms,
        })
        .to_string()
    }
}

/// Poll `f` every 20 ms until it holds; fail after `secs` seconds.
pub async fn wait_for(what: &str, secs: u64, mut f: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    while !f() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for: {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// kefu in-process: the app on a temporary sled database, served on 127.0.0.1:0, with its
/// background work (outbox, Stream clients) running until `stop`.
pub struct Kefu {
    pub base: String,
    pub state: kefu::server::AppState,
    pub stop: watch::Sender<bool>,
    pub http: reqwest::Client,
    _dir: tempfile::TempDir,
}

pub struct Options {
    pub mode: &'static str,
    pub markdown: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            mode: "http",
            markdown: false,
        }
    }
}

impl Kefu {
    pub async fn start(fake: &Fake, opts: Options) -> Kefu {
        let dir = tempfile::tempdir().expect("tempdir");
        let kb = dir.path().join("kb/faq");
        std::fs::create_dir_all(&kb).expect("kb dir");
        std::fs::write(kb.join("faq.jsonl"), FAQ).expect("faq");
        let toml = format!(
            r#"
[server]
data_dir = "{data}"
# The fake DingTalk's sessionWebhooks live on 127.0.0.1 (the default allows *.dingtalk.com).
allowed_webhook_hosts = ["127.0.0.1"]

[knowledge]
paths = ["{kb}"]

[handoff]
notify = ["agents"]

[[notify]]
name = "agents"
kind = "dingtalk_robot"
access_token = "{ROBOT_TOKEN}"
secret = "{ROBOT_SECRET}"
api_base = "{base}"

[[channels]]
name = "{CHANNEL}"
kind = "dingtalk"
app_key = "{APP_KEY}"
app_secret = "{APP_SECRET}"
robot_code = "{ROBOT_CODE}"
mode = "{mode}"
api_base = "{base}"
markdown = {markdown}
"#,
            data = dir.path().join("data").display(),
            kb = dir.path().join("kb").display(),
            base = fake.base,
            mode = opts.mode,
            markdown = opts.markdown,
        );
        let config = kefu::config::parse(&toml, "test", &|_| None).expect("config");
        let db = sled::Config::new().temporary(true).open().expect("sled");
        let app = kefu::app::App::with_db(Arc::new(config), db, kefu::app::IngestPolicy::WhenStale)
            .await
            .expect("app");
        let state = kefu::server::AppState::new(app).expect("state");
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let router = kefu::server::router(state.clone());
        let (stop, stop_rx) = watch::channel(false);
        let mut server_stop = stop_rx.clone();
        tokio::spawn(async move {
            let _ = axum::serve(listener, router)
                .with_graceful_shutdown(async move {
                    let _ = server_stop.wait_for(|s| *s).await;
                })
                .await;
        });
        state.start_background();
        let background = state.clone();
        let mut stopped = stop_rx;
        tokio::spawn(async move {
            let _ = stopped.wait_for(|s| *s).await;
            background.stop_background();
        });
        Kefu {
            base: format!("http://{addr}"),
            state,
            stop,
            http: reqwest::Client::new(),
            _dir: dir,
        }
    }

    /// POST a callback signed with `timestamp` (ms, as a string) and `secret`.
    pub async fn post_signed(
        &self,
        body: &str,
        timestamp: &str,
        secret: &str,
    ) -> reqwest::Response {
        let sign = adapters::dingtalk::sign::sign(&Secret::new(secret), timestamp);
        self.http
            .post(format!("{}/dingtalk/{CHANNEL}", self.base))
            .header("content-type", "application/json; charset=utf-8")
            .header("timestamp", timestamp)
            .header("sign", sign)
            .body(body.to_string())
            .send()
            .await
            .expect("post")
    }

    /// POST a callback as DingTalk would: signed now with the app secret.
    pub async fn post(&self, body: &str) -> reqwest::Response {
        self.post_signed(body, &now_ms().to_string(), APP_SECRET)
            .await
    }

    pub fn outbox_len(&self) -> usize {
        self.state.app.store.outbox_len().expect("outbox")
    }
}

impl Drop for Kefu {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}

/// The text of a sessionWebhook / robot message body (text or markdown).
pub fn message_text(v: &Value) -> String {
    v["text"]["content"]
        .as_str()
        .or(v["markdown"]["text"].as_str())
        .unwrap_or_default()
        .to_string()
}

/// The text of an OpenAPI send body (`msgParam` is a JSON string).
pub fn openapi_text(v: &Value) -> String {
    let p: Value =
        serde_json::from_str(v["msgParam"].as_str().unwrap_or("{}")).unwrap_or(Value::Null);
    p["content"]
        .as_str()
        .or(p["text"].as_str())
        .unwrap_or_default()
        .to_string()
}
