//! Router tests of who gets in: cross-site and DNS-rebinding refusals on the agent and admin
//! routes, the token, `/metrics`, and the `/api/chat` rate limits. The whole app on a
//! temporary sled database, driven with `oneshot`.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{header, Request, StatusCode};
use axum::Router;
use tower::ServiceExt;

use super::*;
use crate::app::{App, IngestPolicy};
use crate::config::{ChannelConfig, Config, RateLimitConfig, WebChannelConfig};

async fn app_with(adjust: impl FnOnce(&mut Config)) -> (Router, AppState, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let kb = dir.path().join("kb/faq");
    std::fs::create_dir_all(&kb).unwrap();
    std::fs::write(
        kb.join("demo.jsonl"),
        r#"{"id":"reset","question":"How do I reset my password?","answer":"Open Settings, choose Security and click Reset password."}"#,
    )
    .unwrap();
    let mut cfg = Config::default();
    cfg.knowledge.paths = vec![dir.path().join("kb")];
    cfg.channels.push(ChannelConfig::Web(WebChannelConfig {
        name: "site".into(),
        allowed_origins: vec!["https://shop.example.com".into()],
        link_hosts: vec![],
    }));
    adjust(&mut cfg);
    let db = sled::Config::new().temporary(true).open().unwrap();
    let app = App::with_db(Arc::new(cfg), db, IngestPolicy::WhenStale)
        .await
        .unwrap();
    let state = AppState::new(app).unwrap();
    (router(state.clone()), state, dir)
}

async fn send(app: &Router, req: Request<Body>) -> (StatusCode, String, Option<String>) {
    let resp = app.clone().oneshot(req).await.unwrap();
    let status = resp.status();
    let retry_after = resp
        .headers()
        .get(header::RETRY_AFTER)
        .map(|v| v.to_str().unwrap().to_string());
    let bytes = axum::body::to_bytes(resp.into_body(), 1 << 20)
        .await
        .unwrap();
    (
        status,
        String::from_utf8_lossy(&bytes).to_string(),
        retry_after,
    )
}

/// A loopback peer, as `serve` would record it.
fn from_loopback(mut req: Request<Body>) -> Request<Body> {
    req.extensions_mut()
        .insert(ConnectInfo(SocketAddr::from(([127, 0, 0, 1], 40000))));
    req
}

/// Put a web conversation into the agents' queue.
async fn hand_off(app: &Router, session: &str) {
    let (status, body, _) = send(
        app,
        Request::post("/api/chat")
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(format!(
                r#"{{"session_id":"{session}","message":"转人工"}}"#
            )))
            .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
}

fn agent_reply(session: &str, headers: &[(&str, &str)], body: &str) -> Request<Body> {
    let mut b = Request::post(format!("/agent/api/conversations/site/{session}/reply"));
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    from_loopback(b.body(Body::from(body.to_string())).unwrap())
}

fn agent_messages(state: &AppState, session: &str) -> usize {
    state
        .app
        .store
        .messages("site", session, 0, 100)
        .unwrap()
        .iter()
        .filter(|m| m.role.as_str() == "agent")
        .count()
}

