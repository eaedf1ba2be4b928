//! Session state and hand-over (path/94698, wecom-kf.md §5) and the servicer list
//! (path/94645, §6).
//!
//! States: 0 new, 1 bot, 2 pool, 3 human, 4 ended. The API may send only in 0 and 1; the
//! bot hands over with `trans` to 3 (a receiving servicer) or 2 (the pool); there is no API
//! path back to 1: the session ends (4) and the customer's next message opens a new one (0).

use serde::{Deserialize, Serialize};
use url::form_urlencoded::byte_serialize;

use super::send::to_json;
use crate::{Call, CallAuth};

/// `service_state` of a kf session.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(into = "u8", try_from = "u8")]
pub enum ServiceState {
    /// 0 未处理: the customer wrote, nobody handled it yet.
    New,
    /// 1 由智能助手接待: the bot (the API) handles it.
    Bot,
    /// 2 待接入池排队中: waiting in the pool for a servicer.
    Pool,
    /// 3 由人工接待: a servicer owns it.
    Human,
    /// 4 已结束/未开始.
    Ended,
}

impl ServiceState {
    pub fn code(self) -> u8 {
        self as u8
    }

    pub fn from_code(code: i64) -> Option<ServiceState> {
        Some(match code {
            0 => ServiceState::New,
            1 => ServiceState::Bot,
            2 => ServiceState::Pool,
            3 => ServiceState::Human,
            4 => ServiceState::Ended,
            _ => return None,
        })
    }

    /// `send_msg` works only in these (96427).
    pub fn api_may_send(self) -> bool {
        matches!(self, ServiceState::New | ServiceState::Bot)
    }

    /// A person owns (or is about to own) the session: the bot stays silent.
    pub fn with_humans(self) -> bool {
        matches!(self, ServiceState::Pool | ServiceState::Human)
    }
}

impl From<ServiceState> for u8 {
    fn from(s: ServiceState) -> u8 {
        s.code()
    }
}

impl TryFrom<u8> for ServiceState {
    type Error = String;
    fn try_from(v: u8) -> Result<Self, String> {
        ServiceState::from_code(i64::from(v)).ok_or_else(|| format!("unknown service_state {v}"))
    }
}

/// Body of `service_state/get` (V8).
pub fn state_get_body(open_kfid: &str, external_userid: &str) -> String {
    #[derive(Serialize)]
    struct Get<'a> {
        open_kfid: &'a str,
        external_userid: &'a str,
    }
    to_json(&Get {
        open_kfid,
        external_userid,
    })
}

/// Body of `service_state/trans` (V8); `servicer_userid` only with state 3.
pub fn trans_body(
    open_kfid: &str,
    external_userid: &str,
    state: ServiceState,
    servicer_userid: Option<&str>,
) -> String {
    #[derive(Serialize)]
    struct Trans<'a> {
        open_kfid: &'a str,
        external_userid: &'a str,
        service_state: u8,
        #[serde(skip_serializing_if = "Option::is_none")]
        servicer_userid: Option<&'a str>,
    }
    to_json(&Trans {
        open_kfid,
        external_userid,
        service_state: state.code(),
        servicer_userid,
    })
}

/// Answer of `service_state/get`.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
pub struct StateReply {
    pub errcode: i64,
    #[serde(default)]
    pub errmsg: String,
    #[serde(default)]
    pub service_state: Option<i64>,
    /// Meaningful in state 3 only (silenceper's `service_userid` is a bug).
    #[serde(default)]
    pub servicer_userid: Option<String>,
}

impl StateReply {
    pub fn state(&self) -> Option<ServiceState> {
        self.service_state.and_then(ServiceState::from_code)
    }
}

/// Answer of `service_state/trans`: the `msg_code` for one `send_msg_on_event` notice, given
/// the first time a session goes to 2 or 3 and on 4.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
pub struct TransReply {
    pub errcode: i64,
    #[serde(default)]
    pub errmsg: String,
    #[serde(default)]
    pub msg_code: Option<String>,
}

/// `GET kf/servicer/list?open_kfid=…` (the token is added by the sender).
pub fn servicer_list_path(open_kfid: &str) -> String {
    format!(
        "{}?open_kfid={}",
        super::SERVICER_LIST_PATH,
        byte_serialize(open_kfid.as_bytes()).collect::<String>()
    )
}

/// One entry of `servicer_list`: a member, or a whole department.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
pub struct Servicer {
    #[serde(default)]
    pub userid: Option<String>,
    /// **0 receiving, 1 stopped** (the `servicer_status_change` event says 1/2 instead).
    #[serde(default)]
    pub status: i64,
    /// 0 stopped, 1 suspended.
    #[serde(default)]
    pub stop_type: i64,
    #[serde(default)]
    pub department_id: Option<i64>,
}

/// Answer of `servicer/list`.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
pub struct ServicerList {
    pub errcode: i64,
    #[serde(default)]
    pub errmsg: String,
    #[serde(default)]
    pub servicer_list: Vec<Servicer>,
}

/// The first of `candidates` (the operator's order) that the list shows receiving.
pub fn choose_servicer(candidates: &[String], list: &[Servicer]) -> Option<String> {
    candidates
        .iter()
        .find(|c| {
            list.iter()
                .any(|s| s.userid.as_deref() == Some(c.as_str()) && s.status == 0)
        })
        .cloned()
}

/// Where a [`Transfer`] takes the session.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TransferTo {
    /// To a person: state 3 with the first receiving servicer of `servicers`, else 2.
    Human,
    /// End the session: state 4.
    End,
}

/// A hand-over as kefu queues it in the outbox (the call's body; its url is
/// [`super::STATE_TRANS_PATH`]). It is not sent as is: the sender reads the servicer list,
/// calls `service_state/trans`, then sends `notice` with the returned `msg_code`, so the
/// notice reaches the customer although the API can no longer `send_msg` to them.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Transfer {
    pub open_kfid: String,
    pub external_userid: String,
    pub to: TransferTo,
    /// Preferred receiving servicers (config `human_servicers`), in order.
    #[serde(default)]
    pub servicers: Vec<String>,
    /// Sent with the transfer's `msg_code` (the customer's "transferring you" line).
    #[serde(default)]
    pub notice: Option<String>,
    /// Used for the notice's `msgid`, so a retried transfer cannot notify twice.
    #[serde(default)]
    pub reply_id: String,
}

impl Transfer {
    pub fn call(&self) -> Call {
        Call {
            method: "POST".into(),
            url: super::STATE_TRANS_PATH.into(),
            body: to_json(self),
            auth: CallAuth::WeComToken,
        }
    }

    /// The transfer a queued call carries, if it is one.
    pub fn from_call(call: &Call) -> Option<Transfer> {
        if call.url != super::STATE_TRANS_PATH {
            return None;
        }
        serde_json::from_str(&call.body).ok()
    }
}
