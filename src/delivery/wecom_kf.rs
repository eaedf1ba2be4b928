//! The WeCom kf sender: delivers what the kf channel queues in the outbox.
//!
//! | queued call | what happens |
//! | --- | --- |
//! | `kf/send_msg` | sent with the channel's token; 0 → sent |
//! | … errcode 95018 / 95002 (state or 48 h window closed) | `service_state/get`, recorded, reported; dropped, never retried blindly |
//! | … errcode 95001 (5-message quota used up) | reported; dropped |
//! | … sent again after a crash cut it off, refused for another reason (a repeated `msgid`) | delivered: the first send got through ([`Sender::resend`]) |
//! | `kf/send_msg_on_event` (welcome) | sent; a refused code (used, or past its 20 s) is logged and dropped |
//! | `kf/service_state/trans` ([`Transfer`]) | a plan, not a request: `servicer/list` → `trans` to 3 with the first receiving preferred servicer, else to 2 → the notice with the returned `msg_code`; or `trans` to 4 to end the session |
//! | anything else | as for WeCom apps (token refresh, -1 / 45009 retried, other errcodes dropped) |
//!
//! Facts: `shared/protocols/wecom-kf.md` §3–§6. "Dropped" means `Permanent`: the outbox then
//! sends the entry's fallback (a transfer's notice as a plain message) or drops it.

use std::sync::Arc;

use adapters::wecom::kf::session::{
    servicer_list_path, state_get_body, trans_body, ServicerList, StateReply, TransReply,
};
use adapters::wecom::kf::{
    self, choose_servicer, conversation_key, msgid, send, ServiceState, Transfer, TransferTo,
};
use adapters::Call;
use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use super::wecom_api::{classify, WeComApi};
use super::{SendError, Sender};
use crate::store::Store;

/// What the platform last said about a kf session, kept per conversation.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionRecord {
    pub state: ServiceState,
    #[serde(default)]
    pub servicer: Option<String>,
    pub at_ms: u64,
}

/// Store key of a conversation's [`SessionRecord`].
pub fn session_key(channel: &str, conversation: &str) -> String {
    format!("kf_session:{channel}:{conversation}")
}

pub fn load_session(store: &dyn Store, channel: &str, conversation: &str) -> Option<SessionRecord> {
    let bytes = store.kv_get(&session_key(channel, conversation)).ok()??;
    serde_json::from_slice(&bytes).ok()
}

pub fn save_session(store: &dyn Store, channel: &str, conversation: &str, r: &SessionRecord) {
    let json = serde_json::to_vec(r).unwrap_or_default();
    if let Err(e) = store.kv_put(&session_key(channel, conversation), &json) {
        tracing::warn!(channel, error = %e, "cannot store the kf session state");
    }
}

/// What the sender learned about a conversation, for the transcript and the agents.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SessionUpdate {
    /// A reply did not reach the customer.
    Undelivered { why: String },
    /// The platform's state of the session (read after a refusal, or set by a transfer).
    State {
        state: ServiceState,
        servicer: Option<String>,
        why: String,
    },
}

/// Where the sender reports [`SessionUpdate`]s (the server writes them into the
/// conversation through the engine).
#[async_trait]
pub trait KfJournal: Send + Sync {
    async fn update(&self, channel: &str, conversation: &str, update: SessionUpdate);
}

pub struct KfSender {
    api: Arc<WeComApi>,
    store: Arc<dyn Store>,
    journal: Arc<dyn KfJournal>,
}

/// A kf call's target, read from its body.
#[derive(Deserialize)]
struct Target {
    #[serde(default)]
    touser: String,
    #[serde(default)]
    open_kfid: String,
}

impl KfSender {
    pub fn new(api: Arc<WeComApi>, store: Arc<dyn Store>, journal: Arc<dyn KfJournal>) -> Self {
        KfSender {
            api,
            store,
            journal,
        }
    }

    fn channel(&self) -> &str {
        self.api.name()
    }

    async fn record(
        &self,
        conversation: &str,
        state: ServiceState,
        servicer: Option<String>,
        why: String,
    ) {
        save_session(
            self.store.as_ref(),
            self.channel(),
            conversation,
            &SessionRecord {
                state,
                servicer: servicer.clone(),
                at_ms: self.api.clock().now_ms(),
            },
        );
        self.journal
            .update(
                self.channel(),
                conversation,
                SessionUpdate::State {
                    state,
                    servicer,
                    why,
                },
            )
            .await;
    }

    /// `service_state/get`, or `None` when it cannot be read (logged).
    pub async fn read_state(
        &self,
        open_kfid: &str,
        external_userid: &str,
    ) -> Option<(ServiceState, Option<String>)> {
        let body = state_get_body(open_kfid, external_userid);
        match self.api.call("POST", kf::STATE_GET_PATH, &body).await {
            Ok(a) => match serde_json::from_slice::<StateReply>(&a.body) {
                Ok(r) if r.errcode == 0 => r
                    .state()
                    .map(|s| (s, r.servicer_userid.filter(|u| !u.is_empty()))),
                Ok(r) => {
                    tracing::warn!(channel = self.channel(), errcode = r.errcode, errmsg = %r.errmsg, "kf service_state/get refused");
                    None
                }
                Err(e) => {
                    tracing::warn!(channel = self.channel(), error = %e, "kf service_state/get unreadable");
                    None
                }
            },
            Err(e) => {
                tracing::warn!(channel = self.channel(), error = %e, "kf service_state/get failed");
                None
            }
        }
    }

