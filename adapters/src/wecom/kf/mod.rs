//! WeCom Customer Service (微信客服, "kf"): external WeChat users write to a kf account
//! (`open_kfid`, `wk…`); kefu answers them and hands them to human servicers.
//!
//! Facts and evidence: `shared/protocols/wecom-kf.md`; official pages
//! developer.work.weixin.qq.com/document/path/94670 (sync_msg), 96427 (send_msg), 96428
//! (send_msg_on_event), 94698 (service_state), 94645 (servicer/list).
//!
//! The callback only *notifies* ([`KfNotice`]); messages are pulled with `kf/sync_msg`
//! ([`sync`]) and replies go out with `kf/send_msg` ([`send`]). There is no passive reply.
//! The callback envelope (signature, AES, CorpID as receive id) is the app callback's.
//! Pure like the rest of this crate: paths, bodies, parsers; the server does the I/O.

use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::Method;
use rand_core::RngCore;

use super::callback::{Keys, Query};
use super::xml::Fields;
use super::{Cipher, WeComConfigError};
use crate::{
    Call, Channel, ChannelKind, DecodeError, Decoded, EncodeError, KfNotice, Outbound, Secret,
};

pub mod send;
pub mod session;
pub mod sync;

pub use send::{fit, msgid, Fitted, SendReply, MAX_TEXT_BYTES};
pub use session::{choose_servicer, ServiceState, Servicer, Transfer, TransferTo};
pub use sync::{classify, parse_sync_reply, sync_request_body, KfItem, SyncPage, SyncReply};

/// `POST kf/sync_msg`: pull messages and events (path/94670).
pub const SYNC_MSG_PATH: &str = "/cgi-bin/kf/sync_msg";
/// `POST kf/send_msg`: a message to a customer (path/96427).
pub const SEND_MSG_PATH: &str = "/cgi-bin/kf/send_msg";
/// `POST kf/send_msg_on_event`: a message with an event's one-time code (path/96428).
pub const SEND_ON_EVENT_PATH: &str = "/cgi-bin/kf/send_msg_on_event";
/// `POST kf/service_state/get` (path/94698).
pub const STATE_GET_PATH: &str = "/cgi-bin/kf/service_state/get";
/// `POST kf/service_state/trans` (path/94698).
pub const STATE_TRANS_PATH: &str = "/cgi-bin/kf/service_state/trans";
/// `GET kf/servicer/list?open_kfid=` (path/94645).
pub const SERVICER_LIST_PATH: &str = "/cgi-bin/kf/servicer/list";
/// Every kf API path starts so; a WeCom app sender hands such calls to the kf sender.
pub const PATH_PREFIX: &str = "/cgi-bin/kf/";

/// errcode 95001: the 5 messages allowed after the customer's last message are used up.
pub const ERR_QUOTA: i64 = 95001;
/// errcode 95002: more than 48 h after the customer's last message.
pub const ERR_WINDOW: i64 = 95002;
/// errcode 95007: the callback `Token` given to sync_msg is invalid or expired.
pub const ERR_INVALID_MSGTOKEN: i64 = 95007;
/// errcode 95013: the session has already ended.
pub const ERR_SESSION_ENDED: i64 = 95013;
/// errcode 95014: not a servicer of this account (or not activated).
pub const ERR_NOT_SERVICER: i64 = 95014;
/// errcode 95016: this state transition is not allowed.
pub const ERR_BAD_TRANSITION: i64 = 95016;
/// errcode 95018: the session's state does not allow API sends (a human owns it, or older
/// than 48 h).
pub const ERR_SESSION_STATE: i64 = 95018;
/// errcode 95019: the servicer stopped or suspended receiving.
pub const ERR_SERVICER_STOPPED: i64 = 95019;

