//! The console's front door, in process: login, cookies, CSRF, origins, the admin token, and
//! the agent API as a logged-in agent sees it.

use std::sync::{Arc, OnceLock};

use axum::body::Body;
use axum::http::{header, Request, StatusCode};
use axum::Router;
use serde_json::{json, Value};
use tower::ServiceExt;

use crate::app::{App, IngestPolicy};
use crate::config::{AgentConfig, ChannelConfig, Config, WebChannelConfig};
use crate::server::{router, AppState};

const TOKEN: &str = "automation-token-123";

/// Hashing is the slow part: once per test binary.
fn hash() -> &'static str {
    static H: OnceLock<String> = OnceLock::new();
    H.get_or_init(|| crate::agents::password::hash("correct horse battery").unwrap())
}

async fn console_app(admin_token: bool) -> (Router, AppState, tempfile::TempDir) {
    console_app_with(admin_token, |_| {}).await
}

async fn console_app_with(
    admin_token: bool,
    tweak: impl FnOnce(&mut Config),
) -> (Router, AppState, tempfile::TempDir) {
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
        allowed_origins: vec![],
        link_hosts: vec![],
    }));
    cfg.console.login_failures = 3;
    for (id, name) in [("dana", "Dana"), ("lei", "Lei")] {
        cfg.agents.push(AgentConfig {
            id: id.into(),
            name: name.into(),
            password_hash: adapters::Secret::new(hash()),
        });
    }
    if admin_token {
        cfg.server.admin_token = Some(adapters::Secret::new(TOKEN));
    }
    cfg.server.public_url = Some("https://kefu.example.com".into());
    tweak(&mut cfg);
    let db = sled::Config::new().temporary(true).open().unwrap();
    let app = App::with_db(Arc::new(cfg), db, IngestPolicy::WhenStale)
        .await
        .unwrap();
    let state = AppState::new(app).unwrap();
    (router(state.clone()), state, dir)
}

struct Resp {
    status: StatusCode,
    headers: axum::http::HeaderMap,
    json: Value,
}

async fn send(app: &Router, req: Request<Body>) -> Resp {
    let resp = app.clone().oneshot(req).await.unwrap();
    let status = resp.status();
    let headers = resp.headers().clone();
    let bytes = axum::body::to_bytes(resp.into_body(), 1 << 20)
        .await
        .unwrap();
    Resp {
        status,
        headers,
        json: serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    }
}

fn login_req(id: &str, password: &str) -> Request<Body> {
    Request::post("/agent/api/login")
        .header(header::CONTENT_TYPE, "application/json")
        .header(header::HOST, "kefu.local")
        .header(header::ORIGIN, "http://kefu.local")
        .body(Body::from(
            json!({"id": id, "password": password}).to_string(),
        ))
        .unwrap()
}

/// A logged-in agent: (cookie header value, CSRF token).
async fn login(app: &Router, id: &str) -> (String, String) {
    let r = send(app, login_req(id, "correct horse battery")).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.json);
    let set = r.headers[header::SET_COOKIE].to_str().unwrap().to_string();
    let cookie = set.split(';').next().unwrap().to_string();
    (cookie, r.json["csrf"].as_str().unwrap().to_string())
}

/// A console request as the page makes it.
fn agent_req(
    method: &str,
    path: &str,
    cookie: &str,
    csrf: Option<&str>,
    body: Value,
) -> Request<Body> {
    let mut b = Request::builder()
        .method(method)
        .uri(path)
        .header(header::HOST, "kefu.local")
        .header(header::COOKIE, cookie)
        .header(header::CONTENT_TYPE, "application/json");
    if method != "GET" {
        b = b
            .header(header::ORIGIN, "http://kefu.local")
            .header("sec-fetch-site", "same-origin");
    }
    if let Some(c) = csrf {
        b = b.header("x-csrf-token", c);
    }
    b.body(Body::from(body.to_string())).unwrap()
}

async fn hand_off(app: &Router, session: &str) {
    let r = send(
        app,
        Request::post("/api/chat")
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(
                json!({"session_id": session, "message": "talk to a human"}).to_string(),
            ))
            .unwrap(),
    )
    .await;
    assert_eq!(r.json["handoff"]["active"], true, "{}", r.json);
}

