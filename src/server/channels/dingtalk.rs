//! DingTalk robots: HTTP callbacks on `/dingtalk/{name}`, or the Stream client
//! (`mode = "stream"`, server/dingtalk_stream.rs); replies by sessionWebhook or OpenAPI.

use std::sync::Arc;

use adapters::dingtalk::{DingTalk, DingTalkParams};
use adapters::{ChannelKind, HostAllowlist};

use super::{CallbackPath, Context, Driver, Registered};
use crate::config::{DingTalkChannelConfig, DingTalkMode, ServerConfig};
use crate::delivery::dingtalk::DingTalkSender;
use crate::lifecycle::TaskHandle;
use crate::server::{dingtalk_stream, AppState};

pub fn register(c: &DingTalkChannelConfig, ctx: &Context<'_>) -> anyhow::Result<Registered> {
    let codec = codec(c, &ctx.config.server)?;
    let sender = DingTalkSender::new(c, ctx.http.clone(), ctx.store.clone(), ctx.clock.clone())
        .with_webhook_hosts(webhook_hosts(c, &ctx.config.server)?);
    Ok(Registered {
        name: c.name.clone(),
        kind: ChannelKind::DingTalk,
        callback: Some(CallbackPath::DingTalk),
        codec: Some(Arc::new(codec)),
        sender: Some(Arc::new(sender)),
        markdown: c.markdown,
        driver: Arc::new(DingTalkDriver { config: c.clone() }),
    })
}

/// The hosts a callback's sessionWebhook may name (SSRF): the channel's list, else the
/// server's.
fn webhook_hosts(
    c: &DingTalkChannelConfig,
    server: &ServerConfig,
) -> anyhow::Result<HostAllowlist> {
    HostAllowlist::new(c.webhook_hosts(server))
        .map_err(|e| anyhow::anyhow!("allowed_webhook_hosts: {e}"))
}

fn codec(c: &DingTalkChannelConfig, server: &ServerConfig) -> anyhow::Result<DingTalk> {
    Ok(DingTalk::new(DingTalkParams {
        name: c.name.clone(),
        app_key: c.app_key.clone(),
        app_secret: c.app_secret.clone(),
        robot_code: c.robot_code.clone(),
    })?
    .with_webhook_hosts(webhook_hosts(c, server)?))
}

struct DingTalkDriver {
    config: DingTalkChannelConfig,
}

impl Driver for DingTalkDriver {
    /// Stream mode: one client keeps a connection to DingTalk's gateway.
    fn start(&self, s: &AppState, _ch: &Arc<Registered>, task: TaskHandle) {
        if self.config.mode != DingTalkMode::Stream {
            return;
        }
        match codec(&self.config, &s.app.config.server) {
            Ok(codec) => dingtalk_stream::spawn(s, &self.config, codec, task),
            Err(e) => tracing::error!(error = %e, "dingtalk stream not started"),
        }
    }
}