/// Errcodes about the account or the credentials, not about a request's contents: 95000 /
/// 95004 (bad or unknown open_kfid), 95011 / 95012 (token from the wrong kind of secret),
/// 95017 (API switched off), 60020 (untrusted IP), 45009 (rate limit), -1 (busy). A sync
/// refused with one of these keeps its cursor; any other refusal of a request that carried
/// a cursor is taken as "cursor no longer valid" (the errcode is undocumented, wecom-kf.md §2).
pub fn is_account_error(errcode: i64) -> bool {
    matches!(
        errcode,
        -1 | 45009 | 45033 | 60020 | 95000 | 95004 | 95011 | 95012 | 95017
    ) || super::api::is_token_error(errcode)
}

/// Route keys of a kf `Inbound` (and of the `Outbound` answering it).
pub mod route {
    /// The kf account.
    pub const OPEN_KFID: &str = "open_kfid";
    /// The WeChat customer.
    pub const EXTERNAL_USERID: &str = "external_userid";
    /// The platform's message id.
    pub const MSGID: &str = "msgid";
    /// `3` customer, `4` system event, `5` servicer (wecom-kf.md §2).
    pub const ORIGIN: &str = "origin";
    /// The servicer who wrote (origin 5) or is named by an event.
    pub const SERVICER: &str = "servicer_userid";
    /// Event name (origin 4).
    pub const EVENT_TYPE: &str = "event_type";
    /// Set by the server on a customer message fetched without a cursor and older than the
    /// channel's `backlog_reply_secs`: store it, don't answer it.
    pub const STALE: &str = "stale";
    /// Set by the server on an `Outbound`: what the reply answers (a message id, an agent
    /// message's seq), so its `msgid`s are the same on every retry.
    pub const REPLY_ID: &str = "reply_id";
}

/// Who wrote a pulled message (`origin`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Origin {
    /// 3: the WeChat customer.
    Customer,
    /// 4: a system event.
    Event,
    /// 5: a servicer (接待人员) in the WeCom client.
    Servicer,
}

impl Origin {
    pub fn from_code(code: i64) -> Option<Origin> {
        match code {
            3 => Some(Origin::Customer),
            4 => Some(Origin::Event),
            5 => Some(Origin::Servicer),
            _ => None,
        }
    }

    pub fn code(self) -> &'static str {
        match self {
            Origin::Customer => "3",
            Origin::Event => "4",
            Origin::Servicer => "5",
        }
    }

    /// The origin recorded in a kf message's route.
    pub fn of(route: &std::collections::BTreeMap<String, String>) -> Option<Origin> {
        route
            .get(route::ORIGIN)
            .and_then(|o| o.parse().ok())
            .and_then(Origin::from_code)
    }
}

/// A kf conversation: one customer on one account, `{open_kfid}:{external_userid}` (both ids
/// are `[A-Za-z0-9_-]`, so the key is safe in URLs).
pub fn conversation_key(open_kfid: &str, external_userid: &str) -> String {
    format!("{open_kfid}:{external_userid}")
}

/// `(open_kfid, external_userid)` of a conversation key.
pub fn split_conversation(key: &str) -> Option<(&str, &str)> {
    let (kfid, user) = key.split_once(':')?;
    (!kfid.is_empty() && !user.is_empty()).then_some((kfid, user))
}

/// The kf notification in a decrypted callback (`MsgType` event, `Event` kf_msg_or_event),
/// or `None` for anything else. A missing `OpenKfId` (2021-era callbacks) means "all accounts".
pub fn notice(f: &Fields) -> Option<KfNotice> {
    if f.value("MsgType") != Some("event") || f.value("Event") != Some("kf_msg_or_event") {
        return None;
    }
    Some(KfNotice {
        open_kfid: f.value("OpenKfId").map(str::to_string),
        token: f.value("Token").map(Secret::new),
        create_time: f
            .value("CreateTime")
            .and_then(|t| t.parse().ok())
            .unwrap_or(0),
    })
}

