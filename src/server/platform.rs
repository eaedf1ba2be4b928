//! Platform callbacks: verify and decode through the channel's codec, answer at once, then
//! handle the message in the background (in its conversation's order) and deliver through
//! the outbox. What differs per channel kind is asked of the registry ([`super::channels`]).
//!
//! A message is written to the inbox before the 200 goes out and removed after its reply is
//! queued, so a crash in between loses nothing (`serve` replays the inbox on start). The
//! dedupe key is remembered for a day, also across restarts: a platform retry after a
//! restart is still recognized. Pull channels (WeCom kf) store their pages the same way
//! before they move their cursor, and hand the messages to [`enqueue`].

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use adapters::{Decoded, Inbound, Outbound};

use axum::extract::{Path, Request, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};

use tokio::sync::mpsc;

use super::channels::{CallbackPath, Registered, Registry, Reply};
use super::error::read_body;
use super::{ApiError, AppState};
use crate::delivery::Outbox;
use crate::engine::{EngineError, Turn};
use crate::store::Conversation;

/// Largest callback body accepted (WeCom and DingTalk send a few KB).
const MAX_CALLBACK_BYTES: usize = 256 * 1024;
/// How long a message id is remembered for dedupe.
const DEDUPE_TTL_MS: u64 = 24 * 3600 * 1000;
/// A conversation's worker exits after this long without messages.
const WORKER_IDLE: Duration = Duration::from_secs(60);

/// The registered channels, their outbox and the per-conversation queues.
pub struct Platforms {
    pub registry: Registry,
    pub outbox: Arc<Outbox>,
    queues: Mutex<HashMap<ConversationKey, Queue>>,
}

/// `(channel, conversation)`.
type ConversationKey = (String, String);
/// A conversation's waiting messages, each with its dedupe/inbox key.
type Queue = mpsc::UnboundedSender<(String, Inbound)>;

impl Platforms {
    pub fn new(registry: Registry, outbox: Arc<Outbox>) -> Self {
        Platforms {
            registry,
            outbox,
            queues: Mutex::new(HashMap::new()),
        }
    }
}

pub async fn wecom(
    State(s): State<AppState>,
    Path(name): Path<String>,
    req: Request,
) -> Result<Response, ApiError> {
    callback(s, name, CallbackPath::WeCom, req).await
}

pub async fn dingtalk(
    State(s): State<AppState>,
    Path(name): Path<String>,
    req: Request,
) -> Result<Response, ApiError> {
    callback(s, name, CallbackPath::DingTalk, req).await
}

async fn callback(
    s: AppState,
    name: String,
    path: CallbackPath,
    req: Request,
) -> Result<Response, ApiError> {
    let ch = s
        .platforms
        .registry
        .callback(&name, path)
        .cloned()
        .ok_or_else(|| ApiError::UnknownChannel(name.clone()))?;
    let codec = ch
        .codec
        .clone()
        .ok_or_else(|| ApiError::UnknownChannel(name.clone()))?;
    let (parts, body) = req.into_parts();
    let bytes = read_body(body, MAX_CALLBACK_BYTES).await?;
    let req = http::Request::from_parts(parts, bytes);
    let decoded = match codec.decode(&req, s.app.clock.now()) {
        Ok(d) => d,
        Err(e) => {
            let outcome = if e.is_auth() {
                "unauthorized"
            } else {
                "malformed"
            };
            s.app.metrics.inc(
                "kefu_callbacks_total",
                &[("channel", &name), ("outcome", outcome)],
            );
            return Err(e.into());
        }
    };
    Ok(accept(&s, &name, decoded))
}

