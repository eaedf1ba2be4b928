//! Router tests: the whole app on a temporary sled database, driven with `oneshot`.

use std::sync::Arc;

use axum::body::Body;
use axum::http::{header, Request, StatusCode};
use axum::Router;
use tower::ServiceExt;

use super::*;
use crate::app::{App, IngestPolicy};
use crate::config::{ChannelConfig, Config, WebChannelConfig};

async fn test_app() -> (Router, AppState, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let kb = dir.path().join("kb/faq");
    std::fs::create_dir_all(&kb).unwrap();
    std::fs::write(
        kb.join("demo.jsonl"),
        concat!(
            r#"{"id":"reset","question":"How do I reset my password?","answer":"Open Settings, choose Security and click Reset password.","alternates":["forgot my password","password reset"]}"#,
            "\n",
            r#"{"id":"refund","question":"What is the refund policy?","answer":"Annual plans get a full refund within 30 days.","alternates":["can I get my money back"]}"#,
            "\n"
        ),
    )
    .unwrap();
    let mut cfg = Config::default();
    cfg.knowledge.paths = vec![dir.path().join("kb")];
    cfg.channels.push(ChannelConfig::Web(WebChannelConfig {
        name: "site".into(),
        allowed_origins: vec!["https://www.example.com".into()],
        link_hosts: vec![],
    }));
    let db = sled::Config::new().temporary(true).open().unwrap();
    let app = App::with_db(Arc::new(cfg), db, IngestPolicy::WhenStale)
        .await
        .unwrap();
    let state = AppState::new(app).unwrap();
    (router(state.clone()), state, dir)
}

async fn call(app: &Router, req: Request<Body>) -> (StatusCode, serde_json::Value, String) {
    let resp = app.clone().oneshot(req).await.unwrap();
    let status = resp.status();
    let bytes = axum::body::to_bytes(resp.into_body(), 10 << 20)
        .await
        .unwrap();
    let text = String::from_utf8_lossy(&bytes).to_string();
    let json = serde_json::from_str(&text).unwrap_or(serde_json::Value::Null);
    (status, json, text)
}

fn chat(body: &str) -> Request<Body> {
    Request::post("/api/chat")
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(body.to_string()))
        .unwrap()
}

