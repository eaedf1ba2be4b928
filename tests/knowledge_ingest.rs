//! Knowledge index end to end on sled in a temp dir: ingest, restart, incremental updates,
//! bad input, empty knowledge, interrupted ingest, model change.

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use kefu::knowledge::{Hit, Knowledge, RetrievalMode};
use kefu::providers::builtin_embedder::BuiltinEmbedder;
use kefu::providers::{Embedder, ProviderError};

/// Counts embedded texts; fails every call after `fail_after` calls (if set).
struct Counting {
    inner: BuiltinEmbedder,
    texts: AtomicUsize,
    calls: AtomicUsize,
    fail_after: Option<usize>,
}

impl Counting {
    fn new(fail_after: Option<usize>) -> Arc<Self> {
        Arc::new(Self {
            inner: BuiltinEmbedder::new(),
            texts: AtomicUsize::new(0),
            calls: AtomicUsize::new(0),
            fail_after,
        })
    }
}

#[async_trait]
impl Embedder for Counting {
    fn model(&self) -> &str {
        self.inner.model()
    }
    fn dim(&self) -> usize {
        self.inner.dim()
    }
    fn dense_dims(&self) -> usize {
        self.inner.dense_dims()
    }
    async fn embed(&self, texts: &[String]) -> Result<Vec<Vec<f32>>, ProviderError> {
        let call = self.calls.fetch_add(1, Ordering::SeqCst);
        if self.fail_after.is_some_and(|n| call >= n) {
            return Err(ProviderError::Unavailable("down on cue".into()));
        }
        self.texts.fetch_add(texts.len(), Ordering::SeqCst);
        self.inner.embed(texts).await
    }
}

fn write(root: &Path, rel: &str, text: &str) {
    let p = root.join(rel);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, text).unwrap();
}

fn knowledge_tree(root: &Path) {
    write(
        root,
        "policies/refund.md",
        "---\ntitle: Refund policy\ntags: [refund]\n---\n# Refunds\n\nYou can return any unused item \
         within 30 days for a full refund.\n\n## How to ask\n\nOpen your order page and press Refund.\n",
    );
    write(
        root,
        "guides/shipping.md",
        "# Shipping\n\nOrders ship within 2 business days. International delivery takes 7 to 14 days.\n",
    );
    write(
        root,
        "faq/account.jsonl",
        concat!(
            r#"{"id": "reset", "question": "How do I reset my password?", "answer": "Use the Forgot password link on the sign-in page.", "alternates": ["I forgot my password", "cannot log in"]}"#,
            "\n",
            r#"{"id": "delete", "question": "How do I delete my account?", "answer": "Write to support and we remove it within 7 days."}"#,
            "\n"
        ),
    );
    write(
        root,
        "faq/billing.csv",
        "question,answer,id,alternates\nWhich payment methods do you accept?,Cards and bank transfer.,pay,can I pay by card|payment options\n",
    );
}

/// A fresh in-memory index with the built-in embedder, `root` ingested.
async fn ingested_builtin(root: &Path) -> Knowledge {
    let db = sled::Config::new().temporary(true).open().unwrap();
    let kb = Knowledge::open(&db, Arc::new(BuiltinEmbedder::new())).unwrap();
    kb.ingest(&[root.to_path_buf()]).await.unwrap();
    kb
}

fn sources(hits: &[Hit]) -> Vec<String> {
    hits.iter()
        .map(|h| format!("{} {:.4}", h.source, h.score))
        .collect()
}

const QUERIES: [&str; 5] = [
    "I forgot my password",
    "refund within 30 days",
    "how long does international delivery take",
    "can I pay with a card",
    "remove my account",
];

async fn answers(kb: &Knowledge) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    for q in QUERIES {
        for mode in [
            RetrievalMode::Hybrid,
            RetrievalMode::Vector,
            RetrievalMode::Lexical,
        ] {
            out.push(sources(&kb.search(q, 3, mode).await.unwrap()));
        }
    }
    out
}

