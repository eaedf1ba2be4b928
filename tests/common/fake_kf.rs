//! A fake WeCom kf API on 127.0.0.1:0 (wecom-kf.md §2–§7, vectors §9), strict where the
//! real one is documented to be:
//!
//! - `gettoken` checks corp id and secret; every kf call checks the token (41001 missing,
//!   40014 unknown, 42001 retired by `expire_tokens`).
//! - `sync_msg` serves each account's message log by cursor (`CUR-n` = position n; no
//!   cursor = from the start, "the last 3 days"), at most `page_size` a page, `has_more`
//!   until the end; scripted pages (the V3/V4/V9 vectors) answer chosen cursors instead. It
//!   checks the callback token when one is sent (95007 for an unknown one) and counts how
//!   many syncs of one account overlap.
//! - `send_msg`: only in session state 0/1 (else 95018), within 48 h of the customer's last
//!   message (else 95002), at most 5 after it (else 95001), ≤ 2048 bytes, `msgid` unique per
//!   account (a repeat is refused: errcode 40058 here, the real one is undocumented); state
//!   0 becomes 1. A customer message re-opens the allowance and turns state 4 into 0.
//! - `send_msg_on_event`: the code must exist, be unused and unexpired (welcome codes 20 s).
//! - `service_state/get|trans` follow the state table (95016 for a move it forbids, 95014 /
//!   95019 for a servicer who is not listed / not receiving); the first move to 2 or 3 and
//!   a move to 4 hand out a `msg_code`.
//! - `servicer/list` lists the account's servicers (status 0 receiving, 1 stopped).
#![allow(dead_code)] // each test binary uses a different part

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{json, Value};

pub const KFID: &str = "wkAJ2GCAAASSm4_FhToWMFea0xAFfd3Q";
pub const CUSTOMER: &str = "wmAJ2GCAAAme1XQRC-NI-q0_ZM9ukoAw";
/// The errcode this fake gives a repeated `msgid` (the real one is not documented).
pub const ERR_DUPLICATE_MSGID: i64 = 40058;

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// One customer's session on one account.
#[derive(Clone, Debug, Default)]
pub struct Session {
    pub state: u8,
    pub servicer: Option<String>,
    pub last_customer_ms: u64,
    pub sent_since: u32,
    /// A msg_code was handed out for this session's move to 2/3.
    pub noticed: bool,
}

#[derive(Default)]
struct Inner {
    tokens: HashSet<String>,
    expired: HashSet<String>,
    issued: usize,
    /// Account → items, in order.
    log: HashMap<String, Vec<Value>>,
    /// (account, cursor asked with) → the page to answer.
    scripted: HashMap<(String, Option<String>), Value>,
    /// Callback tokens handed out (valid for sync).
    msg_tokens: HashSet<String>,
    sync_requests: Vec<Value>,
    in_flight: HashMap<String, usize>,
    max_in_flight: usize,
    /// Errcodes for the next sync_msg calls that carry a cursor.
    cursor_refusals: VecDeque<i64>,
    sessions: HashMap<(String, String), Session>,
    sent: Vec<Value>,
    send_refusals: Vec<(Value, i64)>,
    msgids: HashSet<(String, String)>,
    /// Errcodes for the next send_msg calls.
    send_cues: VecDeque<i64>,
    /// Errcodes for the next service_state/trans calls.
    trans_cues: VecDeque<i64>,
    /// Event code → (expires at ms, used).
    codes: HashMap<String, (u64, bool)>,
    on_event: Vec<Value>,
    trans: Vec<Value>,
    state_gets: usize,
    servicers: HashMap<String, Vec<(String, u8)>>,
    next_msgid: usize,
    next_code: usize,
    send_down: bool,
}

pub struct FakeKf {
    pub base: String,
    pub corp_id: String,
    pub secret: String,
    pub gettoken_calls: AtomicUsize,
    /// How long a sync_msg answer takes (widens the window for overlapping syncs).
    pub sync_delay_ms: AtomicUsize,
    page_size: AtomicUsize,
    inner: Mutex<Inner>,
}

