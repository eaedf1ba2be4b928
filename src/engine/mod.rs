//! The conversation engine: one `Inbound` in, one `Turn` out, every channel alike.
//!
//! intent → route (knowledge answer, refund/cancel flow, empathy, thanks, clarify) →
//! generate → quality check → reply or hand over. Every step reads and writes the one
//! conversation record in the store; messages of one conversation are handled in order
//! (a per-conversation lock), different conversations concurrently.

pub mod actions;
mod agent_side;
pub mod flow;
pub mod handoff;
pub mod intent;
mod limit;
pub mod llm_intent;
mod locks;
pub mod neighbours;
pub mod quality;
mod records;
mod retrieve;
pub mod safety;
pub mod stream;

use std::sync::Arc;
use std::time::Instant;

use adapters::{ContentKind, Inbound};
use tracing::{debug, info_span, warn, Instrument};

pub use retrieve::{KnowledgeRetriever, Retriever};
pub use stream::StreamEvent;

use self::actions::{ActionOutcome, ActionRequest, BusinessActions};
use self::handoff::{HandoffRules, Reason};
use self::intent::{Intent, IntentClassifier, IntentKind, Sentiment, SmallTalk, Urgency};
use self::quality::{Quality, Verdict};
use self::stream::{Generated, InFlight, Outlet};
use crate::clock::Clock;
use crate::config::{Config, OtherRoute};
use crate::events::{EventKind, Events};
use crate::knowledge::Hit;
use crate::metrics::Metrics;
use crate::providers::{GenerateRequest, Generator};
use crate::store::{
    Conversation, FlowStage, Handoff, HandoffCard, Message, Role, SourceRecord, Store, StoreError,
    Topic,
};
use crate::text::looks_chinese;

/// A customer who opens the app again within this time is not greeted again.
const GREET_AGAIN_MS: u64 = 6 * 3600 * 1000;
/// A flow's preface quotes an FAQ answer whole up to this many words, else its first sentence.
const POLICY_LINE_WORDS: usize = 60;

/// How much knowing that a message is a complaint raises the odds that a page of the shop's
/// rules (`knowledge.policy_categories`) answers it: a logit shift of the calibrated score,
/// which otherwise estimates the probability for a question of unknown kind. Fitted on the
/// odd half of qingshan's answer and conversation cases, built-in embedder and
/// multilingual-e5-small: 0 → 0.5 cites the right page for 0.77 → 0.80 (built-in) and 0.89 →
/// 0.91 (e5) of the Chinese questions; 1.0 did the same, 2.0 lost answers on both halves.
const POLICY_LIFT: f32 = 0.5;

/// Candidates a complaint is searched among: a policy page that ranks below product pages
/// for the message's words must still be seen.
const POLICY_POOL: usize = 20;

/// The path a turn took, for logs, metrics and eval.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Route {
    /// Answered from the knowledge.
    Knowledge,
    /// A refund / cancel flow asked, confirmed or acted.
    Flow,
    /// A complaint: empathy first (then the answer, or a question).
    Empathy,
    /// Praise: thanked.
    Thanks,
    /// Hello, bye, "are you a bot?".
    SmallTalk,
    /// Too vague or off-topic: a clarifying question.
    Clarify,
    /// Handed to a person this turn.
    Handoff,
    /// A person owns the conversation: no reply.
    Silent,
    /// A picture, file or voice without text.
    NonText,
    /// The customer left or wrote again while the answer streamed.
    Cancelled,
}

impl Route {
    pub fn as_str(self) -> &'static str {
        match self {
            Route::Knowledge => "knowledge",
            Route::Flow => "flow",
            Route::Empathy => "empathy",
            Route::Thanks => "thanks",
            Route::SmallTalk => "small_talk",
            Route::Clarify => "clarify",
            Route::Handoff => "handoff",
            Route::Silent => "silent",
            Route::NonText => "non_text",
            Route::Cancelled => "cancelled",
        }
    }
}

