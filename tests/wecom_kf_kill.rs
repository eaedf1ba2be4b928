//! The real thing: `kefu serve` as a process, SIGKILLed again and again while it pulls a kf
//! backlog page by page from the fake kf API (killed a few milliseconds after a page went
//! out: while it stores the page, flushes it, saves the cursor, answers, or sends). After a
//! last, undisturbed run, every customer message is stored once and answered once: a page
//! pulled again finds its messages already stored, and a reply sent again carries the same
//! `msgid`, which the API refuses (the fake does, like the real one).

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[path = "common/fake_kf.rs"]
mod fake_kf;
#[path = "common/fake_wecom.rs"]
mod fake_wecom;
#[path = "common/kf_kefu.rs"]
mod kf_kefu;
#[path = "common/wecom_kefu.rs"]
mod wecom_kefu;

use fake_kf::{FakeKf, ERR_DUPLICATE_MSGID, KFID};
use kf_kefu::{notification, KF_CHANNEL, KF_SECRET};
use wecom_kefu::{official, write_kb, Sealer};

const CUSTOMERS: usize = 6;
const EACH: usize = 4;

/// Start `kefu serve`; returns the child and its base URL.
fn serve(config: &std::path::Path) -> (Child, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_kefu"))
        .args(["serve", "--config"])
        .arg(config)
        .env_remove("KEFU_CONFIG")
        .env("KEFU_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("kefu serve");
    let stdout = child.stdout.take().expect("stdout");
    let mut lines = BufReader::new(stdout).lines();
    let base = loop {
        let line = lines
            .next()
            .expect("kefu exited before listening")
            .expect("stdout");
        if let Some(addr) = line.strip_prefix("kefu listening on ") {
            break addr.trim().to_string();
        }
    };
    // Keep draining stdout so the child never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines {});
    (child, base)
}

fn wait_for(what: &str, secs: u64, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(2));
    }
}

#[test]
fn sigkill_mid_sync_never_loses_or_repeats_an_answer() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let seal = Sealer::official();
    let fake: Arc<FakeKf> = rt.block_on(FakeKf::start(&seal.corp_id, KF_SECRET));
    fake.set_page_size(3);
    // Each page takes a while to come, so the kills land in the middle of a sync.
    fake.sync_delay_ms
        .store(25, std::sync::atomic::Ordering::SeqCst);
    let dir = tempfile::tempdir().unwrap();
    let kb = write_kb(dir.path());
    let (corp_id, token, aes_key) = official();
    let config = dir.path().join("kefu.toml");
    std::fs::write(
        &config,
        format!(
            r#"
[server]
listen = "127.0.0.1:0"
data_dir = {data:?}

[knowledge]
paths = [{kb:?}]

[[channels]]
name = "{KF_CHANNEL}"
kind = "wecom_kf"
corp_id = "{corp_id}"
secret = "{KF_SECRET}"
token = "{token}"
encoding_aes_key = "{aes_key}"
api_base = "{base}"
open_kfids = ["{KFID}"]
"#,
            data = dir.path().join("data").display().to_string(),
            kb = kb.display().to_string(),
            base = fake.base,
        ),
    )
    .unwrap();
    let questions = [
        "How do I reset my password?",
        "What is the refund policy?",
        "can I get my money back",
        "password reset",
    ];
    let users: Vec<String> = (0..CUSTOMERS).map(|i| format!("wmKill{i}")).collect();
    for q in &questions[..EACH] {
        for u in &users {
            fake.customer_writes(KFID, u, q);
        }
    }
    let total = CUSTOMERS * EACH;

    // Killed a little after a page request (the page arrives 25 ms later), at varying delays.
    let mut kills = 0;
    for delay_ms in [20u64, 26, 28, 31, 35, 45, 80, 150, 250, 400] {
        let seen = fake.sync_requests().len();
        let answered = fake.sent_count();
        if answered >= total {
            break;
        }
        let (mut child, base) = serve(&config);
        // A notification too (the start-up catch-up alone would do after the first run).
        let cb = notification(&seal, Some(KFID), Some(&fake.msg_token()));
        let _ = rt.block_on(
            reqwest::Client::new()
                .post(format!("{base}/wecom/{KF_CHANNEL}?{}", cb.query))
                .body(cb.body)
                .send(),
        );
        wait_for("a page request", 20, || {
            fake.sync_requests().len() > seen || fake.sent_count() >= total
        });
        std::thread::sleep(Duration::from_millis(delay_ms));
        child.kill().expect("SIGKILL");
        child.wait().expect("reaped");
        kills += 1;
        eprintln!(
            "killed {delay_ms} ms after page request {}: {} of {total} answered",
            seen + 1,
            fake.sent_count()
        );
    }
    assert!(kills >= 3, "killed mid-backlog only {kills} times");

    // A last run, left alone: everything is answered, exactly once.
    let (mut child, _) = serve(&config);
    wait_for("every message answered", 60, || fake.sent_count() >= total);
    // Anything still on its way would be a second answer: give it a moment, then stop.
    std::thread::sleep(Duration::from_millis(500));
    child.kill().expect("SIGKILL");
    child.wait().expect("reaped");

    for (i, u) in users.iter().enumerate() {
        let got = fake.sent_to(u);
        assert_eq!(
            got.len(),
            EACH,
            "customer {i} gets one answer per question: {got:?}"
        );
    }
    assert_eq!(fake.sent_count(), total);
    // Repeats, if any, were refused by msgid: never delivered twice.
    for (body, code) in fake.send_refusals() {
        assert_eq!(
            code, ERR_DUPLICATE_MSGID,
            "unexpected refusal {code}: {body}"
        );
    }
    // And stored once each.
    let db = sled::open(dir.path().join("data")).unwrap();
    let store = kefu::store::SledStore::open(&db).unwrap();
    use kefu::store::Store;
    // A repeat refused after a kill is the first send's success, not a dead letter.
    for d in store.dead_letters(1000).unwrap() {
        assert!(
            !d.reason.starts_with("refused"),
            "a refused repeat became a dead letter: {}",
            d.reason
        );
    }
    for u in &users {
        let msgs = store
            .messages(KF_CHANNEL, &format!("{KFID}:{u}"), 0, 1000)
            .unwrap();
        let mut ids: Vec<String> = msgs
            .iter()
            .filter(|m| m.role == kefu::store::Role::User)
            .filter_map(|m| m.platform_id.clone())
            .collect();
        let n = ids.len();
        ids.sort();
        ids.dedup();
        assert_eq!(
            (n, ids.len()),
            (EACH, EACH),
            "{u}: each message stored once"
        );
    }
}