impl FakeKf {
    pub async fn start(corp_id: &str, secret: &str) -> Arc<Self> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind fake kf");
        let fake = Arc::new(FakeKf {
            base: format!("http://{}", listener.local_addr().expect("addr")),
            corp_id: corp_id.into(),
            secret: secret.into(),
            gettoken_calls: AtomicUsize::new(0),
            sync_delay_ms: AtomicUsize::new(0),
            page_size: AtomicUsize::new(1000),
            inner: Mutex::default(),
        });
        let app = Router::new()
            .route("/cgi-bin/gettoken", get(gettoken))
            .route("/cgi-bin/kf/sync_msg", post(sync_msg))
            .route("/cgi-bin/kf/send_msg", post(send_msg))
            .route("/cgi-bin/kf/send_msg_on_event", post(send_msg_on_event))
            .route("/cgi-bin/kf/service_state/get", post(state_get))
            .route("/cgi-bin/kf/service_state/trans", post(state_trans))
            .route("/cgi-bin/kf/servicer/list", get(servicer_list))
            .with_state(fake.clone());
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        fake
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn set_page_size(&self, n: usize) {
        self.page_size.store(n, Ordering::SeqCst);
    }

    /// The customer's session is open and new (state 0, allowance fresh): what a customer
    /// message in a scripted page implies.
    pub fn customer_active(&self, account: &str, user: &str) {
        self.lock().sessions.insert(
            (account.to_string(), user.to_string()),
            Session {
                last_customer_ms: now_ms(),
                ..Session::default()
            },
        );
    }

    /// Hand out an event code (a scripted page's `welcome_code`), good for `life_ms`.
    pub fn issue_code(&self, code: &str, life_ms: u64) {
        self.lock()
            .codes
            .insert(code.to_string(), (now_ms() + life_ms, false));
    }

    /// `send_msg` answers 503 while down.
    pub fn set_send_down(&self, down: bool) {
        self.lock().send_down = down;
    }

    /// A callback `Token` for sync_msg, as the platform puts into a notification.
    pub fn msg_token(&self) -> String {
        let mut g = self.lock();
        let t = format!("ENCfake{}", g.msg_tokens.len() + 1);
        g.msg_tokens.insert(t.clone());
        t
    }

    /// Accept this callback token too (the V1 vector's).
    pub fn allow_msg_token(&self, t: &str) {
        self.lock().msg_tokens.insert(t.to_string());
    }

    pub fn expire_tokens(&self) {
        let mut g = self.lock();
        let live: Vec<String> = g.tokens.drain().collect();
        g.expired.extend(live);
    }

    /// Answer a sync of `account` that carries `cursor` with `page` (a vector).
    pub fn script(&self, account: &str, cursor: Option<&str>, page: Value) {
        self.lock()
            .scripted
            .insert((account.to_string(), cursor.map(str::to_string)), page);
    }

    /// The next sync of an account that carries a cursor is refused with `errcode`.
    pub fn refuse_cursor_once(&self, errcode: i64) {
        self.lock().cursor_refusals.push_back(errcode);
    }

    /// The next `send_msg` is answered with `errcode`.
    pub fn cue_send(&self, errcode: i64) {
        self.lock().send_cues.push_back(errcode);
    }

    /// The next `service_state/trans` is answered with `errcode`.
    pub fn cue_trans(&self, errcode: i64) {
        self.lock().trans_cues.push_back(errcode);
    }

    pub fn set_servicers(&self, account: &str, list: &[(&str, u8)]) {
        self.lock().servicers.insert(
            account.to_string(),
            list.iter().map(|(u, s)| (u.to_string(), *s)).collect(),
        );
    }

    fn push(&self, account: &str, item: Value) -> String {
        let mut g = self.lock();
        g.next_msgid += 1;
        let msgid = format!("msg{:06}", g.next_msgid);
        let mut item = item;
        item["msgid"] = json!(msgid);
        g.log.entry(account.to_string()).or_default().push(item);
        msgid
    }

