//! The website channel: `POST /api/chat` (JSON or server-sent events) and the history a
//! widget polls for agent replies.

use std::convert::Infallible;
use std::time::Duration;

use adapters::web::{sse, ChatRequest, ChatTurn, HandoffState, History, HistoryMessage, SourceRef};
use adapters::{ChannelKind, ContentKind, Inbound, UserRef};
use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::Json;
use futures::stream::{self, StreamExt};
use serde::Deserialize;

use super::error::read_body;
use super::{ApiError, AppState};
use crate::config::ChannelConfig;
use crate::engine::Turn;
use crate::store::{Conversation, Role, SourceRecord};

const MAX_SESSION_ID: usize = 128;

pub async fn post_chat(
    State(s): State<AppState>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let bytes = read_body(body, s.app.config.server.max_body_bytes).await?;
    let req: ChatRequest = serde_json::from_slice(&bytes)
        .map_err(|e| ApiError::BadRequest(format!("invalid request body: {e}")))?;
    let channel = web_channel(&s, req.channel.as_deref())?;
    check_session_id(&req.session_id)?;
    let message = req.message.trim();
    if message.is_empty() {
        return Err(ApiError::BadRequest("message must not be empty".into()));
    }
    let max = s.app.config.server.max_message_chars;
    let len = message.chars().count();
    if len > max {
        return Err(ApiError::BadRequest(format!(
            "message is {len} characters; the limit is {max}"
        )));
    }
    let now = s.app.clock.now_ms();
    let inbound = Inbound {
        channel: channel.clone(),
        kind: ChannelKind::Web,
        conversation: req.session_id.clone(),
        user: UserRef {
            id: req.session_id.clone(),
            name: None,
        },
        id: format!("web-{now}-{}", rand::random::<u32>()),
        content: ContentKind::Text,
        text: message.to_string(),
        sent_at_ms: now,
        route: Default::default(),
    };
    let streaming = headers
        .get(header::ACCEPT)
        .and_then(|a| a.to_str().ok())
        .is_some_and(|a| a.contains("text/event-stream"));
    let turn = s.app.engine.handle(inbound).await?;
    if turn.handoff_started {
        super::platform::notify_agents(&s, &channel, &req.session_id);
    }
    // The widget's reply is its acknowledgement: only once the turn is on disk. A failed
    // flush is a 503; the widget (or the customer) sends again.
    s.app.commit.durable().await?;
    let wire = chat_turn(&req.session_id, &turn);
    if !streaming {
        return Ok(Json(wire).into_response());
    }
    // The reply passed its quality check as a whole; stream it in small pieces so the
    // widget shows it as it "types", then the authoritative final turn.
    let deltas: Vec<Result<Event, Infallible>> = pieces(&wire.reply)
        .into_iter()
        .map(|p| {
            Ok(Event::default()
                .event(sse::DELTA)
                .data(serde_json::json!({ "text": p }).to_string()))
        })
        .collect();
    let last = Event::default()
        .event(sse::TURN)
        .data(serde_json::to_string(&wire).unwrap_or_default());
    let events = stream::iter(deltas)
        .then(|e| async {
            tokio::time::sleep(Duration::from_millis(8)).await;
            e
        })
        .chain(stream::once(async move { Ok(last) }));
    Ok(Sse::new(events)
        .keep_alive(KeepAlive::default())
        .into_response())
}

/// Messages a history page holds by default, and at most.
const HISTORY_PAGE: usize = 100;
const MAX_HISTORY_PAGE: usize = 500;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HistoryQuery {
    /// What came after this seq (the widget's poll while an agent writes), oldest first.
    #[serde(default)]
    after: u64,
    /// The page before this seq (scrolling back); absent (and no `after`): the newest page.
    #[serde(default)]
    before: Option<u64>,
    #[serde(default)]
    limit: Option<usize>,
    #[serde(default)]
    channel: Option<String>,
}

