//! WeCom and DingTalk callbacks: verify and decode through the channel's codec, store, answer,
//! then handle the turn in the background and deliver through the outbox.
//!
//! Acknowledged means durable: a message's dedupe key and inbox entry are written in one
//! step and flushed (group commit) before the 200 goes out; a write or flush that fails
//! answers 503 and the platform retries. The inbox entry goes in the same write that queues
//! the reply, so a crash anywhere loses nothing and answers nothing twice: `serve` replays
//! the inbox on start, and a replayed message whose turn was already recorded gets that
//! turn's reply instead of a second turn. The dedupe key is remembered for a day, across
//! restarts too.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use adapters::{Channel, ChannelKind, Decoded, Inbound, Outbound};

use axum::extract::{Path, Request, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};

use super::error::{read_body, STORE_UNAVAILABLE};
use super::queues::{Queued, Queues, Refused, WorkerParts};
use super::{ApiError, AppState};
use crate::config::{ChannelConfig, Config};
use crate::delivery::Outbox;
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

/// The platform channels, their outbox and the per-conversation queues.
pub struct Platforms {
    pub channels: HashMap<String, Arc<dyn Channel>>,
    /// Channel name → send replies as markdown.
    pub markdown: HashMap<String, bool>,
    /// WeCom channels with `greet_on_enter = false`.
    no_greeting: std::collections::HashSet<String>,
    pub outbox: Arc<Outbox>,
    pub queues: Queues,
}

impl Platforms {
    pub fn new(config: &Config, outbox: Arc<Outbox>) -> anyhow::Result<Self> {
        let mut channels: HashMap<String, Arc<dyn Channel>> = HashMap::new();
        let mut markdown = HashMap::new();
        let mut no_greeting = std::collections::HashSet::new();
        for c in &config.channels {
            let ch: Arc<dyn Channel> = match c {
                ChannelConfig::Web(_) => continue,
                ChannelConfig::WeCom(w) => {
                    markdown.insert(w.name.clone(), w.markdown);
                    if !w.greet_on_enter {
                        no_greeting.insert(w.name.clone());
                    }
                    Arc::new(
                        adapters::wecom::WeCom::new(adapters::wecom::WeComParams {
                            name: w.name.clone(),
                            corp_id: w.corp_id.clone(),
                            agent_id: w.agent_id,
                            token: w.token.clone(),
                            encoding_aes_key: w.encoding_aes_key.clone(),
                        })
                        .map_err(|e| anyhow::anyhow!("channel {}: {e}", w.name))?
                        .with_markdown(w.markdown)
                        .with_timestamp_window(
                            (w.timestamp_window_ms > 0)
                                .then(|| Duration::from_millis(w.timestamp_window_ms)),
                        ),
                    )
                }
                ChannelConfig::DingTalk(d) => {
                    markdown.insert(d.name.clone(), d.markdown);
                    Arc::new(
                        adapters::dingtalk::DingTalk::new(adapters::dingtalk::DingTalkParams {
                            name: d.name.clone(),
                            app_key: d.app_key.clone(),
                            app_secret: d.app_secret.clone(),
                            robot_code: d.robot_code.clone(),
                        })
                        .map_err(|e| anyhow::anyhow!("channel {}: {e}", d.name))?
                        .with_webhook_hosts(
                            adapters::HostAllowlist::new(d.webhook_hosts(&config.server)).map_err(
                                |e| {
                                    anyhow::anyhow!(
                                        "channel {}: allowed_webhook_hosts: {e}",
                                        d.name
                                    )
                                },
                            )?,
                        ),
                    )
                }
            };
            channels.insert(c.name().to_string(), ch);
        }
        Ok(Platforms {
            channels,
            markdown,
            no_greeting,
            outbox,
            queues: Queues::new(config.server.queue_per_conversation),
        })
    }

    fn channel(&self, name: &str, kind: ChannelKind) -> Result<&Arc<dyn Channel>, ApiError> {
        self.channels
            .get(name)
            .filter(|c| c.kind() == kind)
            .ok_or_else(|| ApiError::UnknownChannel(name.to_string()))
    }
}

pub async fn wecom(
    State(s): State<AppState>,
    Path(name): Path<String>,
    req: Request,
) -> Result<Response, ApiError> {
    callback(s, name, ChannelKind::WeCom, req).await
}

pub async fn dingtalk(
    State(s): State<AppState>,
    Path(name): Path<String>,
    req: Request,
) -> Result<Response, ApiError> {
    callback(s, name, ChannelKind::DingTalk, req).await
}

