//! One contract, run on every Store implementation.

use adapters::{Call, CallAuth, ChannelKind, UserRef};

use super::sled_store::HANDOFF_INDEX_MARKER;
use super::*;

fn user() -> UserRef {
    UserRef {
        id: "u1".into(),
        name: None,
    }
}

fn msg(seq: u64, text: &str) -> Message {
    Message::new(seq, Role::User, text, seq * 10)
}

fn item(next_at_ms: u64) -> OutboxItem {
    OutboxItem {
        id: 0,
        target: "support".into(),
        call: Call {
            method: "POST".into(),
            url: "/cgi-bin/message/send".into(),
            body: "{}".into(),
            auth: CallAuth::WeComToken,
        },
        fallback: vec![],
        then: vec![],
        queue: "c1".into(),
        attempts: 0,
        next_at_ms,
        created_ms: 1,
        last_error: None,
        sending_since_ms: None,
        resent_after_crash: false,
        held_by: None,
        message: None,
    }
}

fn store_contract(s: &dyn Store) {
    assert!(s.conversation("site", "a").unwrap().is_none());
    let mut c = Conversation::new("site", ChannelKind::Web, "a", user(), 5);
    for want in 1..=3 {
        assert_eq!(c.take_seq(), want);
    }
    s.save_conversation(&c).unwrap();
    assert_eq!(s.conversation("site", "a").unwrap().unwrap(), c);
    // A conversation id that is a prefix of another must not see its messages.
    for (conv, n) in [("a", 3u64), ("ab", 2)] {
        for seq in 1..=n {
            s.append_message("site", conv, &msg(seq, &format!("{conv}{seq}")))
                .unwrap();
        }
    }
    let all = s.messages("site", "a", 0, 100).unwrap();
    assert_eq!(
        all.iter().map(|m| m.text.as_str()).collect::<Vec<_>>(),
        ["a1", "a2", "a3"]
    );
    assert_eq!(s.messages("site", "a", 1, 1).unwrap()[0].text, "a2");
    assert!(s.messages("site", "zz", 0, 10).unwrap().is_empty());
    let texts = |v: Vec<Message>| v.into_iter().map(|m| m.text).collect::<Vec<_>>();
    assert_eq!(
        texts(s.messages_before("site", "a", u64::MAX, 2).unwrap()),
        ["a2", "a3"],
        "the newest, oldest first"
    );
    assert_eq!(
        texts(s.messages_before("site", "a", 3, 5).unwrap()),
        ["a1", "a2"]
    );
    assert!(s.messages_before("site", "a", 1, 5).unwrap().is_empty());
    assert_eq!(
        texts(s.messages_before("site", "ab", u64::MAX, 9).unwrap()),
        ["ab1", "ab2"]
    );
    assert!(s
        .messages_before("site", "zz", u64::MAX, 5)
        .unwrap()
        .is_empty());
    assert_eq!(s.message("site", "a", 2).unwrap().unwrap().text, "a2");
    assert!(s.message("site", "a", 4).unwrap().is_none());
    let mut edited = msg(2, "a2");
    edited.delivery = Some(Delivery::queued(7));
    s.append_message("site", "a", &edited).unwrap();
    assert_eq!(
        s.message("site", "a", 2).unwrap().unwrap(),
        edited,
        "rewritten in place"
    );

    // A turn: its messages and the conversation record together.
    let mut t = Conversation::new("site", ChannelKind::Web, "t", user(), 5);
    let (q, a) = (t.take_seq(), t.take_seq());
    s.save_turn(&t, &[msg(q, "question"), msg(a, "answer")])
        .unwrap();
    assert_eq!(s.conversation("site", "t").unwrap().unwrap().next_seq, 3);
    assert_eq!(s.messages("site", "t", 0, 10).unwrap().len(), 2);
    // A message past the record's next seq is not committed (a turn cut off before its
    // record): not shown, and the next turn writes over it.
    s.append_message("site", "t", &msg(3, "half a turn"))
        .unwrap();
    assert_eq!(s.messages("site", "t", 0, 10).unwrap().len(), 2);
    let (q2, a2) = (t.take_seq(), t.take_seq());
    s.save_turn(&t, &[msg(q2, "again"), msg(a2, "answer 2")])
        .unwrap();
    let texts: Vec<String> = s
        .messages("site", "t", 0, 10)
        .unwrap()
        .into_iter()
        .map(|m| m.text)
        .collect();
    assert_eq!(texts, ["question", "answer", "again", "answer 2"]);

    assert!(s.handed_off().unwrap().is_empty());
    c.handoff = Some(Handoff::start(
        "keyword",
        "s".into(),
        HandoffCard::default(),
        9,
    ));
    s.save_conversation(&c).unwrap();
    let mut older = Conversation::new("site", ChannelKind::Web, "b", user(), 5);
    older.handoff = Some(Handoff::start(
        "other",
        "s".into(),
        HandoffCard::default(),
        3,
    ));
    s.save_conversation(&older).unwrap();
    let queue: Vec<String> = s
        .handed_off()
        .unwrap()
        .into_iter()
        .map(|c| c.conversation)
        .collect();
    assert_eq!(queue, ["b", "a"], "oldest handoff first");
    older.handoff.as_mut().unwrap().active = false;
    s.save_conversation(&older).unwrap();
    assert_eq!(
        s.handed_off().unwrap().len(),
        1,
        "an ended handoff leaves the queue"
    );

    assert!(!s.check_and_remember("sign:1", 1000, 100).unwrap());
    assert!(s.check_and_remember("sign:1", 1050, 100).unwrap());
    assert!(
        !s.check_and_remember("sign:1", 1200, 100).unwrap(),
        "expired keys are new again"
    );

    // The inbox: a message and its dedupe key are taken in together.
    let m1 = crate::testing::web_message("s", "m1", "hi");
    let first = s.inbox_accept("site:m1", &m1, 1000, 100).unwrap();
    let first = first.expect("a new key is accepted");
    assert_eq!(
        s.inbox_accept("site:m1", &m1, 1050, 100).unwrap(),
        None,
        "a duplicate writes nothing"
    );
    let second = s
        .inbox_accept(
            "site:m2",
            &crate::testing::web_message("s", "m2", "there"),
            1050,
            100,
        )
        .unwrap()
        .unwrap();
    assert!(second > first, "inbox ids increase");
    let all = s.inbox_all().unwrap();
    assert_eq!(all.len(), 2);
    assert_eq!(s.inbox_len().unwrap(), 2);
    assert_eq!(
        all[0],
        InboxEntry {
            id: first,
            key: "site:m1".into(),
            message: m1.clone()
        }
    );
    s.inbox_remove(first).unwrap();
    assert_eq!(s.inbox_all().unwrap()[0].key, "site:m2");
    // An expired key is new again, and the message is kept again.
    let again = s.inbox_accept("site:m1", &m1, 1200, 100).unwrap();
    assert!(again.is_some(), "expired keys are new again");

    // The outbox: the reply is queued as the inbox entry it answers goes.
    let ids = s.outbox_push(&[item(0), item(500)], Some(second)).unwrap();
    let (a, b) = (ids[0], ids[1]);
    assert!(b > a);
    assert!(
        s.inbox_all().unwrap().iter().all(|e| e.id != second),
        "answered"
    );
    assert_eq!(s.outbox_len().unwrap(), 2);
    assert_eq!(s.outbox_items("support", 10).unwrap()[0].id, a);
    assert_eq!(s.outbox_items("support", 1).unwrap().len(), 1);
    assert!(s.outbox_items("nobody", 10).unwrap().is_empty());
    let mut first_item = s.outbox_items("support", 10).unwrap()[0].clone();
    first_item.attempts = 1;
    first_item.next_at_ms = 1000;
    first_item.sending_since_ms = Some(999);
    s.outbox_update(&first_item).unwrap();
    assert_eq!(s.outbox_items("support", 10).unwrap()[0], first_item);
    s.outbox_remove(a).unwrap();
    s.outbox_update(&first_item).unwrap(); // updating a removed entry doesn't resurrect it
    assert_eq!(s.outbox_len().unwrap(), 1);

    // Dead letters: moved out of the outbox in one step, listed newest first.
    let c_id = s.outbox_push(&[item(0)], None).unwrap()[0];
    for id in [b, c_id] {
        let mut it = s
            .outbox_items("support", 10)
            .unwrap()
            .into_iter()
            .find(|i| i.id == id)
            .unwrap();
        it.last_error = Some("HTTP 503".into());
        s.dead_letter(&DeadLetter {
            item: it,
            reason: "failed 15 times".into(),
            dead_ms: 2000,
        })
        .unwrap();
    }
    assert_eq!(s.outbox_len().unwrap(), 0);
    assert_eq!(s.dead_letter_count().unwrap(), 2);
    let dead = s.dead_letters(10).unwrap();
    assert_eq!(
        dead.iter().map(|d| d.item.id).collect::<Vec<_>>(),
        [c_id, b]
    );
    assert_eq!(dead[0].item.last_error.as_deref(), Some("HTTP 503"));
    assert_eq!(s.dead_letters(1).unwrap().len(), 1);
    let taken = s.dead_letter_take(b).unwrap().unwrap();
    assert_eq!(taken.item.id, b);
    assert!(s.dead_letter_take(b).unwrap().is_none());
    assert_eq!(s.dead_letter_count().unwrap(), 1);

    // 5 sends within 48 h of the customer's last message.
    let h48 = 48 * 3600 * 1000;
    assert_eq!(
        s.quota_take("q:c1", 10, 1, 5, h48).unwrap(),
        0,
        "never opened"
    );
    s.quota_open("q:c1", 1_000).unwrap();
    assert_eq!(s.quota_take("q:c1", 2_000, 3, 5, h48).unwrap(), 3);
    assert_eq!(
        s.quota_take("q:c1", 3_000, 3, 5, h48).unwrap(),
        2,
        "what is left"
    );
    assert_eq!(
        s.quota_take("q:c1", 4_000, 1, 5, h48).unwrap(),
        0,
        "the 6th"
    );
    s.quota_open("q:c1", 500).unwrap(); // an older message (a replayed page) changes nothing
    let q = s.quota("q:c1").unwrap().unwrap();
    assert_eq!((q.opened_ms, q.used), (1_000, 5));
    // Another message of the same second, stored after the sends (pulled late): the
    // platform counts the sends made since it, so none is left.
    s.quota_open("q:c1", 1_000).unwrap();
    assert_eq!(s.quota_take("q:c1", 4_000, 2, 5, h48).unwrap(), 0);
    // A message written at 2_500, stored late: the 2 sends at 3_000 count against it.
    s.quota_open("q:c1", 2_500).unwrap();
    assert_eq!(s.quota_take("q:c1", 4_000, 9, 5, h48).unwrap(), 3);
    s.quota_open("q:c1", 5_000).unwrap(); // the customer wrote again
    assert_eq!(s.quota_take("q:c1", 6_000, 9, 5, h48).unwrap(), 5);
    assert_eq!(
        s.quota_take("q:c2", 6_000, 1, 5, h48).unwrap(),
        0,
        "per customer"
    );
    s.quota_open("q:c3", 1_000).unwrap();
    assert_eq!(
        s.quota_take("q:c3", 1_000 + h48 + 1, 1, 5, h48).unwrap(),
        0,
        "window closed"
    );

    assert!(s.kv_get("token").unwrap().is_none());
    s.kv_put("token", b"abc").unwrap();
    assert_eq!(s.kv_get("token").unwrap().unwrap(), b"abc");
    s.kv_put("session:b", b"2").unwrap();
    s.kv_put("session:a", b"1").unwrap();
    s.kv_put("sessions", b"x").unwrap();
    assert_eq!(
        s.kv_scan("session:").unwrap(),
        [
            ("session:a".to_string(), b"1".to_vec()),
            ("session:b".to_string(), b"2".to_vec())
        ]
    );
    s.kv_remove("session:a").unwrap();
    s.kv_remove("session:nope").unwrap();
    assert_eq!(s.kv_scan("session:").unwrap().len(), 1);
    s.flush().unwrap();
}

