//! kill -9 under load: the real `kefu serve` binary takes mixed web, WeCom and DingTalk
//! traffic from this test (fake WeCom and DingTalk APIs on 127.0.0.1) and is killed with
//! SIGKILL at a random moment, round after round, on the same data directory. The
//! platforms behave as they do: a callback without a 200 is sent again after the restart,
//! and some acknowledged ones are sent again too (a retry whose 200 was lost).
//!
//! Afterwards, with kefu stopped by SIGTERM (which must exit 0) and its database opened
//! here:
//! - every acknowledged message (a 200 to a platform, a reply to the widget) is stored,
//!   exactly once;
//! - every WeCom / DingTalk message was answered exactly once: one reply at the fake
//!   platform, or one dead letter (a send cut off by the kill, which kefu does not repeat
//!   because it cannot know whether it arrived); never two replies.
//!
//! `KEFU_CRASH_SEED=N` replays a run (the seed is printed); `KEFU_CRASH_ROUNDS` changes the
//! number of rounds (default 20).

mod common_dingtalk;
#[path = "common/fake_wecom.rs"]
mod fake_wecom;
#[path = "common/wecom_kefu.rs"]
mod wecom_kefu;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use adapters::Secret;
use kefu::store::{SledStore, Store};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use common_dingtalk::{Fake as FakeDingTalk, APP_KEY, ROBOT_CODE};
use fake_wecom::FakeWeCom;
use wecom_kefu::{Sealer, AGENT_ID, APP_SECRET, ROBOT_KEY};

const QUESTION: &str = "How do I reset my password?";
const ANSWER: &str = "Reset password";
const WEB_SESSIONS: usize = 3;
const WECOM_USERS: usize = 3;
const DINGTALK_CONVERSATIONS: usize = 3;

/// A platform message as the platform keeps it until it got a 200.
#[derive(Clone, Debug)]
enum Platform {
    WeCom {
        user: String,
        msg_id: u64,
    },
    DingTalk {
        conversation: String,
        msg_id: String,
    },
}

/// What the "platforms" and the widget know.
#[derive(Default)]
struct Ledger {
    /// Platform messages acknowledged with a 200, by `key`.
    acked: BTreeMap<String, Platform>,
    /// Platform messages sent (or being sent) without a 200 yet: sent again after a
    /// restart, as the platforms do.
    pending: BTreeMap<String, Platform>,
    /// Web messages answered: (session, text).
    web_acked: Vec<(String, String)>,
    /// Acknowledged messages sent again anyway (lost 200s).
    resent_acked: usize,
    /// 503s seen (back-pressure or a store failure): retried like any unanswered callback.
    unavailable: usize,
}

struct Rig {
    dir: tempfile::TempDir,
    config: PathBuf,
    wecom: Arc<FakeWeCom>,
    dingtalk: FakeDingTalk,
    seal: Sealer,
    http: reqwest::Client,
    ledger: Mutex<Ledger>,
    next_id: AtomicU64,
}

/// A running `kefu serve`.
struct Kefu {
    child: Child,
    base: String,
}

fn data_dir(dir: &Path) -> PathBuf {
    dir.join("data")
}

impl Rig {
    async fn new() -> Arc<Rig> {
        let dir = tempfile::tempdir().expect("tempdir");
        let seal = Sealer::official();
        let wecom = FakeWeCom::start(&seal.corp_id, APP_SECRET, AGENT_ID, ROBOT_KEY).await;
        let dingtalk = FakeDingTalk::start().await;
        let kb = wecom_kefu::write_kb(dir.path());
        let (corp_id, token, aes_key) = wecom_kefu::official();
        let toml = format!(
            r#"
[server]
data_dir = {data:?}
shutdown_timeout_secs = 10
# The fake DingTalk's sessionWebhooks live on 127.0.0.1 (the default allows *.dingtalk.com).
allowed_webhook_hosts = ["127.0.0.1"]

[knowledge]
paths = [{kb:?}]

[[channels]]
name = "site"
kind = "web"

[[channels]]
name = "support"
kind = "wecom"
corp_id = "{corp_id}"
agent_id = {AGENT_ID}
secret = "{APP_SECRET}"
token = "{token}"
encoding_aes_key = "{aes_key}"
api_base = "{wecom_base}"

[[channels]]
name = "helpdesk"
kind = "dingtalk"
app_key = "{APP_KEY}"
app_secret = "{dt_secret}"
robot_code = "{ROBOT_CODE}"
api_base = "{dt_base}"
markdown = false
"#,
            data = data_dir(dir.path()).display().to_string(),
            kb = kb.display().to_string(),
            wecom_base = wecom.base,
            dt_secret = common_dingtalk::APP_SECRET,
            dt_base = dingtalk.base,
        );
        let config = dir.path().join("kefu.toml");
        std::fs::write(&config, toml).expect("config");
        Arc::new(Rig {
            dir,
            config,
            wecom,
            dingtalk,
            seal,
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .build()
                .expect("client"),
            ledger: Mutex::default(),
            next_id: AtomicU64::new(1),
        })
    }

