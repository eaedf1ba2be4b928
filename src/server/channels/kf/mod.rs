//! WeCom Customer Service (微信客服) in the server: pulling messages ([`sync`]), who wrote
//! what (customer → engine, servicer → transcript, events → session state), replies within
//! the platform's limits, and hand-over to the account's human servicers.
//!
//! Used by `kind = "wecom_kf"` channels and by WeCom apps with `kf = true` (mode B). Facts:
//! `shared/protocols/wecom-kf.md`.

mod journal;
pub mod sync;

use std::sync::Arc;

use adapters::wecom::kf::{
    fit, msgid, route, send, split_conversation, Origin, ServiceState, Transfer, TransferTo,
};
use adapters::{Inbound, KfNotice, Outbound};

use super::{Context, Registered, Reply};
use crate::config::KfSettings;
use crate::delivery::wecom::WeComApi;
use crate::delivery::wecom_kf::{load_session, save_session, KfSender, SessionRecord};
use crate::delivery::Sender;
use crate::engine::EngineError;
use crate::lifecycle::TaskHandle;
use crate::server::{platform, AppState};
use crate::store::{Conversation, OutboxItem, Role, Store};

/// At most this many `send_msg` after each customer message …
pub const QUOTA_MESSAGES: u32 = 5;
/// … within this long of it (wecom-kf.md §3).
pub const QUOTA_WINDOW_MS: u64 = 48 * 3600 * 1000;
/// A `welcome_code` is good for 20 s from the event; later tries only fail.
const WELCOME_CODE_LIFE_MS: u64 = 20_000;

/// The store key of a customer's send allowance.
pub fn quota_key(channel: &str, conversation: &str) -> String {
    format!("kf:{channel}:{conversation}")
}

/// One channel's kf accounts.
pub struct KfRuntime {
    channel: String,
    settings: KfSettings,
    api: Arc<WeComApi>,
    sender: Arc<KfSender>,
    store: Arc<dyn Store>,
    sync: sync::Accounts,
}

impl KfRuntime {
    pub fn new(channel: &str, settings: KfSettings, api: Arc<WeComApi>, ctx: &Context<'_>) -> Self {
        let journal = Arc::new(journal::EngineJournal {
            engine: ctx.engine.clone(),
            outbox: ctx.outbox.clone(),
            notify: ctx.config.handoff.notify.clone(),
        });
        KfRuntime {
            channel: channel.to_string(),
            sender: Arc::new(KfSender::new(api.clone(), ctx.store.clone(), journal)),
            sync: sync::Accounts::new(channel, settings.open_kfids.clone(), ctx.store.clone()),
            settings,
            api,
            store: ctx.store.clone(),
        }
    }

    pub fn sender(&self) -> Arc<dyn Sender> {
        self.sender.clone()
    }

    /// Catch up every known account (a crash or downtime may have left messages behind),
    /// then sync whenever notified (and every `poll_secs`, when set). The sync loops hold
    /// `task` (the intake group): they stop with it.
    pub fn start(self: &Arc<Self>, s: &AppState, _ch: &Arc<Registered>, task: TaskHandle) {
        sync::start(self, s, task);
    }

    /// A notification: sync the account it names (every account when it names none).
    pub fn notice(self: &Arc<Self>, s: &AppState, n: KfNotice) {
        sync::notice(self, s, n);
    }

    /// One pulled item, in its conversation's order; returns the outbox entries that
    /// answer it.
    pub async fn handle(
        &self,
        s: &AppState,
        ch: &Registered,
        m: &Inbound,
    ) -> Result<Vec<OutboxItem>, EngineError> {
        let engine = &s.app.engine;
        match Origin::of(&m.route) {
            Some(Origin::Servicer) => {
                // A human servicer answered in the WeCom client: the transcript keeps it,
                // the bot never answers it.
                let who = m.route.get(route::SERVICER).map(String::as_str);
                engine.record(m, Role::Agent, &m.text, who).await?;
                Ok(Vec::new())
            }
            Some(Origin::Event) => self.event(s, m).await,
            _ if m.route.contains_key(route::STALE) => {
                // Old backlog after a cold start: kept, not answered hours late.
                engine.record(m, Role::User, &m.text, None).await?;
                Ok(Vec::new())
            }
            _ => {
                self.recheck_handoff(s, m).await;
                let turn = engine.handle(m.clone()).await?;
                Ok(self
                    .answer(s, ch, m, &turn.reply, turn.handoff_started)
                    .await)
            }
        }
    }

