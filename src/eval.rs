//! `kefu eval CASES.jsonl`: run each case through the same engine path as live traffic
//! (a temporary database) and report per-field accuracy, overall and per language.
//!
//! A line is either one message (`{"message", "expect_*"...}`, a fresh conversation each) or
//! a conversation script (`{"name", "turns": [{"message", "expect_*"...}, ...]}`, one
//! conversation for the whole script, turns in order). Fields that do not start with
//! `expect_` are notes for people (`why`, `note`, ...) and are ignored; an unknown `expect_`
//! field is a typo and reported, so a check is never silently skipped.

use std::collections::BTreeMap;
use std::ops::Deref;
use std::path::Path;
use std::sync::Arc;

use adapters::{ChannelKind, ContentKind, Inbound, UserRef};
use anyhow::Context;
use serde::Serialize;
use serde_json::{Map, Value};

use crate::app::{App, IngestPolicy};
use crate::config::Config;
use crate::engine::Turn;
use crate::text::looks_chinese;

/// The checks one message (or one turn of a script) can carry.
#[derive(Debug, Default, Clone, PartialEq)]
struct Expect {
    intent: Option<String>,
    source: Option<String>,
    handoff: Option<bool>,
    contains: Vec<String>,
    asks_order: Option<bool>,
    silent: Option<bool>,
    /// The bot answered from the knowledge (a reply with sources, no handoff). Off-topic
    /// cases expect `false` whatever `intent.other` then does (clarify or hand over).
    answered: Option<bool>,
}

const EXPECT_FIELDS: &[&str] = &[
    "expect_intent",
    "expect_source",
    "expect_handoff",
    "expect_contains",
    "expect_asks_order",
    "expect_silent",
    "expect_answered",
];

#[derive(Debug, Clone, PartialEq)]
struct Step {
    message: String,
    expect: Expect,
}

#[derive(Debug, Clone, PartialEq)]
enum Case {
    Message(Step),
    Script { name: String, turns: Vec<Step> },
}

/// Parse one case line. Errors say which field is wrong.
fn parse_case(line: &str) -> Result<Case, String> {
    let v: Value = serde_json::from_str(line).map_err(|e| e.to_string())?;
    let Value::Object(obj) = v else {
        return Err("a case is a JSON object".into());
    };
    if let Some(turns) = obj.get("turns") {
        let Value::Array(turns) = turns else {
            return Err("`turns` must be a list of turns".into());
        };
        let name = match obj.get("name") {
            Some(Value::String(s)) => s.clone(),
            None => String::new(),
            Some(_) => return Err("`name` must be a string".into()),
        };
        check_expect_keys(&obj, &[])?;
        if turns.is_empty() {
            return Err("`turns` is empty".into());
        }
        let turns = turns
            .iter()
            .enumerate()
            .map(|(i, t)| match t {
                Value::Object(o) => parse_step(o).map_err(|e| format!("turns[{i}]: {e}")),
                _ => Err(format!("turns[{i}]: a turn is a JSON object")),
            })
            .collect::<Result<Vec<_>, _>>()?;
        return Ok(Case::Script { name, turns });
    }
    parse_step(&obj).map(Case::Message)
}

fn check_expect_keys(obj: &Map<String, Value>, allowed: &[&str]) -> Result<(), String> {
    for k in obj.keys() {
        if k.starts_with("expect_") && !allowed.contains(&k.as_str()) {
            return Err(format!(
                "unknown field `{k}` (expected one of {})",
                allowed.join(", ")
            ));
        }
    }
    Ok(())
}

fn parse_step(obj: &Map<String, Value>) -> Result<Step, String> {
    check_expect_keys(obj, EXPECT_FIELDS)?;
    let message = match obj.get("message") {
        Some(Value::String(s)) => s.clone(),
        Some(_) => return Err("`message` must be a string".into()),
        None => return Err("missing field `message`".into()),
    };
    let string = |k: &str| -> Result<Option<String>, String> {
        match obj.get(k) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(_) => Err(format!("`{k}` must be a string")),
        }
    };
    let boolean = |k: &str| -> Result<Option<bool>, String> {
        match obj.get(k) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(_) => Err(format!("`{k}` must be true or false")),
        }
    };
    let contains = match obj.get("expect_contains") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::String(s)) => vec![s.clone()],
        Some(Value::Array(a)) => a
            .iter()
            .map(|x| match x {
                Value::String(s) => Ok(s.clone()),
                _ => Err("`expect_contains` must be a list of strings".to_string()),
            })
            .collect::<Result<_, _>>()?,
        Some(_) => return Err("`expect_contains` must be a list of strings".into()),
    };
    Ok(Step {
        message,
        expect: Expect {
            intent: string("expect_intent")?,
            source: string("expect_source")?,
            handoff: boolean("expect_handoff")?,
            contains,
            asks_order: boolean("expect_asks_order")?,
            silent: boolean("expect_silent")?,
            answered: boolean("expect_answered")?,
        },
    })
}

