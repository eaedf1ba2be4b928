use std::sync::Mutex;

use adapters::CallAuth;

use super::*;
use crate::clock::FixedClock;
use crate::config::DeliveryConfig;
use crate::metrics::Metrics;
use crate::store::{DeadLetter, GroupCommit, MemoryStore, StoreHealth};

/// Answers from a script, records what it was asked to send.
struct Scripted {
    answers: Mutex<Vec<Result<(), SendError>>>,
    sent: Mutex<Vec<String>>,
}

#[async_trait]
impl Sender for Scripted {
    async fn send(&self, call: &Call) -> Result<(), SendError> {
        self.sent.lock().unwrap().push(call.body.clone());
        let mut a = self.answers.lock().unwrap();
        if a.is_empty() {
            Ok(())
        } else {
            a.remove(0)
        }
    }
}

fn call(body: &str) -> Call {
    Call {
        method: "POST".into(),
        url: "/send".into(),
        body: body.into(),
        auth: CallAuth::None,
    }
}

fn outbox(
    answers: Vec<Result<(), SendError>>,
) -> (Arc<Outbox>, Arc<Scripted>, Arc<FixedClock>, Arc<dyn Store>) {
    outbox_with(answers, DeliveryConfig::default(), memory())
}

fn memory() -> Arc<dyn Store> {
    Arc::new(MemoryStore::new())
}

fn outbox_with(
    answers: Vec<Result<(), SendError>>,
    policy: DeliveryConfig,
    store: Arc<dyn Store>,
) -> (Arc<Outbox>, Arc<Scripted>, Arc<FixedClock>, Arc<dyn Store>) {
    let s = Arc::new(Scripted {
        answers: Mutex::new(answers),
        sent: Mutex::new(vec![]),
    });
    let clock = Arc::new(FixedClock::at_ms(1_000_000));
    let mut senders: HashMap<String, Arc<dyn Sender>> = HashMap::new();
    senders.insert("t".into(), s.clone());
    let o = Arc::new(Outbox::new(
        store.clone(),
        GroupCommit::start(store.clone(), StoreHealth::new()),
        senders,
        clock.clone(),
        Arc::new(Metrics::new()),
        policy,
    ));
    (o, s, clock, store)
}

/// An outbox whose target "t" is delivered by `sender`, its clock at `at_ms`.
fn outbox_sending_to(store: &Arc<dyn Store>, sender: Arc<dyn Sender>, at_ms: u64) -> Outbox {
    let mut senders: HashMap<String, Arc<dyn Sender>> = HashMap::new();
    senders.insert("t".into(), sender);
    Outbox::new(
        store.clone(),
        GroupCommit::start(store.clone(), StoreHealth::new()),
        senders,
        Arc::new(FixedClock::at_ms(at_ms)),
        Arc::new(Metrics::new()),
        DeliveryConfig::default(),
    )
}

#[tokio::test]
async fn sends_in_order_and_empties_the_outbox() {
    let (o, s, _, store) = outbox(vec![]);
    o.enqueue("t", "c1", vec![(call("a"), vec![]), (call("b"), vec![])])
        .unwrap();
    assert_eq!(o.drain_target("t").await, 2);
    assert_eq!(*s.sent.lock().unwrap(), ["a", "b"]);
    assert_eq!(store.outbox_len().unwrap(), 0);
}

#[tokio::test]
async fn a_failure_waits_with_backoff_and_keeps_order() {
    let (o, s, clock, store) = outbox(vec![Err(SendError::Retry("503".into()))]);
    o.enqueue("t", "c1", vec![(call("a"), vec![]), (call("b"), vec![])])
        .unwrap();
    assert_eq!(o.drain_target("t").await, 0);
    assert_eq!(store.outbox_len().unwrap(), 2, "nothing lost");
    assert_eq!(
        o.drain_target("t").await,
        0,
        "not due yet; b does not overtake a"
    );
    clock.advance(backoff(1));
    assert_eq!(o.drain_target("t").await, 2);
    assert_eq!(*s.sent.lock().unwrap(), ["a", "a", "b"]);
}

