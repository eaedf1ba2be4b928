//! Sentences of knowledge text: splitting a chunk into sentences, list items and table rows,
//! counting words the way the answer budget does, and joining picked pieces back.

use super::is_cjk;

/// Words of `text`; Chinese counts two characters a word (≈ the reading time of an English word).
pub fn word_count(text: &str) -> usize {
    let cjk = text.chars().filter(|&c| is_cjk(c)).count();
    let latin = text
        .split(|c: char| c.is_whitespace() || is_cjk(c))
        .filter(|w| w.chars().any(char::is_alphanumeric))
        .count();
    latin + cjk.div_ceil(2)
}

/// Sentences and list items of a chunk, markup kept (the widget renders simple markdown).
pub fn split_sentences(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    for line in text.lines() {
        let line = line.trim_end();
        if line.trim().is_empty() {
            continue;
        }
        let trimmed = line.trim_start();
        // A list item or a table row stays one unit.
        if trimmed.starts_with(['-', '*', '|'])
            || trimmed.chars().next().is_some_and(|c| c.is_ascii_digit()) && trimmed.contains(". ")
        {
            out.push(line.to_string());
            continue;
        }
        split_line(line, &mut out);
    }
    out
}

/// One answerable piece of a chunk: a sentence, a list item, or a table row.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Piece {
    /// As written (markup kept).
    pub text: String,
    /// A table row's header and separator lines, so the row can be shown as a table.
    pub header: Option<String>,
    /// What to match a question against: the text, or for a table row each header cell next
    /// to its value (`价格 ¥368 规格 100 g`), so "多少钱" meets the price column.
    pub searchable: String,
}

impl Piece {
    /// The piece as it goes into an answer: a table row under its header.
    pub fn display(&self) -> String {
        match &self.header {
            Some(h) => format!("{h}\n{}", self.text),
            None => self.text.clone(),
        }
    }

    pub fn is_row(&self) -> bool {
        self.header.is_some()
    }
}

/// The pieces of a chunk in order: sentences of prose, list items whole, table rows with
/// their header (a table's header and separator rows are not pieces themselves).
pub fn pieces(text: &str) -> Vec<Piece> {
    let lines: Vec<&str> = text.lines().map(str::trim_end).collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        let line = lines[i];
        let trimmed = line.trim_start();
        if trimmed.is_empty() {
            i += 1;
            continue;
        }
        if trimmed.starts_with('|') {
            // A table: header, separator (`|---|`), rows. A lone `|` line is a row without
            // header.
            let has_sep = lines.get(i + 1).is_some_and(|l| is_separator(l));
            let (header_cells, header_text, first_row) = if has_sep {
                (
                    cells(trimmed),
                    Some(format!("{}\n{}", trimmed, lines[i + 1].trim())),
                    i + 2,
                )
            } else {
                (Vec::new(), None, i)
            };
            let mut j = first_row;
            while j < lines.len() && lines[j].trim_start().starts_with('|') {
                let row = lines[j].trim();
                if !is_separator(row) {
                    let values = cells(row);
                    let searchable = values
                        .iter()
                        .enumerate()
                        .map(|(k, v)| match header_cells.get(k) {
                            Some(h) if !h.is_empty() => format!("{h} {v}"),
                            _ => v.clone(),
                        })
                        .collect::<Vec<_>>()
                        .join("; ");
                    out.push(Piece {
                        text: row.to_string(),
                        header: header_text.clone(),
                        searchable,
                    });
                }
                j += 1;
            }
            i = j.max(i + 1);
            continue;
        }
        let mut sentences = Vec::new();
        if trimmed.starts_with(['-', '*', '#'])
            || trimmed.chars().next().is_some_and(|c| c.is_ascii_digit()) && trimmed.contains(". ")
        {
            sentences.push(line.to_string());
        } else {
            split_line(line, &mut sentences);
        }
        out.extend(sentences.into_iter().map(|s| Piece {
            searchable: s.clone(),
            text: s,
            header: None,
        }));
        i += 1;
    }
    out
}

