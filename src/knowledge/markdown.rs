//! Markdown files: optional front matter, then chunks split on ATX headings (`#`..`######`,
//! outside fenced code), each keeping its heading path; sections longer than
//! [`MAX_CHUNK_CHARS`] are split further on paragraphs.
//!
//! Front matter is a small hand-parsed YAML subset: `key: value`, quoted values,
//! `tags: [a, b]` and `- item` block lists; `title` and `tags` are used, other keys ignored.
//! Broken front matter never drops the file: an unclosed block is reported and the file is
//! read as if it had none; a line that is not `key: value` is reported and skipped.

use super::load::{ChunkKind, LoadedChunk, LoadedFile, Problem};

/// Target chunk size; a section is split on paragraph boundaries to stay near it.
pub const MAX_CHUNK_CHARS: usize = 1200;

pub fn parse(rel: &str, category: &str, bytes: &[u8]) -> LoadedFile {
    let mut file = LoadedFile::default();
    let text = match std::str::from_utf8(bytes) {
        Ok(t) => t,
        Err(e) => {
            let line = 1 + bytes[..e.valid_up_to()]
                .iter()
                .filter(|b| **b == b'\n')
                .count();
            file.problems
                .push(Problem::new(rel, line, "not valid UTF-8; file skipped"));
            return file;
        }
    };
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let lines: Vec<&str> = text.lines().collect();
    let (front, body_start) = front_matter(rel, &lines, &mut file.problems);
    file.tags = front.tags;
    let sections = sections(&lines[body_start..]);
    let stem = rel
        .rsplit('/')
        .next()
        .unwrap_or(rel)
        .rsplit_once('.')
        .map_or(rel, |(s, _)| s)
        .to_string();
    file.title = front
        .title
        .or_else(|| sections.iter().find_map(|s| s.path.first().cloned()))
        .unwrap_or(stem);
    for s in sections {
        let body = s.body.trim();
        if body.is_empty() {
            continue;
        }
        let mut line = file.title.clone();
        for h in &s.path {
            if *h != file.title {
                line.push_str(" › ");
                line.push_str(h);
            }
        }
        for piece in split_long(body, MAX_CHUNK_CHARS) {
            file.chunks.push(LoadedChunk {
                kind: ChunkKind::Section,
                source: rel.to_string(),
                title: file.title.clone(),
                heading_path: s.path.clone(),
                category: category.to_string(),
                text: piece,
                match_texts: vec![line.clone()],
            });
        }
    }
    file
}

#[derive(Default)]
struct Front {
    title: Option<String>,
    tags: Vec<String>,
}

/// Returns the front matter and the index of the first body line.
fn front_matter(rel: &str, lines: &[&str], problems: &mut Vec<Problem>) -> (Front, usize) {
    let mut front = Front::default();
    if lines.first().map(|l| l.trim_end()) != Some("---") {
        return (front, 0);
    }
    let Some(end) = lines
        .iter()
        .skip(1)
        .position(|l| matches!(l.trim_end(), "---" | "..."))
        .map(|p| p + 1)
    else {
        problems.push(Problem::new(
            rel,
            1,
            "front matter `---` is never closed; read as body",
        ));
        return (front, 0);
    };
    let mut list_key: Option<String> = None;
    for (i, raw) in lines[1..end].iter().enumerate() {
        let line_no = i + 2;
        let line = raw.trim_end();
        if line.trim().is_empty() || line.trim_start().starts_with('#') {
            continue;
        }
        if let Some(item) = line.trim_start().strip_prefix("- ") {
            if list_key.as_deref() == Some("tags") {
                front.tags.push(unquote(item));
            } else if list_key.is_none() {
                problems.push(Problem::new(rel, line_no, "list item outside a list key"));
            }
            continue;
        }
        let Some((key, value)) = line.split_once(':') else {
            problems.push(Problem::new(
                rel,
                line_no,
                "front matter line is not `key: value`; ignored",
            ));
            continue;
        };
        let key = key.trim().to_ascii_lowercase();
        let value = value.trim();
        list_key = None;
        match key.as_str() {
            "title" if !value.is_empty() => front.title = Some(unquote(value)),
            "tags" if value.is_empty() => list_key = Some(key),
            "tags" => match value.strip_prefix('[').map(|v| v.strip_suffix(']')) {
                Some(Some(inner)) => front
                    .tags
                    .extend(inner.split(',').map(unquote).filter(|t| !t.is_empty())),
                Some(None) => problems.push(Problem::new(
                    rel,
                    line_no,
                    "tags list is not closed with `]`",
                )),
                None => front
                    .tags
                    .extend(value.split(',').map(unquote).filter(|t| !t.is_empty())),
            },
            _ if value.is_empty() => list_key = Some(key),
            _ => {}
        }
    }
    (front, end + 1)
}

