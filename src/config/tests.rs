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
    // The widget is served without a word of config, as with the embedded default.
    assert_eq!(cfg.channels.len(), 1);
    assert_eq!(cfg.channels[0].name(), "site");
    assert!(matches!(cfg.channels[0], ChannelConfig::Web(_)));
}

#[test]
fn channels_given_replace_the_default_web_channel_and_an_empty_list_means_none() {
    let cfg = parse(
        "[[channels]]\nname = \"helpdesk\"\nkind = \"dingtalk\"\napp_key = \"k\"\napp_secret = \"s\"\nrobot_code = \"r\"\n",
        "t.toml",
        &env,
    )
    .unwrap();
    assert_eq!(cfg.channels.len(), 1);
    assert_eq!(cfg.channels[0].name(), "helpdesk");
    let cfg = parse("channels = []", "t.toml", &env).unwrap();
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
        "t.toml: server.colour: unknown field `colour`",
        "t.toml: channels[0].token: MISSING_TOKEN is not set",
        "t.toml: channels[2].kind: unknown kind `wechat`",
        "t.toml: channels[3]: unknown field `tokn`",
    ] {
        assert!(joined.contains(want), "missing {want:?} in:\n{joined}");
    }
    // Value checks on a file without serde errors.
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
link_hosts = ["help.example.com", "*.example.org", "https://bad.example.com/x"]
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
        "channels[1].link_hosts[2]: must be a host name",
    ] {
        assert!(joined.contains(want), "missing {want:?} in:\n{joined}");
    }
    assert_eq!(errs.len(), 8, "{joined}");
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
        ("wecom_kf", "corp_id=\"c\"\nsecret=\"s\"\ntoken=\"t\"\nencoding_aes_key=\"jWmYm7qr5nMoAUwZRjGtBxmz3KA1tkAj3ykkR6q2B2C\"\n"),
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

const KF_KEY: &str = "6qkdMrq68nTKduznJYO1A37W2oEgpkMUvkttRToqhUt";

#[test]
fn wecom_kf_channel_and_its_defaults() {
    let cfg = parse(
        &format!(
            "[[channels]]\nname = \"wxkf\"\nkind = \"wecom_kf\"\ncorp_id = \"ww1\"\nsecret = \"kf-s3cr3t\"\ntoken = \"tok\"\nencoding_aes_key = \"{KF_KEY}\"\n"
        ),
        "t.toml",
        &env,
    )
    .unwrap();
    let ChannelConfig::WeComKf(c) = &cfg.channels[0] else {
        panic!("not wecom_kf")
    };
    assert_eq!(cfg.channels[0].kind(), adapters::ChannelKind::WeComKf);
    assert_eq!(c.api_base, "https://qyapi.weixin.qq.com");
    assert_eq!(c.kf_settings(), KfSettings::default());
    assert!(!format!("{cfg:?}").contains("kf-s3cr3t"));
    assert!(!cfg.handoff.non_text);

    let cfg = parse(
        &format!(
            "[[channels]]\nname = \"wxkf\"\nkind = \"wecom_kf\"\ncorp_id = \"ww1\"\nsecret = \"s\"\ntoken = \"t\"\nencoding_aes_key = \"{KF_KEY}\"\nopen_kfids = [\"wkAJ2GCAAASSm4_FhToWMFea0xAFfd3Q\"]\nhuman_servicers = [\"zhangsan\", \"li.si@corp\"]\nwelcome = false\nplatform_handoff = false\nbacklog_reply_secs = 60\npoll_secs = 30\n"
        ),
        "t.toml",
        &env,
    )
    .unwrap();
    let ChannelConfig::WeComKf(c) = &cfg.channels[0] else {
        panic!("not wecom_kf")
    };
    let k = c.kf_settings();
    assert_eq!(
        k.open_kfids.as_deref(),
        Some(&["wkAJ2GCAAASSm4_FhToWMFea0xAFfd3Q".to_string()][..])
    );
    assert_eq!(k.human_servicers, ["zhangsan", "li.si@corp"]);
    assert!(!k.welcome && !k.platform_handoff);
    assert_eq!((k.backlog_reply_secs, k.poll_secs), (60, 30));
}

