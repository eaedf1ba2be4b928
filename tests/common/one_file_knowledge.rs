//! A throwaway knowledge base of one FAQ file and a config pointing at it, for tests that run
//! the `kefu` binary itself.

/// One well-formed FAQ entry.
pub const ONE_ENTRY: &str =
    "{\"id\":\"x\",\"question\":\"How do I reset my password?\",\"answer\":\"Open Settings.\"}\n";

/// A temporary directory with `kb/faq/a.jsonl` holding `faq`, and `k.toml`: its own data
/// directory plus `server_extra` in `[server]`, that knowledge, and `extra` after them.
pub fn one_file_knowledge(
    faq: &str,
    server_extra: &str,
    extra: &str,
) -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let kb = dir.path().join("kb/faq");
    std::fs::create_dir_all(&kb).unwrap();
    std::fs::write(kb.join("a.jsonl"), faq).unwrap();
    let cfg = dir.path().join("k.toml");
    std::fs::write(
        &cfg,
        format!(
            "[server]\ndata_dir = {:?}\n{server_extra}\n[knowledge]\npaths = [{:?}]\n{extra}",
            dir.path().join("data"),
            dir.path().join("kb")
        ),
    )
    .unwrap();
    (dir, cfg)
}
