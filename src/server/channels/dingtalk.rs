//! DingTalk robots: HTTP callbacks on `/dingtalk/{name}`, or the Stream client
//! (`mode = "stream"`, server/dingtalk_stream.rs); replies by sessionWebhook or OpenAPI.

use std::sync::Arc;

use adapters::dingtalk::{DingTalk, DingTalkParams};
use adapters::ChannelKind;
use tokio::sync::watch;

use super::{CallbackPath, Context, Driver, Registered};
use crate::config::{DingTalkChannelConfig, DingTalkMode};
use crate::delivery::dingtalk::DingTalkSender;
use crate::server::{dingtalk_stream, AppState};

pub fn register(c: &DingTalkChannelConfig, ctx: &Context<'_>) -> anyhow::Result<Registered> {
    let codec = DingTalk::new(params(c))?;
    Ok(Registered {
        name: c.name.clone(),
        kind: ChannelKind::DingTalk,
        callback: Some(CallbackPath::DingTalk),
        codec: Some(Arc::new(codec)),
        sender: Some(Arc::new(DingTalkSender::new(
            c,
            ctx.http.clone(),
            ctx.store.clone(),
            ctx.clock.clone(),
        ))),
        markdown: c.markdown,
        driver: Arc::new(DingTalkDriver { config: c.clone() }),
    })
}

fn params(c: &DingTalkChannelConfig) -> DingTalkParams {
    DingTalkParams {
        name: c.name.clone(),
        app_key: c.app_key.clone(),
        app_secret: c.app_secret.clone(),
        robot_code: c.robot_code.clone(),
    }
}

struct DingTalkDriver {
    config: DingTalkChannelConfig,
}

impl Driver for DingTalkDriver {
    /// Stream mode: one client keeps a connection to DingTalk's gateway.
    fn start(&self, s: &AppState, _ch: &Arc<Registered>, stop: watch::Receiver<bool>) {
        if self.config.mode != DingTalkMode::Stream {
            return;
        }
        match DingTalk::new(params(&self.config)) {
            Ok(codec) => dingtalk_stream::spawn(s, &self.config, codec, stop),
            Err(e) => tracing::error!(error = %e, "dingtalk stream not started"),
        }
    }
}
