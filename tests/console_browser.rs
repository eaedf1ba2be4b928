//! The agent console in a real browser: headless Chromium driven over the DevTools protocol
//! against a `kefu serve` child process whose WeCom and DingTalk channels (and their robots)
//! point at the fake platforms of `tests/common*`, running in this test.
//!
//! One story, start to finish: a wrong password stays on the login page; a WeCom, a DingTalk
//! and a widget customer ask for a human and appear in the logged-in agent's queue without a
//! reload; the agent claims the widget conversation and replies (Enter sends, Shift+Enter and
//! an IME composition do not), the widget shows it and the console shows it delivered; a
//! second agent cannot claim it; requests without the CSRF token or from another origin are
//! refused; the agent hands it back and the bot answers the next question; the robot notice's
//! deep link opens the WeCom conversation, a canned reply fills in the order and reaches the
//! fake WeCom, a refused one shows as failed, and the case is closed with a note; the
//! DingTalk customer gets the reply through the fake sessionWebhook; the phone layout works
//! in Chinese.
//!
//! Needs `/usr/bin/chromium` (`scripts/test.sh` installs it; `KEFU_CHROMIUM` names another).
//! Screenshots land in `<target>/browser-artifacts/`; with `KEFU_DOCS_SCREENSHOTS=1` the four
//! of the README are written to `docs/` too.

#[path = "browser/cdp.rs"]
mod cdp;
#[path = "common_dingtalk/mod.rs"]
mod dingtalk;
#[path = "common/fake_wecom.rs"]
mod fake_wecom;
#[path = "browser/serve.rs"]
mod serve;
#[path = "common/wecom_kefu.rs"]
mod wecom_kefu;
#[path = "browser/widget_dom.rs"]
mod widget_dom;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use cdp::{Chromium, Page};
use fake_wecom::{Cue, FakeWeCom};
use serde_json::{json, Value};
use serve::{artifacts_dir, chromium_binary, serve_page, Kefu, WAIT};
use wecom_kefu::{Sealer, AGENT_ID, ROBOT_KEY};

/// The widget fetches agent replies every ~3 s: allow several rounds.
const WAIT_POLL: Duration = Duration::from_secs(45);
const DANA_PASSWORD: &str = "dana-likes-oolong";
const LEI_PASSWORD: &str = "lei-prefers-puer";
const ORDER: &str = "LM-20240501-0042";

const FAQ: &str = r#"{"id": "reset", "question": "How do I reset my password?", "answer": "Open Settings, choose Security and click Reset password. A reset link is emailed within 5 minutes."}
{"id": "hours", "question": "When is support open?", "answer": "Support is open Monday to Friday, 9:00 to 18:00."}
{"id": "refund", "question": "What is the refund policy?", "answer": "Annual plans get a full refund within 30 days."}
"#;

/// `kefu hash-password`, the way an operator makes `[[agents]] password_hash`.
fn hash_password(password: &str) -> Result<String> {
    let mut child = Command::new(env!("CARGO_BIN_EXE_kefu"))
        .arg("hash-password")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    child
        .stdin
        .take()
        .context("stdin")?
        .write_all(format!("{password}\n").as_bytes())?;
    let out = child.wait_with_output()?;
    ensure!(
        out.status.success(),
        "hash-password: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8(out.stdout)?.trim().to_string())
}

/// A port that was free a moment ago: `server.public_url` must name it before kefu starts.
fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

struct Fakes<'a> {
    wecom: &'a str,
    dingtalk: &'a str,
}