#[tokio::test]
async fn ingest_search_restart_gives_identical_results() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("knowledge");
    knowledge_tree(&root);
    let db_path = dir.path().join("db");
    let before = {
        let db = sled::open(&db_path).unwrap();
        let kb = Knowledge::open(&db, Arc::new(BuiltinEmbedder::new())).unwrap();
        let report = kb.ingest(std::slice::from_ref(&root)).await.unwrap();
        assert_eq!(report.files_seen, 4);
        assert_eq!(report.files_changed, 4);
        assert!(report.problems.is_empty(), "{:?}", report.problems);
        assert_eq!(report.chunks, kb.chunk_count());
        assert_eq!(kb.chunk_count(), 2 + 1 + 2 + 1);
        assert!(!kb.is_stale(std::slice::from_ref(&root)).unwrap());

        let hits = kb
            .search("I forgot my password", 3, RetrievalMode::Hybrid)
            .await
            .unwrap();
        assert_eq!(hits[0].source, "faq/account.jsonl#reset");
        assert_eq!(hits[0].category, "faq");
        assert_eq!(hits[0].title, "How do I reset my password?");
        assert!(hits[0].score > 0.75, "{}", hits[0].score);
        let hits = kb
            .search("how do I ask for a refund", 3, RetrievalMode::Hybrid)
            .await
            .unwrap();
        assert_eq!(hits[0].source, "policies/refund.md");
        assert_eq!(hits[0].title, "Refund policy");
        assert_eq!(hits[0].category, "policies");
        assert_eq!(hits[0].heading_path, ["Refunds", "How to ask"]);
        let unrelated = kb
            .search("what is the capital of peru", 3, RetrievalMode::Hybrid)
            .await
            .unwrap();
        assert!(
            unrelated.iter().all(|h| h.score < 0.5),
            "{:?}",
            sources(&unrelated)
        );
        answers(&kb).await
    };
    let db = sled::open(&db_path).unwrap();
    let kb = Knowledge::open(&db, Arc::new(BuiltinEmbedder::new())).unwrap();
    assert_eq!(answers(&kb).await, before);
}

#[tokio::test]
async fn incremental_ingest_embeds_only_changed_files_and_drops_deleted_ones() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("knowledge");
    knowledge_tree(&root);
    let db = sled::Config::new().temporary(true).open().unwrap();
    let embedder = Counting::new(None);
    let kb = Knowledge::open(&db, embedder.clone()).unwrap();
    kb.ingest(std::slice::from_ref(&root)).await.unwrap();
    let first = embedder.texts.load(Ordering::SeqCst);
    assert!(first > 0);

    // Nothing changed: nothing embedded.
    let report = kb.ingest(std::slice::from_ref(&root)).await.unwrap();
    assert_eq!(
        (
            report.files_seen,
            report.files_changed,
            report.files_removed
        ),
        (4, 0, 0)
    );
    assert_eq!(embedder.texts.load(Ordering::SeqCst), first);

    // One file changed: only its units (heading line + body for one section) are embedded.
    write(
        &root,
        "guides/shipping.md",
        "# Shipping\n\nOrders ship the same day by express courier.\n",
    );
    assert!(kb.is_stale(std::slice::from_ref(&root)).unwrap());
    let report = kb.ingest(std::slice::from_ref(&root)).await.unwrap();
    assert_eq!((report.files_changed, report.files_removed), (1, 0));
    assert_eq!(embedder.texts.load(Ordering::SeqCst) - first, 2);
    let hits = kb
        .search("express courier", 1, RetrievalMode::Lexical)
        .await
        .unwrap();
    assert!(hits[0].text.contains("same day"));
    let old = kb
        .search("international delivery 14 days", 5, RetrievalMode::Hybrid)
        .await
        .unwrap();
    assert!(old.iter().all(|h| !h.text.contains("International")));

    // A deleted file leaves the index.
    std::fs::remove_file(root.join("faq/account.jsonl")).unwrap();
    let report = kb.ingest(std::slice::from_ref(&root)).await.unwrap();
    assert_eq!((report.files_seen, report.files_removed), (3, 1));
    assert_eq!(kb.chunk_count(), 4);
    let hits = kb
        .search("reset my password", 5, RetrievalMode::Hybrid)
        .await
        .unwrap();
    assert!(hits
        .iter()
        .all(|h| !h.source.starts_with("faq/account.jsonl")));
    assert!(!kb.is_stale(std::slice::from_ref(&root)).unwrap());
}

