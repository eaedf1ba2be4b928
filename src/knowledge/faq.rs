//! FAQ files: one chunk per entry, source `path#id`.
//!
//! - `.jsonl`: `{"id", "question", "answer", "alternates"?, "category"?}` a line; blank lines
//!   skipped; a missing id becomes the line number.
//! - `.csv`: a header naming `question` and `answer` (any order, any case), optional `id`,
//!   `category` and `alternates` (separated by `|`); a missing id becomes the line number.
//!
//! A bad line or row is a problem (`path:line: reason`) and the rest of the file loads. A
//! repeated id keeps the first entry. A `category` field overrides the directory category.

use std::collections::HashMap;

use super::load::{ChunkKind, LoadedChunk, LoadedFile, Problem};

struct Entry {
    line: usize,
    id: String,
    question: String,
    answer: String,
    alternates: Vec<String>,
    category: Option<String>,
}

#[derive(serde::Deserialize)]
struct JsonEntry {
    id: Option<serde_json::Value>,
    question: Option<String>,
    answer: Option<String>,
    #[serde(default)]
    alternates: Option<Vec<String>>,
    category: Option<String>,
}

pub fn parse_jsonl(rel: &str, category: &str, bytes: &[u8]) -> LoadedFile {
    let mut entries = Vec::new();
    let mut problems = Vec::new();
    for (i, raw) in bytes.split(|b| *b == b'\n').enumerate() {
        let line = i + 1;
        let Ok(text) = std::str::from_utf8(raw) else {
            problems.push(Problem::new(rel, line, "not valid UTF-8"));
            continue;
        };
        let text = text.trim().trim_start_matches('\u{feff}');
        if text.is_empty() {
            continue;
        }
        let e: JsonEntry = match serde_json::from_str(text) {
            Ok(e) => e,
            Err(err) => {
                problems.push(Problem::new(rel, line, format!("bad JSON: {err}")));
                continue;
            }
        };
        let id = match e.id {
            None | Some(serde_json::Value::Null) => line.to_string(),
            Some(serde_json::Value::String(s)) if !s.trim().is_empty() => s.trim().to_string(),
            Some(serde_json::Value::Number(n)) => n.to_string(),
            Some(_) => {
                problems.push(Problem::new(
                    rel,
                    line,
                    "`id` must be a non-empty string or a number",
                ));
                continue;
            }
        };
        entries.push(Entry {
            line,
            id,
            question: e.question.unwrap_or_default(),
            answer: e.answer.unwrap_or_default(),
            alternates: e.alternates.unwrap_or_default(),
            category: e.category,
        });
    }
    finish(rel, category, entries, problems)
}

pub fn parse_csv(rel: &str, category: &str, bytes: &[u8]) -> LoadedFile {
    let bytes = bytes.strip_prefix(b"\xef\xbb\xbf").unwrap_or(bytes);
    let mut problems = Vec::new();
    let mut reader = csv::ReaderBuilder::new().flexible(true).from_reader(bytes);
    let header = match reader.headers() {
        Ok(h) => h.clone(),
        Err(e) => {
            problems.push(Problem::new(rel, 1, format!("bad header: {e}")));
            return LoadedFile {
                problems,
                ..LoadedFile::default()
            };
        }
    };
    let col = |name: &str| {
        header
            .iter()
            .position(|h| h.trim().eq_ignore_ascii_case(name))
    };
    let (Some(q), Some(a)) = (col("question"), col("answer")) else {
        problems.push(Problem::new(
            rel,
            1,
            "header must name `question` and `answer` columns",
        ));
        return LoadedFile {
            problems,
            ..LoadedFile::default()
        };
    };
    let (id_col, cat_col, alt_col) = (col("id"), col("category"), col("alternates"));
    let mut entries = Vec::new();
    for result in reader.records() {
        let record = match result {
            Ok(r) => r,
            Err(e) => {
                let line = e.position().map_or(0, |p| p.line() as usize);
                problems.push(Problem::new(rel, line, format!("bad row: {e}")));
                continue;
            }
        };
        let line = record.position().map_or(0, |p| p.line() as usize);
        let field = |c: Option<usize>| c.and_then(|c| record.get(c)).map(str::trim).unwrap_or("");
        if record.iter().all(|f| f.trim().is_empty()) {
            continue;
        }
        let id = match field(id_col) {
            "" => line.to_string(),
            s => s.to_string(),
        };
        entries.push(Entry {
            line,
            id,
            question: field(Some(q)).to_string(),
            answer: field(Some(a)).to_string(),
            alternates: field(alt_col)
                .split('|')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_string)
                .collect(),
            category: Some(field(cat_col).to_string()).filter(|c| !c.is_empty()),
        });
    }
    finish(rel, category, entries, problems)
}