fn config(dir: &Path, base: &str, fakes: &Fakes, hashes: &[String]) -> Result<String> {
    let kb = dir.join("kb/faq");
    std::fs::create_dir_all(&kb)?;
    std::fs::write(kb.join("demo.jsonl"), FAQ)?;
    let (corp_id, token, aes_key) = wecom_kefu::official();
    Ok(format!(
        r#"[server]
data_dir = "{data}"
public_url = "{base}"
# The fake DingTalk's sessionWebhooks live on 127.0.0.1 (the default allows *.dingtalk.com).
allowed_webhook_hosts = ["127.0.0.1"]

[knowledge]
paths = ["{kb}"]

[handoff]
notify = ["agents-wecom", "agents-dingtalk"]

[[notify]]
name = "agents-wecom"
kind = "wecom_robot"
key = "{ROBOT_KEY}"
api_base = "{wecom}"

[[notify]]
name = "agents-dingtalk"
kind = "dingtalk_robot"
access_token = "{ding_token}"
secret = "{ding_secret}"
api_base = "{dingtalk}"

[[agents]]
id = "dana"
name = "Dana"
password_hash = "{dana}"

[[agents]]
id = "lei"
name = "Lei"
password_hash = "{lei}"

[[canned_replies]]
title = "Refund approved"
text = "Hi {{customer}}, the refund for order {{order}} is approved and reaches you within 5 business days. — {{agent}}"

[[canned_replies]]
title = "Anything else?"
text = "Is there anything else I can help you with?"

[[channels]]
name = "site"
kind = "web"

[[channels]]
name = "support"
kind = "wecom"
corp_id = "{corp_id}"
agent_id = {AGENT_ID}
secret = "{wecom_secret}"
token = "{token}"
encoding_aes_key = "{aes_key}"
api_base = "{wecom}"

[[channels]]
name = "helpdesk"
kind = "dingtalk"
app_key = "{ding_key}"
app_secret = "{ding_app_secret}"
robot_code = "{ding_robot}"
api_base = "{dingtalk}"
markdown = false
"#,
        data = dir.join("data").display(),
        kb = dir.join("kb").display(),
        wecom = fakes.wecom,
        dingtalk = fakes.dingtalk,
        dana = hashes[0],
        lei = hashes[1],
        wecom_secret = wecom_kefu::APP_SECRET,
        ding_token = dingtalk::ROBOT_TOKEN,
        ding_secret = dingtalk::ROBOT_SECRET,
        ding_key = dingtalk::APP_KEY,
        ding_app_secret = dingtalk::APP_SECRET,
        ding_robot = dingtalk::ROBOT_CODE,
    ))
}

/// Wrap `body` (a JS expression) with helpers for the console's DOM.
fn cjs(body: &str) -> String {
    format!(
        r#"(() => {{
  const app = document.getElementById('app');
  const $ = (role) => document.querySelector('[data-role="' + role + '"]');
  const items = () => [...document.querySelectorAll('[data-role="queue-item"]')];
  const item = (ch, c) => items().find(i => i.dataset.channel === ch && i.dataset.conversation === c) || null;
  const msgs = (from) => [...document.querySelectorAll('[data-role="messages"] [data-role="message"]' + (from ? '[data-from="' + from + '"]' : ''))];
  const lastState = () => {{ const m = msgs('agent').pop(); const d = m && m.querySelector('[data-role="delivery"]'); return d ? d.dataset.state + ': ' + d.textContent : null; }};
  return ({body});
}})()"#
    )
}

/// Type `id` and `password` into the login form and press the button.
async fn log_in(page: &Page<'_>, id: &str, password: &str) -> Result<()> {
    page.eval(&cjs(
        "(() => { const f = $('login-form'); f.elements.id.value = ''; f.elements.password.value = ''; f.elements.id.focus(); return true; })()",
    ))
    .await?;
    page.insert_text(id).await?;
    page.eval(&cjs("$('login-form').elements.password.focus()"))
        .await?;
    page.insert_text(password).await?;
    page.click(&cjs("$('login-submit')")).await
}

/// Claim the open conversation with the button; wait for the composer.
async fn claim(page: &Page<'_>) -> Result<()> {
    page.click(&cjs("$('claim')")).await?;
    page.wait_for(
        "the claim: the composer, focused",
        &cjs("!$('composer').hidden && $('claim').hidden && document.activeElement === $('reply')"),
        WAIT,
    )
    .await?;
    Ok(())
}

