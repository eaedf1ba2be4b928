//! The agents' side of a handoff, as JSON: the queue, one conversation, reply, hand back.
//! Protected by `server.admin_token` (Bearer), or loopback-only when none is set.

use std::net::SocketAddr;

use axum::body::Body;
use axum::extract::{ConnectInfo, Path, Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use subtle::ConstantTimeEq;

use super::error::read_body;
use super::{ApiError, AppState};

pub async fn authorize(State(s): State<AppState>, req: Request, next: Next) -> Response {
    let ok = match &s.app.config.server.admin_token {
        Some(token) => req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|h| h.to_str().ok())
            .and_then(|h| h.strip_prefix("Bearer "))
            .is_some_and(|given| bool::from(given.as_bytes().ct_eq(token.expose().as_bytes()))),
        // No token: only this machine may act as an agent. In-process tests have no peer.
        None => req
            .extensions()
            .get::<ConnectInfo<SocketAddr>>()
            .is_none_or(|ConnectInfo(peer)| peer.ip().is_loopback()),
    };
    if !ok {
        return ApiError::Unauthorized(
            "agent routes need `Authorization: Bearer <server.admin_token>` (or a loopback client when no token is set)".into(),
        )
        .into_response();
    }
    next.run(req).await
}

pub async fn queue(State(s): State<AppState>) -> Result<Response, ApiError> {
    let list: Vec<serde_json::Value> = s
        .app
        .store
        .handed_off()?
        .into_iter()
        .filter_map(|c| {
            let h = c.handoff.clone()?;
            Some(serde_json::json!({
                "channel": c.channel,
                "conversation": c.conversation,
                "user": c.user,
                "reason": h.reason,
                "summary": h.summary,
                "since_ms": h.since_ms,
                "agent": h.agent,
            }))
        })
        .collect();
    Ok(Json(serde_json::json!({ "conversations": list })).into_response())
}

pub async fn conversation(
    State(s): State<AppState>,
    Path((channel, conversation)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let conv = s
        .app
        .store
        .conversation(&channel, &conversation)?
        .ok_or_else(|| ApiError::NotFound("unknown conversation".into()))?;
    let messages = s.app.store.messages(&channel, &conversation, 0, 1000)?;
    Ok(Json(serde_json::json!({ "conversation": conv, "messages": messages })).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ReplyBody {
    text: String,
    #[serde(default)]
    agent: Option<String>,
}

pub async fn reply(
    State(s): State<AppState>,
    Path((channel, conversation)): Path<(String, String)>,
    body: Body,
) -> Result<Response, ApiError> {
    let bytes = read_body(body, s.app.config.server.max_body_bytes).await?;
    let b: ReplyBody = serde_json::from_slice(&bytes)
        .map_err(|e| ApiError::BadRequest(format!("invalid request body: {e}")))?;
    if b.text.trim().is_empty() {
        return Err(ApiError::BadRequest("text must not be empty".into()));
    }
    let (msg, conv) = s
        .app
        .engine
        .agent_reply(&channel, &conversation, b.text.trim(), b.agent.as_deref())
        .await?;
    s.deliver_agent_message(&conv, &msg.text).await;
    Ok(Json(serde_json::json!({ "seq": msg.seq })).into_response())
}

pub async fn release(
    State(s): State<AppState>,
    Path((channel, conversation)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let conv = s.app.engine.release(&channel, &conversation).await?;
    super::platform::released(&s, &conv).await;
    Ok(Json(serde_json::json!({ "released": true })).into_response())
}