/// What a kf channel's codec needs from config (`[[channels]] kind = "wecom_kf"`).
#[derive(Clone, Debug)]
pub struct WeComKfParams {
    /// The config `name`; the callback URL is `/wecom/{name}`.
    pub name: String,
    /// CorpID: the receive id of every callback ciphertext.
    pub corp_id: String,
    /// The callback Token (kf admin → 开发配置, or the managing app's).
    pub token: Secret,
    /// The callback EncodingAESKey, 43 characters.
    pub encoding_aes_key: Secret,
}

/// A kf channel's codec: callbacks in, `send_msg` calls out.
#[derive(Clone, Debug)]
pub struct WeComKf {
    name: String,
    corp_id: String,
    token: Secret,
    cipher: Cipher,
    timestamp_window: Option<Duration>,
}

impl WeComKf {
    pub fn new(p: WeComKfParams) -> Result<Self, WeComConfigError> {
        if p.name.trim().is_empty() {
            return Err(WeComConfigError::EmptyName);
        }
        if p.corp_id.is_empty() || p.corp_id.trim() != p.corp_id {
            return Err(WeComConfigError::BadCorpId);
        }
        if p.token.expose().is_empty() {
            return Err(WeComConfigError::EmptyToken);
        }
        Ok(WeComKf {
            cipher: Cipher::new(p.encoding_aes_key.expose())?,
            name: p.name,
            corp_id: p.corp_id,
            token: p.token,
            timestamp_window: None,
        })
    }

    /// Refuse (as [`DecodeError::StaleTimestamp`], after the signature check) a callback whose
    /// `timestamp` is more than `window` away from `now`, as for apps
    /// ([`WeCom::with_timestamp_window`](super::WeCom::with_timestamp_window)).
    pub fn with_timestamp_window(mut self, window: Option<Duration>) -> Self {
        self.timestamp_window = window;
        self
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    fn keys(&self) -> Keys<'_> {
        Keys {
            corp_id: &self.corp_id,
            token: &self.token,
            cipher: &self.cipher,
            timestamp_window: self.timestamp_window,
        }
    }

    /// The `send_msg` calls for `out`, at most `budget` of them: longer text is packed into
    /// fewer parts and what still does not fit is cut (see [`fit`]). `Fitted::truncated`
    /// says so, for the agent.
    pub fn encode_within(
        &self,
        out: &Outbound,
        budget: usize,
    ) -> Result<(Vec<Call>, bool), EncodeError> {
        if !out.channel.is_empty() && out.channel != self.name {
            return Err(EncodeError::Invalid(format!(
                "reply for channel {:?} given to wecom_kf channel {:?}",
                out.channel, self.name
            )));
        }
        send::reply_calls(&self.name, out, budget)
    }
}

impl Channel for WeComKf {
    fn kind(&self) -> ChannelKind {
        ChannelKind::WeComKf
    }

    /// GET → `Challenge`; POST → `KfNotice`, or `Ignored` for an authentic callback that is
    /// not a kf notification (a test message from the admin console: LangBot #1470 crashed
    /// on those). Signature and receive id exactly as for apps.
    fn decode(&self, req: &http::Request<Bytes>, now: SystemTime) -> Result<Decoded, DecodeError> {
        let q = Query::parse(req.uri().query().unwrap_or(""));
        match *req.method() {
            Method::GET => self.keys().challenge(&q, now),
            Method::POST => {
                let fields = self.keys().open_post(&q, req.body(), now)?;
                Ok(match notice(&fields) {
                    Some(n) => Decoded::KfNotice(n),
                    None => Decoded::Ignored("wecom_kf: not a kf notification"),
                })
            }
            ref m => Err(DecodeError::Malformed(format!("method {m} not allowed"))),
        }
    }

    /// One `kf/send_msg` per ≤ 2048-byte part, each with its own `msgid` derived from the
    /// reply's id, so a retry of the same reply can never be delivered twice.
    fn encode(
        &self,
        out: &Outbound,
        _now: SystemTime,
        _rng: &mut dyn RngCore,
    ) -> Result<Vec<Call>, EncodeError> {
        self.encode_within(out, usize::MAX).map(|(calls, _)| calls)
    }
}

#[cfg(test)]
mod tests;