    /// Start `kefu serve` and wait for its address.
    fn start(&self) -> Kefu {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("kefu.log"))
            .expect("log");
        let mut child = Command::new(env!("CARGO_BIN_EXE_kefu"))
            .args(["serve", "--listen", "127.0.0.1:0", "--config"])
            .arg(&self.config)
            .env_remove("KEFU_CONFIG")
            .env("KEFU_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .expect("spawn kefu");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(addr) = line.strip_prefix("kefu listening on ") {
                    let _ = tx.send(addr.to_string());
                }
            }
        });
        match rx.recv_timeout(Duration::from_secs(60)) {
            Ok(base) => Kefu { child, base },
            Err(_) => {
                let _ = child.kill();
                panic!("kefu did not start; log:\n{}", self.log_tail());
            }
        }
    }

    fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(self.dir.path().join("kefu.log")).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }

    fn id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::SeqCst)
    }

    /// Send a platform message; true on a 200.
    async fn send_platform(&self, base: &str, m: &Platform) -> bool {
        let req = match m {
            Platform::WeCom { user, msg_id } => {
                let cb = self.seal.text(user, *msg_id, QUESTION);
                self.http
                    .post(format!("{base}/wecom/support?{}", cb.query))
                    .body(cb.body)
            }
            Platform::DingTalk {
                conversation,
                msg_id,
            } => {
                let body = common_dingtalk::Callback {
                    msg_id,
                    text: QUESTION,
                    group: false,
                    conversation,
                    staff_id: conversation,
                    // One session per message: its reply is told apart from all others.
                    webhook: self.dingtalk.webhook(&session(msg_id)),
                    webhook_expires_ms: common_dingtalk::now_ms() + 2 * 3_600_000,
                }
                .json();
                let ts = common_dingtalk::now_ms().to_string();
                let sign =
                    adapters::dingtalk::sign::sign(&Secret::new(common_dingtalk::APP_SECRET), &ts);
                self.http
                    .post(format!("{base}/dingtalk/helpdesk"))
                    .header("content-type", "application/json; charset=utf-8")
                    .header("timestamp", ts)
                    .header("sign", sign)
                    .body(body)
            }
        };
        match req.send().await {
            Ok(r) if r.status() == 200 => true,
            Ok(r) => {
                if r.status() == 503 {
                    self.ledger.lock().unwrap().unavailable += 1;
                }
                false
            }
            Err(_) => false,
        }
    }

    /// Send `m`: pending from before the request leaves (a kill mid-request leaves it
    /// pending), acknowledged on its 200.
    async fn deliver(&self, base: &str, m: Platform) {
        self.ledger
            .lock()
            .unwrap()
            .pending
            .insert(key(&m), m.clone());
        if self.send_platform(base, &m).await {
            let mut l = self.ledger.lock().unwrap();
            l.pending.remove(&key(&m));
            l.acked.insert(key(&m), m);
        }
    }

    /// One widget message; filed when its reply arrived.
    async fn chat(&self, base: &str, session: &str) {
        let text = format!("{QUESTION} [{}]", self.id());
        let r = self
            .http
            .post(format!("{base}/api/chat"))
            .json(&serde_json::json!({"session_id": session, "message": text}))
            .send()
            .await;
        if let Ok(r) = r {
            if r.status() == 200 && r.text().await.is_ok_and(|t| t.contains("\"reply\"")) {
                self.ledger
                    .lock()
                    .unwrap()
                    .web_acked
                    .push((session.to_string(), text));
            }
        }
    }

    /// Traffic until aborted: each task sends one message after the other.
    fn load(self: &Arc<Self>, base: &str) -> Vec<tokio::task::JoinHandle<()>> {
        let mut tasks = Vec::new();
        for i in 0..WEB_SESSIONS {
            let (me, base) = (self.clone(), base.to_string());
            tasks.push(tokio::spawn(async move {
                loop {
                    me.chat(&base, &format!("web-{i}")).await;
                }
            }));
        }
        for i in 0..WECOM_USERS {
            let (me, base) = (self.clone(), base.to_string());
            tasks.push(tokio::spawn(async move {
                loop {
                    let m = Platform::WeCom {
                        user: format!("wu{i}"),
                        msg_id: me.id(),
                    };
                    me.deliver(&base, m).await;
                }
            }));
        }
        for i in 0..DINGTALK_CONVERSATIONS {
            let (me, base) = (self.clone(), base.to_string());
            tasks.push(tokio::spawn(async move {
                loop {
                    let m = Platform::DingTalk {
                        conversation: format!("dc{i}"),
                        msg_id: format!("d{}", me.id()),
                    };
                    me.deliver(&base, m).await;
                }
            }));
        }
        tasks
    }

    /// The platforms' retries after a restart: every pending message, and a few
    /// acknowledged ones whose 200 "got lost".
    fn retries(self: &Arc<Self>, base: &str, rng: &mut StdRng) -> tokio::task::JoinHandle<()> {
        let (pending, again) = {
            let mut l = self.ledger.lock().unwrap();
            let pending: Vec<Platform> = l.pending.values().cloned().collect();
            let acked: Vec<&Platform> = l.acked.values().collect();
            let again: Vec<Platform> = if acked.is_empty() {
                Vec::new()
            } else {
                (0..3)
                    .map(|_| acked[rng.gen_range(0..acked.len())].clone())
                    .collect()
            };
            l.resent_acked += again.len();
            (pending, again)
        };
        let (me, base) = (self.clone(), base.to_string());
        tokio::spawn(async move {
            for m in again {
                // Already acknowledged: the answer does not matter, the dedupe does.
                me.send_platform(&base, &m).await;
            }
            for m in pending {
                me.deliver(&base, m).await;
            }
        })
    }
}

