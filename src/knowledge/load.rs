//! Knowledge files → chunks: walking the roots, dispatching on the extension, and the
//! `path:line: reason` problems a file can have. Parsing lives in `markdown.rs` / `faq.rs`;
//! everything here is pure over bytes except [`walk`], so any input can be fuzzed.

use std::fmt;
use std::path::{Path, PathBuf};

/// A problem found while loading: shown to operators as `path:line: reason`
/// (`path: reason` when it concerns the whole file). The file's other content still loads.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Problem {
    pub path: String,
    /// 1-based; 0 = the whole file.
    pub line: usize,
    pub reason: String,
}

impl Problem {
    pub fn new(path: &str, line: usize, reason: impl Into<String>) -> Self {
        Self {
            path: path.to_string(),
            line,
            reason: reason.into(),
        }
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line == 0 {
            write!(f, "{}: {}", self.path, self.reason)
        } else {
            write!(f, "{}:{}: {}", self.path, self.line, self.reason)
        }
    }
}

/// What kind of chunk: scored differently (an FAQ is matched on its question and alternates,
/// a section on its heading and body).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum ChunkKind {
    Faq,
    Section,
}

/// One retrievable unit of knowledge, before embedding.
#[derive(Clone, Debug, PartialEq)]
pub struct LoadedChunk {
    pub kind: ChunkKind,
    /// `policies/refund.md` or `faq/billing.jsonl#id`.
    pub source: String,
    pub title: String,
    pub heading_path: Vec<String>,
    pub category: String,
    /// Section body or FAQ answer.
    pub text: String,
    /// Texts a query is matched against one by one (max-sim): the FAQ question and its
    /// alternates; for a section, its title and heading path as one line.
    pub match_texts: Vec<String>,
}

/// One parsed file: its chunks and what was wrong with it.
#[derive(Clone, Debug, Default)]
pub struct LoadedFile {
    pub title: String,
    pub tags: Vec<String>,
    pub chunks: Vec<LoadedChunk>,
    pub problems: Vec<Problem>,
}

/// File kinds we read; anything else under a root is ignored.
pub fn is_knowledge_file(path: &Path) -> bool {
    matches!(
        path.extension()
            .and_then(|e| e.to_str())
            .map(str::to_ascii_lowercase)
            .as_deref(),
        Some("md" | "markdown" | "jsonl" | "csv")
    )
}

/// The category of a root-relative source: its first directory ("" at the root).
pub fn category_of(rel: &str) -> String {
    match rel.split_once('/') {
        Some((dir, _)) => dir.to_string(),
        None => String::new(),
    }
}

/// Parse one file's bytes. `rel` is the root-relative path with `/` separators.
pub fn load_file(rel: &str, bytes: &[u8]) -> LoadedFile {
    let ext = rel
        .rsplit_once('.')
        .map(|(_, e)| e.to_ascii_lowercase())
        .unwrap_or_default();
    let category = category_of(rel);
    match ext.as_str() {
        "md" | "markdown" => super::markdown::parse(rel, &category, bytes),
        "jsonl" => super::faq::parse_jsonl(rel, &category, bytes),
        "csv" => super::faq::parse_csv(rel, &category, bytes),
        _ => LoadedFile {
            problems: vec![Problem::new(rel, 0, "not a knowledge file type")],
            ..LoadedFile::default()
        },
    }
}

/// A knowledge file found under a root.
#[derive(Clone, Debug)]
pub struct Found {
    /// Root-relative, `/`-separated: the source path.
    pub rel: String,
    pub path: PathBuf,
}

/// Deeper than this is a symlink loop or a mistake.
const MAX_DEPTH: usize = 32;