#[test]
fn memory_store_meets_the_contract() {
    store_contract(&MemoryStore::new());
}

#[test]
fn sled_store_meets_the_contract() {
    let db = sled::Config::new().temporary(true).open().unwrap();
    store_contract(&SledStore::open(&db).unwrap());
}

#[test]
fn sled_store_survives_reopen() {
    let dir = tempfile::tempdir().unwrap();
    {
        let db = sled::open(dir.path()).unwrap();
        let s = SledStore::open(&db).unwrap();
        let mut c = Conversation::new("site", ChannelKind::Web, "x", user(), 1);
        let seq = c.take_seq();
        s.save_turn(&c, &[msg(seq, "hello")]).unwrap();
        s.outbox_push(&[item(0)], None).unwrap();
        s.inbox_accept(
            "site:m",
            &crate::testing::web_message("x", "m", "hi"),
            1,
            100,
        )
        .unwrap();
        s.quota_open("q:c1", 1_000).unwrap();
        s.quota_take("q:c1", 2_000, 2, 5, 10_000).unwrap();
        s.flush().unwrap();
    }
    let db = sled::open(dir.path()).unwrap();
    let s = SledStore::open(&db).unwrap();
    assert!(s.conversation("site", "x").unwrap().is_some());
    assert_eq!(s.messages("site", "x", 0, 10).unwrap()[0].text, "hello");
    assert_eq!(s.outbox_len().unwrap(), 1);
    let q = s.quota("q:c1").unwrap().unwrap();
    assert_eq!(
        (q.opened_ms, q.used, q.sent_ms),
        (1_000, 2, vec![2_000, 2_000])
    );
    assert_eq!(s.inbox_all().unwrap()[0].key, "site:m");
    assert_eq!(
        s.inbox_accept(
            "site:m",
            &crate::testing::web_message("x", "m", "hi"),
            2,
            100
        )
        .unwrap(),
        None,
        "the dedupe key survived too"
    );
    // Ids keep increasing after a restart.
    let id = s.outbox_push(&[item(0)], None).unwrap()[0];
    assert!(id > 1);
}