fn finish(
    rel: &str,
    category: &str,
    entries: Vec<Entry>,
    mut problems: Vec<Problem>,
) -> LoadedFile {
    let mut seen: HashMap<String, usize> = HashMap::new();
    let mut chunks = Vec::new();
    for e in entries {
        let question = e.question.trim();
        let answer = e.answer.trim();
        if question.is_empty() || answer.is_empty() {
            let missing = if question.is_empty() {
                "question"
            } else {
                "answer"
            };
            problems.push(Problem::new(
                rel,
                e.line,
                format!("missing `{missing}`; entry skipped"),
            ));
            continue;
        }
        if let Some(first) = seen.get(&e.id) {
            problems.push(Problem::new(
                rel,
                e.line,
                format!(
                    "duplicate id `{}` (first on line {first}); entry skipped",
                    e.id
                ),
            ));
            continue;
        }
        seen.insert(e.id.clone(), e.line);
        let mut match_texts = vec![question.to_string()];
        match_texts.extend(
            e.alternates
                .iter()
                .map(|a| a.trim())
                .filter(|a| !a.is_empty())
                .map(str::to_string),
        );
        chunks.push(LoadedChunk {
            kind: ChunkKind::Faq,
            source: format!("{rel}#{}", e.id),
            title: question.to_string(),
            heading_path: Vec::new(),
            category: e.category.unwrap_or_else(|| category.to_string()),
            text: answer.to_string(),
            match_texts,
        });
    }
    let title = rel.rsplit('/').next().unwrap_or(rel).to_string();
    LoadedFile {
        title,
        tags: Vec::new(),
        chunks,
        problems,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jsonl_entries_and_problems() {
        let data =
            "{\"id\":\"a\",\"question\":\"Q1\",\"answer\":\"A1\",\"alternates\":[\"alt\"]}\n\
                    \n\
                    {not json}\n\
                    {\"question\":\"Q2\",\"answer\":\"A2\"}\n\
                    {\"id\":\"a\",\"question\":\"Q3\",\"answer\":\"A3\"}\n\
                    {\"id\":7,\"question\":\"Q4\"}\n";
        let f = parse_jsonl("faq/x.jsonl", "faq", data.as_bytes());
        let sources: Vec<_> = f.chunks.iter().map(|c| c.source.as_str()).collect();
        assert_eq!(sources, ["faq/x.jsonl#a", "faq/x.jsonl#4"]);
        assert_eq!(f.chunks[0].match_texts, ["Q1", "alt"]);
        assert_eq!(f.chunks[0].title, "Q1");
        assert_eq!(f.chunks[0].text, "A1");
        assert_eq!(f.chunks[0].category, "faq");
        let p: Vec<_> = f.problems.iter().map(|p| p.to_string()).collect();
        assert_eq!(p.len(), 3, "{p:?}");
        assert!(p[0].starts_with("faq/x.jsonl:3: bad JSON"));
        assert!(p[1].starts_with("faq/x.jsonl:5: duplicate id `a` (first on line 1)"));
        assert!(p[2].starts_with("faq/x.jsonl:6: missing `answer`"));
    }

    #[test]
    fn csv_entries_and_problems() {
        let data = "Question,Answer,id,category,alternates\n\
                    How to pay?,By card.,pay,billing,paying?|payment methods\n\
                    Where?,Here.\n\
                    ,no question\n\
                    \"unterminated,x\n";
        let f = parse_csv("faq/x.csv", "faq", data.as_bytes());
        assert_eq!(f.chunks[0].source, "faq/x.csv#pay");
        assert_eq!(f.chunks[0].category, "billing");
        assert_eq!(
            f.chunks[0].match_texts,
            ["How to pay?", "paying?", "payment methods"]
        );
        assert_eq!(f.chunks[1].source, "faq/x.csv#3");
        assert_eq!(f.chunks[1].category, "faq");
        assert!(f
            .problems
            .iter()
            .any(|p| p.to_string().starts_with("faq/x.csv:4: missing `question`")));
    }

    #[test]
    fn csv_without_required_header() {
        let f = parse_csv("x.csv", "", b"q,a\n1,2\n");
        assert_eq!(
            f.problems[0].to_string(),
            "x.csv:1: header must name `question` and `answer` columns"
        );
        assert!(f.chunks.is_empty());
    }

    /// One FAQ entry as an operator would write it: trimmed, non-empty texts without line
    /// breaks; alternates without `|` (the CSV separator).
    fn entry() -> impl proptest::strategy::Strategy<Value = (String, String, Vec<String>)> {
        use proptest::prelude::*;
        let text = "[^\\p{C}|]{1,40}"
            .prop_map(|s: String| s.trim().to_string())
            .prop_filter("non-empty", |s| !s.is_empty());
        (
            text.clone(),
            text.clone(),
            proptest::collection::vec(text, 0..3),
        )
    }

    proptest::proptest! {
        /// Entries written as JSONL and as CSV load back as the same chunks, in order.
        #[test]
        fn jsonl_and_csv_round_trip(entries in proptest::collection::vec(entry(), 1..8)) {
            let mut jsonl = String::new();
            let mut csv_out = csv::Writer::from_writer(Vec::new());
            csv_out.write_record(["id", "question", "answer", "alternates"]).unwrap();
            for (i, (q, a, alts)) in entries.iter().enumerate() {
                let id = format!("e{i}");
                jsonl.push_str(&serde_json::json!({"id": id, "question": q, "answer": a, "alternates": alts}).to_string());
                jsonl.push('\n');
                csv_out.write_record([id.as_str(), q, a, &alts.join("|")]).unwrap();
            }
            let csv_bytes = csv_out.into_inner().unwrap();
            for f in [
                parse_jsonl("faq/x.jsonl", "faq", jsonl.as_bytes()),
                parse_csv("faq/x.jsonl", "faq", &csv_bytes),
            ] {
                proptest::prop_assert!(f.problems.is_empty(), "{:?}", f.problems);
                proptest::prop_assert_eq!(f.chunks.len(), entries.len());
                for (i, (c, (q, a, alts))) in f.chunks.iter().zip(&entries).enumerate() {
                    proptest::prop_assert_eq!(&c.source, &format!("faq/x.jsonl#e{i}"));
                    proptest::prop_assert_eq!(&c.title, q);
                    proptest::prop_assert_eq!(&c.text, a);
                    let mut want = vec![q.clone()];
                    want.extend(alts.iter().cloned());
                    proptest::prop_assert_eq!(&c.match_texts, &want);
                }
            }
        }
    }
}
