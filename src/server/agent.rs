//! The agents' JSON API: the queue, one conversation (newest messages first, paging back),
//! claim, reply, release and close. The console uses it; so can scripts with the admin
//! token. Who may call it is decided in `console::authorize_agent`.

use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use serde::Deserialize;
use serde_json::{json, Value};

use super::console::{json_body, Caller};
use super::{ApiError, AppState};
use crate::store::{Conversation, Message, Role};

/// Messages a conversation page holds by default, and at most.
const PAGE: usize = 50;
const MAX_PAGE: usize = 200;
/// Recent messages shown on a queue card.
const CARD_MESSAGES: usize = 4;
/// Longest resolution note, in characters.
const MAX_NOTE_CHARS: usize = 2000;
/// Action bodies (`{}`, `{"agent"}`, `{"note"}`) are small; replies have their own limit.
const MAX_ACTION_BYTES: usize = 16 * 1024;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QueueQuery {
    /// Only this channel.
    #[serde(default)]
    channel: Option<String>,
    /// `mine`, `unclaimed` or `all` (default).
    #[serde(default)]
    owner: Option<String>,
}

/// `GET /agent/api/conversations`: handed-off conversations, oldest handoff first.
pub async fn queue(
    State(s): State<AppState>,
    Extension(caller): Extension<Caller>,
    Query(q): Query<QueueQuery>,
) -> Result<Response, ApiError> {
    let me = caller.agent();
    let owner = q.owner.as_deref().unwrap_or("all");
    if !matches!(owner, "all" | "mine" | "unclaimed") {
        return Err(ApiError::BadRequest(
            "owner must be all, mine or unclaimed".into(),
        ));
    }
    let all = s.app.store.handed_off()?;
    let claimed_by = |c: &Conversation| c.handoff.as_ref().and_then(|h| h.agent.clone());
    let counts = json!({
        "open": all.len(),
        "unclaimed": all.iter().filter(|c| claimed_by(c).is_none()).count(),
        "mine": all.iter().filter(|c| me.is_some() && claimed_by(c).as_deref() == me).count(),
    });
    let mut list = Vec::new();
    for c in &all {
        if q.channel.as_deref().is_some_and(|ch| ch != c.channel) {
            continue;
        }
        let keep = match owner {
            "mine" => me.is_some() && claimed_by(c).as_deref() == me,
            "unclaimed" => claimed_by(c).is_none(),
            _ => true,
        };
        if keep {
            list.push(queue_item(&s, c)?);
        }
    }
    Ok(Json(json!({
        "now_ms": s.app.clock.now_ms(),
        "counts": counts,
        "conversations": list,
    }))
    .into_response())
}

/// One queue entry: who, where, why, since when, and the summary card.
fn queue_item(s: &AppState, c: &Conversation) -> Result<Value, ApiError> {
    let h = c.handoff.as_ref();
    let recent =
        s.app
            .store
            .messages_before(&c.channel, &c.conversation, u64::MAX, CARD_MESSAGES * 3)?;
    let said: Vec<&Message> = recent
        .iter()
        .filter(|m| m.role != Role::System && !m.text.is_empty())
        .collect();
    let last: Vec<Value> = said[said.len().saturating_sub(CARD_MESSAGES)..]
        .iter()
        .map(|m| {
            json!({
                "role": m.role.as_str(),
                "text": m.text.chars().take(280).collect::<String>(),
                "at_ms": m.at_ms,
            })
        })
        .collect();
    // The sources the bot used in these messages, newest first, each once.
    let mut sources: Vec<Value> = Vec::new();
    for m in recent.iter().rev().filter(|m| m.role == Role::Bot) {
        for src in &m.sources {
            if !sources.iter().any(|v| v["path"] == src.path.as_str()) && sources.len() < 3 {
                sources.push(json!({"title": src.title, "path": src.path}));
            }
        }
    }
    let last_customer_ms = recent
        .iter()
        .rev()
        .find(|m| m.role == Role::User)
        .map(|m| m.at_ms);
    Ok(json!({
        "channel": c.channel,
        "kind": c.kind.as_str(),
        "conversation": c.conversation,
        "user": c.user,
        "zh": c.zh,
        "reason": h.map(|h| h.reason.as_str()),
        "summary": h.map(|h| h.summary.as_str()),
        "since_ms": h.map(|h| h.since_ms),
        "agent": h.and_then(|h| h.agent.as_deref()),
        "agent_name": h.and_then(|h| h.agent.as_deref()).and_then(|a| s.agents.name(a)),
        "claimed_ms": h.and_then(|h| h.claimed_ms),
        "first_reply_ms": h.and_then(|h| h.first_reply_ms),
        "last_customer_ms": last_customer_ms,
        "card": {
            "intent": h.map(|h| h.card.intent.as_str()),
            "urgency": h.map(|h| h.card.urgency.as_str()),
            "sentiment": h.map(|h| h.card.sentiment.as_str()),
            "order": h.and_then(|h| h.card.order.as_deref()),
            "last_messages": last,
            "sources": sources,
        },
    }))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PageQuery {
    /// Messages with a seq below this one (paging back); absent = the newest.
    #[serde(default)]
    before: Option<u64>,
    #[serde(default)]
    limit: Option<usize>,
}

/// `GET /agent/api/conversations/{channel}/{conversation}?before=&limit=`: the conversation
/// and its newest messages (oldest of them first), `has_more` when older ones exist.
pub async fn conversation(
    State(s): State<AppState>,
    Path((channel, conversation)): Path<(String, String)>,
    Query(q): Query<PageQuery>,
) -> Result<Response, ApiError> {
    let conv = load(&s, &channel, &conversation)?;
    let limit = q.limit.unwrap_or(PAGE).clamp(1, MAX_PAGE);
    let mut messages = s.app.store.messages_before(
        &channel,
        &conversation,
        q.before.unwrap_or(u64::MAX),
        limit + 1,
    )?;
    let has_more = messages.len() > limit;
    if has_more {
        messages.remove(0);
    }
    Ok(Json(json!({
        "now_ms": s.app.clock.now_ms(),
        "conversation": view(&s, &conv),
        "messages": messages,
        "has_more": has_more,
    }))
    .into_response())
}

fn load(s: &AppState, channel: &str, conversation: &str) -> Result<Conversation, ApiError> {
    s.app
        .store
        .conversation(channel, conversation)?
        .ok_or_else(|| ApiError::NotFound("unknown conversation".into()))
}

/// A conversation as agents see it. Platform routing (a DingTalk sessionWebhook is a
/// credential) stays on the server.
fn view(s: &AppState, c: &Conversation) -> Value {
    json!({
        "channel": c.channel,
        "kind": c.kind.as_str(),
        "conversation": c.conversation,
        "user": c.user,
        "created_ms": c.created_ms,
        "updated_ms": c.updated_ms,
        "zh": c.zh,
        "flow": c.flow,
        "handoff": c.handoff,
        "agent_name": c.handoff.as_ref().and_then(|h| h.agent.as_deref()).and_then(|a| s.agents.name(a)),
        "link": super::platform::console_link(s, &c.channel, &c.conversation),
    })
}

/// Body of claim / release: agents send `{}`; automation names the agent it acts for.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct ActionBody {
    #[serde(default)]
    agent: Option<String>,
    #[serde(default)]
    note: Option<String>,
}

