//! The website channel: `POST /api/chat` (JSON or server-sent events) and the history a
//! widget polls for agent replies.

use std::convert::Infallible;

use adapters::web::{sse, ChatRequest, ChatTurn, HandoffState, History, HistoryMessage, SourceRef};
use adapters::{ChannelKind, ContentKind, Inbound, UserRef};
use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::Json;
use futures::stream;
use serde::Deserialize;

use super::error::read_body;
use super::{ApiError, AppState};
use crate::config::ChannelConfig;
use crate::engine::{StreamEvent, Turn};
use crate::store::{Conversation, Role, SourceRecord};
use tokio::sync::mpsc;

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
    let link_allow = link_allow(&s, &channel);
    if !streaming {
        let turn = s.app.engine.handle(inbound).await?;
        finish_turn(&s, &channel, &req.session_id, &turn).await?;
        return Ok(Json(chat_turn(&req.session_id, &turn, &link_allow)).into_response());
    }
    // The turn runs in its own task: it finishes and is stored even when the customer goes
    // away mid-answer (the engine then stops the model call); the response only listens.
    let (tx, rx) = mpsc::unbounded_channel::<Event>();
    tokio::spawn(stream_turn(s, inbound, req.session_id, link_allow, tx));
    let events = stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|e| (Ok::<_, Infallible>(e), rx))
    });
    Ok(Sse::new(events)
        .keep_alive(KeepAlive::default())
        .into_response())
}

/// After the engine: alert agents of a new handoff, then wait until the turn is on disk. The
/// widget's reply is its acknowledgement: a failed flush is a 503 and the widget (or the
/// customer) sends again.
async fn finish_turn(
    s: &AppState,
    channel: &str,
    session_id: &str,
    turn: &Turn,
) -> Result<(), ApiError> {
    if turn.handoff_started {
        super::platform::notify_agents(s, channel, session_id);
    }
    s.app.commit.durable().await?;
    Ok(())
}

/// One streamed turn: the engine's checked pieces as `delta` / `retract` events while the
/// model writes, then (once the turn is durable) the authoritative `turn`. When the final
/// reply is not what the deltas since the last retract add up to (a handoff, the whole-answer
/// check, a cancelled turn), a `retract` and the reply as one `delta` come first, so a client
/// that only appends deltas still ends with the right text.
async fn stream_turn(
    s: AppState,
    inbound: Inbound,
    session_id: String,
    link_allow: Vec<String>,
    out: mpsc::UnboundedSender<Event>,
) {
    let channel = inbound.channel.clone();
    let (tx, rx) = mpsc::unbounded_channel::<StreamEvent>();
    let mut rx = Some(rx);
    let engine = s.app.engine.clone();
    let turn = engine.handle_streaming(inbound, tx);
    tokio::pin!(turn);
    let mut shown = String::new();
    let result = loop {
        tokio::select! {
            t = &mut turn => break t,
            ev = async { match rx.as_mut() { Some(rx) => rx.recv().await, None => std::future::pending().await } } => {
                match ev {
                    Some(ev) => {
                        if out.send(sse_event(&ev, &mut shown, &link_allow)).is_err() {
                            // The customer left: dropping the receiver tells the engine.
                            rx = None;
                        }
                    }
                    None => rx = None,
                }
            }
            _ = out.closed(), if rx.is_some() => rx = None,
        }
    };
    // Events sent just before the turn ended.
    if let Some(rx) = rx.as_mut() {
        while let Ok(ev) = rx.try_recv() {
            let _ = out.send(sse_event(&ev, &mut shown, &link_allow));
        }
    }
    let result = match result {
        Ok(turn) => finish_turn(&s, &channel, &session_id, &turn)
            .await
            .map(|()| turn),
        Err(e) => Err(ApiError::from(e)),
    };
    match result {
        Ok(turn) => {
            if squash(&shown) != squash(&turn.reply) {
                if !shown.is_empty() {
                    let _ = out.send(retract_event("replaced"));
                }
                if !turn.reply.is_empty() {
                    let _ = out.send(delta_event(&turn.reply, &link_allow));
                }
            }
            let wire = chat_turn(&session_id, &turn, &link_allow);
            let _ = out.send(
                Event::default()
                    .event(sse::TURN)
                    .data(serde_json::to_string(&wire).unwrap_or_default()),
            );
        }
        Err(e) => {
            tracing::warn!(error = %e, "streamed turn failed");
            let _ = out.send(
                Event::default()
                    .event(sse::ERROR)
                    .data(serde_json::json!({ "error": e.to_string() }).to_string()),
            );
        }
    }
}

