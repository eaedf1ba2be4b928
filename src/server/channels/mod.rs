//! The channel registry ("Channels register once", ARCHITECTURE.md): every channel kind is
//! built here, once, from its config into what the rest of the server reads — its callback
//! route and codec, its outbox sender, and a [`Driver`] for its behaviour (how a queued
//! message is handled, how a reply is sent, which background tasks run). Routes, delivery
//! and start-up ask the registry; nothing else matches on channel kinds.
//!
//! | kind | callback | codec | sender | background |
//! | --- | --- | --- | --- | --- |
//! | `web` | — (`/api/chat`) | — | — | — |
//! | `wecom` | `/wecom/{name}` | [`adapters::wecom::WeCom`] | `message/send` (+ kf calls with `kf = true`) | kf sync with `kf = true` |
//! | `wecom_kf` | `/wecom/{name}` | [`adapters::wecom::kf::WeComKf`] | kf sender | kf sync |
//! | `dingtalk` | `/dingtalk/{name}` | [`adapters::dingtalk::DingTalk`] | sessionWebhook / OpenAPI | Stream client with `mode = "stream"` |

mod dingtalk;
pub mod kf;
mod web;
mod wecom;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, OnceLock, Weak};

use adapters::{Channel, ChannelKind, Inbound, KfNotice, UserRef};
use async_trait::async_trait;

use super::{platform, AppState};
use crate::clock::Clock;
use crate::config::{ChannelConfig, Config};
use crate::delivery::{Outbox, Sender};
use crate::engine::{Engine, EngineError};
use crate::lifecycle::TaskHandle;
use crate::store::{Conversation, OutboxItem, Store};

/// The URL family a channel's platform calls.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CallbackPath {
    /// `/wecom/{name}`: WeCom apps and WeCom kf.
    WeCom,
    /// `/dingtalk/{name}`.
    DingTalk,
}

/// One configured channel, as the server uses it.
pub struct Registered {
    pub name: String,
    pub kind: ChannelKind,
    pub callback: Option<CallbackPath>,
    /// Verifies and decodes the platform's requests.
    pub codec: Option<Arc<dyn Channel>>,
    /// Delivers this channel's outbox entries.
    pub sender: Option<Arc<dyn Sender>>,
    /// Replies may use markdown.
    pub markdown: bool,
    pub driver: Arc<dyn Driver>,
}

/// A reply on its way to a customer: a bot turn's answer or an agent's message.
pub struct Reply<'a> {
    pub conversation: &'a str,
    /// The conversation's kind (a WeCom app with `kf = true` carries kf conversations too).
    pub kind: ChannelKind,
    pub user: &'a UserRef,
    pub route: &'a BTreeMap<String, String>,
    pub text: &'a str,
    /// What the reply answers (`turn:{message id}`, `agent:{conversation}:{seq}`): platforms
    /// that refuse a repeated message id (WeCom kf) derive their ids from it.
    pub id: String,
    /// The agent message (its seq) this delivers: its delivery state follows the entries.
    pub message: Option<u64>,
}

/// What a channel kind does beyond decoding and sending. Every method has the behaviour
/// of a plain callback channel as its default.
///
/// Nothing here writes a reply to the outbox itself: the methods return the outbox entries,
/// and the caller stores them in one write with what they answer (a platform message's
/// inbox entry is removed in the same write, see `platform.rs`).
#[async_trait]
pub trait Driver: Send + Sync {
    /// Start the channel's background work, holding `task` (the intake group) until it ends;
    /// it ends when the group is told to stop.
    fn start(&self, _s: &AppState, _ch: &Arc<Registered>, _task: TaskHandle) {}

    /// A WeCom kf notification arrived on this channel's callback. False: not handled
    /// (the channel does not manage kf), answered like an ignored event.
    fn notice(&self, _s: &AppState, _ch: &Registered, _n: KfNotice) -> bool {
        false
    }

    /// An authentic message to drop before it is stored (a greeting switched off).
    fn skip(&self, _m: &Inbound) -> bool {
        false
    }