/// Walk a root recursively (hidden entries skipped), sorted for a stable order. A root that
/// is itself a file is accepted (its name is the source). Unreadable directories are problems.
pub fn walk(root: &Path) -> (Vec<Found>, Vec<Problem>) {
    let mut found = Vec::new();
    let mut problems = Vec::new();
    let shown = root.display().to_string();
    match std::fs::metadata(root) {
        Err(e) => problems.push(Problem::new(&shown, 0, format!("cannot read: {e}"))),
        Ok(m) if m.is_file() => {
            if is_knowledge_file(root) {
                let rel = root
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default();
                found.push(Found {
                    rel,
                    path: root.to_path_buf(),
                });
            }
        }
        Ok(_) => walk_dir(root, "", 0, &mut found, &mut problems),
    }
    found.sort_by(|a, b| a.rel.cmp(&b.rel));
    (found, problems)
}

fn walk_dir(dir: &Path, prefix: &str, depth: usize, found: &mut Vec<Found>, pr: &mut Vec<Problem>) {
    if depth > MAX_DEPTH {
        pr.push(Problem::new(
            prefix,
            0,
            "directory nesting too deep; skipped",
        ));
        return;
    }
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) => {
            pr.push(Problem::new(
                &dir.display().to_string(),
                0,
                format!("cannot read: {e}"),
            ));
            return;
        }
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') {
            continue;
        }
        let rel = if prefix.is_empty() {
            name
        } else {
            format!("{prefix}/{name}")
        };
        let path = entry.path();
        match std::fs::metadata(&path) {
            Ok(m) if m.is_dir() => walk_dir(&path, &rel, depth + 1, found, pr),
            Ok(m) if m.is_file() && is_knowledge_file(&path) => found.push(Found { rel, path }),
            Ok(_) => {}
            Err(e) => pr.push(Problem::new(&rel, 0, format!("cannot read: {e}"))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn problems_format() {
        assert_eq!(
            Problem::new("faq/a.jsonl", 3, "bad JSON").to_string(),
            "faq/a.jsonl:3: bad JSON"
        );
        assert_eq!(
            Problem::new("x.md", 0, "not UTF-8").to_string(),
            "x.md: not UTF-8"
        );
    }

    #[test]
    fn categories() {
        assert_eq!(category_of("policies/refund.md"), "policies");
        assert_eq!(category_of("policies/deep/refund.md"), "policies");
        assert_eq!(category_of("readme.md"), "");
    }

    #[test]
    fn walk_finds_sorted_and_skips_hidden() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("b/c")).unwrap();
        std::fs::create_dir_all(dir.path().join(".git")).unwrap();
        std::fs::write(dir.path().join("b/c/x.md"), "# x").unwrap();
        std::fs::write(dir.path().join("a.csv"), "question,answer\n").unwrap();
        std::fs::write(dir.path().join("note.txt"), "no").unwrap();
        std::fs::write(dir.path().join(".git/h.md"), "no").unwrap();
        let (found, problems) = walk(dir.path());
        let rels: Vec<_> = found.iter().map(|f| f.rel.as_str()).collect();
        assert_eq!(rels, ["a.csv", "b/c/x.md"]);
        assert!(problems.is_empty());
        let (_, problems) = walk(&dir.path().join("missing"));
        assert_eq!(problems.len(), 1);
    }

    proptest::proptest! {
        #[test]
        fn loaders_never_panic(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..600)) {
            for rel in ["a/x.md", "a/x.jsonl", "a/x.csv", "x.txt"] {
                let f = load_file(rel, &bytes);
                for c in &f.chunks {
                    proptest::prop_assert!(!c.match_texts.is_empty());
                }
            }
        }

        #[test]
        fn structured_noise_never_panics(s in r#"(---\n|#{1,7} ?|\{|\}|"|,|:|\[|\]|\||\n|```|question|answer|id|[a-z退款 ]{0,8}){0,60}"#) {
            for rel in ["x.md", "x.jsonl", "x.csv"] {
                let _ = load_file(rel, s.as_bytes());
            }
            let _ = crate::knowledge::analyze::terms(&s);
        }
    }
}
