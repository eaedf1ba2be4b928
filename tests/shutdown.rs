//! Stopping kefu in order (what `serve` does on SIGTERM): the delivery in hand is finished
//! and recorded, nothing is cut off mid-send, the rest stays in the outbox and goes out
//! once after the next start. (The real binary's SIGTERM exit is checked at the end of
//! `crash_recovery.rs`.)

#[path = "common/fake_wecom.rs"]
mod fake_wecom;
#[path = "common/wecom_kefu.rs"]
mod wecom_kefu;

use std::time::Duration;

use fake_wecom::{eventually, FakeWeCom};
use wecom_kefu::{config, write_kb, Kefu, Sealer, AGENT_ID, APP_SECRET, ROBOT_KEY};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_finishes_the_send_in_hand_and_keeps_the_rest_for_the_next_start() {
    let seal = Sealer::official();
    let fake = FakeWeCom::start(&seal.corp_id, APP_SECRET, AGENT_ID, ROBOT_KEY).await;
    let dir = tempfile::tempdir().unwrap();
    let kb = write_kb(dir.path());
    let db = sled::Config::new()
        .path(dir.path().join("db"))
        .open()
        .unwrap();
    let kefu = Kefu::start(config(&kb, &fake.base), db.clone()).await;
    // A slow platform: each send takes 500 ms. One customer's three replies go out one
    // after the other (other customers' replies would go out alongside, in the same wave).
    fake.set_delay(Duration::from_millis(500));
    for id in 1..=3 {
        let (status, _, _) = kefu
            .post(&seal.text("ann", id, "How do I reset my password?"))
            .await;
        assert_eq!(status, 200);
    }
    let store = kefu.state.app.store.clone();
    eventually("every turn done, the first send under way", || {
        (store.inbox_len().unwrap() == 0 && fake.send_attempts() >= 1).then_some(())
    })
    .await;

    assert!(kefu.state.shutdown(Duration::from_secs(10)).await);
    assert_eq!(
        fake.sent().len(),
        1,
        "the send in hand finished, no new one started"
    );
    assert_eq!(store.outbox_len().unwrap(), 2, "the rest kept");
    let left = store.outbox_items("support", 10).unwrap();
    assert!(
        left.iter().all(|i| i.sending_since_ms.is_none()),
        "nothing left marked as cut off: {left:?}"
    );
    assert_eq!(store.dead_letter_count().unwrap(), 0);
    kefu.stop();

    // The next start on the same database sends the other two, once each.
    fake.set_delay(Duration::ZERO);
    let again = Kefu::start(config(&kb, &fake.base), db).await;
    eventually("the kept replies", || {
        (fake.sent().len() == 3).then_some(())
    })
    .await;
    eventually("an empty outbox", || {
        (again.outbox_len() == 0).then_some(())
    })
    .await;
    assert_eq!(fake.sent_to("ann").len(), 3, "each reply once");
    assert_eq!(store.dead_letter_count().unwrap(), 0);
    again.stop();
}
