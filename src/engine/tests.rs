use std::sync::{Arc, Mutex};

use super::actions::{ActionOutcome, HandoffActions};
use super::*;
use crate::config::Config;
use crate::providers::{Answer, ProviderError};
use crate::store::SledStore;
use crate::testing::*;

const REFUND_TEXT: &str = "Annual plans get a full refund within 30 days of the first payment. Refunds reach the original payment method within 5–10 business days.";

fn retriever() -> Arc<KeywordRetriever> {
    Arc::new(
        KeywordRetriever::default()
            .with(&["refund"], "policies/refund.md", REFUND_TEXT, 0.9)
            .with(
                &["退款"],
                "policies/refund.zh.md",
                "年付套餐首次付款后30天内可全额退款。退款将在5–10个工作日内原路退回。",
                0.9,
            )
            .with(
                &["password"],
                "faq/usage.jsonl#reset",
                "Open Settings, choose Security and click Reset password.",
                0.92,
            )
            .with(
                &["export"],
                "faq/usage.jsonl#export",
                "Go to Settings → Data and click Export.",
                0.55,
            ),
    )
}

fn engine() -> TestEngine {
    engine_with(Config::default(), retriever(), memory_store())
}

async fn say(e: &TestEngine, session: &str, text: &str) -> Turn {
    let id = format!("m{}", e.clock.now_ms());
    e.clock.advance(std::time::Duration::from_millis(1));
    e.engine
        .handle(web_message(session, &id, text))
        .await
        .unwrap()
}

#[tokio::test]
async fn answers_a_question_from_knowledge_with_sources() {
    let e = engine();
    let t = say(&e, "s1", "How do I reset my password?").await;
    assert_eq!(t.route, "knowledge");
    assert_eq!(t.intent.intent, IntentKind::Query);
    assert!(t.reply.contains("Reset password"), "{}", t.reply);
    assert_eq!(t.sources[0].path, "faq/usage.jsonl#reset");
    assert!(!t.handoff_active);
    let msgs = e.store.messages("site", "s1", 0, 10).unwrap();
    assert_eq!(msgs.len(), 2);
    assert_eq!(msgs[0].role, Role::User);
    assert_eq!(msgs[1].role, Role::Bot);
}

#[tokio::test]
async fn no_knowledge_hands_over_with_the_transfer_message() {
    let e = engine();
    let t = say(
        &e,
        "s1",
        "What is the airspeed velocity of an unladen swallow?",
    )
    .await;
    assert!(t.handoff_active);
    assert_eq!(t.handoff_reason.as_deref(), Some("no_knowledge"));
    assert_eq!(t.reply, Config::default().handoff.message);
    // ... and then the bot stays silent, storing what the customer says.
    let t = say(&e, "s1", "hello?").await;
    assert_eq!(t.route, "silent");
    assert!(t.reply.is_empty());
    assert_eq!(e.store.messages("site", "s1", 0, 10).unwrap().len(), 3);
    assert_eq!(
        e.metrics
            .get("kefu_handoffs_total", &[("reason", "no_knowledge")]),
        1
    );
}

#[tokio::test]
async fn low_confidence_hands_over() {
    let mut cfg = Config::default();
    cfg.knowledge.min_score = 0.5;
    let e = engine_with(cfg, retriever(), memory_store());
    let t = say(&e, "s1", "can I export stuff").await;
    assert!(t.handoff_active, "{t:?}");
    assert_eq!(t.handoff_reason.as_deref(), Some("low_confidence"));
}

#[tokio::test]
async fn explicit_human_request_in_both_languages() {
    for text in ["转人工", "I want to talk to a human"] {
        let e = engine();
        let t = say(&e, "s", text).await;
        assert_eq!(
            t.handoff_reason.as_deref(),
            Some("human_requested"),
            "{text}"
        );
    }
    let e = engine();
    let t = say(&e, "s", "转人工").await;
    assert_eq!(t.reply, Config::default().handoff.message_zh);
    assert_eq!(t.confidence, 0.0, "a handover is not an answer");
}