/// Type into the focused composer and press Enter; wait for the message in the log.
async fn reply(page: &Page<'_>, text: &str) -> Result<()> {
    page.eval(&cjs("$('reply').focus()")).await?;
    page.insert_text(text).await?;
    page.press("Enter", 13, Some("\r")).await?;
    page.wait_for(
        &format!("the reply {text:?} in the log"),
        &cjs(&format!(
            "msgs('agent').some(m => m.querySelector('.bubble').textContent === {t}) && $('reply').value === ''",
            t = json!(text)
        )),
        WAIT,
    )
    .await?;
    Ok(())
}

async fn delivered(page: &Page<'_>, what: &str) -> Result<Value> {
    page.wait_for(
        what,
        &cjs("lastState() && lastState().startsWith('sent') ? lastState() : null"),
        WAIT,
    )
    .await
}

/// Let animations and notices end, then save the screenshot (and the docs copy when asked).
async fn screenshot(page: &Page<'_>, name: &str) -> Result<()> {
    widget_dom::settle(page).await?;
    page.wait_for("the toast to go", &cjs("$('toast').hidden"), WAIT)
        .await?;
    let shot = page.screenshot(&artifacts_dir().join(name)).await?;
    println!("screenshot: {}", shot.display());
    if std::env::var_os("KEFU_DOCS_SCREENSHOTS").is_some() {
        let docs = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("docs")
            .join(name);
        std::fs::copy(&shot, &docs)?;
        println!("docs screenshot: {}", docs.display());
    }
    Ok(())
}

async fn post_wecom(http: &reqwest::Client, base: &str, cb: &wecom_kefu::Callback) -> Result<()> {
    let r = http
        .post(format!("{base}/wecom/support?{}", cb.query))
        .body(cb.body.clone())
        .send()
        .await?;
    ensure!(r.status().is_success(), "wecom callback: {}", r.status());
    Ok(())
}

async fn post_dingtalk(http: &reqwest::Client, base: &str, body: String) -> Result<()> {
    let ts = dingtalk::now_ms().to_string();
    let sign = adapters::dingtalk::sign::sign(&adapters::Secret::new(dingtalk::APP_SECRET), &ts);
    let r = http
        .post(format!("{base}/dingtalk/helpdesk"))
        .header("content-type", "application/json")
        .header("timestamp", ts)
        .header("sign", sign)
        .body(body)
        .send()
        .await?;
    ensure!(r.status().is_success(), "dingtalk callback: {}", r.status());
    Ok(())
}