#[test]
fn concurrent_quota_takers_never_exceed_the_limit() {
    let db = sled::Config::new().temporary(true).open().unwrap();
    let stores: Vec<std::sync::Arc<dyn Store>> = vec![
        std::sync::Arc::new(SledStore::open(&db).unwrap()),
        std::sync::Arc::new(MemoryStore::new()),
    ];
    for s in stores {
        s.quota_open("q:race", 1_000).unwrap();
        let granted: u32 = std::thread::scope(|scope| {
            let takers: Vec<_> = (0..8)
                .map(|_| {
                    let s = s.clone();
                    scope.spawn(move || {
                        (0..4)
                            .map(|_| s.quota_take("q:race", 2_000, 1, 5, 10_000).unwrap())
                            .sum::<u32>()
                    })
                })
                .collect();
            takers.into_iter().map(|t| t.join().unwrap()).sum()
        });
        assert_eq!(granted, 5, "32 tries, 5 granted");
        assert_eq!(s.quota("q:race").unwrap().unwrap().used, 5);
    }
}

/// One undecodable record per tree: skipped, counted and moved aside; the rest still flows.
#[test]
fn corrupt_records_are_set_aside_and_never_block_the_rest() {
    let db = sled::Config::new().temporary(true).open().unwrap();
    let s = SledStore::open(&db).unwrap();
    let garbage = b"{not json".as_slice();

    let first = s.outbox_push(&[item(0)], None).unwrap()[0];
    db.open_tree("outbox")
        .unwrap()
        .insert(first.to_be_bytes(), garbage)
        .unwrap();
    let good = s.outbox_push(&[item(0)], None).unwrap()[0];
    let items = s.outbox_items("support", 10).unwrap();
    assert_eq!(items.iter().map(|i| i.id).collect::<Vec<_>>(), [good]);
    assert_eq!(s.outbox_len().unwrap(), 1, "moved out of the outbox");

    let bad = s
        .inbox_accept(
            "site:bad",
            &crate::testing::web_message("x", "bad", "?"),
            1,
            100,
        )
        .unwrap()
        .unwrap();
    db.open_tree("inbox")
        .unwrap()
        .insert(bad.to_be_bytes(), garbage)
        .unwrap();
    s.inbox_accept(
        "site:ok",
        &crate::testing::web_message("x", "ok", "hi"),
        1,
        100,
    )
    .unwrap();
    let inbox = s.inbox_all().unwrap();
    assert_eq!(inbox.len(), 1);
    assert_eq!(inbox[0].key, "site:ok");

    // The agents' queue: two handoffs, one of them a broken record.
    let handoff = || {
        Some(Handoff::start(
            "keyword",
            String::new(),
            HandoffCard::default(),
            1,
        ))
    };
    let mut queued = Conversation::new("site", ChannelKind::Web, "q", user(), 1);
    queued.handoff = handoff();
    s.save_conversation(&queued).unwrap();
    let mut broken = Conversation::new("site", ChannelKind::Web, "broken", user(), 1);
    broken.handoff = handoff();
    let seq = broken.take_seq();
    s.save_turn(&broken, &[msg(seq, "old history")]).unwrap();
    db.open_tree("conversations")
        .unwrap()
        .insert(super::sled_store::conv_key("site", "broken"), garbage)
        .unwrap();
    assert_eq!(s.handed_off().unwrap().len(), 1);
    // Its record and its messages went aside together: the conversation starts over at
    // seq 1 without overwriting history.
    assert!(s.conversation("site", "broken").unwrap().is_none());
    assert!(s.messages("site", "broken", 0, 10).unwrap().is_empty());

    let counts: std::collections::BTreeMap<_, _> = s.corrupt_records().into_iter().collect();
    assert_eq!(counts.get("outbox"), Some(&1));
    assert_eq!(counts.get("inbox"), Some(&1));
    assert_eq!(counts.get("conversations"), Some(&1));
    let aside = db.open_tree("corrupt").unwrap();
    assert_eq!(
        aside.len(),
        4,
        "outbox, inbox, conversation and its message"
    );
    assert!(aside
        .iter()
        .filter_map(Result::ok)
        .any(|(k, v)| k.starts_with(b"outbox\0") && v.as_ref() == garbage));
}

