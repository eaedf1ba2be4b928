//! Platform callbacks: verify and decode through the channel's codec, store, answer, then
//! handle the message in the background (in its conversation's order) and deliver through
//! the outbox. What differs per channel kind is asked of the registry ([`super::channels`]).
//!
//! Acknowledged means durable: a message's dedupe key and inbox entry are written in one
//! step and flushed (group commit) before the 200 goes out; a write or flush that fails
//! answers 503 and the platform retries. The inbox entry goes in the same write that queues
//! the reply, so a crash anywhere loses nothing and answers nothing twice: `serve` replays
//! the inbox on start, and a replayed message whose turn was already recorded gets that
//! turn's reply instead of a second turn. The dedupe key is remembered for a day, across
//! restarts too.
//!
//! Pull channels (WeCom kf) take their pages in through [`super::fetched`], the same writes
//! and the same queues; their cursor is their acknowledgement.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use adapters::{ChannelKind, Decoded, Inbound, Outbound};

use axum::extract::{Path, Request, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};

use super::channels::{CallbackPath, Registered, Registry, Reply};
use super::error::{read_body, STORE_UNAVAILABLE};
use super::queues::{Queued, Queues, Refused, WorkerParts};
use super::{ApiError, AppState};
use crate::delivery::Outbox;
use crate::engine::EngineError;
use crate::lifecycle::TaskHandle;
use crate::store::{Conversation, OutboxItem, Role, Ticket};

/// Largest callback body accepted (WeCom and DingTalk send a few KB).
const MAX_CALLBACK_BYTES: usize = 256 * 1024;
/// How long a message id is remembered for dedupe.
pub(super) const DEDUPE_TTL_MS: u64 = 24 * 3600 * 1000;
/// A conversation's worker exits after this long without messages.
const WORKER_IDLE: Duration = Duration::from_secs(60);
/// A turn or a reply that could not be stored is tried again after this, doubling to
/// `STORE_RETRY_MAX`, until it works or kefu stops (the message stays in the inbox).
const STORE_RETRY: Duration = Duration::from_millis(100);
const STORE_RETRY_MAX: Duration = Duration::from_secs(5);
/// How far back a replayed message's recorded turn is looked for.
const REPLAY_LOOKBACK: u64 = 64;

/// The registered channels, their outbox and the per-conversation queues.
pub struct Platforms {
    pub registry: Registry,
    pub outbox: Arc<Outbox>,
    pub queues: Queues,
    unflushed: UnflushedKeys,
}

impl Platforms {
    /// `queue_limit`: `server.queue_per_conversation`.
    pub fn new(registry: Registry, outbox: Arc<Outbox>, queue_limit: usize) -> Self {
        Platforms {
            registry,
            outbox,
            queues: Queues::new(queue_limit),
            unflushed: UnflushedKeys::default(),
        }
    }
}

/// Dedupe keys this process is writing and has not yet seen flushed. A platform resend
/// whose key is not here was made durable by an earlier flush (or by an earlier process:
/// what sled reopens is on disk), so it is answered without waiting for a flush; platforms
/// re-send often, and each such wait cost a flush of its own.
#[derive(Default)]
struct UnflushedKeys(std::sync::Mutex<std::collections::HashMap<String, Unflushed>>);

#[derive(Default)]
struct Unflushed {
    /// Requests that may be the one writing the key (they have not learnt they are a
    /// duplicate), or that wrote it and wait for its flush.
    pending: u32,
    /// The key was written and its flush failed: not on disk until a later flush succeeds.
    written_unflushed: bool,
}

impl UnflushedKeys {
    fn with<T>(&self, key: &str, f: impl FnOnce(&mut Unflushed) -> T) -> T {
        let mut keys = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let entry = keys.entry(key.to_string()).or_default();
        let out = f(entry);
        if entry.pending == 0 && !entry.written_unflushed {
            keys.remove(key);
        }
        out
    }

    /// A request is about to write `key` (it learns afterwards whether it was first).
    fn hold(&self, key: &str) {
        self.with(key, |e| e.pending += 1);
    }

    /// The write did not happen (the store failed).
    fn not_written(&self, key: &str) {
        self.with(key, |e| e.pending = e.pending.saturating_sub(1));
    }

