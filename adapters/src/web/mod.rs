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
    pub confidence: f32,
    pub sources: Vec<SourceRef>,
    pub handoff: HandoffState,
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
/// `event: delta` / `data: {"text": "..."}` zero or more times, then exactly one
/// `event: turn` / `data: <ChatTurn>`, or `event: error` / `data: {"error": "..."}`.
pub mod sse {
    pub const DELTA: &str = "delta";
    pub const TURN: &str = "turn";
    pub const ERROR: &str = "error";
}

/// The widget script served at `GET /widget.js`.
pub const WIDGET_JS: &str = include_str!("widget.js");
/// The widget stylesheet served at `GET /widget.css` (the script also injects it).
pub const WIDGET_CSS: &str = include_str!("widget.css");
/// The demo page served at `GET /`.
pub const DEMO_HTML: &str = include_str!("demo.html");
