use super::*;

fn env(k: &str) -> Option<String> {
    match k {
        "WECOM_SECRET" => Some("s3cr3t-value".into()),
        "WECOM_TOKEN" => Some("QDG6eK".into()),
        "WECOM_AES_KEY" => Some("jWmYm7qr5nMoAUwZRjGtBxmz3KA1tkAj3ykkR6q2B2C".into()),
        "MULTI" => Some("a\nb".into()),
        _ => None,
    }
}

fn errors(text: &str) -> Vec<String> {
    match parse(text, "t.toml", &env) {
        Ok(_) => Vec::new(),
        Err(e) => e.0.iter().map(|e| e.to_string()).collect(),
    }
}

#[test]
fn embedded_default_is_valid() {
    let cfg = parse(DEFAULT_TOML, "default", &|_| None).expect("default config parses");
    assert_eq!(cfg.server.listen, "127.0.0.1:8080");
    assert_eq!(cfg.knowledge.top_k, 5);
    assert_eq!(cfg.channels.len(), 1);
    assert_eq!(cfg.channels[0].name(), "site");
}

#[test]
fn empty_file_means_all_defaults() {
    let cfg = parse("", "t.toml", &env).unwrap();
    assert_eq!(cfg.handoff.max_unresolved_turns, 5);
    assert!(cfg.channels.is_empty());
}

#[test]
fn wecom_channel_with_env_secrets() {
    let cfg = parse(
        r#"
[[channels]]
name = "support"
kind = "wecom"
corp_id = "ww1436e0e65a779aee"
agent_id = 1000002
secret = "${WECOM_SECRET}"
token = "${WECOM_TOKEN}"
encoding_aes_key = "${WECOM_AES_KEY}"
"#,
        "t.toml",
        &env,
    )
    .unwrap();
    let ChannelConfig::WeCom(c) = &cfg.channels[0] else {
        panic!("not wecom")
    };
    assert_eq!(c.token.expose(), "QDG6eK");
    assert_eq!(c.api_base, "https://qyapi.weixin.qq.com");
    let printed = format!("{cfg:?}");
    assert!(
        !printed.contains("s3cr3t-value"),
        "secret leaked: {printed}"
    );
    assert!(!printed.contains("jWmYm7qr5"), "aes key leaked");
}

#[test]
fn every_error_is_reported_at_once_with_its_key() {
    let errs = errors(
        r#"
[server]
listen = "nowhere"
colour = "blue"

[knowledge]
top_k = 0
min_score = 1.5

[handoff]
min_confidence = -1

[[channels]]
name = "support"
kind = "wecom"
corp_id = "ww1"
agent_id = 1000002
secret = "${WECOM_SECRET}"
token = "${MISSING_TOKEN}"
encoding_aes_key = "jWmYm7qr5nMoAUwZRjGtBxmz3KA1tkAj3ykkR6q2B2"

[[channels]]
name = "support"
kind = "web"

[[channels]]
name = "x"
kind = "wechat"

[[channels]]
name = "dd"
kind = "dingtalk"
app_key = "k"
app_secret = "s"
robot_code = "r"
tokn = "typo"
"#,
    );
    let joined = errors_joined(&errs);
    for want in [
        "t.toml: server: unknown field `colour`",
        "t.toml: channels[0].token: MISSING_TOKEN is not set",
        "t.toml: channels[2].kind: unknown kind `wechat`",
        "t.toml: channels[3]: unknown field `tokn`",
    ] {
        assert!(joined.contains(want), "missing {want:?} in:\n{joined}");
    }
    // The first pass stops a section on its first serde error, so the value checks run on
    // what parsed: fix the section, then see the rest.
    let errs = errors(
        r#"
[server]
listen = "nowhere"
[knowledge]
top_k = 0
min_score = 1.5
[handoff]
min_confidence = -1
[[channels]]
name = "support"
kind = "wecom"
corp_id = "ww1"
agent_id = 1000002
secret = "${WECOM_SECRET}"
token = "${WECOM_TOKEN}"
encoding_aes_key = "jWmYm7qr5nMoAUwZRjGtBxmz3KA1tkAj3ykkR6q2B2"
[[channels]]
name = "support"
kind = "web"
allowed_origins = ["https://ok.example.com", "example.com/path"]
"#,
    );
    let joined = errors_joined(&errs);
    for want in [
        "server.listen: must be host:port",
        "knowledge.top_k: must be between 1 and 50, got 0",
        "knowledge.min_score: must be between 0 and 1, got 1.5",
        "handoff.min_confidence: must be between 0 and 1",
        "channels[0].encoding_aes_key: must be 43 characters, got 42",
        "channels[1].name: duplicate channel name `support`",
        "channels[1].allowed_origins[1]: must be `*` or an origin",
    ] {
        assert!(joined.contains(want), "missing {want:?} in:\n{joined}");
    }
    assert_eq!(errs.len(), 7, "{joined}");
}

fn errors_joined(errs: &[String]) -> String {
    errs.join("\n")
}