#[derive(Default, Debug, Clone, Copy, Serialize)]
pub struct Field {
    pub total: usize,
    pub ok: usize,
}

impl Field {
    fn add(&mut self, ok: bool) {
        self.total += 1;
        self.ok += ok as usize;
    }
    pub fn accuracy(&self) -> f64 {
        if self.total == 0 {
            0.0
        } else {
            self.ok as f64 / self.total as f64
        }
    }
}

/// Handoff decisions as a binary classifier ("hand over" is the positive class).
#[derive(Default, Debug, Clone, Copy, Serialize)]
pub struct Confusion {
    pub tp: usize,
    pub fp: usize,
    pub fn_: usize,
    pub tn: usize,
}

impl Confusion {
    pub fn precision(&self) -> f64 {
        ratio(self.tp, self.tp + self.fp)
    }
    pub fn recall(&self) -> f64 {
        ratio(self.tp, self.tp + self.fn_)
    }
}

fn ratio(a: usize, b: usize) -> f64 {
    if b == 0 {
        0.0
    } else {
        a as f64 / b as f64
    }
}

/// Results over a set of checked messages (all of them, or one language's).
#[derive(Default, Debug, Clone, Serialize)]
pub struct Breakdown {
    /// Checked messages (script turns count one each).
    pub cases: usize,
    pub passed: usize,
    pub intent: Field,
    /// Per expected intent: how many of its messages were classified as it.
    pub per_intent: BTreeMap<String, Field>,
    pub handoff: Field,
    pub handoff_confusion: Confusion,
    pub contains: Field,
    /// The expected source is the first of the reply's sources.
    pub source_hit1: Field,
    /// The expected source is among the reply's sources.
    pub source_in_sources: Field,
    /// Among the first three retrieved chunks above `min_score`.
    pub source_hit3: usize,
    pub source_rr: f64,
    pub asks_order: Field,
    pub silent: Field,
    pub answered: Field,
    /// Length of the replies that answered from the knowledge where a fact was expected:
    /// "contains" alone rewards saying more.
    pub reply_words: Lengths,
}

/// Word counts (Chinese: two characters a word), reported as count, median and 90th
/// percentile.
#[derive(Default, Debug, Clone)]
pub struct Lengths(Vec<usize>);

impl Lengths {
    fn add(&mut self, words: usize) {
        self.0.push(words);
    }

    /// (median, 90th percentile), nearest rank; `None` without values.
    pub fn median_p90(&self) -> Option<(usize, usize)> {
        let mut v = self.0.clone();
        v.sort_unstable();
        let at = |q: f64| v[((q * v.len() as f64).ceil() as usize).clamp(1, v.len()) - 1];
        (!v.is_empty()).then(|| (at(0.5), at(0.9)))
    }
}

impl Serialize for Lengths {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let (median, p90) = self.median_p90().unwrap_or((0, 0));
        let mut st = s.serialize_struct("Lengths", 3)?;
        st.serialize_field("count", &self.0.len())?;
        st.serialize_field("median", &median)?;
        st.serialize_field("p90", &p90)?;
        st.end()
    }
}

impl Breakdown {
    pub fn failed(&self) -> usize {
        self.cases - self.passed
    }

