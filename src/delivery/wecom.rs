//! WeCom senders: the app's replies (`message/send` with the app's access token) and the
//! group robot's notices (`webhook/send?key=`).
//!
//! Facts: `shared/protocols/wecom.md` §7 (gettoken, message/send, errcodes) and §9 (robot);
//! official pages path/91039 (gettoken), path/90236 (message/send), path/90313 (errcodes),
//! path/91770 (robot). Every WeCom answer is HTTP 200, errors too: the outcome is decided on
//! `errcode` alone, never on `errmsg` (which is only copied into the error text for people).
//!
//! | answer | outcome |
//! | --- | --- |
//! | errcode 0 | sent |
//! | 40014 / 41001 / 42001 (token invalid, missing, expired) | drop the token, fetch a new one, send again once |
//! | -1 (busy), 45033 (concurrency) | `Retry` (outbox backoff) |
//! | 45009 (rate limit), HTTP 429 | `RetryAfter(60 s)`: WeCom blocks for a minute |
//! | HTTP 5xx, network error, timeout, unreadable answer | `Retry` |
//! | any other errcode (60020 untrusted IP, 81013 unknown user, 93000 bad robot key, …) | `Permanent("errcode N: …")` |
//! | gettoken refused (40001 bad secret, 40013 bad corp id, …) | `Retry`, logged as an error |
//!
//! gettoken failures are retried, not dropped: they are configuration problems the operator
//! fixes with a restart, and the replies waiting in the outbox then go out. The outbox backoff
//! (capped at 5 minutes) keeps the rate-limited gettoken from being hammered meanwhile.
//!
//! Neither the app secret, the access token nor the robot key is ever logged: URLs carrying
//! them never reach an error message (`reqwest::Error::without_url`), and tokens live in
//! [`Secret`]s.

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::sync::{Arc, Mutex};

use adapters::wecom::api::{webhook_path, webhook_text_bodies};
use adapters::{Call, CallAuth, Secret};
use async_trait::async_trait;

use super::rate::RateLimit;
use super::wecom_api::request;
pub use super::wecom_api::{
    classify, token_store_key, WeComApi, RATE_LIMITED_WAIT, REFRESH_BEFORE, REQUEST_TIMEOUT,
};
use super::{SendError, Sender};
use crate::clock::Clock;
use crate::config::{WeComChannelConfig, WeComRobotConfig};
use crate::store::Store;

/// Group robot: the webhook key is invalid (path/91770).
pub const ERR_BAD_ROBOT_KEY: i64 = 93000;

/// Sends a WeCom channel's `message/send` calls with the app's access token; with kf on
/// (mode B), hands kf calls to the kf sender, which shares the app's token.
pub struct WeComSender {
    api: Arc<WeComApi>,
    kf: Option<Arc<dyn Sender>>,
}

impl WeComSender {
    pub fn new(
        c: &WeComChannelConfig,
        http: reqwest::Client,
        store: Arc<dyn Store>,
        clock: Arc<dyn Clock>,
    ) -> Self {
        Self::with_api(Arc::new(WeComApi::new(
            &c.name,
            &c.corp_id,
            &c.secret,
            &c.api_base,
            http,
            store,
            clock,
        )))
    }

    /// A sender on an API client shared with other parts of the channel.
    pub fn with_api(api: Arc<WeComApi>) -> Self {
        WeComSender { api, kf: None }
    }

    /// Calls under `/cgi-bin/kf/` go to `kf` (mode B: the app manages kf accounts).
    pub fn with_kf(mut self, kf: Arc<dyn Sender>) -> Self {
        self.kf = Some(kf);
        self
    }

    /// The kf sender, when `call` is a kf call and the channel has one.
    fn kf_for(&self, call: &Call) -> Option<&Arc<dyn Sender>> {
        self.kf
            .as_ref()
            .filter(|_| call.url.starts_with(adapters::wecom::kf::PATH_PREFIX))
    }
}

#[async_trait]
impl Sender for WeComSender {
    /// App messages carry no id the platform checks; kf calls are the kf sender's to judge.
    fn resend_safe(&self, call: &Call) -> bool {
        self.kf_for(call).is_some_and(|kf| kf.resend_safe(call))
    }