#[tokio::test]
async fn an_faq_answer_is_found_by_its_words_and_not_embedded() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("knowledge");
    write(
        &root,
        "faq/care.jsonl",
        r#"{"id": "kettle-scale", "question": "How do I descale the kettle?", "alternates": ["kettle has white spots", "limescale in my kettle"], "answer": "Boil a solution of citric acid, let it stand for twenty minutes, then rinse twice."}
"#,
    );
    let db = sled::Config::new().temporary(true).open().unwrap();
    let embedder = Counting::new(None);
    let kb = Knowledge::open(&db, embedder.clone()).unwrap();
    kb.ingest(std::slice::from_ref(&root)).await.unwrap();
    // The question, two alternates and their pool; the answer is searched by its words.
    assert_eq!(embedder.texts.load(Ordering::SeqCst), 4);
    for mode in [RetrievalMode::Lexical, RetrievalMode::Hybrid] {
        let hits = kb.search("citric acid", 1, mode).await.unwrap();
        assert_eq!(hits[0].source, "faq/care.jsonl#kettle-scale", "{mode:?}");
    }
    // And after a restart, from what was stored.
    drop(kb);
    let kb = Knowledge::open(&db, embedder).unwrap();
    let hits = kb
        .search("descale kettle", 1, RetrievalMode::Vector)
        .await
        .unwrap();
    assert_eq!(hits[0].source, "faq/care.jsonl#kettle-scale");
}

#[tokio::test]
async fn bad_lines_are_reported_with_their_line_and_the_rest_ingested() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_path_buf();
    write(
        &root,
        "faq/mixed.jsonl",
        "{\"id\":\"a\",\"question\":\"Where is my parcel?\",\"answer\":\"Track it in the app.\"}\n\
         {\"id\": broken\n\
         {\"question\":\"Do you ship abroad?\",\"answer\":\"Yes, to 40 countries.\"}\n",
    );
    write(&root, "broken.md", "---\ntitle: never closed\nbody");
    let db = sled::Config::new().temporary(true).open().unwrap();
    let kb = Knowledge::open(&db, Arc::new(BuiltinEmbedder::new())).unwrap();
    let report = kb.ingest(std::slice::from_ref(&root)).await.unwrap();
    assert!(
        report
            .problems
            .iter()
            .any(|p| p.starts_with("faq/mixed.jsonl:2: bad JSON")),
        "{:?}",
        report.problems
    );
    assert!(
        report
            .problems
            .iter()
            .any(|p| p.starts_with("broken.md:1: front matter")),
        "{:?}",
        report.problems
    );
    assert_eq!(kb.chunk_count(), 3);
    let hits = kb
        .search("do you ship abroad", 1, RetrievalMode::Hybrid)
        .await
        .unwrap();
    assert_eq!(hits[0].source, "faq/mixed.jsonl#3");
    // Unchanged files report their problems again.
    let again = kb.ingest(&[root]).await.unwrap();
    assert_eq!(again.problems, report.problems);
}

#[tokio::test]
async fn empty_knowledge_warns_and_finds_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let db = sled::Config::new().temporary(true).open().unwrap();
    let kb = Knowledge::open(&db, Arc::new(BuiltinEmbedder::new())).unwrap();
    assert!(kb
        .search("anything", 3, RetrievalMode::Hybrid)
        .await
        .unwrap()
        .is_empty());
    let report = kb.ingest(&[dir.path().to_path_buf()]).await.unwrap();
    assert_eq!(report.files_seen, 0);
    assert_eq!(report.problems.len(), 1);
    assert!(
        report.problems[0].contains("no knowledge files"),
        "{:?}",
        report.problems
    );
    assert!(kb
        .search("anything", 3, RetrievalMode::Hybrid)
        .await
        .unwrap()
        .is_empty());
    let missing = kb.ingest(&[dir.path().join("nope")]).await.unwrap();
    assert!(
        missing.problems[0].contains("cannot read"),
        "{:?}",
        missing.problems
    );
}

