//! The `kefu` command as an operator meets it: `check` on a broken config, `serve` refusing
//! to start on one, `ingest` reporting bad files, and `eval` printing its closing line.

use std::process::Command;

#[path = "common/one_file_knowledge.rs"]
mod one_file_knowledge;
use one_file_knowledge::{one_file_knowledge, ONE_ENTRY};

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
    let (_dir, cfg) = one_file_knowledge(&format!("{ONE_ENTRY}{{broken\n"), "", "");
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

#[test]
fn check_reports_config_and_knowledge_errors_in_one_run() {
    // The audit's file: an unknown key in one [[channels]] table, a duplicate of its name in
    // another; plus a broken knowledge line. All three in one run.
    let dir = tempfile::tempdir().unwrap();
    let kb = dir.path().join("kb/faq");
    std::fs::create_dir_all(&kb).unwrap();
    std::fs::write(kb.join("a.jsonl"), "{broken\n").unwrap();
    let cfg = dir.path().join("k.toml");
    std::fs::write(
        &cfg,
        format!(
            r#"
[knowledge]
paths = [{:?}]

[[channels]]
name = "site"
kind = "web"
allowed_origin = ["https://www.example.com"]

[[channels]]
name = "site"
kind = "web"
"#,
            dir.path().join("kb")
        ),
    )
    .unwrap();
    let out = kefu()
        .args(["check", "--config"])
        .arg(&cfg)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
    for want in [
        "channels[0]: unknown field `allowed_origin`",
        "channels[1].name: duplicate channel name `site`",
        "faq/a.jsonl:1:",
        "2 config error(s); knowledge: 1 problem(s)",
    ] {
        assert!(all.contains(want), "missing {want:?} in:\n{all}");
    }
    // Unreadable knowledge.paths: the default directory is not checked in their place.
    std::fs::write(&cfg, "[knowledge]\npaths = 5\n").unwrap();
    let out = kefu()
        .args(["check", "--config"])
        .arg(&cfg)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("knowledge.paths: invalid type"), "{err}");
    assert!(err.contains("knowledge files not checked"), "{err}");
    assert!(!String::from_utf8_lossy(&out.stdout).contains("no knowledge files"));
}

#[test]
fn ingest_warns_about_an_empty_knowledge_base_only_when_it_is() {
    let (dir, _) = one_file_knowledge(ONE_ENTRY, "", "");
    let config = |data: &str, kb: &std::path::Path| {
        let path = dir.path().join(format!("{data}.toml"));
        std::fs::write(
            &path,
            format!(
                "[server]\ndata_dir = {:?}\n[knowledge]\npaths = [{:?}]\n",
                dir.path().join(data),
                kb
            ),
        )
        .unwrap();
        path
    };
    // A new data dir and real knowledge: nothing to warn about (the index was empty only
    // before the ingest).
    let out = kefu()
        .args(["ingest", "--config"])
        .arg(config("fresh", &dir.path().join("kb")))
        .output()
        .unwrap();
    assert!(out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!err.contains("knowledge base is empty"), "{err}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("1 chunks"));
    // Knowledge that yields nothing: the warning, after the ingest.
    let empty = dir.path().join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    let out = kefu()
        .args(["ingest", "--config"])
        .arg(config("other", &empty))
        .output()
        .unwrap();
    assert!(out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("knowledge base is empty"), "{err}");
}

/// `kefu hash-password` with `input` on stdin: (exit code, stdout, stderr).
fn hash_password(input: &str) -> (Option<i32>, String, String) {
    use std::io::Write;
    let mut child = kefu()
        .arg("hash-password")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn hash_password_prints_an_argon2id_hash_the_config_accepts() {
    let (code, out, _) = hash_password("correct horse battery\r\n");
    assert_eq!(code, Some(0));
    let phc = out.trim();
    assert!(phc.starts_with("$argon2id$v=19$"), "{phc}");
    assert!(kefu::agents::password::verify(phc, "correct horse battery"));
    assert!(
        !kefu::agents::password::verify(phc, "correct horse battery\r"),
        "the line ending is not part of it"
    );
    let cfg = format!("[[agents]]\nid = \"dana\"\nname = \"Dana\"\npassword_hash = \"{phc}\"\n");
    assert!(kefu::config::parse(&cfg, "t.toml", &|_| None).is_ok());

    let (code, out, err) = hash_password("short\n");
    assert_eq!(code, Some(1));
    assert!(out.is_empty());
    assert!(err.contains("at least 8 characters"), "{err}");
}

#[test]
fn serve_stops_with_the_reason_when_its_ingest_before_start_fails() {
    // `serve` ingests in a child process (`kefu ingest --at-start`) so that the ingest's
    // memory goes back to the system; a failure there must still stop `serve` with the
    // reason, as an in-process ingest did. Here the embedding server is not there.
    let (_dir, cfg) = one_file_knowledge(
        ONE_ENTRY,
        "",
        "[providers.embedding]\nkind = \"openai\"\nbase_url = \"http://127.0.0.1:1\"\n\
         model = \"m\"\ndim = 8\ntimeout_ms = 500\nmax_retries = 0\n",
    );
    let out = kefu()
        .args(["serve", "--config"])
        .arg(&cfg)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "serve started:\n{err}");
    assert!(
        err.contains("the knowledge ingest before start failed"),
        "{err}"
    );
    assert!(
        err.contains("embedding faq/a.jsonl") && err.contains("cannot connect"),
        "the child's reason is shown:\n{err}"
    );
    assert!(String::from_utf8_lossy(&out.stdout).is_empty());
}