/// After a successful decode: always a 2xx, whatever happens next.
pub fn accept(s: &AppState, name: &str, decoded: Decoded) -> Response {
    let count = |outcome: &str| {
        s.app.metrics.inc(
            "kefu_callbacks_total",
            &[("channel", name), ("outcome", outcome)],
        )
    };
    let ch = s.platforms.registry.get(name);
    match decoded {
        Decoded::Challenge(echo) => {
            count("verified");
            ([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], echo).into_response()
        }
        Decoded::Ignored(why) => {
            count("ignored");
            tracing::debug!(channel = name, why, "callback ignored");
            StatusCode::OK.into_response()
        }
        // The notice carries no customer data: answered at once, pulled in the background.
        Decoded::KfNotice(n) => {
            let taken = ch.is_some_and(|c| c.driver.notice(s, c, n));
            count(if taken { "notified" } else { "ignored" });
            StatusCode::OK.into_response()
        }
        Decoded::Message(m) if ch.is_some_and(|c| c.driver.skip(&m)) => {
            count("ignored");
            StatusCode::OK.into_response()
        }
        Decoded::Message(m) => {
            let key = format!("{name}:{}", m.id);
            match s
                .app
                .store
                .check_and_remember(&key, s.app.clock.now_ms(), DEDUPE_TTL_MS)
            {
                Ok(true) => {
                    count("duplicate");
                    return StatusCode::OK.into_response();
                }
                Ok(false) => {}
                // Can't tell: handle it; a rare double answer beats a lost question.
                Err(e) => tracing::error!(error = %e, "dedupe store failed"),
            }
            if let Err(e) = s.app.store.inbox_put(&key, &m) {
                tracing::error!(error = %e, "inbox write failed; handling from memory");
            }
            count("accepted");
            enqueue(s, key, *m);
            StatusCode::OK.into_response()
        }
    }
}

/// Hand a message to its conversation's worker: one customer in order, customers in parallel.
pub fn enqueue(s: &AppState, key: String, m: Inbound) {
    let conv = (m.channel.clone(), m.conversation.clone());
    let mut queues = s.platforms.queues.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(tx) = queues.get(&conv) {
        match tx.send((key, m)) {
            Ok(()) => return,
            Err(mpsc::error::SendError(back)) => {
                // The worker just exited; start a new one below.
                queues.remove(&conv);
                let (tx, rx) = mpsc::unbounded_channel();
                let _ = tx.send(back);
                queues.insert(conv.clone(), tx);
                tokio::spawn(worker(s.clone(), conv, rx));
                return;
            }
        }
    }
    let (tx, rx) = mpsc::unbounded_channel();
    let _ = tx.send((key, m));
    queues.insert(conv.clone(), tx);
    tokio::spawn(worker(s.clone(), conv, rx));
}

async fn worker(
    s: AppState,
    conv: ConversationKey,
    mut rx: mpsc::UnboundedReceiver<(String, Inbound)>,
) {
    loop {
        let next = match tokio::time::timeout(WORKER_IDLE, rx.recv()).await {
            Ok(Some(next)) => next,
            Ok(None) => return,
            Err(_idle) => {
                // Leave only if nothing arrived meanwhile; senders hold this lock to send.
                let mut queues = s.platforms.queues.lock().unwrap_or_else(|p| p.into_inner());
                match rx.try_recv() {
                    Ok(next) => next,
                    Err(_) => {
                        queues.remove(&conv);
                        return;
                    }
                }
            }
        };
        handle(&s, next.0, next.1).await;
    }
}

async fn handle(s: &AppState, key: String, m: Inbound) {
    let outcome = match s.platforms.registry.get(&m.channel).cloned() {
        Some(ch) => ch.driver.handle(s, &ch, &m).await,
        // A message kept for a channel no longer configured: answered, nowhere to send.
        None => s.app.engine.handle(m.clone()).await.map(|_| ()),
    };
    match outcome {
        Ok(()) => {
            if let Err(e) = s.app.store.inbox_remove(&key) {
                tracing::error!(error = %e, "inbox delete failed");
            }
        }
        // The message stays in the inbox and is handled again after a restart.
        Err(e) => {
            tracing::error!(error = %e, channel = %m.channel, "turn failed; message kept in the inbox")
        }
    }
}

/// The default handling of a message: an engine turn, its reply and handoff alert.
pub async fn turn(s: &AppState, ch: &Registered, m: &Inbound) -> Result<(), EngineError> {
    let turn = s.app.engine.handle(m.clone()).await?;
    deliver_turn(s, ch, m, &turn).await;
    Ok(())
}

