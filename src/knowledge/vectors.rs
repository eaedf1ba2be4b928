//! Vectors in memory and on disk: L2-normalized, quantized to `i8` with one scale per vector
//! (a quarter of the f32 size, cosine error ≈ 1e-3), scanned brute force. Past
//! [`PARALLEL_ROWS`] rows the scan is split across the available cores.

/// Rows above which a scan uses more than one thread.
const PARALLEL_ROWS: usize = 16_384;

/// Normalize and quantize one vector: (codes, scale) with `v[i] ≈ codes[i] * scale`.
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

/// Row-major quantized vectors.
#[derive(Debug, Default)]
pub struct Matrix {
    dim: usize,
    codes: Vec<i8>,
    scales: Vec<f32>,
}

impl Matrix {
    pub fn new(dim: usize) -> Self {
        Self {
            dim,
            ..Self::default()
        }
    }

    pub fn dim(&self) -> usize {
        self.dim
    }

    pub fn rows(&self) -> usize {
        self.scales.len()
    }

    pub fn push(&mut self, codes: &[u8], scale: f32) {
        debug_assert_eq!(codes.len(), self.dim);
        self.codes.extend(codes.iter().map(|c| *c as i8));
        self.scales.push(scale);
    }

    pub fn push_f32(&mut self, v: &[f32]) {
        let (codes, scale) = quantize(v);
        self.codes.extend(codes);
        self.scales.push(scale);
    }

    /// Cosine of `query` with every row (0 for a zero query or a wrong dimension).
    pub fn cosines(&self, query: &[f32]) -> Vec<f32> {
        let mut out = vec![0f32; self.rows()];
        if query.len() != self.dim || self.dim == 0 {
            return out;
        }
        let (q, qscale) = quantize(query);
        if qscale == 0.0 {
            return out;
        }
        let threads = if self.rows() >= PARALLEL_ROWS {
            std::thread::available_parallelism()
                .map_or(1, |n| n.get())
                .min(8)
        } else {
            1
        };
        let per = self.rows().div_ceil(threads).max(1);
        if threads == 1 {
            self.scan(&q, qscale, 0, &mut out);
        } else {
            std::thread::scope(|s| {
                for (i, part) in out.chunks_mut(per).enumerate() {
                    let q = &q;
                    s.spawn(move || self.scan(q, qscale, i * per, part));
                }
            });
        }
        out
    }

    fn scan(&self, q: &[i8], qscale: f32, first: usize, out: &mut [f32]) {
        let rows = self.codes[first * self.dim..].chunks_exact(self.dim);
        for ((o, row), scale) in out.iter_mut().zip(rows).zip(&self.scales[first..]) {
            *o = dot(q, row) as f32 * qscale * scale;
        }
    }
}

/// i8 dot product in i32, in blocks the compiler vectorizes (i16 products, i32 sums).
fn dot(a: &[i8], b: &[i8]) -> i32 {
    let mut acc = [0i32; 16];
    let (ac, ar) = a.split_at(a.len() / 16 * 16);
    let (bc, br) = b.split_at(ac.len());
    for (x, y) in ac.chunks_exact(16).zip(bc.chunks_exact(16)) {
        for i in 0..16 {
            acc[i] += i32::from(i16::from(x[i]) * i16::from(y[i]));
        }
    }
    let tail: i32 = ar
        .iter()
        .zip(br)
        .map(|(x, y)| i32::from(*x) * i32::from(*y))
        .sum();
    acc.iter().sum::<i32>() + tail
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
        let (qc, qs) = quantize(&q);
        let mut one = vec![0.0; m.rows()];
        m.scan(&qc, qs, 0, &mut one);
        assert_eq!(all, one);
    }
}