    /// The customer writes `text` at `at_ms` (the allowance re-opens; an ended session
    /// becomes new).
    pub fn customer_writes_at(&self, account: &str, user: &str, text: &str, at_ms: u64) -> String {
        {
            let mut g = self.lock();
            let s = g
                .sessions
                .entry((account.to_string(), user.to_string()))
                .or_insert_with(|| Session {
                    state: 4,
                    ..Session::default()
                });
            if s.state == 4 {
                *s = Session::default();
            }
            s.last_customer_ms = at_ms;
            s.sent_since = 0;
        }
        self.push(
            account,
            json!({"open_kfid": account, "external_userid": user, "send_time": at_ms / 1000,
                   "origin": 3, "msgtype": "text", "text": {"content": text}}),
        )
    }

    pub fn customer_writes(&self, account: &str, user: &str, text: &str) -> String {
        self.customer_writes_at(account, user, text, now_ms())
    }

    /// A customer message of another type (`msgtype` with its payload object).
    pub fn customer_sends(
        &self,
        account: &str,
        user: &str,
        msgtype: &str,
        payload: Value,
    ) -> String {
        let id = self.customer_writes(account, user, "");
        let mut g = self.lock();
        let item = g
            .log
            .get_mut(account)
            .and_then(|l| l.last_mut())
            .expect("just pushed");
        item["msgtype"] = json!(msgtype);
        item.as_object_mut().expect("object").remove("text");
        item[msgtype] = payload;
        id
    }

    /// A servicer writes in the WeCom client (origin 5).
    pub fn servicer_writes(&self, account: &str, user: &str, servicer: &str, text: &str) -> String {
        self.push(
            account,
            json!({"open_kfid": account, "external_userid": user, "send_time": now_ms() / 1000,
                   "origin": 5, "servicer_userid": servicer, "msgtype": "text", "text": {"content": text}}),
        )
    }

    /// A system event (origin 4); `event` is the `event` object.
    pub fn event(&self, account: &str, event: Value) -> String {
        self.push(
            account,
            json!({"send_time": now_ms() / 1000, "origin": 4, "msgtype": "event", "event": event}),
        )
    }

    /// The customer enters the session; returns the welcome code (good for 20 s).
    pub fn enter_session(&self, account: &str, user: &str) -> String {
        let code = {
            let mut g = self.lock();
            g.next_code += 1;
            let code = format!("WELCOME_{}", g.next_code);
            g.codes.insert(code.clone(), (now_ms() + 20_000, false));
            code
        };
        self.event(
            account,
            json!({"event_type": "enter_session", "open_kfid": account, "external_userid": user,
                   "scene": "home", "welcome_code": code}),
        );
        code
    }

    /// A servicer acts in the WeCom client: the session moves, and the event says so.
    pub fn servicer_moves(&self, account: &str, user: &str, change_type: u8, servicer: &str) {
        {
            let mut g = self.lock();
            let s = g
                .sessions
                .entry((account.to_string(), user.to_string()))
                .or_default();
            match change_type {
                3 => {
                    s.state = 4;
                    s.servicer = None;
                }
                _ => {
                    s.state = 3;
                    s.servicer = Some(servicer.to_string());
                }
            }
        }
        let mut ev = json!({"event_type": "session_status_change", "open_kfid": account,
                            "external_userid": user, "change_type": change_type});
        if change_type == 3 {
            ev["old_servicer_userid"] = json!(servicer);
        } else {
            ev["new_servicer_userid"] = json!(servicer);
        }
        self.event(account, ev);
    }

    /// Move a session without an event (a state kefu can only learn by asking).
    pub fn set_state(&self, account: &str, user: &str, state: u8, servicer: Option<&str>) {
        let mut g = self.lock();
        let s = g
            .sessions
            .entry((account.to_string(), user.to_string()))
            .or_default();
        s.state = state;
        s.servicer = servicer.map(str::to_string);
    }

    pub fn session(&self, account: &str, user: &str) -> Session {
        self.lock()
            .sessions
            .get(&(account.to_string(), user.to_string()))
            .cloned()
            .unwrap_or_default()
    }