#[test]
fn wecom_kf_errors_name_their_keys() {
    let errs = errors(
        "[[channels]]\nname = \"wxkf\"\nkind = \"wecom_kf\"\ncorp_id = \"\"\nsecret = \"\"\ntoken = \"t\"\nencoding_aes_key = \"short\"\nopen_kfids = [\"wk 1\"]\nhuman_servicers = [\"\"]\nbacklog_reply_secs = 999999\npoll_secs = 3\napi_base = \"ftp://x\"\n",
    );
    let all = errors_joined(&errs);
    for want in [
        "channels[0].corp_id: must not be empty",
        "channels[0].secret: must not be empty",
        "channels[0].encoding_aes_key: must be 43 characters, got 5",
        "channels[0].open_kfids[0]: must be a kf account id",
        "channels[0].human_servicers[0]: must be a WeCom userid",
        "channels[0].backlog_reply_secs: must be at most 259200",
        "channels[0].poll_secs: must be 0 (off) or at least 10, got 3",
        "channels[0].api_base: must be an http(s) URL",
    ] {
        assert!(all.contains(want), "missing {want:?} in:\n{all}");
    }
    let errs = errors(&format!(
        "[[channels]]\nname = \"wxkf\"\nkind = \"wecom_kf\"\ncorp_id = \"c\"\nsecret = \"s\"\ntoken = \"t\"\nencoding_aes_key = \"{KF_KEY}\"\nopen_kfids = []\n"
    ));
    assert!(
        errors_joined(&errs).contains("channels[0].open_kfids: must name at least one account"),
        "{errs:?}"
    );
}

#[test]
fn kf_keys_on_an_app_need_kf_true() {
    let app = |extra: &str| {
        format!(
            "[[channels]]\nname = \"support\"\nkind = \"wecom\"\ncorp_id = \"c\"\nagent_id = 1000002\nsecret = \"s\"\ntoken = \"t\"\nencoding_aes_key = \"{KF_KEY}\"\n{extra}"
        )
    };
    let errs = errors(&app("human_servicers = [\"zhangsan\"]\nwelcome = false\n"));
    let all = errors_joined(&errs);
    assert!(
        all.contains("channels[0].human_servicers: is a kf setting: only with kf = true"),
        "{all}"
    );
    assert!(
        all.contains("channels[0].welcome: is a kf setting"),
        "{all}"
    );
    let cfg = parse(
        &app("kf = true\nhuman_servicers = [\"zhangsan\"]\n"),
        "t.toml",
        &env,
    )
    .unwrap();
    let ChannelConfig::WeCom(c) = &cfg.channels[0] else {
        panic!("not wecom")
    };
    let k = c.kf_settings().expect("kf on");
    assert_eq!(k.human_servicers, ["zhangsan"]);
    assert!(k.welcome && k.platform_handoff, "defaults as for wecom_kf");
    let cfg = parse(&app(""), "t.toml", &env).unwrap();
    let ChannelConfig::WeCom(c) = &cfg.channels[0] else {
        panic!("not wecom")
    };
    assert_eq!(c.kf_settings(), None, "off by default");
}