/// Poll `f` until it returns something.
async fn eventually<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> Result<T> {
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        if let Some(v) = f() {
            return Ok(v);
        }
        ensure!(
            std::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agents_work_handoffs_from_every_channel_in_the_console() -> Result<()> {
    let seal = Sealer::official();
    let wecom = FakeWeCom::start(&seal.corp_id, wecom_kefu::APP_SECRET, AGENT_ID, ROBOT_KEY).await;
    let ding = dingtalk::Fake::start().await;
    let hashes = [hash_password(DANA_PASSWORD)?, hash_password(LEI_PASSWORD)?];
    let port = free_port()?;
    let base = format!("http://127.0.0.1:{port}");
    let fakes = Fakes {
        wecom: &wecom.base,
        dingtalk: &ding.base,
    };
    let kefu = Kefu::start(
        &artifacts_dir().join("kefu-console.log"),
        &format!("127.0.0.1:{port}"),
        |dir| config(dir, &base, &fakes, &hashes),
    )?;
    ensure!(kefu.base == base, "{} != {base}", kefu.base);
    let http = reqwest::Client::new();
    let browser = Chromium::launch(&chromium_binary()).await?;

    // --- login: a wrong password stays on the login page ---
    let agent = browser.new_page().await?;
    agent.set_viewport(1280, 800, 1.0, false).await?;
    agent.navigate(&format!("{base}/agent"), WAIT).await?;
    agent
        .wait_for(
            "the login form",
            &cjs("app.dataset.view === 'login' && !$('login').hidden && document.activeElement === $('login-form').elements.id"),
            WAIT,
        )
        .await?;
    log_in(&agent, "dana", "not-her-password").await?;
    let refused = agent
        .wait_for(
            "the wrong-password message",
            &cjs("!$('login-error').hidden && $('login-error').textContent"),
            WAIT,
        )
        .await?;
    ensure!(
        refused
            .as_str()
            .unwrap_or_default()
            .contains("Wrong agent ID or password"),
        "{refused}"
    );
    let still = agent
        .eval(&cjs(
            "(async () => [app.dataset.view, $('top').hidden, (await fetch('/agent/api/session')).status])()",
        ))
        .await?;
    ensure!(
        still == json!(["login", true, 401]),
        "still on the login page, no session: {still}"
    );

    log_in(&agent, "dana", DANA_PASSWORD).await?;
    agent
        .wait_for(
            "the console, live",
            &cjs("app.dataset.view === 'console' && app.dataset.live === 'true' && !$('queue-empty').hidden"),
            WAIT,
        )
        .await?;
    agent.eval("window.__sameDocument = true").await?;

    // --- customers on WeCom and DingTalk ask for a human: the queue fills without a reload ---
    post_wecom(
        &http,
        &base,
        &seal.text("lisi", 1, &format!("我要退款，订单号 {ORDER}")),
    )
    .await?;
    post_wecom(&http, &base, &seal.text("lisi", 2, "转人工")).await?;
    let cb = dingtalk::Callback {
        msg_id: "ding-1",
        text: "I would like to talk to a human about my invoice",
        group: false,
        conversation: "cid-zhang",
        staff_id: "zhangsan",
        webhook: ding.webhook("s-zhang"),
        webhook_expires_ms: dingtalk::now_ms() + 3_600_000,
    };
    post_dingtalk(&http, &base, cb.json()).await?;
    agent
        .wait_for(
            "the WeCom and DingTalk conversations in the queue",
            &cjs("item('support', 'lisi') && item('helpdesk', 'cid-zhang')"),
            WAIT,
        )
        .await?;
    let lisi = agent
        .eval(&cjs("item('support', 'lisi').textContent"))
        .await?;
    let lisi = lisi.as_str().unwrap_or_default();
    ensure!(
        lisi.contains("WeCom") && lisi.contains("Asked for a human") && lisi.contains(ORDER),
        "channel, reason in words, the card's order: {lisi}"
    );

    // The robots' notices carry the deep link.
    let wecom_link = format!("{base}/agent#/c/support/lisi");
    let notice = eventually("the WeCom robot notice", || {
        wecom.robot().into_iter().find_map(|n| {
            let text = n["text"]["content"].as_str()?.to_string();
            text.contains("support/lisi").then_some(text)
        })
    })
    .await?;
    ensure!(notice.contains(&wecom_link), "deep link in {notice}");
    let ding_notice = eventually("the DingTalk robot notice", || {
        ding.state
            .robot_posts
            .lock()
            .unwrap()
            .iter()
            .map(|(_, v)| dingtalk::message_text(v))
            .find(|t| t.contains("helpdesk/cid-zhang"))
    })
    .await?;
    ensure!(
        ding_notice.contains(&format!("{base}/agent#/c/helpdesk/cid-zhang")),
        "{ding_notice}"
    );

    // --- a widget customer asks, then wants a person ---
    let customer = browser.new_page().await?;
    customer.set_viewport(1000, 800, 1.0, false).await?;
    customer.navigate(&format!("{base}/"), WAIT).await?;
    customer
        .wait_for(
            "the widget",
            &widget_dom::js("$('[data-role=\"launcher\"]') && W.style.visibility === ''"),
            WAIT,
        )
        .await?;
    widget_dom::open_launcher(&customer).await?;
    widget_dom::ask(&customer, "How do I reset my password?").await?;
    customer
        .wait_for(
            "the bot's answer",
            &widget_dom::js("last('bot') && /Reset password/.test(last('bot').textContent)"),
            WAIT,
        )
        .await?;
    widget_dom::ask(&customer, "I'd like to talk to a human agent please").await?;
    customer
        .wait_for(
            "the handoff banner",
            &widget_dom::js("W.dataset.handoff === 'true'"),
            WAIT,
        )
        .await?;
    let session = customer
        .eval(&widget_dom::js("W.dataset.session"))
        .await?
        .as_str()
        .context("widget session")?
        .to_string();
    let web = json!(session);
    agent
        .wait_for(
            "the widget conversation in the queue, live",
            &cjs(&format!("item('site', {web})")),
            WAIT,
        )
        .await?;
    let live = agent
        .eval(&cjs(
            "[window.__sameDocument === true, document.title, !!app.dataset.alert, items().length]",
        ))
        .await?;
    ensure!(live[0] == true, "no reload happened: {live}");
    ensure!(
        live[1].as_str().unwrap_or_default().starts_with("(3) "),
        "the title counts the unclaimed: {live}"
    );
    ensure!(
        live[2] == true && live[3] == 3,
        "the new handoff was announced: {live}"
    );
    screenshot(&agent, "console-queue.png").await?;

    // --- Dana claims the widget conversation and replies ---
    agent.click(&cjs(&format!("item('site', {web})"))).await?;
    agent
        .wait_for(
            "the conversation with its history",
            &cjs("!$('conv-main').hidden && !$('claim').hidden && msgs('user').length === 2 && msgs('bot').length >= 1 && $('card').textContent.length > 0"),
            WAIT,
        )
        .await?;
    ensure!(
        agent.eval("location.hash").await? == json!(format!("#/c/site/{session}")),
        "the deep link of the open conversation"
    );
    claim(&agent).await?;
    // Shift+Enter starts a new line; an IME's Enter picks a candidate: neither sends.
    agent.insert_text("Line one").await?;
    agent.press_with("Enter", 13, Some("\r"), 8).await?;
    agent
        .call(
            "Input.imeSetComposition",
            json!({ "text": "nihao", "selectionStart": 5, "selectionEnd": 5 }),
        )
        .await?;
    agent.press("Enter", 13, None).await?;
    agent.insert_text("你好").await?;
    let composed = agent
        .eval(&cjs("[$('reply').value, msgs('agent').length]"))
        .await?;
    ensure!(
        composed == json!(["Line one\n你好", 0]),
        "nothing sent yet: {composed}"
    );
    agent.eval(&cjs("($('reply').value = '', true)")).await?;
    let hello = "Hi, this is Dana from support. I've sent you a new reset link.";
    reply(&agent, hello).await?;
    customer
        .wait_for(
            "Dana's reply in the widget",
            &widget_dom::js(&format!(
                "last('agent') && last('agent').textContent.includes({h})",
                h = json!("new reset link")
            )),
            WAIT_POLL,
        )
        .await?;
    let state = delivered(
        &agent,
        "the reply marked delivered once the widget fetched it",
    )
    .await?;
    println!("web delivery: {state}");
    screenshot(&agent, "console-conversation.png").await?;

    // --- Lei, in his own browser, cannot take Dana's conversation ---
    let lei = browser.new_isolated_page().await?;
    lei.set_viewport(1280, 800, 1.0, false).await?;
    lei.navigate(&format!("{base}/agent#/c/site/{session}"), WAIT)
        .await?;
    lei.wait_for(
        "Lei's login form",
        &cjs("app.dataset.view === 'login'"),
        WAIT,
    )
    .await?;
    log_in(&lei, "lei", LEI_PASSWORD).await?;
    lei.wait_for(
        "the deep-linked conversation, Dana's",
        &cjs("!$('conv-main').hidden && $('claim').hidden && $('composer').hidden && $('conv-notice').textContent.includes('Dana is handling')"),
        WAIT,
    )
    .await?;
    let refused = lei
        .eval(&format!(
            "(async () => {{
                const s = await (await fetch('/agent/api/session')).json();
                const r = await fetch('/agent/api/conversations/site/{session}/claim', {{
                    method: 'POST', body: '{{}}',
                    headers: {{ 'Content-Type': 'application/json', 'X-CSRF-Token': s.csrf }} }});
                return [s.agent.id, r.status, (await r.json()).agent];
            }})()"
        ))
        .await?;
    ensure!(
        refused == json!(["lei", 409, "dana"]),
        "a second claim loses: {refused}"
    );

    // --- no CSRF token, or another origin: refused ---
    let reply_url = format!("{base}/agent/api/conversations/site/{session}/reply");
    let no_token = agent
        .eval(&format!(
            "(async () => {{ const r = await fetch({u}, {{ method: 'POST', headers: {{ 'Content-Type': 'application/json' }}, body: JSON.stringify({{ text: 'no token' }}) }}); return [r.status, (await r.json()).error]; }})()",
            u = json!(reply_url)
        ))
        .await?;
    ensure!(no_token[0] == 403, "no CSRF token: {no_token}");
    let other_site = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let other_origin = format!("http://127.0.0.1:{}", other_site.local_addr()?.port());
    serve_page(
        other_site,
        format!(
            r#"<!doctype html><title>elsewhere</title><script>
fetch({u}, {{ method: 'POST', mode: 'no-cors', credentials: 'include',
  headers: {{ 'Content-Type': 'text/plain' }}, body: JSON.stringify({{ text: 'forged from another site' }}) }})
  .then(() => {{ document.title = 'posted'; }}, () => {{ document.title = 'failed'; }});
</script>"#,
            u = json!(reply_url)
        ),
    );
    let elsewhere = browser.new_page().await?;
    elsewhere
        .navigate(&format!("{other_origin}/"), WAIT)
        .await?;
    elsewhere
        .wait_for(
            "the forged post to be made",
            "document.title === 'posted'",
            WAIT,
        )
        .await?;
    let cookie = agent
        .cookies(&format!("{base}/agent"))
        .await?
        .into_iter()
        .find(|c| c["name"] == "kefu_agent")
        .context("Dana's session cookie")?;
    ensure!(
        cookie["httpOnly"] == true && cookie["sameSite"] == "Strict",
        "{cookie}"
    );
    let csrf = agent
        .eval("(async () => (await (await fetch('/agent/api/session')).json()).csrf)()")
        .await?;
    let stolen = |origin: &str| {
        http.post(format!(
            "{base}/agent/api/conversations/site/{session}/claim"
        ))
        .header(
            "cookie",
            format!("kefu_agent={}", cookie["value"].as_str().unwrap_or("")),
        )
        .header("x-csrf-token", csrf.as_str().unwrap_or(""))
        .header("origin", origin)
        .header("content-type", "application/json")
        .body("{}")
        .send()
    };
    let foreign = stolen("http://evil.example").await?;
    ensure!(
        foreign.status() == 403,
        "a foreign origin: {}",
        foreign.status()
    );
    let own = stolen(&base).await?;
    ensure!(
        own.status() == 200,
        "the same request from the console's origin: {}",
        own.status()
    );
    let texts = http
        .get(format!("{base}/api/chat/{session}/messages"))
        .send()
        .await?
        .text()
        .await?;
    ensure!(
        !texts.contains("forged from another site") && !texts.contains("no token"),
        "nothing refused reached the customer: {texts}"
    );

    // --- Dana hands back to the bot; the bot answers the next question ---
    agent.click(&cjs("$('release')")).await?;
    agent
        .wait_for(
            "the conversation back with the bot",
            &cjs(&format!("$('release').hidden && $('composer').hidden && !$('conv-notice').hidden && !item('site', {web})")),
            WAIT,
        )
        .await?;
    customer
        .wait_for(
            "the widget's banner to go",
            &widget_dom::js("W.dataset.handoff === 'false'"),
            WAIT_POLL,
        )
        .await?;
    widget_dom::ask(&customer, "When is support open?").await?;
    customer
        .wait_for(
            "the bot's answer after the handoff",
            &widget_dom::js("last('bot') && /Monday to Friday/.test(last('bot').textContent)"),
            WAIT,
        )
        .await?;

    // The history opens at the newest messages and pages back (small pages to show it).
    let paging = customer
        .eval(&format!(
            "(async () => {{
                const box = document.createElement('div');
                document.body.appendChild(box);
                const w = new AIChatbot({{ sessionId: {web}, storageKey: 'paging-check', historyPage: 3 }});
                box.appendChild(w.render());
                const shown = () => [...box.querySelectorAll('[data-role=\"message\"]')].map(m => m.dataset.seq);
                const earlier = () => box.querySelector('[data-role=\"earlier\"]');
                for (let i = 0; i < 100 && !earlier(); i++) await new Promise(r => setTimeout(r, 50));
                const first = shown();
                earlier().click();
                for (let i = 0; i < 100 && shown().length === first.length; i++) await new Promise(r => setTimeout(r, 50));
                const second = shown();
                w.destroy();
                return [first, second];
            }})()"
        ))
        .await?;
    let (first, second) = (&paging[0], &paging[1]);
    ensure!(
        first
            .as_array()
            .is_some_and(|a| !a.is_empty() && a.len() <= 3)
            && second
                .as_array()
                .is_some_and(|b| b.len() > first.as_array().map_or(0, Vec::len)),
        "newest first, then older on request: {paging}"
    );
    ensure!(
        second.as_array().and_then(|b| b.last()) == first.as_array().and_then(|a| a.last()),
        "the newest stay at the end: {paging}"
    );

    // --- the robot's deep link opens the WeCom conversation; a canned reply goes out ---
    // A fresh page load on the link, as from a chat app.
    agent
        .eval(&format!(
            "history.replaceState(null, '', {}); true",
            json!(wecom_link)
        ))
        .await?;
    agent.reload(WAIT).await?;
    agent
        .wait_for(
            "the WeCom conversation from the deep link",
            &cjs(&format!(
                "app.dataset.view === 'console' && !$('conv-main').hidden && $('conv-channel').textContent.includes('support') && $('card').textContent.includes({o}) && !$('claim').hidden",
                o = json!(ORDER)
            )),
            WAIT,
        )
        .await?;
    claim(&agent).await?;
    let filled = agent
        .eval(&cjs(
            "(() => { const s = $('canned'); s.value = '0'; s.dispatchEvent(new Event('change')); return $('reply').value; })()",
        ))
        .await?;
    let filled = filled.as_str().unwrap_or_default().to_string();
    ensure!(
        filled.contains(ORDER) && filled.contains("Hi lisi") && filled.ends_with("— Dana"),
        "placeholders filled: {filled}"
    );
    agent.press("Enter", 13, Some("\r")).await?;
    let got = eventually("the canned reply at the fake WeCom", || {
        wecom
            .sent_to("lisi")
            .into_iter()
            .find(|t| t.contains(ORDER) && t.contains("Dana"))
    })
    .await?;
    ensure!(got == filled, "sent as written: {got}");
    delivered(&agent, "the WeCom reply confirmed").await?;

    // A reply WeCom refuses for good shows as failed, with the reason.
    wecom.cue(Cue::Errcode(81013));
    reply(&agent, "Are you still there?").await?;
    let failed = agent
        .wait_for(
            "the refused reply marked failed",
            &cjs("lastState() && lastState().startsWith('failed') ? lastState() : null"),
            WAIT,
        )
        .await?;
    ensure!(
        failed.as_str().unwrap_or_default().contains("81013"),
        "{failed}"
    );

    // Close it with a resolution note.
    agent.click(&cjs("$('close')")).await?;
    agent
        .wait_for(
            "the close dialog",
            &cjs("$('close-dialog').open && document.activeElement === $('close-note')"),
            WAIT,
        )
        .await?;
    agent
        .insert_text(&format!("Refund approved for {ORDER}"))
        .await?;
    agent.click(&cjs("$('close-confirm')")).await?;
    agent
        .wait_for(
            "the closed conversation, out of the queue",
            &cjs("msgs('system').some(m => m.textContent.includes('Dana closed it: Refund approved')) && $('close').hidden && !item('support', 'lisi')"),
            WAIT,
        )
        .await?;

    // --- the DingTalk customer gets a reply through the sessionWebhook ---
    agent.click(&cjs("item('helpdesk', 'cid-zhang')")).await?;
    agent
        .wait_for(
            "the DingTalk conversation",
            &cjs("!$('conv-main').hidden && $('conv-customer').textContent === '张三' && !$('claim').hidden"),
            WAIT,
        )
        .await?;
    claim(&agent).await?;
    let ding_reply = "Hello 张三, I'm looking at your invoice now.";
    reply(&agent, ding_reply).await?;
    eventually("the reply at the fake sessionWebhook", || {
        ding.posts_to("s-zhang")
            .iter()
            .any(|v| dingtalk::message_text(v) == ding_reply)
            .then_some(())
    })
    .await?;
    delivered(&agent, "the DingTalk reply confirmed").await?;

    // --- a phone, in Chinese: one screen at a time ---
    post_wecom(
        &http,
        &base,
        &seal.text("wangwu", 3, "我要投诉，快递三天都没到！"),
    )
    .await?;
    agent
        .wait_for(
            "a new WeCom handoff",
            &cjs("item('support', 'wangwu')"),
            WAIT,
        )
        .await?;
    agent.set_viewport(390, 780, 1.0, true).await?;
    agent
        .click(&cjs("document.querySelector('.top [data-role=\"lang\"]')"))
        .await?;
    agent.eval("location.hash = '#/'").await?;
    let phone = agent
        .wait_for(
            "the queue alone, in Chinese",
            &cjs("document.getElementById('queue-title').textContent === '待处理' && getComputedStyle($('conv')).display === 'none' && items().length === 2 ? [Math.max(document.documentElement.scrollWidth, $('channel-filter').getBoundingClientRect().right, ...items().map(i => i.getBoundingClientRect().right)), innerWidth, document.documentElement.lang] : null"),
            WAIT,
        )
        .await?;
    ensure!(
        phone[0].as_f64() <= phone[1].as_f64() && phone[2] == "zh-CN",
        "everything within the screen's width: {phone}"
    );
    screenshot(&agent, "console-phone-queue.png").await?;
    agent.click(&cjs("item('helpdesk', 'cid-zhang')")).await?;
    let layout = agent
        .wait_for(
            "the conversation alone, with its composer on screen",
            &cjs("getComputedStyle(document.querySelector('.queue')).display === 'none' && !$('composer').hidden && $('back').offsetWidth > 0 && lastState() ? [$('composer').getBoundingClientRect().bottom <= innerHeight, $('send').textContent, lastState()] : null"),
            WAIT,
        )
        .await?;
    ensure!(layout[0] == true && layout[1] == "发送", "{layout}");
    ensure!(
        layout[2]
            .as_str()
            .unwrap_or_default()
            .starts_with("sent: 已送达"),
        "{layout}"
    );
    screenshot(&agent, "console-phone-conversation.png").await?;
    agent.click(&cjs("$('back')")).await?;
    agent
        .wait_for(
            "back to the queue",
            &cjs("app.dataset.route === 'queue'"),
            WAIT,
        )
        .await?;

    // --- log out: the session is gone ---
    agent.click(&cjs("$('logout')")).await?;
    let out = agent
        .wait_for(
            "the login page after logging out",
            &cjs("app.dataset.view === 'login' ? (async () => (await fetch('/agent/api/session')).status)() : null"),
            WAIT,
        )
        .await?;
    ensure!(out == 401, "{out}");

    drop(browser);
    drop(kefu);
    Ok(())
}