#[tokio::test]
async fn interrupted_ingest_leaves_the_previous_index_answering() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("knowledge");
    knowledge_tree(&root);
    let db_path = dir.path().join("db");
    let before = {
        let db = sled::open(&db_path).unwrap();
        let kb = Knowledge::open(&db, Arc::new(BuiltinEmbedder::new())).unwrap();
        kb.ingest(std::slice::from_ref(&root)).await.unwrap();
        answers(&kb).await
    };
    // Change two files and add one; the embedder dies after its first call.
    write(
        &root,
        "guides/shipping.md",
        "# Shipping\n\nWe ship by drone now.\n",
    );
    write(
        &root,
        "policies/refund.md",
        "# Refunds\n\nNo refunds at all.\n",
    );
    write(
        &root,
        "faq/new.jsonl",
        "{\"id\":\"x\",\"question\":\"New?\",\"answer\":\"Yes.\"}\n",
    );
    {
        let db = sled::open(&db_path).unwrap();
        let kb = Knowledge::open(&db, Counting::new(Some(1))).unwrap();
        let err = kb.ingest(std::slice::from_ref(&root)).await.unwrap_err();
        assert!(err.to_string().contains("down on cue"), "{err:#}");
        // The live snapshot is unchanged; with the embedder down, every mode answers lexically.
        let lexical: Vec<_> = before
            .chunks(3)
            .flat_map(|m| vec![m[2].clone(); 3])
            .collect();
        assert_eq!(answers(&kb).await, lexical);
    }
    // After a restart, still the previous generation.
    let db = sled::open(&db_path).unwrap();
    let kb = Knowledge::open(&db, Arc::new(BuiltinEmbedder::new())).unwrap();
    assert_eq!(answers(&kb).await, before);
    assert!(kb.is_stale(std::slice::from_ref(&root)).unwrap());
    // And a later ingest completes the job.
    let report = kb.ingest(std::slice::from_ref(&root)).await.unwrap();
    assert_eq!(report.files_changed, 3);
    let hits = kb.search("drone", 1, RetrievalMode::Hybrid).await.unwrap();
    assert!(hits[0].text.contains("drone"));
}

#[tokio::test]
async fn another_model_rebuilds_everything() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("knowledge");
    knowledge_tree(&root);
    let db = sled::Config::new().temporary(true).open().unwrap();
    let kb = Knowledge::open(&db, Arc::new(BuiltinEmbedder::new())).unwrap();
    kb.ingest(std::slice::from_ref(&root)).await.unwrap();
    drop(kb);
    let kb = Knowledge::open(&db, Arc::new(BuiltinEmbedder::with_dim(256))).unwrap();
    // Until re-ingested: lexical answers, no mixed vectors.
    assert!(kb.is_stale(std::slice::from_ref(&root)).unwrap());
    let hits = kb
        .search("forgot my password", 1, RetrievalMode::Vector)
        .await
        .unwrap();
    assert_eq!(hits[0].source, "faq/account.jsonl#reset");
    let report = kb.ingest(std::slice::from_ref(&root)).await.unwrap();
    assert_eq!(report.files_changed, 4);
    assert!(
        report
            .problems
            .iter()
            .any(|p| p.contains("embedding model changed")),
        "{:?}",
        report.problems
    );
    assert!(!kb.is_stale(&[root]).unwrap());
}

/// Same small FAQ in English and Chinese, paraphrased queries: both languages retrieve.
#[tokio::test]
async fn chinese_retrieves_as_well_as_english() {
    let faq: [(&str, &str, &str, &str); 6] = [
        (
            "refund",
            "How do I get a refund?",
            "如何申请退款？",
            "我想把钱退回来",
        ),
        (
            "password",
            "I forgot my password",
            "忘记密码怎么办？",
            "登录密码想不起来了",
        ),
        (
            "shipping",
            "When will my order ship?",
            "订单什么时候发货？",
            "我买的东西几时发出",
        ),
        (
            "invoice",
            "How can I get an invoice?",
            "怎么开发票？",
            "需要开具发票",
        ),
        (
            "cancel",
            "How do I cancel my order?",
            "怎么取消订单？",
            "订单不想要了，取消",
        ),
        (
            "address",
            "How do I change the delivery address?",
            "如何修改收货地址？",
            "收货地址填错了要改",
        ),
    ];
    let en_queries = [
        ("refund", "I want my money back"),
        ("password", "can't remember my password"),
        ("shipping", "when does my order leave the warehouse"),
        ("invoice", "I need an invoice for my purchase"),
        ("cancel", "please cancel the order"),
        ("address", "wrong delivery address, change it"),
    ];
    let zh_queries = [
        ("refund", "我要退款"),
        ("password", "密码忘了"),
        ("shipping", "什么时候能发货"),
        ("invoice", "可以给我开发票吗"),
        ("cancel", "帮我取消这个订单"),
        ("address", "我想改一下收货地址"),
    ];
    let dir = tempfile::tempdir().unwrap();
    let mut en = String::new();
    let mut zh = String::new();
    for (id, q_en, q_zh, alt_zh) in faq {
        en += &format!("{{\"id\":\"{id}\",\"question\":\"{q_en}\",\"answer\":\"About {id}.\"}}\n");
        zh += &format!("{{\"id\":\"{id}\",\"question\":\"{q_zh}\",\"answer\":\"关于{id}。\",\"alternates\":[\"{alt_zh}\"]}}\n");
    }
    write(dir.path(), "en/faq/en.jsonl", &en);
    write(dir.path(), "zh/faq/zh.jsonl", &zh);
    let mut rates = Vec::new();
    for (lang, queries) in [("en", en_queries), ("zh", zh_queries)] {
        let kb = ingested_builtin(&dir.path().join(lang)).await;
        let mut ok = 0;
        for (id, q) in queries {
            let hits = kb.search(q, 1, RetrievalMode::Hybrid).await.unwrap();
            ok += usize::from(
                hits.first()
                    .is_some_and(|h| h.source == format!("faq/{lang}.jsonl#{id}")),
            );
        }
        rates.push(ok);
    }
    assert!(
        rates[0] >= 5 && rates[1] >= 5,
        "en {} zh {} of 6",
        rates[0],
        rates[1]
    );
}