/// What a crash leaves between the writes of one step, and what the next `open` makes of it.
#[test]
fn sled_store_finishes_or_undoes_half_done_writes_at_open() {
    let dir = tempfile::tempdir().unwrap();
    let m = |id: &str| crate::testing::web_message("x", id, "hi");
    let (kept, half_queued);
    {
        let db = sled::open(dir.path()).unwrap();
        let s = SledStore::open(&db).unwrap();
        // Committed and waiting: kept.
        kept = s
            .inbox_accept("site:kept", &m("kept"), 1, 100)
            .unwrap()
            .unwrap();
        // An entry whose dedupe key never landed (cut off before the 200).
        db.open_tree("inbox")
            .unwrap()
            .insert(
                999_999u64.to_be_bytes(),
                serde_json::to_vec(&("site:cut", m("cut"))).unwrap(),
            )
            .unwrap();
        // A reply queued for an entry that was not removed yet (cut off mid-queue).
        half_queued = s
            .inbox_accept("site:half", &m("half"), 1, 100)
            .unwrap()
            .unwrap();
        let mut held = item(0);
        held.held_by = Some(half_queued);
        held.id = 777_777;
        db.open_tree("outbox")
            .unwrap()
            .insert(held.id.to_be_bytes(), serde_json::to_vec(&held).unwrap())
            .unwrap();
        assert!(
            s.outbox_items("support", 10).unwrap().is_empty(),
            "held entries are not sent"
        );
        // A dead letter whose outbox entry was not removed yet.
        let id = s.outbox_push(&[item(0)], None).unwrap()[0];
        let mut dead = item(0);
        dead.id = id;
        db.open_tree("dead_letters")
            .unwrap()
            .insert(
                id.to_be_bytes(),
                serde_json::to_vec(&DeadLetter {
                    item: dead,
                    reason: "r".into(),
                    dead_ms: 1,
                })
                .unwrap(),
            )
            .unwrap();
        s.flush().unwrap();
    }
    let db = sled::open(dir.path()).unwrap();
    let s = SledStore::open(&db).unwrap();
    let inbox: Vec<u64> = s.inbox_all().unwrap().iter().map(|e| e.id).collect();
    assert_eq!(inbox, [kept, half_queued], "the uncommitted entry is gone");
    assert_eq!(
        s.outbox_len().unwrap(),
        0,
        "the held reply and the dead letter left"
    );
    assert_eq!(s.dead_letter_count().unwrap(), 1);
}

#[test]
fn sled_store_builds_the_handoff_index_for_older_databases() {
    let db = sled::Config::new().temporary(true).open().unwrap();
    {
        let s = SledStore::open(&db).unwrap();
        let mut c = Conversation::new("site", ChannelKind::Web, "x", user(), 1);
        c.handoff = Some(Handoff::start(
            "keyword",
            "s".into(),
            HandoffCard::default(),
            2,
        ));
        s.save_conversation(&c).unwrap();
    }
    // As a database from before the index: no index entries, no marker.
    db.open_tree("handoffs").unwrap().clear().unwrap();
    db.open_tree("kv")
        .unwrap()
        .remove(HANDOFF_INDEX_MARKER)
        .unwrap();
    let s = SledStore::open(&db).unwrap();
    assert_eq!(s.handed_off().unwrap().len(), 1);
}