async fn callback(
    s: AppState,
    name: String,
    kind: ChannelKind,
    req: Request,
) -> Result<Response, ApiError> {
    let ch = s.platforms.channel(&name, kind)?.clone();
    let (parts, body) = req.into_parts();
    let bytes = read_body(body, MAX_CALLBACK_BYTES).await?;
    // From here to its 200 this callback takes microseconds: a flush may wait for it.
    let ticket = s.app.commit.ticket();
    let req = http::Request::from_parts(parts, bytes);
    let decoded = match ch.decode(&req, s.app.clock.now()) {
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
    if kind == ChannelKind::DingTalk {
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
        Decoded::Message(m)
            if matches!(&m.content, adapters::ContentKind::Event(e) if e == "enter_agent" || e == "subscribe")
                && s.platforms.no_greeting.contains(name) =>
        {
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
    let accepted = crate::store::watch(
        health,
        s.app
            .store
            .inbox_accept(&key, &m, s.app.clock.now_ms(), DEDUPE_TTL_MS),
    )
    .map_err(|e| ("unavailable", e.into()))?;
    // A duplicate waits for the flush too: the first copy may not be on disk yet.
    let durable = s.app.commit.durable_with(ticket).await;
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
    if q.replayed {
        if let Some(items) = recorded_reply(s, &q.message) {
            // The turn was recorded before the last stop; only its reply was not queued.
            tracing::info!(channel = %q.message.channel, id = %q.message.id, "replayed message already answered; queueing the recorded reply");
            store_reply(s, &items, q.inbox_id, task).await;
            return;
        }
    }
    let mut wait = STORE_RETRY;
    let turn = loop {
        match s.app.engine.handle(q.message.clone()).await {
            Ok(turn) => break turn,
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
    let items = reply_items(s, &q.message, &turn.reply, turn.handoff_started);
    store_reply(s, &items, q.inbox_id, task).await;
}

/// Queue `items` and drop the inbox entry in one write, trying again while the store fails.
async fn store_reply(s: &AppState, items: &[OutboxItem], inbox_id: u64, task: &TaskHandle) {
    let mut wait = STORE_RETRY;
    loop {
        match s.platforms.outbox.push(items, Some(inbox_id)) {
            Ok(()) => return,
            Err(e) => {
                // Not handled again: the turn is recorded, and after a restart the replay
                // finds it (`recorded_reply`).
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
/// its reply (and of the handoff alert it started).
fn recorded_reply(s: &AppState, m: &Inbound) -> Option<Vec<OutboxItem>> {
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
    let (reply, handoff_started) = match answer {
        Some(bot) => (
            bot.text.clone(),
            conv.handoff
                .as_ref()
                .is_some_and(|h| h.active && h.since_ms == bot.at_ms),
        ),
        None => (String::new(), false),
    };
    Some(reply_items(s, m, &reply, handoff_started))
}

/// The outbox entries of a turn's reply on the customer's channel, and of the agents'
/// alert when the turn started a handoff.
fn reply_items(s: &AppState, m: &Inbound, reply: &str, handoff_started: bool) -> Vec<OutboxItem> {
    let mut items = Vec::new();
    if !reply.is_empty() {
        // An encoding failure is logged where it happens; the customer's message is stored.
        items = text_items(
            s,
            &m.channel,
            &m.conversation,
            &m.user,
            &m.route,
            reply,
            None,
        )
        .unwrap_or_default();
    }
    if handoff_started {
        items.extend(notify_items(s, &m.channel, &m.conversation));
    }
    items
}

/// The outbox entries that deliver `text` to the customer on their channel; `message` is the
/// agent message they deliver, if any. `Err` says why it cannot go out.
fn text_items(
    s: &AppState,
    channel: &str,
    conversation: &str,
    user: &adapters::UserRef,
    route: &std::collections::BTreeMap<String, String>,
    text: &str,
    message: Option<u64>,
) -> Result<Vec<OutboxItem>, String> {
    let Some(ch) = s.platforms.channels.get(channel) else {
        return Err(format!("channel {channel} has no way to send messages"));
    };
    let out = Outbound {
        channel: channel.to_string(),
        conversation: conversation.to_string(),
        user: user.clone(),
        text: text.to_string(),
        markdown: s.platforms.markdown.get(channel).copied().unwrap_or(false),
        route: route.clone(),
    };
    let mut rng = rand::thread_rng();
    match ch.encode(&out, s.app.clock.now(), &mut rng) {
        Ok(calls) => {
            let calls = calls
                .into_iter()
                .map(|c| {
                    let fb = ch.fallback(&out, &c);
                    (c, fb)
                })
                .collect();
            Ok(s.platforms
                .outbox
                .items(channel, conversation, message, calls))
        }
        Err(e) => {
            tracing::error!(error = %e, channel, "reply cannot be encoded");
            Err(format!("cannot be encoded for {channel}: {e}"))
        }
    }
}

/// The handoff summary for every `handoff.notify` target.
fn notify_items(s: &AppState, channel: &str, conversation: &str) -> Vec<OutboxItem> {
    let targets = &s.app.config.handoff.notify;
    if targets.is_empty() {
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
    targets
        .iter()
        .flat_map(|t| {
            let calls = crate::delivery::notify_calls(&text);
            s.platforms.outbox.items(
                t,
                "notify",
                None,
                calls.into_iter().map(|c| (c, vec![])).collect(),
            )
        })
        .collect()
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
pub fn deliver_agent_message(
    s: &AppState,
    conv: &Conversation,
    msg: &crate::store::Message,
) -> crate::store::StoreResult<()> {
    if conv.kind == adapters::ChannelKind::Web {
        return Ok(());
    }
    let items = text_items(
        s,
        &conv.channel,
        &conv.conversation,
        &conv.user,
        &conv.route,
        &msg.text,
        Some(msg.seq),
    );
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
