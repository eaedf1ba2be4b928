//! kefu: one service that answers customers on WeCom, DingTalk and the web from the
//! company's own knowledge base.
//!
//! `server → engine → knowledge / providers / store`; `server → adapters`.

pub mod agents;
pub mod app;
pub mod clock;
pub mod config;
pub mod delivery;
pub mod engine;
pub mod eval;
pub mod events;
pub mod knowledge;
pub mod lifecycle;
pub mod metrics;
pub mod model_import;
pub mod providers;
pub mod server;
pub mod store;
#[cfg(any(test, feature = "testing"))]
pub mod testing;
pub mod text;