#[test]
fn checks_between_tables_see_the_tables_that_did_not_parse() {
    // The audit's case: an unknown key in one [[channels]] table, a duplicate of its name in
    // another. Both are reported, each on its own table's index.
    let errs = errors(
        r#"
[[channels]]
name = "support"
kind = "web"
allowed_origin = ["x"]

[[channels]]
name = "support"
kind = "web"

[[channels]]
name = "helpdesk"
kind = "web"

[[channels]]
name = "helpdesk"
kind = "web"

[[notify]]
name = "agents"
kind = "wecom_robot"
kye = "typo"

[handoff]
notify = ["agents", "nobody"]
"#,
    );
    let joined = errors_joined(&errs);
    for want in [
        "channels[0]: unknown field `allowed_origin`",
        "channels[1].name: duplicate channel name `support`",
        "channels[3].name: duplicate channel name `helpdesk`",
        "notify[0]: unknown field `kye`",
        "handoff.notify[1]: no [[notify]] target is named `nobody`",
    ] {
        assert!(joined.contains(want), "missing {want:?} in:\n{joined}");
    }
    // `agents` exists (its table has its own error): no false "no target" on top.
    assert!(!joined.contains("named `agents`"), "{joined}");
    assert!(!joined.contains("channels[2].name"), "{joined}");
}

#[test]
fn every_bad_key_of_a_section_is_named_and_the_rest_still_checked() {
    let errs = errors(
        r#"
[server]
listen = "nowhere"
colour = "blue"
max_body_bytes = "big"

[knowledge]
top_k = "x"
min_score = 1.5

[[channels]]
name = "site"
kind = "web"
allowed_origin = ["https://a.example.com"]
allowed_origins = ["example.com/path"]
"#,
    );
    let joined = errors_joined(&errs);
    for want in [
        "server.colour: unknown field `colour`",
        "server.max_body_bytes: invalid type: string \"big\"",
        "server.listen: must be host:port",
        "knowledge.top_k: invalid type: string \"x\"",
        "knowledge.min_score: must be between 0 and 1, got 1.5",
        "channels[0]: unknown field `allowed_origin`",
        // The channel parsed once the unknown key was set aside: its values are checked too.
        "channels[0].allowed_origins[0]: must be `*` or an origin",
    ] {
        assert!(joined.contains(want), "missing {want:?} in:\n{joined}");
    }
    assert_eq!(errs.len(), 7, "{joined}");
}

