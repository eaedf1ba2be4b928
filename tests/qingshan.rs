//! Floors measured on a help centre the lexicons were not written beside: qingshan (a
//! bilingual tea shop, CC0, a copy of `../shared/data/qingshan/` in `tests/data/qingshan/`),
//! with the set's own `kefu.toml`. They guard against regressions; the targets of issue 14
//! (intents ≥ 0.85 with each intent ≥ 0.75, handoff ≥ 0.90 with precision and recall ≥ 0.85,
//! every conversation) are tracked in the notes with odd / even halves reported apart.

use std::path::{Path, PathBuf};

use kefu::config;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/qingshan")
}

fn eval(cases: &str) -> kefu::eval::EvalReport {
    let text = std::fs::read_to_string(root().join("kefu.toml")).unwrap();
    let mut cfg = config::parse(&text, "kefu.toml", &|_| None).unwrap();
    cfg.knowledge.paths = vec![root().join("knowledge")];
    let rt = tokio::runtime::Runtime::new().unwrap();
    let r = rt
        .block_on(kefu::eval::run(
            cfg,
            &root().join("cases").join(cases),
            true,
        ))
        .unwrap();
    println!("{cases}:\n{}", r.render());
    r
}

#[test]
fn intents_on_an_unseen_help_centre() {
    let r = eval("intents.jsonl");
    // Measured 0.956 (both halves 0.956).
    assert!(
        r.intent.accuracy() >= 0.9,
        "intent {:.3}",
        r.intent.accuracy()
    );
    for (intent, f) in &r.per_intent {
        // Measured: complaint 0.80 the lowest.
        assert!(f.accuracy() >= 0.7, "{intent}: {:.3}", f.accuracy());
    }
}

#[test]
fn handoffs_on_an_unseen_help_centre() {
    let r = eval("handoff.jsonl");
    // Measured 0.983 (precision 0.968, recall 1.0; odd half 0.967, even 1.000): "the four
    // seasons box was a hit with my family" is handed over as no_knowledge.
    assert!(
        r.handoff.accuracy() >= 0.9,
        "handoff {:.3}",
        r.handoff.accuracy()
    );
    let c = &r.handoff_confusion;
    assert!(c.precision() >= 0.85, "precision {:.3}", c.precision());
    assert!(c.recall() >= 0.85, "recall {:.3}", c.recall());
}

#[test]
fn answers_and_conversations_on_an_unseen_help_centre() {
    let r = eval("answers.jsonl");
    // Measured: contains 0.808, expected source first 0.825 (zh 0.771 / 0.800, en 0.860 /
    // 0.860; halves in docs/calibration.md).
    assert!(
        r.contains.accuracy() >= 0.7,
        "contains {:.3}",
        r.contains.accuracy()
    );
    assert!(
        r.source_hit1.accuracy() >= 0.75,
        "hit@1 {:.3}",
        r.source_hit1.accuracy()
    );
    let r = eval("conversations.jsonl");
    // Measured 12 of 15 scripts; the misses are answers (wrong or no source), not flows.
    assert!(
        r.scripts.ok >= 9,
        "{} of {} conversations",
        r.scripts.ok,
        r.scripts.total
    );
}
