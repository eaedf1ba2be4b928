//! Value checks after deserialization: each returns `(key path, what is expected)`.

use std::collections::HashSet;

use super::schema::*;

const INTENTS: &[&str] = &["query", "complaint", "refund", "cancel", "praise", "other"];

pub fn validate(cfg: &Config) -> Vec<(String, String)> {
    let mut errs: Vec<(String, String)> = Vec::new();
    let mut bad = |k: &str, m: String| errs.push((k.to_string(), m));

    if cfg.server.listen.parse::<std::net::SocketAddr>().is_err() {
        bad(
            "server.listen",
            format!(
                "must be host:port like 127.0.0.1:8080, got `{}`",
                cfg.server.listen
            ),
        );
    }
    if cfg.server.max_body_bytes < 1024 {
        bad("server.max_body_bytes", "must be at least 1024".into());
    }
    if cfg.server.max_message_chars == 0 {
        bad("server.max_message_chars", "must be at least 1".into());
    }
    if cfg.knowledge.paths.is_empty() {
        bad("knowledge.paths", "must name at least one directory".into());
    }
    if !(1..=50).contains(&cfg.knowledge.top_k) {
        bad(
            "knowledge.top_k",
            format!("must be between 1 and 50, got {}", cfg.knowledge.top_k),
        );
    }
    unit_range(&mut bad, "knowledge.min_score", cfg.knowledge.min_score);
    unit_range(
        &mut bad,
        "handoff.min_confidence",
        cfg.handoff.min_confidence,
    );

    if let Some(e) = &cfg.providers.embedding {
        provider(
            &mut bad,
            "providers.embedding",
            e.kind,
            &e.base_url,
            &e.model,
        );
        if e.kind == ProviderKind::Local && e.model_dir.is_none() {
            bad(
                "providers.embedding.model_dir",
                "required for kind = \"local\"".into(),
            );
        }
        if e.kind == ProviderKind::Openai && e.dim.is_none() {
            bad(
                "providers.embedding.dim",
                "required for kind = \"openai\": the vector size the model returns (e.g. 1024 for bge-m3)".into(),
            );
        }
        if let Some(w) = e.builtin_weight {
            if e.kind == ProviderKind::Builtin {
                bad(
                    "providers.embedding.builtin_weight",
                    "only for kind = \"local\" or \"openai\" (it blends the built-in embedder into a model's)".into(),
                );
            } else if !(0.0..1.0).contains(&w) {
                bad(
                    "providers.embedding.builtin_weight",
                    format!("must be at least 0 and below 1 (0 = the model alone), got {w}"),
                );
            }
        }
        for (key, set) in [
            ("query_prefix", e.query_prefix.is_some()),
            ("passage_prefix", e.passage_prefix.is_some()),
        ] {
            if set && e.kind != ProviderKind::Local {
                bad(
                    &format!("providers.embedding.{key}"),
                    "only for kind = \"local\" (the prefixes a local model was trained with)"
                        .into(),
                );
            }
        }
        if e.batch_size == 0 {
            bad(
                "providers.embedding.batch_size",
                "must be at least 1".into(),
            );
        }
    }
    if let Some(c) = &cfg.providers.chat {
        if c.kind == ProviderKind::Local {
            bad(
                "providers.chat.kind",
                "must be builtin or openai (local is for embeddings)".into(),
            );
        }
        provider(&mut bad, "providers.chat", c.kind, &c.base_url, &c.model);
        if c.timeout_ms == 0 {
            bad("providers.chat.timeout_ms", "must be at least 1".into());
        }
    }

    if let Err(e) = regex::Regex::new(&cfg.intent.order_pattern) {
        bad(
            "intent.order_pattern",
            format!(
                "not a valid regex: {}",
                e.to_string().lines().last().unwrap_or("")
            ),
        );
    }
    for (i, ex) in cfg.intent.examples.iter().enumerate() {
        if !INTENTS.contains(&ex.intent.as_str()) {
            bad(
                &format!("intent.examples[{i}].intent"),
                format!(
                    "must be one of {}, got `{}`",
                    INTENTS.join(" | "),
                    ex.intent
                ),
            );
        }
        if ex.text.trim().is_empty() {
            bad(
                &format!("intent.examples[{i}].text"),
                "must not be empty".into(),
            );
        }
    }
    if cfg.handoff.message.trim().is_empty() {
        bad("handoff.message", "must not be empty".into());
    }
    if cfg.flows.action == ActionKind::Http {
        match &cfg.flows.action_url {
            None => bad(
                "flows.action_url",
                "required when flows.action = \"http\"".into(),
            ),
            Some(u) => url_check(&mut bad, "flows.action_url", u),
        }
    }

    let mut notify_names = HashSet::new();
    for (i, n) in cfg.notify.iter().enumerate() {
        let path = format!("notify[{i}]");
        name_check(&mut bad, &format!("{path}.name"), n.name());
        if !notify_names.insert(n.name().to_string()) {
            bad(
                &format!("{path}.name"),
                format!("duplicate notify name `{}`", n.name()),
            );
        }
        match n {
            NotifyConfig::WeComRobot(c) => {
                url_check(&mut bad, &format!("{path}.api_base"), &c.api_base);
                if c.key.is_empty() {
                    bad(&format!("{path}.key"), "must not be empty".into());
                }
            }
            NotifyConfig::DingTalkRobot(c) => {
                url_check(&mut bad, &format!("{path}.api_base"), &c.api_base);
                if c.access_token.is_empty() {
                    bad(&format!("{path}.access_token"), "must not be empty".into());
                }
            }
        }
    }
    for (i, n) in cfg.handoff.notify.iter().enumerate() {
        if !notify_names.contains(n) {
            bad(
                &format!("handoff.notify[{i}]"),
                format!("no [[notify]] target is named `{n}`"),
            );
        }
    }

    let mut names = HashSet::new();
    for (i, ch) in cfg.channels.iter().enumerate() {
        let path = format!("channels[{i}]");
        name_check(&mut bad, &format!("{path}.name"), ch.name());
        if notify_names.contains(ch.name()) {
            bad(
                &format!("{path}.name"),
                format!("`{}` is also a [[notify]] name; names must differ (they share the delivery queue)", ch.name()),
            );
        }
        if !names.insert(ch.name().to_string()) {
            bad(
                &format!("{path}.name"),
                format!("duplicate channel name `{}`", ch.name()),
            );
        }
        match ch {
            ChannelConfig::Web(c) => {
                for (j, o) in c.allowed_origins.iter().enumerate() {
                    origin_check(&mut bad, &format!("{path}.allowed_origins[{j}]"), o);
                }
            }
            ChannelConfig::WeCom(c) => {
                if c.corp_id.trim().is_empty() {
                    bad(&format!("{path}.corp_id"), "must not be empty".into());
                }
                if c.agent_id <= 0 {
                    bad(
                        &format!("{path}.agent_id"),
                        format!("must be the app's positive AgentId, got {}", c.agent_id),
                    );
                }
                for (k, s) in [("secret", &c.secret), ("token", &c.token)] {
                    if s.is_empty() {
                        bad(&format!("{path}.{k}"), "must not be empty".into());
                    }
                }
                let key = c.encoding_aes_key.expose();
                if key.chars().count() != 43 {
                    bad(
                        &format!("{path}.encoding_aes_key"),
                        format!("must be 43 characters, got {}", key.chars().count()),
                    );
                } else if !key
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '+' || c == '/')
                {
                    bad(
                        &format!("{path}.encoding_aes_key"),
                        "must be base64 characters (A-Z, a-z, 0-9, +, /)".into(),
                    );
                }
                url_check(&mut bad, &format!("{path}.api_base"), &c.api_base);
            }
            ChannelConfig::DingTalk(c) => {
                if c.robot_code.trim().is_empty() {
                    bad(&format!("{path}.robot_code"), "must not be empty".into());
                }
                for (k, s) in [("app_key", &c.app_key), ("app_secret", &c.app_secret)] {
                    if s.is_empty() {
                        bad(&format!("{path}.{k}"), "must not be empty".into());
                    }
                }
                url_check(&mut bad, &format!("{path}.api_base"), &c.api_base);
            }
        }
    }
    errs
}