#[test]
fn server_security_keys_are_checked() {
    let cfg = parse("", "t.toml", &env).unwrap();
    assert_eq!(cfg.server.allowed_webhook_hosts, vec!["*.dingtalk.com"]);
    assert_eq!(cfg.server.public_url, None);
    assert!(!cfg.server.metrics_public);
    let errs = errors(
        r#"
[server]
public_url = "support.example.com"
allowed_webhook_hosts = ["*", "127.0.0.1", "x.com:80"]
header_read_timeout_ms = 5
idle_timeout_ms = 0
max_connections = 0
chat_rate_per_ip = { per_minute = 10, burst = 0 }
chat_rate_per_session = { per_minute = 10 }
client_ip_header = "X Real IP"

[[channels]]
name = "support"
kind = "wecom"
corp_id = "ww1"
agent_id = 1000002
secret = "s"
token = "t"
encoding_aes_key = "jWmYm7qr5nMoAUwZRjGtBxmz3KA1tkAj3ykkR6q2B2C"
timestamp_window_ms = 90000000

[[channels]]
name = "helpdesk"
kind = "dingtalk"
app_key = "k"
app_secret = "s"
robot_code = "r"
allowed_webhook_hosts = ["a.*.com"]
"#,
    );
    let joined = errors_joined(&errs);
    for want in [
        "server.public_url: must be an absolute http(s) URL",
        "server.allowed_webhook_hosts[0]: `*`: a bare `*` would allow every host",
        "server.allowed_webhook_hosts[2]: `x.com:80`: no scheme, port or path",
        "server.header_read_timeout_ms: must be at least 100",
        "server.idle_timeout_ms: must be at least 100",
        "server.max_connections: must be at least 1",
        "server.chat_rate_per_ip.burst: must be at least 1",
        "server.chat_rate_per_session: missing field `burst`",
        "server.client_ip_header: must be an HTTP header name",
        "channels[0].timestamp_window_ms: must be 0 (no check) or between 1000 and 43200000",
        "channels[1].allowed_webhook_hosts[0]: `a.*.com`",
    ] {
        assert!(joined.contains(want), "missing {want:?} in:\n{joined}");
    }
    assert_eq!(errs.len(), 11, "{joined}");

    let cfg = parse(
        r#"
[server]
public_url = "https://support.example.com/kefu"
allowed_webhook_hosts = ["*.dingtalk.com", "127.0.0.1"]
metrics_public = true
client_ip_header = "X-Real-IP"
[[channels]]
name = "helpdesk"
kind = "dingtalk"
app_key = "k"
app_secret = "s"
robot_code = "r"
"#,
        "t.toml",
        &env,
    )
    .unwrap();
    let ChannelConfig::DingTalk(d) = &cfg.channels[0] else {
        panic!("dingtalk")
    };
    assert_eq!(
        d.webhook_hosts(&cfg.server),
        ["*.dingtalk.com", "127.0.0.1"]
    );
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(256))]

    /// Any text: a config or a list of errors, never a panic.
    #[test]
    fn parse_never_panics_on_any_text(text in "\\PC{0,300}") {
        let _ = parse(&text, "t.toml", &env);
    }

    /// TOML-shaped noise over the real section and key names reaches the deserializers and
    /// the value checks: still Ok or Err.
    #[test]
    fn parse_never_panics_on_config_shaped_noise(
        lines in proptest::collection::vec(
            (
                proptest::sample::select(vec!["[server]", "[knowledge]", "[handoff]", "[quality]", "[[channels]]", "[[notify]]", "[providers.chat]", "[providers.embedding]", "[intent]", "[flows]", "[console]", "[[agents]]", "[[canned_replies]]", ""]),
                proptest::sample::select(vec!["name", "kind", "listen", "top_k", "min_score", "public_url", "allowed_webhook_hosts", "timestamp_window_ms", "agent_id", "encoding_aes_key", "corp_id", "app_key", "app_secret", "robot_code", "secret", "token", "key", "access_token", "base_url", "model", "dim", "notify", "chat_rate_per_ip", "max_connections", "order_pattern", "id", "password_hash", "title", "text", "session_hours"]),
                proptest::sample::select(vec!["\"web\"", "\"wecom\"", "\"dingtalk\"", "\"wecom_robot\"", "\"x\"", "1", "-1", "0", "1.5", "true", "[]", "[\"a\", 1]", "{ per_minute = 1, burst = 0 }", "\"${UNSET}\"", "\"${WECOM_AES_KEY}\"", "\"http://127.0.0.1:1\"", "\"*\"", "\"(\""]),
            ),
            0..24,
        )
    ) {
        let text: String = lines
            .iter()
            .map(|(section, key, value)| {
                if section.is_empty() { format!("{key} = {value}\n") } else { format!("{section}\n{key} = {value}\n") }
            })
            .collect();
        if let Err(errs) = parse(&text, "t.toml", &env) {
            proptest::prop_assert!(!errs.0.is_empty());
            for e in &errs.0 {
                proptest::prop_assert!(!e.message.is_empty(), "{}", e);
            }
        }
    }
}

const DANA_HASH: &str =
    "$argon2id$v=19$m=19456,t=2,p=1$c29tZXNhbHRzb21lc2FsdA$0nVuBc6gAMHYObs9MZMdg6Dhv1/GqKzHXvGXh8yWW7I";

