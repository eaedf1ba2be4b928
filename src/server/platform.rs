//! WeCom and DingTalk callbacks: verify and decode through the channel's codec, answer at
//! once, then handle the turn in the background and deliver through the outbox.
//!
//! A message is written to the inbox before the 200 goes out and removed after its reply is
//! queued, so a crash in between loses nothing (`serve` replays the inbox on start). The
//! dedupe key is remembered for a day, also across restarts: a platform retry after a
//! restart is still recognized.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use adapters::{Channel, ChannelKind, Decoded, Inbound, Outbound};

use axum::extract::{Path, Request, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};

use tokio::sync::mpsc;

use super::error::read_body;
use super::{ApiError, AppState};
use crate::config::{ChannelConfig, Config};
use crate::delivery::Outbox;
use crate::engine::Turn;
use crate::store::Conversation;

/// Largest callback body accepted (WeCom and DingTalk send a few KB).
const MAX_CALLBACK_BYTES: usize = 256 * 1024;
/// How long a message id is remembered for dedupe.
const DEDUPE_TTL_MS: u64 = 24 * 3600 * 1000;
/// A conversation's worker exits after this long without messages.
const WORKER_IDLE: Duration = Duration::from_secs(60);

/// The platform channels, their outbox and the per-conversation queues.
pub struct Platforms {
    pub channels: HashMap<String, Arc<dyn Channel>>,
    /// Channel name → send replies as markdown.
    pub markdown: HashMap<String, bool>,
    /// WeCom channels with `greet_on_enter = false`.
    no_greeting: std::collections::HashSet<String>,
    pub outbox: Arc<Outbox>,
    queues: Mutex<HashMap<ConversationKey, Queue>>,
}

/// `(channel, conversation)`.
type ConversationKey = (String, String);
/// A conversation's waiting messages, each with its dedupe/inbox key.
type Queue = mpsc::UnboundedSender<(String, Inbound)>;

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
            queues: Mutex::new(HashMap::new()),
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
    match s.app.engine.handle(m.clone()).await {
        Ok(turn) => {
            deliver_turn(s, &m, &turn);
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

/// Queue the turn's reply on the customer's channel, and alert agents on a new handoff.
pub fn deliver_turn(s: &AppState, m: &Inbound, turn: &Turn) {
    if !turn.reply.is_empty() {
        // Failures are logged where they happen; the customer's message stays stored.
        let _ = send_text(
            s,
            &m.channel,
            &m.conversation,
            &m.user,
            &m.route,
            &turn.reply,
            None,
        );
    }
    if turn.handoff_started {
        notify_agents(s, &m.channel, &m.conversation);
    }
}

/// Queue `text` for the customer on their channel; `message` is the agent message it
/// delivers, if any. `Err` says why it cannot go out.
fn send_text(
    s: &AppState,
    channel: &str,
    conversation: &str,
    user: &adapters::UserRef,
    route: &std::collections::BTreeMap<String, String>,
    text: &str,
    message: Option<u64>,
) -> Result<(), String> {
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
            s.platforms
                .outbox
                .enqueue_message(channel, conversation, message, calls)
                .map_err(|e| {
                    tracing::error!(error = %e, "outbox write failed; reply lost");
                    "the outbox could not store it".to_string()
                })
        }
        Err(e) => {
            tracing::error!(error = %e, channel, "reply cannot be encoded");
            Err(format!("cannot be encoded for {channel}: {e}"))
        }
    }
}

/// Post the handoff summary to every `handoff.notify` target, with a link that opens the
/// conversation in the agent console when `server.public_url` is set.
pub fn notify_agents(s: &AppState, channel: &str, conversation: &str) {
    let targets = &s.app.config.handoff.notify;
    if targets.is_empty() {
        return;
    }
    let conv = match s.app.store.conversation(channel, conversation) {
        Ok(Some(c)) => c,
        _ => return,
    };
    let Some(h) = conv.handoff.as_ref() else {
        return;
    };
    let mut text = format!(
        "[kefu] conversation {channel}/{conversation} needs a human ({})\n{}",
        h.reason, h.summary
    );
    if let Some(link) = console_link(s, channel, conversation) {
        text.push_str(&format!("\n{link}"));
    }
    for t in targets {
        let calls = crate::delivery::notify_calls(&text);
        if let Err(e) = s.platforms.outbox.enqueue(
            t,
            "notify",
            calls.into_iter().map(|c| (c, vec![])).collect(),
        ) {
            tracing::error!(error = %e, target = %t, "notify write failed");
        }
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
/// `queued` until the widget has). A message that cannot go out is marked failed.
pub fn deliver_agent_message(s: &AppState, conv: &Conversation, msg: &crate::store::Message) {
    if conv.kind == adapters::ChannelKind::Web {
        return;
    }
    let sent = send_text(
        s,
        &conv.channel,
        &conv.conversation,
        &conv.user,
        &conv.route,
        &msg.text,
        Some(msg.seq),
    );
    if let Err(why) = sent {
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