#[tokio::test]
async fn permanent_failure_uses_the_fallback_then_becomes_a_dead_letter() {
    let (o, s, _, store) = outbox(vec![
        Err(SendError::Permanent("webhook expired".into())),
        Err(SendError::Permanent("bad user".into())),
    ]);
    o.enqueue("t", "c1", vec![(call("webhook"), vec![call("openapi")])])
        .unwrap();
    o.enqueue("t", "c1", vec![(call("next"), vec![])]).unwrap();
    o.drain_target("t").await;
    assert_eq!(
        *s.sent.lock().unwrap(),
        ["webhook", "openapi", "next"],
        "the conversation's next reply goes on"
    );
    assert_eq!(store.outbox_len().unwrap(), 0);
    let dead = store.dead_letters(10).unwrap();
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].item.call.body, "openapi");
    assert!(dead[0].reason.contains("bad user"), "{}", dead[0].reason);
}

#[tokio::test]
async fn rate_limited_waits_as_told() {
    let (o, _, clock, store) = outbox(vec![Err(SendError::RetryAfter(
        Duration::from_secs(30),
        "45009".into(),
    ))]);
    o.enqueue("t", "c1", vec![(call("a"), vec![])]).unwrap();
    o.drain_target("t").await;
    clock.advance(Duration::from_secs(29));
    assert_eq!(o.drain_target("t").await, 0);
    clock.advance(Duration::from_secs(1));
    assert_eq!(o.drain_target("t").await, 1);
    assert_eq!(store.outbox_len().unwrap(), 0);
}

#[test]
fn backoff_grows_and_caps() {
    assert_eq!(backoff(1), Duration::from_secs(1));
    assert_eq!(backoff(3), Duration::from_secs(4));
    assert_eq!(backoff(50), Duration::from_secs(256));
}

#[tokio::test]
async fn a_waiting_queue_does_not_hold_up_other_conversations() {
    let (o, s, _, store) = outbox(vec![Err(SendError::RetryAfter(
        Duration::from_secs(60),
        "busy".into(),
    ))]);
    o.enqueue("t", "c1", vec![(call("a1"), vec![]), (call("a2"), vec![])])
        .unwrap();
    o.enqueue("t", "c2", vec![(call("b1"), vec![])]).unwrap();
    assert_eq!(o.drain_target("t").await, 1);
    assert_eq!(
        *s.sent.lock().unwrap(),
        ["a1", "b1"],
        "a2 waits behind a1; b1 does not"
    );
    assert_eq!(store.outbox_len().unwrap(), 2);
}

#[tokio::test]
async fn a_fallback_in_parts_sends_every_part_in_order() {
    let (o, s, _, store) = outbox(vec![Err(SendError::Permanent("expired".into()))]);
    o.enqueue(
        "t",
        "c1",
        vec![
            (call("webhook"), vec![call("api-1"), call("api-2")]),
            (call("next"), vec![]),
        ],
    )
    .unwrap();
    assert_eq!(o.drain_target("t").await, 3);
    assert_eq!(
        *s.sent.lock().unwrap(),
        ["webhook", "api-1", "api-2", "next"]
    );
    assert_eq!(store.outbox_len().unwrap(), 0);
}

#[tokio::test]
async fn a_reply_that_keeps_failing_becomes_a_dead_letter_and_its_queue_goes_on() {
    let policy = DeliveryConfig {
        max_attempts: 3,
        ..DeliveryConfig::default()
    };
    let failures = (0..3)
        .map(|_| Err(SendError::Retry("HTTP 503".into())))
        .collect();
    let (o, s, clock, store) = outbox_with(failures, policy, memory());
    o.enqueue(
        "t",
        "c1",
        vec![(call("stuck"), vec![]), (call("later"), vec![])],
    )
    .unwrap();
    for _ in 0..3 {
        o.drain_target("t").await;
        clock.advance(Duration::from_secs(300));
    }
    assert_eq!(
        *s.sent.lock().unwrap(),
        ["stuck", "stuck", "stuck", "later"]
    );
    assert_eq!(store.outbox_len().unwrap(), 0);
    let dead = store.dead_letters(10).unwrap();
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].item.attempts, 3);
    assert!(
        dead[0].reason.contains("failed 3 times"),
        "{}",
        dead[0].reason
    );
    assert!(dead[0].reason.contains("HTTP 503"), "{}", dead[0].reason);
}

#[tokio::test]
async fn a_reply_older_than_max_age_becomes_a_dead_letter() {
    let policy = DeliveryConfig {
        max_age_secs: 60,
        ..DeliveryConfig::default()
    };
    let failures = (0..2)
        .map(|_| Err(SendError::Retry("timeout".into())))
        .collect();
    let (o, _, clock, store) = outbox_with(failures, policy, memory());
    o.enqueue("t", "c1", vec![(call("slow"), vec![])]).unwrap();
    o.drain_target("t").await;
    assert_eq!(store.dead_letter_count().unwrap(), 0, "young: retried");
    clock.advance(Duration::from_secs(61));
    o.drain_target("t").await;
    assert_eq!(store.dead_letter_count().unwrap(), 1);
    assert!(store.dead_letters(1).unwrap()[0]
        .reason
        .contains("after 61 s"));
}