fn unquote(v: &str) -> String {
    let v = v.trim();
    let inner = v
        .strip_prefix('"')
        .and_then(|s| s.strip_suffix('"'))
        .or_else(|| v.strip_prefix('\'').and_then(|s| s.strip_suffix('\'')));
    inner.unwrap_or(v).trim().to_string()
}

struct Section {
    path: Vec<String>,
    body: String,
}

/// Split on ATX headings outside code fences; each section keeps the stack of headings.
fn sections(lines: &[&str]) -> Vec<Section> {
    let mut out = vec![Section {
        path: Vec::new(),
        body: String::new(),
    }];
    let mut stack: Vec<(usize, String)> = Vec::new();
    let mut fence: Option<&str> = None;
    for line in lines {
        let t = line.trim_start();
        if let Some(f) = fence {
            if t.starts_with(f) {
                fence = None;
            }
        } else if t.starts_with("```") || t.starts_with("~~~") {
            fence = Some(&t[..3]);
        } else if let Some((level, heading)) = atx_heading(line) {
            stack.retain(|(l, _)| *l < level);
            stack.push((level, heading));
            out.push(Section {
                path: stack.iter().map(|(_, h)| h.clone()).collect(),
                body: String::new(),
            });
            continue;
        }
        let cur = out.last_mut().expect("at least one section");
        cur.body.push_str(line);
        cur.body.push('\n');
    }
    out
}

fn atx_heading(line: &str) -> Option<(usize, String)> {
    // Up to three spaces of indentation, 1-6 '#', then a space or end of line.
    let indent = line.len() - line.trim_start_matches(' ').len();
    if indent > 3 {
        return None;
    }
    let t = &line[indent..];
    let level = t.len() - t.trim_start_matches('#').len();
    if !(1..=6).contains(&level) {
        return None;
    }
    let rest = &t[level..];
    if !rest.is_empty() && !rest.starts_with([' ', '\t']) {
        return None;
    }
    let text = rest.trim().trim_end_matches('#').trim();
    if text.is_empty() {
        return None;
    }
    Some((level, text.to_string()))
}

/// Pack paragraphs into pieces of at most `max` chars; a paragraph longer than that is cut
/// at sentence ends, else at a char boundary.
pub fn split_long(body: &str, max: usize) -> Vec<String> {
    if body.chars().count() <= max {
        return vec![body.to_string()];
    }
    let mut pieces = Vec::new();
    let mut cur = String::new();
    for para in body.split("\n\n").map(str::trim).filter(|p| !p.is_empty()) {
        for part in cut(para, max) {
            if !cur.is_empty() && cur.chars().count() + part.chars().count() + 2 > max {
                pieces.push(std::mem::take(&mut cur));
            }
            if !cur.is_empty() {
                cur.push_str("\n\n");
            }
            cur.push_str(&part);
        }
    }
    if !cur.is_empty() {
        pieces.push(cur);
    }
    pieces
}