impl std::fmt::Display for Route {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl PartialEq<&str> for Route {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

/// What the understand step found in one inbound message.
struct Understood {
    conv: Conversation,
    /// When the customer was last here (0 for a new conversation), before this message.
    last_seen_ms: u64,
    /// What the engine reads: masked, at most `server.max_message_chars`.
    text: String,
    inbound_blocked: bool,
    /// Stored with the rest of the turn.
    user_msg: Message,
    intent: Intent,
    rule: Option<Reason>,
}

/// What the record step needs from the turn.
struct RecordArgs<'a> {
    m: &'a Inbound,
    conv: Conversation,
    user_msg: Message,
    draft: Draft,
    intent: Intent,
    cancelled: bool,
    handoff_started: bool,
    started: Instant,
    now: u64,
}

/// What the engine decided for one inbound message.
#[derive(Debug, Clone, PartialEq)]
pub struct Turn {
    /// What to send the customer; empty when the bot stays silent (a human owns it).
    pub reply: String,
    pub intent: Intent,
    pub confidence: f32,
    pub sources: Vec<SourceRecord>,
    /// Every chunk retrieved above `min_score`, best first (eval's hit@3 and MRR).
    pub retrieved: Vec<SourceRecord>,
    /// The conversation is with a human after this turn.
    pub handoff_active: bool,
    /// Set on the turn that started the handoff (and on silent turns, the standing reason).
    pub handoff_reason: Option<String>,
    /// This turn started the handoff: alert the agents.
    pub handoff_started: bool,
    /// The path the engine took, for logs and eval.
    pub route: Route,
    /// Seq of the stored bot message (0 when silent).
    pub seq: u64,
    /// The reply asks the customer for an order number (a refund / cancel flow waits for it).
    pub asks_order: bool,
}

pub struct EngineParts {
    pub config: Arc<Config>,
    pub retriever: Arc<dyn Retriever>,
    pub store: Arc<dyn Store>,
    pub generator: Arc<dyn Generator>,
    /// Fallback generator used when `generator` fails (the built-in one).
    pub fallback_generator: Arc<dyn Generator>,
    pub classifier: Arc<dyn IntentClassifier>,
    pub actions: Arc<dyn BusinessActions>,
    pub clock: Arc<dyn Clock>,
    pub metrics: Arc<Metrics>,
}

pub struct Engine {
    p: EngineParts,
    rules: HandoffRules,
    quality: Quality,
    locks: locks::ConversationLocks,
    events: Arc<Events>,
    /// Streamed turns in progress (a newer message of the conversation stops the older one).
    inflight: InFlight,
}

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("unknown conversation")]
    UnknownConversation,
    /// Another agent owns the conversation (their id).
    #[error("claimed by {0}")]
    ClaimedBy(String),
    /// The bot owns the conversation: there is nothing to claim, release or close.
    #[error("the conversation is not handed off")]
    NotHandedOff,
}

/// A draft of the reply while the route is decided.
struct Draft {
    reply: String,
    confidence: f32,
    sources: Vec<SourceRecord>,
    retrieved: Vec<SourceRecord>,
    handoff: Option<Reason>,
    route: Route,
    /// The customer's need was met this turn (resets the unresolved counter).
    resolved: bool,
    /// A quality failure here should hand over rather than retry.
    checked: bool,
}

impl Draft {
    fn say(reply: String, route: Route, resolved: bool) -> Self {
        Draft {
            reply,
            // A scripted reply (a flow's step, thanks, small talk) is what the bot means to
            // say; a clarifying question or a handover says it has no answer.
            confidence: match route {
                Route::Clarify | Route::Handoff => 0.0,
                _ => 1.0,
            },
            sources: Vec::new(),
            retrieved: Vec::new(),
            handoff: None,
            route,
            resolved,
            checked: false,
        }
    }
}

impl Engine {
    pub fn new(p: EngineParts) -> anyhow::Result<Self> {
        Ok(Engine {
            rules: HandoffRules::new(&p.config.handoff)?,
            quality: Quality::new(&p.config.quality)?,
            locks: locks::ConversationLocks::default(),
            events: Arc::new(Events::new()),
            inflight: InFlight::default(),
            p,
        })
    }

    /// The feed of conversation changes (handoffs, agent actions, deliveries) agents watch.
    pub fn events(&self) -> &Arc<Events> {
        &self.events
    }