fn sse_event(ev: &StreamEvent, shown: &mut String, link_allow: &[String]) -> Event {
    match ev {
        StreamEvent::Delta(text) => {
            shown.push_str(text);
            delta_event(text, link_allow)
        }
        StreamEvent::Retract { reason } => {
            shown.clear();
            retract_event(reason)
        }
    }
}

/// A piece of bot text: its links' hosts may be rendered (it passed the grounding check).
fn delta_event(text: &str, link_allow: &[String]) -> Event {
    let mut data = serde_json::json!({ "text": text });
    let hosts = link_hosts(text, true, link_allow);
    if !hosts.is_empty() {
        data["link_hosts"] = serde_json::json!(hosts);
    }
    Event::default().event(sse::DELTA).data(data.to_string())
}

fn retract_event(reason: &str) -> Event {
    Event::default()
        .event(sse::RETRACT)
        .data(serde_json::json!({ "reason": reason }).to_string())
}

/// Text compared without its spacing (pieces keep their own spaces; the reply is trimmed).
fn squash(text: &str) -> String {
    text.chars().filter(|c| !c.is_whitespace()).collect()
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
    let link_allow = link_allow(&s, &channel);
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
            at_ms: m.at_ms,
            sources: source_refs(&m.sources),
            // Bot text is the knowledge's or the operator's (a model's passed the grounding
            // check); a person's links count only when their host is allowed.
            link_hosts: link_hosts(&m.text, m.role == Role::Bot, &link_allow),
            text: m.text,
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
        .ok_or_else(|| match name {
            Some(n) => ApiError::UnknownChannel(n.to_string()),
            None => ApiError::NotFound(
                "no web channel is configured (the config's [[channels]] has none of kind \"web\")"
                    .into(),
            ),
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

/// The web channel's `link_hosts`.
fn link_allow(s: &AppState, channel: &str) -> Vec<String> {
    s.app
        .config
        .channels
        .iter()
        .find_map(|c| match c {
            ChannelConfig::Web(w) if w.name == channel => Some(w.link_hosts.clone()),
            _ => None,
        })
        .unwrap_or_default()
}

/// The hosts of the links (and e-mail addresses) in `text` the widget may render as links:
/// all of them for `trusted` text (the bot's), else those `allow` names (exactly, or under a
/// `*.` entry).
pub fn link_hosts(text: &str, trusted: bool, allow: &[String]) -> Vec<String> {
    let allowed = |host: &str| {
        trusted
            || allow.iter().any(|a| match a.strip_prefix("*.") {
                Some(parent) => host
                    .strip_suffix(parent)
                    .is_some_and(|sub| sub.ends_with('.')),
                None => a.eq_ignore_ascii_case(host),
            })
    };
    let mut out: Vec<String> = Vec::new();
    let urls = crate::providers::grounding::urls(text).filter_map(|u| {
        let full = if u.get(..4).is_some_and(|p| p.eq_ignore_ascii_case("www.")) {
            format!("http://{u}")
        } else {
            u.to_string()
        };
        url::Url::parse(&full)
            .ok()
            .and_then(|u| u.host_str().map(str::to_ascii_lowercase))
    });
    let mails = crate::providers::grounding::emails(text)
        .filter_map(|e| e.rsplit_once('@').map(|(_, d)| d.to_ascii_lowercase()));
    for host in urls.chain(mails) {
        if allowed(&host) && !out.contains(&host) {
            out.push(host);
        }
    }
    out
}

pub fn chat_turn(session_id: &str, t: &Turn, link_allow: &[String]) -> ChatTurn {
    ChatTurn {
        link_hosts: link_hosts(&t.reply, true, link_allow),
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
