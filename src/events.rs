//! The feed of conversation changes agents watch: a handoff starts, a customer writes while a
//! human owns the conversation, an agent claims / replies / releases / closes, a delivery
//! succeeds or fails. Events say only what changed where; the console reads the details from
//! the store, so a missed event costs a refresh, never a wrong screen.

use serde::Serialize;
use tokio::sync::broadcast;

/// Events kept for a slow reader before it is told it lagged (it then reloads everything).
const BACKLOG: usize = 256;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    /// A conversation was handed to a human (it joins the queue).
    Handoff,
    /// The customer wrote while a human owns the conversation.
    Message,
    Claimed,
    /// An agent wrote to the customer.
    Reply,
    Released,
    Closed,
    /// An agent message's delivery state changed.
    Delivery,
}

impl EventKind {
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Handoff => "handoff",
            EventKind::Message => "message",
            EventKind::Claimed => "claimed",
            EventKind::Reply => "reply",
            EventKind::Released => "released",
            EventKind::Closed => "closed",
            EventKind::Delivery => "delivery",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Event {
    pub kind: EventKind,
    pub channel: String,
    pub conversation: String,
    /// The message concerned, when there is one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seq: Option<u64>,
    /// The agent who acted (claim, reply, release, close).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub agent: Option<String>,
}

pub struct Events {
    tx: broadcast::Sender<Event>,
}

impl Default for Events {
    fn default() -> Self {
        Events {
            tx: broadcast::channel(BACKLOG).0,
        }
    }
}

impl Events {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn publish(
        &self,
        kind: EventKind,
        channel: &str,
        conversation: &str,
        seq: Option<u64>,
        agent: Option<&str>,
    ) {
        // No subscriber (no console open) is normal: the event has nowhere to go.
        let _ = self.tx.send(Event {
            kind,
            channel: channel.to_string(),
            conversation: conversation.to_string(),
            seq,
            agent: agent.map(str::to_string),
        });
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.tx.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn subscribers_see_what_is_published_after_they_subscribe() {
        let events = Events::new();
        events.publish(EventKind::Handoff, "site", "before", None, None);
        let mut rx = events.subscribe();
        events.publish(EventKind::Reply, "site", "s-1", Some(4), Some("dana"));
        let e = rx.recv().await.unwrap();
        assert_eq!(
            serde_json::to_value(&e).unwrap(),
            serde_json::json!({"kind": "reply", "channel": "site", "conversation": "s-1", "seq": 4, "agent": "dana"})
        );
        assert!(rx.try_recv().is_err());
    }
}
