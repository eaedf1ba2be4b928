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
        message: None,
    }
}

fn store_contract(s: &dyn Store) {
    assert!(s.conversation("site", "a").unwrap().is_none());
    let mut c = Conversation::new("site", ChannelKind::Web, "a", user(), 5);
    assert_eq!(c.take_seq(), 1);
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

    assert!(!s.check_and_remember("wecom:1", 1000, 100).unwrap());
    assert!(s.check_and_remember("wecom:1", 1050, 100).unwrap());
    assert!(
        !s.check_and_remember("wecom:1", 1200, 100).unwrap(),
        "expired keys are new again"
    );

    let a = s.outbox_push(&item(0)).unwrap();
    let b = s.outbox_push(&item(500)).unwrap();
    assert!(b > a);
    assert_eq!(s.outbox_len().unwrap(), 2);
    assert_eq!(s.outbox_items("support", 10).unwrap()[0].id, a);
    assert_eq!(s.outbox_items("support", 1).unwrap().len(), 1);
    assert!(s.outbox_items("nobody", 10).unwrap().is_empty());
    let mut first = s.outbox_items("support", 10).unwrap()[0].clone();
    first.attempts = 1;
    first.next_at_ms = 1000;
    s.outbox_update(&first).unwrap();
    assert_eq!(s.outbox_items("support", 10).unwrap()[0], first);
    s.outbox_remove(a).unwrap();
    s.outbox_update(&first).unwrap(); // updating a removed entry doesn't resurrect it
    assert_eq!(s.outbox_len().unwrap(), 1);

    let m = crate::testing::web_message("s", "m1", "hi");
    s.inbox_put("site:m1", &m).unwrap();
    s.inbox_put("site:m2", &crate::testing::web_message("s", "m2", "there"))
        .unwrap();
    let all = s.inbox_all().unwrap();
    assert_eq!(all.len(), 2);
    assert_eq!(all[0], ("site:m1".to_string(), m));
    s.inbox_remove("site:m1").unwrap();
    assert_eq!(s.inbox_all().unwrap()[0].0, "site:m2");

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
        s.save_conversation(&Conversation::new("site", ChannelKind::Web, "x", user(), 1))
            .unwrap();
        s.append_message("site", "x", &msg(1, "hello")).unwrap();
        s.outbox_push(&item(0)).unwrap();
        s.flush().unwrap();
    }
    let db = sled::open(dir.path()).unwrap();
    let s = SledStore::open(&db).unwrap();
    assert!(s.conversation("site", "x").unwrap().is_some());
    assert_eq!(s.messages("site", "x", 0, 10).unwrap()[0].text, "hello");
    assert_eq!(s.outbox_len().unwrap(), 1);
    // Ids keep increasing after a restart.
    let id = s.outbox_push(&item(0)).unwrap();
    assert!(id > 1);
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