    pub fn sync_requests(&self) -> Vec<Value> {
        self.lock().sync_requests.clone()
    }

    pub fn max_concurrent_syncs(&self) -> usize {
        self.lock().max_in_flight
    }

    /// Accepted send_msg bodies, in order.
    pub fn sent(&self) -> Vec<Value> {
        self.lock().sent.clone()
    }

    pub fn sent_count(&self) -> usize {
        self.lock().sent.len()
    }

    /// The texts accepted for `user`, in order.
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

    /// Refused send_msg bodies with their errcode.
    pub fn send_refusals(&self) -> Vec<(Value, i64)> {
        self.lock().send_refusals.clone()
    }

    pub fn on_event_sent(&self) -> Vec<Value> {
        self.lock().on_event.clone()
    }

    pub fn trans_calls(&self) -> Vec<Value> {
        self.lock().trans.clone()
    }

    pub fn state_gets(&self) -> usize {
        self.lock().state_gets
    }

    pub fn gettoken_calls(&self) -> usize {
        self.gettoken_calls.load(Ordering::SeqCst)
    }
}

fn errcode(code: i64, msg: &str) -> Response {
    Json(json!({"errcode": code, "errmsg": msg})).into_response()
}

/// The token check every kf call makes: the refusal to answer, if any.
fn check_token(f: &FakeKf, q: &HashMap<String, String>) -> Option<Response> {
    let Some(token) = q.get("access_token") else {
        return Some(errcode(41001, "access_token missing"));
    };
    let g = f.lock();
    if g.expired.contains(token) {
        return Some(errcode(42001, "access_token expired"));
    }
    if !g.tokens.contains(token) {
        return Some(errcode(40014, "invalid access_token"));
    }
    None
}

async fn gettoken(
    State(f): State<Arc<FakeKf>>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    f.gettoken_calls.fetch_add(1, Ordering::SeqCst);
    if q.get("corpid") != Some(&f.corp_id) {
        return errcode(40013, "invalid corpid");
    }
    if q.get("corpsecret") != Some(&f.secret) {
        return errcode(40001, "invalid credential");
    }
    let mut g = f.lock();
    g.issued += 1;
    let token = format!("KF_TOKEN_{}", g.issued);
    g.tokens.insert(token.clone());
    Json(json!({"errcode": 0, "errmsg": "ok", "access_token": token, "expires_in": 7200}))
        .into_response()
}

async fn sync_msg(
    State(f): State<Arc<FakeKf>>,
    Query(q): Query<HashMap<String, String>>,
    body: String,
) -> Response {
    if let Some(r) = check_token(&f, &q) {
        return r;
    }
    let Ok(req) = serde_json::from_str::<Value>(&body) else {
        return errcode(47001, "data format error");
    };
    let Some(account) = req["open_kfid"].as_str().map(str::to_string) else {
        return errcode(95000, "invalid open_kfid");
    };
    let cursor = req["cursor"].as_str().map(str::to_string);
    {
        let mut g = f.lock();
        g.sync_requests.push(req.clone());
        if let Some(t) = req["token"].as_str() {
            if !g.msg_tokens.contains(t) {
                return errcode(95007, "invalid msgtoken");
            }
        }
        if cursor.is_some() {
            if let Some(code) = g.cursor_refusals.pop_front() {
                return errcode(code, "invalid cursor");
            }
        }
        let n = g.in_flight.entry(account.clone()).or_default();
        *n += 1;
        let n = *n;
        g.max_in_flight = g.max_in_flight.max(n);
    }
    let delay = f.sync_delay_ms.load(Ordering::SeqCst);
    if delay > 0 {
        tokio::time::sleep(Duration::from_millis(delay as u64)).await;
    }
    let mut g = f.lock();
    *g.in_flight.entry(account.clone()).or_default() -= 1;
    if let Some(page) = g.scripted.get(&(account.clone(), cursor.clone())) {
        return Json(page.clone()).into_response();
    }
    let from = match cursor.as_deref() {
        None => 0,
        Some(c) => match c.strip_prefix("CUR-").and_then(|n| n.parse::<usize>().ok()) {
            Some(n) => n,
            None => return errcode(40058, "invalid cursor"),
        },
    };
    let limit = req["limit"].as_u64().unwrap_or(1000).min(1000) as usize;
    let size = limit.min(f.page_size.load(Ordering::SeqCst));
    let empty = Vec::new();
    let log = g.log.get(&account).unwrap_or(&empty);
    let from = from.min(log.len());
    let to = (from + size).min(log.len());
    let page = json!({
        "errcode": 0, "errmsg": "ok",
        "next_cursor": format!("CUR-{to}"),
        "has_more": if to < log.len() { 1 } else { 0 },
        "msg_list": &log[from..to],
    });
    drop(g);
    Json(page).into_response()
}

