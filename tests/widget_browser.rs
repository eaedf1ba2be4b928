//! The website widget in a real browser: headless Chromium driven over the DevTools protocol
//! against a `kefu serve` child process with a small knowledge base written here.
//!
//! Needs `/usr/bin/chromium` (Debian's `chromium` package; the README's test command,
//! `scripts/test.sh`, installs it). `KEFU_CHROMIUM` names another binary. Screenshots land in
//! `<target>/browser-artifacts/`.

#[path = "browser/cdp.rs"]
mod cdp;
#[path = "browser/serve.rs"]
mod serve;
#[path = "browser/widget_dom.rs"]
mod widget_dom;

use std::path::Path;
use std::time::Duration;

use anyhow::{anyhow, ensure, Context, Result};
use cdp::Chromium;
use serde_json::{json, Value};
use serve::{artifacts_dir, chromium_binary, serve_page, Kefu, WAIT};
use widget_dom::{ask, count, js, open_launcher, settle};

/// Agent replies arrive by polling (every ~3 s): allow several rounds.
const WAIT_POLL: Duration = Duration::from_secs(45);

const FAQ: &str = r#"{"id": "reset", "question": "How do I reset my password?", "answer": "Open Settings, choose Security and click Reset password. A reset link is emailed within 5 minutes."}
{"id": "xss", "question": "What is the xss test?", "answer": "Here it is: <img src=x onerror=\"window.__xss=1\"><script>window.__xss=2</script> **bold**"}
{"id": "hours", "question": "When is support open?", "answer": "Support is open Monday to Friday, 9:00 to 18:00."}
"#;

