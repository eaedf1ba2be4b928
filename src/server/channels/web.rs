//! The website widget: served by `/api/chat` (server/chat.rs); no callback, no outbox
//! (the widget reads agent messages from the history).

use adapters::ChannelKind;
use std::sync::Arc;

use super::{Plain, Registered};
use crate::config::WebChannelConfig;

pub fn register(c: &WebChannelConfig) -> anyhow::Result<Registered> {
    Ok(Registered {
        name: c.name.clone(),
        kind: ChannelKind::Web,
        callback: None,
        codec: None,
        sender: None,
        markdown: false,
        driver: Arc::new(Plain),
    })
}