    async fn send_msg(&self, call: &Call, repeat: bool) -> Result<(), SendError> {
        let answer = self.api.call(&call.method, &call.url, &call.body).await?;
        let code = answer.reply.errcode;
        if code == 0 {
            return Ok(());
        }
        let t: Target = serde_json::from_str(&call.body).unwrap_or(Target {
            touser: String::new(),
            open_kfid: String::new(),
        });
        let conversation = conversation_key(&t.open_kfid, &t.touser);
        let refused = format!("errcode {code}: {}", answer.reply.errmsg);
        let why = match code {
            kf::ERR_SESSION_STATE | kf::ERR_WINDOW => {
                // The session moved on without us (a servicer took it in the client, it
                // ended, or the 48 h ran out): read where it stands, never retry blindly.
                match self.read_state(&t.open_kfid, &t.touser).await {
                    Some((state, servicer)) => {
                        self.record(
                            &conversation,
                            state,
                            servicer,
                            format!("kf/send_msg refused ({refused})"),
                        )
                        .await;
                        format!("the session is in state {} ({refused})", state.code())
                    }
                    None => format!("the session does not accept messages ({refused})"),
                }
            }
            kf::ERR_QUOTA => format!(
                "the 5 messages allowed after the customer's last message are used up ({refused})"
            ),
            _ if repeat => return refused_repeat("send_msg", classify(&answer.reply)),
            _ => return classify(&answer.reply),
        };
        // Refused for good (never retried): the session's journal says why.
        self.journal
            .update(
                self.channel(),
                &conversation,
                SessionUpdate::Undelivered { why: why.clone() },
            )
            .await;
        Err(SendError::Permanent(why))
    }

    async fn on_event(&self, call: &Call, repeat: bool) -> Result<(), SendError> {
        let answer = self.api.call(&call.method, &call.url, &call.body).await?;
        match answer.reply.errcode {
            0 => Ok(()),
            _ if repeat => refused_repeat("send_msg_on_event", classify(&answer.reply)),
            // A used code or one past its 20 s: nothing to retry (the errcode is not documented).
            code if !answer.reply.is_retryable() => {
                tracing::warn!(channel = self.channel(), errcode = code, errmsg = %answer.reply.errmsg, "kf send_msg_on_event refused");
                Err(SendError::Permanent(format!(
                    "send_msg_on_event: errcode {code}: {}",
                    answer.reply.errmsg
                )))
            }
            _ => classify(&answer.reply),
        }
    }

    async fn servicers(&self, open_kfid: &str) -> Result<ServicerList, SendError> {
        let a = self
            .api
            .call("GET", &servicer_list_path(open_kfid), "")
            .await?;
        let list: ServicerList = serde_json::from_slice(&a.body)
            .map_err(|e| SendError::Retry(format!("servicer/list unreadable: {e}")))?;
        if list.errcode != 0 {
            classify(&a.reply)?;
        }
        Ok(list)
    }

    async fn trans(
        &self,
        t: &Transfer,
        state: ServiceState,
        servicer: Option<&str>,
    ) -> Result<TransReply, SendError> {
        let body = trans_body(&t.open_kfid, &t.external_userid, state, servicer);
        let a = self.api.call("POST", kf::STATE_TRANS_PATH, &body).await?;
        let r = serde_json::from_slice::<TransReply>(&a.body)
            .map_err(|e| SendError::Retry(format!("service_state/trans unreadable: {e}")))?;
        match r.errcode {
            0
            | kf::ERR_NOT_SERVICER
            | kf::ERR_SERVICER_STOPPED
            | kf::ERR_BAD_TRANSITION
            | kf::ERR_SESSION_ENDED => Ok(r),
            // Busy, rate limited, or refused for good: as for any WeCom call.
            _ => classify(&a.reply).map(|()| r),
        }
    }

