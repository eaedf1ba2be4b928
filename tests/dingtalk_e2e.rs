//! DingTalk end to end: kefu in-process against a fake DingTalk (sessionWebhooks, OpenAPI,
//! custom robot, Stream gateway) on 127.0.0.1. Real time throughout (sockets); every async
//! effect is polled for with a deadline, never assumed after a fixed sleep.

mod common_dingtalk;

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use adapters::{Call, CallAuth};
use common_dingtalk::*;
use kefu::delivery::{SendError, Sender};
use serde_json::{json, Value};

const HOUR_MS: u64 = 3_600_000;

fn single<'a>(msg_id: &'a str, conv: &'a str, session: &str, fake: &Fake) -> Callback<'a> {
    Callback {
        msg_id,
        text: "how do I reset my password",
        group: false,
        conversation: conv,
        staff_id: "staff-1",
        webhook: fake.webhook(session),
        webhook_expires_ms: now_ms() + 2 * HOUR_MS,
    }
}

async fn post_ok(kefu: &Kefu, body: &str) {
    let resp = kefu.post(body).await;
    assert_eq!(
        resp.status(),
        200,
        "{}",
        resp.text().await.unwrap_or_default()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn single_chat_is_answered_on_the_session_webhook() {
    let fake = Fake::start().await;
    let kefu = Kefu::start(&fake, Options::default()).await;
    post_ok(&kefu, &single("m-1", "cid-1", "s1", &fake).json()).await;
    wait_for("the webhook reply", 10, || !fake.posts_to("s1").is_empty()).await;
    let posts = fake.posts_to("s1");
    assert_eq!(posts.len(), 1, "{posts:?}");
    assert_eq!(posts[0]["msgtype"], "text");
    assert!(
        message_text(&posts[0]).contains(RESET_ANSWER),
        "{}",
        posts[0]
    );
    // Single chats mention nobody.
    assert!(posts[0].get("at").is_none(), "{}", posts[0]);
    wait_for("an empty outbox", 10, || kefu.outbox_len() == 0).await;
    assert_eq!(fake.state.tokens_issued.load(Ordering::SeqCst), 0);
    assert!(fake.openapi_sends().is_empty());
    // The turn is stored under the channel and conversation, the inbox is drained.
    let msgs = kefu
        .state
        .app
        .store
        .messages(CHANNEL, "cid-1", 0, 10)
        .unwrap();
    assert_eq!(msgs[0].text, "how do I reset my password");
    assert!(kefu.state.app.store.inbox_all().unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn group_mention_is_answered_in_the_group_with_at() {
    let fake = Fake::start().await;
    let kefu = Kefu::start(
        &fake,
        Options {
            markdown: true,
            ..Options::default()
        },
    )
    .await;
    let cb = Callback {
        msg_id: "g-1",
        text: " @客服 how do I reset my password",
        group: true,
        conversation: "cidGroup==",
        staff_id: "manager4711",
        webhook: fake.webhook("group"),
        webhook_expires_ms: now_ms() + 2 * HOUR_MS,
    };
    post_ok(&kefu, &cb.json()).await;
    wait_for("the group reply", 10, || !fake.posts_to("group").is_empty()).await;
    let v = &fake.posts_to("group")[0];
    assert_eq!(v["msgtype"], "markdown", "{v}");
    assert!(message_text(v).contains(RESET_ANSWER), "{v}");
    assert_eq!(v["at"]["atUserIds"], json!(["manager4711"]), "{v}");
    let msgs = kefu
        .state
        .app
        .store
        .messages(CHANNEL, "cidGroup==", 0, 10)
        .unwrap();
    assert_eq!(
        msgs[0].text, "how do I reset my password",
        "leading @ stripped"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_session_webhook_goes_through_the_openapi() {
    let fake = Fake::start().await;
    let kefu = Kefu::start(&fake, Options::default()).await;
    let mut cb = single("m-exp", "cid-exp", "dead", &fake);
    cb.webhook_expires_ms = now_ms() - 1_000;
    post_ok(&kefu, &cb.json()).await;
    wait_for("the OpenAPI send", 10, || !fake.openapi_sends().is_empty()).await;
    let (path, token, body) = fake.openapi_sends()[0].clone();
    assert_eq!(path, "/v1.0/robot/oToMessages/batchSend");
    assert_eq!(token, "tok-1");
    assert_eq!(body["robotCode"], ROBOT_CODE);
    assert_eq!(body["userIds"], json!(["staff-1"]));
    assert_eq!(body["msgKey"], "sampleText");
    assert!(openapi_text(&body).contains(RESET_ANSWER), "{body}");
    assert!(
        fake.posts_to("dead").is_empty(),
        "an expired webhook is not tried"
    );
    // The token is cached (in memory and in the store) for the next send.
    let stored = kefu
        .state
        .app
        .store
        .kv_get(&format!("dingtalk_token:{CHANNEL}"))
        .unwrap()
        .expect("persisted token");
    assert!(String::from_utf8_lossy(&stored).contains("tok-1"));

    let mut cb = single("m-exp-2", "cid-exp", "dead", &fake);
    cb.webhook_expires_ms = now_ms() - 1_000;
    post_ok(&kefu, &cb.json()).await;
    wait_for("the second send", 10, || fake.openapi_sends().len() == 2).await;
    assert_eq!(fake.state.tokens_issued.load(Ordering::SeqCst), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_webhook_falls_back_to_the_openapi_once() {
    let fake = Fake::start().await;
    let kefu = Kefu::start(&fake, Options::default()).await;
    fake.set_hook("broken", Hook::Errcode(300_001));
    let cb = Callback {
        msg_id: "g-fail",
        text: "@客服 how do I reset my password",
        group: true,
        conversation: "cidG2==",
        staff_id: "staff-9",
        webhook: fake.webhook("broken"),
        webhook_expires_ms: now_ms() + 2 * HOUR_MS,
    };
    post_ok(&kefu, &cb.json()).await;
    wait_for("the OpenAPI fallback", 10, || {
        !fake.openapi_sends().is_empty()
    })
    .await;
    wait_for("an empty outbox", 10, || kefu.outbox_len() == 0).await;
    // A later message in the same group, on a live webhook, comes after it: the fallback
    // was the only delivery and was not repeated.
    let cb2 = Callback {
        msg_id: "g-next",
        webhook: fake.webhook("good"),
        ..cb
    };
    post_ok(&kefu, &cb2.json()).await;
    wait_for("the next reply", 10, || !fake.posts_to("good").is_empty()).await;
    assert_eq!(
        fake.posts_to("broken").len(),
        1,
        "the webhook is tried once"
    );
    let sends = fake.openapi_sends();
    assert_eq!(sends.len(), 1, "{sends:?}");
    let (path, _, body) = &sends[0];
    assert_eq!(path, "/v1.0/robot/groupMessages/send");
    assert_eq!(body["openConversationId"], "cidG2==");
    assert_eq!(body["robotCode"], ROBOT_CODE);
    assert!(openapi_text(body).contains(RESET_ANSWER), "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_duplicate_msg_id_gets_one_reply() {
    let fake = Fake::start().await;
    let kefu = Kefu::start(&fake, Options::default()).await;
    let body = single("m-dup", "cid-dup", "dup", &fake).json();
    post_ok(&kefu, &body).await;
    post_ok(&kefu, &body).await;
    // A marker in the same conversation is answered after anything the duplicate caused.
    post_ok(
        &kefu,
        &single("m-marker", "cid-dup", "marker", &fake).json(),
    )
    .await;
    wait_for("the marker's reply", 10, || {
        !fake.posts_to("marker").is_empty()
    })
    .await;
    assert_eq!(fake.posts_to("dup").len(), 1);
    let msgs = kefu
        .state
        .app
        .store
        .messages(CHANNEL, "cid-dup", 0, 20)
        .unwrap();
    let asked = msgs
        .iter()
        .filter(|m| m.platform_id.as_deref() == Some("m-dup"))
        .count();
    assert_eq!(asked, 1, "{msgs:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_sign_or_stale_timestamp_is_401_and_nothing_happens() {
    let fake = Fake::start().await;
    let kefu = Kefu::start(&fake, Options::default()).await;
    let body = single("m-bad", "cid-bad", "bad", &fake).json();
    let now = now_ms().to_string();
    let stale = (now_ms() - HOUR_MS - 60_000).to_string();
    let future = (now_ms() + HOUR_MS + 60_000).to_string();
    for (ts, secret) in [
        (now.as_str(), "wrong secret"),
        (stale.as_str(), APP_SECRET),
        (future.as_str(), APP_SECRET),
        ("not-a-number", APP_SECRET),
    ] {
        let resp = kefu.post_signed(&body, ts, secret).await;
        assert_eq!(resp.status(), 401, "{ts} {secret}");
        let v: Value = resp.json().await.unwrap();
        assert!(v["error"].is_string(), "{v}");
    }
    let resp = kefu
        .http
        .post(format!("{}/dingtalk/{CHANNEL}", kefu.base))
        .header("content-type", "application/json")
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401, "no headers");
    // A good message afterwards is answered; the refused ones left no trace.
    post_ok(&kefu, &single("m-good", "cid-good", "good", &fake).json()).await;
    wait_for("the good reply", 10, || !fake.posts_to("good").is_empty()).await;
    assert!(fake.posts_to("bad").is_empty());
    let store = &kefu.state.app.store;
    assert!(store.conversation(CHANNEL, "cid-bad").unwrap().is_none());
    assert!(store.inbox_all().unwrap().is_empty());
    // Not remembered for dedupe either: the same msgId, signed right, is handled.
    post_ok(&kefu, &body).await;
    wait_for("the late reply", 10, || !fake.posts_to("bad").is_empty()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_json_is_400() {
    let fake = Fake::start().await;
    let kefu = Kefu::start(&fake, Options::default()).await;
    for body in [
        "{not json",
        "[]",
        r#"{"msgtype":"text","text":{"content":"hi"}}"#,
    ] {
        let resp = kefu.post(body).await;
        assert_eq!(resp.status(), 400, "{body}");
    }
    // Unknown channel: 404.
    let resp = kefu
        .http
        .post(format!("{}/dingtalk/nope", kefu.base))
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 404);
    assert!(fake.state.webhook_posts.lock().unwrap().is_empty());
}

fn robot_frame(message_id: &str, data: &str) -> String {
    json!({
        "specVersion": "1.0",
        "type": "CALLBACK",
        "headers": {
            "appId": "app", "connectionId": "c", "contentType": "application/json",
            "messageId": message_id, "time": now_ms().to_string(),
            "topic": "/v1.0/im/bot/messages/get",
        },
        "data": data,
    })
    .to_string()
}

fn acked(fake: &Fake, message_id: &str) -> bool {
    fake.ws_received()
        .iter()
        .any(|v| v["headers"]["messageId"] == message_id && v["code"] == 200)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_mode_acks_answers_reconnects_and_closes() {
    let fake = Fake::start().await;
    let kefu = Kefu::start(
        &fake,
        Options {
            mode: "stream",
            ..Options::default()
        },
    )
    .await;
    let st = fake.state.clone();
    wait_for("the first connection", 10, || {
        st.ws_connections.load(Ordering::SeqCst) == 1
    })
    .await;
    assert_eq!(st.opens.load(Ordering::SeqCst), 1);

    // A robot message: stored, acked with its messageId, answered through the webhook.
    let data = single("s-1", "cid-s", "stream1", &fake).json();
    fake.push(robot_frame("frame-1", &data));
    wait_for("the ack", 10, || acked(&fake, "frame-1")).await;
    let ack = fake
        .ws_received()
        .into_iter()
        .find(|v| v["headers"]["messageId"] == "frame-1")
        .unwrap();
    assert_eq!(ack["data"], r#"{"response":null}"#);
    assert_eq!(ack["headers"]["contentType"], "application/json");
    wait_for("the reply", 10, || !fake.posts_to("stream1").is_empty()).await;
    assert!(message_text(&fake.posts_to("stream1")[0]).contains(RESET_ANSWER));

    // SYSTEM ping → the echo.
    fake.push(
        json!({"specVersion":"1.0","type":"SYSTEM",
               "headers":{"messageId":"ping-1","topic":"ping","contentType":"application/json"},
               "data":"{\"opaque\":\"o-1\"}"})
        .to_string(),
    );
    wait_for("the pong", 10, || acked(&fake, "ping-1")).await;
    let pong = fake
        .ws_received()
        .into_iter()
        .find(|v| v["headers"]["messageId"] == "ping-1")
        .unwrap();
    assert_eq!(pong["data"], r#"{"opaque":"o-1"}"#);

    // The same message again (DingTalk re-delivers unacked ones): acked, not answered twice.
    fake.push(robot_frame("frame-1b", &data));
    wait_for("the second ack", 10, || acked(&fake, "frame-1b")).await;

    // The gateway drops the connection: kefu opens a new one with a new ticket.
    fake.drop_connection();
    wait_for("a reconnect", 10, || {
        st.ws_connections.load(Ordering::SeqCst) == 2
    })
    .await;
    assert_eq!(st.opens.load(Ordering::SeqCst), 2);
    assert_eq!(
        st.ws_refused.load(Ordering::SeqCst),
        0,
        "each ticket used once"
    );
    let data2 = single("s-2", "cid-s", "stream2", &fake).json();
    fake.push(robot_frame("frame-2", &data2));
    wait_for("the ack after reconnect", 10, || acked(&fake, "frame-2")).await;
    wait_for("the reply after reconnect", 10, || {
        !fake.posts_to("stream2").is_empty()
    })
    .await;
    assert_eq!(
        fake.posts_to("stream1").len(),
        1,
        "the re-delivery was deduped"
    );

    // DingTalk asks to reconnect: acked, closed, reopened.
    fake.push(
        json!({"specVersion":"1.0","type":"SYSTEM",
               "headers":{"messageId":"disc-1","topic":"disconnect"},"data":"{}"})
        .to_string(),
    );
    wait_for("the disconnect ack", 10, || acked(&fake, "disc-1")).await;
    wait_for("the reconnect after disconnect", 10, || {
        st.ws_connections.load(Ordering::SeqCst) == 3
    })
    .await;
    let closes_before = st.ws_closes.load(Ordering::SeqCst);
    assert_eq!(
        closes_before, 1,
        "the disconnect closed the old socket cleanly"
    );

    // Shutdown: a Close frame, and no new connection.
    kefu.stop.send(true).unwrap();
    wait_for("the close frame", 10, || {
        st.ws_closes.load(Ordering::SeqCst) == closes_before + 1
    })
    .await;
    assert_eq!(st.ws_connections.load(Ordering::SeqCst), 3);
    assert_eq!(st.opens.load(Ordering::SeqCst), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_message_that_is_no_robot_message_is_acked_and_dropped() {
    let fake = Fake::start().await;
    let kefu = Kefu::start(
        &fake,
        Options {
            mode: "stream",
            ..Options::default()
        },
    )
    .await;
    let st = fake.state.clone();
    wait_for("a connection", 10, || {
        st.ws_connections.load(Ordering::SeqCst) == 1
    })
    .await;
    fake.push(robot_frame("junk", "{not json"));
    fake.push(
        json!({"type":"EVENT","headers":{"messageId":"ev-1","topic":"*"},"data":"{}"}).to_string(),
    );
    wait_for("both acks", 10, || {
        acked(&fake, "junk") && acked(&fake, "ev-1")
    })
    .await;
    assert_eq!(
        kefu.state.app.metrics.get(
            "kefu_callbacks_total",
            &[("channel", CHANNEL), ("outcome", "malformed")]
        ),
        1
    );
    assert_eq!(
        st.ws_connections.load(Ordering::SeqCst),
        1,
        "still connected"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_token_is_renewed_and_the_send_retried() {
    let fake = Fake::start().await;
    let kefu = Kefu::start(&fake, Options::default()).await;
    let mut cb = single("t-1", "cid-t", "x", &fake);
    cb.webhook_expires_ms = 0;
    post_ok(&kefu, &cb.json()).await;
    wait_for("the first send", 10, || fake.openapi_sends().len() == 1).await;
    // DingTalk revokes the token (as after an app secret reset).
    *fake.state.current_token.lock().unwrap() = Some("revoked-elsewhere".into());
    let mut cb = single("t-2", "cid-t", "x", &fake);
    cb.webhook_expires_ms = 0;
    post_ok(&kefu, &cb.json()).await;
    wait_for("the second send", 10, || fake.openapi_sends().len() == 2).await;
    assert_eq!(fake.state.openapi_refused.load(Ordering::SeqCst), 1);
    assert_eq!(fake.state.tokens_issued.load(Ordering::SeqCst), 2);
    assert_eq!(fake.openapi_sends()[1].1, "tok-2");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handoff_alert_goes_to_the_custom_robot_signed() {
    let fake = Fake::start().await;
    let kefu = Kefu::start(&fake, Options::default()).await;
    let mut cb = single("h-1", "cid-h", "h", &fake);
    cb.text = "I want to talk to a human";
    post_ok(&kefu, &cb.json()).await;
    wait_for("the alert", 10, || {
        !fake.state.robot_posts.lock().unwrap().is_empty()
    })
    .await;
    let (query, body) = fake.state.robot_posts.lock().unwrap()[0].clone();
    assert_eq!(body["msgtype"], "text");
    let text = message_text(&body);
    assert!(
        text.contains("cid-h") && text.contains("needs a human"),
        "{text}"
    );
    let ts: u64 = query["timestamp"].parse().unwrap();
    assert!(now_ms().abs_diff(ts) < 60_000, "signed at send time");
    assert_eq!(fake.state.robot_bad_sign.load(Ordering::SeqCst), 0);
    // The customer hears about it on the webhook.
    wait_for("the customer's reply", 10, || {
        !fake.posts_to("h").is_empty()
    })
    .await;
}

// --- The senders on their own: outcomes the outbox acts on. ---

fn channel_config(fake: &Fake) -> kefu::config::DingTalkChannelConfig {
    let toml = format!(
        r#"
[[channels]]
name = "{CHANNEL}"
kind = "dingtalk"
app_key = "{APP_KEY}"
app_secret = "{APP_SECRET}"
robot_code = "{ROBOT_CODE}"
api_base = "{}"
allowed_webhook_hosts = ["127.0.0.1"]
"#,
        fake.base
    );
    let cfg = kefu::config::parse(&toml, "test", &|_| None).expect("config");
    match cfg.channels.into_iter().next() {
        Some(kefu::config::ChannelConfig::DingTalk(d)) => d,
        _ => panic!("a dingtalk channel"),
    }
}

fn robot_config(fake: &Fake, secret: Option<&str>) -> kefu::config::DingTalkRobotConfig {
    let secret = secret
        .map(|s| format!("secret = \"{s}\""))
        .unwrap_or_default();
    let toml = format!(
        r#"
[[notify]]
name = "agents"
kind = "dingtalk_robot"
access_token = "{ROBOT_TOKEN}"
{secret}
api_base = "{}"
"#,
        fake.base
    );
    let cfg = kefu::config::parse(&toml, "test", &|_| None).expect("config");
    match cfg.notify.into_iter().next() {
        Some(kefu::config::NotifyConfig::DingTalkRobot(r)) => r,
        _ => panic!("a dingtalk robot"),
    }
}

fn hook_call(fake: &Fake, session: &str) -> Call {
    Call {
        method: "POST".into(),
        url: fake.webhook(session),
        body: r#"{"msgtype":"text","text":{"content":"hi"}}"#.into(),
        auth: CallAuth::None,
    }
}

fn sender(
    fake: &Fake,
) -> (
    kefu::delivery::dingtalk::DingTalkSender,
    Arc<dyn kefu::store::Store>,
) {
    let store: Arc<dyn kefu::store::Store> = Arc::new(
        kefu::store::SledStore::open(&sled::Config::new().temporary(true).open().unwrap()).unwrap(),
    );
    let s = kefu::delivery::dingtalk::DingTalkSender::new(
        &channel_config(fake),
        reqwest::Client::new(),
        store.clone(),
        Arc::new(kefu::clock::SystemClock),
    );
    (s, store)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sender_maps_answers_to_outcomes() {
    let fake = Fake::start().await;
    let (s, store) = sender(&fake);
    assert_eq!(s.send(&hook_call(&fake, "ok")).await, Ok(()));
    fake.set_hook("expired", Hook::Errcode(300_001));
    assert!(matches!(
        s.send(&hook_call(&fake, "expired")).await,
        Err(SendError::Permanent(_))
    ));
    fake.set_hook("busy", Hook::Status(503));
    assert!(matches!(
        s.send(&hook_call(&fake, "busy")).await,
        Err(SendError::Retry(_))
    ));
    fake.set_hook("fast", Hook::Errcode(130_101));
    assert!(matches!(
        s.send(&hook_call(&fake, "fast")).await,
        Err(SendError::RetryAfter(..))
    ));

    let api = Call {
        method: "POST".into(),
        url: "/v1.0/robot/oToMessages/batchSend".into(),
        body: json!({"robotCode": ROBOT_CODE, "userIds": ["u"], "msgKey": "sampleText",
                     "msgParam": "{\"content\":\"hi\"}"})
        .to_string(),
        auth: CallAuth::DingTalkToken,
    };
    assert_eq!(s.send(&api).await, Ok(()));
    *fake.state.openapi_fail.lock().unwrap() = Some((
        403,
        "Forbidden.AccessDenied.AccessTokenPermissionDenied".into(),
    ));
    assert!(matches!(s.send(&api).await, Err(SendError::Permanent(_))));
    *fake.state.openapi_fail.lock().unwrap() = Some((429, "Throttling.Api".into()));
    assert!(matches!(s.send(&api).await, Err(SendError::RetryAfter(..))));
    *fake.state.openapi_fail.lock().unwrap() = Some((500, "ServiceUnavailable".into()));
    assert!(matches!(s.send(&api).await, Err(SendError::Retry(_))));
    *fake.state.openapi_fail.lock().unwrap() = None;

    // A restarted kefu reuses the persisted token instead of fetching one.
    assert_eq!(fake.state.tokens_issued.load(Ordering::SeqCst), 1);
    let again = kefu::delivery::dingtalk::DingTalkSender::new(
        &channel_config(&fake),
        reqwest::Client::new(),
        store,
        Arc::new(kefu::clock::SystemClock),
    );
    assert_eq!(again.send(&api).await, Ok(()));
    assert_eq!(fake.state.tokens_issued.load(Ordering::SeqCst), 1);

    // Network failure (nothing listening): retry, and the error names no URL.
    let dead = Call {
        url: "http://127.0.0.1:9/robot/sendBySession?session=SECRETSESSION".into(),
        ..hook_call(&fake, "x")
    };
    match s.send(&dead).await {
        Err(SendError::Retry(why)) => assert!(!why.contains("SECRETSESSION"), "{why}"),
        other => panic!("{other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn robot_sender_signs_and_throttles_at_20_a_minute() {
    let fake = Fake::start().await;
    let clock = Arc::new(kefu::clock::FixedClock::at_ms(now_ms()));
    let s = kefu::delivery::dingtalk::DingTalkRobotSender::new(
        &robot_config(&fake, Some(ROBOT_SECRET)),
        reqwest::Client::new(),
        clock.clone(),
    );
    let notice = |i: usize| kefu::delivery::notify_calls(&format!("[kefu] notice {i}")).remove(0);
    for i in 0..20 {
        assert_eq!(s.send(&notice(i)).await, Ok(()), "{i}");
    }
    match s.send(&notice(20)).await {
        Err(SendError::RetryAfter(wait, _)) => assert!(wait <= Duration::from_secs(60)),
        other => panic!("{other:?}"),
    }
    assert_eq!(fake.state.robot_posts.lock().unwrap().len(), 20);
    clock.advance(Duration::from_secs(61));
    assert_eq!(s.send(&notice(20)).await, Ok(()));
    let posts = fake.state.robot_posts.lock().unwrap().clone();
    assert_eq!(message_text(&posts[20].1), "[kefu] notice 20");

    // Without the secret the robot refuses the (unsigned) URL for good.
    let unsigned = kefu::delivery::dingtalk::DingTalkRobotSender::new(
        &robot_config(&fake, None),
        reqwest::Client::new(),
        clock,
    );
    assert!(matches!(
        unsigned.send(&notice(0)).await,
        Err(SendError::Permanent(_))
    ));
}