    /// The caller found `key` already written. Whether the first copy may not be on disk
    /// yet (its writer has not seen its flush, or that flush failed): then the caller
    /// waits for a flush too.
    fn duplicate_needs_flush(&self, key: &str) -> bool {
        self.with(key, |e| {
            e.pending = e.pending.saturating_sub(1);
            e.pending > 0 || e.written_unflushed
        })
    }

    /// The caller wrote `key` (`wrote`) or found it, and waited for a flush that began
    /// after that write: `flushed` says whether it succeeded.
    fn flush_done(&self, key: &str, wrote: bool, flushed: bool) {
        self.with(key, |e| {
            if wrote {
                e.pending = e.pending.saturating_sub(1);
            }
            e.written_unflushed = if flushed {
                false
            } else {
                e.written_unflushed || wrote
            };
        })
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
    // From here to its 200 this callback takes microseconds: a flush may wait for it.
    let ticket = s.app.commit.ticket();
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
    if ch.kind == ChannelKind::DingTalk {
        super::replay::dingtalk_signature_once(&s, &name, req.headers(), &decoded)?;
        super::replay::warn_foreign_webhook(&s, &name, &decoded);
    }
    Ok(accept(&s, &name, decoded, ticket).await)
}

/// After a successful decode: 200 once the message is on disk, whatever happens next;
/// 503 when it could not be stored (or its queue is full): the platform retries.
pub async fn accept(s: &AppState, name: &str, decoded: Decoded, ticket: Ticket) -> Response {
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
        // The notice carries no customer data: the channel pulls the messages itself, in
        // the background. The 200 waits for the flush only so that a newly seen account is
        // remembered (a restart catches up on it).
        Decoded::KfNotice(n) => {
            if s.lifecycle.conversations.is_stopping() {
                count("unavailable");
                return ApiError::Unavailable("kefu is stopping".into()).into_response();
            }
            let taken = ch.is_some_and(|c| c.driver.notice(s, c, n));
            count(if taken { "notified" } else { "ignored" });
            if taken {
                if let Err(e) = s.app.commit.durable_with(ticket).await {
                    tracing::error!(error = %e, "flush failed; the platform will retry");
                    return ApiError::Unavailable(STORE_UNAVAILABLE.into()).into_response();
                }
            }
            StatusCode::OK.into_response()
        }
        Decoded::Message(m) if ch.is_some_and(|c| c.driver.skip(&m)) => {
            count("ignored");
            StatusCode::OK.into_response()
        }
        Decoded::Message(m) => match take_in(s, name, *m, ticket).await {
            Ok(outcome) => {
                count(outcome);
                StatusCode::OK.into_response()
            }
            Err((outcome, e)) => {
                count(outcome);
                e.into_response()
            }
        },
    }
}

/// Store a platform message (dedupe key + inbox entry, flushed) and queue it. `Ok` names
/// the outcome (`accepted` / `duplicate`); `Err` a 503 for the platform to retry, with its
/// outcome (`busy`: the queue is full; `unavailable`: the store failed or kefu is stopping).
async fn take_in(
    s: &AppState,
    name: &str,
    m: Inbound,
    ticket: Ticket,
) -> Result<&'static str, (&'static str, ApiError)> {
    let unavailable = |why: &str| ("unavailable", ApiError::Unavailable(why.to_string()));
    if s.lifecycle.conversations.is_stopping() {
        return Err(unavailable("kefu is stopping"));
    }
    let key = format!("{name}:{}", m.id);
    let conv = (m.channel.clone(), m.conversation.clone());
    // Room first: a full queue is refused before anything is written.
    let slot = s
        .platforms
        .queues
        .reserve(&conv, true, |parts| spawn_worker(s, parts))
        .map_err(|r| refusal(s, r))?;
    let health = s.app.commit.health();
    let unflushed = &s.platforms.unflushed;
    unflushed.hold(&key);
    let accepted = crate::store::watch(
        health,
        s.app
            .store
            .inbox_accept(&key, &m, s.app.clock.now_ms(), DEDUPE_TTL_MS),
    );
    let accepted = match accepted {
        Ok(accepted) => accepted,
        Err(e) => {
            unflushed.not_written(&key);
            return Err(("unavailable", e.into()));
        }
    };
    // A duplicate waits for a flush only while its first copy may not be on disk yet.
    if accepted.is_none() && !unflushed.duplicate_needs_flush(&key) {
        drop(ticket);
        return Ok("duplicate");
    }
    let durable = s.app.commit.durable_with(ticket).await;
    unflushed.flush_done(&key, accepted.is_some(), durable.is_ok());
    let outcome = match accepted {
        None => "duplicate",
        Some(inbox_id) => {
            // Handled even if the flush failed: it is written, and the platform's retry of
            // our 503 will be a duplicate of it.
            slot.send(Queued {
                inbox_id,
                message: m,
                replayed: false,
            });
            "accepted"
        }
    };
    durable.map_err(|e| {
        tracing::error!(error = %e, "flush failed; the platform will retry");
        unavailable(STORE_UNAVAILABLE)
    })?;
    Ok(outcome)
}