#[tokio::test]
async fn a_clarifying_question_reports_no_confidence_small_talk_full() {
    let e = engine();
    let t = say(&e, "s", "嗯…").await;
    assert_eq!(t.route, "clarify", "{t:?}");
    assert_eq!(t.confidence, 0.0);
    let t = say(&e, "s2", "thanks!").await;
    assert_eq!(t.route, "small_talk", "{t:?}");
    assert_eq!(t.confidence, 1.0);
}

#[tokio::test]
async fn small_talk_is_answered_not_handed_over() {
    let e = engine();
    for text in ["hi", "你好", "thanks!", "bye"] {
        let t = say(&e, "s", text).await;
        assert!(!t.handoff_active, "{text}");
        assert!(!t.reply.is_empty());
    }
    assert!(say(&e, "s", "你好").await.reply.contains("您好"));
}

#[tokio::test]
async fn a_longer_farewell_the_knowledge_lacks_is_small_talk_not_a_handover() {
    let e = engine();
    let replies = &Config::default().replies;
    for (text, reply) in [
        (
            "it was a pleasure talking to you, goodbye now",
            &replies.goodbye.en,
        ),
        ("have a nice day", &replies.goodbye.en),
        ("much appreciated, you saved my evening", &replies.thanks.en),
        ("好的 那先这样 回头见", &replies.goodbye.zh),
    ] {
        let t = say(&e, text, text).await;
        // Thanks may be read as praise first: the same reply, another route name.
        assert!(
            matches!(t.route, super::Route::SmallTalk | super::Route::Thanks),
            "{text}: {t:?}"
        );
        assert_eq!(&t.reply, reply, "{text}");
        assert!(!t.handoff_active, "{text}");
    }
    // A farewell around a question the knowledge has nothing for still reaches a person.
    let t = say(
        &e,
        "q",
        "bye, but what does the eclipse look like from mars",
    )
    .await;
    assert_ne!(t.route, "small_talk", "{t:?}");
}

#[tokio::test]
async fn refund_flow_asks_remembers_confirms_and_hands_over() {
    let e = engine();
    let t = say(&e, "s", "I want a refund").await;
    assert_eq!(t.intent.intent, IntentKind::Refund);
    assert!(t.reply.contains("order number"), "{}", t.reply);
    assert_eq!(t.sources[0].path, "policies/refund.md");
    let t = say(&e, "s", "it's LM-20241105-0042").await;
    assert!(
        t.reply.contains("LM-20241105-0042") && t.reply.contains("yes / no"),
        "{}",
        t.reply
    );
    let t = say(&e, "s", "yes").await;
    assert!(t.handoff_active);
    assert_eq!(t.handoff_reason.as_deref(), Some("business_action"));
    let conv = e.store.conversation("site", "s").unwrap().unwrap();
    let h = conv.handoff.unwrap();
    assert!(
        h.summary.contains("order: LM-20241105-0042"),
        "{}",
        h.summary
    );
    assert!(h.summary.contains("intent: refund"), "{}", h.summary);
    assert!(h.summary.contains("I want a refund"), "{}", h.summary);
}

#[tokio::test]
async fn a_complaint_in_the_middle_of_a_flow_is_answered_and_the_flow_waits() {
    for (start, complaint, order) in [
        (
            "I want a refund",
            "this is ridiculous, the mug arrived broken and nobody answers my emails",
            "it's LM-20241105-0042",
        ),
        (
            "我要退款",
            "你们这服务太差了 杯子收到就是碎的 邮件也没人回",
            "LM-20241105-0042",
        ),
    ] {
        let e = engine();
        let t = say(&e, "s", start).await;
        assert_eq!(t.route, "flow", "{start}: {t:?}");
        let t = say(&e, "s", complaint).await;
        assert_eq!(t.intent.intent, IntentKind::Complaint, "{complaint}");
        assert_ne!(t.route, "flow", "{complaint}: {}", t.reply);
        // The flow still waits for the order number.
        let t = say(&e, "s", order).await;
        assert!(t.reply.contains("LM-20241105-0042"), "{start}: {}", t.reply);
    }
}