#[tokio::test]
async fn chat_answers_with_sources() {
    let (app, _, _d) = test_app().await;
    let (status, v, _) = call(
        &app,
        chat(r#"{"session_id":"s-1","message":"how do I reset my password"}"#),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{v}");
    assert_eq!(v["session_id"], "s-1");
    assert!(
        v["reply"].as_str().unwrap().contains("Reset password"),
        "{v}"
    );
    assert_eq!(v["intent"], "query");
    assert_eq!(v["sources"][0]["path"], "faq/demo.jsonl#reset");
    assert_eq!(v["handoff"]["active"], false);
    assert!(v["confidence"].as_f64().unwrap() > 0.6);
}

#[tokio::test]
async fn bad_requests_get_clear_errors() {
    let (app, state, _d) = test_app().await;
    for (body, want) in [
        ("{not json", "invalid request body"),
        (
            r#"{"session_id":"s","message":"   "}"#,
            "message must not be empty",
        ),
        (r#"{"message":"hi"}"#, "missing field `session_id`"),
        (
            r#"{"session_id":"s","message":"hi","colour":1}"#,
            "unknown field `colour`",
        ),
        (
            r#"{"session_id":"","message":"hi"}"#,
            "session_id must not be empty",
        ),
        (
            r#"{"session_id":"a b","message":"hi"}"#,
            "session_id must be",
        ),
    ] {
        let (status, v, _) = call(&app, chat(body)).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
        assert!(v["error"].as_str().unwrap().contains(want), "{body}: {v}");
    }
    let long = "a".repeat(5000);
    let (status, v, _) = call(
        &app,
        chat(&format!(r#"{{"session_id":"s","message":"{long}"}}"#)),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(v["error"].as_str().unwrap().contains("limit is 4000"));
    let huge = "a".repeat(1 << 20);
    let (status, v, _) = call(
        &app,
        chat(&format!(r#"{{"session_id":"s","message":"{huge}"}}"#)),
    )
    .await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    assert!(v["error"].as_str().unwrap().contains("larger than"));
    // Nothing was stored for the refused requests.
    assert!(state.app.store.conversation("site", "s").unwrap().is_none());
}

#[tokio::test]
async fn streaming_sends_deltas_then_the_turn() {
    let (app, _, _d) = test_app().await;
    let req = Request::post("/api/chat")
        .header(header::CONTENT_TYPE, "application/json")
        .header(header::ACCEPT, "text/event-stream")
        .body(Body::from(
            r#"{"session_id":"s-2","message":"forgot my password"}"#,
        ))
        .unwrap();
    let (status, _, text) = call(&app, req).await;
    assert_eq!(status, StatusCode::OK);
    let deltas: String = text
        .split("\n\n")
        .filter(|e| e.starts_with("event: delta"))
        .map(|e| {
            let data = e.lines().find_map(|l| l.strip_prefix("data: ")).unwrap();
            serde_json::from_str::<serde_json::Value>(data).unwrap()["text"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    let turn = text
        .split("\n\n")
        .find(|e| e.starts_with("event: turn"))
        .expect("a turn event");
    let turn: serde_json::Value =
        serde_json::from_str(turn.lines().find_map(|l| l.strip_prefix("data: ")).unwrap()).unwrap();
    assert_eq!(deltas, turn["reply"].as_str().unwrap());
    assert!(deltas.contains("Reset password"));
}

#[tokio::test]
async fn history_lists_messages_and_handoff_state() {
    let (app, _, _d) = test_app().await;
    call(
        &app,
        chat(r#"{"session_id":"h-1","message":"talk to a human"}"#),
    )
    .await;
    let (status, v, _) = call(
        &app,
        Request::get("/api/chat/h-1/messages")
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(v["handoff"]["active"], true);
    assert_eq!(v["handoff"]["reason"], "human_requested");
    assert_eq!(v["messages"].as_array().unwrap().len(), 2);
    // An agent replies; the widget sees it after seq 2.
    let req = Request::post("/agent/api/conversations/site/h-1/reply")
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(r#"{"text":"Hi, this is Li."}"#))
        .unwrap();
    let (status, _, body) = call(&app, req).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (_, v, _) = call(
        &app,
        Request::get("/api/chat/h-1/messages?after=2")
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    assert_eq!(v["messages"][0]["role"], "agent");
    assert_eq!(v["messages"][0]["text"], "Hi, this is Li.");
    // The queue shows it; release hands it back.
    let (_, v, _) = call(
        &app,
        Request::get("/agent/api/conversations")
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    assert_eq!(v["conversations"][0]["conversation"], "h-1");
    let (status, _, _) = call(
        &app,
        Request::post("/agent/api/conversations/site/h-1/release")
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let (_, v, _) = call(
        &app,
        chat(r#"{"session_id":"h-1","message":"how do I reset my password"}"#),
    )
    .await;
    assert_eq!(v["handoff"]["active"], false);
}

#[tokio::test]
async fn cors_allows_configured_origins_and_refuses_others() {
    let (app, _, _d) = test_app().await;
    let with_origin = |origin: &str| {
        Request::post("/api/chat")
            .header(header::CONTENT_TYPE, "application/json")
            .header(header::ORIGIN, origin)
            .header(header::HOST, "kefu.local:8080")
            .body(Body::from(
                r#"{"session_id":"c-1","message":"reset password"}"#,
            ))
            .unwrap()
    };
    let resp = app
        .clone()
        .oneshot(with_origin("https://www.example.com"))
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(
        resp.headers()[header::ACCESS_CONTROL_ALLOW_ORIGIN],
        "https://www.example.com"
    );
    let (status, v, _) = call(&app, with_origin("https://evil.example.net")).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert!(v["error"].as_str().unwrap().contains("not allowed"));
    let (status, _, _) = call(&app, with_origin("http://kefu.local:8080")).await;
    assert_eq!(status, StatusCode::OK, "same origin is always allowed");
    let pre = Request::options("/api/chat")
        .header(header::ORIGIN, "https://www.example.com")
        .header("access-control-request-method", "POST")
        .body(Body::empty())
        .unwrap();
    let resp = app.clone().oneshot(pre).await.unwrap();
    assert_eq!(resp.status(), StatusCode::NO_CONTENT);
    assert!(resp
        .headers()
        .contains_key(header::ACCESS_CONTROL_ALLOW_METHODS));
}

#[tokio::test]
async fn ops_routes() {
    let (app, _, _d) = test_app().await;
    let (status, v, _) = call(&app, Request::get("/healthz").body(Body::empty()).unwrap()).await;
    assert_eq!((status, v["status"].as_str()), (StatusCode::OK, Some("ok")));
    call(
        &app,
        chat(r#"{"session_id":"m-1","message":"reset my password"}"#),
    )
    .await;
    call(&app, chat(r#"{"session_id":"m-2","message":"转人工"}"#)).await;
    let (_, _, text) = call(&app, Request::get("/metrics").body(Body::empty()).unwrap()).await;
    assert!(
        text.contains(r#"kefu_turns_total{channel="site",intent="query"} 1"#),
        "{text}"
    );
    assert!(
        text.contains(r#"kefu_turns_total{channel="site",intent="other"} 1"#),
        "{text}"
    );
    assert!(
        text.contains(r#"kefu_handoffs_total{reason="human_requested"} 1"#),
        "{text}"
    );
    assert!(text.contains("kefu_turn_seconds_count 2"), "{text}");
    assert!(text.contains("kefu_knowledge_chunks 2"), "{text}");
    let resp = app
        .clone()
        .oneshot(Request::get("/widget.js").body(Body::empty()).unwrap())
        .await
        .unwrap();
    assert_eq!(
        resp.headers()[header::CONTENT_TYPE],
        "application/javascript; charset=utf-8"
    );
    let (status, v, _) = call(&app, Request::get("/nope").body(Body::empty()).unwrap()).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(v["error"], "no such route");
    let (status, v, _) = call(
        &app,
        Request::post("/admin/reingest")
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(v["changed"], 0);
}

#[tokio::test]
async fn history_opens_at_the_newest_and_pages_back() {
    let (app, state, _d) = test_app().await;
    let store = &state.app.store;
    for seq in 1..=250u64 {
        let role = match seq % 50 {
            0 => crate::store::Role::System,
            _ => crate::store::Role::User,
        };
        store
            .append_message(
                "site",
                "p-1",
                &crate::store::Message::new(seq, role, format!("m{seq}"), seq),
            )
            .unwrap();
    }
    let page = |q: &str| {
        let app = app.clone();
        let q = q.to_string();
        async move {
            let (status, v, _) = call(
                &app,
                Request::get(format!("/api/chat/p-1/messages{q}"))
                    .body(Body::empty())
                    .unwrap(),
            )
            .await;
            assert_eq!(status, StatusCode::OK, "{v}");
            let seqs: Vec<u64> = v["messages"]
                .as_array()
                .unwrap()
                .iter()
                .map(|m| m["seq"].as_u64().unwrap())
                .collect();
            (seqs, v["has_more"].as_bool().unwrap())
        }
    };
    let (seqs, more) = page("").await;
    assert_eq!(
        (seqs[0], *seqs.last().unwrap(), more),
        (151, 249, true),
        "the newest 100"
    );
    assert_eq!(
        seqs.len(),
        98,
        "system notes (200, 250) are not the customer's"
    );
    let (seqs, more) = page("?before=151").await;
    assert_eq!((seqs[0], *seqs.last().unwrap(), more), (51, 149, true));
    let (seqs, more) = page("?before=51&limit=500").await;
    assert_eq!((seqs[0], *seqs.last().unwrap(), more), (1, 49, false));
    let (seqs, more) = page("?after=245").await;
    assert_eq!((seqs, more), (vec![246, 247, 248, 249], false));
    let (seqs, _) = page("?after=0").await;
    assert_eq!(
        seqs[0], 151,
        "after=0 (older widgets) is the newest page too"
    );
}