#[tokio::test]
async fn the_page_is_served_locked_down() {
    let (app, _, _d) = console_app(false).await;
    for (path, kind) in [
        ("/agent", "text/html"),
        ("/agent/console.js", "application/javascript"),
        ("/agent/console.css", "text/css"),
    ] {
        let resp = app
            .clone()
            .oneshot(Request::get(path).body(Body::empty()).unwrap())
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::OK, "{path}");
        let h = resp.headers();
        assert!(h[header::CONTENT_TYPE].to_str().unwrap().starts_with(kind));
        let csp = h[header::CONTENT_SECURITY_POLICY].to_str().unwrap();
        assert!(csp.contains("script-src 'self'") && csp.contains("frame-ancestors 'none'"));
        assert_eq!(h[header::X_FRAME_OPTIONS], "DENY");
    }
}

#[tokio::test]
async fn login_sets_a_strict_httponly_cookie_and_wrong_passwords_are_refused() {
    let (app, state, _d) = console_app(false).await;
    let r = send(&app, login_req("dana", "wrong")).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert!(r.headers.get(header::SET_COOKIE).is_none());
    let r = send(&app, login_req("nobody", "correct horse battery")).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        r.json["error"], "wrong agent id or password",
        "no hint which part"
    );

    let form = Request::post("/agent/api/login")
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .body(Body::from("id=dana&password=correct+horse+battery"))
        .unwrap();
    assert_eq!(
        send(&app, form).await.status,
        StatusCode::UNSUPPORTED_MEDIA_TYPE
    );
    let mut foreign = login_req("dana", "correct horse battery");
    foreign
        .headers_mut()
        .insert(header::ORIGIN, "https://evil.example".parse().unwrap());
    assert_eq!(send(&app, foreign).await.status, StatusCode::FORBIDDEN);

    let r = send(&app, login_req("dana", "correct horse battery")).await;
    assert_eq!(r.status, StatusCode::OK);
    let cookie = r.headers[header::SET_COOKIE].to_str().unwrap();
    for attr in [
        "kefu_agent=",
        "HttpOnly",
        "SameSite=Strict",
        "Path=/agent",
        "Max-Age=43200",
        "Secure",
    ] {
        assert!(cookie.contains(attr), "{attr} missing: {cookie}");
    }
    assert_eq!(r.json["agent"], json!({"id": "dana", "name": "Dana"}));
    assert_eq!(
        state
            .app
            .metrics
            .get("kefu_agent_logins_total", &[("outcome", "wrong")]),
        2
    );

    let (cookie, csrf) = login(&app, "dana").await;
    let r = send(
        &app,
        agent_req("GET", "/agent/api/session", &cookie, None, Value::Null),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.json["agent"]["id"], "dana");
    assert_eq!(r.json["csrf"], csrf.as_str());
    assert_eq!(
        r.json["channels"][0],
        json!({"name": "site", "kind": "web"})
    );
    assert_eq!(r.json["agents"][1], json!({"id": "lei", "name": "Lei"}));

    let r = send(
        &app,
        agent_req("POST", "/agent/api/logout", &cookie, Some(&csrf), json!({})),
    )
    .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    assert!(r.headers[header::SET_COOKIE]
        .to_str()
        .unwrap()
        .contains("Max-Age=0"));
    let r = send(
        &app,
        agent_req("GET", "/agent/api/session", &cookie, None, Value::Null),
    )
    .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED, "the session is gone");
}

#[tokio::test]
async fn wrong_passwords_pause_logins_for_that_id() {
    let (app, _, _d) = console_app(false).await;
    for _ in 0..3 {
        assert_eq!(
            send(&app, login_req("dana", "guess")).await.status,
            StatusCode::UNAUTHORIZED
        );
    }
    let r = send(&app, login_req("dana", "correct horse battery")).await;
    assert_eq!(
        r.status,
        StatusCode::TOO_MANY_REQUESTS,
        "even the right one, for now"
    );
    assert_eq!(r.headers[header::RETRY_AFTER], "900");
    login(&app, "lei").await;
}