    async fn resend(&self, call: &Call) -> Result<(), SendError> {
        match self.kf_for(call) {
            Some(kf) => kf.resend(call).await,
            None => self.send(call).await,
        }
    }

    async fn send(&self, call: &Call) -> Result<(), SendError> {
        if let Some(kf) = self.kf_for(call) {
            return kf.send(call).await;
        }
        // Only paths under our own api_base: the token must never go to another host.
        if !call.url.starts_with('/') {
            return Err(SendError::Permanent(format!(
                "wecom call url is not a path under api_base: {:?}",
                call.url.split('?').next().unwrap_or_default()
            )));
        }
        match call.auth {
            CallAuth::WeComToken => {}
            CallAuth::None => {
                return classify(
                    &self
                        .api
                        .attempt(&call.method, &call.url, &call.body, None)
                        .await?
                        .reply,
                )
            }
            CallAuth::DingTalkToken => {
                return Err(SendError::Permanent(
                    "a DingTalk call queued on a WeCom channel".into(),
                ))
            }
        }
        classify(
            &self
                .api
                .call(&call.method, &call.url, &call.body)
                .await?
                .reply,
        )
    }
}

/// Sends `[[notify]] kind = "wecom_robot"` notices: the call's body is the plain text.
pub struct WeComRobotSender {
    name: String,
    /// `{api_base}/cgi-bin/webhook/send?key=KEY`: holds the key, never logged.
    url: Secret,
    http: reqwest::Client,
    clock: Arc<dyn Clock>,
    /// WeCom allows 20 messages a minute per robot and blocks it for a minute after that.
    rate: RateLimit,
    /// (hash of the notice, parts already sent): a long notice goes out in parts, and a retry
    /// of the same notice skips the parts WeCom already took. Only the head of the queue can
    /// be half sent, so one slot is enough; it lives in memory (a restart may repeat a part).
    progress: Mutex<Option<(u64, usize)>>,
}

impl WeComRobotSender {
    pub fn new(c: &WeComRobotConfig, http: reqwest::Client, clock: Arc<dyn Clock>) -> Self {
        WeComRobotSender {
            name: c.name.clone(),
            url: Secret::new(format!(
                "{}{}",
                c.api_base.trim_end_matches('/'),
                webhook_path(&c.key)
            )),
            http,
            clock,
            rate: RateLimit::per_minute(20),
            progress: Mutex::new(None),
        }
    }

