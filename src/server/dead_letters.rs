//! The dead letters for agents: replies kefu gave up on (the platform refused them for
//! good, they kept failing, or a crash cut off their send so kefu cannot tell whether they
//! arrived). An agent reads why, then queues one again or discards it.
//!
//! `GET /agent/api/dead-letters[?limit=N]`, `POST /agent/api/dead-letters/{id}/retry`,
//! `POST /agent/api/dead-letters/{id}/discard`, behind the agent routes' authorization.

use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;

use super::{ApiError, AppState};
use crate::store::DeadLetter;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    #[serde(default = "default_limit")]
    limit: usize,
}

fn default_limit() -> usize {
    100
}

/// Newest first. The call's URL is left out: a DingTalk sessionWebhook carries a session
/// token, and the agent needs the text, not the address.
pub async fn list(
    State(s): State<AppState>,
    Query(q): Query<ListQuery>,
) -> Result<Response, ApiError> {
    let letters = s.app.store.dead_letters(q.limit.clamp(1, 1000))?;
    Ok(Json(serde_json::json!({
        "total": s.app.store.dead_letter_count()?,
        "dead_letters": letters.iter().map(view).collect::<Vec<_>>(),
    }))
    .into_response())
}

fn view(d: &DeadLetter) -> serde_json::Value {
    serde_json::json!({
        "id": d.item.id,
        "target": d.item.target,
        "conversation": d.item.queue,
        "reason": d.reason,
        "last_error": d.item.last_error,
        "attempts": d.item.attempts,
        "created_ms": d.item.created_ms,
        "dead_ms": d.dead_ms,
        "body": d.item.call.body,
    })
}

/// Queue it again (at the end of its conversation's queue, attempts counted afresh).
pub async fn retry(State(s): State<AppState>, Path(id): Path<u64>) -> Result<Response, ApiError> {
    let letter = take(&s, id)?;
    let queued = s.platforms.outbox.requeue(letter)?;
    s.app.commit.durable().await?;
    Ok(Json(serde_json::json!({ "queued": queued })).into_response())
}

pub async fn discard(State(s): State<AppState>, Path(id): Path<u64>) -> Result<Response, ApiError> {
    take(&s, id)?;
    s.app.commit.durable().await?;
    Ok(Json(serde_json::json!({ "discarded": id })).into_response())
}

fn take(s: &AppState, id: u64) -> Result<DeadLetter, ApiError> {
    s.app
        .store
        .dead_letter_take(id)?
        .ok_or_else(|| ApiError::NotFound(format!("no dead letter {id}")))
}
