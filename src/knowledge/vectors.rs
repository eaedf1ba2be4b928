//! Vectors in memory and on disk: L2-normalized, quantized to `i8` with one scale per vector
//! (a quarter of the f32 size, cosine error ≈ 1e-3), scanned brute force.
//!
//! In memory a [`Matrix`] is dimension-major, so a scan touches only the dimensions where the
//! (quantized) query is non-zero: the built-in embedder's queries are sparse (≈50–200 of 1024
//! dimensions), which makes the scan 5–10× cheaper than a row-by-row dot product. Mostly-zero
//! rows are kept as lists of their non-zero codes per dimension; dense rows (a sentence model)
//! in blocks of [`BLOCK`] rows, where a dense query costs what a plain scan does. Past
//! [`PARALLEL_ROWS`] rows, the rows are split across the available cores.

/// Rows per block: the block's i32 accumulators (16 KiB) stay in L1 and each column is one
/// 4 KiB page read in a stream (measured: 2× faster than 1024 rows, 4× than 256).
const BLOCK: usize = 4096;
/// Rows above which a scan uses more than one thread.
const PARALLEL_ROWS: usize = 65_536;

/// Normalize and quantize one vector: (codes, scale) with `v[i]/|v| ≈ codes[i] * scale`.
pub fn quantize(v: &[f32]) -> (Vec<i8>, f32) {
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    let max = v.iter().fold(0f32, |m, x| m.max(x.abs()));
    if norm == 0.0 || max == 0.0 || !norm.is_finite() {
        return (vec![0; v.len()], 0.0);
    }
    let scale = max / 127.0;
    let codes = v
        .iter()
        .map(|x| (x / scale).round().clamp(-127.0, 127.0) as i8)
        .collect();
    (codes, scale / norm)
}

/// A query quantized as the rows are: its non-zero dimensions with their codes (only they
/// contribute to a scan), and its scale.
fn query_codes(query: &[f32]) -> (Vec<(usize, i16)>, f32) {
    let (q, qscale) = quantize(query);
    let nz = q
        .iter()
        .enumerate()
        .filter(|(_, c)| **c != 0)
        .map(|(d, c)| (d, i16::from(*c)))
        .collect();
    (nz, qscale)
}

/// Encode one quantized vector for sled: scale (f32 LE) then the codes.
pub fn encode(codes: &[i8], scale: f32) -> Vec<u8> {
    let mut out = Vec::with_capacity(4 + codes.len());
    out.extend_from_slice(&scale.to_le_bytes());
    out.extend(codes.iter().map(|c| *c as u8));
    out
}

/// Decode [`encode`]'s bytes; `None` if the length is not `4 + dim`.
pub fn decode(bytes: &[u8], dim: usize) -> Option<(&[u8], f32)> {
    if bytes.len() != 4 + dim {
        return None;
    }
    let scale = f32::from_le_bytes(bytes[..4].try_into().ok()?);
    Some((&bytes[4..], scale))
}

/// Quantized vectors, scanned dimension by dimension. Two layouts, chosen by what the
/// vectors are like: mostly-zero vectors (the built-in embedder fills ~4–20% of its 1024
/// dimensions) keep only their non-zero codes, per dimension as (row, code) lists, 3 bytes
/// each instead of 1 byte for every dimension; dense ones (a sentence model) are kept whole in
/// blocks. A matrix starts sparse and turns dense for good once more than one code in
/// [`SPARSE_UP_TO`] is non-zero.
///
/// An embedder whose vectors end in dimensions every text fills (the built-in embedder's word
/// vectors, [`crate::providers::Embedder::dense_dims`]) has those kept in dense blocks beside
/// the sparse lists: as lists they would cost 3 bytes a code instead of 1, and counted in the
/// density they would turn an English index dense (1 byte for every dimension of every row).
#[derive(Debug, Default)]
pub struct Matrix {
    dim: usize,
    /// Trailing dimensions kept dense whatever the layout of the others.
    tail: usize,
    scales: Vec<f32>,
    layout: Layout,
}

#[derive(Debug)]
enum Layout {
    /// Rows in segments of [`SEGMENT`]; in each, per dimension, the rows where it is
    /// non-zero (ascending, as offsets in the segment) and their codes.
    Sparse {
        segments: Vec<Segment>,
        nonzero: usize,
        /// The tail dimensions: `tail_blocks[b][t * BLOCK + r]` = tail dimension `t` of row
        /// `b * BLOCK + r`.
        tail_blocks: Vec<Vec<i8>>,
    },
    /// `blocks[b][d * BLOCK + r]` = dimension `d` of row `b * BLOCK + r` (0-padded).
    Dense { blocks: Vec<Vec<i8>> },
}

