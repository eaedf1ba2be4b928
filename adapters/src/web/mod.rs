//! The website channel: wire types of `POST /api/chat` and its server-sent events, and the
//! embeddable widget (JavaScript + CSS + demo page) served from the binary.

use serde::{Deserialize, Serialize};

/// Body of `POST /api/chat`. Unknown fields are refused so a typo is a 400, not a silent drop.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ChatRequest {
    pub session_id: String,
    pub message: String,
    /// The web channel's config name; absent = the first `kind = "web"` channel.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channel: Option<String>,
}

/// One source an answer was drawn from.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SourceRef {
    pub title: String,
    pub path: String,
    pub score: f32,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HandoffState {
    pub active: bool,
    pub reason: Option<String>,
}

/// One turn, as `/api/chat` returns it (INTERFACES.md).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ChatTurn {
    pub session_id: String,
    /// The bot's answer; empty while a human agent owns the conversation.
    pub reply: String,
    pub intent: String,
    /// `low`, `medium` or `high`: how soon the customer needs help.
    #[serde(default)]
    pub urgency: String,
    /// -1 (angry) … 1 (delighted).
    #[serde(default)]
    pub sentiment: f32,
    /// The customer wants something done to an order and has not said which one.
    #[serde(default)]
    pub needs_order_info: bool,
    pub confidence: f32,
    pub sources: Vec<SourceRef>,
    pub handoff: HandoffState,
    /// Hosts of the links in `reply` the widget may render as links (the knowledge's own and
    /// the channel's `link_hosts`); any other link is shown as text.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub link_hosts: Vec<String>,
}

/// One stored message of a conversation, as `GET /api/chat/{session_id}/messages` lists it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct HistoryMessage {
    /// Increasing per conversation; poll with `?after=<seq>`.
    pub seq: u64,
    /// `user`, `bot`, `agent` or `system`.
    pub role: String,
    pub text: String,
    pub at_ms: u64,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sources: Vec<SourceRef>,
    /// As `ChatTurn::link_hosts`, for this message's text.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub link_hosts: Vec<String>,
}

/// Answer of `GET /api/chat/{session_id}/messages`: the newest messages (oldest of them
/// first), `?before=<seq>` for the page before, `?after=<seq>` for what came since.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct History {
    pub session_id: String,
    pub messages: Vec<HistoryMessage>,
    pub handoff: HandoffState,
    /// Older messages exist before the first one listed (ask with `?before=<its seq>`).
    #[serde(default)]
    pub has_more: bool,
}

/// Server-sent events of a streamed turn (`Accept: text/event-stream`):
/// `event: delta` / `data: {"text": "...", "link_hosts": [...]}` zero or more times (each a
/// checked piece of the answer, appended to the text shown), `event: retract` /
/// `data: {"reason": "..."}` when what was shown is withdrawn (the deltas after it replace
/// it), then exactly one `event: turn` / `data: <ChatTurn>` (authoritative: its `reply` is
/// what the deltas since the last retract add up to, and it is sent only once the turn is
/// stored), or `event: error` / `data: {"error": "..."}`.
pub mod sse {
    pub const DELTA: &str = "delta";
    pub const RETRACT: &str = "retract";
    pub const TURN: &str = "turn";
    pub const ERROR: &str = "error";
}

/// The widget script served at `GET /widget.js`.
pub const WIDGET_JS: &str = include_str!("widget.js");
/// The widget stylesheet served at `GET /widget.css` (the script also injects it).
pub const WIDGET_CSS: &str = include_str!("widget.css");
/// The demo page served at `GET /`.
pub const DEMO_HTML: &str = include_str!("demo.html");

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn chat_request_refuses_unknown_fields_and_wrong_types() {
        let ok: ChatRequest =
            serde_json::from_str(r#"{"session_id":"s","message":"hi","channel":"site"}"#)
                .expect("valid");
        assert_eq!(ok.channel.as_deref(), Some("site"));
        for bad in [
            r#"{"session_id":"s","message":"hi","colour":1}"#,
            r#"{"session_id":1,"message":"hi"}"#,
            r#"{"message":"hi"}"#,
            "",
        ] {
            assert!(serde_json::from_str::<ChatRequest>(bad).is_err(), "{bad}");
        }
    }

    proptest! {
        /// Any bytes: a request or an error, never a panic.
        #[test]
        fn chat_request_decode_never_panics(body in proptest::collection::vec(any::<u8>(), 0..256)) {
            let _ = serde_json::from_slice::<ChatRequest>(&body);
        }

        /// What the widget sends comes back as it was.
        #[test]
        fn chat_request_round_trips(session_id in "\\PC{0,40}", message in "\\PC{0,200}", channel in proptest::option::of("[a-z_-]{1,20}")) {
            let req = ChatRequest { session_id, message, channel };
            let wire = serde_json::to_string(&req).expect("serialize");
            prop_assert_eq!(serde_json::from_str::<ChatRequest>(&wire).expect("parse"), req);
        }

        #[test]
        fn turn_and_history_round_trip(reply in "\\PC{0,100}", reason in proptest::option::of("\\PC{0,20}"), seq in any::<u64>(), has_more in any::<bool>()) {
            let turn = ChatTurn {
                session_id: "s".into(),
                reply: reply.clone(),
                intent: "query".into(),
                urgency: "low".into(),
                sentiment: -0.25,
                needs_order_info: has_more,
                confidence: 0.5,
                sources: vec![SourceRef { title: "t".into(), path: "p#1".into(), score: 0.25 }],
                handoff: HandoffState { active: reason.is_some(), reason },
                link_hosts: if has_more { vec!["shop.example.com".into()] } else { vec![] },
            };
            let wire = serde_json::to_string(&turn).expect("serialize");
            prop_assert_eq!(serde_json::from_str::<ChatTurn>(&wire).expect("parse"), turn);
            let h = History {
                session_id: "s".into(),
                messages: vec![HistoryMessage { seq, role: "bot".into(), text: reply, at_ms: 1, sources: vec![], link_hosts: vec![] }],
                handoff: HandoffState { active: false, reason: None },
                has_more,
            };
            let wire = serde_json::to_string(&h).expect("serialize");
            prop_assert_eq!(serde_json::from_str::<History>(&wire).expect("parse"), h);
        }
    }
}