/// The 503 for a message its queue has no room for, with its outcome.
pub(super) fn refusal(s: &AppState, refused: Refused) -> (&'static str, ApiError) {
    match refused {
        Refused::Full => (
            "busy",
            ApiError::Unavailable(format!(
                "this conversation's queue is full ({} messages waiting); try again shortly",
                s.app.config.server.queue_per_conversation
            )),
        ),
        Refused::Stopping => (
            "unavailable",
            ApiError::Unavailable("kefu is stopping".into()),
        ),
    }
}

/// Start the worker of a new conversation queue; false when kefu is stopping.
pub(super) fn spawn_worker(s: &AppState, parts: WorkerParts) -> bool {
    let Some(task) = s.lifecycle.conversations.handle() else {
        return false;
    };
    tokio::spawn(worker(s.clone(), parts, task));
    true
}

/// Hand a stored message to its conversation's worker, whatever the queue's length.
fn enqueue_stored(s: &AppState, q: Queued) {
    let conv = (q.message.channel.clone(), q.message.conversation.clone());
    match s
        .platforms
        .queues
        .reserve(&conv, false, |parts| spawn_worker(s, parts))
    {
        Ok(slot) => {
            slot.send(q);
        }
        Err(_) => tracing::debug!("stopping; the message stays in the inbox"),
    }
}

/// One conversation's worker: its messages in order; gone when idle, or when kefu stops
/// (after the turn in hand; what is still queued stays in the inbox for the next start).
async fn worker(s: AppState, mut parts: WorkerParts, mut task: TaskHandle) {
    loop {
        let next = tokio::select! {
            biased;
            _ = task.stopped() => return,
            next = tokio::time::timeout(WORKER_IDLE, parts.rx.recv()) => next,
        };
        match next {
            Ok(Some(q)) => {
                handle(&s, q, &task).await;
                parts.depth.fetch_sub(1, Ordering::SeqCst);
            }
            Ok(None) => return,
            Err(_idle) => {
                if s.platforms.queues.retire_if_idle(&parts.conv, &parts.depth) {
                    return;
                }
            }
        }
    }
}

async fn handle(s: &AppState, q: Queued, task: &TaskHandle) {
    // A message kept for a channel no longer configured: answered, nowhere to send.
    let ch = s.platforms.registry.get(&q.message.channel).cloned();
    if q.replayed {
        let recorded = match &ch {
            Some(ch) => ch.driver.recorded(s, ch, &q.message).await,
            None => None,
        };
        if let Some(items) = recorded {
            // Handled before the last stop; only its answer was not queued.
            tracing::info!(channel = %q.message.channel, id = %q.message.id, "replayed message already handled; queueing its recorded answer");
            store_reply(s, &items, q.inbox_id, task).await;
            return;
        }
    }
    let mut wait = STORE_RETRY;
    let items = loop {
        let outcome = match &ch {
            Some(ch) => ch.driver.handle(s, ch, &q.message).await,
            None => s
                .app
                .engine
                .handle(q.message.clone())
                .await
                .map(|_| Vec::new()),
        };
        match outcome {
            Ok(items) => break items,
            // Nothing of the turn was stored (it is one write): try again, unless stopping;
            // then the message stays in the inbox for the next start.
            Err(e) => {
                tracing::error!(error = %e, channel = %q.message.channel, "turn failed; trying again");
                s.app.commit.health().failed(&e.to_string());
                if !pause(task, &mut wait).await {
                    return;
                }
            }
        }
    };
    store_reply(s, &items, q.inbox_id, task).await;
}

