//! The `kefu` command as an operator meets it: `check` on a broken config, `serve` refusing
//! to start on one, `ingest` reporting bad files, and `eval` printing its closing line.

use std::process::Command;

fn kefu() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_kefu"));
    c.env_remove("KEFU_CONFIG").env("KEFU_LOG", "warn");
    c
}

const BROKEN: &str = r#"
[server]
listen = "nowhere"

[knowledge]
top_k = 0

[[channels]]
name = "support"
kind = "wecom"
corp_id = "ww1"
agent_id = 1000002
secret = "${KEFU_TEST_UNSET_SECRET}"
token = "t"
encoding_aes_key = "jWmYm7qr5nMoAUwZRjGtBxmz3KA1tkAj3ykkR6q2B2"
"#;

#[test]
fn check_lists_every_config_error_and_exits_1() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("broken.toml");
    std::fs::write(&path, BROKEN).unwrap();
    let out = kefu()
        .args(["check", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    for want in [
        "channels[0].secret: KEFU_TEST_UNSET_SECRET is not set",
        "server.listen: must be host:port",
        "knowledge.top_k: must be between 1 and 50, got 0",
        "channels[0].encoding_aes_key: must be 43 characters, got 42",
        "4 config error(s)",
    ] {
        assert!(err.contains(want), "missing {want:?} in:\n{err}");
    }
}

#[test]
fn serve_refuses_a_broken_config_and_leaves_no_data() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("broken.toml");
    std::fs::write(
        &path,
        BROKEN.replace(
            "[server]",
            &format!("[server]\ndata_dir = {:?}", dir.path().join("data")),
        ),
    )
    .unwrap();
    let out = kefu()
        .args(["serve", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("nothing started"));
    assert!(!dir.path().join("data").exists());
}

#[test]
fn check_and_ingest_report_bad_knowledge_lines_and_keep_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    let kb = dir.path().join("kb/faq");
    std::fs::create_dir_all(&kb).unwrap();
    std::fs::write(
        kb.join("a.jsonl"),
        "{\"id\":\"x\",\"question\":\"How do I reset my password?\",\"answer\":\"Open Settings.\"}\n{broken\n",
    )
    .unwrap();
    let cfg = dir.path().join("k.toml");
    std::fs::write(
        &cfg,
        format!(
            "[server]\ndata_dir = {:?}\n[knowledge]\npaths = [{:?}]\n",
            dir.path().join("data"),
            dir.path().join("kb")
        ),
    )
    .unwrap();
    let out = kefu()
        .args(["check", "--config"])
        .arg(&cfg)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(stdout.contains("faq/a.jsonl:2:"), "{stdout}");
    let out = kefu()
        .args(["ingest", "--config"])
        .arg(&cfg)
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("faq/a.jsonl:2:"));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("1 chunks"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}

#[test]
fn eval_prints_accuracy_and_the_closing_line() {
    let dir = tempfile::tempdir().unwrap();
    let kb = dir.path().join("kb/faq");
    std::fs::create_dir_all(&kb).unwrap();
    std::fs::write(
        kb.join("a.jsonl"),
        "{\"id\":\"reset\",\"question\":\"How do I reset my password?\",\"answer\":\"Open Settings and click Reset password.\",\"alternates\":[\"forgot password\"]}\n",
    )
    .unwrap();
    let cases = dir.path().join("cases.jsonl");
    std::fs::write(
        &cases,
        concat!(
            "{\"message\":\"I forgot my password\",\"expect_source\":\"faq/a.jsonl#reset\",\"expect_contains\":[\"Reset password\"],\"expect_intent\":\"query\",\"expect_handoff\":false}\n",
            "{\"message\":\"转人工\",\"expect_handoff\":true}\n",
            "{\"message\":\"how do I reset my password\",\"expect_handoff\":true}\n",
        ),
    )
    .unwrap();
    let out = kefu()
        .arg("eval")
        .arg("--knowledge")
        .arg(dir.path().join("kb"))
        .arg(&cases)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(
        stdout.contains("source     in sources 1.000  hit@1 1.000"),
        "{stdout}"
    );
    assert!(stdout.contains("handoff    0.667  (2/3)"), "{stdout}");
    assert!(
        stdout.trim_end().ends_with("2 passed, 1 failed"),
        "{stdout}"
    );
}