    fn progress(&self) -> std::sync::MutexGuard<'_, Option<(u64, usize)>> {
        self.progress.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[async_trait]
impl Sender for WeComRobotSender {
    async fn send(&self, call: &Call) -> Result<(), SendError> {
        if call.body.trim().is_empty() {
            return Ok(());
        }
        let bodies = webhook_text_bodies(&call.body, &[], &[]);
        let id = {
            let mut h = DefaultHasher::new();
            call.body.hash(&mut h);
            h.finish()
        };
        let done = match *self.progress() {
            Some((p, n)) if p == id => n,
            _ => 0,
        };
        for (i, body) in bodies.iter().enumerate().skip(done) {
            if let Err(wait) = self.rate.acquire(self.clock.now_ms()) {
                *self.progress() = Some((id, i));
                return Err(SendError::RetryAfter(
                    wait,
                    "robot limit of 20 messages a minute".into(),
                ));
            }
            let req = self
                .http
                .post(self.url.expose())
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(body.clone());
            let outcome = match request(req).await {
                Ok(a) if a.reply.errcode == ERR_BAD_ROBOT_KEY => {
                    Err(SendError::Permanent(format!(
                        "errcode {ERR_BAD_ROBOT_KEY}: the key of robot {} is invalid",
                        self.name
                    )))
                }
                Ok(a) => classify(&a.reply),
                Err(e) => Err(e),
            };
            if let Err(e) = outcome {
                *self.progress() = Some((id, i));
                return Err(e);
            }
        }
        *self.progress() = None;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    use axum::extract::{Path, RawQuery, State};
    use axum::http::StatusCode;
    use axum::response::{IntoResponse, Response};
    use axum::routing::{get, post};

    use super::*;
    use crate::clock::FixedClock;
    use crate::store::MemoryStore;

    const SECRET: &str = "app-secret-123";
    const KEY: &str = "robot-key-456";

    /// What the fake answers next: a JSON body (HTTP 200) or a bare status.
    #[derive(Clone)]
    enum Answer {
        Json(&'static str),
        Status(u16),
    }

    /// A scripted WeCom: gettoken issues `tok-1`, `tok-2`, …; every request is recorded.
    #[derive(Default)]
    struct Fake {
        gettoken: Mutex<VecDeque<Answer>>,
        send: Mutex<VecDeque<Answer>>,
        issued: AtomicUsize,
        /// (path, query, body) of every call.
        seen: Mutex<Vec<(String, String, String)>>,
    }

    impl Fake {
        fn seen(&self, path: &str) -> Vec<(String, String)> {
            let seen = self.seen.lock().unwrap();
            seen.iter()
                .filter(|(p, _, _)| p.ends_with(path))
                .map(|(_, q, b)| (q.clone(), b.clone()))
                .collect()
        }
        fn script(&self, which: &str, answers: &[Answer]) {
            let q = if which == "gettoken" {
                &self.gettoken
            } else {
                &self.send
            };
            q.lock().unwrap().extend(answers.iter().cloned());
        }
    }

    fn answer(a: Answer) -> Response {
        match a {
            Answer::Json(j) => j.to_string().into_response(),
            Answer::Status(s) => (StatusCode::from_u16(s).unwrap(), "oops").into_response(),
        }
    }

    async fn serve_fake() -> (Arc<Fake>, String) {
        async fn gettoken(State(f): State<Arc<Fake>>, RawQuery(q): RawQuery) -> Response {
            let q = q.unwrap_or_default();
            f.seen
                .lock()
                .unwrap()
                .push(("/cgi-bin/gettoken".into(), q.clone(), String::new()));
            if let Some(a) = f.gettoken.lock().unwrap().pop_front() {
                return answer(a);
            }
            if !q.contains(&format!("corpsecret={SECRET}")) {
                return answer(Answer::Json(
                    r#"{"errcode":40001,"errmsg":"invalid secret"}"#,
                ));
            }
            let n = f.issued.fetch_add(1, Ordering::SeqCst) + 1;
            format!(r#"{{"errcode":0,"errmsg":"ok","access_token":"tok-{n}","expires_in":7200}}"#)
                .into_response()
        }
        async fn send(
            State(f): State<Arc<Fake>>,
            Path(path): Path<String>,
            RawQuery(q): RawQuery,
            body: String,
        ) -> Response {
            f.seen
                .lock()
                .unwrap()
                .push((path, q.unwrap_or_default(), body));
            let next = f.send.lock().unwrap().pop_front();
            answer(next.unwrap_or(Answer::Json(r#"{"errcode":0,"errmsg":"ok"}"#)))
        }
        let fake = Arc::new(Fake::default());
        let app = axum::Router::new()
            .route("/cgi-bin/gettoken", get(gettoken))
            .route("/cgi-bin/{*path}", post(send))
            .with_state(fake.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        (fake, base)
    }

    fn channel(base: &str) -> WeComChannelConfig {
        WeComChannelConfig {
            name: "support".into(),
            corp_id: "ww1436e0e65a779aee".into(),
            agent_id: 1000002,
            secret: Secret::new(SECRET),
            token: Secret::new("t"),
            encoding_aes_key: Secret::new("6qkdMrq68nTKduznJYO1A37W2oEgpkMUvkttRToqhUt"),
            api_base: format!("{base}/"),
            markdown: false,
            greet_on_enter: true,
            timestamp_window_ms: crate::config::DEFAULT_WECOM_TIMESTAMP_WINDOW_MS,
            kf: false,
            open_kfids: None,
            human_servicers: None,
            welcome: None,
            platform_handoff: None,
            backlog_reply_secs: None,
            poll_secs: None,
        }
    }

    fn sender(base: &str, store: &Arc<dyn Store>, clock: &Arc<FixedClock>) -> WeComSender {
        WeComSender::new(
            &channel(base),
            reqwest::Client::new(),
            store.clone(),
            clock.clone(),
        )
    }

    fn send_call(text: &str) -> Call {
        Call {
            method: "POST".into(),
            url: adapters::wecom::MESSAGE_SEND_PATH.into(),
            body: adapters::wecom::message_send_body("ChenJiaShun", 1000002, text, false),
            auth: CallAuth::WeComToken,
        }
    }

    fn setup() -> (Arc<dyn Store>, Arc<FixedClock>) {
        (
            Arc::new(MemoryStore::new()),
            Arc::new(FixedClock::at_ms(1_700_000_000_000)),
        )
    }

    #[tokio::test]
    async fn token_is_fetched_once_cached_persisted_and_reloaded() {
        let (fake, base) = serve_fake().await;
        let (store, clock) = setup();
        let s = sender(&base, &store, &clock);
        s.send(&send_call("a")).await.unwrap();
        s.send(&send_call("b")).await.unwrap();
        assert_eq!(fake.seen("gettoken").len(), 1, "one gettoken for two sends");
        let sent = fake.seen("message/send");
        assert_eq!(sent.len(), 2);
        assert_eq!(sent[0].0, "access_token=tok-1");
        assert!(sent[1].1.contains(r#""content":"b""#));
        let stored: serde_json::Value =
            serde_json::from_slice(&store.kv_get("wecom_token:support").unwrap().unwrap()).unwrap();
        assert_eq!(stored["token"], "tok-1");
        assert_eq!(stored["expires_at_ms"], 1_700_000_000_000u64 + 7_200_000);

        // A restart: a new sender on the same store uses the stored token.
        let again = sender(&base, &store, &clock);
        again.send(&send_call("c")).await.unwrap();
        assert_eq!(fake.seen("gettoken").len(), 1);
        assert_eq!(fake.seen("message/send")[2].0, "access_token=tok-1");

        // ...unless the config now names other credentials.
        let mut other = channel(&base);
        other.corp_id = "wwother".into();
        let s3 = WeComSender::new(&other, reqwest::Client::new(), store.clone(), clock.clone());
        s3.send(&send_call("d")).await.unwrap();
        assert_eq!(fake.seen("gettoken").len(), 2);
    }

    #[tokio::test]
    async fn token_is_refreshed_five_minutes_before_expiry() {
        let (fake, base) = serve_fake().await;
        let (store, clock) = setup();
        let s = sender(&base, &store, &clock);
        s.send(&send_call("a")).await.unwrap();
        clock.advance(Duration::from_secs(7200 - 301));
        s.send(&send_call("b")).await.unwrap();
        assert_eq!(fake.seen("gettoken").len(), 1, "still fresh");
        clock.advance(Duration::from_secs(2));
        s.send(&send_call("c")).await.unwrap();
        assert_eq!(fake.seen("gettoken").len(), 2, "refreshed in the margin");
        assert_eq!(fake.seen("message/send")[2].0, "access_token=tok-2");
    }

    #[tokio::test]
    async fn a_refused_token_is_replaced_and_the_call_retried_once() {
        for code in ["40014", "41001", "42001"] {
            let (fake, base) = serve_fake().await;
            let (store, clock) = setup();
            let s = sender(&base, &store, &clock);
            let refused: &'static str =
                Box::leak(format!(r#"{{"errcode":{code},"errmsg":"ok"}}"#).into_boxed_str());
            fake.script("send", &[Answer::Json(refused)]);
            s.send(&send_call("a")).await.unwrap();
            let sent = fake.seen("message/send");
            assert_eq!(sent.len(), 2, "{code}");
            assert_eq!(sent[1].0, "access_token=tok-2", "{code}");
            // The stored token is the new one.
            let stored =
                String::from_utf8(store.kv_get("wecom_token:support").unwrap().unwrap()).unwrap();
            assert!(stored.contains("tok-2"), "{code}");
        }
        // Refused again with the fresh token: retry later, no third attempt now.
        let (fake, base) = serve_fake().await;
        let (store, clock) = setup();
        let s = sender(&base, &store, &clock);
        let refused = Answer::Json(r#"{"errcode":42001,"errmsg":"expired"}"#);
        fake.script("send", &[refused.clone(), refused]);
        assert!(matches!(
            s.send(&send_call("a")).await,
            Err(SendError::Retry(_))
        ));
        assert_eq!(fake.seen("message/send").len(), 2);
        s.send(&send_call("a")).await.unwrap();
        assert_eq!(
            fake.seen("gettoken").len(),
            3,
            "the refused token was dropped"
        );
    }

    #[tokio::test]
    async fn answers_are_classified_by_errcode_and_status() {
        let (fake, base) = serve_fake().await;
        let (store, clock) = setup();
        let s = sender(&base, &store, &clock);
        let cases: Vec<(Answer, &str)> = vec![
            (
                Answer::Json(r#"{"errcode":-1,"errmsg":"system busy"}"#),
                "retry",
            ),
            (Answer::Json(r#"{"errcode":45033,"errmsg":"x"}"#), "retry"),
            (Answer::Json(r#"{"errcode":45009,"errmsg":"x"}"#), "after"),
            (Answer::Status(429), "after"),
            (Answer::Status(500), "retry"),
            (Answer::Status(503), "retry"),
            (Answer::Json("<html>gateway</html>"), "retry"),
            (
                Answer::Json(r#"{"errcode":81013,"errmsg":"ok"}"#),
                "permanent",
            ),
            (
                Answer::Json(r#"{"errcode":60020,"errmsg":"not allow to access from your ip"}"#),
                "permanent",
            ),
            (Answer::Json(r#"{"errcode":0,"errmsg":"failed"}"#), "ok"),
            (
                Answer::Json(r#"{"errcode":0,"errmsg":"ok","invaliduser":"ChenJiaShun"}"#),
                "ok",
            ),
        ];
        for (a, want) in cases {
            fake.script("send", &[a]);
            let got = s.send(&send_call("x")).await;
            let class = match &got {
                Ok(()) => "ok",
                Err(SendError::Retry(_)) => "retry",
                Err(SendError::RetryAfter(d, _)) => {
                    assert_eq!(*d, RATE_LIMITED_WAIT);
                    "after"
                }
                Err(SendError::Permanent(_)) => "permanent",
            };
            assert_eq!(class, want, "{got:?}");
            if let Err(SendError::Permanent(m)) = &got {
                assert!(m.starts_with("errcode "), "{m}");
            }
        }
        assert_eq!(fake.seen("gettoken").len(), 1);
    }

    #[tokio::test]
    async fn gettoken_failures_retry_and_nothing_leaks() {
        let (fake, base) = serve_fake().await;
        let (store, clock) = setup();
        let mut bad = channel(&base);
        bad.secret = Secret::new("wrong-secret");
        let s = WeComSender::new(&bad, reqwest::Client::new(), store.clone(), clock.clone());
        match s.send(&send_call("a")).await {
            Err(SendError::Retry(m)) => {
                assert!(m.contains("40001") && m.contains("secret"), "{m}");
                assert!(!m.contains("wrong-secret"), "{m}");
            }
            other => panic!("{other:?}"),
        }
        assert!(fake.seen("message/send").is_empty());
        fake.script("gettoken", &[Answer::Status(502)]);
        let s = sender(&base, &store, &clock);
        assert!(matches!(
            s.send(&send_call("a")).await,
            Err(SendError::Retry(_))
        ));

        // Nothing listens: a network error, with neither the secret nor the token in it.
        let closed = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            format!("http://{}", l.local_addr().unwrap())
        };
        let s = sender(&closed, &store, &clock);
        match s.send(&send_call("a")).await {
            Err(SendError::Retry(m)) => {
                assert!(m.contains("gettoken") && !m.contains(SECRET), "{m}");
            }
            other => panic!("{other:?}"),
        }
        // With a stored token (from the first sender above), the send itself fails.
        let ok = sender(&base, &store, &clock);
        ok.send(&send_call("a")).await.unwrap();
        let s = sender(&closed, &store, &clock);
        match s.send(&send_call("a")).await {
            Err(SendError::Retry(m)) => assert!(!m.contains("tok-"), "{m}"),
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test]
    async fn calls_outside_api_base_are_refused() {
        let (fake, base) = serve_fake().await;
        let (store, clock) = setup();
        let s = sender(&base, &store, &clock);
        let mut c = send_call("a");
        c.url = "https://evil.example.com/cgi-bin/message/send".into();
        assert!(matches!(s.send(&c).await, Err(SendError::Permanent(_))));
        assert!(
            fake.seen.lock().unwrap().is_empty(),
            "no token fetched for it"
        );
    }

    fn robot(base: &str, clock: &Arc<FixedClock>) -> WeComRobotSender {
        WeComRobotSender::new(
            &WeComRobotConfig {
                name: "agents".into(),
                key: Secret::new(KEY),
                api_base: base.into(),
            },
            reqwest::Client::new(),
            clock.clone(),
        )
    }

    #[tokio::test]
    async fn robot_sends_text_within_twenty_a_minute() {
        let (fake, base) = serve_fake().await;
        let (_, clock) = setup();
        let r = robot(&base, &clock);
        let notice = &crate::delivery::notify_calls("[kefu] 需要人工")[0];
        r.send(notice).await.unwrap();
        let seen = fake.seen("webhook/send");
        assert_eq!(seen[0].0, format!("key={KEY}"));
        let v: serde_json::Value = serde_json::from_str(&seen[0].1).unwrap();
        assert_eq!(v["msgtype"], "text");
        assert_eq!(v["text"]["content"], "[kefu] 需要人工");
        for _ in 1..20 {
            r.send(notice).await.unwrap();
        }
        match r.send(notice).await {
            Err(SendError::RetryAfter(d, _)) => assert_eq!(d, Duration::from_secs(60)),
            other => panic!("{other:?}"),
        }
        assert_eq!(fake.seen("webhook/send").len(), 20);
        clock.advance(Duration::from_secs(60));
        r.send(notice).await.unwrap();
    }

    #[tokio::test]
    async fn robot_errcodes_and_split_notices() {
        let (fake, base) = serve_fake().await;
        let (_, clock) = setup();
        let r = robot(&base, &clock);
        let notice = crate::delivery::notify_calls("hi").remove(0);
        fake.script(
            "send",
            &[Answer::Json(
                r#"{"errcode":93000,"errmsg":"invalid webhook url"}"#,
            )],
        );
        match r.send(&notice).await {
            Err(SendError::Permanent(m)) => assert!(m.contains("93000") && !m.contains(KEY)),
            other => panic!("{other:?}"),
        }
        fake.script("send", &[Answer::Json(r#"{"errcode":45009,"errmsg":"x"}"#)]);
        assert!(matches!(
            r.send(&notice).await,
            Err(SendError::RetryAfter(..))
        ));
        // 3000 bytes: two parts; the second fails, the retry sends only the second.
        let long = crate::delivery::notify_calls(&"警".repeat(1000)).remove(0);
        let before = fake.seen("webhook/send").len();
        fake.script(
            "send",
            &[Answer::Json(r#"{"errcode":0}"#), Answer::Status(502)],
        );
        assert!(matches!(r.send(&long).await, Err(SendError::Retry(_))));
        r.send(&long).await.unwrap();
        let seen = fake.seen("webhook/send");
        let parts: Vec<String> = seen[before..]
            .iter()
            .map(|(_, b)| {
                let v: serde_json::Value = serde_json::from_str(b).unwrap();
                v["text"]["content"].as_str().unwrap().to_string()
            })
            .collect();
        assert_eq!(parts.len(), 3, "part 1, part 2 refused, part 2 again");
        assert_eq!(parts[1], parts[2]);
        assert!(parts.iter().all(|p| p.len() <= 2048));
        assert_eq!(format!("{}{}", parts[0], parts[1]), "警".repeat(1000));
    }
}