async fn send_msg(
    State(f): State<Arc<FakeKf>>,
    Query(q): Query<HashMap<String, String>>,
    body: String,
) -> Response {
    if let Some(r) = check_token(&f, &q) {
        return r;
    }
    let Ok(m) = serde_json::from_str::<Value>(&body) else {
        return errcode(47001, "data format error");
    };
    let account = m["open_kfid"].as_str().unwrap_or_default().to_string();
    let user = m["touser"].as_str().unwrap_or_default().to_string();
    let mut g = f.lock();
    if g.send_down {
        return StatusCode::SERVICE_UNAVAILABLE.into_response();
    }
    let refuse = |g: &mut Inner, code: i64, msg: &str| {
        g.send_refusals.push((m.clone(), code));
        errcode(code, msg)
    };
    if let Some(code) = g.send_cues.pop_front() {
        return refuse(&mut g, code, "cued");
    }
    let content = m["text"]["content"].as_str().unwrap_or_default();
    if content.is_empty() || content.len() > 2048 {
        return refuse(&mut g, 44004, "content size out of limit");
    }
    if let Some(id) = m["msgid"].as_str() {
        if id.is_empty() || id.len() > 32 {
            return refuse(&mut g, 40058, "invalid msgid");
        }
        if g.msgids.contains(&(account.clone(), id.to_string())) {
            return refuse(&mut g, ERR_DUPLICATE_MSGID, "duplicate msgid");
        }
    }
    let Some(s) = g.sessions.get(&(account.clone(), user.clone())).cloned() else {
        return refuse(&mut g, 95018, "send msg session status invalid");
    };
    if !matches!(s.state, 0 | 1) {
        return refuse(&mut g, 95018, "send msg session status invalid");
    }
    if now_ms() > s.last_customer_ms + 48 * 3600 * 1000 {
        return refuse(&mut g, 95002, "send msg time limit");
    }
    if s.sent_since >= 5 {
        return refuse(&mut g, 95001, "send msg count limit");
    }
    let session = g
        .sessions
        .get_mut(&(account.clone(), user))
        .expect("session");
    session.sent_since += 1;
    session.state = 1;
    let id = m["msgid"].as_str().map(str::to_string);
    if let Some(id) = &id {
        g.msgids.insert((account, id.clone()));
    }
    g.sent.push(m);
    Json(json!({"errcode": 0, "errmsg": "ok", "msgid": id.unwrap_or_else(|| "SYS_MSGID".into())}))
        .into_response()
}

async fn send_msg_on_event(
    State(f): State<Arc<FakeKf>>,
    Query(q): Query<HashMap<String, String>>,
    body: String,
) -> Response {
    if let Some(r) = check_token(&f, &q) {
        return r;
    }
    let Ok(m) = serde_json::from_str::<Value>(&body) else {
        return errcode(47001, "data format error");
    };
    let code = m["code"].as_str().unwrap_or_default().to_string();
    let mut g = f.lock();
    match g.codes.get_mut(&code) {
        Some((expires, used)) if !*used && now_ms() <= *expires => *used = true,
        // The real errcode for a used or expired code is not documented.
        _ => return errcode(40058, "invalid code"),
    }
    g.on_event.push(m);
    Json(json!({"errcode": 0, "errmsg": "ok", "msgid": "on_event_msgid"})).into_response()
}