    fn render_into(&self, out: &mut String, indent: &str) {
        let line = |out: &mut String, name: &str, f: &Field| {
            if f.total > 0 {
                out.push_str(&format!(
                    "{indent}{name:<10} {:.3}  ({}/{})\n",
                    f.accuracy(),
                    f.ok,
                    f.total
                ));
            }
        };
        out.push_str(&format!("{indent}cases      {}\n", self.cases));
        line(out, "intent", &self.intent);
        if self.intent.total > 0 && self.per_intent.len() > 1 {
            let parts: Vec<String> = self
                .per_intent
                .iter()
                .map(|(k, f)| format!("{k} {:.2}", f.accuracy()))
                .collect();
            out.push_str(&format!("{indent}           {}\n", parts.join("  ")));
        }
        line(out, "handoff", &self.handoff);
        if self.handoff.total > 0 {
            let c = &self.handoff_confusion;
            out.push_str(&format!(
                "{indent}           precision {:.3}  recall {:.3}\n",
                c.precision(),
                c.recall()
            ));
        }
        line(out, "contains", &self.contains);
        if let Some((median, p90)) = self.reply_words.median_p90() {
            out.push_str(&format!(
                "{indent}reply      {median} words median, {p90} at p90  ({} answered)\n",
                self.reply_words.0.len()
            ));
        }
        line(out, "answered", &self.answered);
        if self.source_hit1.total > 0 {
            let n = self.source_hit1.total as f64;
            out.push_str(&format!(
                "{indent}source     in sources {:.3}  hit@1 {:.3}  hit@3 {:.3}  MRR {:.3}  ({} cases)\n",
                self.source_in_sources.accuracy(),
                self.source_hit1.accuracy(),
                self.source_hit3 as f64 / n,
                self.source_rr / n,
                self.source_hit1.total
            ));
        }
        line(out, "asks order", &self.asks_order);
        line(out, "silent", &self.silent);
    }
}

#[derive(Default, Debug, Serialize)]
pub struct EvalReport {
    /// Every checked message.
    #[serde(flatten)]
    pub all: Breakdown,
    /// Per language of the message (`zh` / `en`).
    pub by_language: BTreeMap<String, Breakdown>,
    /// Conversation scripts: passed when every turn passed.
    pub scripts: Field,
    pub problems: Vec<String>,
    pub failures: Vec<String>,
    #[serde(skip)]
    pub verbose: bool,
    /// Script turns checked and passed (the closing line counts whole scripts instead).
    #[serde(skip)]
    script_turns: (usize, usize),
}

impl Deref for EvalReport {
    type Target = Breakdown;
    fn deref(&self) -> &Breakdown {
        &self.all
    }
}

impl EvalReport {
    /// Cases as the closing line counts them: single messages plus whole scripts.
    fn units(&self) -> (usize, usize) {
        let single_cases = self.all.cases - self.script_turns();
        let single_passed = self.all.passed - self.script_turns_passed();
        (
            single_passed + self.scripts.ok,
            single_cases + self.scripts.total,
        )
    }

    fn script_turns(&self) -> usize {
        self.script_turns.0
    }

    fn script_turns_passed(&self) -> usize {
        self.script_turns.1
    }

    pub fn passed_units(&self) -> usize {
        self.units().0
    }

    pub fn failed_units(&self) -> usize {
        let (p, n) = self.units();
        n - p
    }

    pub fn render(&self) -> String {
        let mut out = String::new();
        for p in &self.problems {
            out.push_str(&format!("warning: {p}\n"));
        }
        if self.verbose {
            for f in &self.failures {
                out.push_str(&format!("FAIL {f}\n"));
            }
        }
        self.all.render_into(&mut out, "");
        if self.scripts.total > 0 {
            out.push_str(&format!(
                "scripts    {:.3}  ({}/{})\n",
                self.scripts.accuracy(),
                self.scripts.ok,
                self.scripts.total
            ));
        }
        if self.by_language.len() > 1 {
            for (lang, b) in &self.by_language {
                out.push_str(&format!("[{lang}]\n"));
                b.render_into(&mut out, "  ");
            }
        }
        out.push_str(&format!(
            "{} passed, {} failed\n",
            self.passed_units(),
            self.failed_units()
        ));
        out
    }

    pub fn to_json(&self) -> String {
        let mut v = serde_json::to_value(self).unwrap_or(Value::Null);
        if let Value::Object(o) = &mut v {
            o.insert("passed_total".into(), self.passed_units().into());
            o.insert("failed_total".into(), self.failed_units().into());
        }
        serde_json::to_string_pretty(&v).unwrap_or_default()
    }
}

/// What one checked message contributed: its verdicts, for every breakdown it belongs to.
struct Outcome {
    ok: bool,
    why: Vec<String>,
}

