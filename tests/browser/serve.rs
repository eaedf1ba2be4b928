//! `kefu serve` as a child process for the browser tests: a config written to a temporary
//! directory, a free port, the log to a file, killed on drop. And where the tests find
//! Chromium and put their screenshots.
#![allow(dead_code)] // each browser test uses a different part

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{bail, Context, Result};

/// Upper bound for anything a page waits on (a 2-core CI machine, a cold Chromium).
pub const WAIT: Duration = Duration::from_secs(60);

pub struct Kefu {
    child: Child,
    /// `http://127.0.0.1:PORT`
    pub base: String,
    _dir: tempfile::TempDir,
}

impl Kefu {
    /// Start `kefu serve` on `listen` with the config `config(dir)` returns; `dir` is the
    /// temporary directory the config, the knowledge and the data live in.
    pub fn start(
        log: &Path,
        listen: &str,
        config: impl FnOnce(&Path) -> Result<String>,
    ) -> Result<Kefu> {
        let dir = tempfile::tempdir()?;
        let text = config(dir.path())?;
        let config = dir.path().join("kefu.toml");
        std::fs::write(&config, text)?;
        let log_file = std::fs::File::create(log)?;
        let mut child = Command::new(env!("CARGO_BIN_EXE_kefu"))
            .args(["serve", "--config"])
            .arg(&config)
            .args(["--listen", listen])
            .current_dir(dir.path())
            .env_remove("KEFU_CONFIG")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log_file)
            .spawn()
            .context("start kefu")?;
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut tx = Some(tx);
            for line in BufReader::new(stdout).lines().map_while(|l| l.ok()) {
                if let Some(url) = line.strip_prefix("kefu listening on ") {
                    if let Some(tx) = tx.take() {
                        let _ = tx.send(url.trim().to_string());
                    }
                }
            }
        });
        let mut kefu = Kefu {
            child,
            base: String::new(),
            _dir: dir,
        };
        match rx.recv_timeout(Duration::from_secs(120)) {
            Ok(base) => kefu.base = base,
            Err(_) => {
                let status = kefu.child.try_wait()?;
                bail!(
                    "kefu printed no `kefu listening on http://...` line (exit status {status:?}); its log: {}\n{}",
                    log.display(),
                    std::fs::read_to_string(log).unwrap_or_default()
                );
            }
        }
        Ok(kefu)
    }
}

impl Drop for Kefu {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `<target>/browser-artifacts/`: screenshots and server logs of the browser tests.
pub fn artifacts_dir() -> PathBuf {
    let target = match std::env::var_os("CARGO_TARGET_DIR") {
        Some(t) => Path::new(env!("CARGO_MANIFEST_DIR")).join(t),
        // <target>/debug/deps/<test>-<hash>
        None => std::env::current_exe()
            .ok()
            .and_then(|exe| exe.ancestors().nth(3).map(Path::to_path_buf))
            .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target")),
    };
    let dir = target.join("browser-artifacts");
    let _ = std::fs::create_dir_all(&dir);
    dir
}

pub fn chromium_binary() -> PathBuf {
    let path = std::env::var_os("KEFU_CHROMIUM")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/bin/chromium"));
    assert!(
        path.exists(),
        "Chromium is required for this test but {} does not exist. Run the README's test \
         command, `scripts/test.sh` (it installs Debian's `chromium` package), or \
         `apt-get install -y chromium`, or set KEFU_CHROMIUM to a Chromium/Chrome binary.",
        path.display()
    );
    path
}

/// Serve `html` for every request on an already bound listener (a page of another origin).
pub fn serve_page(listener: tokio::net::TcpListener, html: String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    tokio::spawn(async move {
        while let Ok((mut sock, _)) = listener.accept().await {
            let html = html.clone();
            tokio::spawn(async move {
                let mut req = Vec::new();
                let mut buf = [0u8; 4096];
                while !req.windows(4).any(|w| w == b"\r\n\r\n") {
                    match sock.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => req.extend_from_slice(&buf[..n]),
                    }
                }
                let resp = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: text/html; charset=utf-8\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{html}",
                    html.len()
                );
                let _ = sock.write_all(resp.as_bytes()).await;
                let _ = sock.shutdown().await;
            });
        }
    });
}