fn cut(para: &str, max: usize) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut n = 0;
    for c in para.chars() {
        cur.push(c);
        n += 1;
        let sentence_end = matches!(c, '.' | '!' | '?' | '。' | '！' | '？' | '\n');
        if (sentence_end && n >= max / 2) || n >= max {
            out.push(std::mem::take(&mut cur).trim().to_string());
            n = 0;
        }
    }
    if !cur.trim().is_empty() {
        out.push(cur.trim().to_string());
    }
    out.retain(|p| !p.is_empty());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn front_matter_and_headings() {
        let md = "---\ntitle: \"Refund policy\"\ntags: [refund, money]\n---\n\
                  intro text\n\n# Refunds\n\nWithin 30 days.\n\n## Eligibility\n\nUnused items.\n\
                  ```\n# not a heading\n```\n### Deep\n\ndeep text\n## Process\n\nAsk us.\n";
        let f = parse("policies/refund.md", "policies", md.as_bytes());
        assert!(f.problems.is_empty(), "{:?}", f.problems);
        assert_eq!(f.title, "Refund policy");
        assert_eq!(f.tags, ["refund", "money"]);
        let paths: Vec<_> = f
            .chunks
            .iter()
            .map(|c| c.heading_path.join(" > "))
            .collect();
        assert_eq!(
            paths,
            [
                "",
                "Refunds",
                "Refunds > Eligibility",
                "Refunds > Eligibility > Deep",
                "Refunds > Process"
            ]
        );
        assert!(f.chunks[2].text.contains("# not a heading"));
        assert_eq!(
            f.chunks[2].match_texts,
            ["Refund policy › Refunds › Eligibility"]
        );
        assert!(f
            .chunks
            .iter()
            .all(|c| c.category == "policies" && c.source == "policies/refund.md"));
    }

    #[test]
    fn title_falls_back_to_heading_then_stem() {
        let f = parse("guides/setup.md", "guides", b"# Getting started\n\nhello\n");
        assert_eq!(f.title, "Getting started");
        let f = parse("guides/setup.md", "guides", b"just text\n");
        assert_eq!(f.title, "setup");
        assert_eq!(f.chunks.len(), 1);
    }

    #[test]
    fn broken_front_matter_is_reported_not_fatal() {
        let f = parse("a.md", "", b"---\ntitle: x\nno colon here\n---\nbody\n");
        assert_eq!(
            f.problems[0].to_string(),
            "a.md:3: front matter line is not `key: value`; ignored"
        );
        assert_eq!(f.title, "x");
        assert_eq!(f.chunks.len(), 1);
        let f = parse("a.md", "", b"---\ntitle: x\nbody\n");
        assert_eq!(f.problems[0].line, 1);
        assert_eq!(f.chunks.len(), 1);
        let f = parse("a.md", "", b"---\ntags:\n - one\n - 'two'\n---\nbody");
        assert_eq!(f.tags, ["one", "two"]);
    }

    #[test]
    fn invalid_utf8_is_a_problem_with_line() {
        let f = parse("a.md", "", b"ok\nok\n\xff\xfe");
        assert_eq!(f.problems[0].line, 3);
        assert!(f.chunks.is_empty());
    }

    #[test]
    fn long_sections_split_near_max() {
        let para = "This is a sentence about refunds. ".repeat(20);
        let body = [para.as_str(); 6].join("\n\n");
        let pieces = split_long(&body, 1200);
        assert!(pieces.len() >= 3);
        assert!(pieces.iter().all(|p| p.chars().count() <= 1200));
        let huge = "x".repeat(5000);
        assert!(split_long(&huge, 1200)
            .iter()
            .all(|p| p.chars().count() <= 1200));
    }

    proptest::proptest! {
        /// Sections written under headings load back as chunks carrying their heading and
        /// their body, in order.
        #[test]
        fn sections_round_trip(
            sections in proptest::collection::vec(
                ("[A-Za-z退款][A-Za-z0-9 退款]{0,20}", "[a-z退款][a-z0-9 ,.退款]{0,200}"),
                1..6,
            )
        ) {
            let md: String = sections
                .iter()
                .map(|(h, body)| format!("## {h}\n\n{body}\n\n"))
                .collect();
            let f = parse("guides/x.md", "guides", md.as_bytes());
            proptest::prop_assert!(f.problems.is_empty(), "{:?}", f.problems);
            let kept: Vec<_> = sections
                .iter()
                .filter(|(_, b)| !b.trim().is_empty())
                .collect();
            proptest::prop_assert_eq!(f.chunks.len(), kept.len());
            for (c, (h, body)) in f.chunks.iter().zip(kept) {
                proptest::prop_assert_eq!(&c.heading_path, &vec![h.trim().to_string()]);
                proptest::prop_assert_eq!(c.text.as_str(), body.trim());
            }
        }
    }
}