/// The agent an action is done as: the logged-in agent, or the one automation names.
fn acting_agent(caller: &Caller, named: Option<String>) -> Result<Option<String>, ApiError> {
    match (caller, named) {
        (Caller::Agent { id, .. }, Some(n)) if &n != id => Err(ApiError::Forbidden(
            "a console session acts as its own agent only".into(),
        )),
        (Caller::Agent { id, .. }, _) => Ok(Some(id.clone())),
        (Caller::Automation, named) => Ok(named),
    }
}

/// `POST .../claim`: take the conversation. 409 with `agent` when someone else has it.
pub async fn claim(
    State(s): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path((channel, conversation)): Path<(String, String)>,
    body: Body,
) -> Result<Response, ApiError> {
    let b: ActionBody = json_body(body, MAX_ACTION_BYTES).await?;
    let agent = acting_agent(&caller, b.agent)?.ok_or_else(|| {
        ApiError::BadRequest("name the agent who claims it: {\"agent\": \"<id>\"}".into())
    })?;
    let conv = s.app.engine.claim(&channel, &conversation, &agent).await?;
    s.app.commit.durable().await?;
    Ok(Json(json!({ "conversation": view(&s, &conv) })).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ReplyBody {
    text: String,
    #[serde(default)]
    agent: Option<String>,
}

/// `POST .../reply` `{"text"}`: a message to the customer on their channel.
pub async fn reply(
    State(s): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path((channel, conversation)): Path<(String, String)>,
    body: Body,
) -> Result<Response, ApiError> {
    let b: ReplyBody = json_body(body, s.app.config.server.max_body_bytes).await?;
    let text = b.text.trim();
    if text.is_empty() {
        return Err(ApiError::BadRequest("text must not be empty".into()));
    }
    let max = s.app.config.server.max_message_chars;
    let len = text.chars().count();
    if len > max {
        return Err(ApiError::BadRequest(format!(
            "text is {len} characters; the limit is {max} (server.max_message_chars)"
        )));
    }
    let agent = acting_agent(&caller, b.agent)?;
    let (msg, conv) = s
        .app
        .engine
        .agent_reply(&channel, &conversation, text, agent.as_deref())
        .await?;
    s.deliver_agent_message(&conv, &msg)?;
    // The agent's "sent" means stored, like every acknowledgement.
    s.app.commit.durable().await?;
    Ok(Json(json!({ "seq": msg.seq, "message": msg })).into_response())
}

/// `POST .../release`: hand the conversation back to the bot.
pub async fn release(
    State(s): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path((channel, conversation)): Path<(String, String)>,
    body: Body,
) -> Result<Response, ApiError> {
    let b: ActionBody = json_body(body, MAX_ACTION_BYTES).await?;
    let agent = acting_agent(&caller, b.agent)?;
    s.app
        .engine
        .release(&channel, &conversation, agent.as_deref())
        .await?;
    s.app.commit.durable().await?;
    Ok(Json(json!({ "released": true })).into_response())
}

/// `POST .../close` `{"note"}`: the case is resolved; the note stays with the agents.
pub async fn close(
    State(s): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path((channel, conversation)): Path<(String, String)>,
    body: Body,
) -> Result<Response, ApiError> {
    let b: ActionBody = json_body(body, MAX_ACTION_BYTES).await?;
    let note = b.note.as_deref().map(str::trim).unwrap_or_default();
    if note.is_empty() {
        return Err(ApiError::BadRequest(
            "a resolution note is required: {\"note\": \"...\"}".into(),
        ));
    }
    if note.chars().count() > MAX_NOTE_CHARS {
        return Err(ApiError::BadRequest(format!(
            "the note is longer than {MAX_NOTE_CHARS} characters"
        )));
    }
    let agent = acting_agent(&caller, b.agent)?;
    s.app
        .engine
        .close(&channel, &conversation, agent.as_deref(), note)
        .await?;
    s.app.commit.durable().await?;
    Ok(Json(json!({ "closed": true })).into_response())
}