    /// Handle one stored message in its conversation's order (an engine turn by default);
    /// returns the outbox entries that answer it. `Err`: nothing of it was recorded, try
    /// again (the message stays in the inbox).
    async fn handle(
        &self,
        s: &AppState,
        ch: &Registered,
        m: &Inbound,
    ) -> Result<Vec<OutboxItem>, EngineError> {
        platform::turn(s, ch, m).await
    }

    /// A message replayed from the inbox at start: if its handling was recorded before the
    /// stop (only its answer was not queued), the entries of that answer; `None`: handle it.
    async fn recorded(
        &self,
        s: &AppState,
        ch: &Registered,
        m: &Inbound,
    ) -> Option<Vec<OutboxItem>> {
        platform::recorded_answer(s, ch, m).await
    }

    /// The outbox entries of a turn's answer: the reply to the customer, and the agents'
    /// alert when the turn started a handoff.
    async fn answer(
        &self,
        s: &AppState,
        ch: &Registered,
        m: &Inbound,
        reply: &str,
        handoff_started: bool,
    ) -> Vec<OutboxItem> {
        platform::answer_items(s, ch, m, reply, handoff_started).await
    }

    /// The outbox entries that deliver `reply`; `Err` says why it cannot go out.
    async fn send(
        &self,
        s: &AppState,
        ch: &Registered,
        reply: Reply<'_>,
    ) -> Result<Vec<OutboxItem>, String> {
        platform::encoded_items(s, ch, &reply)
    }

    /// The agent API handed `conv` back to the bot (released or closed).
    async fn released(&self, _s: &AppState, _ch: &Registered, _conv: &Conversation) {}
}

/// A channel with nothing beyond the defaults.
pub struct Plain;

impl Driver for Plain {}

/// What building a channel may use.
pub struct Context<'a> {
    pub config: &'a Config,
    pub http: &'a reqwest::Client,
    pub store: &'a Arc<dyn Store>,
    pub clock: &'a Arc<dyn Clock>,
    pub engine: &'a Arc<Engine>,
    /// The outbox, once built (it needs the senders built here first). Weak: the outbox
    /// owns the senders, which must not own it back.
    pub outbox: &'a Arc<OnceLock<Weak<Outbox>>>,
}

/// Every configured channel, by name.
pub struct Registry {
    by_name: HashMap<String, Arc<Registered>>,
}

impl Registry {
    /// Build every channel of `ctx.config`: the one place that matches on channel kinds.
    pub fn build(ctx: &Context<'_>) -> anyhow::Result<Registry> {
        let mut by_name = HashMap::new();
        for c in &ctx.config.channels {
            let registered = match c {
                ChannelConfig::Web(w) => web::register(w),
                ChannelConfig::WeCom(w) => wecom::register(w, ctx),
                ChannelConfig::WeComKf(k) => wecom::register_kf(k, ctx),
                ChannelConfig::DingTalk(d) => dingtalk::register(d, ctx),
            }
            .map_err(|e| anyhow::anyhow!("channel {}: {e}", c.name()))?;
            by_name.insert(c.name().to_string(), Arc::new(registered));
        }
        Ok(Registry { by_name })
    }

    pub fn get(&self, name: &str) -> Option<&Arc<Registered>> {
        self.by_name.get(name)
    }

    /// The channel `name` if the platform calling `path` may reach it (else 404).
    pub fn callback(&self, name: &str, path: CallbackPath) -> Option<&Arc<Registered>> {
        self.get(name).filter(|c| c.callback == Some(path))
    }

    pub fn all(&self) -> impl Iterator<Item = &Arc<Registered>> {
        self.by_name.values()
    }

    /// The outbox senders of the channels that have one, by channel name.
    pub fn senders(&self) -> HashMap<String, Arc<dyn Sender>> {
        self.by_name
            .iter()
            .filter_map(|(name, c)| Some((name.clone(), c.sender.clone()?)))
            .collect()
    }
}
