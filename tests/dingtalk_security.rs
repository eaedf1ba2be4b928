//! DingTalk callbacks as an attacker would send them: a leaked signature reused for another
//! message, a sessionWebhook aimed at an internal service (SSRF), a webhook that redirects.
//! kefu in-process against the fake DingTalk of `common_dingtalk` (whose webhooks live on
//! 127.0.0.1, the one host the test config allows); the "internal service" is a separate
//! server on 127.0.0.1 reached as `localhost`, a host the allowlist does not name.

mod common_dingtalk;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use adapters::{Call, CallAuth};
use axum::routing::any;
use axum::Router;
use common_dingtalk::*;
use kefu::delivery::{SendError, Sender};
use tokio::net::TcpListener;

const HOUR_MS: u64 = 3_600_000;

fn message<'a>(msg_id: &'a str, conv: &'a str, webhook: String) -> Callback<'a> {
    Callback {
        msg_id,
        text: "how do I reset my password",
        group: false,
        conversation: conv,
        staff_id: "staff-1",
        webhook,
        webhook_expires_ms: now_ms() + 2 * HOUR_MS,
    }
}

/// A server that must never be reached: counts every request, answers 200.
async fn victim() -> (String, Arc<AtomicUsize>) {
    let hits = Arc::new(AtomicUsize::new(0));
    let h = hits.clone();
    let app = Router::new().fallback(any(move || {
        let h = h.clone();
        async move {
            h.fetch_add(1, Ordering::SeqCst);
            r#"{"errcode":0,"errmsg":"ok"}"#
        }
    }));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (format!("http://localhost:{port}"), hits)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_used_signature_carries_no_other_message_once_it_is_old() {
    let fake = Fake::start().await;
    let kefu = Kefu::start(&fake, Options::default()).await;
    // A signature made five minutes ago: inside DingTalk's hour, outside the reuse window.
    let ts = (now_ms() - 5 * 60_000).to_string();
    let genuine = message("m-genuine", "cid-1", fake.webhook("genuine")).json();
    let resp = kefu.post_signed(&genuine, &ts, APP_SECRET).await;
    assert_eq!(resp.status(), 200);
    wait_for("the genuine reply", 10, || {
        !fake.posts_to("genuine").is_empty()
    })
    .await;

    // The same timestamp and sign on another body: refused, nothing stored or sent.
    let forged = message("m-forged", "cid-forged", fake.webhook("forged")).json();
    let resp = kefu.post_signed(&forged, &ts, APP_SECRET).await;
    assert_eq!(resp.status(), 401);
    let store = &kefu.state.app.store;
    assert!(store.conversation(CHANNEL, "cid-forged").unwrap().is_none());
    assert!(store.inbox_all().unwrap().is_empty());
    assert_eq!(
        kefu.state.app.metrics.get(
            "kefu_callbacks_total",
            &[("channel", CHANNEL), ("outcome", "replayed")]
        ),
        1
    );

    // The genuine message again under its own signature (a DingTalk retry): a duplicate, 200,
    // no second reply.
    let resp = kefu.post_signed(&genuine, &ts, APP_SECRET).await;
    assert_eq!(resp.status(), 200);

    // Two messages DingTalk signed in the same millisecond, just now: both are taken.
    let now = now_ms().to_string();
    for (id, session) in [("m-a", "a"), ("m-b", "b")] {
        let body = message(id, &format!("cid-{id}"), fake.webhook(session)).json();
        let resp = kefu.post_signed(&body, &now, APP_SECRET).await;
        assert_eq!(resp.status(), 200, "{id}");
    }
    wait_for("both same-millisecond replies", 10, || {
        !fake.posts_to("a").is_empty() && !fake.posts_to("b").is_empty()
    })
    .await;
    assert!(fake.posts_to("forged").is_empty());
    assert_eq!(fake.posts_to("genuine").len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_webhook_off_the_allowlist_is_never_called() {
    let fake = Fake::start().await;
    let kefu = Kefu::start(&fake, Options::default()).await;
    let (internal, hits) = victim().await;
    // Signed, genuine-looking callbacks whose reply URL points inside.
    for (i, hook) in [
        format!("{internal}/admin/reingest"),
        format!("{internal}/robot/sendBySession?session=x"),
        "http://169.254.169.254/latest/meta-data/".to_string(),
        "file:///etc/passwd".to_string(),
    ]
    .into_iter()
    .enumerate()
    {
        let id = format!("ssrf-{i}");
        let conv = format!("cid-ssrf-{i}");
        post_ok(&kefu, &message(&id, &conv, hook).json()).await;
    }
    // Each is answered, through the OpenAPI under the configured api_base.
    wait_for("four OpenAPI replies", 10, || {
        fake.openapi_sends().len() >= 4
    })
    .await;
    wait_for("an empty outbox", 10, || kefu.outbox_len() == 0).await;
    assert_eq!(
        hits.load(Ordering::SeqCst),
        0,
        "the internal server was called"
    );
}

async fn post_ok(kefu: &Kefu, body: &str) {
    let resp = kefu.post(body).await;
    assert_eq!(resp.status(), 200);
}

fn sender_for(fake: &Fake) -> kefu::delivery::dingtalk::DingTalkSender {
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
    let Some(kefu::config::ChannelConfig::DingTalk(d)) = cfg.channels.into_iter().next() else {
        panic!("a dingtalk channel")
    };
    let store: Arc<dyn kefu::store::Store> = Arc::new(
        kefu::store::SledStore::open(&sled::Config::new().temporary(true).open().unwrap()).unwrap(),
    );
    kefu::delivery::dingtalk::DingTalkSender::new(
        &d,
        reqwest::Client::new(),
        store,
        Arc::new(kefu::clock::SystemClock),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sender_refuses_queued_calls_off_the_allowlist_and_follows_no_redirect() {
    let fake = Fake::start().await;
    let (internal, hits) = victim().await;
    let s = sender_for(&fake);
    let call = |url: String| Call {
        method: "POST".into(),
        url,
        body: r#"{"msgtype":"text","text":{"content":"hi"}}"#.into(),
        auth: CallAuth::None,
    };
    // A call already in the outbox (queued before the allowlist existed): permanent, so the
    // outbox takes the OpenAPI fallback.
    match s.send(&call(format!("{internal}/admin/reingest"))).await {
        Err(SendError::Permanent(why)) => assert!(why.contains("localhost"), "{why}"),
        other => panic!("{other:?}"),
    }
    // An allowed host that redirects elsewhere: the redirect is not followed.
    let redirector = Router::new().fallback(any({
        let to = format!("{internal}/admin/reingest");
        move || {
            let to = to.clone();
            async move {
                (
                    axum::http::StatusCode::TEMPORARY_REDIRECT,
                    [("location", to)],
                )
            }
        }
    }));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let _ = axum::serve(listener, redirector).await;
    });
    let r = s
        .send(&call(format!("http://{addr}/robot/sendBySession")))
        .await;
    assert!(r.is_err(), "a redirect is no delivery: {r:?}");
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(hits.load(Ordering::SeqCst), 0, "the redirect was followed");
}
