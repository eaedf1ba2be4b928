//! kefu in-process with one WeCom channel, and WeCom callbacks as the platform would send
//! them (sealed with the codec's `Cipher`, signed with `signature`), using the official
//! credentials of `adapters/tests/vectors/wecom.json` (Tencent's sample corp).
#![allow(dead_code)] // each test binary uses a different part

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use adapters::wecom::{signature, Cipher};
use kefu::app::{App, IngestPolicy};
use kefu::config::Config;
use kefu::server::AppState;
use serde_json::Value;

pub const CHANNEL: &str = "support";
pub const AGENT_ID: i64 = 1000002;
pub const APP_SECRET: &str = "app-secret-for-tests";
pub const ROBOT_KEY: &str = "693a91f6-7xxx-4bc4-97a0-0ec2sifa5aaa";

/// One entry of the shared WeCom test vectors.
pub fn vector(name: &str) -> Value {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/adapters/tests/vectors/wecom.json"
    );
    let all: Value = serde_json::from_str(&std::fs::read_to_string(path).expect("vectors"))
        .expect("vectors json");
    all["vectors"]
        .as_array()
        .into_iter()
        .chain(all["negative"].as_array())
        .flatten()
        .find(|v| v["name"] == name)
        .unwrap_or_else(|| panic!("no vector {name}"))
        .clone()
}

/// The official sample corp: (corp_id, token, encoding_aes_key).
pub fn official() -> (String, String, String) {
    let v = vector("B.post_text");
    let s = |k: &str| v[k].as_str().expect(k).to_string();
    (s("corp_id"), s("token"), s("encoding_aes_key"))
}

pub const LONG_QUESTION: &str = "What are the installation steps for the on-premise edition?";

/// The FAQ answer to `LONG_QUESTION`: about 3.4 KB of ASCII in 40 lines, 120 words (the
/// built-in generator keeps answers of up to 150 words whole).
pub fn long_answer() -> String {
    (1..=40)
        .map(|i| format!("Step {i}: download-verify-and-install-the-on-premise-edition-package-number-{i:02}."))
        .collect::<Vec<_>>()
        .join("\n")
}

/// A small knowledge base under `dir/kb`; returns its path.
pub fn write_kb(dir: &Path) -> std::path::PathBuf {
    let kb = dir.join("kb");
    std::fs::create_dir_all(kb.join("faq")).expect("kb dir");
    let entries = [
        serde_json::json!({"id":"reset","question":"How do I reset my password?","answer":"Open Settings, choose Security and click Reset password.","alternates":["forgot my password","password reset"]}),
        serde_json::json!({"id":"refund","question":"What is the refund policy?","answer":"Annual plans get a full refund within 30 days.","alternates":["can I get my money back"]}),
        serde_json::json!({"id":"install","question":LONG_QUESTION,"answer":long_answer(),"alternates":["on-premise installation steps"]}),
    ];
    let text: String = entries.iter().map(|e| format!("{e}\n")).collect();
    std::fs::write(kb.join("faq/demo.jsonl"), text).expect("faq");
    kb
}

/// Config: the WeCom channel and a `wecom_robot` for handoff alerts, both aimed at `api_base`.
pub fn config(kb: &Path, api_base: &str) -> Config {
    kefu::config::parse(&config_toml(kb, api_base), "test", &|_| None)
        .unwrap_or_else(|e| panic!("config: {e:?}"))
}

/// [`config`] as TOML (no `[server]` table: the caller may put one in front).
pub fn config_toml(kb: &Path, api_base: &str) -> String {
    let (corp_id, token, aes_key) = official();
    format!(
        r#"
[knowledge]
paths = [{kb:?}]

[handoff]
notify = ["agents"]

[[notify]]
name = "agents"
kind = "wecom_robot"
key = "{ROBOT_KEY}"
api_base = "{api_base}"

[[channels]]
name = "{CHANNEL}"
kind = "wecom"
corp_id = "{corp_id}"
agent_id = {AGENT_ID}
secret = "{APP_SECRET}"
token = "{token}"
encoding_aes_key = "{aes_key}"
api_base = "{api_base}"
"#,
        kb = kb.display().to_string(),
    )
}

/// kefu serving on 127.0.0.1:0, outbox workers running.
pub struct Kefu {
    pub base: String,
    pub state: AppState,
    pub http: reqwest::Client,
    server: tokio::task::JoinHandle<()>,
}