#[tokio::test]
async fn refund_flow_runs_the_configured_action() {
    let actions = Arc::new(RecordingActions {
        outcome: ActionOutcome::Done {
            message: "Refund RF-1 started.".into(),
        },
        seen: Mutex::new(vec![]),
    });
    let e = engine_full(
        Config::default(),
        retriever(),
        memory_store(),
        Arc::new(crate::providers::BuiltinGenerator::new()),
        actions.clone(),
    );
    say(&e, "s", "取消订单 LM-20241105-0042").await;
    let t = say(&e, "s", "是的").await;
    assert_eq!(t.reply, "Refund RF-1 started.");
    assert!(!t.handoff_active);
    let seen = actions.seen.lock().unwrap();
    assert_eq!(seen[0].kind, "cancel");
    assert_eq!(seen[0].order, "LM-20241105-0042");
}

#[tokio::test]
async fn flow_survives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    {
        let db = sled::open(dir.path()).unwrap();
        let store: Arc<dyn Store> = Arc::new(SledStore::open(&db).unwrap());
        let e = engine_with(Config::default(), retriever(), store);
        say(&e, "s", "我要退款").await;
        e.store.flush().unwrap();
    }
    let db = sled::open(dir.path()).unwrap();
    let store: Arc<dyn Store> = Arc::new(SledStore::open(&db).unwrap());
    let e = engine_with(Config::default(), retriever(), store);
    let t = say(&e, "s", "订单号 LM-20241105-0042").await;
    assert!(
        t.reply.contains("LM-20241105-0042") && t.reply.contains("对吗"),
        "{}",
        t.reply
    );
}

#[tokio::test]
async fn urgent_complaint_gets_empathy_and_a_human() {
    let e = engine();
    let t = say(
        &e,
        "s",
        "This is unacceptable! Fix my account immediately!!!",
    )
    .await;
    assert_eq!(t.intent.intent, IntentKind::Complaint);
    assert!(t.handoff_active);
    assert!(t.reply.starts_with("I'm sorry"), "{}", t.reply);
    // A mild complaint is acknowledged without a handoff.
    let t = say(&e, "s2", "I'm a bit disappointed with the app").await;
    assert!(!t.handoff_active, "{t:?}");
    assert!(t.reply.contains("sorry"), "{}", t.reply);
}

#[tokio::test]
async fn a_complaint_is_answered_from_the_shops_rules_first() {
    let retriever = Arc::new(
        KeywordRetriever::default()
            .with(
                &["teapot"],
                "product/teaware.md",
                "The Xi Shi teapot holds 200 ml and costs ¥680.",
                0.9,
            )
            // Under min_score for a question of unknown kind; a complaint raises its odds.
            .with(
                &["teapot"],
                "policies/returns.md",
                "Teaware that arrives broken must be reported within 48 hours of delivery.",
                0.5,
            ),
    );
    let e = engine_with(Config::default(), retriever, memory_store());
    let t = say(&e, "c", "my teapot arrived broken, really disappointed").await;
    assert_eq!(t.intent.intent, IntentKind::Complaint);
    assert!(t.reply.contains("48 hours"), "{}", t.reply);
    assert_eq!(t.sources[0].path, "policies/returns.md");
    // A question about the same teapot is answered from the product page.
    let t = say(&e, "q", "how much does the teapot hold?").await;
    assert_eq!(t.intent.intent, IntentKind::Query);
    assert_eq!(t.sources[0].path, "product/teaware.md");
    // Without a policy category the complaint is answered like a question.
    let mut cfg = Config::default();
    cfg.knowledge.policy_categories.clear();
    let retriever = Arc::new(KeywordRetriever::default().with(
        &["teapot"],
        "policies/returns.md",
        "Teaware that arrives broken must be reported within 48 hours of delivery.",
        0.5,
    ));
    let e = engine_with(cfg, retriever, memory_store());
    let t = say(&e, "c", "my teapot arrived broken, really disappointed").await;
    assert!(!t.reply.contains("48 hours"), "{}", t.reply);
}