fn is_separator(line: &str) -> bool {
    let t = line.trim();
    t.starts_with('|') && t.contains('-') && t.chars().all(|c| matches!(c, '|' | '-' | ':' | ' '))
}

fn cells(row: &str) -> Vec<String> {
    row.trim()
        .trim_start_matches('|')
        .trim_end_matches('|')
        .split('|')
        .map(|c| c.trim().to_string())
        .collect()
}

/// Split one line of prose into sentences (Chinese and Western end marks; abbreviations and
/// decimals do not end a sentence).
fn split_line(line: &str, out: &mut Vec<String>) {
    let mut cur = String::new();
    let chars: Vec<char> = line.chars().collect();
    for (k, &c) in chars.iter().enumerate() {
        cur.push(c);
        let end = matches!(c, '。' | '！' | '？' | '；')
            || (matches!(c, '.' | '!' | '?')
                && chars.get(k + 1).is_none_or(|n| n.is_whitespace())
                && !ends_with_abbreviation(&cur));
        if end {
            out.push(cur.trim().to_string());
            cur.clear();
        }
    }
    if !cur.trim().is_empty() {
        out.push(cur.trim().to_string());
    }
}

fn ends_with_abbreviation(s: &str) -> bool {
    let last = s.trim_end_matches('.').rsplit(' ').next().unwrap_or("");
    matches!(last, "e.g" | "i.e" | "etc" | "vs" | "Mr" | "Dr" | "No") || last.len() == 1
}

pub fn join_sentences(parts: &[&str]) -> String {
    let mut out = String::new();
    for p in parts {
        if !out.is_empty() {
            if p.trim_start().starts_with(['-', '*', '|']) || out.ends_with('\n') {
                out.push('\n');
            } else if !out.ends_with(|c: char| is_cjk(c) || matches!(c, '。' | '！' | '？' | '；'))
            {
                out.push(' ');
            }
        }
        out.push_str(p);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sentence_split_handles_both_languages() {
        let s = split_sentences(
            "First one. Second e.g. this! 第三句。第四句？\n- item one\n- item two",
        );
        assert_eq!(
            s,
            [
                "First one.",
                "Second e.g. this!",
                "第三句。",
                "第四句？",
                "- item one",
                "- item two"
            ]
        );
        assert_eq!(
            split_sentences("It costs ¥9.9 each. Next."),
            ["It costs ¥9.9 each.", "Next."]
        );
    }

    #[test]
    fn table_rows_are_pieces_with_their_header() {
        let text = "Intro line. Second.\n\n| Item | Size | Price |\n|---|---|---|\n| Mug | 300 ml | ¥40 |\n| Cup | 90 ml | ¥25 |\n\nAfter the table.";
        let p = pieces(text);
        let texts: Vec<&str> = p.iter().map(|x| x.text.as_str()).collect();
        assert_eq!(
            texts,
            [
                "Intro line.",
                "Second.",
                "| Mug | 300 ml | ¥40 |",
                "| Cup | 90 ml | ¥25 |",
                "After the table."
            ]
        );
        assert!(p[2].is_row() && !p[0].is_row());
        assert_eq!(p[3].searchable, "Item Cup; Size 90 ml; Price ¥25");
        assert_eq!(
            p[2].display(),
            "| Item | Size | Price |\n|---|---|---|\n| Mug | 300 ml | ¥40 |"
        );
    }

    #[test]
    fn odd_tables_do_not_panic() {
        for t in [
            "|",
            "| a |",
            "|---|",
            "| a |\n|---|",
            "| a | b |\n|--|\n| 1 |",
            "||\n||",
        ] {
            let _ = pieces(t);
        }
        assert_eq!(pieces("| only | row |")[0].searchable, "only; row");
    }

    #[test]
    fn word_count_counts_chinese_by_pairs() {
        assert_eq!(word_count("two words"), 2);
        assert_eq!(word_count("退款到账"), 2);
        assert_eq!(word_count("refund 退款"), 2);
    }
}
