//! WeCom: self-built apps (`kind = "wecom"`) and Customer Service accounts
//! (`kind = "wecom_kf"`), both on `/wecom/{name}`. An app with `kf = true` also carries kf
//! conversations (mode B): its callbacks bring kf notifications, its token calls the kf API.

use std::sync::Arc;
use std::time::Duration;

use adapters::wecom::kf::{WeComKf, WeComKfParams};
use adapters::wecom::{WeCom, WeComParams};
use adapters::{ChannelKind, ContentKind, Inbound, KfNotice};
use async_trait::async_trait;

use super::kf::KfRuntime;
use super::{CallbackPath, Context, Driver, Registered, Reply};
use crate::config::{WeComChannelConfig, WeComKfChannelConfig};
use crate::delivery::wecom::{WeComApi, WeComSender};
use crate::engine::EngineError;
use crate::lifecycle::TaskHandle;
use crate::server::{platform, AppState};
use crate::store::{Conversation, OutboxItem};

pub fn register(c: &WeComChannelConfig, ctx: &Context<'_>) -> anyhow::Result<Registered> {
    let codec = WeCom::new(WeComParams {
        name: c.name.clone(),
        corp_id: c.corp_id.clone(),
        agent_id: c.agent_id,
        token: c.token.clone(),
        encoding_aes_key: c.encoding_aes_key.clone(),
    })?
    .with_markdown(c.markdown)
    .with_kf(c.kf)
    .with_timestamp_window(window(c.timestamp_window_ms));
    let api = api(&c.name, &c.corp_id, &c.secret, &c.api_base, ctx);
    let mut sender = WeComSender::with_api(api.clone());
    let kf = c
        .kf_settings()
        .map(|settings| Arc::new(KfRuntime::new(&c.name, settings, api, ctx)));
    if let Some(kf) = &kf {
        sender = sender.with_kf(kf.sender());
    }
    Ok(Registered {
        name: c.name.clone(),
        kind: ChannelKind::WeCom,
        callback: Some(CallbackPath::WeCom),
        codec: Some(Arc::new(codec)),
        sender: Some(Arc::new(sender)),
        markdown: c.markdown,
        driver: Arc::new(AppDriver {
            greet_on_enter: c.greet_on_enter,
            kf,
        }),
    })
}

pub fn register_kf(c: &WeComKfChannelConfig, ctx: &Context<'_>) -> anyhow::Result<Registered> {
    let codec = WeComKf::new(WeComKfParams {
        name: c.name.clone(),
        corp_id: c.corp_id.clone(),
        token: c.token.clone(),
        encoding_aes_key: c.encoding_aes_key.clone(),
    })?
    .with_timestamp_window(window(c.timestamp_window_ms));
    let api = api(&c.name, &c.corp_id, &c.secret, &c.api_base, ctx);
    let kf = Arc::new(KfRuntime::new(&c.name, c.kf_settings(), api, ctx));
    Ok(Registered {
        name: c.name.clone(),
        kind: ChannelKind::WeComKf,
        callback: Some(CallbackPath::WeCom),
        codec: Some(Arc::new(codec)),
        sender: Some(kf.sender()),
        markdown: false,
        driver: Arc::new(KfDriver(kf)),
    })
}

/// `timestamp_window_ms`; 0 = no check.
fn window(ms: u64) -> Option<Duration> {
    (ms > 0).then(|| Duration::from_millis(ms))
}

fn api(
    name: &str,
    corp_id: &str,
    secret: &adapters::Secret,
    api_base: &str,
    ctx: &Context<'_>,
) -> Arc<WeComApi> {
    Arc::new(WeComApi::new(
        name,
        corp_id,
        secret,
        api_base,
        ctx.http.clone(),
        ctx.store.clone(),
        ctx.clock.clone(),
    ))
}

/// A WeCom app; its kf conversations (mode B) go to the kf runtime.
struct AppDriver {
    greet_on_enter: bool,
    kf: Option<Arc<KfRuntime>>,
}