fn check(expect: &Expect, turn: &Turn, b: &mut [&mut Breakdown]) -> Outcome {
    let mut ok = true;
    let mut why = Vec::new();
    let mut each = |f: &mut dyn FnMut(&mut Breakdown)| {
        for x in b.iter_mut() {
            f(x)
        }
    };
    if let Some(want) = &expect.intent {
        let got = turn.intent.intent.as_str();
        let good = got == want;
        each(&mut |x| {
            x.intent.add(good);
            x.per_intent.entry(want.clone()).or_default().add(good);
        });
        if !good {
            why.push(format!("intent {got} (want {want})"));
        }
        ok &= good;
    }
    if let Some(want) = expect.handoff {
        let got = turn.handoff_active;
        let good = got == want;
        each(&mut |x| {
            x.handoff.add(good);
            let c = &mut x.handoff_confusion;
            match (want, got) {
                (true, true) => c.tp += 1,
                (false, true) => c.fp += 1,
                (true, false) => c.fn_ += 1,
                (false, false) => c.tn += 1,
            }
        });
        if !good {
            why.push(format!(
                "handoff {got} (want {want}, reason {:?}, route {})",
                turn.handoff_reason, turn.route
            ));
        }
        ok &= good;
    }
    if let Some(want) = expect.answered {
        let got = !turn.handoff_active && !turn.sources.is_empty();
        let good = got == want;
        each(&mut |x| x.answered.add(good));
        if !good {
            why.push(format!(
                "answered {got} (want {want}, route {}): {:?}",
                turn.route,
                shorten(&turn.reply, 120)
            ));
        }
        ok &= good;
    }
    if !expect.contains.is_empty() {
        let reply = turn.reply.to_lowercase();
        let good = expect
            .contains
            .iter()
            .all(|c| reply.contains(&c.to_lowercase()));
        each(&mut |x| x.contains.add(good));
        if !turn.handoff_active && !turn.sources.is_empty() {
            let words = crate::text::word_count(&turn.reply);
            each(&mut |x| x.reply_words.add(words));
        }
        if !good {
            why.push(format!(
                "reply lacks {:?}: {:?}",
                expect.contains,
                shorten(&turn.reply, 160)
            ));
        }
        ok &= good;
    }
    if let Some(want) = &expect.source {
        let rank = turn.retrieved.iter().position(|s| &s.path == want);
        let first = turn.sources.first().is_some_and(|s| &s.path == want);
        let any = turn.sources.iter().any(|s| &s.path == want);
        each(&mut |x| {
            x.source_hit1.add(first);
            x.source_in_sources.add(any);
            if rank.is_some_and(|k| k < 3) {
                x.source_hit3 += 1;
            }
            if let Some(k) = rank {
                x.source_rr += 1.0 / (k as f64 + 1.0);
            }
        });
        if !any {
            why.push(format!(
                "source {:?} (want {want})",
                turn.sources.first().map(|s| s.path.as_str())
            ));
        }
        ok &= any;
    }
    if let Some(want) = expect.asks_order {
        let good = turn.asks_order == want;
        each(&mut |x| x.asks_order.add(good));
        if !good {
            why.push(format!(
                "asks for the order {} (want {want})",
                turn.asks_order
            ));
        }
        ok &= good;
    }
    if let Some(want) = expect.silent {
        let got = turn.reply.is_empty();
        let good = got == want;
        each(&mut |x| x.silent.add(good));
        if !good {
            why.push(format!("silent {got} (want {want})"));
        }
        ok &= good;
    }
    each(&mut |x| {
        x.cases += 1;
        x.passed += ok as usize;
    });
    Outcome { ok, why }
}

fn shorten(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_string()
    } else {
        let mut t: String = s.chars().take(n).collect();
        t.push('…');
        t
    }
}

fn language(text: &str) -> &'static str {
    if looks_chinese(text) {
        "zh"
    } else {
        "en"
    }
}