#[tokio::test]
async fn behind_a_proxy_wrong_passwords_pause_the_client_address_the_proxy_names() {
    // The same address the /api/chat limits use: server.client_ip_header (its last entry),
    // IPv6 by /64. In process there is no peer, so without the header all share "local".
    let (app, _, _d) = console_app_with(false, |cfg| {
        cfg.server.client_ip_header = Some("X-Forwarded-For".into());
        cfg.console.login_failures_per_ip = 2;
    })
    .await;
    let from = |ip: &str, id: &str, password: &str| {
        let mut req = login_req(id, password);
        req.headers_mut().insert(
            "x-forwarded-for",
            format!("10.9.9.9, {ip}").parse().unwrap(),
        );
        req
    };
    for (ip, id) in [("203.0.113.9", "dana"), ("203.0.113.9", "lei")] {
        let r = send(&app, from(ip, id, "guess")).await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    }
    let r = send(&app, from("203.0.113.9", "lei", "correct horse battery")).await;
    assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS, "{}", r.json);
    assert!(r.headers.contains_key(header::RETRY_AFTER));
    let r = send(&app, from("198.51.100.7", "lei", "correct horse battery")).await;
    assert_eq!(r.status, StatusCode::OK, "another client: {}", r.json);
    // One /64 is one client.
    for ip in ["2001:db8:1:2::1", "2001:db8:1:2::2"] {
        let r = send(&app, from(ip, "nobody", "guess")).await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    }
    let r = send(
        &app,
        from("2001:db8:1:2::3", "dana", "correct horse battery"),
    )
    .await;
    assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS, "{}", r.json);
}