/// The default handling of a message: an engine turn, then its answer's outbox entries.
pub async fn turn(
    s: &AppState,
    ch: &Registered,
    m: &Inbound,
) -> Result<Vec<OutboxItem>, EngineError> {
    let turn = s.app.engine.handle(m.clone()).await?;
    Ok(ch
        .driver
        .answer(s, ch, m, &turn.reply, turn.handoff_started)
        .await)
}

/// Queue `items` and drop the inbox entry in one write, trying again while the store fails.
async fn store_reply(s: &AppState, items: &[OutboxItem], inbox_id: u64, task: &TaskHandle) {
    let mut wait = STORE_RETRY;
    loop {
        match s.platforms.outbox.push(items, Some(inbox_id)) {
            Ok(()) => return,
            Err(e) => {
                // Not handled again: the turn is recorded, and after a restart the replay
                // finds it (`Driver::recorded`).
                tracing::error!(error = %e, "outbox write failed; trying again");
                s.app.commit.health().failed(&e.to_string());
                if !pause(task, &mut wait).await {
                    return;
                }
            }
        }
    }
}

/// Sleep `wait` (doubling it for next time); false when kefu is stopping.
async fn pause(task: &TaskHandle, wait: &mut Duration) -> bool {
    let mut task = task.clone();
    tokio::select! {
        _ = task.stopped() => return false,
        _ = tokio::time::sleep(*wait) => {}
    }
    *wait = (*wait * 2).min(STORE_RETRY_MAX);
    true
}

/// A replayed message's turn, if it was recorded before the stop: the outbox entries of
/// its answer (the reply, and the handoff alert it started).
pub async fn recorded_answer(
    s: &AppState,
    ch: &Registered,
    m: &Inbound,
) -> Option<Vec<OutboxItem>> {
    let (reply, handoff_started) = recorded_turn(s, m)?;
    Some(ch.driver.answer(s, ch, m, &reply, handoff_started).await)
}

/// A replayed message's recorded turn: its bot reply (empty when the bot stayed silent)
/// and whether it started a handoff. `None`: the message was not recorded.
pub fn recorded_turn(s: &AppState, m: &Inbound) -> Option<(String, bool)> {
    let store = &s.app.store;
    let conv = store.conversation(&m.channel, &m.conversation).ok()??;
    let after = conv.next_seq.saturating_sub(REPLAY_LOOKBACK + 1);
    let recent = store
        .messages(
            &m.channel,
            &m.conversation,
            after,
            REPLAY_LOOKBACK as usize + 1,
        )
        .ok()?;
    let at = recent
        .iter()
        .position(|x| x.role == Role::User && x.platform_id.as_deref() == Some(m.id.as_str()))?;
    // The bot's answer is the next message of the same turn; none means the bot stayed
    // silent (a human owns the conversation).
    let answer = recent
        .get(at + 1)
        .filter(|x| x.role == Role::Bot && x.seq == recent[at].seq + 1);
    Some(match answer {
        Some(bot) => (
            bot.text.clone(),
            conv.handoff
                .as_ref()
                .is_some_and(|h| h.active && h.since_ms == bot.at_ms),
        ),
        None => (String::new(), false),
    })
}

/// Whether anything of `m` was recorded in its conversation (by its platform id, any
/// role): for messages handled without a turn (a servicer's message, an event).
pub fn recorded_at_all(s: &AppState, m: &Inbound) -> bool {
    let store = &s.app.store;
    let Ok(Some(conv)) = store.conversation(&m.channel, &m.conversation) else {
        return false;
    };
    let after = conv.next_seq.saturating_sub(REPLAY_LOOKBACK + 1);
    store
        .messages(
            &m.channel,
            &m.conversation,
            after,
            REPLAY_LOOKBACK as usize + 1,
        )
        .is_ok_and(|recent| {
            recent
                .iter()
                .any(|x| x.platform_id.as_deref() == Some(m.id.as_str()))
        })
}

