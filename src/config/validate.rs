//! Value checks after deserialization: each returns `(key path, what is expected)`.

use std::collections::HashSet;

use super::schema::*;

const INTENTS: &[&str] = &["query", "complaint", "refund", "cancel", "praise", "other"];

pub(super) fn validate(cfg: &Config, outline: &Outline) -> Vec<(String, String)> {
    let mut errs: Vec<(String, String)> = Vec::new();
    let mut bad = |k: &str, m: String| errs.push((k.to_string(), m));
    server(&mut bad, &cfg.server);

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
    for (key, value) in [
        (
            "server.queue_per_conversation",
            cfg.server.queue_per_conversation as u64,
        ),
        (
            "server.shutdown_timeout_secs",
            cfg.server.shutdown_timeout_secs,
        ),
        (
            "server.store_failure_exit_secs",
            cfg.server.store_failure_exit_secs,
        ),
        ("delivery.max_attempts", cfg.delivery.max_attempts as u64),
        ("delivery.max_age_secs", cfg.delivery.max_age_secs),
        (
            "delivery.max_retry_after_secs",
            cfg.delivery.max_retry_after_secs,
        ),
    ] {
        if value == 0 {
            bad(key, "must be at least 1".into());
        }
    }
    console(&mut bad, cfg, outline);
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
        "intent.neighbour_weight",
        cfg.intent.neighbour_weight,
    );
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

    // Names of every [[notify]] table, parsed or not, in file order: a duplicate or a
    // reference is judged even when the other table has its own errors.
    let notify_names =
        names_in_file_order(cfg.notify.iter().map(NotifyConfig::name), &outline.notify);
    for (i, n) in cfg.notify.iter().enumerate() {
        let path = format!("notify[{}]", outline.notify.index(i));
        name_check(&mut bad, &format!("{path}.name"), n.name());
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
    duplicates(&mut bad, "notify", &notify_names);
    for (i, n) in cfg.handoff.notify.iter().enumerate() {
        if !notify_names.iter().any(|(_, have)| have == n) {
            bad(
                &format!("handoff.notify[{i}]"),
                format!("no [[notify]] target is named `{n}`"),
            );
        }
    }

    let channel_names = names_in_file_order(
        cfg.channels.iter().map(ChannelConfig::name),
        &outline.channels,
    );
    duplicates(&mut bad, "channels", &channel_names);
    for (i, name) in &channel_names {
        if notify_names.iter().any(|(_, n)| n == name) {
            bad(
                &format!("channels[{i}].name"),
                format!("`{name}` is also a [[notify]] name; names must differ (they share the delivery queue)"),
            );
        }
    }
    for (i, ch) in cfg.channels.iter().enumerate() {
        let path = format!("channels[{}]", outline.channels.index(i));
        name_check(&mut bad, &format!("{path}.name"), ch.name());
        match ch {
            ChannelConfig::Web(c) => {
                for (j, o) in c.allowed_origins.iter().enumerate() {
                    origin_check(&mut bad, &format!("{path}.allowed_origins[{j}]"), o);
                }
                for (j, h) in c.link_hosts.iter().enumerate() {
                    let host = h.strip_prefix("*.").unwrap_or(h);
                    let ok = !host.is_empty()
                        && host.contains('.')
                        && host
                            .chars()
                            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.');
                    if !ok {
                        bad(
                            &format!("{path}.link_hosts[{j}]"),
                            format!(
                                "must be a host name like `help.example.com` or `*.example.com` (no scheme, port or path), got `{h}`"
                            ),
                        );
                    }
                }
            }
            ChannelConfig::WeCom(c) => {
                if c.agent_id <= 0 {
                    bad(
                        &format!("{path}.agent_id"),
                        format!("must be the app's positive AgentId, got {}", c.agent_id),
                    );
                }
                wecom_credentials(
                    &mut bad,
                    &path,
                    &c.corp_id,
                    &c.secret,
                    &c.token,
                    &c.encoding_aes_key,
                    &c.api_base,
                );
                if let Some(kf) = c.kf_settings() {
                    kf_settings(&mut bad, &path, &kf);
                } else {
                    for k in c.kf_keys_set() {
                        bad(
                            &format!("{path}.{k}"),
                            "is a kf setting: only with kf = true (this app manages WeCom kf accounts)".into(),
                        );
                    }
                }
                timestamp_window(&mut bad, &path, c.timestamp_window_ms);
            }
            ChannelConfig::WeComKf(c) => {
                wecom_credentials(
                    &mut bad,
                    &path,
                    &c.corp_id,
                    &c.secret,
                    &c.token,
                    &c.encoding_aes_key,
                    &c.api_base,
                );
                kf_settings(&mut bad, &path, &c.kf_settings());
                timestamp_window(&mut bad, &path, c.timestamp_window_ms);
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
                if let Some(hosts) = &c.allowed_webhook_hosts {
                    host_patterns(&mut bad, &format!("{path}.allowed_webhook_hosts"), hosts);
                }
            }
        }
    }
    errs
}

