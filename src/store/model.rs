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
    /// The customer's last question answered from the knowledge: a follow-up is searched
    /// with it as context (see `Engine::retrieve_following`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub topic: Option<Topic>,
}

/// A question the knowledge answered, and the chunk that answered it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Topic {
    pub question: String,
    /// `source` and heading path of the chunk answered from (`policies/shipping.md › Singapore`).
    pub chunk: String,
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
            topic: None,
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
    /// The agent who wrote it (agent messages, and system notes an agent caused).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent: Option<String>,
    /// System notes: what happened (`claimed`, `released`, `closed`); the text says it in
    /// English for API readers, the console says it in the agent's language.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub action: Option<String>,
    /// Agent messages: how far delivery to the customer has come.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delivery: Option<Delivery>,
}

impl Message {
    /// A message with nothing but its seq, author role, text and time.
    pub fn new(seq: u64, role: Role, text: impl Into<String>, at_ms: u64) -> Self {
        Message {
            seq,
            role,
            text: text.into(),
            at_ms,
            platform_id: None,
            intent: None,
            sources: Vec::new(),
            agent: None,
            action: None,
            delivery: None,
        }
    }
}

/// Where an agent's message is on its way to the customer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Delivery {
    pub state: DeliveryState,
    /// Why it failed, or why the last attempt did not go through (while still queued).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Attempts so far that did not go through.
    #[serde(default)]
    pub attempts: u32,
    pub at_ms: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DeliveryState {
    /// Stored; waiting in the outbox (or for the widget to fetch it).
    Queued,
    /// The platform confirmed it (or the widget fetched it).
    Sent,
    /// Will not arrive: the platform refused it for good.
    Failed,
}

impl Delivery {
    pub fn queued(at_ms: u64) -> Self {
        Delivery {
            state: DeliveryState::Queued,
            error: None,
            attempts: 0,
            at_ms,
        }
    }
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
    /// The agent who claimed it.
    #[serde(default)]
    pub agent: Option<String>,
    /// What the engine understood when it handed over: the agent's summary card.
    #[serde(default)]
    pub card: HandoffCard,
    #[serde(default)]
    pub claimed_ms: Option<u64>,
    /// When an agent first wrote to the customer (time to first human reply).
    #[serde(default)]
    pub first_reply_ms: Option<u64>,
    /// How the handoff ended (released to the bot, or closed with a note).
    #[serde(default)]
    pub ended: Option<HandoffEnd>,
}

