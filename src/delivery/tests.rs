use std::sync::Mutex;

use adapters::CallAuth;

use super::*;
use crate::clock::FixedClock;
use crate::store::MemoryStore;

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
    let s = Arc::new(Scripted {
        answers: Mutex::new(answers),
        sent: Mutex::new(vec![]),
    });
    let clock = Arc::new(FixedClock::at_ms(1_000_000));
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let mut senders: HashMap<String, Arc<dyn Sender>> = HashMap::new();
    senders.insert("t".into(), s.clone());
    let o = Arc::new(Outbox::new(
        store.clone(),
        senders,
        clock.clone(),
        Arc::new(Metrics::new()),
    ));
    (o, s, clock, store)
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
async fn permanent_failure_uses_the_fallback_then_drops() {
    let (o, s, _, store) = outbox(vec![
        Err(SendError::Permanent("webhook expired".into())),
        Err(SendError::Permanent("bad user".into())),
    ]);
    o.enqueue("t", "c1", vec![(call("webhook"), vec![call("openapi")])])
        .unwrap();
    o.drain_target("t").await;
    assert_eq!(*s.sent.lock().unwrap(), ["webhook", "openapi"]);
    assert_eq!(store.outbox_len().unwrap(), 0);
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
