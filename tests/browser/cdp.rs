//! A small Chrome DevTools Protocol driver for browser tests: launch headless Chromium, talk
//! to it over one WebSocket in flat-session mode (commands by id, events ignored), evaluate
//! JavaScript, type, press keys and take screenshots. Chromium dies with the driver.
#![allow(dead_code)] // each browser test uses a different part

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use base64::Engine as _;
use futures::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::sync::{mpsc, oneshot};
use tokio_tungstenite::tungstenite::Message;

type Pending = Arc<Mutex<HashMap<u64, oneshot::Sender<Result<Value, String>>>>>;

/// How long one CDP command may take before the test gives up on the browser.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(60);

pub struct Chromium {
    child: Child,
    _profile: tempfile::TempDir,
    out: mpsc::UnboundedSender<Message>,
    pending: Pending,
    next_id: AtomicU64,
    stderr_tail: Arc<Mutex<Vec<String>>>,
}

impl Chromium {
    /// Start `binary` headless with a throw-away profile and connect to its DevTools socket.
    pub async fn launch(binary: &Path) -> Result<Chromium> {
        let profile = tempfile::tempdir().context("profile dir")?;
        let mut child = Command::new(binary)
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--no-default-browser-check",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--disable-extensions",
                "--disable-dev-shm-usage",
                "--mute-audio",
                "--hide-scrollbars",
                "--remote-debugging-port=0",
                "--remote-debugging-address=127.0.0.1",
                "--window-size=1280,900",
            ])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg("about:blank")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("cannot start {}", binary.display()))?;

        // Chromium announces its socket on stderr; keep draining it afterwards so a chatty
        // browser never blocks on a full pipe.
        let stderr = child.stderr.take().expect("piped stderr");
        let tail = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = std::sync::mpsc::channel::<String>();
        let tail_w = tail.clone();
        std::thread::spawn(move || {
            let mut tx = Some(tx);
            for line in BufReader::new(stderr).lines().map_while(|l| l.ok()) {
                if let Some(url) = line.split("DevTools listening on ").nth(1) {
                    if let Some(tx) = tx.take() {
                        let _ = tx.send(url.trim().to_string());
                    }
                }
                let mut t = tail_w.lock().unwrap();
                t.push(line);
                if t.len() > 200 {
                    t.remove(0);
                }
            }
        });
        let ws_url = tokio::task::spawn_blocking(move || rx.recv_timeout(Duration::from_secs(90)))
            .await?
            .map_err(|_| {
                let _ = child.kill();
                let lines = tail.lock().unwrap().join("\n");
                anyhow!("chromium printed no `DevTools listening on ws://...` line within 90 s; its stderr:\n{lines}")
            })?;

        let (ws, _) = tokio_tungstenite::connect_async(ws_url.as_str())
            .await
            .with_context(|| format!("connect to {ws_url}"))?;
        let (mut sink, mut stream) = ws.split();
        let (out, mut out_rx) = mpsc::unbounded_channel::<Message>();
        tokio::spawn(async move {
            while let Some(m) = out_rx.recv().await {
                if sink.send(m).await.is_err() {
                    break;
                }
            }
        });
        let pending: Pending = Arc::new(Mutex::new(HashMap::new()));
        let pending_r = pending.clone();
        tokio::spawn(async move {
            while let Some(Ok(msg)) = stream.next().await {
                let Message::Text(text) = msg else { continue };
                let Ok(v) = serde_json::from_str::<Value>(text.as_str()) else {
                    continue;
                };
                let Some(id) = v.get("id").and_then(Value::as_u64) else {
                    continue; // an event: nothing here waits on events
                };
                let Some(tx) = pending_r.lock().unwrap().remove(&id) else {
                    continue;
                };
                let res = match v.get("error") {
                    Some(e) => Err(e.to_string()),
                    None => Ok(v.get("result").cloned().unwrap_or(Value::Null)),
                };
                let _ = tx.send(res);
            }
            // The browser went away: fail everything still waiting.
            pending_r.lock().unwrap().clear();
        });
        Ok(Chromium {
            child,
            _profile: profile,
            out,
            pending,
            next_id: AtomicU64::new(1),
            stderr_tail: tail,
        })
    }

    async fn call(&self, session: Option<&str>, method: &str, params: Value) -> Result<Value> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let mut msg = json!({ "id": id, "method": method, "params": params });
        if let Some(s) = session {
            msg["sessionId"] = json!(s);
        }
        let (tx, rx) = oneshot::channel();
        self.pending.lock().unwrap().insert(id, tx);
        self.out
            .send(Message::text(msg.to_string()))
            .map_err(|_| anyhow!("{method}: the DevTools connection is closed"))?;
        match tokio::time::timeout(COMMAND_TIMEOUT, rx).await {
            Ok(Ok(Ok(v))) => Ok(v),
            Ok(Ok(Err(e))) => bail!("{method}: {e}"),
            Ok(Err(_)) => bail!(
                "{method}: the browser closed the connection; chromium stderr:\n{}",
                self.stderr_tail.lock().unwrap().join("\n")
            ),
            Err(_) => bail!("{method}: no answer within {COMMAND_TIMEOUT:?}"),
        }
    }

    /// A new tab in a window of its own, attached in flat mode. Its own window keeps it
    /// visible: a background tab gets few frames, and every input event waits for one.
    pub async fn new_page(&self) -> Result<Page<'_>> {
        self.page_in(json!({ "url": "about:blank", "newWindow": true }))
            .await
    }

    /// A new tab in its own browser context: its own cookies and storage, like another
    /// person's browser.
    pub async fn new_isolated_page(&self) -> Result<Page<'_>> {
        let ctx = self
            .call(None, "Target.createBrowserContext", json!({}))
            .await?;
        let id = ctx["browserContextId"]
            .as_str()
            .context("browserContextId")?
            .to_string();
        self.page_in(json!({ "url": "about:blank", "browserContextId": id, "newWindow": true }))
            .await
    }

    async fn page_in(&self, params: Value) -> Result<Page<'_>> {
        let target = self.call(None, "Target.createTarget", params).await?;
        let target_id = target["targetId"].as_str().context("targetId")?.to_string();
        let attached = self
            .call(
                None,
                "Target.attachToTarget",
                json!({ "targetId": target_id, "flatten": true }),
            )
            .await?;
        let session = attached["sessionId"]
            .as_str()
            .context("sessionId")?
            .to_string();
        let page = Page {
            browser: self,
            session,
        };
        page.call("Page.enable", json!({})).await?;
        page.call("Runtime.enable", json!({})).await?;
        Ok(page)
    }
}