#[tokio::test]
async fn retry_after_is_capped() {
    let policy = DeliveryConfig {
        max_retry_after_secs: 30,
        ..DeliveryConfig::default()
    };
    let (o, _, clock, store) = outbox_with(
        vec![Err(SendError::RetryAfter(
            Duration::from_secs(86_400),
            "Retry-After: 86400".into(),
        ))],
        policy,
        memory(),
    );
    o.enqueue("t", "c1", vec![(call("a"), vec![])]).unwrap();
    o.drain_target("t").await;
    clock.advance(Duration::from_secs(30));
    assert_eq!(o.drain_target("t").await, 1, "waited 30 s, not a day");
    assert_eq!(store.outbox_len().unwrap(), 0);
}

/// Sees, during the send, what a crash would leave behind.
struct Peek {
    store: Arc<dyn Store>,
    faulty: Arc<crate::testing::FaultyStore>,
    seen: Mutex<Vec<(Option<u64>, usize)>>,
}

#[async_trait]
impl Sender for Peek {
    async fn send(&self, _call: &Call) -> Result<(), SendError> {
        let item = self.store.outbox_items("t", 1).unwrap().remove(0);
        let flushes = self
            .faulty
            .flushes
            .load(std::sync::atomic::Ordering::SeqCst);
        self.seen
            .lock()
            .unwrap()
            .push((item.sending_since_ms, flushes));
        Ok(())
    }
}

#[tokio::test]
async fn the_sending_mark_is_on_disk_before_the_call_goes_out() {
    let faulty = Arc::new(crate::testing::FaultyStore::new(memory()));
    let store: Arc<dyn Store> = faulty.clone();
    let peek = Arc::new(Peek {
        store: store.clone(),
        faulty: faulty.clone(),
        seen: Mutex::new(vec![]),
    });
    let o = outbox_sending_to(&store, peek.clone(), 5_000);
    o.enqueue("t", "c1", vec![(call("a"), vec![])]).unwrap();
    assert_eq!(o.drain_target("t").await, 1);
    assert_eq!(*peek.seen.lock().unwrap(), [(Some(5_000), 1)]);
    assert_eq!(store.outbox_len().unwrap(), 0);
}

#[tokio::test]
async fn a_send_cut_off_by_a_crash_is_not_sent_again_but_dead_lettered() {
    let store = memory();
    let (o, _, _, _) = outbox_with(vec![], DeliveryConfig::default(), store.clone());
    o.enqueue(
        "t",
        "c1",
        vec![(call("maybe"), vec![]), (call("next"), vec![])],
    )
    .unwrap();
    // What a crash mid-send leaves: the first entry still marked.
    let mut first = store.outbox_items("t", 1).unwrap().remove(0);
    first.sending_since_ms = Some(999_000);
    store.outbox_update(&first).unwrap();

    drop(o);

    // The next start, on the same store.
    let (o2, s2, _, _) = outbox_with(vec![], DeliveryConfig::default(), store.clone());
    assert_eq!(o2.recover(), 1);
    o2.drain_target("t").await;
    assert_eq!(*s2.sent.lock().unwrap(), ["next"]);
    let dead: Vec<DeadLetter> = store.dead_letters(10).unwrap();
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].item.call.body, "maybe");
    assert!(
        dead[0].reason.starts_with("interrupted"),
        "{}",
        dead[0].reason
    );

    // An agent decides it did not arrive: queued again, sent once.
    let letter = store.dead_letter_take(dead[0].item.id).unwrap().unwrap();
    o2.requeue(letter).unwrap();
    o2.drain_target("t").await;
    assert_eq!(*s2.sent.lock().unwrap(), ["next", "maybe"]);
    assert_eq!(store.dead_letter_count().unwrap(), 0);
}

/// A platform that refuses a second copy of a call by itself (WeCom kf `msgid`): calls with
/// an `id:` body are safe to send again, and a resent call it refuses was delivered before.
struct Idempotent(Scripted);

