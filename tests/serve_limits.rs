//! `kefu serve` as built: the connection limits and the agent-route guard are wired into the
//! real accept loop, and the start-up warning names an exposed listen address.

use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

#[path = "common/one_file_knowledge.rs"]
mod one_file_knowledge;
use one_file_knowledge::{one_file_knowledge, ONE_ENTRY};

struct Served {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Start `kefu serve` on `listen` with `[server]` extras; wait for its listening line.
fn serve(listen: &str, server_extra: &str) -> Served {
    let (dir, cfg) = one_file_knowledge(
        ONE_ENTRY,
        &format!("listen = \"{listen}\"\n{server_extra}"),
        "",
    );
    let mut child = Command::new(env!("CARGO_BIN_EXE_kefu"))
        .args(["serve", "--config"])
        .arg(&cfg)
        .env_remove("KEFU_CONFIG")
        .env("KEFU_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    let port = line
        .trim()
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no listening line: {line:?}"));
    Served {
        child,
        port,
        _dir: dir,
    }
}

async fn request(port: u16, raw: &str) -> String {
    let mut s = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    s.write_all(raw.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).to_string()
}

#[tokio::test]
async fn serve_cuts_slow_heads_and_refuses_rebinding_hosts() {
    let k = serve("127.0.0.1:0", "header_read_timeout_ms = 300");
    // A head that never ends is closed (well before the 10 s guard).
    let started = std::time::Instant::now();
    let got = request(
        k.port,
        "GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ",
    )
    .await;
    assert!(!got.contains("200 OK"), "{got}");
    assert!(started.elapsed() < Duration::from_secs(10), "never closed");
    // The agent queue: by this machine's name yes, by a rebinding name no.
    let ok = request(
        k.port,
        "GET /agent/api/conversations HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(ok.starts_with("HTTP/1.1 200"), "{ok}");
    let refused = request(
        k.port,
        "GET /agent/api/conversations HTTP/1.1\r\nHost: attacker.example\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(refused.starts_with("HTTP/1.1 403"), "{refused}");
}

#[tokio::test]
async fn serve_warns_when_agent_routes_have_no_token_off_loopback() {
    let mut k = serve("0.0.0.0:0", "");
    let ok = request(
        k.port,
        "GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(ok.starts_with("HTTP/1.1 200"), "{ok}");
    let _ = k.child.kill();
    let mut err = String::new();
    k.child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    assert!(
        err.contains("server.admin_token is not set") && err.contains("0.0.0.0"),
        "{err}"
    );
}