    pub fn store(&self) -> &Arc<dyn Store> {
        &self.p.store
    }

    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.p.metrics
    }

    pub fn config(&self) -> &Config {
        &self.p.config
    }

    /// Handle one customer message. Store failures are the only errors: everything else
    /// (a model down, a failed action) still produces a turn the customer can read.
    pub async fn handle(&self, m: Inbound) -> Result<Turn, EngineError> {
        let span = info_span!("message", channel = %m.channel, conv = %m.conversation, id = %m.id);
        // A newer message stops the conversation's answer still being streamed.
        self.inflight.cancel(&m.channel, &m.conversation);
        self.handle_inner(m, Outlet::none()).instrument(span).await
    }

    /// `handle`, with the answer released to `tx` piece by piece as the model writes it, each
    /// piece checked first (`stream.rs`). The returned turn is authoritative: it may differ
    /// from what was released (a `Retract` then says so, or the caller compares). The turn
    /// stops generating when `tx`'s receiver is dropped or a newer message of the
    /// conversation arrives (`route` is then `cancelled`, its reply what had been released);
    /// it is stored once either way.
    pub async fn handle_streaming(
        &self,
        m: Inbound,
        tx: tokio::sync::mpsc::UnboundedSender<StreamEvent>,
    ) -> Result<Turn, EngineError> {
        let span = info_span!("message", channel = %m.channel, conv = %m.conversation, id = %m.id, stream = true);
        let (channel, conversation) = (m.channel.clone(), m.conversation.clone());
        let (id, cancel) = self.inflight.start(&channel, &conversation);
        let turn = self
            .handle_inner(m, Outlet::new(tx, cancel))
            .instrument(span)
            .await;
        self.inflight.finish(&channel, &conversation, id);
        turn
    }

    /// One turn as a pipeline: understand → (a person owns it: store, stay silent) → decide
    /// and act (`route`) → check → hand over if a rule says so → record.
    async fn handle_inner(&self, m: Inbound, mut out: Outlet) -> Result<Turn, EngineError> {
        let started = Instant::now();
        let lock = self.locks.get(&m.channel, &m.conversation);
        let _guard = lock.lock().await;
        let now = self.p.clock.now_ms();
        let store = &self.p.store;
        let Understood {
            mut conv,
            last_seen_ms,
            text,
            inbound_blocked,
            user_msg,
            intent,
            rule,
        } = self.understand(&m, now).await?;
        let user_seq = user_msg.seq;
        // The flow's order and kind, for the agent's summary (the flow may end this turn).
        let flow_before = conv.flow.clone();

        if conv.handed_off() {
            // A human owns the conversation: store, say nothing, tell the agents.
            store.save_turn(&conv, std::slice::from_ref(&user_msg))?;
            self.events.publish(
                EventKind::Message,
                &m.channel,
                &m.conversation,
                Some(user_seq),
                None,
            );
            let reason = conv.handoff.as_ref().map(|h| h.reason.clone());
            self.count_turn(&m.channel, &intent, started);
            return Ok(Turn {
                reply: String::new(),
                intent,
                confidence: 0.0,
                sources: vec![],
                retrieved: vec![],
                handoff_active: true,
                handoff_reason: reason,
                handoff_started: false,
                route: Route::Silent,
                seq: 0,
                asks_order: false,
            });
        }

        // Decide and act.
        let mut draft = if inbound_blocked {
            let mut d = Draft::say(String::new(), Route::Handoff, false);
            d.handoff = Some(Reason::Sensitive);
            d
        } else {
            self.route(&m, &text, &intent, rule, last_seen_ms, &mut conv, &mut out)
                .await
        };
        // Stopped mid-answer: what the customer saw (each piece checked) is the reply.
        let cancelled = draft.route == Route::Cancelled;

        // Check: nothing leaves unchecked; then the unresolved-turns rule.
        if !cancelled {
            self.check(&mut draft);
        }
        self.count_unresolved(&mut draft, &mut conv);

        let handoff_started = match draft.handoff {
            Some(reason) => {
                self.start_handoff(
                    reason,
                    &mut draft,
                    &mut conv,
                    &intent,
                    flow_before,
                    &user_msg,
                    now,
                )?;
                true
            }
            None => false,
        };

        self.record_turn(RecordArgs {
            m: &m,
            conv,
            user_msg,
            draft,
            intent,
            cancelled,
            handoff_started,
            started,
            now,
        })
    }

    /// Understand: the conversation as it stands, the customer's language, the message as
    /// stored (sensitive words masked) and as read (length-limited), intent and the rules
    /// decided by the message alone.
    async fn understand(&self, m: &Inbound, now: u64) -> Result<Understood, EngineError> {
        let mut conv = self
            .p
            .store
            .conversation(&m.channel, &m.conversation)?
            .unwrap_or_else(|| {
                Conversation::new(&m.channel, m.kind, &m.conversation, m.user.clone(), now)
            });
        // When the customer was last here (0 for a new conversation), before this message.
        let last_seen_ms = if conv.next_seq > 1 {
            conv.updated_ms
        } else {
            0
        };
        conv.updated_ms = now;
        conv.route = m.route.clone();
        if m.user.name.is_some() {
            conv.user = m.user.clone();
        }
        // The customer's language, from what they wrote (not from a file name or the
        // description of a picture).
        let wrote =
            matches!(m.content, ContentKind::Text | ContentKind::RichText) || transcribed(m);
        if wrote && m.text.chars().any(char::is_alphabetic) {
            conv.zh = looks_chinese(&m.text);
        }

        // Inbound sensitive words: masked text is what we store and process.
        let (text, inbound_blocked) = match self.quality.check_inbound(&m.text) {
            Verdict::Pass { text, .. } => (text, false),
            Verdict::Block { reason } => {
                debug!(%reason, "inbound blocked");
                ("[blocked: sensitive content]".to_string(), true)
            }
        };
        let user_seq = conv.take_seq();
        // Written with the rest of the turn at the end, in one batch (`Store::save_turn`).
        let mut user_msg = Message::new(
            user_seq,
            Role::User,
            if matches!(m.content, ContentKind::Event(_)) {
                format!("[event] {}", text)
            } else {
                text.clone()
            },
            m.sent_at_ms.max(1).min(now.max(1)),
        );
        user_msg.platform_id = Some(m.id.clone());
        // Stored whole (with the turn); every channel's engine reads at most max_message_chars.
        let text = limit::for_engine(
            text,
            self.p.config.server.max_message_chars,
            &m.channel,
            &self.p.metrics,
        );

        let is_text =
            matches!(m.content, ContentKind::Text | ContentKind::RichText) || transcribed(m);
        let mut intent = if is_text {
            self.p.classifier.classify(&text).await
        } else {
            neutral_intent()
        };
        let rule = if is_text {
            self.rules.before_answer(&text, &intent)
        } else {
            None
        };
        if rule == Some(Reason::HumanRequested)
            && matches!(intent.intent, IntentKind::Query | IntentKind::Praise)
        {
            // "转人工" asks for a person, not for knowledge.
            intent.intent = IntentKind::Other;
        }
        Ok(Understood {
            conv,
            last_seen_ms,
            text,
            inbound_blocked,
            user_msg,
            intent,
            rule,
        })
    }

    /// Record: both messages and the conversation as one write, the agents told of a new
    /// handoff, the turn counted and described.
    fn record_turn(&self, a: RecordArgs<'_>) -> Result<Turn, EngineError> {
        let RecordArgs {
            m,
            mut conv,
            user_msg,
            draft,
            intent,
            cancelled,
            handoff_started,
            started,
            now,
        } = a;
        // Record: both messages and the conversation (its next seq) as one write. A turn
        // cancelled before anything was shown stores the customer's message alone.
        let seq = if cancelled && draft.reply.is_empty() {
            self.p
                .store
                .save_turn(&conv, std::slice::from_ref(&user_msg))?;
            0
        } else {
            let seq = conv.take_seq();
            let mut bot_msg = Message::new(seq, Role::Bot, draft.reply.clone(), now);
            bot_msg.intent = Some(intent.intent.as_str().to_string());
            bot_msg.sources = draft.sources.clone();
            self.p.store.save_turn(&conv, &[user_msg, bot_msg])?;
            seq
        };
        if handoff_started {
            self.events.publish(
                EventKind::Handoff,
                &m.channel,
                &m.conversation,
                Some(seq),
                None,
            );
        }
        self.count_turn(&m.channel, &intent, started);
        debug!(
            route = draft.route.as_str(),
            confidence = draft.confidence,
            "turn done"
        );
        Ok(Turn {
            reply: draft.reply,
            intent,
            confidence: draft.confidence,
            sources: draft.sources,
            retrieved: draft.retrieved,
            handoff_active: conv.handed_off(),
            handoff_reason: conv
                .handoff
                .as_ref()
                .filter(|h| h.active)
                .map(|h| h.reason.clone()),
            handoff_started,
            asks_order: draft.route == Route::Flow
                && conv
                    .flow
                    .as_ref()
                    .is_some_and(|f| f.stage == FlowStage::AwaitingOrder),
            route: draft.route,
            seq,
        })
    }

    /// The outbound check (sensitive words, PII, forbidden promises) on a draft about to
    /// leave: a failing draft is replaced by a handoff (compliance).
    fn check(&self, draft: &mut Draft) {
        if draft.handoff.is_some() || draft.reply.is_empty() {
            return;
        }
        match self.quality.check_outbound(&draft.reply) {
            Verdict::Pass { text, masked } => {
                if masked {
                    debug!("outbound masked");
                }
                draft.reply = text;
            }
            Verdict::Block { reason } => {
                warn!(%reason, "answer failed the quality check");
                draft.handoff = Some(Reason::Compliance);
                draft.checked = true;
            }
        }
    }

    /// A turn that did not help counts; too many in a row hand over.
    fn count_unresolved(&self, draft: &mut Draft, conv: &mut Conversation) {
        if draft.resolved {
            conv.unresolved_turns = 0;
        } else if !matches!(
            draft.route,
            Route::SmallTalk | Route::Thanks | Route::NonText | Route::Cancelled
        ) {
            conv.unresolved_turns += 1;
            if draft.handoff.is_none() {
                draft.handoff = self.rules.too_many_unresolved(conv.unresolved_turns);
            }
        }
    }

    /// Hand the conversation to a person: the handoff record with its summary for the agent,
    /// and what the customer reads instead of the draft.
    #[allow(clippy::too_many_arguments)]
    fn start_handoff(
        &self,
        reason: Reason,
        draft: &mut Draft,
        conv: &mut Conversation,
        intent: &Intent,
        flow_before: Option<crate::store::FlowState>,
        user_msg: &Message,
        now: u64,
    ) -> Result<(), EngineError> {
        // The last 8 messages, this turn's (not stored yet) included.
        let mut recent = self.p.store.messages(
            &conv.channel,
            &conv.conversation,
            user_msg.seq.saturating_sub(8),
            7,
        )?;
        recent.push(user_msg.clone());
        let order = conv
            .flow
            .as_ref()
            .or(flow_before.as_ref())
            .and_then(|f| f.order.clone())
            .or_else(|| intent.order.clone());
        let wants = conv
            .flow
            .as_ref()
            .or(flow_before.as_ref())
            .map(|f| f.kind.as_str())
            .unwrap_or(intent.intent.as_str());
        let card = HandoffCard {
            intent: wants.to_string(),
            urgency: intent.urgency.as_str().to_string(),
            sentiment: intent.sentiment.as_str().to_string(),
            order: order.clone(),
        };
        conv.handoff = Some(Handoff::start(
            reason.as_str(),
            handoff::summary(reason, wants, intent, order.as_deref(), &recent),
            card,
            now,
        ));
        conv.flow = None;
        conv.unresolved_turns = 0;
        let zh = conv.zh;
        let transfer = self.transfer_message(zh);
        draft.reply = if reason == Reason::Compliance {
            // The draft failed its check: none of it may leave.
            self.p.config.replies.fallback.get(zh).to_string()
        } else if draft.route == Route::Flow && !draft.reply.is_empty() {
            // A business action handed over: keep what we told the customer about it.
            format!("{} {}", draft.reply, transfer)
        } else if reason == Reason::Safety {
            format!("{} {}", self.p.config.replies.safety.get(zh), transfer)
        } else if draft.route == Route::Empathy {
            format!("{} {}", self.p.config.replies.empathy.get(zh), transfer)
        } else {
            transfer.to_string()
        };
        draft.route = Route::Handoff;
        self.p
            .metrics
            .inc("kefu_handoffs_total", &[("reason", reason.as_str())]);
        Ok(())
    }

    fn count_turn(&self, channel: &str, intent: &Intent, started: Instant) {
        self.p.metrics.inc(
            "kefu_turns_total",
            &[("channel", channel), ("intent", intent.intent.as_str())],
        );
        self.p.metrics.observe_turn(started.elapsed());
    }

    fn transfer_message(&self, zh: bool) -> &str {
        if zh {
            &self.p.config.handoff.message_zh
        } else {
            &self.p.config.handoff.message
        }
    }

    #[allow(clippy::too_many_arguments)]
    async fn route(
        &self,
        m: &Inbound,
        text: &str,
        intent: &Intent,
        rule: Option<Reason>,
        last_seen_ms: u64,
        conv: &mut Conversation,
        out: &mut Outlet,
    ) -> Draft {
        let zh = conv.zh;
        let replies = &self.p.config.replies;
        match &m.content {
            ContentKind::Text | ContentKind::RichText => {}
            _ if transcribed(m) => {}
            ContentKind::Event(name) => {
                // Greet on opening the app, but not again within a few hours: WeCom sends
                // `enter_agent` every time a member opens it.
                let recent = self.p.clock.now_ms().saturating_sub(last_seen_ms) < GREET_AGAIN_MS;
                let greet = matches!(name.as_str(), "enter_agent" | "subscribe") && !recent;
                return Draft::say(
                    if greet {
                        replies.greeting.get(zh).to_string()
                    } else {
                        String::new()
                    },
                    Route::SmallTalk,
                    true,
                );
            }
            _ if self.p.config.handoff.non_text => {
                // The operator wants a person to look at pictures, files and locations.
                let mut d = Draft::say(String::new(), Route::Handoff, false);
                d.handoff = Some(Reason::NonText);
                return d;
            }
            _ => return Draft::say(replies.non_text.get(zh).to_string(), Route::NonText, false),
        }
        if text.trim().is_empty() {
            return Draft::say(replies.clarify.get(zh).to_string(), Route::Clarify, false);
        }
        if let Some(reason) = rule {
            let mut d = Draft::say(String::new(), Route::Handoff, false);
            if intent.intent == IntentKind::Complaint {
                d.route = Route::Empathy;
            }
            d.handoff = Some(reason);
            return d;
        }
        if let Some(d) = self.continue_flow(m, text, intent, conv).await {
            return d;
        }
        if let Some(st) = intent.small_talk {
            return self.small_talk(st, zh);
        }
        if matches!(intent.intent, IntentKind::Query | IntentKind::Other) && safety::is_vague(text)
        {
            // Nothing to search for: ask, and count the turn as unresolved; only repeated
            // vagueness hands over (handoff.max_unresolved_turns).
            return Draft::say(replies.vague.get(zh).to_string(), Route::Clarify, false);
        }
        match intent.intent {
            IntentKind::Praise => {
                Draft::say(replies.thanks.get(zh).to_string(), Route::Thanks, true)
            }
            IntentKind::Refund | IntentKind::Cancel => {
                let kind = if intent.intent == IntentKind::Refund {
                    flow::FlowKind::Refund
                } else {
                    flow::FlowKind::Cancel
                };
                let hits = self.retrieve(text).await;
                let f = flow::start(kind, intent.order.clone(), text);
                let action = match &f.order {
                    Some(order) => flow::Action::Confirm {
                        order: order.clone(),
                    },
                    None => flow::Action::AskOrder { declined: false },
                };
                let mut reply = String::new();
                // What the policy says to this request (the sentence that answers it best),
                // then the flow's question.
                let said = self.policy_line(text, &hits, zh);
                if let Some((line, _)) = &said {
                    reply.push_str(line);
                    reply.push(if zh { '\n' } else { ' ' });
                }
                reply.push_str(
                    &flow::prompt(&action, &self.flow_texts(kind, zh)).unwrap_or_default(),
                );
                conv.flow = Some(f);
                let mut d = Draft::say(reply, Route::Flow, true);
                let used = said.map_or(0, |(_, hit)| hit);
                d.sources = sources(&hits[used..hits.len().min(used + 1)]);
                d.retrieved = sources(&hits);
                d
            }
            IntentKind::Complaint => {
                // "still no" says nothing a rule could answer: only a complaint about
                // something is looked up in the rules first.
                let hits = if safety::is_vague(text) {
                    self.retrieve(text).await
                } else {
                    self.retrieve_rules(text).await
                };
                let empathy = replies.empathy.get(zh);
                if hits.is_empty() {
                    let ask = if intent.needs_order_info {
                        flow::fill(
                            replies.complaint_ask_order.get(zh),
                            "",
                            "",
                            replies.order_hint.get(zh),
                        )
                    } else {
                        replies.complaint_ask.get(zh).to_string()
                    };
                    return Draft::say(format!("{empathy} {ask}"), Route::Empathy, false);
                }
                out.release(&format!("{empathy} "));
                let mut d = self.answer(text, &hits, zh, true, out).await;
                if d.handoff.is_none() && d.route != Route::Cancelled {
                    d.reply = format!("{empathy} {}", d.reply);
                    d.route = Route::Empathy;
                }
                d
            }
            IntentKind::Other => {
                // Off-topic is what the knowledge cannot answer; a message the classifier
                // found no intent in may still be a question the knowledge answers.
                let (hits, asked) = self.retrieve_following(text, conv.topic.as_ref()).await;
                if !hits.is_empty() {
                    let d = self.answer(text, &hits, zh, false, out).await;
                    remember_topic(conv, &asked, &hits, &d);
                    return d;
                }
                match intent.closing {
                    Some(st) => self.small_talk(st, zh),
                    None => self.off_topic(zh),
                }
            }
            IntentKind::Query => {
                let (hits, asked) = self.retrieve_following(text, conv.topic.as_ref()).await;
                if let (true, Some(st)) = (hits.is_empty(), intent.closing) {
                    // "i enjoyed our talk, bye": a farewell, not a question for a person.
                    return self.small_talk(st, zh);
                }
                let d = self.answer(text, &hits, zh, false, out).await;
                remember_topic(conv, &asked, &hits, &d);
                d
            }
        }
    }

    /// The configured reply to hello, "are you a bot?", thanks or goodbye.
    fn small_talk(&self, st: SmallTalk, zh: bool) -> Draft {
        let replies = &self.p.config.replies;
        let r = match st {
            SmallTalk::Hello => &replies.greeting,
            SmallTalk::Identity => &replies.identity,
            SmallTalk::Thanks => &replies.thanks,
            SmallTalk::Bye => &replies.goodbye,
        };
        Draft::say(r.get(zh).to_string(), Route::SmallTalk, true)
    }

    /// What `intent.other` says to do with a message nothing answers.
    fn off_topic(&self, zh: bool) -> Draft {
        let replies = &self.p.config.replies;
        match self.p.config.intent.other {
            OtherRoute::Clarify => {
                Draft::say(replies.clarify.get(zh).to_string(), Route::Clarify, false)
            }
            OtherRoute::Handoff => {
                let mut d = Draft::say(String::new(), Route::Handoff, false);
                d.handoff = Some(Reason::Other);
                d
            }
        }
    }

    /// The flow's sentences from `[replies]`, for `kind` in the customer's language.
    fn flow_texts(&self, kind: flow::FlowKind, zh: bool) -> flow::Texts<'_> {
        let r = &self.p.config.replies;
        flow::Texts {
            ask_order: r.ask_order.get(zh),
            hint: r.order_hint.get(zh),
            confirm: r.confirm.get(zh),
            declined: r.declined.get(zh),
            what: match kind {
                flow::FlowKind::Refund => r.refund_what.get(zh),
                flow::FlowKind::Cancel => r.cancel_what.get(zh),
            },
        }
    }

    /// A refund / cancel flow waiting for this customer's answer: one step of the state
    /// machine in `flow.rs`, its action turned into a reply (or the business action run).
    async fn continue_flow(
        &self,
        m: &Inbound,
        text: &str,
        intent: &Intent,
        conv: &mut Conversation,
    ) -> Option<Draft> {
        let state = conv.flow.clone()?;
        let zh = conv.zh;
        let kind = flow::FlowKind::parse(&state.kind).unwrap_or(flow::FlowKind::Refund);
        let reason = state.reason.clone();
        let reply = flow::Reply {
            answer: flow::read_answer(text),
            order: intent.order.clone(),
            // A message of its own (not "yes", "no", a number, or the flow's request again):
            // answer it, keep the flow. A complaint or a question asked mid-flow ("is my data
            // used to train your AI?" after "I want to stop my subscription") is answered as
            // one, not met with the order-number question again.
            new_question: !matches!(intent.intent, IntentKind::Refund | IntentKind::Cancel)
                && intent.small_talk.is_none()
                && text.chars().count() > 12,
        };
        let (next, action) = flow::step(state, &reply);
        let replies = &self.p.config.replies;
        match action {
            flow::Action::PassThrough => None,
            flow::Action::Dropped => {
                conv.flow = None;
                Some(Draft::say(
                    replies.dropped.get(zh).to_string(),
                    Route::Flow,
                    true,
                ))
            }
            flow::Action::AskOrder { .. } | flow::Action::Confirm { .. } => {
                let text = flow::prompt(&action, &self.flow_texts(kind, zh)).unwrap_or_default();
                // Giving the order number moves the request on; anything else does not.
                let progressed =
                    matches!(action, flow::Action::Confirm { .. }) && reply.order.is_some();
                conv.flow = next;
                Some(Draft::say(text, Route::Flow, progressed))
            }
            flow::Action::Execute { kind, order } => {
                conv.flow = None;
                let what = self.flow_texts(kind, zh).what;
                let req = ActionRequest {
                    kind: kind.as_str().to_string(),
                    order: order.clone(),
                    channel: m.channel.clone(),
                    conversation: m.conversation.clone(),
                    user: m.user.id.clone(),
                    reason,
                };
                Some(match self.p.actions.run(&req).await {
                    ActionOutcome::Done { message } => {
                        let reply = if message.is_empty() {
                            flow::fill(replies.done.get(zh), what, &order, "")
                        } else {
                            message
                        };
                        Draft::say(reply, Route::Flow, true)
                    }
                    ActionOutcome::Handoff => {
                        let mut d = Draft::say(
                            flow::fill(replies.noted.get(zh), what, &order, ""),
                            Route::Flow,
                            true,
                        );
                        d.handoff = Some(Reason::BusinessAction);
                        d
                    }
                    ActionOutcome::Failed { error } => {
                        warn!(%error, "business action failed");
                        let mut d = Draft::say(String::new(), Route::Flow, false);
                        d.handoff = Some(Reason::BusinessAction);
                        d
                    }
                })
            }
        }
    }

    /// The sentence of `hits` that best answers `text` (the built-in generator's choice,
    /// whatever generator answers questions: a flow's preface is quoted, never written),
    /// and the hit it is from. A long FAQ answer gives its first sentence.
    fn policy_line(&self, text: &str, hits: &[Hit], zh: bool) -> Option<(String, usize)> {
        // From the best hit's page only (its other sections may hold the line): another
        // page, or another FAQ entry, is not what retrieval found best for this request.
        let top = hits.first()?;
        let (at, page_hits): (Vec<usize>, Vec<Hit>) = hits
            .iter()
            .enumerate()
            .filter(|(_, h)| h.source == top.source)
            .map(|(i, h)| (i, h.clone()))
            .unzip();
        let req = GenerateRequest {
            question: text,
            hits: &page_hits,
            zh,
            transfer_message: "",
            other_language_note: "",
            whole_rule: false,
        };
        let (line, i) = crate::providers::builtin_generator::best_sentence(&req)?;
        let hit = at[i];
        if crate::text::word_count(&line) > POLICY_LINE_WORDS {
            return first_sentence(&line).map(|s| (s, hit));
        }
        Some((line, hit))
    }

    /// Chunks for a complaint: what the customer needs is the shop's rule for it (what
    /// happens to a teapot that arrived cracked, to tea that arrived mouldy), so hits from
    /// `knowledge.policy_categories` have their odds raised by [`POLICY_LIFT`] and come
    /// first; the rest follow. Only chunks at or above `min_score`, at most `top_k`.
    async fn retrieve_rules(&self, text: &str) -> Vec<Hit> {
        let k = &self.p.config.knowledge;
        let mut hits = self.search(text, POLICY_POOL.max(k.top_k)).await;
        let is_policy = |h: &Hit| k.policy_categories.contains(&h.category);
        for h in hits.iter_mut().filter(|h| is_policy(h)) {
            h.score = lift(h.score, POLICY_LIFT);
        }
        hits.retain(|h| h.score >= k.min_score);
        // Stable: within each group the search's order (best first) is kept.
        hits.sort_by_key(|h| !is_policy(h));
        hits.truncate(k.top_k);
        hits
    }

    /// [`Engine::retrieve`] for a question that may follow up the conversation's `topic`
    /// ("到货的时候还要另外交GST吗" after "How long does delivery to Singapore take?", "那250g的呢"
    /// after a price): it is also searched together with the topic's question, and that
    /// search is taken when its best hit
    /// - beats the question's own by [`FOLLOW_UP_MARGIN`],
    /// - and is among the question's own [`FOLLOW_UP_POOL`] best, whatever their scores (the
    ///   question itself points at it: "what's the weather tomorrow" after a shipping
    ///   question is off-topic, not a shipping question).
    ///
    /// The best hit may be the chunk that answered the topic when the question has no
    /// answer alone or refers back to the last one ([`crate::text::question::refers_back`]):
    /// a section states several facts ("how long does it take" after "do you ship to
    /// singapore" is answered by another sentence of the same section). Returns the hits and the question they were
    /// searched with (the merged one when it was taken: the thread's next topic).
    async fn retrieve_following(&self, text: &str, topic: Option<&Topic>) -> (Vec<Hit>, String) {
        let alone = self.retrieve(text).await;
        let own_best = alone.first().map_or(0.0, |h| h.score);
        // Scores are probabilities: past 1 − margin no merged search can do better.
        let Some(topic) = topic.filter(|_| own_best + FOLLOW_UP_MARGIN <= 1.0) else {
            return (alone, text.to_string());
        };
        let question = thread(&topic.question, text);
        let merged = self.retrieve(&question).await;
        // The chunk that answered the topic again: only for a question that has no answer
        // of its own or leans on the last one; otherwise it is the old topic outweighing a
        // new question ("is there delivery at the weekend?" after a delivery time).
        let again_allowed = alone.is_empty() || crate::text::question::refers_back(text);
        let Some(top) = merged.first().filter(|top| {
            (again_allowed || chunk_name(top) != topic.chunk)
                && top.score >= own_best + FOLLOW_UP_MARGIN
        }) else {
            return (alone, text.to_string());
        };
        let own = self.search(text, FOLLOW_UP_POOL).await;
        let name = chunk_name(top);
        if !own.iter().any(|h| chunk_name(h) == name) {
            return (alone, text.to_string());
        }
        debug!(topic = %topic.question, "follow-up searched with the conversation's topic");
        (merged, question)
    }

    /// Chunks above `min_score`, best first.
    async fn retrieve(&self, text: &str) -> Vec<Hit> {
        let k = &self.p.config.knowledge;
        let mut hits = self.search(text, k.top_k).await;
        hits.retain(|h| h.score >= k.min_score);
        hits
    }

    /// The best `top_k` chunks, whatever their scores; none when retrieval fails (logged:
    /// the customer then gets the no-knowledge path, not an error).
    async fn search(&self, text: &str, top_k: usize) -> Vec<Hit> {
        self.p
            .retriever
            .search(text, top_k)
            .await
            .unwrap_or_else(|e| {
                warn!(error = %e, "retrieval failed");
                Vec::new()
            })
    }

    /// Knowledge answer with the confidence and no-knowledge rules applied. Streamed through
    /// `out` when it streams.
    /// `whole_rule`: quote a short section as written (see [`GenerateRequest::whole_rule`]).
    async fn answer(
        &self,
        question: &str,
        hits: &[Hit],
        zh: bool,
        whole_rule: bool,
        out: &mut Outlet,
    ) -> Draft {
        if hits.is_empty() {
            let mut d = Draft::say(String::new(), Route::Handoff, false);
            d.confidence = 0.0;
            d.handoff = Some(Reason::NoKnowledge);
            return d;
        }
        let req = GenerateRequest {
            question,
            hits,
            zh,
            transfer_message: self.transfer_message(zh),
            other_language_note: self.p.config.replies.other_language.get(zh),
            whole_rule,
        };
        let first = match self.generate(self.p.generator.as_ref(), &req, out).await {
            Generated::Answer(a) => Ok(a),
            Generated::Failed(e) => Err(e),
            stop => return stop.into_draft(out),
        };
        let answer = match first {
            Ok(a) => a,
            Err(e) => {
                warn!(generator = self.p.generator.name(), error = %e, "generator failed; using the built-in one");
                self.p.metrics.inc(
                    "kefu_provider_failures_total",
                    &[("provider", self.p.generator.name())],
                );
                // Whatever the failed answer showed is withdrawn before the fallback's text.
                out.retract(if e.contains("ungrounded") {
                    "ungrounded"
                } else {
                    "upstream"
                });
                match self
                    .generate(self.p.fallback_generator.as_ref(), &req, out)
                    .await
                {
                    Generated::Answer(a) => a,
                    Generated::Failed(_) => {
                        out.retract("upstream");
                        let mut d = Draft::say(String::new(), Route::Handoff, false);
                        d.handoff = Some(Reason::UpstreamFailure);
                        return d;
                    }
                    stop => return stop.into_draft(out),
                }
            }
        };
        let used: Vec<Hit> = answer
            .used
            .iter()
            .filter_map(|&i| hits.get(i).cloned())
            .collect();
        let mut d = Draft::say(answer.text, Route::Knowledge, true);
        d.confidence = answer.confidence;
        d.sources = sources(if used.is_empty() { hits } else { &used });
        d.retrieved = sources(hits);
        if answer.declined {
            d.handoff = Some(Reason::NoKnowledge);
            d.resolved = false;
        } else if let Some(r) = self.rules.after_answer(answer.confidence, 0) {
            d.handoff = Some(r);
            d.resolved = false;
        }
        d
    }
}