impl AppDriver {
    fn kf_for(&self, kind: ChannelKind) -> Option<&Arc<KfRuntime>> {
        self.kf.as_ref().filter(|_| kind == ChannelKind::WeComKf)
    }
}

#[async_trait]
impl Driver for AppDriver {
    fn start(&self, s: &AppState, ch: &Arc<Registered>, task: TaskHandle) {
        if let Some(kf) = &self.kf {
            kf.start(s, ch, task);
        }
    }

    fn notice(&self, s: &AppState, _ch: &Registered, n: KfNotice) -> bool {
        match &self.kf {
            Some(kf) => {
                kf.notice(s, n);
                true
            }
            None => false,
        }
    }

    /// `greet_on_enter = false`: opening the app is not worth storing.
    fn skip(&self, m: &Inbound) -> bool {
        !self.greet_on_enter
            && matches!(&m.content, ContentKind::Event(e) if e == "enter_agent" || e == "subscribe")
    }

    async fn handle(
        &self,
        s: &AppState,
        ch: &Registered,
        m: &Inbound,
    ) -> Result<Vec<OutboxItem>, EngineError> {
        match self.kf_for(m.kind) {
            Some(kf) => kf.handle(s, ch, m).await,
            None => platform::turn(s, ch, m).await,
        }
    }

    async fn recorded(
        &self,
        s: &AppState,
        ch: &Registered,
        m: &Inbound,
    ) -> Option<Vec<OutboxItem>> {
        match self.kf_for(m.kind) {
            Some(kf) => kf.recorded(s, ch, m).await,
            None => platform::recorded_answer(s, ch, m).await,
        }
    }

    async fn answer(
        &self,
        s: &AppState,
        ch: &Registered,
        m: &Inbound,
        reply: &str,
        handoff_started: bool,
    ) -> Vec<OutboxItem> {
        match self.kf_for(m.kind) {
            Some(kf) => kf.answer(s, ch, m, reply, handoff_started).await,
            None => platform::answer_items(s, ch, m, reply, handoff_started).await,
        }
    }

    async fn send(
        &self,
        s: &AppState,
        ch: &Registered,
        reply: Reply<'_>,
    ) -> Result<Vec<OutboxItem>, String> {
        match self.kf_for(reply.kind) {
            Some(kf) => kf.send(s, ch, reply).await,
            None => platform::encoded_items(s, ch, &reply),
        }
    }

    async fn released(&self, s: &AppState, ch: &Registered, conv: &Conversation) {
        if let Some(kf) = self.kf_for(conv.kind) {
            kf.released(s, ch, conv).await;
        }
    }
}

/// A WeCom kf channel: everything is the kf runtime's.
struct KfDriver(Arc<KfRuntime>);

#[async_trait]
impl Driver for KfDriver {
    fn start(&self, s: &AppState, ch: &Arc<Registered>, task: TaskHandle) {
        self.0.start(s, ch, task);
    }

    fn notice(&self, s: &AppState, _ch: &Registered, n: KfNotice) -> bool {
        self.0.notice(s, n);
        true
    }

    async fn handle(
        &self,
        s: &AppState,
        ch: &Registered,
        m: &Inbound,
    ) -> Result<Vec<OutboxItem>, EngineError> {
        self.0.handle(s, ch, m).await
    }

    async fn recorded(
        &self,
        s: &AppState,
        ch: &Registered,
        m: &Inbound,
    ) -> Option<Vec<OutboxItem>> {
        self.0.recorded(s, ch, m).await
    }

    async fn answer(
        &self,
        s: &AppState,
        ch: &Registered,
        m: &Inbound,
        reply: &str,
        handoff_started: bool,
    ) -> Vec<OutboxItem> {
        self.0.answer(s, ch, m, reply, handoff_started).await
    }

    async fn send(
        &self,
        s: &AppState,
        ch: &Registered,
        reply: Reply<'_>,
    ) -> Result<Vec<OutboxItem>, String> {
        self.0.send(s, ch, reply).await
    }

    async fn released(&self, s: &AppState, ch: &Registered, conv: &Conversation) {
        self.0.released(s, ch, conv).await;
    }
}
