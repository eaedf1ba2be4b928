//! The data directory as an operator meets it with the real binary: a database that lost
//! its files is refused at start with a message that says so, not opened as a new one.

use std::path::Path;
use std::process::Command;

fn kefu(config: &Path, args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_kefu"))
        .args(args)
        .arg("--config")
        .arg(config)
        .env_remove("KEFU_CONFIG")
        .env("KEFU_LOG", "warn")
        .output()
        .expect("run kefu")
}

#[test]
fn a_database_whose_files_are_gone_is_refused_not_started_empty() {
    let dir = tempfile::tempdir().unwrap();
    let kb = dir.path().join("kb/faq");
    std::fs::create_dir_all(&kb).unwrap();
    std::fs::write(
        kb.join("demo.jsonl"),
        r#"{"id":"reset","question":"How do I reset my password?","answer":"Open Settings, choose Security and click Reset password."}"#,
    )
    .unwrap();
    let data = dir.path().join("data");
    let config = dir.path().join("kefu.toml");
    std::fs::write(
        &config,
        format!(
            "[server]\ndata_dir = {:?}\n\n[knowledge]\npaths = [{:?}]\n",
            data.display().to_string(),
            dir.path().join("kb").display().to_string()
        ),
    )
    .unwrap();
    let out = kefu(&config, &["ingest"]);
    assert!(out.status.success(), "{out:?}");
    assert!(
        data.join("kefu-marker.json").exists(),
        "ingest records a checkpoint"
    );

    // The database's files vanish (a bad restore, a wiped volume); the marker stays.
    for entry in std::fs::read_dir(&data).unwrap() {
        let path = entry.unwrap().path();
        if path.file_name().unwrap() != "kefu-marker.json" {
            if path.is_dir() {
                std::fs::remove_dir_all(&path).unwrap();
            } else {
                std::fs::remove_file(&path).unwrap();
            }
        }
    }
    let out = kefu(&config, &["ingest"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    for want in [
        "has lost data",
        "it is empty now",
        "kefu-marker.json",
        "backup",
    ] {
        assert!(err.contains(want), "{want:?} missing in:\n{err}");
    }

    // Deleting the marker is the way to start over on purpose.
    std::fs::remove_file(data.join("kefu-marker.json")).unwrap();
    let out = kefu(&config, &["ingest"]);
    assert!(out.status.success(), "{out:?}");
}