impl Default for Layout {
    fn default() -> Self {
        Layout::Sparse {
            segments: Vec::new(),
            nonzero: 0,
            tail_blocks: Vec::new(),
        }
    }
}

/// Rows per sparse segment: a row is a `u16` offset in its segment.
const SEGMENT: usize = 1 << 16;

#[derive(Debug)]
struct Segment {
    rows: Vec<Vec<u16>>,
    codes: Vec<Vec<i8>>,
}

impl Segment {
    fn new(dim: usize) -> Self {
        Segment {
            rows: vec![Vec::new(); dim],
            codes: vec![Vec::new(); dim],
        }
    }
}

/// The sparse layout is kept while at most one code in this many is non-zero. Each takes 3
/// bytes (a `u16` row offset and an `i8` code), so it is smaller up to a third; but a scan
/// adds its codes one by one where the dense layout adds 8–16 lanes at once, and measured on
/// 10k synthetic FAQ entries with a quarter of the codes non-zero, a vector search took
/// 713 µs sparse against 384 µs dense. Chinese help-centre text fills ~4–7% of the built-in
/// embedder's dimensions, English FAQ text 1/6–1/5: on 12k English FAQ entries (public
/// customer questions and answers) sparse took `kefu serve` from 168 to 149 MB resident, and
/// a vector search from ~1.44 to ~1.65 ms p50 (hybrid ~2.3 → ~2.4 ms). The limit was one in
/// eight before, which kept such text dense; one in four made the benchmark's synthetic
/// words (just under a quarter) sparse too, and its vector search 2× slower.
const SPARSE_UP_TO: usize = 5;
/// Rows seen before the layout is judged (the first few texts may be unusually short).
const JUDGE_AFTER: usize = 64;

impl Matrix {
    pub fn new(dim: usize) -> Self {
        Self::with_dense_tail(dim, 0)
    }

    /// A matrix whose last `tail` dimensions are always kept dense (see [`Matrix`]).
    pub fn with_dense_tail(dim: usize, tail: usize) -> Self {
        Self {
            dim,
            tail: tail.min(dim),
            ..Self::default()
        }
    }

    /// Dimensions kept as sparse lists while the layout is sparse.
    fn head(&self) -> usize {
        self.dim - self.tail
    }

    pub fn dim(&self) -> usize {
        self.dim
    }

    pub fn rows(&self) -> usize {
        self.scales.len()
    }

    /// Whether the rows are kept as non-zero codes only (see [`Matrix`]).
    pub fn is_sparse(&self) -> bool {
        matches!(self.layout, Layout::Sparse { .. })
    }

    /// Append one row of codes (as stored: `i8` reinterpreted as `u8`).
    pub fn push(&mut self, codes: &[u8], scale: f32) {
        debug_assert_eq!(codes.len(), self.dim);
        let row = self.rows();
        let head = self.head();
        self.scales.push(scale);
        match &mut self.layout {
            Layout::Sparse {
                segments,
                nonzero,
                tail_blocks,
            } => {
                if row.is_multiple_of(SEGMENT) {
                    segments.push(Segment::new(head));
                }
                let seg = segments.last_mut().expect("a segment was just ensured");
                let offset = (row % SEGMENT) as u16;
                for (d, c) in codes.iter().enumerate().take(head) {
                    if *c != 0 {
                        seg.rows[d].push(offset);
                        seg.codes[d].push(*c as i8);
                        *nonzero += 1;
                    }
                }
                if self.tail > 0 {
                    let r = row % BLOCK;
                    if r == 0 {
                        tail_blocks.push(vec![0; self.tail * BLOCK]);
                    }
                    let block = tail_blocks.last_mut().expect("a block was just ensured");
                    for (t, c) in codes[head..self.dim].iter().enumerate() {
                        block[t * BLOCK + r] = *c as i8;
                    }
                }
                let denser = *nonzero * SPARSE_UP_TO > (row + 1) * head;
                if row + 1 >= JUDGE_AFTER && denser {
                    self.densify();
                }
            }
            Layout::Dense { blocks } => {
                let r = row % BLOCK;
                if r == 0 {
                    blocks.push(vec![0; self.dim * BLOCK]);
                }
                let block = blocks.last_mut().expect("a block was just ensured");
                for (d, c) in codes.iter().enumerate().take(self.dim) {
                    block[d * BLOCK + r] = *c as i8;
                }
            }
        }
    }