#[test]
fn agents_canned_replies_console_and_public_url() {
    let cfg = parse(
        &format!(
            r#"
[server]
public_url = "https://kefu.example.com"

[console]
session_hours = 8

[[agents]]
id = "dana"
name = "Dana"
password_hash = "{DANA_HASH}"

[[canned_replies]]
title = "Refund received"
text = "Hi {{customer}}, your refund for order {{order}} is on its way. — {{agent}}"
"#
        ),
        "t.toml",
        &env,
    )
    .unwrap();
    assert_eq!(
        cfg.server.public_url.as_deref(),
        Some("https://kefu.example.com")
    );
    assert_eq!(cfg.console.session_hours, 8);
    assert_eq!(cfg.console.login_failures, 5, "defaults for the rest");
    assert_eq!(cfg.agents[0].id, "dana");
    assert_eq!(cfg.canned_replies[0].title, "Refund received");
    assert!(
        !format!("{cfg:?}").contains("0nVuBc6gAMHY"),
        "password hashes stay out of logs"
    );
}

#[test]
fn agent_and_canned_reply_mistakes_are_all_reported() {
    let errs = errors(&format!(
        r#"
[server]
public_url = "kefu.example.com"

[console]
session_hours = 0

[[agents]]
id = "dana"
name = "Dana"
password_hash = "hunter2"

[[agents]]
id = "dana"
name = ""
password_hash = "{DANA_HASH}"

[[agents]]
id = "lei"
name = "Lei"
password = "oops"

[[canned_replies]]
title = "Hi"
text = "Your order {{order_no}}"

[[canned_replies]]
title = ""
text = "x"
"#
    ));
    let want = [
        "server.public_url: must be an absolute http(s) URL",
        "console.session_hours: must be between 1 and 720",
        "agents[0].password_hash: must be an argon2id PHC string",
        "agents[1].id: duplicate agent id `dana`",
        "agents[1].name: must not be empty",
        "agents[2]: unknown field `password`",
        "canned_replies[0].text: unknown placeholder {order_no}",
        "canned_replies[1].title: must not be empty",
    ];
    for w in want {
        assert!(
            errs.iter().any(|e| e.contains(w)),
            "missing `{w}` in {errs:#?}"
        );
    }
}

#[test]
fn agent_mistakes_name_the_table_in_the_file_after_one_that_did_not_parse() {
    let errs = errors(&format!(
        r#"
[[agents]]
id = "lei"
password_hash = "{DANA_HASH}"

[[agents]]
id = "dana li"
name = "Dana"
password_hash = "{DANA_HASH}"

[[canned_replies]]
text = "no title"

[[canned_replies]]
title = "Hi"
text = "{{nope}}"
"#
    ));
    for w in [
        "agents[0]: missing field `name`",
        "agents[1].id: must be 1-64",
        "canned_replies[0]: missing field `title`",
        "canned_replies[1].text: unknown placeholder {nope}",
    ] {
        assert!(
            errs.iter().any(|e| e.contains(w)),
            "missing `{w}` in {errs:#?}"
        );
    }
}

#[test]
fn delivery_and_durability_keys_are_checked() {
    let cfg = parse(
        "[server]\nqueue_per_conversation = 8\n[delivery]\nmax_attempts = 3\nmax_retry_after_secs = 60\n",
        "t.toml",
        &env,
    )
    .unwrap();
    assert_eq!(cfg.server.queue_per_conversation, 8);
    assert_eq!(cfg.delivery.max_attempts, 3);
    assert_eq!(cfg.delivery.max_age_secs, 3600, "default kept");
    let errs =
        errors("[server]\nshutdown_timeout_secs = 0\n[delivery]\nmax_attempts = 0\nmax_age = 5\n");
    let all = errors_joined(&errs);
    assert!(
        all.contains("t.toml: delivery.max_age: unknown field `max_age`"),
        "{all}"
    );
    let errs = errors("[server]\nshutdown_timeout_secs = 0\n[delivery]\nmax_attempts = 0\n");
    let all = errors_joined(&errs);
    for want in [
        "server.shutdown_timeout_secs: must be at least 1",
        "delivery.max_attempts: must be at least 1",
    ] {
        assert!(all.contains(want), "{want:?} missing in {all}");
    }
}