#[tokio::test]
async fn a_follow_up_question_is_searched_with_the_conversations_topic() {
    let retriever = Arc::new(
        KeywordRetriever::default()
            .with(
                &["singapore"],
                "policies/shipping.md",
                "Parcels to Singapore arrive in 6–10 business days.",
                0.9,
            )
            .with(
                &["singapore", "gst"],
                "policies/customs.md",
                "Singapore GST of 9% is collected at checkout, so nothing is due on delivery.",
                0.95,
            )
            // The question alone points at the customs rule, under `min_score`.
            .with(
                &["gst"],
                "policies/customs.md",
                "Singapore GST of 9% is collected at checkout, so nothing is due on delivery.",
                0.4,
            )
            // The shipping page also mentions delivery in passing.
            .with(
                &["delivery"],
                "policies/shipping.md",
                "Parcels to Singapore arrive in 6–10 business days.",
                0.3,
            )
            .with(
                &["weekend"],
                "policies/weekend.md",
                "The warehouse ships on Saturdays and Sundays too.",
                0.7,
            )
            .with(
                &["duty"],
                "policies/duty.md",
                "No import duty is charged on tea for personal use.",
                0.9,
            )
            .with(
                &["singapore", "weather"],
                "guides/climate.md",
                "Singapore is hot all year: parcels travel in insulated boxes.",
                0.92,
            )
            .with(
                &["singapore", "cost"],
                "policies/shipping.md",
                "Parcels to Singapore arrive in 6–10 business days. Shipping there costs S$25.",
                0.95,
            )
            .with(
                &["cost"],
                "product/prices.md",
                "The gaiwan costs ¥120 wherever it ships.",
                0.7,
            )
            // The shipping page says what shipping costs, low for the question alone.
            .with(
                &["cost"],
                "policies/shipping.md",
                "Parcels to Singapore arrive in 6–10 business days. Shipping there costs S$25.",
                0.2,
            )
            .with(
                &["price"],
                "product/prices.md",
                "The gaiwan costs ¥120 wherever it ships.",
                0.7,
            ),
    );
    let e = engine_with(Config::default(), retriever, memory_store());
    for c in ["gst", "price", "weather", "duty", "cost"] {
        let t = say(&e, c, "how long does delivery to Singapore take?").await;
        assert!(t.reply.contains("6–10"), "{}", t.reply);
    }
    // Alone it finds nothing; with the topic it finds the customs rule.
    let t = say(&e, "gst", "do I pay GST on arrival?").await;
    assert!(t.reply.contains("9%"), "{}", t.reply);
    assert_eq!(t.sources[0].path, "policies/customs.md");
    // With the topic, the best hit would be the answer just given (the old topic talking,
    // not the new question): the question's own hits answer.
    let t = say(&e, "price", "is there delivery at the weekend?").await;
    let retrieved: Vec<&str> = t.retrieved.iter().map(|s| s.path.as_str()).collect();
    assert_eq!(retrieved, ["policies/weekend.md"], "{}", t.reply);
    // A merged search only a little better than the question's own is not taken.
    let t = say(&e, "duty", "any duty or gst?").await;
    let retrieved: Vec<&str> = t.retrieved.iter().map(|s| s.path.as_str()).collect();
    assert_eq!(retrieved, ["policies/duty.md"], "{}", t.reply);
    // A message the topic alone connects to a page is not a follow-up of it.
    let t = say(&e, "weather", "what's the weather tomorrow?").await;
    assert!(!t.reply.contains("insulated"), "{}", t.reply);
    // A question that leans on the last one ("it") may be answered by the chunk that
    // answered it, although alone it finds something else (the gaiwan's cost).
    let t = say(&e, "cost", "and what does it cost?").await;
    assert!(t.reply.contains("S$25"), "{}", t.reply);
    // The thread keeps its subject: the next follow-up is still about Singapore.
    let t = say(&e, "cost", "do I pay GST on arrival?").await;
    assert!(t.reply.contains("9%"), "{}", t.reply);
    // Another conversation has no topic: the same follow-up is not understood.
    let t = say(&e, "other", "do I pay GST on arrival?").await;
    assert!(!t.reply.contains("9%"), "{}", t.reply);
}