    /// Switch to the dense layout, keeping every row.
    fn densify(&mut self) {
        let Layout::Sparse {
            segments,
            tail_blocks,
            ..
        } = &self.layout
        else {
            return;
        };
        let head = self.head();
        let mut blocks = vec![vec![0i8; self.dim * BLOCK]; self.rows().div_ceil(BLOCK)];
        for (block, tail) in blocks.iter_mut().zip(tail_blocks) {
            block[head * BLOCK..].copy_from_slice(tail);
        }
        for (s, seg) in segments.iter().enumerate() {
            for (d, (rs, cs)) in seg.rows.iter().zip(&seg.codes).enumerate() {
                for (r, c) in rs.iter().zip(cs) {
                    let r = s * SEGMENT + usize::from(*r);
                    blocks[r / BLOCK][d * BLOCK + r % BLOCK] = *c;
                }
            }
        }
        self.layout = Layout::Dense { blocks };
    }

    /// Give back the room the lists grew into while rows were pushed (call when done).
    pub fn shrink_to_fit(&mut self) {
        self.scales.shrink_to_fit();
        if let Layout::Sparse { segments, .. } = &mut self.layout {
            for seg in segments {
                seg.rows.iter_mut().for_each(Vec::shrink_to_fit);
                seg.codes.iter_mut().for_each(Vec::shrink_to_fit);
            }
        }
    }

    pub fn push_f32(&mut self, v: &[f32]) {
        let (codes, scale) = quantize(v);
        let bytes: Vec<u8> = codes.iter().map(|c| *c as u8).collect();
        self.push(&bytes, scale);
    }

    /// Cosine of `query` with every row (0 for a zero query or a wrong dimension).
    pub fn cosines(&self, query: &[f32]) -> Vec<f32> {
        let mut out = Vec::new();
        self.cosines_into(query, &mut out);
        out
    }

    /// [`Matrix::cosines`] into a reused buffer (resized to `rows()`).
    pub fn cosines_into(&self, query: &[f32], out: &mut Vec<f32>) {
        out.clear();
        out.resize(self.rows(), 0.0);
        if query.len() != self.dim || self.dim == 0 {
            return;
        }
        let (nz, qscale) = query_codes(query);
        if qscale == 0.0 {
            return;
        }
        let threads = if self.rows() >= PARALLEL_ROWS {
            std::thread::available_parallelism()
                .map_or(1, |n| n.get())
                .min(8)
        } else {
            1
        };
        // Whole blocks to each thread (the dense layout scans by block).
        let rows_per = self.rows().div_ceil(BLOCK).div_ceil(threads).max(1) * BLOCK;
        if threads == 1 {
            self.scan(&nz, qscale, 0, out);
        } else {
            std::thread::scope(|s| {
                for (i, part) in out.chunks_mut(rows_per).enumerate() {
                    let nz = &nz;
                    s.spawn(move || self.scan(nz, qscale, i * rows_per, part));
                }
            });
        }
    }