/// What every WeCom callback channel needs (app or kf): the corp, the secret for gettoken,
/// the callback Token and a 43-character EncodingAESKey, an http(s) `api_base`.
fn wecom_credentials(
    bad: &mut dyn FnMut(&str, String),
    path: &str,
    corp_id: &str,
    secret: &adapters::Secret,
    token: &adapters::Secret,
    encoding_aes_key: &adapters::Secret,
    api_base: &str,
) {
    if corp_id.trim().is_empty() {
        bad(&format!("{path}.corp_id"), "must not be empty".into());
    }
    for (k, s) in [("secret", secret), ("token", token)] {
        if s.is_empty() {
            bad(&format!("{path}.{k}"), "must not be empty".into());
        }
    }
    let key = encoding_aes_key.expose();
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
    url_check(bad, &format!("{path}.api_base"), api_base);
}

/// kf ids are `[A-Za-z0-9_-]` (`wk…` accounts); servicers are WeCom userids (1–64 of
/// letters, digits, `-`, `_`, `.`, `@`).
fn kf_settings(bad: &mut dyn FnMut(&str, String), path: &str, kf: &super::KfSettings) {
    if let Some(ids) = &kf.open_kfids {
        if ids.is_empty() {
            bad(
                &format!("{path}.open_kfids"),
                "must name at least one account; leave it out to answer every account that notifies".into(),
            );
        }
        for (j, id) in ids.iter().enumerate() {
            let ok = !id.is_empty()
                && id.len() <= 64
                && id
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
            if !ok {
                bad(
                    &format!("{path}.open_kfids[{j}]"),
                    format!("must be a kf account id like wkAJ2GCAAA… (letters, digits, - and _), got `{id}`"),
                );
            }
        }
    }
    for (j, u) in kf.human_servicers.iter().enumerate() {
        let ok = !u.is_empty()
            && u.len() <= 64
            && u.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '@'));
        if !ok {
            bad(
                &format!("{path}.human_servicers[{j}]"),
                format!("must be a WeCom userid (1-64 of letters, digits, - _ . @), got `{u}`"),
            );
        }
    }
    if kf.backlog_reply_secs > 3 * 24 * 3600 {
        bad(
            &format!("{path}.backlog_reply_secs"),
            "must be at most 259200 (the API keeps 3 days of messages)".into(),
        );
    }
    if kf.poll_secs != 0 && kf.poll_secs < 10 {
        bad(
            &format!("{path}.poll_secs"),
            format!("must be 0 (off) or at least 10, got {}", kf.poll_secs),
        );
    }
}

/// `timestamp_window_ms` of a WeCom callback channel (app or kf).
fn timestamp_window(bad: &mut dyn FnMut(&str, String), path: &str, w: u64) {
    if w != 0 && !(1_000..=MAX_TIMESTAMP_WINDOW_MS).contains(&w) {
        bad(
            &format!("{path}.timestamp_window_ms"),
            format!("must be 0 (no check) or between 1000 and {MAX_TIMESTAMP_WINDOW_MS} (12 h: replays must be refused before the 24 h dedupe memory forgets them), got {w}"),
        );
    }
}

/// Longest WeCom timestamp window: well inside the 24 h a MsgId is remembered.
const MAX_TIMESTAMP_WINDOW_MS: u64 = 12 * 3_600_000;

/// `[server]` beyond what serde checks.
fn server(bad: &mut dyn FnMut(&str, String), s: &ServerConfig) {
    if let Some(u) = &s.public_url {
        match url::Url::parse(u) {
            Ok(p)
                if matches!(p.scheme(), "http" | "https")
                    && p.host().is_some()
                    && p.query().is_none()
                    && p.fragment().is_none()
                    && p.username().is_empty()
                    && p.password().is_none() => {}
            _ => bad(
                "server.public_url",
                format!("must be an absolute http(s) URL like https://support.example.com (no query, no credentials), got `{u}`"),
            ),
        }
    }
    host_patterns(
        bad,
        "server.allowed_webhook_hosts",
        &s.allowed_webhook_hosts,
    );
    for (key, v) in [
        ("server.header_read_timeout_ms", s.header_read_timeout_ms),
        ("server.idle_timeout_ms", s.idle_timeout_ms),
    ] {
        if v < 100 {
            bad(key, format!("must be at least 100 (ms), got {v}"));
        }
    }
    if s.max_connections == 0 {
        bad("server.max_connections", "must be at least 1".into());
    }
    for (key, r) in [
        ("server.chat_rate_per_ip", s.chat_rate_per_ip),
        ("server.chat_rate_per_session", s.chat_rate_per_session),
    ] {
        if r.per_minute > 0 && r.burst == 0 {
            bad(
                &format!("{key}.burst"),
                "must be at least 1 (per_minute = 0 turns the limit off)".into(),
            );
        }
    }
    if let Some(h) = &s.client_ip_header {
        if http::HeaderName::from_bytes(h.as_bytes()).is_err() {
            bad(
                "server.client_ip_header",
                format!("must be an HTTP header name like X-Real-IP, got `{h}`"),
            );
        }
    }
}