impl Drop for Chromium {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub struct Page<'a> {
    browser: &'a Chromium,
    session: String,
}

impl Page<'_> {
    pub async fn call(&self, method: &str, params: Value) -> Result<Value> {
        self.browser.call(Some(&self.session), method, params).await
    }

    /// Evaluate `expr` (awaiting a promise) and return its JSON value.
    pub async fn eval(&self, expr: &str) -> Result<Value> {
        let r = self
            .call(
                "Runtime.evaluate",
                json!({ "expression": expr, "returnByValue": true, "awaitPromise": true }),
            )
            .await?;
        if let Some(ex) = r.get("exceptionDetails") {
            let text = ex["exception"]["description"]
                .as_str()
                .or_else(|| ex["text"].as_str())
                .unwrap_or("exception");
            bail!("evaluating `{expr}`: {text}");
        }
        Ok(r["result"]["value"].clone())
    }

    /// Poll `expr` until it is truthy; return that value. Errors while the page is between
    /// documents count as "not yet".
    pub async fn wait_for(&self, what: &str, expr: &str, timeout: Duration) -> Result<Value> {
        let start = Instant::now();
        loop {
            let last = match self.eval(expr).await {
                Ok(v) if truthy(&v) => return Ok(v),
                Ok(v) => format!("last value: {v}"),
                Err(e) => format!("last error: {e}"),
            };
            if start.elapsed() > timeout {
                bail!("timed out after {timeout:?} waiting for {what} ({last})");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub async fn navigate(&self, url: &str, timeout: Duration) -> Result<()> {
        let r = self.call("Page.navigate", json!({ "url": url })).await?;
        if let Some(e) = r.get("errorText").and_then(Value::as_str) {
            bail!("navigate to {url}: {e}");
        }
        self.wait_for(
            "the page to load",
            "document.readyState === 'complete' && location.href !== 'about:blank'",
            timeout,
        )
        .await?;
        Ok(())
    }

    /// Reload and wait until the new document has loaded.
    pub async fn reload(&self, timeout: Duration) -> Result<()> {
        self.eval("window.__beforeReload = true").await?;
        self.call("Page.reload", json!({ "ignoreCache": true }))
            .await?;
        self.wait_for(
            "the reloaded page",
            "!window.__beforeReload && document.readyState === 'complete'",
            timeout,
        )
        .await?;
        Ok(())
    }

    /// Text as a committed IME would insert it, into the focused element.
    pub async fn insert_text(&self, text: &str) -> Result<()> {
        self.call("Input.insertText", json!({ "text": text }))
            .await?;
        Ok(())
    }

    /// A real key press (down + up), e.g. `press("Enter", 13, None)`.
    pub async fn press(&self, key: &str, key_code: u32, text: Option<&str>) -> Result<()> {
        self.press_with(key, key_code, text, 0).await
    }

    /// `press` holding modifiers (CDP bits: 1 Alt, 2 Ctrl, 4 Meta, 8 Shift).
    pub async fn press_with(
        &self,
        key: &str,
        key_code: u32,
        text: Option<&str>,
        modifiers: u32,
    ) -> Result<()> {
        let mut down = json!({
            "type": if text.is_some() { "keyDown" } else { "rawKeyDown" },
            "key": key, "code": key, "modifiers": modifiers,
            "windowsVirtualKeyCode": key_code, "nativeVirtualKeyCode": key_code,
        });
        if let Some(t) = text {
            down["text"] = json!(t);
            down["unmodifiedText"] = json!(t);
        }
        self.call("Input.dispatchKeyEvent", down).await?;
        self.call(
            "Input.dispatchKeyEvent",
            json!({ "type": "keyUp", "key": key, "code": key, "modifiers": modifiers,
                    "windowsVirtualKeyCode": key_code, "nativeVirtualKeyCode": key_code }),
        )
        .await?;
        Ok(())
    }

    /// A real mouse click in the middle of the element `element_expr` evaluates to; fails when
    /// the element is missing, has no size, or something else covers its centre.
    pub async fn click(&self, element_expr: &str) -> Result<()> {
        let probe = format!(
            "(() => {{ const e = {element_expr}; if (!e) return 'missing';
               e.scrollIntoView({{ block: 'nearest' }});
               const r = e.getBoundingClientRect();
               if (!r.width || !r.height) return 'invisible';
               const x = r.left + r.width / 2, y = r.top + r.height / 2;
               const hit = document.elementFromPoint(x, y);
               if (!hit || !(e === hit || e.contains(hit))) return 'covered by ' + (hit ? hit.outerHTML.slice(0, 120) : 'nothing');
               return [x, y]; }})()"
        );
        let v = self.eval(&probe).await?;
        let (Some(x), Some(y)) = (v[0].as_f64(), v[1].as_f64()) else {
            bail!("cannot click `{element_expr}`: {v}");
        };
        self.call(
            "Input.dispatchMouseEvent",
            json!({ "type": "mouseMoved", "x": x, "y": y }),
        )
        .await?;
        for kind in ["mousePressed", "mouseReleased"] {
            self.call(
                "Input.dispatchMouseEvent",
                json!({ "type": kind, "x": x, "y": y, "button": "left", "clickCount": 1 }),
            )
            .await?;
        }
        Ok(())
    }

    /// The cookies the page's browser would send to `url` (HttpOnly ones too).
    pub async fn cookies(&self, url: &str) -> Result<Vec<Value>> {
        let r = self
            .call("Network.getCookies", json!({ "urls": [url] }))
            .await?;
        Ok(r["cookies"].as_array().cloned().unwrap_or_default())
    }

    pub async fn set_viewport(
        &self,
        width: u32,
        height: u32,
        scale: f64,
        mobile: bool,
    ) -> Result<()> {
        self.call(
            "Emulation.setDeviceMetricsOverride",
            json!({ "width": width, "height": height, "deviceScaleFactor": scale, "mobile": mobile }),
        )
        .await?;
        Ok(())
    }

    pub async fn screenshot(&self, path: &Path) -> Result<PathBuf> {
        let r = self
            .call("Page.captureScreenshot", json!({ "format": "png" }))
            .await?;
        let data = r["data"].as_str().context("screenshot data")?;
        let png = base64::engine::general_purpose::STANDARD.decode(data)?;
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        std::fs::write(path, png).with_context(|| format!("write {}", path.display()))?;
        Ok(path.to_path_buf())
    }
}

fn truthy(v: &Value) -> bool {
    match v {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_f64().is_some_and(|f| f != 0.0),
        Value::String(s) => !s.is_empty(),
        Value::Array(_) | Value::Object(_) => true,
    }
}