    /// Score rows `first..first + out.len()` into `out` (`first` a multiple of [`BLOCK`]).
    fn scan(&self, nz: &[(usize, i16)], qscale: f32, first: usize, out: &mut [f32]) {
        match &self.layout {
            Layout::Sparse {
                segments,
                tail_blocks,
                ..
            } => {
                // The query's non-zeros are in dimension order: the head's, then the tail's.
                let head = self.head();
                let (head_nz, tail_nz) = nz.split_at(nz.partition_point(|(d, _)| *d < head));
                let end = first + out.len();
                // Each product is a whole number of at most 127², so up to 1040 dimensions
                // the f32 sums stay below 2^24 and exact, as the dense layout's i32 sums are.
                for (s, seg) in segments.iter().enumerate() {
                    let start = s * SEGMENT;
                    if start + SEGMENT <= first || start >= end {
                        continue;
                    }
                    // This part's rows as offsets in the segment.
                    let (from, to) = (first.max(start) - start, end.min(start + SEGMENT) - start);
                    let out = &mut out[start + from - first..start + to - first];
                    for &(d, qd) in head_nz {
                        let (rs, cs) = (&seg.rows[d], &seg.codes[d]);
                        let lo = rs.partition_point(|r| usize::from(*r) < from);
                        let hi = lo + rs[lo..].partition_point(|r| usize::from(*r) < to);
                        for (r, c) in rs[lo..hi].iter().zip(&cs[lo..hi]) {
                            out[usize::from(*r) - from] += f32::from(qd * i16::from(*c));
                        }
                    }
                }
                // The dense tail, block by block as the dense layout scans.
                let tail: Vec<(usize, i16)> =
                    tail_nz.iter().map(|&(d, qd)| (d - head, qd)).collect();
                if !tail.is_empty() {
                    let mut acc = vec![0i32; BLOCK];
                    for (b, part) in out.chunks_mut(BLOCK).enumerate() {
                        let acc = &mut acc[..part.len()];
                        sum_columns(&tail_blocks[first / BLOCK + b], &tail, acc);
                        for (o, a) in part.iter_mut().zip(acc.iter()) {
                            *o += *a as f32;
                        }
                    }
                }
                // In the dense layout's order of operations, so both give the same bits.
                for (o, scale) in out.iter_mut().zip(&self.scales[first..]) {
                    *o = *o * qscale * scale;
                }
            }
            Layout::Dense { blocks } => {
                let mut acc = vec![0i32; BLOCK];
                for (b, part) in out.chunks_mut(BLOCK).enumerate() {
                    let block = &blocks[first / BLOCK + b];
                    // The last block is padded: only its filled rows are worth scanning.
                    let acc = &mut acc[..part.len()];
                    sum_columns(block, nz, acc);
                    let row0 = first + b * BLOCK;
                    for (r, o) in part.iter_mut().enumerate() {
                        *o = acc[r] as f32 * qscale * self.scales[row0 + r];
                    }
                }
            }
        }
    }
}