/// A probability with its log-odds moved by `shift`.
fn lift(p: f32, shift: f32) -> f32 {
    let p = p.clamp(1e-6, 1.0 - 1e-6);
    let logit = (p / (1.0 - p)).ln() + shift;
    1.0 / (1.0 + (-logit).exp())
}

/// A voice message the platform transcribed reads like text (an untranscribed one carries
/// a bracketed note such as `[语音]`).
fn transcribed(m: &Inbound) -> bool {
    m.content == ContentKind::Voice
        && !m.text.trim().is_empty()
        && !m.text.trim_start().starts_with('[')
}

fn neutral_intent() -> Intent {
    Intent {
        intent: IntentKind::Other,
        urgency: Urgency::Low,
        sentiment: Sentiment::Neutral,
        needs_order_info: false,
        order: None,
        small_talk: None,
        sentiment_score: 0.0,
        hazard: false,
        closing: None,
    }
}

/// How much better (calibrated score of the best hit) a search with the conversation's
/// topic must do than the question alone to be taken: a tenth, chosen, not fitted.
const FOLLOW_UP_MARGIN: f32 = 0.1;
/// How far down the question's own ranking the follow-up's answer may be.
const FOLLOW_UP_POOL: usize = 20;

/// A chunk's name in a [`Topic`]: its source and heading path.
fn chunk_name(h: &Hit) -> String {
    std::iter::once(h.source.as_str())
        .chain(h.heading_path.iter().map(String::as_str))
        .collect::<Vec<_>>()
        .join(" › ")
}