impl Handoff {
    /// A new, unclaimed handoff.
    pub fn start(reason: &str, summary: String, card: HandoffCard, since_ms: u64) -> Self {
        Handoff {
            active: true,
            reason: reason.to_string(),
            summary,
            since_ms,
            agent: None,
            card,
            claimed_ms: None,
            first_reply_ms: None,
            ended: None,
        }
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HandoffCard {
    /// What the customer wants: an intent, or the business flow underway (`refund`).
    #[serde(default)]
    pub intent: String,
    #[serde(default)]
    pub urgency: String,
    #[serde(default)]
    pub sentiment: String,
    #[serde(default)]
    pub order: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HandoffEnd {
    pub how: HandoffEndKind,
    /// The agent who ended it (None: automation through the admin token).
    pub by: Option<String>,
    pub at_ms: u64,
    /// The resolution note of a close.
    #[serde(default)]
    pub note: Option<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HandoffEndKind {
    /// Handed back to the bot mid-conversation.
    Released,
    /// Resolved, with a note.
    Closed,
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
    /// Set (and flushed) just before `call` is sent, cleared with its outcome. Still set at
    /// start means kefu died mid-send: the platform may or may not have the message, so it
    /// is not sent again blindly but becomes a dead letter an agent can look at.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sending_since_ms: Option<u64>,
    /// Sent again at start after a crash cut its first send off (`Outbox::recover`, only
    /// calls the platform refuses twice): the first send may have gone through, so the
    /// sender reads a refusal of the repeat as delivered ([`Sender::resend`]).
    ///
    /// [`Sender::resend`]: crate::delivery::Sender::resend
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub resent_after_crash: bool,
    /// The inbox entry this reply answers, set when it is queued: until that entry is
    /// removed (which commits the reply, see `sled_store`), the entry is not sent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub held_by: Option<u64>,
    /// The agent message (its seq in conversation `queue` of channel `target`) this call
    /// delivers: its delivery state follows the outcome.
    #[serde(default)]
    pub message: Option<u64>,
}

/// An outbox entry given up on: the platform refused it for good, it failed too long, or
/// kefu stopped while sending it. Kept for agents (`/agent/api/dead-letters`) and metrics.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DeadLetter {
    /// The entry as it was, its outbox id included.
    pub item: OutboxItem,
    pub reason: String,
    pub dead_ms: u64,
}

/// A platform message acknowledged and not answered yet.
#[derive(Clone, Debug, PartialEq)]
pub struct InboxEntry {
    pub id: u64,
    /// Its dedupe key (`channel:message id`).
    pub key: String,
    pub message: adapters::Inbound,
}

/// A customer's send allowance on a platform that limits replies per customer message
/// (WeCom kf: 5 within 48 h).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Quota {
    /// When the customer last wrote (unix ms); the window runs from here.
    pub opened_ms: u64,
    /// Sends taken since.
    pub used: u32,
    /// When the latest sends were taken (the newest [`Quota::KEPT_SENDS`]): a customer
    /// message stored late (kefu pulls after the platform received it) re-opens the
    /// allowance with the sends made at or after its time already counted, as the platform
    /// counts them.
    #[serde(default)]
    pub sent_ms: Vec<u64>,
}

impl Quota {
    /// How many send times are kept: more than any platform's allowance.
    pub const KEPT_SENDS: usize = 16;

    /// The customer wrote at `at_ms`: the allowance runs from there, less the sends made at
    /// or after it (same-second sends count: the safe side). An older time changes nothing.
    /// Returns whether it changed.
    pub fn reopen(&mut self, at_ms: u64) -> bool {
        if at_ms < self.opened_ms {
            return false;
        }
        let used = self.sent_ms.iter().filter(|&&t| t >= at_ms).count() as u32;
        let changed = at_ms != self.opened_ms || used != self.used;
        self.opened_ms = at_ms;
        self.used = used;
        changed
    }

    /// Take up to `want` sends at `now_ms`; returns how many were granted.
    pub fn take(&mut self, now_ms: u64, want: u32, limit: u32, window_ms: u64) -> u32 {
        let granted = self.grant(now_ms, want, limit, window_ms);
        self.used += granted;
        self.sent_ms
            .extend(std::iter::repeat_n(now_ms, granted as usize));
        let extra = self.sent_ms.len().saturating_sub(Self::KEPT_SENDS);
        self.sent_ms.drain(..extra);
        granted
    }

    /// The sends `want` may take now: what is left of `limit`, or 0 past the window.
    pub fn grant(&self, now_ms: u64, want: u32, limit: u32, window_ms: u64) -> u32 {
        if self.opened_ms == 0 || now_ms > self.opened_ms.saturating_add(window_ms) {
            return 0;
        }
        want.min(limit.saturating_sub(self.used))
    }
}

#[cfg(test)]
mod tests {
    use super::Quota;

    const H48: u64 = 48 * 3600 * 1000;

    /// A customer writes `n` messages within one second (`send_time` 1_000 s) while kefu
    /// answers each after pulling it; returns how many single-message replies were granted.
    fn burst(q: &mut Quota, second_ms: u64, n: u64) -> u32 {
        (0..n)
            .map(|k| {
                q.reopen(second_ms);
                q.take(second_ms + 100 * (k + 1), 1, 5, H48)
            })
            .sum()
    }

    #[test]
    fn a_burst_within_one_second_gets_its_replies() {
        // The replies to the earlier messages of the second are counted (kefu cannot order
        // them against the later messages), yet 4 messages still get 4 replies.
        let mut q = Quota::default();
        assert_eq!(burst(&mut q, 1_000_000, 4), 4);
    }

    #[test]
    fn same_second_sends_count_against_a_later_burst() {
        // The same customer writes 4 more within the second of kefu's last 4 replies: those
        // may have been sent after the new messages, so they count (the safe side) and the
        // 4th new reply does not fit. One second later, nothing earlier counts.
        let mut q = Quota::default();
        assert_eq!(burst(&mut q, 1_000_000, 4), 4);
        assert_eq!(burst(&mut q, 1_000_000, 4), 1);
        let mut q = Quota::default();
        assert_eq!(burst(&mut q, 1_000_000, 4), 4);
        assert_eq!(burst(&mut q, 1_001_000, 4), 4);
    }
}