/// A `kefu serve` child with the FAQ above; `origins`: pages on other origins that may embed
/// the widget (`allowed_origins`).
fn start_kefu(log: &Path, origins: &[String]) -> Result<Kefu> {
    Kefu::start(log, "127.0.0.1:0", |dir| {
        let kb = dir.join("kb/faq");
        std::fs::create_dir_all(&kb)?;
        std::fs::write(kb.join("demo.jsonl"), FAQ)?;
        Ok(format!(
            r#"[server]
listen = "127.0.0.1:0"
data_dir = "{data}"

[knowledge]
paths = ["{kb}"]

[[channels]]
name = "site"
kind = "web"
allowed_origins = {origins}
link_hosts = ["example.com"]
"#,
            data = dir.join("data").display(),
            kb = dir.join("kb").display(),
            origins = json!(std::iter::once("http://127.0.0.1".to_string())
                .chain(origins.iter().cloned())
                .collect::<Vec<_>>()),
        ))
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn widget_answers_streams_restores_escapes_and_hands_off() -> Result<()> {
    let chromium_path = chromium_binary();
    let artifacts = artifacts_dir();
    std::fs::create_dir_all(&artifacts)?;
    let kefu = start_kefu(&artifacts.join("kefu-serve.log"), &[])?;
    let base = kefu.base.clone();
    let browser = Chromium::launch(&chromium_path).await?;
    let page = browser.new_page().await?;
    page.set_viewport(1280, 860, 1.0, false).await?;

    // --- the demo page mounts the launcher through the one-line embed ---
    page.navigate(&format!("{base}/"), WAIT).await?;
    page.wait_for(
        "the launcher, styled",
        &js("$('[data-role=\"launcher\"]') && W.style.visibility === '' && getComputedStyle($('[data-role=\"launcher\"]')).borderRadius === '50%'"),
        WAIT,
    )
    .await?;
    let a11y = page
        .eval(&js(r#"{
            log: $('[data-role="log"]').getAttribute('role') + '/' + $('[data-role="log"]').getAttribute('aria-live'),
            label: $('[data-role="input"]').labels.length === 1 && $('[data-role="input"]').labels[0].textContent.length > 0,
            send: !!$('[data-role="send"]').getAttribute('aria-label'),
            launcher: $('[data-role="launcher"]').getAttribute('aria-expanded'),
            inline: !!document.querySelector('[data-kefu-mode="inline"] [data-role="log"]'),
        }"#))
        .await?;
    ensure!(a11y["log"] == "log/polite", "message list aria: {a11y}");
    ensure!(
        a11y["label"] == true && a11y["send"] == true,
        "labels: {a11y}"
    );
    ensure!(
        a11y["launcher"] == "false",
        "launcher starts closed: {a11y}"
    );
    ensure!(
        a11y["inline"] == true,
        "the inline seed-API panel is on the demo page: {a11y}"
    );

    // --- the inline seed-API panel answers an example chip ---
    page.click(
        "[...document.querySelectorAll('#chips button')].find(b => b.textContent === 'How do I reset my password?')",
    )
    .await?;
    page.wait_for(
        "the inline panel's answer to the chip",
        r#"[...document.querySelectorAll('[data-kefu-mode="inline"] [data-role="message"][data-from="bot"]')]
            .some(m => /Reset password/.test(m.textContent) && m.querySelector('[data-role="source"]'))"#,
        WAIT,
    )
    .await?;

    // --- ask, see the streamed answer with its source ---
    open_launcher(&page).await?;
    ask(&page, "How do I reset my password?").await?;
    let answer = page
        .wait_for(
            "a bot answer about resetting the password, with its source",
            &js(r#"(() => {
                const m = last('bot');
                if (!m || !/Reset password|Security/.test(m.textContent)) return null;
                const src = [...m.querySelectorAll('[data-role="source"]')].map(s => s.textContent);
                return src.some(s => s.includes('faq/demo.jsonl'))
                    ? { text: m.textContent, sources: src, streamed: m.dataset.streamed === 'true' } : null;
            })()"#),
            WAIT,
        )
        .await?;
    println!("answer: {answer}");
    ensure!(
        answer["streamed"] == true,
        "the answer arrived as server-sent deltas: {answer}"
    );
    let session = page
        .eval(&js("W.dataset.session"))
        .await?
        .as_str()
        .context("session id on the widget")?
        .to_string();
    settle(&page).await?;
    let shot = page.screenshot(&artifacts.join("1-answer.png")).await?;
    println!("screenshot: {}", shot.display());

    // --- a reload keeps the session and the conversation ---
    page.reload(WAIT).await?;
    page.wait_for(
        "the restored conversation after a reload",
        &js(
            r#"msgs('user').some(m => m.textContent === 'How do I reset my password?')
            && msgs('bot').some(m => /Reset password|Security/.test(m.textContent)
                && m.querySelector('[data-role="source"]'))"#,
        ),
        WAIT,
    )
    .await?;
    let same = page.eval(&js("W.dataset.session")).await?;
    ensure!(
        same == json!(session),
        "session id changed on reload: {same} != {session}"
    );

    // --- a network error shows Retry, and Retry sends the message again ---
    open_launcher(&page).await?;
    page.eval(
        r#"window.__realFetch = window.fetch;
           window.fetch = function (url, init) {
             if (init && init.method === 'POST') return Promise.reject(new TypeError('Failed to fetch'));
             return window.__realFetch.apply(this, arguments);
           }; true"#,
    )
    .await?;
    let users_before = count(&page, "user").await?;
    ask(&page, "What is the xss test?").await?;
    page.wait_for(
        "an inline error with a Retry button",
        &js("$('[data-role=\"error\"]') && $('[data-role=\"retry\"]')"),
        WAIT,
    )
    .await?;
    page.eval("window.fetch = window.__realFetch; true").await?;
    page.click(&js("$('[data-role=\"retry\"]')")).await?;

    // --- a hostile answer renders as text; the markdown subset still works ---
    let xss = page
        .wait_for(
            "the xss answer",
            &js(r#"(() => {
                const m = last('bot');
                if (!m || !m.textContent.includes('Here it is')) return null;
                return {
                    text: m.textContent,
                    elements: m.querySelectorAll('img, script, iframe, [onerror]').length,
                    strong: [...m.querySelectorAll('strong')].map(s => s.textContent),
                    xss: typeof window.__xss,
                    error: !!$('[data-role="error"]'),
                };
            })()"#),
            WAIT,
        )
        .await?;
    println!("xss answer: {xss}");
    let text = xss["text"].as_str().unwrap_or_default();
    ensure!(
        text.contains("<img") && text.contains("<script>"),
        "the markup must show as literal text: {xss}"
    );
    ensure!(
        xss["elements"] == 0,
        "no element may come from the answer: {xss}"
    );
    ensure!(xss["xss"] == "undefined", "script ran: {xss}");
    ensure!(
        xss["strong"] == json!(["bold"]),
        "**bold** → <strong>: {xss}"
    );
    ensure!(
        xss["error"] == false,
        "the error row goes away on retry: {xss}"
    );
    ensure!(
        count(&page, "user").await? == users_before + 1,
        "Retry re-sends without a second user bubble"
    );

    // --- handoff: banner, then an agent's reply arrives in the same window ---
    ask(&page, "talk to a human").await?;
    page.wait_for(
        "the handoff banner",
        &js(
            r#"W.dataset.handoff === 'true' && !$('[data-role="handoff-banner"]').hidden
            && $('[data-role="handoff-banner"]').offsetHeight > 0"#,
        ),
        WAIT,
    )
    .await?;
    let banner = page
        .eval(&js("$('[data-role=\"handoff-banner\"]').textContent"))
        .await?;
    ensure!(
        banner.as_str().unwrap_or_default().contains("human agent"),
        "banner text: {banner}"
    );
    page.wait_for(
        "messages stacked without overlap in a full log",
        &js(r#"(() => {
            const log = $('[data-role="log"]'), items = [...log.children];
            if (log.scrollHeight <= log.clientHeight) return 'not full yet';
            for (let i = 1; i < items.length; i++) {
                const a = items[i - 1].getBoundingClientRect(), b = items[i].getBoundingClientRect();
                if (b.top < a.bottom - 0.5 || a.height < 10) return null;
            }
            return true;
        })()"#),
        WAIT,
    )
    .await?;
    settle(&page).await?;
    let shot = page.screenshot(&artifacts.join("2-handoff.png")).await?;
    println!("screenshot: {}", shot.display());

    let agent_text = "Hi, this is Dana from support. I've sent you a new link, see [your account](https://example.com/account). Not [this one](https://evil.example/pay).";
    let resp = reqwest::Client::new()
        .post(format!(
            "{base}/agent/api/conversations/site/{session}/reply"
        ))
        .json(&json!({ "text": agent_text }))
        .send()
        .await?;
    let status = resp.status();
    ensure!(
        status.is_success(),
        "agent reply: {status} {}",
        resp.text().await?
    );
    let agent = page
        .wait_for(
            "the agent's reply in the widget",
            &js(r#"(() => {
                const m = last('agent');
                if (!m || !m.textContent.includes('Dana from support')) return null;
                const a = m.querySelector('a');
                return { cls: m.className, links: m.querySelectorAll('a').length, link: a && [a.getAttribute('href'), a.rel, a.target] };
            })()"#),
            WAIT_POLL,
        )
        .await?;
    ensure!(
        agent["cls"]
            .as_str()
            .unwrap_or_default()
            .contains("kefu-from-agent"),
        "agent styling: {agent}"
    );
    ensure!(
        agent["link"]
            == json!([
                "https://example.com/account",
                "noopener noreferrer",
                "_blank"
            ]),
        "agent link: {agent}"
    );
    ensure!(
        agent["links"] == json!(1),
        "a link to a host neither in the knowledge nor in link_hosts stays text: {agent}"
    );
    settle(&page).await?;
    let shot = page
        .screenshot(&artifacts.join("3-agent-reply.png"))
        .await?;
    println!("screenshot: {}", shot.display());

    // --- Enter while an IME is composing does not send ---
    let users = count(&page, "user").await?;
    page.eval(&js(r#"(() => {
        const i = $('[data-role="input"]');
        i.value = '';
        window.__composition = [];
        i.addEventListener('compositionstart', () => window.__composition.push('start'));
        i.addEventListener('compositionend', () => window.__composition.push('end'));
        i.focus();
        return true;
    })()"#))
        .await?;
    // A real composition (as a pinyin IME makes it), then Enter to pick the candidate.
    page.call(
        "Input.imeSetComposition",
        json!({ "text": "nihao", "selectionStart": 5, "selectionEnd": 5 }),
    )
    .await?;
    let started = page.eval("window.__composition.join(',')").await?;
    ensure!(started == "start", "the composition started: {started}");
    // The IME consumes that Enter: a key event without a character.
    page.press("Enter", 13, None).await?;
    ensure!(
        count(&page, "user").await? == users,
        "Enter during a composition sent the message"
    );
    page.insert_text("你好").await?; // commits the composition
                                     // Enter as IMEs deliver it (keyCode 229), and a synthetic isComposing event.
    page.call(
        "Input.dispatchKeyEvent",
        json!({ "type": "rawKeyDown", "key": "Enter", "code": "Enter",
                "windowsVirtualKeyCode": 229, "nativeVirtualKeyCode": 229 }),
    )
    .await?;
    let synthetic = page
        .eval(&js(r#"(() => {
            const e = new KeyboardEvent('keydown', { key: 'Enter', code: 'Enter', isComposing: true, bubbles: true, cancelable: true });
            $('[data-role="input"]').dispatchEvent(e);
            return { prevented: e.defaultPrevented, value: $('[data-role="input"]').value };
        })()"#))
        .await?;
    ensure!(
        count(&page, "user").await? == users,
        "Enter with keyCode 229 / isComposing sent the message"
    );
    ensure!(
        synthetic["prevented"] == false && synthetic["value"] == "你好",
        "the composed text stays in the input: {synthetic}"
    );
    // Once composing is over, Enter sends (so the checks above were not vacuous).
    page.press("Enter", 13, Some("\r")).await?;
    page.wait_for(
        "Enter after the composition to send",
        &js("last('user') && last('user').textContent === '你好'"),
        WAIT,
    )
    .await?;
    ensure!(
        count(&page, "user").await? == users + 1,
        "exactly one message sent"
    );

    // --- the agent hands the conversation back: the banner goes away ---
    let resp = reqwest::Client::new()
        .post(format!(
            "{base}/agent/api/conversations/site/{session}/release"
        ))
        .send()
        .await?;
    ensure!(resp.status().is_success(), "release: {}", resp.status());
    page.wait_for(
        "the banner to go after the agent hands back",
        &js(r#"W.dataset.handoff === 'false' && $('[data-role="handoff-banner"]').hidden"#),
        WAIT_POLL,
    )
    .await?;

    // --- Escape closes the panel and gives focus back to the launcher ---
    page.eval(&js("$('[data-role=\"input\"]').focus()")).await?;
    page.press("Escape", 27, None).await?;
    page.wait_for(
        "Escape to close the panel",
        &js(r#"$('[data-role="panel"]').hidden && document.activeElement === $('[data-role="launcher"]')
            && $('[data-role="launcher"]').getAttribute('aria-expanded') === 'false'"#),
        WAIT,
    )
    .await?;

    // --- a phone: the panel fills the screen ---
    page.set_viewport(390, 844, 2.0, true).await?;
    open_launcher(&page).await?;
    let rect: Value = page
        .wait_for(
            "the full-screen panel on a small viewport",
            &js(r#"(() => {
                const r = $('[data-role="panel"]').getBoundingClientRect();
                return r.left === 0 && r.top === 0 && r.width === 390 && innerWidth === 390
                    && r.height === innerHeight ? [r.width, r.height] : null;
            })()"#),
            WAIT,
        )
        .await
        .map_err(|e| anyhow!("mobile layout: {e}"))?;
    println!("mobile panel: {rect}");
    settle(&page).await?;
    let shot = page.screenshot(&artifacts.join("4-mobile.png")).await?;
    println!("screenshot: {}", shot.display());

    drop(browser);
    drop(kefu);
    Ok(())
}

/// A shop page on another origin, with its own heavy-handed element styles.
fn shop_page(kefu: &str) -> String {
    format!(
        r##"<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Example shop</title>
<style>
  body {{ font-family: Georgia, serif; font-size: 20px; }}
  div {{ margin: 7px; padding: 11px; }}
  button {{ background: rgb(255, 0, 0); border-radius: 0; padding: 30px; }}
  textarea {{ font-size: 30px; }}
</style></head>
<body>
<h1>Example shop</h1>
<button id="host-button" type="button">Host button</button>
<div id="host-div">Host box</div>
<script src="{kefu}/widget.js" data-channel="site" data-lang="zh" data-position="bottom-left"
        data-primary-color="#16a34a" data-open-on-load="true" async></script>
</body></html>"##
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn widget_embeds_on_another_origin_isolated_and_in_chinese() -> Result<()> {
    let chromium_path = chromium_binary();
    let artifacts = artifacts_dir();
    std::fs::create_dir_all(&artifacts)?;
    let shop = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let shop_port = shop.local_addr()?.port();
    let shop_origin = format!("http://127.0.0.1:{shop_port}");
    let kefu = start_kefu(
        &artifacts.join("kefu-serve-cross-origin.log"),
        std::slice::from_ref(&shop_origin),
    )?;
    serve_page(shop, shop_page(&kefu.base));
    let browser = Chromium::launch(&chromium_path).await?;
    let page = browser.new_page().await?;
    page.set_viewport(1100, 800, 1.0, false).await?;

    // --- an allowed origin: the one-line embed, opened on load, in Chinese ---
    page.navigate(&format!("{shop_origin}/"), WAIT).await?;
    page.wait_for(
        "the widget opened on load",
        &js(r#"$('[data-role="launcher"]') && W.style.visibility === ''
            && !$('[data-role="panel"]').hidden"#),
        WAIT,
    )
    .await?;
    let look = page
        .eval(&js(r#"(() => {
            const host = document.getElementById('host-button'), box = document.getElementById('host-div');
            const panel = $('[data-role="panel"]');
            const header = $('.kefu-header');
            return {
                placeholder: $('[data-role="input"]').placeholder,
                left: W.getBoundingClientRect().left,
                // offsetLeft ignores the opening animation's transform.
                panelLeft: W.getBoundingClientRect().left + panel.offsetLeft,
                launcher: getComputedStyle($('[data-role="launcher"]')).backgroundColor,
                launcherPadding: getComputedStyle($('[data-role="launcher"]')).paddingTop,
                headerMargin: getComputedStyle(header).marginTop,
                inputFont: getComputedStyle($('[data-role="input"]')).fontSize,
                hostButton: [getComputedStyle(host).backgroundColor, getComputedStyle(host).borderRadius],
                hostDiv: getComputedStyle(box).marginTop,
                hostFont: getComputedStyle(document.body).fontFamily,
            };
        })()"#))
        .await?;
    println!("cross-origin look: {look}");
    ensure!(
        look["placeholder"] == "请输入您的问题…",
        "data-lang=zh: {look}"
    );
    ensure!(
        look["left"] == 20 && look["panelLeft"] == 20,
        "data-position=bottom-left: {look}"
    );
    ensure!(
        look["launcher"] == "rgb(22, 163, 74)" && look["launcherPadding"] == "0px",
        "widget styles win over the host's element styles: {look}"
    );
    ensure!(
        look["headerMargin"] == "0px" && look["inputFont"] == "14px",
        "host element styles stay out of the widget: {look}"
    );
    ensure!(
        look["hostButton"] == json!(["rgb(255, 0, 0)", "0px"]) && look["hostDiv"] == "7px",
        "widget styles stay out of the host page: {look}"
    );

    ask(&page, "转人工").await?;
    page.wait_for(
        "the Chinese handoff banner",
        &js(r#"!$('[data-role="handoff-banner"]').hidden
            && $('[data-role="handoff-banner"]').textContent.includes('已为您转接人工客服，请稍候')"#),
        WAIT,
    )
    .await?;
    settle(&page).await?;
    let shot = page
        .screenshot(&artifacts.join("5-cross-origin-zh.png"))
        .await?;
    println!("screenshot: {}", shot.display());

    // --- the same page from an origin not in allowed_origins: refused, shown inline ---
    page.navigate(&format!("http://localhost:{shop_port}/"), WAIT)
        .await?;
    page.wait_for(
        "the widget on the refused origin",
        &js(r#"$('[data-role="input"]') && !$('[data-role="panel"]').hidden"#),
        WAIT,
    )
    .await?;
    ensure!(
        count(&page, "user").await? == 0,
        "another origin has its own storage"
    );
    ask(&page, "你好").await?;
    page.wait_for(
        "an inline error with Retry on a refused origin",
        &js(r#"$('[data-role="error"]') && $('[data-role="retry"]') && msgs('bot').length === 0"#),
        WAIT,
    )
    .await?;
    Ok(())
}