#[tokio::test]
async fn a_section_that_points_to_another_page_brings_that_page_along() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("kb");
    write(
        &root,
        "product/bikes.md",
        "# Bicycles\n\n## City bike\n\nThe city bike has 7 gears and a steel frame.\n\n\
         ## Bikes delivered with a bent wheel\n\nWhat to do about a bike that arrives with a \
         bent wheel is explained in Claims and repairs policy.\n",
    );
    write(
        &root,
        "policies/claims.md",
        "# Claims and repairs policy\n\n## Damaged on delivery\n\nReport a bike damaged on \
         delivery within 5 days and we repair it for free.\n\n## Wear and tear\n\nBrake pads \
         and tyres wear out and are not covered.\n",
    );
    write(
        &root,
        "policies/privacy.md",
        "# Privacy notice\n\n## What we keep\n\nWe keep your address for deliveries.\n",
    );
    let kb = ingested_builtin(&root).await;
    let hits = kb
        .search(
            "my bike arrived with a bent wheel",
            3,
            RetrievalMode::Hybrid,
        )
        .await
        .unwrap();
    let found = sources(&hits);
    assert_eq!(hits[0].source, "product/bikes.md", "{found:?}");
    assert_eq!(
        hits[1].source, "policies/claims.md",
        "the page it names: {found:?}"
    );
    assert_eq!(hits[1].heading_path.last().unwrap(), "Damaged on delivery");
    assert_eq!(hits[1].score, hits[0].score);
}

#[tokio::test]
async fn a_pointer_below_the_first_hit_brings_the_section_under_its_heading() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("kb");
    write(
        &root,
        "product/bikes.md",
        "# Bicycles\n\n## Ridgeback trail bike\n\nThe Ridgeback trail bike has a carbon frame, \
         12 gears and a 29-inch front wheel.\n\n## Bent wheel on arrival\n\nWhat to do about a \
         bike that arrives with a bent wheel is explained in Claims and repairs policy.\n",
    );
    write(
        &root,
        "policies/claims.md",
        "# Claims and repairs policy\n\n## Bent wheel on arrival\n\nReport it within 5 days \
         with two photos and we send a new wheel.\n\n## Wheels and frames not covered\n\nA \
         front wheel or frame bent in a crash after delivery is not covered.\n",
    );
    let kb = ingested_builtin(&root).await;
    let hits = kb
        .search(
            "my Ridgeback trail bike came with a bent front wheel",
            4,
            RetrievalMode::Hybrid,
        )
        .await
        .unwrap();
    let found: Vec<(String, String)> = hits
        .iter()
        .map(|h| {
            (
                h.source.clone(),
                h.heading_path.last().cloned().unwrap_or_default(),
            )
        })
        .collect();
    let pointer = found
        .iter()
        .position(|(s, h)| s == "product/bikes.md" && h == "Bent wheel on arrival")
        .unwrap_or_else(|| panic!("{found:?}"));
    assert!(pointer > 0, "the product section comes first: {found:?}");
    // The policy's section under the pointer's heading, not the one sharing most words.
    assert_eq!(
        found[pointer + 1],
        (
            "policies/claims.md".to_string(),
            "Bent wheel on arrival".to_string()
        ),
        "{found:?}"
    );
    assert_eq!(hits[pointer + 1].score, hits[pointer].score);
}