async fn state_get(
    State(f): State<Arc<FakeKf>>,
    Query(q): Query<HashMap<String, String>>,
    body: String,
) -> Response {
    if let Some(r) = check_token(&f, &q) {
        return r;
    }
    let m: Value = serde_json::from_str(&body).unwrap_or_default();
    let key = (
        m["open_kfid"].as_str().unwrap_or_default().to_string(),
        m["external_userid"]
            .as_str()
            .unwrap_or_default()
            .to_string(),
    );
    let mut g = f.lock();
    g.state_gets += 1;
    let s = g.sessions.get(&key).cloned().unwrap_or(Session {
        state: 4,
        ..Session::default()
    });
    Json(
        json!({"errcode": 0, "errmsg": "ok", "service_state": s.state,
                "servicer_userid": s.servicer.unwrap_or_default()}),
    )
    .into_response()
}

async fn state_trans(
    State(f): State<Arc<FakeKf>>,
    Query(q): Query<HashMap<String, String>>,
    body: String,
) -> Response {
    if let Some(r) = check_token(&f, &q) {
        return r;
    }
    let m: Value = serde_json::from_str(&body).unwrap_or_default();
    let account = m["open_kfid"].as_str().unwrap_or_default().to_string();
    let key = (
        account.clone(),
        m["external_userid"]
            .as_str()
            .unwrap_or_default()
            .to_string(),
    );
    let to = m["service_state"].as_u64().unwrap_or(99) as u8;
    let servicer = m["servicer_userid"].as_str().map(str::to_string);
    let mut g = f.lock();
    g.trans.push(m.clone());
    if let Some(code) = g.trans_cues.pop_front() {
        return errcode(code, "cued");
    }
    let s = g.sessions.get(&key).cloned().unwrap_or(Session {
        state: 4,
        ..Session::default()
    });
    if s.state == 4 {
        return errcode(95013, "session already ended");
    }
    let allowed = matches!((s.state, to), (0 | 1, 2 | 3) | (2, 3) | (3, 3) | (3, 4));
    if !allowed {
        return errcode(95016, "invalid service state transition");
    }
    if to == 3 {
        let list = g.servicers.get(&account).cloned().unwrap_or_default();
        match list.iter().find(|(u, _)| Some(u) == servicer.as_ref()) {
            None => return errcode(95014, "not a servicer"),
            Some((_, 1)) => return errcode(95019, "servicer stopped"),
            Some(_) => {}
        }
    }
    g.next_code += 1;
    let n = g.next_code;
    let code = match to {
        4 => Some((format!("MSG_CODE_END_{n}"), 20_000)),
        _ if !s.noticed => Some((format!("MSG_CODE_TRANS_{n}"), 48 * 3600 * 1000)),
        _ => None,
    };
    let session = g.sessions.get_mut(&key).expect("session");
    session.state = to;
    session.servicer = if to == 3 { servicer } else { None };
    if to != 4 {
        session.noticed = true;
    }
    let mut answer = json!({"errcode": 0, "errmsg": "ok"});
    if let Some((code, life)) = code {
        g.codes.insert(code.clone(), (now_ms() + life, false));
        answer["msg_code"] = json!(code);
    }
    Json(answer).into_response()
}

async fn servicer_list(
    State(f): State<Arc<FakeKf>>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    if let Some(r) = check_token(&f, &q) {
        return r;
    }
    let account = q.get("open_kfid").cloned().unwrap_or_default();
    let list: Vec<Value> = f
        .lock()
        .servicers
        .get(&account)
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .map(|(u, s)| json!({"userid": u, "status": s, "stop_type": 0}))
        .collect();
    if account.is_empty() {
        return (
            StatusCode::OK,
            Json(json!({"errcode": 95000, "errmsg": "invalid open_kfid"})),
        )
            .into_response();
    }
    Json(json!({"errcode": 0, "errmsg": "ok", "servicer_list": list})).into_response()
}