    /// Carry out a queued [`Transfer`].
    async fn transfer(&self, t: &Transfer) -> Result<(), SendError> {
        let conversation = conversation_key(&t.open_kfid, &t.external_userid);
        let (wanted, servicer, reply) = match t.to {
            TransferTo::Human => {
                let mut chosen = None;
                if !t.servicers.is_empty() {
                    let list = self.servicers(&t.open_kfid).await?;
                    chosen = choose_servicer(&t.servicers, &list.servicer_list);
                    if chosen.is_none() {
                        tracing::info!(
                            channel = self.channel(),
                            "no preferred kf servicer is receiving; handing over to the pool"
                        );
                    }
                }
                match chosen {
                    Some(user) => {
                        let r = self.trans(t, ServiceState::Human, Some(&user)).await?;
                        if matches!(r.errcode, kf::ERR_NOT_SERVICER | kf::ERR_SERVICER_STOPPED) {
                            // The list was stale: the pool takes it.
                            tracing::info!(
                                channel = self.channel(),
                                errcode = r.errcode,
                                "kf servicer cannot take the session; handing over to the pool"
                            );
                            (
                                ServiceState::Pool,
                                None,
                                self.trans(t, ServiceState::Pool, None).await?,
                            )
                        } else {
                            (ServiceState::Human, Some(user), r)
                        }
                    }
                    None => (
                        ServiceState::Pool,
                        None,
                        self.trans(t, ServiceState::Pool, None).await?,
                    ),
                }
            }
            TransferTo::End => (
                ServiceState::Ended,
                None,
                self.trans(t, ServiceState::Ended, None).await?,
            ),
        };
        match reply.errcode {
            0 => {
                self.record(
                    &conversation,
                    wanted,
                    servicer,
                    "kefu moved the session".into(),
                )
                .await;
                if let (Some(code), Some(notice)) = (reply.msg_code.as_deref(), t.notice.as_deref())
                {
                    let id = msgid(self.channel(), &format!("notice:{}", t.reply_id), 0);
                    let call = send::on_event_call(code, Some(&id), notice);
                    if let Err(e) = self.on_event(&call, false).await {
                        // The hand-over itself happened: don't repeat it for a notice.
                        tracing::warn!(channel = self.channel(), error = %e, "kf transfer notice not sent");
                    }
                }
                Ok(())
            }
            kf::ERR_BAD_TRANSITION | kf::ERR_SESSION_ENDED => {
                // Not allowed from where the session is (wecom-kf.md §5): read it, keep it.
                let state = self.read_state(&t.open_kfid, &t.external_userid).await;
                let why = format!(
                    "kf/service_state/trans to {} refused (errcode {}: {})",
                    wanted.code(),
                    reply.errcode,
                    reply.errmsg
                );
                if let Some((state, servicer)) = state.clone() {
                    self.record(&conversation, state, servicer, why.clone())
                        .await;
                }
                match (t.to, state) {
                    // Already with people, or already ended: nothing left to do.
                    (TransferTo::Human, Some((s, _))) if s.with_humans() => Ok(()),
                    (TransferTo::End, _) => Ok(()),
                    _ => Err(SendError::Permanent(why)),
                }
            }
            code => Err(SendError::Permanent(format!(
                "kf/service_state/trans to {}: errcode {code}: {}",
                wanted.code(),
                reply.errmsg
            ))),
        }
    }
}

#[async_trait]
impl Sender for KfSender {
    /// `send_msg` / `send_msg_on_event` with a `msgid`: the API refuses a repeated msgid,
    /// so a send a crash cut off may go again without reaching the customer twice.
    /// Transfers and anything without an id may not.
    fn resend_safe(&self, call: &Call) -> bool {
        matches!(
            call.url.as_str(),
            kf::SEND_MSG_PATH | kf::SEND_ON_EVENT_PATH
        ) && serde_json::from_str::<serde_json::Value>(&call.body)
            .ok()
            .and_then(|b| b["msgid"].as_str().map(|id| !id.is_empty()))
            .unwrap_or(false)
    }

    async fn send(&self, call: &Call) -> Result<(), SendError> {
        self.deliver(call, false).await
    }

    /// A repeated `msgid` is refused with an errcode the documentation does not give, and a
    /// welcome's event code works once: a resent call refused for any other reason than the
    /// known ones (session state, window, quota; busy and token errors are retried) was
    /// delivered by the send the crash cut off.
    async fn resend(&self, call: &Call) -> Result<(), SendError> {
        self.deliver(call, true).await
    }
}

impl KfSender {
    /// `repeat`: see [`Sender::resend`].
    async fn deliver(&self, call: &Call, repeat: bool) -> Result<(), SendError> {
        if let Some(t) = Transfer::from_call(call) {
            return self.transfer(&t).await;
        }
        match call.url.as_str() {
            kf::SEND_MSG_PATH => self.send_msg(call, repeat).await,
            kf::SEND_ON_EVENT_PATH => self.on_event(call, repeat).await,
            _ => classify(
                &self
                    .api
                    .call(&call.method, &call.url, &call.body)
                    .await?
                    .reply,
            ),
        }
    }
}

/// The outcome of a call sent again after a crash: a refusal for good (as [`classify`] reads
/// the answer) means the send the crash cut off got through; busy, token and rate-limit
/// answers are retried as for any call.
fn refused_repeat(what: &str, outcome: Result<(), SendError>) -> Result<(), SendError> {
    match outcome {
        Err(SendError::Permanent(why)) => {
            tracing::warn!(
                call = what,
                refusal = %why,
                "kf refused a call sent again after a crash: the first send reached WeCom, not sent twice"
            );
            Ok(())
        }
        other => other,
    }
}
