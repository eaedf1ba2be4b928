//! What agents do to a conversation: claim it, write to the customer, hand it back to the
//! bot, close it with a resolution note. Each step runs under the conversation's lock, like
//! a customer's turn, so agents racing for one conversation are served one after the other:
//! exactly one claim wins, the others learn who has it.

use std::time::Duration;

use super::{Engine, EngineError};
use crate::events::EventKind;
use crate::store::{Conversation, Delivery, HandoffEnd, HandoffEndKind, Message, Role};

impl Engine {
    fn load(&self, channel: &str, conversation: &str) -> Result<Conversation, EngineError> {
        self.p
            .store
            .conversation(channel, conversation)?
            .ok_or(EngineError::UnknownConversation)
    }

    /// Append a system note (`action`: what happened) by `agent`.
    fn note(
        &self,
        conv: &mut Conversation,
        action: &str,
        text: String,
        agent: Option<&str>,
        now: u64,
    ) -> Result<(), EngineError> {
        let mut m = Message::new(conv.take_seq(), Role::System, text, now);
        m.action = Some(action.to_string());
        m.agent = agent.map(str::to_string);
        self.p
            .store
            .append_message(&conv.channel, &conv.conversation, &m)?;
        Ok(())
    }

    /// `agent` takes a handed-off conversation. Claiming one's own conversation again is a
    /// no-op; another agent's is `ClaimedBy`.
    pub async fn claim(
        &self,
        channel: &str,
        conversation: &str,
        agent: &str,
    ) -> Result<Conversation, EngineError> {
        let lock = self.locks.get(channel, conversation);
        let _g = lock.lock().await;
        let now = self.p.clock.now_ms();
        let mut conv = self.load(channel, conversation)?;
        let h = conv
            .handoff
            .as_mut()
            .filter(|h| h.active)
            .ok_or(EngineError::NotHandedOff)?;
        match h.agent.as_deref() {
            Some(owner) if owner == agent => return Ok(conv),
            Some(owner) => return Err(EngineError::ClaimedBy(owner.to_string())),
            None => {}
        }
        h.agent = Some(agent.to_string());
        h.claimed_ms = Some(now);
        self.note(
            &mut conv,
            "claimed",
            format!("claimed by {agent}"),
            Some(agent),
            now,
        )?;
        self.p.store.save_conversation(&conv)?;
        self.events
            .publish(EventKind::Claimed, channel, conversation, None, Some(agent));
        Ok(conv)
    }

    /// An agent writes to the customer; returns the stored message (its delivery `queued`).
    /// An agent writes only in a handed-off conversation it owns, and claims it when no one
    /// does. `agent = None` is automation (the admin token): it may write anywhere.
    pub async fn agent_reply(
        &self,
        channel: &str,
        conversation: &str,
        text: &str,
        agent: Option<&str>,
    ) -> Result<(Message, Conversation), EngineError> {
        let lock = self.locks.get(channel, conversation);
        let _g = lock.lock().await;
        let now = self.p.clock.now_ms();
        let mut conv = self.load(channel, conversation)?;
        let mut claimed = false;
        if agent.is_some() && !conv.handed_off() {
            return Err(EngineError::NotHandedOff);
        }
        if let Some(h) = conv.handoff.as_mut().filter(|h| h.active) {
            match (h.agent.as_deref(), agent) {
                (Some(owner), Some(a)) if owner != a => {
                    return Err(EngineError::ClaimedBy(owner.to_string()))
                }
                (None, Some(a)) => {
                    h.agent = Some(a.to_string());
                    h.claimed_ms = Some(now);
                    claimed = true;
                }
                _ => {}
            }
            if h.first_reply_ms.is_none() {
                h.first_reply_ms = Some(now);
                self.p
                    .metrics
                    .observe_first_reply(Duration::from_millis(now.saturating_sub(h.since_ms)));
            }
        }
        let mut msg = Message::new(conv.take_seq(), Role::Agent, text, now);
        msg.agent = agent.map(str::to_string);
        msg.delivery = Some(Delivery::queued(now));
        conv.updated_ms = now;
        self.p.store.append_message(channel, conversation, &msg)?;
        self.p.store.save_conversation(&conv)?;
        self.p
            .metrics
            .inc("kefu_agent_replies_total", &[("channel", channel)]);
        if claimed {
            self.events
                .publish(EventKind::Claimed, channel, conversation, None, agent);
        }
        self.events.publish(
            EventKind::Reply,
            channel,
            conversation,
            Some(msg.seq),
            agent,
        );
        Ok((msg, conv))
    }

    /// Hand the conversation back to the bot. Only its owner may (anyone when unclaimed;
    /// automation always).
    pub async fn release(
        &self,
        channel: &str,
        conversation: &str,
        agent: Option<&str>,
    ) -> Result<Conversation, EngineError> {
        self.end(channel, conversation, agent, HandoffEndKind::Released, None)
            .await
    }

    /// The case is resolved: end the handoff with a resolution note (kept for agents, never
    /// shown to the customer). The bot answers whatever the customer writes next.
    pub async fn close(
        &self,
        channel: &str,
        conversation: &str,
        agent: Option<&str>,
        note: &str,
    ) -> Result<Conversation, EngineError> {
        self.end(
            channel,
            conversation,
            agent,
            HandoffEndKind::Closed,
            Some(note),
        )
        .await
    }

    async fn end(
        &self,
        channel: &str,
        conversation: &str,
        agent: Option<&str>,
        how: HandoffEndKind,
        note: Option<&str>,
    ) -> Result<Conversation, EngineError> {
        let lock = self.locks.get(channel, conversation);
        let _g = lock.lock().await;
        let now = self.p.clock.now_ms();
        let mut conv = self.load(channel, conversation)?;
        let h = conv
            .handoff
            .as_mut()
            .filter(|h| h.active)
            .ok_or(EngineError::NotHandedOff)?;
        if let (Some(owner), Some(a)) = (h.agent.as_deref(), agent) {
            if owner != a {
                return Err(EngineError::ClaimedBy(owner.to_string()));
            }
        }
        h.active = false;
        h.ended = Some(HandoffEnd {
            how,
            by: agent.map(str::to_string),
            at_ms: now,
            note: note.map(str::to_string),
        });
        conv.unresolved_turns = 0;
        let (action, text, kind) = match how {
            HandoffEndKind::Released => (
                "released",
                "handed back to the bot".to_string(),
                EventKind::Released,
            ),
            HandoffEndKind::Closed => (
                "closed",
                note.unwrap_or_default().to_string(),
                EventKind::Closed,
            ),
        };
        self.note(&mut conv, action, text, agent, now)?;
        self.p.store.save_conversation(&conv)?;
        self.p
            .metrics
            .inc("kefu_handoffs_ended_total", &[("how", action)]);
        self.events
            .publish(kind, channel, conversation, None, agent);
        Ok(conv)
    }
}