#[tokio::test]
async fn keywords_and_very_negative_hand_over() {
    let e = engine();
    assert_eq!(
        say(&e, "a", "I'll sue you, lawsuit coming")
            .await
            .handoff_reason
            .as_deref(),
        Some("keyword")
    );
    assert_eq!(
        say(&e, "b", "媒体曝光你们").await.handoff_reason.as_deref(),
        Some("keyword")
    );
    let t = say(&e, "c", "you scammers are disgusting frauds").await;
    assert!(t.handoff_active, "{t:?}");
}

#[tokio::test]
async fn too_many_unresolved_turns_hand_over() {
    let mut cfg = Config::default();
    cfg.handoff.max_unresolved_turns = 2;
    let e = engine_with(cfg, retriever(), memory_store());
    assert!(!say(&e, "s", "hmm").await.handoff_active);
    assert!(!say(&e, "s", "ok").await.handoff_active);
    let t = say(&e, "s", "asdf").await;
    assert_eq!(t.handoff_reason.as_deref(), Some("unresolved"));
}

#[tokio::test]
async fn forbidden_promise_never_leaves() {
    let r = Arc::new(KeywordRetriever::default().with(
        &["refund"],
        "policies/refund.md",
        "We guarantee a refund to everyone.",
        0.95,
    ));
    let e = engine_with(Config::default(), r, memory_store());
    let t = say(&e, "s", "what is the refund policy?").await;
    assert_eq!(
        t.intent.intent,
        IntentKind::Query,
        "a question about refunds is a query"
    );
    assert_eq!(t.handoff_reason.as_deref(), Some("compliance"));
    assert!(!t.reply.contains("guarantee"), "{}", t.reply);
}

#[tokio::test]
async fn personal_data_is_masked_in_answers() {
    let r = Arc::new(KeywordRetriever::default().with(
        &["phone"],
        "faq/contact.jsonl#phone",
        "Call our hotline 13812345678 from 9:00 to 21:00.",
        0.95,
    ));
    let e = engine_with(Config::default(), r, memory_store());
    let t = say(&e, "s", "what is your phone number?").await;
    assert!(t.reply.contains("138****5678"), "{}", t.reply);
}

#[tokio::test]
async fn generator_failure_falls_back_to_builtin() {
    let gen = Arc::new(ScriptedGenerator {
        answers: Mutex::new(vec![Err(ProviderError::Timeout)]),
    });
    let e = engine_full(
        Config::default(),
        retriever(),
        memory_store(),
        gen,
        Arc::new(HandoffActions),
    );
    let t = say(&e, "s", "How do I reset my password?").await;
    assert!(t.reply.contains("Reset password"), "{}", t.reply);
    assert_eq!(
        e.metrics
            .get("kefu_provider_failures_total", &[("provider", "scripted")]),
        1
    );
    let _unused: Option<Answer> = None;
}