#[async_trait]
impl Sender for Idempotent {
    async fn send(&self, call: &Call) -> Result<(), SendError> {
        self.0.send(call).await
    }
    fn resend_safe(&self, call: &Call) -> bool {
        call.body.starts_with("id:")
    }
    async fn resend(&self, call: &Call) -> Result<(), SendError> {
        match self.0.send(call).await {
            Err(SendError::Permanent(why)) if why == "repeated id" => Ok(()),
            other => other,
        }
    }
}

#[tokio::test]
async fn a_cut_off_send_the_platform_would_refuse_twice_is_simply_sent_again() {
    let store = memory();
    let sender = Arc::new(Idempotent(Scripted {
        answers: Mutex::new(vec![]),
        sent: Mutex::new(vec![]),
    }));
    let o = outbox_sending_to(&store, sender.clone(), 1_000_000);
    o.enqueue(
        "t",
        "c1",
        vec![(call("id:1 maybe"), vec![]), (call("plain maybe"), vec![])],
    )
    .unwrap();
    for mut item in store.outbox_items("t", 10).unwrap() {
        item.sending_since_ms = Some(999_000);
        store.outbox_update(&item).unwrap();
    }
    assert_eq!(
        o.recover(),
        1,
        "only the call without an id is a dead letter"
    );
    o.drain_target("t").await;
    assert_eq!(*sender.0.sent.lock().unwrap(), ["id:1 maybe"]);
    assert_eq!(
        store.dead_letters(10).unwrap()[0].item.call.body,
        "plain maybe"
    );
}

#[tokio::test]
async fn a_resent_call_the_platform_refuses_as_a_repeat_counts_as_delivered() {
    let store = memory();
    // The first send got through before the crash: the platform refuses the repeat.
    let sender = Arc::new(Idempotent(Scripted {
        answers: Mutex::new(vec![Err(SendError::Permanent("repeated id".into()))]),
        sent: Mutex::new(vec![]),
    }));
    let o = outbox_sending_to(&store, sender.clone(), 1_000_000);
    o.enqueue("t", "c1", vec![(call("id:7 hello"), vec![])])
        .unwrap();
    let mut item = store.outbox_items("t", 10).unwrap().remove(0);
    item.sending_since_ms = Some(999_000);
    store.outbox_update(&item).unwrap();
    assert_eq!(o.recover(), 0);
    assert!(store.outbox_items("t", 10).unwrap()[0].resent_after_crash);
    o.drain_target("t").await;
    assert_eq!(*sender.0.sent.lock().unwrap(), ["id:7 hello"]);
    assert_eq!(store.outbox_len().unwrap(), 0, "delivered, not waiting");
    assert_eq!(store.dead_letter_count().unwrap(), 0, "not a dead letter");

    // A refusal of a first send is still a refusal: that call becomes a dead letter.
    sender
        .0
        .answers
        .lock()
        .unwrap()
        .push(Err(SendError::Permanent("repeated id".into())));
    o.enqueue("t", "c1", vec![(call("id:8 new"), vec![])])
        .unwrap();
    o.drain_target("t").await;
    assert_eq!(store.dead_letter_count().unwrap(), 1);
}

#[tokio::test]
async fn a_store_that_cannot_mark_sends_nothing_and_recovers() {
    let faulty = Arc::new(crate::testing::FaultyStore::new(memory()));
    let (o, s, clock, store) = outbox_with(vec![], DeliveryConfig::default(), faulty.clone());
    o.enqueue("t", "c1", vec![(call("a"), vec![])]).unwrap();
    faulty.set_disk_full(true);
    assert_eq!(o.drain_target("t").await, 0);
    assert!(
        s.sent.lock().unwrap().is_empty(),
        "not sent without its mark"
    );
    faulty.set_disk_full(false);
    clock.advance(Duration::from_secs(1));
    assert_eq!(o.drain_target("t").await, 1);
    assert_eq!(store.outbox_len().unwrap(), 0);
}

/// Records each call's body with the number of flushes done before it went out.
struct Counting {
    faulty: Arc<crate::testing::FaultyStore>,
    seen: Mutex<Vec<(String, usize)>>,
}

#[async_trait]
impl Sender for Counting {
    async fn send(&self, call: &Call) -> Result<(), SendError> {
        let flushes = self
            .faulty
            .flushes
            .load(std::sync::atomic::Ordering::SeqCst);
        self.seen.lock().unwrap().push((call.body.clone(), flushes));
        Ok(())
    }
}