fn unit_range(bad: &mut dyn FnMut(&str, String), key: &str, v: f32) {
    if !(0.0..=1.0).contains(&v) {
        bad(key, format!("must be between 0 and 1, got {v}"));
    }
}

fn provider(
    bad: &mut dyn FnMut(&str, String),
    path: &str,
    kind: ProviderKind,
    base_url: &Option<String>,
    model: &Option<String>,
) {
    if kind != ProviderKind::Openai {
        return;
    }
    match base_url {
        None => bad(
            &format!("{path}.base_url"),
            "required for kind = \"openai\" (e.g. https://api.openai.com/v1)".into(),
        ),
        Some(u) => url_check(bad, &format!("{path}.base_url"), u),
    }
    if model.as_deref().is_none_or(|m| m.trim().is_empty()) {
        bad(
            &format!("{path}.model"),
            "required for kind = \"openai\"".into(),
        );
    }
}

fn url_check(bad: &mut dyn FnMut(&str, String), key: &str, u: &str) {
    match url::Url::parse(u) {
        Ok(p) if matches!(p.scheme(), "http" | "https") && p.host().is_some() => {}
        _ => bad(key, format!("must be an http(s) URL, got `{u}`")),
    }
}

fn origin_check(bad: &mut dyn FnMut(&str, String), key: &str, o: &str) {
    if o == "*" {
        return;
    }
    match url::Url::parse(o) {
        Ok(p)
            if matches!(p.scheme(), "http" | "https")
                && p.host().is_some()
                && p.path() == "/"
                && !o.ends_with('/') => {}
        _ => bad(
            key,
            format!("must be `*` or an origin like https://www.example.com (no path), got `{o}`"),
        ),
    }
}

fn name_check(bad: &mut dyn FnMut(&str, String), key: &str, name: &str) {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if !ok {
        bad(
            key,
            format!("must be 1-64 of a-z, A-Z, 0-9, - and _ (it goes into URLs), got `{name}`"),
        );
    }
}