/// The outbox entries of a turn's reply on the customer's channel, and of the agents'
/// alert when the turn started a handoff.
pub async fn answer_items(
    s: &AppState,
    ch: &Registered,
    m: &Inbound,
    reply: &str,
    handoff_started: bool,
) -> Vec<OutboxItem> {
    let mut items = Vec::new();
    if !reply.is_empty() {
        // A reply that cannot go out is logged where that is found; the customer's message
        // is stored.
        items = ch
            .driver
            .send(
                s,
                ch,
                Reply {
                    conversation: &m.conversation,
                    kind: m.kind,
                    user: &m.user,
                    route: &m.route,
                    text: reply,
                    id: format!("turn:{}", m.id),
                    message: None,
                },
            )
            .await
            .unwrap_or_default();
    }
    if handoff_started {
        items.extend(notify_items(s, &m.channel, &m.conversation));
    }
    items
}

/// Encode `reply` with the channel's codec into outbox entries: what most channels do.
/// `Err` says why it cannot go out.
pub fn encoded_items(
    s: &AppState,
    ch: &Registered,
    reply: &Reply<'_>,
) -> Result<Vec<OutboxItem>, String> {
    let Some(codec) = ch.codec.as_ref() else {
        return Err(format!("channel {} has no way to send messages", ch.name));
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
            Ok(s.platforms
                .outbox
                .items(&ch.name, reply.conversation, reply.message, calls))
        }
        Err(e) => {
            tracing::error!(error = %e, channel = %ch.name, "reply cannot be encoded");
            Err(format!("cannot be encoded for {}: {e}", ch.name))
        }
    }
}

/// The handoff summary for every `handoff.notify` target.
pub fn notify_items(s: &AppState, channel: &str, conversation: &str) -> Vec<OutboxItem> {
    if s.app.config.handoff.notify.is_empty() {
        return Vec::new();
    }
    let conv = match s.app.store.conversation(channel, conversation) {
        Ok(Some(c)) => c,
        _ => return Vec::new(),
    };
    let Some(h) = conv.handoff.as_ref() else {
        return Vec::new();
    };
    let mut text = format!(
        "[kefu] conversation {channel}/{conversation} needs a human ({})\n{}",
        h.reason, h.summary
    );
    if let Some(link) = console_link(s, channel, conversation) {
        text.push_str(&format!("\n{link}"));
    }
    alert_items(s, &text)
}

/// The outbox entries that post `text` to every `handoff.notify` target.
pub fn alert_items(s: &AppState, text: &str) -> Vec<OutboxItem> {
    s.app
        .config
        .handoff
        .notify
        .iter()
        .flat_map(|t| {
            let calls = crate::delivery::notify_calls(text);
            s.platforms.outbox.items(
                t,
                "notify",
                None,
                calls.into_iter().map(|c| (c, vec![])).collect(),
            )
        })
        .collect()
}

/// Post `text` to every `handoff.notify` target now (not tied to a message's answer).
pub fn alert_agents(s: &AppState, text: &str) {
    let items = alert_items(s, text);
    if items.is_empty() {
        return;
    }
    if let Err(e) = s.platforms.outbox.push(&items, None) {
        tracing::error!(error = %e, "notify write failed");
    }
}

/// Post the handoff summary to every `handoff.notify` target (a web handoff: the widget's
/// turn has no inbox entry to answer), with a link that opens the conversation in the agent
/// console when `server.public_url` is set.
pub fn notify_agents(s: &AppState, channel: &str, conversation: &str) {
    let items = notify_items(s, channel, conversation);
    if items.is_empty() {
        return;
    }
    if let Err(e) = s.platforms.outbox.push(&items, None) {
        tracing::error!(error = %e, "notify write failed");
    }
}

/// `{server.public_url}/agent#/c/{channel}/{conversation}`, the console's deep link.
pub fn console_link(s: &AppState, channel: &str, conversation: &str) -> Option<String> {
    let base = s.app.config.server.public_url.as_deref()?;
    Some(format!(
        "{}/agent#/c/{}/{}",
        base.trim_end_matches('/'),
        percent_encode(channel),
        percent_encode(conversation)
    ))
}