/// `acc[r] = Σ q · block[c * BLOCK + r]` over the `(column, q)` pairs of `cols`, for the first
/// `acc.len()` rows of one block (`acc` is overwritten). Two columns at a time: |q0·c0 +
/// q1·c1| ≤ 2·127² still fits i16, so the products stay in 16-bit lanes and are widened to i32
/// once per pair (≈1.7× faster than widening every product).
fn sum_columns(block: &[i8], cols: &[(usize, i16)], acc: &mut [i32]) {
    acc.iter_mut().for_each(|a| *a = 0);
    let mut pairs = cols.chunks_exact(2);
    for pair in &mut pairs {
        let ((d0, q0), (d1, q1)) = (pair[0], pair[1]);
        let c0 = &block[d0 * BLOCK..d0 * BLOCK + acc.len()];
        let c1 = &block[d1 * BLOCK..d1 * BLOCK + acc.len()];
        for ((a, x), y) in acc.iter_mut().zip(c0).zip(c1) {
            *a += i32::from(q0 * i16::from(*x) + q1 * i16::from(*y));
        }
    }
    for &(d, qd) in pairs.remainder() {
        let col = &block[d * BLOCK..d * BLOCK + acc.len()];
        for (a, c) in acc.iter_mut().zip(col) {
            *a += i32::from(qd * i16::from(*c));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantized_cosine_is_close() {
        let a: Vec<f32> = (0..100)
            .map(|i| ((i * 7 % 13) as f32 - 6.0) / 3.0)
            .collect();
        let b: Vec<f32> = (0..100)
            .map(|i| ((i * 5 % 11) as f32 - 5.0) / 2.0)
            .collect();
        let exact = {
            let d: f32 = a.iter().zip(&b).map(|(x, y)| x * y).sum();
            let na: f32 = a.iter().map(|x| x * x).sum::<f32>().sqrt();
            let nb: f32 = b.iter().map(|x| x * x).sum::<f32>().sqrt();
            d / na / nb
        };
        let mut m = Matrix::new(100);
        m.push_f32(&b);
        m.push_f32(&a);
        m.push_f32(&vec![0.0; 100]);
        let c = m.cosines(&a);
        assert!((c[0] - exact).abs() < 0.01, "{} vs {exact}", c[0]);
        assert!((c[1] - 1.0).abs() < 0.01);
        assert_eq!(c[2], 0.0);
        assert!(m.cosines(&[1.0]).iter().all(|x| *x == 0.0));
    }

    #[test]
    fn sparse_rows_stay_sparse_and_score_as_dense_ones() {
        let dim = 256;
        // A few non-zero dimensions a row, like the built-in embedder's.
        let row = |i: usize| -> Vec<f32> {
            (0..dim)
                .map(|d| match (d * 7 + i * 13) % 41 {
                    0 => 1.0 + (i % 3) as f32,
                    1 => -0.5,
                    _ => 0.0,
                })
                .collect()
        };
        let mut sparse = Matrix::new(dim);
        let mut dense = Matrix::new(dim);
        for i in 0..300 {
            sparse.push_f32(&row(i));
            dense.push_f32(&row(i));
        }
        dense.densify();
        sparse.shrink_to_fit();
        assert!(sparse.is_sparse() && !dense.is_sparse());
        let q: Vec<f32> = (0..dim).map(|d| ((d % 5) as f32 - 2.0) / 2.0).collect();
        assert_eq!(sparse.cosines(&q), dense.cosines(&q));
        // Dense rows turn a sparse matrix dense, and every row is kept.
        let mut m = Matrix::new(dim);
        let before = {
            for i in 0..10 {
                m.push_f32(&row(i));
            }
            m.cosines(&q)
        };
        for i in 0..JUDGE_AFTER {
            m.push_f32(
                &(0..dim)
                    .map(|d| ((d + i) % 7) as f32 - 3.0)
                    .collect::<Vec<_>>(),
            );
        }
        assert!(!m.is_sparse());
        assert_eq!(m.cosines(&q)[..10], before[..]);
        // Past PARALLEL_ROWS the rows are split across threads: each part finds its own
        // range of every list.
        let mut big = Matrix::new(dim);
        for i in 0..PARALLEL_ROWS + 5 {
            big.push_f32(&row(i));
        }
        assert!(big.is_sparse());
        let (nz, qs) = query_codes(&q);
        let mut one = vec![0.0; big.rows()];
        big.scan(&nz, qs, 0, &mut one);
        assert_eq!(big.cosines(&q), one);
    }

    #[test]
    fn a_dense_tail_scores_as_the_whole_row_and_keeps_the_rest_sparse() {
        let (dim, tail) = (256, 16);
        // Sparse head (a few non-zeros), then a tail every row fills.
        let row = |i: usize| -> Vec<f32> {
            (0..dim)
                .map(|d| {
                    if d >= dim - tail {
                        ((d * 5 + i * 3) % 11) as f32 - 5.0
                    } else if (d * 7 + i * 13).is_multiple_of(41) {
                        1.0 + (i % 3) as f32
                    } else {
                        0.0
                    }
                })
                .collect()
        };
        let mut plain = Matrix::new(dim);
        let mut tailed = Matrix::with_dense_tail(dim, tail);
        let rows = BLOCK + 70; // two tail blocks, the second partly filled
        for i in 0..rows {
            plain.push_f32(&row(i));
            tailed.push_f32(&row(i));
        }
        tailed.shrink_to_fit();
        // The tail's 16 filled dimensions do not count towards the head's density.
        assert!(tailed.is_sparse());
        let q: Vec<f32> = (0..dim).map(|d| ((d % 5) as f32 - 2.0) / 2.0).collect();
        let want = plain.cosines(&q);
        let got = tailed.cosines(&q);
        assert_eq!(got.len(), rows);
        for (g, w) in got.iter().zip(&want) {
            assert!((g - w).abs() < 1e-6, "{g} vs {w}");
        }
        // Turned dense, it still scores the same, tail included.
        tailed.densify();
        assert!(!tailed.is_sparse());
        for (g, w) in tailed.cosines(&q).iter().zip(&want) {
            assert!((g - w).abs() < 1e-6, "{g} vs {w}");
        }
    }

    #[test]
    fn encode_roundtrip_and_parallel_scan_agrees() {
        let (codes, scale) = quantize(&[0.5, -0.5, 0.0]);
        let bytes = encode(&codes, scale);
        let (c, s) = decode(&bytes, 3).unwrap();
        assert_eq!(c.len(), 3);
        assert_eq!(s, scale);
        assert!(decode(&bytes, 4).is_none());
        let dim = 8;
        let mut m = Matrix::new(dim);
        for i in 0..PARALLEL_ROWS + 5 {
            let v: Vec<f32> = (0..dim).map(|j| ((i + j) % 5) as f32 - 2.0).collect();
            m.push_f32(&v);
        }
        let q: Vec<f32> = (0..dim).map(|j| j as f32).collect();
        let all = m.cosines(&q);
        let (nz, qs) = query_codes(&q);
        let mut one = vec![0.0; m.rows()];
        m.scan(&nz, qs, 0, &mut one);
        assert_eq!(all, one);
    }
}