#[test]
fn missing_required_channel_keys_are_named() {
    let errs = errors("[[channels]]\nname = \"d\"\nkind = \"dingtalk\"\napp_key = \"k\"\n");
    assert!(
        errs.iter()
            .any(|e| e.contains("channels[0]") && e.contains("app_secret")),
        "{errs:?}"
    );
    let errs = errors("[[channels]]\nname = \"d\"\n");
    assert!(
        errs.iter().any(|e| e.contains("channels[0].kind: missing")),
        "{errs:?}"
    );
}

#[test]
fn typo_in_each_channel_kind_is_refused() {
    for (kind, extra) in [
        ("web", ""),
        ("wecom", "corp_id=\"c\"\nagent_id=1\nsecret=\"s\"\ntoken=\"t\"\nencoding_aes_key=\"jWmYm7qr5nMoAUwZRjGtBxmz3KA1tkAj3ykkR6q2B2C\"\n"),
        ("dingtalk", "app_key=\"k\"\napp_secret=\"s\"\nrobot_code=\"r\"\n"),
    ] {
        let errs = errors(&format!(
            "[[channels]]\nname = \"n\"\nkind = \"{kind}\"\n{extra}allowed_origin = [\"x\"]\n"
        ));
        assert!(
            errs.iter().any(|e| e.contains("unknown field `allowed_origin`")),
            "{kind}: {errs:?}"
        );
    }
}

#[test]
fn unknown_sections_and_providers_are_refused() {
    let errs = errors("[serverr]\n[providers.chatt]\nkind = \"openai\"\n");
    assert!(
        errs.iter().any(|e| e.contains("serverr: unknown section")),
        "{errs:?}"
    );
    assert!(errs
        .iter()
        .any(|e| e.contains("providers.chatt: unknown provider")));
}

#[test]
fn openai_provider_needs_url_and_model() {
    let errs = errors("[providers.chat]\nkind = \"openai\"\n");
    assert!(errs
        .iter()
        .any(|e| e.contains("providers.chat.base_url: required")));
    assert!(errs
        .iter()
        .any(|e| e.contains("providers.chat.model: required")));
}

#[test]
fn local_embeddings_need_a_model_dir_and_a_sane_blend() {
    let errs = errors("[providers.embedding]\nkind = \"local\"\nbuiltin_weight = 1.5\n");
    let all = errors_joined(&errs);
    assert!(
        all.contains("providers.embedding.model_dir: required for kind = \"local\""),
        "{all}"
    );
    assert!(
        all.contains("providers.embedding.builtin_weight: must be at least 0 and below 1"),
        "{all}"
    );
    let errs = errors("[providers.embedding]\nbuiltin_weight = 0.3\n");
    assert!(
        errors_joined(&errs).contains("providers.embedding.builtin_weight: only for kind"),
        "{errs:?}"
    );
    let cfg = parse(
        "[providers.embedding]\nkind = \"local\"\nmodel_dir = \"/m\"\n",
        "t.toml",
        &env,
    )
    .unwrap();
    let e = cfg.providers.embedding.unwrap();
    assert_eq!(e.builtin_weight, None);
    assert_eq!((e.query_prefix, e.passage_prefix), (None, None));

    // Prefixes: read for local (an empty one is a choice: no prefix), refused elsewhere.
    let cfg = parse(
        "[providers.embedding]\nkind = \"local\"\nmodel_dir = \"/m\"\nquery_prefix = \"query: \"\npassage_prefix = \"\"\n",
        "t.toml",
        &env,
    )
    .unwrap();
    let e = cfg.providers.embedding.unwrap();
    assert_eq!(e.query_prefix.as_deref(), Some("query: "));
    assert_eq!(e.passage_prefix.as_deref(), Some(""));
    let errs = errors("[providers.embedding]\nquery_prefix = \"query: \"\n");
    assert!(
        errors_joined(&errs)
            .contains("providers.embedding.query_prefix: only for kind = \"local\""),
        "{errs:?}"
    );
}

#[test]
fn multi_line_env_values_are_refused() {
    let errs = errors("[handoff]\nmessage = \"${MULTI}\"\n");
    assert!(errs
        .iter()
        .any(|e| e.contains("handoff.message: MULTI holds a line break")));
}

#[test]
fn bad_toml_is_one_clear_error() {
    let errs = errors("[server\nlisten=");
    assert_eq!(errs.len(), 1);
    assert!(errs[0].starts_with("t.toml: not valid TOML"), "{errs:?}");
}

#[test]
fn bad_regex_and_notify_reference() {
    let errs = errors("[intent]\norder_pattern = \"(\"\n[handoff]\nnotify = [\"nobody\"]\n");
    assert!(errs
        .iter()
        .any(|e| e.contains("intent.order_pattern: not a valid regex")));
    assert!(errs
        .iter()
        .any(|e| e.contains("handoff.notify[0]: no [[notify]] target")));
}

#[test]
fn literal_dollar_brace_escape() {
    assert_eq!(expand::expand_str("a$${B}c", &|_| None).unwrap(), "a${B}c");
}
