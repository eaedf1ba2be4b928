//! Distil the built-in embedder's static word vectors from a local sentence model
//! (multilingual-e5-small): every word of a word list goes through the model alone (no
//! prefix) and its sentence vector becomes the word's vector (as Model2Vec does), then the
//! vectors are centred, reduced by PCA and stored as int8 (src/providers/static_words.rs reads
//! the table).
//!
//! ```text
//! # words.tsv: key<TAB>surface<TAB>information content (−log10 of the word's frequency)
//! cargo run --release --features local-embeddings --example distill_static -- embed MODEL_DIR words.tsv words.f32
//! cargo run --release --features local-embeddings --example distill_static -- pack words.tsv words.f32 DIMS table.bin
//! ```
//! `scripts/distill-static-words.sh` makes words.tsv and runs both steps.

use std::io::{BufRead, Read, Write};
use std::path::Path;

use kefu::providers::local_embed::{LocalEmbedder, Prefixes};
use kefu::providers::static_words;

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    match args.iter().map(String::as_str).collect::<Vec<_>>().as_slice() {
        [_, "embed", model, words, out] => embed(model, words, out),
        [_, "pack", words, vectors, dims, out] => pack(words, vectors, dims.parse()?, out),
        _ => anyhow::bail!(
            "usage: distill_static embed MODEL_DIR words.tsv out.f32 | pack words.tsv words.f32 DIMS table.bin"
        ),
    }
}

fn read_words(path: &str) -> anyhow::Result<Vec<(String, String, f32)>> {
    std::io::BufReader::new(std::fs::File::open(path)?)
        .lines()
        .map(|l| {
            let l = l?;
            let mut f = l.split('\t');
            let (Some(key), Some(surface), Some(ic)) = (f.next(), f.next(), f.next()) else {
                anyhow::bail!("{path}: want key<TAB>surface<TAB>ic: {l}");
            };
            Ok((key.to_string(), surface.to_string(), ic.parse()?))
        })
        .collect()
}

fn embed(model_dir: &str, words: &str, out: &str) -> anyhow::Result<()> {
    let model = LocalEmbedder::open(Path::new(model_dir), 256, &Prefixes::default())?;
    let surfaces: Vec<String> = read_words(words)?.into_iter().map(|w| w.1).collect();
    let mut out = std::io::BufWriter::new(std::fs::File::create(out)?);
    let started = std::time::Instant::now();
    for (i, batch) in surfaces.chunks(512).enumerate() {
        let vectors = model.embed_now(batch, None)?;
        if i == 0 {
            out.write_all(&(surfaces.len() as u32).to_le_bytes())?;
            out.write_all(&(vectors[0].len() as u32).to_le_bytes())?;
        }
        for x in vectors.iter().flatten() {
            out.write_all(&x.to_le_bytes())?;
        }
        if i % 20 == 0 {
            eprintln!(
                "{} / {} in {:?}",
                (i + 1) * 512,
                surfaces.len(),
                started.elapsed()
            );
        }
    }
    out.flush()?;
    Ok(())
}

fn pack(words: &str, vectors: &str, dims: usize, out: &str) -> anyhow::Result<()> {
    let words = read_words(words)?;
    let mut bytes = Vec::new();
    std::fs::File::open(vectors)?.read_to_end(&mut bytes)?;
    let u32_at = |i: usize| u32::from_le_bytes(bytes[i..i + 4].try_into().unwrap()) as usize;
    let (n, dim) = (u32_at(0), u32_at(4));
    anyhow::ensure!(n == words.len(), "{n} vectors for {} words", words.len());
    let mut x: Vec<f64> = bytes[8..]
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes(b.try_into().unwrap()) as f64)
        .collect();
    anyhow::ensure!(x.len() == n * dim, "truncated vector file");
    // Centre each language on its own mean: every vector of a model like e5 shares a large
    // common component, and each language another one; without the second, an English word's
    // nearest neighbours are English words that look like it (teapot → depot, pinot), with
    // it, words of either language that mean something close (teapot → 茶壶, 茶水).
    let is_english = |key: &str| key.bytes().all(|b| b.is_ascii_lowercase());
    for english in [false, true] {
        let rows: Vec<usize> = (0..n)
            .filter(|&i| is_english(&words[i].0) == english)
            .collect();
        let mut mean = vec![0f64; dim];
        for &i in &rows {
            let row = &x[i * dim..(i + 1) * dim];
            mean.iter_mut()
                .zip(row)
                .for_each(|(m, v)| *m += v / rows.len() as f64);
        }
        for &i in &rows {
            let row = &mut x[i * dim..(i + 1) * dim];
            row.iter_mut().zip(&mean).for_each(|(v, m)| *v -= m);
        }
    }
    let components = principal_components(&x, dim, dims);
    let mut rows = Vec::with_capacity(n);
    for ((key, _, ic), row) in words.iter().zip(x.chunks_exact(dim)) {
        let projected: Vec<f32> = components
            .iter()
            .map(|c| c.iter().zip(row).map(|(a, b)| a * b).sum::<f64>() as f32)
            .collect();
        rows.push((key.clone(), *ic, projected));
    }
    let table = static_words::encode(rows).map_err(anyhow::Error::msg)?;
    std::fs::write(out, &table)?;
    eprintln!("{n} words, {dim} → {dims} dims, {} bytes", table.len());
    Ok(())
}

/// The top `k` eigenvectors of the covariance of the rows of `x` (subspace iteration).
fn principal_components(x: &[f64], dim: usize, k: usize) -> Vec<Vec<f64>> {
    let mut cov = vec![0f64; dim * dim];
    for row in x.chunks_exact(dim) {
        for i in 0..dim {
            let ri = row[i];
            let line = &mut cov[i * dim..(i + 1) * dim];
            line.iter_mut().zip(row).for_each(|(c, rj)| *c += ri * rj);
        }
    }
    let mut q: Vec<Vec<f64>> = (0..k)
        .map(|j| {
            (0..dim)
                .map(|i| ((i * 31 + j * 17) % 97) as f64 - 48.0)
                .collect()
        })
        .collect();
    for _ in 0..200 {
        let mut next: Vec<Vec<f64>> = q
            .iter()
            .map(|v| {
                (0..dim)
                    .map(|i| {
                        cov[i * dim..(i + 1) * dim]
                            .iter()
                            .zip(v)
                            .map(|(a, b)| a * b)
                            .sum()
                    })
                    .collect()
            })
            .collect();
        // Gram–Schmidt keeps the columns apart, in order of their eigenvalue.
        for j in 0..k {
            for p in 0..j {
                let d: f64 = next[j].iter().zip(&next[p]).map(|(a, b)| a * b).sum();
                let (head, tail) = next.split_at_mut(j);
                tail[0]
                    .iter_mut()
                    .zip(&head[p])
                    .for_each(|(a, b)| *a -= d * b);
            }
            let norm = next[j].iter().map(|a| a * a).sum::<f64>().sqrt();
            next[j].iter_mut().for_each(|a| *a /= norm);
        }
        q = next;
    }
    q
}