#[tokio::test]
async fn without_a_token_cross_site_requests_change_nothing() {
    let (app, state, _d) = app_with(|_| {}).await;
    hand_off(&app, "v-1").await;
    let json = r#"{"text":"click https://evil.example to get your refund"}"#;
    // The audit's attack: a page posting text/plain with its own Origin.
    for (headers, want) in [
        (
            vec![
                ("host", "127.0.0.1:8080"),
                ("origin", "https://evil.example"),
                ("content-type", "text/plain"),
            ],
            StatusCode::FORBIDDEN,
        ),
        (
            vec![("host", "127.0.0.1:8080"), ("content-type", "text/plain")],
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
        ),
        (
            vec![
                ("host", "127.0.0.1:8080"),
                ("content-type", "application/x-www-form-urlencoded"),
            ],
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
        ),
        (
            vec![
                ("host", "127.0.0.1:8080"),
                ("origin", "https://evil.example"),
                ("content-type", "application/json"),
            ],
            StatusCode::FORBIDDEN,
        ),
        // DNS rebinding: the attacker's name resolved to 127.0.0.1.
        (
            vec![
                ("host", "attacker.example:8080"),
                ("content-type", "application/json"),
            ],
            StatusCode::FORBIDDEN,
        ),
        // Relayed by a reverse proxy on this host.
        (
            vec![
                ("host", "127.0.0.1:8080"),
                ("x-forwarded-for", "203.0.113.7"),
                ("content-type", "application/json"),
            ],
            StatusCode::FORBIDDEN,
        ),
    ] {
        let (status, body, _) = send(&app, agent_reply("v-1", &headers, json)).await;
        assert_eq!(status, want, "{headers:?}: {body}");
        assert!(body.contains("error"), "{body}");
    }
    assert_eq!(
        agent_messages(&state, "v-1"),
        0,
        "nothing reached the customer"
    );
    // Reading the queue through a rebinding name is refused too.
    let (status, _, _) = send(
        &app,
        from_loopback(
            Request::get("/agent/api/conversations")
                .header("host", "attacker.example")
                .body(Body::empty())
                .unwrap(),
        ),
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    // Reingest from a foreign page.
    let (status, _, _) = send(
        &app,
        from_loopback(
            Request::post("/admin/reingest")
                .header("host", "localhost:8080")
                .header("origin", "http://evil.example")
                .header("content-type", "text/plain")
                .body(Body::empty())
                .unwrap(),
        ),
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN);

    // The agent on this machine, or kefu's own page (the console): allowed.
    for headers in [
        vec![
            ("host", "127.0.0.1:8080"),
            ("content-type", "application/json"),
        ],
        vec![
            ("host", "localhost:8080"),
            ("origin", "http://localhost:8080"),
            ("content-type", "application/json; charset=utf-8"),
        ],
    ] {
        let (status, body, _) = send(
            &app,
            agent_reply("v-1", &headers, r#"{"text":"Hello, Li here."}"#),
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{headers:?}: {body}");
    }
    assert_eq!(agent_messages(&state, "v-1"), 2);
    // A client elsewhere still needs the token.
    let mut remote = agent_reply(
        "v-1",
        &[
            ("host", "127.0.0.1:8080"),
            ("content-type", "application/json"),
        ],
        r#"{"text":"x"}"#,
    );
    remote
        .extensions_mut()
        .insert(ConnectInfo(SocketAddr::from(([192, 0, 2, 1], 40000))));
    assert_eq!(send(&app, remote).await.0, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn public_url_names_the_host_and_origin_behind_a_proxy_that_keeps_them() {
    let (app, _state, _d) = app_with(|c| {
        c.server.public_url = Some("https://support.example.com".into());
    })
    .await;
    let req = |host: &str, origin: Option<&str>| {
        let mut b = Request::get("/agent/api/conversations").header("host", host);
        if let Some(o) = origin {
            b = b.header("origin", o);
        }
        from_loopback(b.body(Body::empty()).unwrap())
    };
    assert_eq!(
        send(&app, req("support.example.com", None)).await.0,
        StatusCode::OK
    );
    assert_eq!(
        send(
            &app,
            req("127.0.0.1:8080", Some("https://support.example.com"))
        )
        .await
        .0,
        StatusCode::OK
    );
    assert_eq!(
        send(&app, req("evil.example.com", None)).await.0,
        StatusCode::FORBIDDEN
    );
}

#[tokio::test]
async fn with_a_token_bearer_is_case_insensitive_and_foreign_pages_still_refused() {
    let (app, state, _d) = app_with(|c| {
        c.server.admin_token = Some(adapters::Secret::new("s3cret-token"));
    })
    .await;
    hand_off(&app, "t-1").await;
    let body = r#"{"text":"Hello from the agent."}"#;
    let remote = |mut r: Request<Body>| {
        r.extensions_mut()
            .insert(ConnectInfo(SocketAddr::from(([198, 51, 100, 4], 5555))));
        r
    };
    // Scripts: any Host, any proxy, the scheme in any case.
    for auth in [
        "Bearer s3cret-token",
        "bearer s3cret-token",
        "BEARER s3cret-token",
    ] {
        let r = agent_reply(
            "t-1",
            &[
                ("host", "kefu.internal"),
                ("x-forwarded-for", "203.0.113.7"),
                ("authorization", auth),
                ("content-type", "application/json"),
            ],
            body,
        );
        let (status, text, _) = send(&app, remote(r)).await;
        assert_eq!(status, StatusCode::OK, "{auth}: {text}");
    }
    for auth in ["Bearer wrong", "Basic s3cret-token", ""] {
        let r = agent_reply(
            "t-1",
            &[
                ("authorization", auth),
                ("content-type", "application/json"),
            ],
            body,
        );
        assert_eq!(
            send(&app, remote(r)).await.0,
            StatusCode::UNAUTHORIZED,
            "{auth}"
        );
    }
    // A browser on another site that somehow holds the token: refused.
    let r = agent_reply(
        "t-1",
        &[
            ("host", "kefu.internal"),
            ("origin", "https://evil.example"),
            ("authorization", "Bearer s3cret-token"),
            ("content-type", "application/json"),
        ],
        body,
    );
    assert_eq!(send(&app, remote(r)).await.0, StatusCode::FORBIDDEN);
    assert_eq!(agent_messages(&state, "t-1"), 3);
    // Loopback is not special once a token is set.
    let r = agent_reply("t-1", &[("content-type", "application/json")], body);
    assert_eq!(send(&app, r).await.0, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn metrics_sit_behind_the_token_unless_public() {
    let metrics = |auth: Option<&str>| {
        let mut b = Request::get("/metrics");
        if let Some(a) = auth {
            b = b.header("authorization", a);
        }
        b.body(Body::empty()).unwrap()
    };
    let (open, _, _d) = app_with(|_| {}).await;
    assert_eq!(
        send(&open, metrics(None)).await.0,
        StatusCode::OK,
        "no token: open"
    );
    let (guarded, _, _d2) = app_with(|c| {
        c.server.admin_token = Some(adapters::Secret::new("tok"));
    })
    .await;
    assert_eq!(
        send(&guarded, metrics(None)).await.0,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        send(&guarded, metrics(Some("Bearer nope"))).await.0,
        StatusCode::UNAUTHORIZED
    );
    let (status, text, _) = send(&guarded, metrics(Some("bearer tok"))).await;
    assert_eq!(status, StatusCode::OK);
    assert!(text.contains("kefu_handoffs_active 0"), "{text}");
    let (public, _, _d3) = app_with(|c| {
        c.server.admin_token = Some(adapters::Secret::new("tok"));
        c.server.metrics_public = true;
    })
    .await;
    assert_eq!(send(&public, metrics(None)).await.0, StatusCode::OK);
}

fn chat_from(ip: [u8; 4], session: &str, headers: &[(&str, &str)]) -> Request<Body> {
    let mut b = Request::post("/api/chat").header(header::CONTENT_TYPE, "application/json");
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    let mut r = b
        .body(Body::from(format!(
            r#"{{"session_id":"{session}","message":"how do I reset my password"}}"#
        )))
        .unwrap();
    r.extensions_mut()
        .insert(ConnectInfo(SocketAddr::from((ip, 40000))));
    r
}

#[tokio::test]
async fn chat_is_rate_limited_per_session_and_per_ip() {
    // Refill of one a minute: nothing refills while the test runs.
    let (app, _, _d) = app_with(|c| {
        c.server.chat_rate_per_session = RateLimitConfig {
            per_minute: 1,
            burst: 2,
        };
        c.server.chat_rate_per_ip = RateLimitConfig {
            per_minute: 1,
            burst: 4,
        };
    })
    .await;
    let a = [203, 0, 113, 1];
    for _ in 0..2 {
        assert_eq!(send(&app, chat_from(a, "s-1", &[])).await.0, StatusCode::OK);
    }
    let (status, body, retry) = send(&app, chat_from(a, "s-1", &[])).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{body}");
    let secs: u64 = retry.expect("Retry-After").parse().unwrap();
    assert!((1..=60).contains(&secs), "{secs}");
    assert!(body.contains("too many requests"), "{body}");
    // Another session from the same address, until the address's own bucket is empty
    // (4: two taken above, one refused above counted too).
    assert_eq!(send(&app, chat_from(a, "s-2", &[])).await.0, StatusCode::OK);
    assert_eq!(
        send(&app, chat_from(a, "s-3", &[])).await.0,
        StatusCode::TOO_MANY_REQUESTS
    );
    // Another address is not affected.
    assert_eq!(
        send(&app, chat_from([198, 51, 100, 2], "s-4", &[])).await.0,
        StatusCode::OK
    );
}

#[tokio::test]
async fn behind_a_proxy_the_configured_header_names_the_client() {
    let (app, _, _d) = app_with(|c| {
        c.server.client_ip_header = Some("X-Forwarded-For".into());
        c.server.chat_rate_per_ip = RateLimitConfig {
            per_minute: 1,
            burst: 1,
        };
        c.server.chat_rate_per_session = RateLimitConfig {
            per_minute: 0,
            burst: 0,
        };
    })
    .await;
    let proxy = [127, 0, 0, 1];
    // Two customers through the same proxy: each has their own bucket. The last entry is
    // the one the proxy appended; what the client wrote before it is not trusted.
    for (i, xff) in ["203.0.113.5", "1.1.1.1, 203.0.113.6"]
        .into_iter()
        .enumerate()
    {
        let (status, body, _) = send(
            &app,
            chat_from(proxy, &format!("p-{i}"), &[("x-forwarded-for", xff)]),
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{xff}: {body}");
    }
    assert_eq!(
        send(
            &app,
            chat_from(proxy, "p-9", &[("x-forwarded-for", "9.9.9.9, 203.0.113.5")])
        )
        .await
        .0,
        StatusCode::TOO_MANY_REQUESTS
    );
}

/// Any body on `/api/chat` and on an agent reply gets an answer below 500 (a 4xx with a
/// reason, or a turn), never a panic or an internal error.
#[test]
fn untrusted_json_bodies_never_get_a_server_error() {
    use proptest::prelude::*;
    use proptest::test_runner::{Config as RunnerConfig, TestRunner};
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (app, _state, _d) = rt.block_on(app_with(|c| {
        c.server.chat_rate_per_session.per_minute = 0;
    }));
    rt.block_on(hand_off(&app, "fz-1"));
    let field = prop_oneof![
        Just(serde_json::Value::Null),
        any::<i64>().prop_map(serde_json::Value::from),
        "\\PC{0,60}".prop_map(serde_json::Value::from),
        Just(serde_json::json!(["a", 1])),
        Just(serde_json::json!({"x": {}})),
    ];
    let body = prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..200)
            .prop_map(|b| String::from_utf8_lossy(&b).to_string()),
        (field.clone(), field.clone(), field.clone(), any::<bool>()).prop_map(
            |(a, b, c, extra)| {
                let mut v = serde_json::json!({"session_id": a, "message": b, "channel": c});
                if extra {
                    v["text"] = serde_json::Value::from("hi");
                }
                v.to_string()
            }
        ),
        ("[A-Za-z0-9_.:-]{1,20}", "\\PC{0,80}")
            .prop_map(|(s, m)| { serde_json::json!({"session_id": s, "message": m}).to_string() }),
    ];
    let mut runner = TestRunner::new(RunnerConfig::with_cases(96));
    runner
        .run(&body, |body| {
            for req in [
                Request::post("/api/chat")
                    .header(header::CONTENT_TYPE, "application/json")
                    .body(Body::from(body.clone()))
                    .unwrap(),
                agent_reply(
                    "fz-1",
                    &[("host", "127.0.0.1"), ("content-type", "application/json")],
                    &body,
                ),
            ] {
                let (status, text, _) = rt.block_on(send(&app, req));
                prop_assert!(status.as_u16() < 500, "{status} for {body:?}: {text}");
                if status.is_client_error() {
                    prop_assert!(text.contains("\"error\""), "{text}");
                }
            }
            Ok(())
        })
        .unwrap();
}