#[tokio::test]
async fn with_agents_configured_the_api_needs_a_login_and_state_changes_need_csrf_and_origin() {
    let (app, state, _d) = console_app(false).await;
    hand_off(&app, "s-1").await;
    let queue = || {
        Request::get("/agent/api/conversations")
            .body(Body::empty())
            .unwrap()
    };
    assert_eq!(
        send(&app, queue()).await.status,
        StatusCode::UNAUTHORIZED,
        "no more trust in loopback once agents exist"
    );

    let (cookie, csrf) = login(&app, "dana").await;
    let r = send(
        &app,
        agent_req(
            "GET",
            "/agent/api/conversations",
            &cookie,
            None,
            Value::Null,
        ),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(
        r.json["counts"],
        json!({"open": 1, "unclaimed": 1, "mine": 0})
    );
    let item = &r.json["conversations"][0];
    assert_eq!(item["reason"], "human_requested");
    assert_eq!(item["card"]["last_messages"][0]["text"], "talk to a human");

    let claim = "/agent/api/conversations/site/s-1/claim";
    let r = send(&app, agent_req("POST", claim, &cookie, None, json!({}))).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "no CSRF token");
    assert!(r.json["error"].as_str().unwrap().contains("CSRF"));
    let r = send(
        &app,
        agent_req("POST", claim, &cookie, Some("forged"), json!({})),
    )
    .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "a wrong CSRF token");
    let mut foreign = agent_req("POST", claim, &cookie, Some(&csrf), json!({}));
    foreign
        .headers_mut()
        .insert(header::ORIGIN, "https://evil.example".parse().unwrap());
    foreign.headers_mut().remove("sec-fetch-site");
    let r = send(&app, foreign).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "a foreign origin");
    assert!(r.json["error"].as_str().unwrap().contains("evil.example"));
    let mut cross = agent_req("POST", claim, &cookie, Some(&csrf), json!({}));
    cross.headers_mut().remove(header::ORIGIN);
    cross
        .headers_mut()
        .insert("sec-fetch-site", "same-site".parse().unwrap());
    assert_eq!(
        send(&app, cross).await.status,
        StatusCode::FORBIDDEN,
        "another site's page"
    );
    let mut public = agent_req("POST", claim, &cookie, Some(&csrf), json!({}));
    public
        .headers_mut()
        .insert(header::ORIGIN, "https://kefu.example.com".parse().unwrap());
    let conv = state
        .app
        .store
        .conversation("site", "s-1")
        .unwrap()
        .unwrap();
    assert!(
        conv.handoff.unwrap().agent.is_none(),
        "nothing refused changed anything"
    );
    let r = send(&app, public).await;
    assert_eq!(
        r.status,
        StatusCode::OK,
        "public_url is this server too: {}",
        r.json
    );
    assert_eq!(r.json["conversation"]["handoff"]["agent"], "dana");
    assert_eq!(r.json["conversation"]["agent_name"], "Dana");
    assert_eq!(
        r.json["conversation"]["link"],
        "https://kefu.example.com/agent#/c/site/s-1"
    );

    // Another agent is told who has it; they cannot reply or act as Dana.
    let (lei, lei_csrf) = login(&app, "lei").await;
    let r = send(
        &app,
        agent_req("POST", claim, &lei, Some(&lei_csrf), json!({})),
    )
    .await;
    assert_eq!(r.status, StatusCode::CONFLICT);
    assert_eq!(r.json["agent"], "dana");
    let reply = "/agent/api/conversations/site/s-1/reply";
    let r = send(
        &app,
        agent_req("POST", reply, &lei, Some(&lei_csrf), json!({"text": "hi"})),
    )
    .await;
    assert_eq!(r.status, StatusCode::CONFLICT);
    let r = send(
        &app,
        agent_req(
            "POST",
            reply,
            &lei,
            Some(&lei_csrf),
            json!({"text": "hi", "agent": "dana"}),
        ),
    )
    .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);

    // Dana replies (queued until the widget fetches it), then closes with a note.
    let r = send(
        &app,
        agent_req(
            "POST",
            reply,
            &cookie,
            Some(&csrf),
            json!({"text": "Hello, Dana here."}),
        ),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.json);
    assert_eq!(r.json["message"]["delivery"]["state"], "queued");
    let seq = r.json["seq"].as_u64().unwrap();
    let hist = send(
        &app,
        Request::get("/api/chat/s-1/messages")
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    let texts: Vec<&str> = hist.json["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["text"].as_str().unwrap())
        .collect();
    assert!(texts.contains(&"Hello, Dana here."), "{texts:?}");
    assert!(
        !texts.iter().any(|t| t.contains("claimed")),
        "system notes stay with agents: {texts:?}"
    );
    let msg = state
        .app
        .store
        .message("site", "s-1", seq)
        .unwrap()
        .unwrap();
    assert_eq!(
        msg.delivery.unwrap().state,
        crate::store::DeliveryState::Sent
    );

    let close = "/agent/api/conversations/site/s-1/close";
    let r = send(
        &app,
        agent_req("POST", close, &cookie, Some(&csrf), json!({})),
    )
    .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "a note is required");
    let r = send(
        &app,
        agent_req(
            "POST",
            close,
            &cookie,
            Some(&csrf),
            json!({"note": "password reset by phone"}),
        ),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.json);
    let r = send(
        &app,
        agent_req(
            "GET",
            "/agent/api/conversations/site/s-1",
            &cookie,
            None,
            Value::Null,
        ),
    )
    .await;
    let msgs = r.json["messages"].as_array().unwrap();
    let last = msgs.last().unwrap();
    assert_eq!(
        (last["action"].as_str(), last["text"].as_str()),
        (Some("closed"), Some("password reset by phone"))
    );
    assert_eq!(r.json["conversation"]["handoff"]["ended"]["how"], "closed");
    let hist = send(
        &app,
        Request::get("/api/chat/s-1/messages")
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    assert!(
        !hist.json.to_string().contains("password reset by phone"),
        "the customer never sees the resolution note"
    );
    let r = send(
        &app,
        agent_req("GET", "/agent/api/stats", &cookie, None, Value::Null),
    )
    .await;
    assert_eq!(r.json["open"], 0);
    assert_eq!(r.json["handoffs_by_reason"]["human_requested"], 1);
    assert_eq!(r.json["first_reply"]["count"], 1);
}

#[tokio::test]
async fn the_admin_token_is_for_automation_without_cookies_or_csrf() {
    let (app, _, _d) = console_app(true).await;
    hand_off(&app, "s-2").await;
    let with = |req: axum::http::request::Builder, token: &str| {
        req.header(header::AUTHORIZATION, format!("bearer {token}"))
            .header(header::CONTENT_TYPE, "application/json")
    };
    let r = send(
        &app,
        with(Request::get("/agent/api/conversations"), TOKEN)
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "a case-insensitive Bearer");
    assert_eq!(r.json["counts"]["open"], 1);
    let r = send(
        &app,
        with(Request::get("/agent/api/conversations"), "wrong")
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    let claim = "/agent/api/conversations/site/s-2/claim";
    let r = send(
        &app,
        with(Request::post(claim), TOKEN)
            .body(Body::from("{}"))
            .unwrap(),
    )
    .await;
    assert_eq!(
        r.status,
        StatusCode::BAD_REQUEST,
        "automation names the agent"
    );
    let r = send(
        &app,
        with(Request::post(claim), TOKEN)
            .body(Body::from(r#"{"agent":"lei"}"#))
            .unwrap(),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.json);
    let r = send(
        &app,
        with(
            Request::post("/agent/api/conversations/site/s-2/reply"),
            TOKEN,
        )
        .body(Body::from(r#"{"text":"From the CRM."}"#))
        .unwrap(),
    )
    .await;
    assert_eq!(
        r.status,
        StatusCode::OK,
        "automation may write into a claimed conversation"
    );
    let r = send(
        &app,
        with(
            Request::post("/agent/api/conversations/site/s-2/release"),
            TOKEN,
        )
        .body(Body::empty())
        .unwrap(),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.json);
    // The token is not a console login, and a console login is not an admin.
    let (cookie, _) = login(&app, "dana").await;
    let r = send(
        &app,
        agent_req("POST", "/admin/reingest", &cookie, None, json!({})),
    )
    .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn the_event_stream_announces_handoffs() {
    let (app, _, _d) = console_app(false).await;
    let (cookie, _) = login(&app, "dana").await;
    let resp = app
        .clone()
        .oneshot(agent_req(
            "GET",
            "/agent/api/events",
            &cookie,
            None,
            Value::Null,
        ))
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.headers()[header::CONTENT_TYPE], "text/event-stream");
    let mut body = resp.into_body().into_data_stream();
    use futures::StreamExt;
    let mut seen = String::new();
    let next =
        |seen: &mut String, chunk: bytes::Bytes| seen.push_str(&String::from_utf8_lossy(&chunk));
    next(&mut seen, body.next().await.unwrap().unwrap());
    assert!(seen.contains("event: ready"), "{seen}");
    hand_off(&app, "s-3").await;
    while !seen.contains("event: handoff") {
        let chunk = tokio::time::timeout(std::time::Duration::from_secs(10), body.next())
            .await
            .expect("an event within 10 s")
            .unwrap()
            .unwrap();
        next(&mut seen, chunk);
    }
    assert!(seen.contains(r#""conversation":"s-3""#), "{seen}");
}

#[tokio::test(start_paused = true)]
async fn a_logout_ends_the_event_stream() {
    let (app, _, _d) = console_app(false).await;
    let (cookie, csrf) = login(&app, "dana").await;
    let resp = app
        .clone()
        .oneshot(agent_req(
            "GET",
            "/agent/api/events",
            &cookie,
            None,
            Value::Null,
        ))
        .await
        .unwrap();
    let mut body = resp.into_body().into_data_stream();
    use futures::StreamExt;
    assert!(body.next().await.is_some(), "ready");
    let r = send(
        &app,
        agent_req("POST", "/agent/api/logout", &cookie, Some(&csrf), json!({})),
    )
    .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    // Keep-alive comments may come first; the stream ends at the next session check.
    let ended = tokio::time::timeout(std::time::Duration::from_secs(120), async {
        while let Some(chunk) = body.next().await {
            let chunk = chunk.unwrap();
            assert!(
                !String::from_utf8_lossy(&chunk).contains("event:"),
                "no events after logout"
            );
        }
    })
    .await;
    assert!(ended.is_ok(), "the stream ended");
}

#[tokio::test]
async fn conversation_ids_with_slashes_and_pluses_round_trip() {
    let (app, state, _d) = console_app(true).await;
    // DingTalk conversation ids are base64.
    let id = "cidAb+c/d==";
    let mut c = crate::store::Conversation::new(
        "site",
        adapters::ChannelKind::DingTalk,
        id,
        Default::default(),
        1,
    );
    c.handoff = Some(crate::store::Handoff::start(
        "keyword",
        "s".into(),
        Default::default(),
        1,
    ));
    state.app.store.save_conversation(&c).unwrap();
    let r = send(
        &app,
        Request::get("/agent/api/conversations/site/cidAb%2Bc%2Fd%3D%3D")
            .header(header::AUTHORIZATION, format!("Bearer {TOKEN}"))
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.json);
    assert_eq!(r.json["conversation"]["conversation"], id);
    assert_eq!(
        r.json["conversation"]["link"],
        "https://kefu.example.com/agent#/c/site/cidAb%2Bc%2Fd%3D%3D"
    );
}