#[tokio::test]
async fn agent_reply_and_release() {
    let e = engine();
    say(&e, "s", "转人工").await;
    let (m, conv) = e
        .engine
        .agent_reply("site", "s", "Hi, I'm Li from support.", Some("li"))
        .await
        .unwrap();
    assert_eq!(m.role, Role::Agent);
    assert_eq!(m.agent.as_deref(), Some("li"));
    assert_eq!(
        m.delivery.as_ref().map(|d| d.state),
        Some(crate::store::DeliveryState::Queued)
    );
    let h = conv.handoff.unwrap();
    assert_eq!(
        h.agent.as_deref(),
        Some("li"),
        "writing claims an unclaimed handoff"
    );
    assert!(h.first_reply_ms.is_some());
    e.engine.release("site", "s", Some("li")).await.unwrap();
    let t = say(&e, "s", "How do I reset my password?").await;
    assert_eq!(t.route, "knowledge");
    assert!(matches!(
        e.engine.agent_reply("site", "nobody", "x", None).await,
        Err(EngineError::UnknownConversation)
    ));
    assert!(matches!(
        e.engine.release("site", "s", None).await,
        Err(EngineError::NotHandedOff)
    ));
    assert!(
        matches!(
            e.engine.agent_reply("site", "s", "hi", Some("li")).await,
            Err(EngineError::NotHandedOff)
        ),
        "an agent writes in handed-off conversations only"
    );
    e.engine
        .agent_reply("site", "s", "A note from the CRM.", None)
        .await
        .expect("automation may write anywhere");
}

#[tokio::test]
async fn exactly_one_of_racing_claims_wins() {
    let e = engine();
    say(&e, "s", "talk to a human").await;
    let mut tasks = Vec::new();
    for agent in ["dana", "lei", "mo", "kai"] {
        let engine = e.engine.clone();
        tasks.push(tokio::spawn(async move {
            (agent, engine.claim("site", "s", agent).await)
        }));
    }
    let mut winners = Vec::new();
    let mut told = Vec::new();
    for t in tasks {
        match t.await.unwrap() {
            (agent, Ok(_)) => winners.push(agent),
            (_, Err(EngineError::ClaimedBy(owner))) => told.push(owner),
            (_, Err(other)) => panic!("{other}"),
        }
    }
    assert_eq!(winners.len(), 1, "{winners:?}");
    assert_eq!(told.len(), 3);
    assert!(
        told.iter().all(|o| o == winners[0]),
        "the losers learn who won"
    );
    let conv = e.store.conversation("site", "s").unwrap().unwrap();
    assert_eq!(conv.handoff.unwrap().agent.as_deref(), Some(winners[0]));
    // Claiming again is harmless; the others cannot write, release or close.
    e.engine.claim("site", "s", winners[0]).await.unwrap();
    let other = if winners[0] == "dana" { "lei" } else { "dana" };
    assert!(matches!(
        e.engine.agent_reply("site", "s", "hi", Some(other)).await,
        Err(EngineError::ClaimedBy(_))
    ));
    assert!(matches!(
        e.engine.release("site", "s", Some(other)).await,
        Err(EngineError::ClaimedBy(_))
    ));
    assert!(matches!(
        e.engine.close("site", "s", Some(other), "done").await,
        Err(EngineError::ClaimedBy(_))
    ));
    let claims: Vec<_> = e
        .store
        .messages("site", "s", 0, 50)
        .unwrap()
        .into_iter()
        .filter(|m| m.action.as_deref() == Some("claimed"))
        .collect();
    assert_eq!(claims.len(), 1, "one claim note");
}