/// Queue the turn's reply on the customer's channel, and alert agents on a new handoff.
pub async fn deliver_turn(s: &AppState, ch: &Registered, m: &Inbound, turn: &Turn) {
    if !turn.reply.is_empty() {
        ch.driver
            .send(
                s,
                ch,
                Reply {
                    conversation: &m.conversation,
                    kind: m.kind,
                    user: &m.user,
                    route: &m.route,
                    text: &turn.reply,
                    id: format!("turn:{}", m.id),
                },
            )
            .await;
    }
    if turn.handoff_started {
        notify_agents(s, &m.channel, &m.conversation);
    }
}

/// Encode `reply` with the channel's codec and queue its calls: what most channels do.
pub fn send_encoded(s: &AppState, ch: &Registered, reply: &Reply<'_>) {
    let Some(codec) = ch.codec.as_ref() else {
        return;
    };
    let out = Outbound {
        channel: ch.name.clone(),
        conversation: reply.conversation.to_string(),
        user: reply.user.clone(),
        text: reply.text.to_string(),
        markdown: ch.markdown,
        route: reply.route.clone(),
    };
    let mut rng = rand::thread_rng();
    match codec.encode(&out, s.app.clock.now(), &mut rng) {
        Ok(calls) => {
            let calls = calls
                .into_iter()
                .map(|c| {
                    let fb = codec.fallback(&out, &c);
                    (c, fb)
                })
                .collect();
            if let Err(e) = s
                .platforms
                .outbox
                .enqueue(&ch.name, reply.conversation, calls)
            {
                tracing::error!(error = %e, "outbox write failed; reply lost");
            }
        }
        Err(e) => tracing::error!(error = %e, channel = %ch.name, "reply cannot be encoded"),
    }
}

/// Post the handoff summary to every `handoff.notify` target.
pub fn notify_agents(s: &AppState, channel: &str, conversation: &str) {
    if s.app.config.handoff.notify.is_empty() {
        return;
    }
    let conv = match s.app.store.conversation(channel, conversation) {
        Ok(Some(c)) => c,
        _ => return,
    };
    let Some(h) = conv.handoff.as_ref() else {
        return;
    };
    alert_agents(
        s,
        &format!(
            "[kefu] conversation {channel}/{conversation} needs a human ({})\n{}",
            h.reason, h.summary
        ),
    );
}

/// Post `text` to every `handoff.notify` target.
pub fn alert_agents(s: &AppState, text: &str) {
    for t in &s.app.config.handoff.notify {
        let calls = crate::delivery::notify_calls(text);
        if let Err(e) = s.platforms.outbox.enqueue(
            t,
            "notify",
            calls.into_iter().map(|c| (c, vec![])).collect(),
        ) {
            tracing::error!(error = %e, target = %t, "notify write failed");
        }
    }
}

/// An agent's message goes to the customer through the conversation's channel. `conv` is
/// the record `Engine::agent_reply` returned: the message just stored is its last seq.
pub async fn deliver_agent_message(s: &AppState, conv: &Conversation, text: &str) {
    let seq = conv.next_seq.saturating_sub(1);
    let Some(ch) = s.platforms.registry.get(&conv.channel).cloned() else {
        return;
    };
    ch.driver
        .send(
            s,
            &ch,
            Reply {
                conversation: &conv.conversation,
                kind: conv.kind,
                user: &conv.user,
                route: &conv.route,
                text,
                id: format!("agent:{}:{seq}", conv.conversation),
            },
        )
        .await;
}

/// The agent API handed `conv` back to the bot: the channel may have to tell its platform.
pub async fn released(s: &AppState, conv: &Conversation) {
    if let Some(ch) = s.platforms.registry.get(&conv.channel).cloned() {
        ch.driver.released(s, &ch, conv).await;
    }
}

/// Messages acknowledged before the last stop but never answered.
pub fn replay_inbox(s: &AppState) {
    match s.app.store.inbox_all() {
        Ok(items) => {
            if !items.is_empty() {
                tracing::info!(count = items.len(), "replaying unanswered messages");
            }
            for (key, m) in items {
                enqueue(s, key, m);
            }
        }
        Err(e) => tracing::error!(error = %e, "inbox unreadable"),
    }
}