/// `GET /api/chat/{session_id}/messages`: what the customer sees of the conversation. Agent
/// messages count as delivered once the widget has fetched them; system notes (an agent's
/// claim, a resolution note) are for agents only.
pub async fn history(
    State(s): State<AppState>,
    Path(session_id): Path<String>,
    Query(q): Query<HistoryQuery>,
) -> Result<Json<History>, ApiError> {
    let channel = web_channel(&s, q.channel.as_deref())?;
    check_session_id(&session_id)?;
    let conv = s.app.store.conversation(&channel, &session_id)?;
    let limit = q.limit.unwrap_or(HISTORY_PAGE).clamp(1, MAX_HISTORY_PAGE);
    let store = &s.app.store;
    let (page, has_more) = if q.after > 0 {
        (
            store.messages(&channel, &session_id, q.after, limit)?,
            false,
        )
    } else {
        let mut page = store.messages_before(
            &channel,
            &session_id,
            q.before.unwrap_or(u64::MAX),
            limit + 1,
        )?;
        let more = page.len() > limit;
        if more {
            page.remove(0);
        }
        (page, more)
    };
    let now = s.app.clock.now_ms();
    let mut messages = Vec::with_capacity(page.len());
    for m in page {
        if m.role == Role::System || m.text.is_empty() {
            continue;
        }
        crate::delivery::fetched_by_widget(
            store.as_ref(),
            s.app.engine.events(),
            &channel,
            &session_id,
            &m,
            now,
        );
        messages.push(HistoryMessage {
            seq: m.seq,
            role: m.role.as_str().to_string(),
            text: m.text,
            at_ms: m.at_ms,
            sources: source_refs(&m.sources),
        });
    }
    Ok(Json(History {
        session_id,
        messages,
        handoff: handoff_state(conv.as_ref()),
        has_more,
    }))
}

/// The web channel a request names, or the first one configured.
fn web_channel(s: &AppState, name: Option<&str>) -> Result<String, ApiError> {
    s.app
        .config
        .channels
        .iter()
        .find_map(|c| match c {
            ChannelConfig::Web(w) if name.is_none_or(|n| n == w.name) => Some(w.name.clone()),
            _ => None,
        })
        .ok_or_else(|| {
            ApiError::UnknownChannel(name.unwrap_or("(no web channel configured)").to_string())
        })
}

fn check_session_id(id: &str) -> Result<(), ApiError> {
    if id.is_empty() {
        return Err(ApiError::BadRequest("session_id must not be empty".into()));
    }
    if id.len() > MAX_SESSION_ID
        || !id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | ':'))
    {
        return Err(ApiError::BadRequest(format!(
            "session_id must be 1-{MAX_SESSION_ID} of A-Z a-z 0-9 - _ . :"
        )));
    }
    Ok(())
}

pub fn chat_turn(session_id: &str, t: &Turn) -> ChatTurn {
    ChatTurn {
        session_id: session_id.to_string(),
        reply: t.reply.clone(),
        intent: t.intent.intent.as_str().to_string(),
        urgency: t.intent.urgency.as_str().to_string(),
        sentiment: (t.intent.sentiment_score * 100.0).round() / 100.0,
        needs_order_info: t.intent.needs_order_info,
        confidence: (t.confidence * 1000.0).round() / 1000.0,
        sources: source_refs(&t.sources),
        handoff: HandoffState {
            active: t.handoff_active,
            reason: t.handoff_reason.clone(),
        },
    }
}

fn source_refs(s: &[SourceRecord]) -> Vec<SourceRef> {
    s.iter()
        .map(|s| SourceRef {
            title: s.title.clone(),
            path: s.path.clone(),
            score: s.score,
        })
        .collect()
}

fn handoff_state(c: Option<&Conversation>) -> HandoffState {
    match c.and_then(|c| c.handoff.as_ref()).filter(|h| h.active) {
        Some(h) => HandoffState {
            active: true,
            reason: Some(h.reason.clone()),
        },
        None => HandoffState {
            active: false,
            reason: None,
        },
    }
}

/// Split a reply into streaming pieces: words for Latin text, a few characters for Chinese.
fn pieces(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    for c in text.chars() {
        cur.push(c);
        let cjk = crate::text::is_cjk(c);
        if (c.is_whitespace() && cur.len() >= 12) || (cjk && cur.chars().count() >= 4) {
            out.push(std::mem::take(&mut cur));
        }
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}
