//! `kefu eval CASES.jsonl`: run each case through the same engine path as live traffic
//! (a fresh conversation per case, a temporary database) and report per-field accuracy.

use std::path::Path;
use std::sync::Arc;

use adapters::{ChannelKind, ContentKind, Inbound, UserRef};
use anyhow::Context;
use serde::Deserialize;

use crate::app::{App, IngestPolicy};
use crate::config::Config;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Case {
    message: String,
    #[serde(default)]
    expect_intent: Option<String>,
    #[serde(default)]
    expect_source: Option<String>,
    #[serde(default)]
    expect_handoff: Option<bool>,
    #[serde(default)]
    expect_contains: Vec<String>,
}

#[derive(Default, Debug)]
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

#[derive(Default, Debug)]
pub struct EvalReport {
    pub cases: usize,
    pub passed: usize,
    pub intent: Field,
    pub handoff: Field,
    pub contains: Field,
    pub source_hit1: Field,
    pub source_hit3: usize,
    pub source_rr: f64,
    pub problems: Vec<String>,
    pub failures: Vec<String>,
    pub verbose: bool,
}

impl EvalReport {
    pub fn failed(&self) -> usize {
        self.cases - self.passed
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
        let line = |name: &str, f: &Field| {
            if f.total == 0 {
                format!("{name:<10} -\n")
            } else {
                format!("{name:<10} {:.3}  ({}/{})\n", f.accuracy(), f.ok, f.total)
            }
        };
        out.push_str(&format!("cases      {}\n", self.cases));
        out.push_str(&line("intent", &self.intent));
        out.push_str(&line("handoff", &self.handoff));
        out.push_str(&line("contains", &self.contains));
        if self.source_hit1.total > 0 {
            let n = self.source_hit1.total as f64;
            out.push_str(&format!(
                "source     hit@1 {:.3}  hit@3 {:.3}  MRR {:.3}  ({} cases)\n",
                self.source_hit1.accuracy(),
                self.source_hit3 as f64 / n,
                self.source_rr / n,
                self.source_hit1.total
            ));
        } else {
            out.push_str("source     -\n");
        }
        out.push_str(&format!(
            "{} passed, {} failed\n",
            self.passed,
            self.failed()
        ));
        out
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
        let case: Case = match serde_json::from_str(line) {
            Ok(c) => c,
            Err(e) => {
                r.problems
                    .push(format!("{}:{}: {e}", path.display(), i + 1));
                continue;
            }
        };
        let session = format!("eval-{}", i + 1);
        let turn = app
            .engine
            .handle(terminal_message(
                &channel,
                &session,
                1,
                &case.message,
                app.clock.now_ms(),
            ))
            .await?;
        let mut ok = true;
        let mut why = Vec::new();
        if let Some(want) = &case.expect_intent {
            let good = turn.intent.intent.as_str() == want;
            r.intent.add(good);
            if !good {
                why.push(format!(
                    "intent {} (want {want})",
                    turn.intent.intent.as_str()
                ));
            }
            ok &= good;
        }
        if let Some(want) = case.expect_handoff {
            let good = turn.handoff_active == want;
            r.handoff.add(good);
            if !good {
                why.push(format!(
                    "handoff {} (want {want}, reason {:?})",
                    turn.handoff_active, turn.handoff_reason
                ));
            }
            ok &= good;
        }
        if !case.expect_contains.is_empty() {
            let reply = turn.reply.to_lowercase();
            let good = case
                .expect_contains
                .iter()
                .all(|c| reply.contains(&c.to_lowercase()));
            r.contains.add(good);
            if !good {
                why.push(format!("reply lacks {:?}", case.expect_contains));
            }
            ok &= good;
        }
        if let Some(want) = &case.expect_source {
            let rank = turn.retrieved.iter().position(|s| &s.path == want);
            let good = turn.sources.first().is_some_and(|s| &s.path == want);
            r.source_hit1.add(good);
            if rank.is_some_and(|k| k < 3) {
                r.source_hit3 += 1;
            }
            if let Some(k) = rank {
                r.source_rr += 1.0 / (k as f64 + 1.0);
            }
            if !good {
                why.push(format!(
                    "source {:?} (want {want})",
                    turn.sources.first().map(|s| s.path.as_str())
                ));
            }
            ok &= good;
        }
        r.cases += 1;
        if ok {
            r.passed += 1;
        } else {
            r.failures.push(format!(
                "{}:{}: {:?}: {}",
                path.display(),
                i + 1,
                case.message,
                why.join("; ")
            ));
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
