//! One contract, run on every Store implementation.

use adapters::{Call, CallAuth, ChannelKind, UserRef};

use super::*;

fn user() -> UserRef {
    UserRef {
        id: "u1".into(),
        name: None,
    }
}

fn msg(seq: u64, text: &str) -> Message {
    Message {
        seq,
        role: Role::User,
        text: text.into(),
        at_ms: seq * 10,
        platform_id: None,
        intent: None,
        sources: vec![],
    }
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

    assert!(s.handed_off().unwrap().is_empty());
    c.handoff = Some(Handoff {
        active: true,
        reason: "keyword".into(),
        summary: "s".into(),
        since_ms: 9,
        agent: None,
    });
    s.save_conversation(&c).unwrap();
    assert_eq!(s.handed_off().unwrap().len(), 1);

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
    assert_eq!(all[0], ("site:m1".to_string(), m.clone()));
    s.inbox_put("site:m10", &m).unwrap(); // a key with another as its prefix
    s.inbox_put("site:m1", &m).unwrap(); // the same key twice
    s.inbox_remove("site:m1").unwrap();
    let keys: Vec<String> = s.inbox_all().unwrap().into_iter().map(|(k, _)| k).collect();
    assert_eq!(keys, ["site:m2", "site:m10"]);
    s.inbox_remove("site:m10").unwrap();
    assert_eq!(s.inbox_all().unwrap()[0].0, "site:m2");

    // A pull channel's page: dedupe key and inbox entry together, or neither.
    let k = crate::testing::web_message("s", "k1", "pulled");
    assert!(!s.accept_inbound("kf:wk:1", &k, 1000, 500).unwrap());
    assert!(
        s.accept_inbound("kf:wk:1", &k, 1200, 500).unwrap(),
        "a duplicate"
    );
    assert!(
        s.check_and_remember("kf:wk:1", 1300, 500).unwrap(),
        "the same dedupe keys"
    );
    let inbox = s.inbox_all().unwrap();
    assert_eq!(
        inbox.iter().filter(|(key, _)| key == "kf:wk:1").count(),
        1,
        "kept once"
    );
    assert!(
        !s.accept_inbound("kf:wk:1", &k, 1600, 500).unwrap(),
        "expired: new again"
    );
    s.inbox_remove("kf:wk:1").unwrap();

    assert_eq!(s.cursor("kf:wk").unwrap(), None);
    s.set_cursor("kf:wk", "CURSOR_P1").unwrap();
    s.set_cursor("kf:wk", "CURSOR_P3").unwrap();
    s.set_cursor("kf:other", "X").unwrap();
    assert_eq!(s.cursor("kf:wk").unwrap().as_deref(), Some("CURSOR_P3"));

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
    assert_eq!(
        s.quota("q:c1").unwrap(),
        Some(Quota {
            opened_ms: 1_000,
            used: 5
        })
    );
    s.quota_open("q:c1", 1_000).unwrap(); // another message in the same second
    assert_eq!(s.quota_take("q:c1", 4_000, 2, 5, h48).unwrap(), 2);
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
        s.set_cursor("kf:wk", "CURSOR_P3").unwrap();
        s.quota_open("q:c1", 1_000).unwrap();
        s.quota_take("q:c1", 2_000, 2, 5, 10_000).unwrap();
        s.flush().unwrap();
    }
    let db = sled::open(dir.path()).unwrap();
    let s = SledStore::open(&db).unwrap();
    assert!(s.conversation("site", "x").unwrap().is_some());
    assert_eq!(s.messages("site", "x", 0, 10).unwrap()[0].text, "hello");
    assert_eq!(s.outbox_len().unwrap(), 1);
    assert_eq!(s.cursor("kf:wk").unwrap().as_deref(), Some("CURSOR_P3"));
    assert_eq!(
        s.quota("q:c1").unwrap(),
        Some(Quota {
            opened_ms: 1_000,
            used: 2
        })
    );
    // Ids keep increasing after a restart.
    let id = s.outbox_push(&item(0)).unwrap();
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