impl Kefu {
    pub async fn start(config: Config, db: sled::Db) -> Kefu {
        let app = App::with_db(Arc::new(config), db, IngestPolicy::WhenStale)
            .await
            .expect("app");
        let state = AppState::new(app).expect("state");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind kefu");
        let base = format!("http://{}", listener.local_addr().expect("addr"));
        state.start_background();
        let router =
            kefu::server::router(state.clone()).into_make_service_with_connect_info::<SocketAddr>();
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, router).await;
        });
        Kefu {
            base,
            state,
            http: reqwest::Client::new(),
            server,
        }
    }

    /// Stop the background work and the listener.
    pub fn stop(&self) {
        self.state.stop_background();
        self.server.abort();
    }

    /// Send a callback; (status, body, time to the answer).
    pub async fn call(&self, method: &str, query: &str, body: &str) -> (u16, String, Duration) {
        let url = format!("{}/wecom/{CHANNEL}?{query}", self.base);
        let started = Instant::now();
        let resp = match method {
            "GET" => self.http.get(url),
            _ => self.http.post(url).body(body.to_string()),
        }
        .send()
        .await
        .expect("callback");
        let status = resp.status().as_u16();
        let text = resp.text().await.expect("body");
        (status, text, started.elapsed())
    }

    pub async fn post(&self, cb: &Callback) -> (u16, String, Duration) {
        self.call("POST", &cb.query, &cb.body).await
    }

    pub fn outbox_len(&self) -> usize {
        self.state.app.store.outbox_len().expect("outbox")
    }
}

/// A signed, encrypted callback request: query string and body.
#[derive(Clone, Debug)]
pub struct Callback {
    pub query: String,
    pub body: String,
}

/// Seals inner XML the way WeCom does.
pub struct Sealer {
    pub corp_id: String,
    pub token: String,
    cipher: Cipher,
}

impl Sealer {
    pub fn official() -> Self {
        let (corp_id, token, aes_key) = official();
        Sealer {
            cipher: Cipher::new(&aes_key).expect("aes key"),
            corp_id,
            token,
        }
    }

    /// Encrypt `inner` for `receive_id`, sign it, wrap it in the envelope.
    pub fn seal_for(&self, inner: &str, receive_id: &str) -> Callback {
        let encrypt = self
            .cipher
            .encrypt(inner.as_bytes(), receive_id, &mut rand::thread_rng());
        // Signed now, as WeCom signs each delivery (kefu refuses far-off timestamps).
        let ts = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock")
            .as_secs()
            .to_string();
        let nonce = "1597212914";
        let sig = signature(&self.token, &ts, nonce, &encrypt);
        Callback {
            query: format!(
                "msg_signature={sig}&timestamp={ts}&nonce={nonce}",
            ),
            body: format!(
                "<xml><ToUserName><![CDATA[{}]]></ToUserName><Encrypt><![CDATA[{encrypt}]]></Encrypt><AgentID><![CDATA[{AGENT_ID}]]></AgentID></xml>",
                self.corp_id
            ),
        }
    }

    pub fn seal(&self, inner: &str) -> Callback {
        self.seal_for(inner, &self.corp_id)
    }

    fn head(&self, from: &str, msg_type: &str) -> String {
        format!(
            "<xml><ToUserName><![CDATA[{}]]></ToUserName><FromUserName><![CDATA[{from}]]></FromUserName><CreateTime>1700000000</CreateTime><MsgType><![CDATA[{msg_type}]]></MsgType><AgentID>{AGENT_ID}</AgentID>",
            self.corp_id
        )
    }

    /// A text message `msg_id` from `from`.
    pub fn text(&self, from: &str, msg_id: u64, content: &str) -> Callback {
        self.seal(&format!(
            "{}<Content><![CDATA[{content}]]></Content><MsgId>{msg_id}</MsgId></xml>",
            self.head(from, "text")
        ))
    }

    pub fn image(&self, from: &str, msg_id: u64) -> Callback {
        self.seal(&format!(
            "{}<PicUrl><![CDATA[https://wework.qpic.cn/x.jpg]]></PicUrl><MediaId><![CDATA[media-1]]></MediaId><MsgId>{msg_id}</MsgId></xml>",
            self.head(from, "image")
        ))
    }

    pub fn event(&self, from: &str, event: &str) -> Callback {
        self.seal(&format!(
            "{}<Event><![CDATA[{event}]]></Event><EventKey><![CDATA[]]></EventKey></xml>",
            self.head(from, "event")
        ))
    }
}