    /// A replayed item whose handling was recorded before the stop: the entries of its
    /// answer. Customer messages as for any channel (their recorded turn); servicer
    /// messages, events and old backlog answer nothing, so recorded means done.
    pub async fn recorded(
        &self,
        s: &AppState,
        ch: &Registered,
        m: &Inbound,
    ) -> Option<Vec<OutboxItem>> {
        let customer = !matches!(
            Origin::of(&m.route),
            Some(Origin::Servicer) | Some(Origin::Event)
        ) && !m.route.contains_key(route::STALE);
        if customer {
            platform::recorded_answer(s, ch, m).await
        } else {
            platform::recorded_at_all(s, m).then(Vec::new)
        }
    }

    /// A turn's answer: with `platform_handoff`, a handoff moves the session to the
    /// account's servicers (the reply goes out as the transfer's notice); else as for any
    /// channel.
    pub async fn answer(
        &self,
        s: &AppState,
        ch: &Registered,
        m: &Inbound,
        reply: &str,
        handoff_started: bool,
    ) -> Vec<OutboxItem> {
        if handoff_started && self.settings.platform_handoff {
            let mut items = self.hand_over(s, m, reply);
            items.extend(platform::notify_items(s, &m.channel, &m.conversation));
            items
        } else {
            platform::answer_items(s, ch, m, reply, handoff_started).await
        }
    }

    /// A reply within the platform's limits: split at 2,048 bytes, at most what is left of
    /// the 5 messages allowed after the customer's last message (packed, or cut, to fit);
    /// what does not fit is reported to the agents. `Err` when nothing may be sent.
    pub async fn send(
        &self,
        s: &AppState,
        _ch: &Registered,
        reply: Reply<'_>,
    ) -> Result<Vec<OutboxItem>, String> {
        let needed = fit(reply.text, usize::MAX).parts.len() as u32;
        if needed == 0 {
            return Ok(Vec::new());
        }
        let key = quota_key(&self.channel, reply.conversation);
        let now = s.app.clock.now_ms();
        let granted =
            match self
                .store
                .quota_take(&key, now, needed, QUOTA_MESSAGES, QUOTA_WINDOW_MS)
            {
                Ok(g) => g,
                Err(e) => {
                    // The platform enforces the limit anyway (95001 is reported when it bites).
                    tracing::error!(error = %e, "kf quota unreadable; sending");
                    needed
                }
            };
        let mut r = reply.route.clone();
        r.insert(route::REPLY_ID.to_string(), reply.id.clone());
        let out = Outbound {
            channel: self.channel.clone(),
            conversation: reply.conversation.to_string(),
            user: reply.user.clone(),
            text: reply.text.to_string(),
            markdown: false,
            route: r,
        };
        let (calls, cut) =
            send::reply_calls(&self.channel, &out, granted as usize).map_err(|e| {
                tracing::error!(error = %e, channel = %self.channel, "kf reply cannot be encoded");
                format!("cannot be encoded for {}: {e}", self.channel)
            })?;
        let why = cut.then(|| {
            let what = if granted == 0 {
                "a reply was not sent".to_string()
            } else {
                format!("a reply was cut to {granted} message(s)")
            };
            format!(
                "{what}: WeCom allows {QUOTA_MESSAGES} messages within 48 h of the customer's last message"
            )
        });
        if let Some(why) = &why {
            s.app
                .metrics
                .inc("kefu_kf_replies_cut_total", &[("channel", &self.channel)]);
            platform::alert_agents(
                s,
                &format!("[kefu] {}/{}: {why}", self.channel, reply.conversation),
            );
            if let Err(e) = s
                .app
                .engine
                .platform_note(&self.channel, reply.conversation, why)
                .await
            {
                tracing::error!(error = %e, "cannot note a cut kf reply");
            }
        }
        if calls.is_empty() {
            return Err(why.unwrap_or_else(|| "nothing to send".into()));
        }
        let calls = calls.into_iter().map(|c| (c, vec![])).collect();
        Ok(s.platforms
            .outbox
            .items(&self.channel, reply.conversation, reply.message, calls))
    }