/// RFC 3986 unreserved characters stay, every other byte is `%XX` (DingTalk conversation
/// ids are base64, with `+`, `/` and `=`); the console reads it with `decodeURIComponent`.
fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// An agent's message goes to the customer through the conversation's channel: the outbox
/// for platforms (its delivery state follows the outbox); the web widget fetches it (it is
/// `queued` until the widget has). A message that cannot go out is marked failed; `Err` is
/// a store failure (the caller answers 503).
pub async fn deliver_agent_message(
    s: &AppState,
    conv: &Conversation,
    msg: &crate::store::Message,
) -> crate::store::StoreResult<()> {
    if conv.kind == ChannelKind::Web {
        return Ok(());
    }
    let items = match s.platforms.registry.get(&conv.channel).cloned() {
        Some(ch) => {
            ch.driver
                .send(
                    s,
                    &ch,
                    Reply {
                        conversation: &conv.conversation,
                        kind: conv.kind,
                        user: &conv.user,
                        route: &conv.route,
                        text: &msg.text,
                        id: format!("agent:{}:{}", conv.conversation, msg.seq),
                        message: Some(msg.seq),
                    },
                )
                .await
        }
        None => Err(format!(
            "channel {} has no way to send messages",
            conv.channel
        )),
    };
    match items {
        Ok(items) => s.platforms.outbox.push(&items, None),
        Err(why) => {
            crate::delivery::record_delivery(
                s.app.store.as_ref(),
                s.app.engine.events(),
                &conv.channel,
                &conv.conversation,
                msg.seq,
                crate::store::Delivery {
                    state: crate::store::DeliveryState::Failed,
                    error: Some(why),
                    attempts: 0,
                    at_ms: s.app.clock.now_ms(),
                },
            );
            Ok(())
        }
    }
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
        Ok(entries) => {
            if !entries.is_empty() {
                tracing::info!(count = entries.len(), "replaying unanswered messages");
            }
            for e in entries {
                enqueue_stored(
                    s,
                    Queued {
                        inbox_id: e.id,
                        message: e.message,
                        replayed: true,
                    },
                );
            }
        }
        Err(e) => tracing::error!(error = %e, "inbox unreadable"),
    }
}

#[cfg(test)]
mod tests {
    use super::percent_encode;

    #[test]
    fn deep_link_parts_keep_only_unreserved_characters() {
        assert_eq!(percent_encode("support"), "support");
        assert_eq!(percent_encode("w-1.a_b~"), "w-1.a_b~");
        // DingTalk conversation ids are base64.
        assert_eq!(percent_encode("cidAb+c/d=="), "cidAb%2Bc%2Fd%3D%3D");
        assert_eq!(percent_encode("张 三#?"), "%E5%BC%A0%20%E4%B8%89%23%3F");
    }
}

#[cfg(test)]
mod unflushed_tests {
    use super::UnflushedKeys;

    #[test]
    fn a_duplicate_waits_only_while_the_first_copy_may_not_be_on_disk() {
        let keys = UnflushedKeys::default();
        // The writer holds the key until its flush succeeds.
        keys.hold("k");
        keys.hold("k");
        assert!(
            keys.duplicate_needs_flush("k"),
            "the writer has not flushed"
        );
        keys.flush_done("k", true, true);
        keys.hold("k");
        assert!(!keys.duplicate_needs_flush("k"), "flushed: answer at once");
        assert!(keys.0.lock().unwrap().is_empty(), "nothing left behind");
    }

    #[test]
    fn a_failed_flush_keeps_the_key_until_a_later_flush_succeeds() {
        let keys = UnflushedKeys::default();
        keys.hold("k");
        keys.flush_done("k", true, false);
        keys.hold("k");
        assert!(keys.duplicate_needs_flush("k"), "written, never flushed");
        keys.flush_done("k", false, false);
        keys.hold("k");
        assert!(keys.duplicate_needs_flush("k"), "still not on disk");
        keys.flush_done("k", false, true);
        keys.hold("k");
        assert!(!keys.duplicate_needs_flush("k"), "a later flush covered it");
    }

    #[test]
    fn a_write_that_failed_leaves_nothing_to_wait_for() {
        let keys = UnflushedKeys::default();
        keys.hold("k");
        keys.not_written("k");
        assert!(keys.0.lock().unwrap().is_empty());
    }
}