#[tokio::test]
async fn a_handoff_carries_its_card_and_events_tell_the_agents() {
    let e = engine();
    let mut feed = e.engine.events().subscribe();
    say(&e, "s", "I want a refund for order 12345678").await;
    say(&e, "s", "转人工").await;
    let h = e
        .store
        .conversation("site", "s")
        .unwrap()
        .unwrap()
        .handoff
        .unwrap();
    assert_eq!(h.reason, "human_requested");
    assert_eq!(h.card.intent, "refund", "the flow underway");
    assert_eq!(h.card.order.as_deref(), Some("12345678"));
    assert!(!h.card.urgency.is_empty() && !h.card.sentiment.is_empty());
    let started = feed.recv().await.unwrap();
    assert_eq!(started.kind, crate::events::EventKind::Handoff);
    assert_eq!(
        (started.channel.as_str(), started.conversation.as_str()),
        ("site", "s")
    );

    say(&e, "s", "hello? anyone?").await;
    assert_eq!(
        feed.recv().await.unwrap().kind,
        crate::events::EventKind::Message
    );

    e.clock.advance(std::time::Duration::from_secs(90));
    e.engine.claim("site", "s", "dana").await.unwrap();
    assert_eq!(
        feed.recv().await.unwrap().kind,
        crate::events::EventKind::Claimed
    );
    e.engine
        .agent_reply("site", "s", "Hello, Dana here.", Some("dana"))
        .await
        .unwrap();
    let reply = feed.recv().await.unwrap();
    assert_eq!(
        (reply.kind, reply.agent.as_deref()),
        (crate::events::EventKind::Reply, Some("dana"))
    );
    let first = e.metrics.first_reply_summary();
    assert_eq!(first.count, 1);
    assert!(first.median_s.unwrap() >= 90.0, "{first:?}");
    e.engine
        .agent_reply("site", "s", "Your refund is on its way.", Some("dana"))
        .await
        .unwrap();
    assert_eq!(
        e.metrics.first_reply_summary().count,
        1,
        "only the first reply counts"
    );

    e.engine
        .close("site", "s", Some("dana"), "refunded order 12345678")
        .await
        .unwrap();
    let conv = e.store.conversation("site", "s").unwrap().unwrap();
    let end = conv.handoff.unwrap().ended.unwrap();
    assert_eq!(end.how, crate::store::HandoffEndKind::Closed);
    assert_eq!(end.note.as_deref(), Some("refunded order 12345678"));
    let last = e.store.messages_before("site", "s", u64::MAX, 1).unwrap();
    assert_eq!(last[0].action.as_deref(), Some("closed"));
    assert_eq!(last[0].text, "refunded order 12345678");
    assert!(e.store.handed_off().unwrap().is_empty());
    assert_eq!(
        e.metrics
            .get("kefu_handoffs_ended_total", &[("how", "closed")]),
        1
    );
    // The bot answers again.
    let t = say(&e, "s", "How do I reset my password?").await;
    assert_eq!(t.route, "knowledge");
}

#[tokio::test]
async fn non_text_gets_a_polite_answer_and_is_stored() {
    let e = engine();
    let mut m = web_message("s", "img1", "[image]");
    m.content = adapters::ContentKind::Image;
    let t = e.engine.handle(m).await.unwrap();
    assert_eq!(t.route, "non_text");
    assert!(t.reply.contains("text"), "{}", t.reply);
    assert_eq!(e.store.messages("site", "s", 0, 10).unwrap().len(), 2);
}

