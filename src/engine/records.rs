//! What the engine keeps without answering: messages and events a platform reports that are
//! not questions for the bot (a human servicer's message, a session event, a failed
//! delivery), and hand-overs a platform made on its own. Each write takes the conversation's
//! lock, so it lands in order with the turns.

use adapters::Inbound;

use super::{Engine, EngineError};
use crate::store::{Conversation, Handoff, Message, Role};

impl Engine {
    /// Store `text` in `m`'s conversation as written by `role`, without a turn; creates the
    /// conversation if `m` is its first message. `agent`: who wrote it (a servicer's id), kept
    /// on an active handoff.
    pub async fn record(
        &self,
        m: &Inbound,
        role: Role,
        text: &str,
        agent: Option<&str>,
    ) -> Result<Message, EngineError> {
        let lock = self.locks.get(&m.channel, &m.conversation);
        let _guard = lock.lock().await;
        let now = self.p.clock.now_ms();
        let mut conv = self
            .p
            .store
            .conversation(&m.channel, &m.conversation)?
            .unwrap_or_else(|| {
                let mut c =
                    Conversation::new(&m.channel, m.kind, &m.conversation, m.user.clone(), now);
                c.route = m.route.clone();
                c
            });
        if let (Some(h), Some(a)) = (conv.handoff.as_mut().filter(|h| h.active), agent) {
            h.agent = Some(a.to_string());
        }
        let msg = Message {
            seq: conv.take_seq(),
            role,
            text: text.to_string(),
            at_ms: if m.sent_at_ms > 0 {
                m.sent_at_ms.min(now)
            } else {
                now
            },
            platform_id: Some(m.id.clone()),
            intent: None,
            sources: vec![],
        };
        conv.updated_ms = now;
        self.p
            .store
            .append_message(&m.channel, &m.conversation, &msg)?;
        self.p.store.save_conversation(&conv)?;
        Ok(msg)
    }

    /// A system note in an existing conversation (a failed delivery, a state the platform
    /// reported). Nothing happens for an unknown conversation.
    pub async fn note(
        &self,
        channel: &str,
        conversation: &str,
        text: &str,
    ) -> Result<(), EngineError> {
        let lock = self.locks.get(channel, conversation);
        let _guard = lock.lock().await;
        let Some(mut conv) = self.p.store.conversation(channel, conversation)? else {
            return Ok(());
        };
        self.append_note(&mut conv, text)
    }

    /// A person took the conversation on the platform itself (a servicer picked it from the
    /// queue, or the platform refuses the bot because a person owns it): the bot is silent
    /// from now on. True when this starts the handoff (it was not active).
    pub async fn taken_over(
        &self,
        channel: &str,
        conversation: &str,
        agent: Option<&str>,
        why: &str,
    ) -> Result<bool, EngineError> {
        let lock = self.locks.get(channel, conversation);
        let _guard = lock.lock().await;
        let Some(mut conv) = self.p.store.conversation(channel, conversation)? else {
            return Ok(false);
        };
        let now = self.p.clock.now_ms();
        let started = !conv.handed_off();
        match conv.handoff.as_mut().filter(|h| h.active) {
            Some(h) => {
                if agent.is_some() {
                    h.agent = agent.map(str::to_string);
                }
            }
            None => {
                conv.handoff = Some(Handoff {
                    active: true,
                    reason: "platform".into(),
                    summary: why.to_string(),
                    since_ms: now,
                    agent: agent.map(str::to_string),
                });
                conv.flow = None;
                conv.unresolved_turns = 0;
                self.p
                    .metrics
                    .inc("kefu_handoffs_total", &[("reason", "platform")]);
            }
        }
        self.append_note(&mut conv, why)?;
        Ok(started)
    }

    /// The platform ended the person's part (a servicer closed the session): the bot answers
    /// this customer's next message. True when a handoff was active.
    pub async fn handed_back(
        &self,
        channel: &str,
        conversation: &str,
        why: &str,
    ) -> Result<bool, EngineError> {
        let lock = self.locks.get(channel, conversation);
        let _guard = lock.lock().await;
        let Some(mut conv) = self.p.store.conversation(channel, conversation)? else {
            return Ok(false);
        };
        let was = conv.handed_off();
        if let Some(h) = conv.handoff.as_mut() {
            h.active = false;
        }
        conv.unresolved_turns = 0;
        self.append_note(&mut conv, why)?;
        Ok(was)
    }

    fn append_note(&self, conv: &mut Conversation, text: &str) -> Result<(), EngineError> {
        let msg = Message {
            seq: conv.take_seq(),
            role: Role::System,
            text: text.to_string(),
            at_ms: self.p.clock.now_ms(),
            platform_id: None,
            intent: None,
            sources: vec![],
        };
        self.p
            .store
            .append_message(&conv.channel, &conv.conversation, &msg)?;
        self.p.store.save_conversation(conv)?;
        Ok(())
    }
}