fn host_patterns(bad: &mut dyn FnMut(&str, String), key: &str, patterns: &[String]) {
    for (i, p) in patterns.iter().enumerate() {
        if let Err(e) = adapters::HostAllowlist::new(std::slice::from_ref(p)) {
            bad(&format!("{key}[{i}]"), e);
        }
    }
}

/// `[console]`, `[[agents]]` and `[[canned_replies]]`.
fn console(bad: &mut dyn FnMut(&str, String), cfg: &Config, outline: &Outline) {
    let c = &cfg.console;
    if !(1..=24 * 30).contains(&c.session_hours) {
        bad(
            "console.session_hours",
            format!("must be between 1 and 720, got {}", c.session_hours),
        );
    }
    for (k, v) in [
        ("console.login_failures", c.login_failures),
        ("console.login_failures_per_ip", c.login_failures_per_ip),
        ("console.login_window_minutes", c.login_window_minutes),
    ] {
        if v == 0 {
            bad(k, "must be at least 1".into());
        }
    }
    let mut ids = HashSet::new();
    for (i, a) in cfg.agents.iter().enumerate() {
        let path = format!("agents[{}]", outline.agents.index(i));
        let ok = !a.id.is_empty()
            && a.id.len() <= 64
            && a.id
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '@'));
        if !ok {
            bad(
                &format!("{path}.id"),
                format!("must be 1-64 of a-z, A-Z, 0-9, - _ . @, got `{}`", a.id),
            );
        }
        if !ids.insert(a.id.as_str()) {
            bad(
                &format!("{path}.id"),
                format!("duplicate agent id `{}`", a.id),
            );
        }
        if a.name.trim().is_empty() {
            bad(&format!("{path}.name"), "must not be empty".into());
        }
        if let Err(e) = crate::agents::password::check_phc(a.password_hash.expose()) {
            bad(&format!("{path}.password_hash"), e);
        }
    }
    for (i, r) in cfg.canned_replies.iter().enumerate() {
        let path = format!("canned_replies[{}]", outline.canned_replies.index(i));
        if r.title.trim().is_empty() {
            bad(&format!("{path}.title"), "must not be empty".into());
        }
        if r.text.trim().is_empty() {
            bad(&format!("{path}.text"), "must not be empty".into());
        }
        for name in placeholders(&r.text) {
            if !CANNED_PLACEHOLDERS.contains(&name) {
                bad(
                    &format!("{path}.text"),
                    format!(
                        "unknown placeholder {{{name}}}; known: {}",
                        CANNED_PLACEHOLDERS
                            .iter()
                            .map(|p| format!("{{{p}}}"))
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                );
            }
        }
    }
}

/// `(file index, name)` of every table of a list, parsed or not, in file order.
fn names_in_file_order<'a>(
    parsed: impl Iterator<Item = &'a str>,
    outline: &ListOutline,
) -> Vec<(usize, String)> {
    let mut all: Vec<(usize, String)> = parsed
        .enumerate()
        .map(|(i, n)| (outline.index(i), n.to_string()))
        .chain(outline.unparsed_names.iter().cloned())
        .collect();
    all.sort_by_key(|(i, _)| *i);
    all
}

/// A name seen earlier in the file is a duplicate, reported on the later table.
fn duplicates(bad: &mut dyn FnMut(&str, String), list: &str, names: &[(usize, String)]) {
    let mut seen = HashSet::new();
    for (i, n) in names {
        if !seen.insert(n.as_str()) {
            let what = if list == "notify" {
                "notify"
            } else {
                "channel"
            };
            bad(
                &format!("{list}[{i}].name"),
                format!("duplicate {what} name `{n}`"),
            );
        }
    }
}

/// The `{name}` placeholders in a canned reply (names of letters, digits and `_`).
fn placeholders(text: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(open) = rest.find('{') {
        let after = &rest[open + 1..];
        match after.find('}') {
            Some(close)
                if close > 0
                    && after[..close]
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '_') =>
            {
                out.push(&after[..close]);
                rest = &after[close + 1..];
            }
            _ => rest = after,
        }
    }
    out
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