    /// The agent API handed the conversation back: a session kefu gave to the platform's
    /// servicers is ended (→ 4) so the customer's next message comes to the bot. The
    /// platform allows that from state 3 only; the sender reads and records a refusal.
    pub async fn released(&self, s: &AppState, _ch: &Registered, conv: &Conversation) {
        if !self.settings.platform_handoff {
            return;
        }
        let with_humans = load_session(self.store.as_ref(), &self.channel, &conv.conversation)
            .is_some_and(|r| r.state.with_humans());
        let Some((kfid, user)) = split_conversation(&conv.conversation) else {
            return;
        };
        if !with_humans {
            return;
        }
        let t = Transfer {
            open_kfid: kfid.to_string(),
            external_userid: user.to_string(),
            to: TransferTo::End,
            servicers: Vec::new(),
            notice: None,
            reply_id: format!("release:{}:{}", conv.conversation, conv.next_seq),
        };
        if let Err(e) =
            s.platforms
                .outbox
                .enqueue(&self.channel, &conv.conversation, vec![(t.call(), vec![])])
        {
            tracing::error!(error = %e, "outbox write failed; kf session not ended");
        }
    }

    /// The engine handed the customer to a person: move the session to the account's
    /// servicers. The transfer line goes out with the transfer's `msg_code` (the API can no
    /// longer `send_msg` once a person owns the session); if the transfer fails for good it
    /// goes out as a plain message instead.
    fn hand_over(&self, s: &AppState, m: &Inbound, notice: &str) -> Vec<OutboxItem> {
        let Some((kfid, user)) = split_conversation(&m.conversation) else {
            return Vec::new();
        };
        let reply_id = format!("turn:{}", m.id);
        let t = Transfer {
            open_kfid: kfid.to_string(),
            external_userid: user.to_string(),
            to: TransferTo::Human,
            servicers: self.settings.human_servicers.clone(),
            notice: (!notice.trim().is_empty()).then(|| notice.to_string()),
            reply_id: reply_id.clone(),
        };
        let mut r = m.route.clone();
        r.insert(route::REPLY_ID.to_string(), reply_id);
        let plain = Outbound {
            channel: self.channel.clone(),
            conversation: m.conversation.clone(),
            user: m.user.clone(),
            text: notice.to_string(),
            markdown: false,
            route: r,
        };
        let fallback = send::reply_calls(&self.channel, &plain, 1)
            .map(|(calls, _)| calls)
            .unwrap_or_default();
        s.platforms.outbox.items(
            &self.channel,
            &m.conversation,
            None,
            vec![(t.call(), fallback)],
        )
    }

    /// The engine thinks a person owns this conversation, and kefu gave it to the
    /// platform's servicers: if the platform says otherwise (the session ended and an event
    /// was missed), the bot takes the customer back.
    async fn recheck_handoff(&self, s: &AppState, m: &Inbound) {
        if !self.settings.platform_handoff {
            return;
        }
        let handed_off = matches!(
            s.app.store.conversation(&m.channel, &m.conversation),
            Ok(Some(c)) if c.handed_off()
        );
        let ours = load_session(self.store.as_ref(), &self.channel, &m.conversation)
            .is_some_and(|r| r.state.with_humans());
        if !handed_off || !ours {
            return;
        }
        let Some((kfid, user)) = split_conversation(&m.conversation) else {
            return;
        };
        if let Some((state, servicer)) = self.sender.read_state(kfid, user).await {
            self.remember(
                &m.conversation,
                state,
                servicer.clone(),
                s.app.clock.now_ms(),
            );
            if !state.with_humans() {
                let why = format!(
                    "the platform says the session is no longer with a servicer (state {}): the bot answers again",
                    state.code()
                );
                if let Err(e) = s
                    .app
                    .engine
                    .handed_back(&m.channel, &m.conversation, &why)
                    .await
                {
                    tracing::error!(error = %e, "cannot hand a kf conversation back");
                }
            }
        }
    }

    fn remember(
        &self,
        conversation: &str,
        state: ServiceState,
        servicer: Option<String>,
        at_ms: u64,
    ) {
        save_session(
            self.store.as_ref(),
            &self.channel,
            conversation,
            &SessionRecord {
                state,
                servicer,
                at_ms,
            },
        );
    }