#[tokio::test]
async fn conversations_are_sent_in_waves_with_one_flush_for_their_marks() {
    let faulty = Arc::new(crate::testing::FaultyStore::new(memory()));
    let store: Arc<dyn Store> = faulty.clone();
    let counting = Arc::new(Counting {
        faulty: faulty.clone(),
        seen: Mutex::new(vec![]),
    });
    let mut senders: HashMap<String, Arc<dyn Sender>> = HashMap::new();
    senders.insert("t".into(), counting.clone());
    let o = Outbox::new(
        store.clone(),
        GroupCommit::start(store.clone(), StoreHealth::new()),
        senders,
        Arc::new(FixedClock::at_ms(5_000)),
        Arc::new(Metrics::new()),
        DeliveryConfig::default(),
    );
    o.enqueue("t", "c1", vec![(call("a1"), vec![]), (call("a2"), vec![])])
        .unwrap();
    o.enqueue("t", "c2", vec![(call("b1"), vec![])]).unwrap();
    o.enqueue("t", "c3", vec![(call("c1"), vec![])]).unwrap();
    assert_eq!(o.drain_target("t").await, 4);
    assert_eq!(
        *counting.seen.lock().unwrap(),
        [
            ("a1".to_string(), 1),
            ("b1".to_string(), 1),
            ("c1".to_string(), 1),
            ("a2".to_string(), 2)
        ],
        "one flush marks the first wave; a2 waits for a1"
    );
    assert_eq!(store.outbox_len().unwrap(), 0);
}

/// An agent message in conversation `c1` of target `t`, with its delivery `queued`.
fn agent_message(store: &Arc<dyn Store>, seq: u64) {
    let mut m = crate::store::Message::new(seq, crate::store::Role::Agent, "hi", 1);
    m.delivery = Some(Delivery::queued(1));
    store.append_message("t", "c1", &m).unwrap();
}

fn delivery(store: &Arc<dyn Store>, seq: u64) -> Delivery {
    store
        .message("t", "c1", seq)
        .unwrap()
        .unwrap()
        .delivery
        .unwrap()
}

#[tokio::test]
async fn an_agent_message_is_sent_when_its_last_part_is() {
    let (o, _, _, store) = outbox(vec![Ok(()), Err(SendError::Retry("HTTP 503".into()))]);
    let events = Arc::new(Events::new());
    let o = Arc::new(
        Arc::try_unwrap(o)
            .ok()
            .expect("one owner")
            .with_events(events.clone()),
    );
    let mut feed = events.subscribe();
    agent_message(&store, 7);
    o.enqueue_message(
        "t",
        "c1",
        Some(7),
        vec![(call("part 1"), vec![]), (call("part 2"), vec![])],
    )
    .unwrap();
    o.drain_target("t").await;
    let d = delivery(&store, 7);
    assert_eq!(d.state, DeliveryState::Queued, "part 2 waits");
    assert_eq!(
        (d.attempts, d.error.as_deref()),
        (1, Some("retry: HTTP 503"))
    );
    assert_eq!(feed.recv().await.unwrap().kind, EventKind::Delivery);
    o.drain_target("t").await; // not due yet
    assert_eq!(delivery(&store, 7).state, DeliveryState::Queued);
}

#[tokio::test]
async fn an_agent_message_is_sent_or_failed_with_the_reason() {
    let (o, _, clock, store) = outbox(vec![
        Err(SendError::Retry("HTTP 502".into())),
        Ok(()),
        Err(SendError::Permanent("errcode 81013: user not found".into())),
    ]);
    agent_message(&store, 1);
    agent_message(&store, 2);
    o.enqueue_message("t", "c1", Some(1), vec![(call("a"), vec![])])
        .unwrap();
    o.drain_target("t").await;
    clock.advance(backoff(1));
    o.drain_target("t").await;
    let d = delivery(&store, 1);
    assert_eq!((d.state, d.error), (DeliveryState::Sent, None));
    o.enqueue_message("t", "c1", Some(2), vec![(call("b"), vec![])])
        .unwrap();
    o.drain_target("t").await;
    let d = delivery(&store, 2);
    assert_eq!(d.state, DeliveryState::Failed);
    assert_eq!(d.error.as_deref(), Some("errcode 81013: user not found"));
    // A late "queued" does not take a final state back.
    record_delivery(
        store.as_ref(),
        &Events::new(),
        "t",
        "c1",
        1,
        Delivery::queued(9),
    );
    assert_eq!(delivery(&store, 1).state, DeliveryState::Sent);
}
