//! The website widget's DOM as the browser tests drive it: find the launcher, its messages,
//! type a question like a customer.
#![allow(dead_code)] // each browser test uses a different part

use anyhow::{Context, Result};
use serde_json::json;

use crate::cdp::Page;
use crate::serve::WAIT;

/// Wrap `body` (a JS expression) with helpers for the launcher widget's DOM.
pub fn js(body: &str) -> String {
    format!(
        r#"(() => {{
  const W = document.querySelector('[data-kefu-mode="launcher"]');
  const $ = (sel) => W && W.querySelector(sel);
  const msgs = (from) => W ? [...W.querySelectorAll('[data-role="message"]' + (from ? '[data-from="' + from + '"]' : ''))] : [];
  const last = (from) => msgs(from).slice(-1)[0] || null;
  return ({body});
}})()"#
    )
}

pub async fn count(page: &Page<'_>, from: &str) -> Result<u64> {
    page.eval(&js(&format!("msgs('{from}').length")))
        .await?
        .as_u64()
        .context("message count")
}

/// Type into the launcher's input (focused) and press Enter.
pub async fn ask(page: &Page<'_>, question: &str) -> Result<()> {
    page.eval(&js("$('[data-role=\"input\"]').focus()")).await?;
    page.insert_text(question).await?;
    page.press("Enter", 13, Some("\r")).await?;
    // The customer's message shows at once, and the input empties.
    page.wait_for(
        &format!("the user message {question:?}"),
        &js(&format!(
            "last('user') && last('user').textContent === {q} && $('[data-role=\"input\"]').value === ''",
            q = json!(question)
        )),
        WAIT,
    )
    .await?;
    Ok(())
}

/// Let finite CSS animations (a message fading in) end, so screenshots show the final look.
pub async fn settle(page: &Page<'_>) -> Result<()> {
    page.wait_for(
        "animations to finish",
        "document.getAnimations().every(a => a.playState !== 'running' || a.effect.getComputedTiming().iterations === Infinity)",
        WAIT,
    )
    .await?;
    Ok(())
}

pub async fn open_launcher(page: &Page<'_>) -> Result<()> {
    page.click(&js("$('[data-role=\"launcher\"]')")).await?;
    page.wait_for(
        "the panel to open with the input focused",
        &js("!$('[data-role=\"panel\"]').hidden && document.activeElement === $('[data-role=\"input\"]')"),
        WAIT,
    )
    .await?;
    Ok(())
}