    /// An event about one customer's session (origin 4).
    async fn event(&self, s: &AppState, m: &Inbound) -> Result<Vec<OutboxItem>, EngineError> {
        let mut items = Vec::new();
        let engine = &s.app.engine;
        let now = s.app.clock.now_ms();
        let r = &m.route;
        let get = |k: &str| r.get(k).map(String::as_str).filter(|v| !v.is_empty());
        let event = get(route::EVENT_TYPE).unwrap_or("unknown");
        match event {
            "enter_session" => {
                let scene = get("scene").unwrap_or("-");
                engine
                    .record(
                        m,
                        Role::System,
                        &format!("[enter_session] scene {scene}"),
                        None,
                    )
                    .await?;
                let fresh = now.saturating_sub(m.sent_at_ms) <= WELCOME_CODE_LIFE_MS;
                if let (true, true, Some(code)) =
                    (self.settings.welcome, fresh, get("welcome_code"))
                {
                    // WeChat customers: Chinese unless they wrote otherwise before.
                    let zh = s
                        .app
                        .store
                        .conversation(&m.channel, &m.conversation)
                        .ok()
                        .flatten()
                        .filter(|c| c.next_seq > 2)
                        .is_none_or(|c| c.zh);
                    let text = s.app.config.replies.greeting.get(zh);
                    let id = msgid(&self.channel, &format!("welcome:{}", m.id), 0);
                    let call = send::on_event_call(code, Some(&id), text);
                    // Queued with the removal of the event's inbox entry, in one write.
                    engine.record(m, Role::Bot, text, None).await?;
                    items = s.platforms.outbox.items(
                        &self.channel,
                        &m.conversation,
                        None,
                        vec![(call, vec![])],
                    );
                }
            }
            "session_status_change" => {
                let change = get("change_type").unwrap_or("?");
                let new = get("new_servicer_userid");
                let text = match change {
                    "1" => format!(
                        "a servicer picked the session from the queue ({})",
                        new.unwrap_or("?")
                    ),
                    "2" => format!("the session was transferred to {}", new.unwrap_or("?")),
                    "3" => format!(
                        "{} ended the session",
                        get("old_servicer_userid").unwrap_or("the servicer")
                    ),
                    "4" => format!("{} reopened the session", new.unwrap_or("a servicer")),
                    other => format!("session_status_change {other}"),
                };
                engine
                    .record(
                        m,
                        Role::System,
                        &format!("[session_status_change] {text}"),
                        None,
                    )
                    .await?;
                if change == "3" {
                    self.remember(&m.conversation, ServiceState::Ended, None, now);
                    engine
                        .handed_back(
                            &m.channel,
                            &m.conversation,
                            "the bot answers the customer's next message",
                        )
                        .await?;
                } else if matches!(change, "1" | "2" | "4") {
                    self.remember(
                        &m.conversation,
                        ServiceState::Human,
                        new.map(str::to_string),
                        now,
                    );
                    engine
                        .taken_over(
                            &m.channel,
                            &m.conversation,
                            new,
                            &format!("a servicer owns the session: {text}"),
                        )
                        .await?;
                }
            }
            "msg_send_fail" => {
                let id = get("fail_msgid").unwrap_or("?");
                let why = fail_type(get("fail_type").unwrap_or(""));
                engine
                    .record(
                        m,
                        Role::System,
                        &format!("[msg_send_fail] reply {id} was not delivered: {why}"),
                        None,
                    )
                    .await?;
                s.app
                    .metrics
                    .inc("kefu_kf_send_failures_total", &[("channel", &self.channel)]);
            }
            other => {
                // user_recall_msg, servicer_recall_msg, reject_customer_msg_switch_change, …
                let fields: Vec<String> = r
                    .iter()
                    .filter(|(k, _)| {
                        !matches!(
                            k.as_str(),
                            route::MSGID
                                | route::ORIGIN
                                | route::EVENT_TYPE
                                | route::OPEN_KFID
                                | route::EXTERNAL_USERID
                        )
                    })
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect();
                engine
                    .record(
                        m,
                        Role::System,
                        &format!("[{other}] {}", fields.join(" ")),
                        None,
                    )
                    .await?;
            }
        }
        Ok(items)
    }

    fn channel(&self) -> &str {
        &self.channel
    }

    fn api(&self) -> &WeComApi {
        &self.api
    }
}

/// `msg_send_fail.fail_type` in words (wecom-kf.md §2).
fn fail_type(code: &str) -> String {
    let why = match code {
        "1" => "the kf account was deleted",
        "2" => "the app was closed",
        "4" => "the session expired (more than 48 h)",
        "5" => "the session was closed",
        "6" => "over the 5-message limit",
        "7" | "8" | "9" => "a WeChat Channels / verification restriction",
        "10" => "the customer refuses messages",
        "11" => "no member is logged into the WeCom app",
        "12" => "the message type is not allowed here",
        "13" => "a security restriction",
        _ => "unknown reason",
    };
    format!("{why} (fail_type {code})")
}