/// Run the cases in `path` against `config` (its knowledge ingested into a temporary database).
pub async fn run(mut config: Config, path: &Path, verbose: bool) -> anyhow::Result<EvalReport> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    // Eval never writes to the operator's data dir.
    config.server.data_dir = std::env::temp_dir();
    let db = sled::Config::new().temporary(true).open()?;
    let app = App::with_db(Arc::new(config), db, IngestPolicy::WhenStale).await?;
    let channel = app
        .config
        .channels
        .iter()
        .find(|c| c.kind() == ChannelKind::Web)
        .map(|c| c.name().to_string())
        .unwrap_or_else(|| "eval".into());
    let mut r = EvalReport {
        verbose,
        ..Default::default()
    };
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let where_ = format!("{}:{}", path.display(), i + 1);
        let case = match parse_case(line) {
            Ok(c) => c,
            Err(e) => {
                r.problems.push(format!("{where_}: {e}"));
                continue;
            }
        };
        let session = format!("eval-{}", i + 1);
        let (steps, script_name) = match case {
            Case::Message(s) => (vec![s], None),
            Case::Script { name, turns } => (turns, Some(name)),
        };
        // A script is one customer: its language is its first message's.
        let lang = language(&steps[0].message);
        let mut script_ok = true;
        let mut script_why = Vec::new();
        for (n, step) in steps.iter().enumerate() {
            let turn = app
                .engine
                .handle(terminal_message(
                    &channel,
                    &session,
                    n as u64 + 1,
                    &step.message,
                    app.clock.now_ms(),
                ))
                .await?;
            let mut lang_b = std::mem::take(r.by_language.entry(lang.to_string()).or_default());
            let out = check(&step.expect, &turn, &mut [&mut r.all, &mut lang_b]);
            r.by_language.insert(lang.to_string(), lang_b);
            if script_name.is_some() {
                r.script_turns.0 += 1;
                r.script_turns.1 += out.ok as usize;
            }
            if !out.ok {
                script_ok = false;
                if script_name.is_some() {
                    script_why.push(format!(
                        "turn {} {:?}: {}",
                        n + 1,
                        step.message,
                        out.why.join("; ")
                    ));
                } else {
                    r.failures.push(format!(
                        "{where_}: {:?}: {}",
                        step.message,
                        out.why.join("; ")
                    ));
                }
            }
        }
        if let Some(name) = script_name {
            r.scripts.add(script_ok);
            if !script_ok {
                r.failures.push(format!(
                    "{where_}: script {name:?}: {}",
                    script_why.join(" | ")
                ));
            }
        }
    }
    Ok(r)
}

/// A text message as the terminal and eval send it.
pub fn terminal_message(channel: &str, session: &str, n: u64, text: &str, now_ms: u64) -> Inbound {
    Inbound {
        channel: channel.to_string(),
        kind: ChannelKind::Web,
        conversation: session.to_string(),
        user: UserRef {
            id: session.to_string(),
            name: None,
        },
        id: format!("{session}-{n}"),
        content: ContentKind::Text,
        text: text.to_string(),
        sent_at_ms: now_ms,
        route: Default::default(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notes_are_ignored_and_expect_typos_are_errors() {
        let c =
            parse_case(r#"{"message": "hi", "why": "a note", "note": 3, "expect_handoff": true}"#)
                .unwrap();
        assert_eq!(
            c,
            Case::Message(Step {
                message: "hi".into(),
                expect: Expect {
                    handoff: Some(true),
                    ..Default::default()
                }
            })
        );
        let e = parse_case(r#"{"message": "hi", "expect_handof": true}"#).unwrap_err();
        assert!(e.contains("expect_handof"), "{e}");
        assert!(parse_case(r#"{"why": "no message"}"#)
            .unwrap_err()
            .contains("message"));
        assert!(parse_case(r#"{"message": "x", "expect_handoff": "yes"}"#).is_err());
        assert!(parse_case("[1]").is_err());
    }

    #[test]
    fn reply_lengths_report_median_and_p90() {
        let mut l = Lengths::default();
        assert_eq!(l.median_p90(), None);
        for w in [10, 2, 7, 30, 5, 9, 8, 4, 6, 3] {
            l.add(w);
        }
        assert_eq!(l.median_p90(), Some((6, 10)));
        let json = serde_json::to_value(&l).unwrap();
        assert_eq!(json["count"], 10);
        assert_eq!(json["median"], 6);
        assert_eq!(json["p90"], 10);
    }

    #[test]
    fn scripts_parse_turn_by_turn() {
        let c = parse_case(
            r#"{"name": "s", "turns": [{"message": "a", "expect_asks_order": true}, {"message": "b", "expect_silent": true, "why": "x"}]}"#,
        )
        .unwrap();
        let Case::Script { name, turns } = c else {
            panic!("not a script")
        };
        assert_eq!(name, "s");
        assert_eq!(turns[0].expect.asks_order, Some(true));
        assert_eq!(turns[1].expect.silent, Some(true));
        let e = parse_case(r#"{"name": "s", "turns": [{"message": "a", "expect_silence": true}]}"#)
            .unwrap_err();
        assert!(
            e.starts_with("turns[0]") && e.contains("expect_silence"),
            "{e}"
        );
        assert!(parse_case(r#"{"name": "s", "turns": []}"#).is_err());
    }
}