/// After a question answered from the knowledge, it is the conversation's topic.
/// A thread's question: the topic's questions and the follow-up, one per line, the last
/// [`THREAD_QUESTIONS`] kept ("do you ship to singapore" / "how long does it take" / "and is
/// there gst": the third is about Singapore too).
fn thread(topic: &str, text: &str) -> String {
    let lines: Vec<&str> = topic.lines().chain(std::iter::once(text)).collect();
    lines[lines.len().saturating_sub(THREAD_QUESTIONS)..].join("\n")
}

/// How many questions of a thread a follow-up is searched with.
const THREAD_QUESTIONS: usize = 3;

fn remember_topic(conv: &mut Conversation, question: &str, hits: &[Hit], d: &Draft) {
    if d.handoff.is_some() || d.sources.is_empty() {
        return;
    }
    if let Some(top) = hits.iter().find(|h| h.source == d.sources[0].path) {
        conv.topic = Some(Topic {
            question: question.to_string(),
            chunk: chunk_name(top),
        });
    }
}

fn sources(hits: &[Hit]) -> Vec<SourceRecord> {
    hits.iter()
        .map(|h| SourceRecord {
            title: h.title.clone(),
            path: h.source.clone(),
            score: (h.score * 1000.0).round() / 1000.0,
        })
        .collect()
}

fn first_sentence(text: &str) -> Option<String> {
    crate::text::split_sentences(text)
        .into_iter()
        // Prose only: headings, table rows and list items say little on their own.
        .find(|s| {
            let s = s.trim_start();
            !s.starts_with(['#', '|', '-', '*', '+', '>']) && s.chars().count() >= 8
        })
}

#[cfg(test)]
mod tests;