#[tokio::test]
async fn messages_of_one_conversation_are_handled_in_order() {
    let e = engine();
    let mut tasks = Vec::new();
    for i in 0..20 {
        let engine = e.engine.clone();
        tasks.push(tokio::spawn(async move {
            engine
                .handle(web_message(
                    "s",
                    &format!("m{i}"),
                    "How do I reset my password?",
                ))
                .await
                .unwrap()
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let msgs = e.store.messages("site", "s", 0, 100).unwrap();
    assert_eq!(msgs.len(), 40);
    for (i, m) in msgs.iter().enumerate() {
        assert_eq!(m.seq, i as u64 + 1);
        assert_eq!(m.role, if i % 2 == 0 { Role::User } else { Role::Bot });
    }
}

#[tokio::test]
async fn enter_agent_greets_once_within_hours() {
    let e = engine();
    let event = |id: &str| {
        let mut m = web_message("s", id, "");
        m.content = adapters::ContentKind::Event("enter_agent".into());
        m
    };
    let t = e.engine.handle(event("e1")).await.unwrap();
    assert!(t.reply.starts_with("Hello"), "{}", t.reply);
    e.clock.advance(std::time::Duration::from_secs(60));
    assert!(e.engine.handle(event("e2")).await.unwrap().reply.is_empty());
    e.clock.advance(std::time::Duration::from_secs(7 * 3600));
    assert!(!e.engine.handle(event("e3")).await.unwrap().reply.is_empty());
}

#[tokio::test]
async fn transcribed_voice_is_answered_like_text() {
    let e = engine();
    let mut m = web_message("s", "v1", "how do I reset my password");
    m.content = adapters::ContentKind::Voice;
    let t = e.engine.handle(m).await.unwrap();
    assert_eq!(t.route, "knowledge");
    let mut m = web_message("s", "v2", "[语音]");
    m.content = adapters::ContentKind::Voice;
    assert_eq!(e.engine.handle(m).await.unwrap().route, "non_text");
}

#[tokio::test]
async fn a_turn_that_cannot_be_recorded_leaves_nothing_and_reuses_no_seq() {
    let faulty = Arc::new(FaultyStore::new(memory_store()));
    let e = engine_with(Config::default(), retriever(), faulty.clone());
    say(&e, "s1", "How do I reset my password?").await;
    faulty.set_disk_full(true);
    let err = e
        .engine
        .handle(web_message("s1", "m-full", "What is the refund policy?"))
        .await;
    assert!(matches!(err, Err(EngineError::Store(_))), "{err:?}");
    assert_eq!(
        e.store.messages("site", "s1", 0, 10).unwrap().len(),
        2,
        "no half turn"
    );
    faulty.set_disk_full(false);
    say(&e, "s1", "What is the refund policy?").await;
    let seqs: Vec<u64> = e
        .store
        .messages("site", "s1", 0, 10)
        .unwrap()
        .iter()
        .map(|m| m.seq)
        .collect();
    assert_eq!(seqs, [1, 2, 3, 4]);
    assert_eq!(
        e.store
            .conversation("site", "s1")
            .unwrap()
            .unwrap()
            .next_seq,
        5
    );
}

#[tokio::test]
async fn a_forbidden_promise_mid_stream_is_retracted_and_handed_over() {
    let gen = Arc::new(ScriptedGenerator {
        answers: Mutex::new(vec![Ok(Answer {
            text: "Open Settings and click Reset password. We guarantee it works.".into(),
            confidence: 0.9,
            used: vec![0],
            declined: false,
        })]),
    });
    let e = engine_full(
        Config::default(),
        retriever(),
        memory_store(),
        gen,
        Arc::new(HandoffActions),
    );
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let t = e
        .engine
        .handle_streaming(web_message("s", "m1", "How do I reset my password?"), tx)
        .await
        .unwrap();
    let mut events = Vec::new();
    while let Some(ev) = rx.recv().await {
        events.push(ev);
    }
    assert_eq!(
        events,
        vec![
            StreamEvent::Delta("Open Settings and click Reset password. ".into()),
            StreamEvent::Retract {
                reason: "compliance".into()
            },
        ]
    );
    assert_eq!(t.handoff_reason.as_deref(), Some("compliance"));
    assert!(!t.reply.contains("guarantee"), "{}", t.reply);
    // Stored once: the question and the fallback.
    let stored = e.store.messages("site", "s", 0, 10).unwrap();
    assert_eq!(stored.len(), 2);
    assert_eq!(stored[1].text, t.reply);
}

#[tokio::test]
async fn the_builtin_answer_streams_at_once_and_adds_up_to_the_turn() {
    let e = engine();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let t = e
        .engine
        .handle_streaming(web_message("s", "m1", "How do I reset my password?"), tx)
        .await
        .unwrap();
    let mut shown = String::new();
    while let Some(ev) = rx.recv().await {
        match ev {
            StreamEvent::Delta(d) => shown.push_str(&d),
            StreamEvent::Retract { .. } => panic!("nothing to retract"),
        }
    }
    assert_eq!(shown.trim(), t.reply);
    assert!(t.reply.contains("Reset password"));
}
