//! The records the store keeps. They are serialized as JSON in sled: readable with any sled
//! dump tool, and new optional fields don't break old data.

use std::collections::BTreeMap;

use adapters::{Call, ChannelKind, UserRef};
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Conversation {
    pub channel: String,
    pub kind: ChannelKind,
    pub conversation: String,
    pub user: UserRef,
    pub created_ms: u64,
    pub updated_ms: u64,
    /// The seq the next message gets; starts at 1.
    pub next_seq: u64,
    /// Bot turns in a row that did not resolve the customer's need.
    #[serde(default)]
    pub unresolved_turns: u32,
    /// A business flow waiting for the customer (refund / cancel slot filling).
    #[serde(default)]
    pub flow: Option<FlowState>,
    #[serde(default)]
    pub handoff: Option<Handoff>,
    /// The customer writes Chinese (last message).
    #[serde(default)]
    pub zh: bool,
    /// The platform routing of the last inbound message, so agent replies reach the customer.
    #[serde(default)]
    pub route: BTreeMap<String, String>,
}

impl Conversation {
    pub fn new(
        channel: &str,
        kind: ChannelKind,
        conversation: &str,
        user: UserRef,
        now_ms: u64,
    ) -> Self {
        Conversation {
            channel: channel.into(),
            kind,
            conversation: conversation.into(),
            user,
            created_ms: now_ms,
            updated_ms: now_ms,
            next_seq: 1,
            unresolved_turns: 0,
            flow: None,
            handoff: None,
            zh: false,
            route: BTreeMap::new(),
        }
    }

    pub fn handed_off(&self) -> bool {
        self.handoff.as_ref().is_some_and(|h| h.active)
    }

    /// Allocate the next message seq.
    pub fn take_seq(&mut self) -> u64 {
        let s = self.next_seq;
        self.next_seq += 1;
        s
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    User,
    Bot,
    Agent,
    System,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::User => "user",
            Role::Bot => "bot",
            Role::Agent => "agent",
            Role::System => "system",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Message {
    pub seq: u64,
    pub role: Role,
    pub text: String,
    pub at_ms: u64,
    /// Platform message id (user messages).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub intent: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sources: Vec<SourceRecord>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SourceRecord {
    pub title: String,
    pub path: String,
    pub score: f32,
}

/// Slot filling for refund / cancellation.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FlowState {
    /// `refund` or `cancel`.
    pub kind: String,
    pub order: Option<String>,
    pub stage: FlowStage,
    /// What the customer said when the flow started (for the agent's summary).
    pub reason: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FlowStage {
    AwaitingOrder,
    AwaitingConfirmation,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Handoff {
    pub active: bool,
    /// `complaint_urgent`, `very_negative`, `low_confidence`, `keyword`, `unresolved`,
    /// `human_requested`, `no_knowledge`, `business_action`, `sensitive`, `upstream_failure`, `other`.
    pub reason: String,
    /// For the agent: intent, order number, last messages.
    pub summary: String,
    pub since_ms: u64,
    #[serde(default)]
    pub agent: Option<String>,
}

/// One delivery waiting in the outbox.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct OutboxItem {
    /// Assigned by `outbox_push`.
    #[serde(default)]
    pub id: u64,
    /// Channel or notify target name whose sender delivers it.
    pub target: String,
    pub call: Call,
    /// Replaces `call` when it fails for good (DingTalk: the OpenAPI send after an expired
    /// sessionWebhook); all of these are sent, in order.
    #[serde(default)]
    pub fallback: Vec<Call>,
    /// Calls still to send after `call` (the rest of a fallback split in parts).
    #[serde(default)]
    pub then: Vec<Call>,
    /// Order is kept within a queue (a conversation), not across queues: one customer's
    /// failing reply does not hold up the others.
    #[serde(default)]
    pub queue: String,
    pub attempts: u32,
    pub next_at_ms: u64,
    pub created_ms: u64,
    #[serde(default)]
    pub last_error: Option<String>,
}

/// A customer's send allowance on a platform that limits replies per customer message
/// (WeCom kf: 5 within 48 h).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Quota {
    /// When the customer last wrote (unix ms); the window runs from here.
    pub opened_ms: u64,
    /// Sends taken since.
    pub used: u32,
}

impl Quota {
    /// The sends `want` may take now: what is left of `limit`, or 0 past the window.
    pub fn grant(&self, now_ms: u64, want: u32, limit: u32, window_ms: u64) -> u32 {
        if self.opened_ms == 0 || now_ms > self.opened_ms.saturating_add(window_ms) {
            return 0;
        }
        want.min(limit.saturating_sub(self.used))
    }
}
