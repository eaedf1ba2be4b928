//! What the engine keeps without answering: messages and events a platform reports that are
//! not questions for the bot (a human servicer's message, a session event, a failed
//! delivery), and hand-overs a platform made on its own. Each write takes the conversation's
//! lock, so it lands in order with the turns, and each is one `save_turn` (the message and
//! the conversation record that commits it), announced to the agents' console.

use adapters::Inbound;

use super::{Engine, EngineError};
use crate::events::EventKind;
use crate::store::{Conversation, Handoff, HandoffCard, HandoffEnd, HandoffEndKind, Message, Role};

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
        let at = if m.sent_at_ms > 0 {
            m.sent_at_ms.min(now)
        } else {
            now
        };
        let mut msg = Message::new(conv.take_seq(), role, text, at);
        msg.platform_id = Some(m.id.clone());
        msg.agent = agent.map(str::to_string);
        conv.updated_ms = now;
        self.p.store.save_turn(&conv, std::slice::from_ref(&msg))?;
        self.events.publish(
            EventKind::Message,
            &m.channel,
            &m.conversation,
            Some(msg.seq),
            agent,
        );
        Ok(msg)
    }

    /// A system note in an existing conversation (a failed delivery, a state the platform
    /// reported). Nothing happens for an unknown conversation.
    pub async fn platform_note(
        &self,
        channel: &str,
        conversation: &str,
        text: &str,
    ) -> Result<(), EngineError> {
        self.noted_change(channel, conversation, text, None, |_| {
            (EventKind::Message, ())
        })
        .await
        .map(|_| ())
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
        let started = self
            .noted_change(channel, conversation, why, agent, |conv| {
                let now = self.p.clock.now_ms();
                let started = !conv.handed_off();
                match conv.handoff.as_mut().filter(|h| h.active) {
                    Some(h) => {
                        if agent.is_some() {
                            h.agent = agent.map(str::to_string);
                        }
                    }
                    None => {
                        let mut h = Handoff::start(
                            "platform",
                            why.to_string(),
                            HandoffCard::default(),
                            now,
                        );
                        h.agent = agent.map(str::to_string);
                        h.claimed_ms = agent.map(|_| now);
                        conv.handoff = Some(h);
                        conv.flow = None;
                        conv.unresolved_turns = 0;
                        self.p
                            .metrics
                            .inc("kefu_handoffs_total", &[("reason", "platform")]);
                    }
                }
                let kind = if started {
                    EventKind::Handoff
                } else {
                    EventKind::Message
                };
                (kind, started)
            })
            .await?;
        Ok(started.unwrap_or(false))
    }

    /// The platform ended the person's part (a servicer closed the session): the bot answers
    /// this customer's next message. True when a handoff was active.
    pub async fn handed_back(
        &self,
        channel: &str,
        conversation: &str,
        why: &str,
    ) -> Result<bool, EngineError> {
        let was = self
            .noted_change(channel, conversation, why, None, |conv| {
                let was = conv.handed_off();
                if let Some(h) = conv.handoff.as_mut().filter(|h| h.active) {
                    h.active = false;
                    h.ended = Some(HandoffEnd {
                        how: HandoffEndKind::Released,
                        by: None,
                        at_ms: self.p.clock.now_ms(),
                        note: Some(why.to_string()),
                    });
                }
                conv.unresolved_turns = 0;
                let kind = if was {
                    EventKind::Released
                } else {
                    EventKind::Message
                };
                (kind, was)
            })
            .await?;
        Ok(was.unwrap_or(false))
    }

    /// Under the conversation's lock: `change` the stored conversation, record `note` in it
    /// as a system message (one write), and tell the agents with the event `change` names.
    /// `change` also gives what the caller answers; `None` for an unknown conversation.
    async fn noted_change<T>(
        &self,
        channel: &str,
        conversation: &str,
        note: &str,
        agent: Option<&str>,
        change: impl FnOnce(&mut Conversation) -> (EventKind, T),
    ) -> Result<Option<T>, EngineError> {
        let lock = self.locks.get(channel, conversation);
        let _guard = lock.lock().await;
        let Some(mut conv) = self.p.store.conversation(channel, conversation)? else {
            return Ok(None);
        };
        let (kind, out) = change(&mut conv);
        let seq = self.append_platform_note(&mut conv, note)?;
        self.events
            .publish(kind, channel, conversation, Some(seq), agent);
        Ok(Some(out))
    }

    fn append_platform_note(
        &self,
        conv: &mut Conversation,
        text: &str,
    ) -> Result<u64, EngineError> {
        let now = self.p.clock.now_ms();
        let msg = Message::new(conv.take_seq(), Role::System, text, now);
        conv.updated_ms = now;
        self.p.store.save_turn(conv, std::slice::from_ref(&msg))?;
        Ok(msg.seq)
    }
}