fn session(msg_id: &str) -> String {
    format!("s-{msg_id}")
}

fn kill9(k: &mut Kefu) {
    k.child.kill().expect("SIGKILL");
    k.child.wait().expect("reaped");
}

/// A gauge from /metrics.
async fn gauge(http: &reqwest::Client, base: &str, name: &str) -> Option<f64> {
    let text = http
        .get(format!("{base}/metrics"))
        .send()
        .await
        .ok()?
        .text()
        .await
        .ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{name} ")))
        .and_then(|v| v.trim().parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kill_9_under_load_loses_no_acknowledged_message_and_answers_none_twice() {
    let seed = std::env::var("KEFU_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand::random::<u64>);
    let rounds: usize = std::env::var("KEFU_CRASH_ROUNDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20);
    println!("crash test: seed {seed} (KEFU_CRASH_SEED={seed} replays it), {rounds} rounds");
    let mut rng = StdRng::seed_from_u64(seed);
    let rig = Rig::new().await;
    let started = Instant::now();

    for round in 0..rounds {
        let mut kefu = rig.start();
        let retries = rig.retries(&kefu.base, &mut rng);
        let load = rig.load(&kefu.base);
        let kill_after = Duration::from_millis(rng.gen_range(100..=700));
        tokio::time::sleep(kill_after).await;
        kill9(&mut kefu);
        for t in load {
            t.abort();
        }
        retries.abort();
        let l = rig.ledger.lock().unwrap();
        println!(
            "round {round}: killed after {kill_after:?}; {} platform messages acknowledged, {} pending, {} widget replies",
            l.acked.len(),
            l.pending.len(),
            l.web_acked.len()
        );
    }
    // The last start: the platforms retry until everything is acknowledged, then kefu
    // drains its inbox and outbox.
    let mut kefu = rig.start();
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let pending: Vec<Platform> = rig
            .ledger
            .lock()
            .unwrap()
            .pending
            .values()
            .cloned()
            .collect();
        if pending.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "platform retries never acknowledged"
        );
        for m in pending {
            rig.deliver(&kefu.base, m).await;
        }
    }
    loop {
        let inbox = gauge(&rig.http, &kefu.base, "kefu_inbox_pending").await;
        let outbox = gauge(&rig.http, &kefu.base, "kefu_outbox_pending").await;
        if inbox == Some(0.0) && outbox == Some(0.0) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "kefu did not drain: inbox {inbox:?}, outbox {outbox:?}; log:\n{}",
            rig.log_tail()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // A clean stop this time: SIGTERM, exit status 0.
    let pid = kefu.child.id().to_string();
    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    let status = kefu.child.wait().expect("kefu exit");
    assert!(
        status.success(),
        "SIGTERM exit: {status}; log:\n{}",
        rig.log_tail()
    );

    check(&rig);
    println!("crash test: {rounds} rounds in {:?}", started.elapsed());
}

fn key(m: &Platform) -> String {
    match m {
        Platform::WeCom { msg_id, .. } => format!("wecom:{msg_id}"),
        Platform::DingTalk { msg_id, .. } => format!("dingtalk:{msg_id}"),
    }
}

/// Open the stopped kefu's database and hold it against what the platforms saw.
fn check(rig: &Rig) {
    let db = sled::open(data_dir(rig.dir.path())).expect("open the database");
    let store = SledStore::open(&db).expect("store");
    let l = rig.ledger.lock().unwrap();
    assert!(l.pending.is_empty());
    assert_eq!(store.inbox_len().unwrap(), 0);
    assert_eq!(store.outbox_len().unwrap(), 0);

    // Dead letters by what they answer: WeCom by user, DingTalk by session.
    let dead = store.dead_letters(usize::MAX).unwrap();
    let mut dead_by_queue: HashMap<String, usize> = HashMap::new();
    let mut dead_sessions: BTreeSet<String> = BTreeSet::new();
    for d in &dead {
        assert!(
            d.reason.starts_with("interrupted"),
            "only kills make dead letters here: {d:?}"
        );
        *dead_by_queue.entry(d.item.queue.clone()).or_default() += 1;
        if let Some(s) = d.item.call.url.split("session=").nth(1) {
            dead_sessions.insert(s.to_string());
        }
    }

    // 1. Every acknowledged platform message is stored exactly once.
    let mut by_conversation: BTreeMap<(String, String), Vec<String>> = BTreeMap::new();
    for m in l.acked.values() {
        let (channel, conv, id) = match m {
            Platform::WeCom { user, msg_id } => ("support", user.clone(), msg_id.to_string()),
            Platform::DingTalk {
                conversation,
                msg_id,
            } => ("helpdesk", conversation.clone(), msg_id.clone()),
        };
        by_conversation
            .entry((channel.to_string(), conv))
            .or_default()
            .push(id);
    }
    let mut stored_total = 0;
    for ((channel, conv), ids) in &by_conversation {
        let msgs = store.messages(channel, conv, 0, usize::MAX).unwrap();
        let mut seen: HashMap<&str, usize> = HashMap::new();
        for m in msgs.iter().filter(|m| m.role == kefu::store::Role::User) {
            *seen
                .entry(m.platform_id.as_deref().unwrap_or(""))
                .or_default() += 1;
        }
        for id in ids {
            assert_eq!(
                seen.get(id.as_str()).copied().unwrap_or(0),
                1,
                "{channel}/{conv}: acknowledged message {id} stored {} times",
                seen.get(id.as_str()).copied().unwrap_or(0)
            );
        }
        assert!(
            seen.values().all(|&n| n == 1),
            "{channel}/{conv}: a message handled twice"
        );
        stored_total += seen.len();

        // 2. Each handled message answered, never twice. A dead letter stands for a send
        //    the kill cut off: kefu cannot know whether it arrived, so it may sit beside a
        //    delivered reply, but a second reply never comes.
        let handled = seen.len();
        if channel == "support" {
            // WeCom replies are told apart per user only: no more replies than messages
            // (what a second turn or a second send would break; the store check above
            // already rules out second turns), and none missing unless dead-lettered.
            let replies = rig.wecom.sent_to(conv);
            assert!(replies.iter().all(|r| r.contains(ANSWER)), "{replies:?}");
            let dead = dead_by_queue.get(conv).copied().unwrap_or(0);
            assert!(
                replies.len() <= handled && replies.len() + dead >= handled,
                "wecom user {conv}: {} replies + {dead} dead letters for {handled} messages",
                replies.len()
            );
        } else {
            // DingTalk replies go to one session per message: exact.
            for id in seen.keys() {
                let posts = rig.dingtalk.posts_to(&session(id)).len();
                let dead = dead_sessions.contains(&session(id)) as usize;
                assert!(
                    posts <= 1 && posts + dead >= 1,
                    "dingtalk message {id}: {posts} replies, {dead} dead letters"
                );
            }
        }
    }

    // 3. Every widget reply was stored with its question.
    for (session, text) in &l.web_acked {
        let msgs = store.messages("site", session, 0, usize::MAX).unwrap();
        let n = msgs.iter().filter(|m| &m.text == text).count();
        assert_eq!(n, 1, "widget message {text:?} stored {n} times");
    }

    println!(
        "crash test: {} platform messages acknowledged ({} handled), {} re-sent after their 200, {} widget replies, {} replies dead-lettered by kills, {} answered 503",
        l.acked.len(),
        stored_total,
        l.resent_acked,
        l.web_acked.len(),
        dead.len(),
        l.unavailable
    );
    assert!(l.acked.len() >= 100, "too little traffic to mean anything");
}
