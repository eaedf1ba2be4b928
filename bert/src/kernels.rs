//! The arithmetic of the BERT forward pass, written for small models on a few CPU cores.
//!
//! Vector code goes through `pulp`, which picks AVX2+FMA (or the baseline) at run time and
//! keeps the crate free of `unsafe`; work is split across cores with rayon. Why not a generic
//! tensor library: a query is ~20 tokens, so every matrix product is a skinny one whose cost
//! is streaming the weights once; candle's general path ran all-MiniLM-L6 at ~15 GFLOP/s
//! here and would have put multilingual-e5-small (12 layers) above 40 ms a query.

use pulp::{Arch, Simd, WithSimd};
use rayon::prelude::*;

/// f32 lanes of the vector type `S`.
#[inline(always)]
fn lanes<S: Simd>() -> usize {
    std::mem::size_of::<S::f32s>() / 4
}

/// Dot products of `TR` activation rows with `WR` weight rows (all the same length).
/// `TR · WR` accumulators plus `TR` activation registers must fit the 16 vector registers
/// of AVX2, or the accumulators spill to the stack (measured: 2 × 4 runs ~1.8× faster
/// than 3 × 4 here).
#[inline(always)]
fn tile<S: Simd, const TR: usize, const WR: usize>(
    simd: S,
    xr: [&[f32]; TR],
    wr: [&[f32]; WR],
) -> [[f32; WR]; TR] {
    let n = xr[0].len();
    let xs: [&[S::f32s]; TR] = xr.map(|r| S::as_simd_f32s(r).0);
    let ws: [&[S::f32s]; WR] = wr.map(|r| S::as_simd_f32s(r).0);
    let blocks = xs[0].len();
    let xs = xs.map(|s| &s[..blocks]);
    let ws = ws.map(|s| &s[..blocks]);
    let mut acc = [[simd.splat_f32s(0.0); WR]; TR];
    for i in 0..blocks {
        let xv: [S::f32s; TR] = std::array::from_fn(|r| xs[r][i]);
        for c in 0..WR {
            let w = ws[c][i];
            for r in 0..TR {
                acc[r][c] = simd.mul_add_f32s(xv[r], w, acc[r][c]);
            }
        }
    }
    let done = blocks * lanes::<S>();
    let mut out = [[0f32; WR]; TR];
    for r in 0..TR {
        for c in 0..WR {
            let tail: f32 = xr[r][done..n]
                .iter()
                .zip(&wr[c][done..n])
                .map(|(a, b)| a * b)
                .sum();
            out[r][c] = simd.reduce_sum_f32s(acc[r][c]) + tail;
        }
    }
    out
}

/// `out[i · nb + j] = a_i · b_j` for the rows of `a` (`[na, k]`) and `b` (`[nb, k]`):
/// both operands row-major along `k`, as weights and activations are stored. Activation
/// rows are taken in blocks of [`TOKEN_BLOCK`], so a block stays in L2 while the rows of
/// `b` stream past it, and within a block the 2 × 4 tiles keep their sums in registers.
#[inline(always)]
fn dots<S: Simd>(simd: S, a: &[f32], b: &[f32], k: usize, out: &mut [f32]) {
    let na = a.len() / k;
    let nb = b.len() / k;
    let arow = |t: usize| &a[t * k..(t + 1) * k];
    let brow = |r: usize| &b[r * k..(r + 1) * k];
    for tb in (0..na).step_by(TOKEN_BLOCK) {
        let te = (tb + TOKEN_BLOCK).min(na);
        let mut r = 0;
        while r + 4 <= nb {
            let br = [brow(r), brow(r + 1), brow(r + 2), brow(r + 3)];
            let mut t = tb;
            while t + 2 <= te {
                let acc = tile::<S, 2, 4>(simd, [arow(t), arow(t + 1)], br);
                for (i, row) in acc.iter().enumerate() {
                    out[(t + i) * nb + r..(t + i) * nb + r + 4].copy_from_slice(row);
                }
                t += 2;
            }
            if t < te {
                let [row] = tile::<S, 1, 4>(simd, [arow(t)], br);
                out[t * nb + r..t * nb + r + 4].copy_from_slice(&row);
            }
            r += 4;
        }
        while r < nb {
            for t in tb..te {
                let [[v]] = tile::<S, 1, 1>(simd, [arow(t)], [brow(r)]);
                out[t * nb + r] = v;
            }
            r += 1;
        }
    }
}

/// One core's share of a linear layer: some output columns (rows of `w`).
struct LinearPart<'a> {
    x: &'a [f32],
    n_in: usize,
    w: &'a [f32],
    bias: &'a [f32],
    /// tokens × rows, row-major.
    out: &'a mut [f32],
}

/// Rows of activations per block: a block (64 × 1536 × 4 B at most) stays in L2 while the
/// weight rows stream past it.
const TOKEN_BLOCK: usize = 64;

impl WithSimd for LinearPart<'_> {
    type Output = ();

    #[inline(always)]
    fn with_simd<S: Simd>(self, simd: S) {
        let LinearPart {
            x,
            n_in,
            w,
            bias,
            out,
        } = self;
        dots(simd, x, w, n_in, out);
        for row in out.chunks_exact_mut(bias.len()) {
            add_into(simd, row, bias);
        }
    }
}

/// `y[t, o] = bias[o] + Σ_i x[t, i] · w[o, i]`: a linear layer, `w` row-major
/// `[n_out, n_in]` as PyTorch stores it. Output columns are split across cores.
pub fn linear(x: &[f32], w: &[f32], bias: &[f32], n_in: usize) -> Vec<f32> {
    let n_out = bias.len();
    let tokens = x.len() / n_in;
    debug_assert_eq!(w.len(), n_out * n_in);
    debug_assert_eq!(x.len(), tokens * n_in);
    // Enough parts to keep every core busy, each a multiple of 4 columns and big enough
    // (≥ ~1 M multiply-adds) to be worth a task.
    let work = tokens * n_out * n_in;
    let parts = (rayon::current_num_threads() * 2)
        .min(work / (1 << 20))
        .clamp(1, n_out.div_ceil(4));
    let per = n_out.div_ceil(parts).div_ceil(4) * 4;
    let arch = Arch::new();
    let pieces: Vec<(usize, Vec<f32>)> = (0..n_out)
        .step_by(per)
        .collect::<Vec<_>>()
        .into_par_iter()
        .map(|o0| {
            let o1 = (o0 + per).min(n_out);
            let mut out = vec![0.0; tokens * (o1 - o0)];
            arch.dispatch(LinearPart {
                x,
                n_in,
                w: &w[o0 * n_in..o1 * n_in],
                bias: &bias[o0..o1],
                out: &mut out,
            });
            (o0, out)
        })
        .collect();
    if let [(_, only)] = &pieces[..] {
        if only.len() == tokens * n_out {
            return pieces.into_iter().next().map(|p| p.1).unwrap_or_default();
        }
    }
    let mut y = vec![0.0; tokens * n_out];
    for (o0, part) in pieces {
        let cols = part.len() / tokens.max(1);
        for t in 0..tokens {
            y[t * n_out + o0..t * n_out + o0 + cols]
                .copy_from_slice(&part[t * cols..(t + 1) * cols]);
        }
    }
    y
}

/// `x = LayerNorm(x + residual)` row by row (`residual` may be empty: plain LayerNorm).
pub fn add_layer_norm(x: &mut [f32], residual: &[f32], gamma: &[f32], beta: &[f32], eps: f32) {
    Arch::new().dispatch(LayerNorm {
        x,
        residual,
        gamma,
        beta,
        eps,
    });
}

struct LayerNorm<'a> {
    x: &'a mut [f32],
    residual: &'a [f32],
    gamma: &'a [f32],
    beta: &'a [f32],
    eps: f32,
}

impl WithSimd for LayerNorm<'_> {
    type Output = ();

    #[inline(always)]
    fn with_simd<S: Simd>(self, simd: S) {
        let h = self.gamma.len();
        for (t, row) in self.x.chunks_exact_mut(h).enumerate() {
            if !self.residual.is_empty() {
                add_into(simd, row, &self.residual[t * h..(t + 1) * h]);
            }
            let mean = sum(simd, row) / h as f32;
            let var = row.iter().map(|v| (v - mean) * (v - mean)).sum::<f32>() / h as f32;
            let inv = 1.0 / (var + self.eps).sqrt();
            let (head, tail) = S::as_mut_simd_f32s(row);
            let (g, gt) = S::as_simd_f32s(self.gamma);
            let (b, bt) = S::as_simd_f32s(self.beta);
            let (m, s) = (simd.splat_f32s(mean), simd.splat_f32s(inv));
            for ((v, g), b) in head.iter_mut().zip(g).zip(b) {
                *v = simd.mul_add_f32s(simd.mul_f32s(simd.sub_f32s(*v, m), s), *g, *b);
            }
            for ((v, g), b) in tail.iter_mut().zip(gt).zip(bt) {
                *v = (*v - mean) * inv * g + b;
            }
        }
    }
}

#[inline(always)]
fn add_into<S: Simd>(simd: S, a: &mut [f32], b: &[f32]) {
    let (ah, at) = S::as_mut_simd_f32s(a);
    let (bh, bt) = S::as_simd_f32s(b);
    for (x, y) in ah.iter_mut().zip(bh) {
        *x = simd.add_f32s(*x, *y);
    }
    for (x, y) in at.iter_mut().zip(bt) {
        *x += y;
    }
}

#[inline(always)]
fn sum<S: Simd>(simd: S, a: &[f32]) -> f32 {
    let (h, t) = S::as_simd_f32s(a);
    let mut acc = simd.splat_f32s(0.0);
    for x in h {
        acc = simd.add_f32s(acc, *x);
    }
    simd.reduce_sum_f32s(acc) + t.iter().sum::<f32>()
}

/// erf's rational approximation (Eigen's single-precision one: |error| < 1e-7 on [-4, 4],
/// ±1 beyond): numerator (odd, from x¹³ down) and denominator (even, from x⁸ down).
const ERF_P: [f32; 7] = [
    -2.726_142_3e-10,
    2.770_681_4e-8,
    -2.101_024e-6,
    -5.692_506_4e-5,
    -7.349_906_3e-4,
    -2.954_6e-3,
    -1.609_603_3e-2,
];
const ERF_Q: [f32; 5] = [
    -1.456_607_2e-5,
    -2.133_740_6e-4,
    -1.682_827e-3,
    -7.373_329e-3,
    -1.426_474e-2,
];

#[cfg(test)]
fn erf(x: f32) -> f32 {
    let x = x.clamp(-4.0, 4.0);
    let x2 = x * x;
    let p = ERF_P[1..].iter().fold(ERF_P[0], |p, c| p * x2 + c);
    let q = ERF_Q[1..].iter().fold(ERF_Q[0], |q, c| q * x2 + c);
    x * p / q
}

/// BERT's GELU, the exact (erf) form: `x · (1 + erf(x / √2)) / 2`, in place.
pub fn gelu(x: &mut [f32]) {
    Arch::new().dispatch(Gelu(x));
}

struct Gelu<'a>(&'a mut [f32]);

impl WithSimd for Gelu<'_> {
    type Output = ();

    #[inline(always)]
    fn with_simd<S: Simd>(self, simd: S) {
        let (head, tail) = S::as_mut_simd_f32s(self.0);
        let (lo, hi) = (simd.splat_f32s(-4.0), simd.splat_f32s(4.0));
        let (half, one) = (simd.splat_f32s(0.5), simd.splat_f32s(1.0));
        let r2 = simd.splat_f32s(std::f32::consts::FRAC_1_SQRT_2);
        let p: [S::f32s; 7] = ERF_P.map(|c| simd.splat_f32s(c));
        let q: [S::f32s; 5] = ERF_Q.map(|c| simd.splat_f32s(c));
        for v in head.iter_mut() {
            let x = simd.min_f32s(simd.max_f32s(simd.mul_f32s(*v, r2), lo), hi);
            let x2 = simd.mul_f32s(x, x);
            let mut num = p[0];
            for c in &p[1..] {
                num = simd.mul_add_f32s(num, x2, *c);
            }
            let mut den = q[0];
            for c in &q[1..] {
                den = simd.mul_add_f32s(den, x2, *c);
            }
            let erf = simd.div_f32s(simd.mul_f32s(x, num), den);
            *v = simd.mul_f32s(simd.mul_f32s(half, *v), simd.add_f32s(one, erf));
        }
        for v in tail.iter_mut() {
            let x = (*v * std::f32::consts::FRAC_1_SQRT_2).clamp(-4.0, 4.0);
            let x2 = x * x;
            let num = ERF_P[1..].iter().fold(ERF_P[0], |p, c| p * x2 + c);
            let den = ERF_Q[1..].iter().fold(ERF_Q[0], |q, c| q * x2 + c);
            *v = 0.5 * *v * (1.0 + x * num / den);
        }
    }
}

/// Self-attention over a batch of sequences laid end to end. `qkv` is `[tokens, 3·hidden]`
/// (query | key | value per token), `bounds` the token range of each sequence (a token
/// attends only within its own sequence, so no padding is needed). Returns the context
/// `[tokens, hidden]`. Every (sequence, head) pair is a task.
pub fn attention(qkv: &[f32], bounds: &[(usize, usize)], hidden: usize, heads: usize) -> Vec<f32> {
    let d = hidden / heads;
    let tasks: Vec<(usize, usize)> = (0..bounds.len())
        .flat_map(|s| (0..heads).map(move |h| (s, h)))
        .collect();
    let arch = Arch::new();
    let parts: Vec<Vec<f32>> = tasks
        .par_iter()
        .map(|&(s, h)| {
            let (start, end) = bounds[s];
            attention_head(
                arch,
                &qkv[start * 3 * hidden..end * 3 * hidden],
                hidden,
                h,
                d,
            )
        })
        .collect();
    let tokens = bounds.last().map_or(0, |b| b.1);
    let mut ctx = vec![0.0f32; tokens * hidden];
    for (&(s, h), part) in tasks.iter().zip(&parts) {
        let (start, end) = bounds[s];
        for (i, row) in (start..end).zip(part.chunks_exact(d)) {
            ctx[i * hidden + h * d..i * hidden + (h + 1) * d].copy_from_slice(row);
        }
    }
    ctx
}

/// One head of one sequence: `[len, d]`.
fn attention_head(arch: Arch, qkv: &[f32], hidden: usize, h: usize, d: usize) -> Vec<f32> {
    arch.dispatch(AttentionHead { qkv, hidden, h, d })
}

struct AttentionHead<'a> {
    qkv: &'a [f32],
    hidden: usize,
    h: usize,
    d: usize,
}

impl WithSimd for AttentionHead<'_> {
    type Output = Vec<f32>;

    #[inline(always)]
    fn with_simd<S: Simd>(self, simd: S) -> Vec<f32> {
        let AttentionHead { qkv, hidden, h, d } = self;
        let len = qkv.len() / (3 * hidden);
        let scale = 1.0 / (d as f32).sqrt();
        // This head's queries (scaled) and keys as contiguous [len, d], values transposed
        // to [d, len]: both products are then row-by-row dot products (`dots`).
        let mut q = Vec::with_capacity(len * d);
        let mut k = Vec::with_capacity(len * d);
        let mut vt = vec![0.0f32; d * len];
        for j in 0..len {
            let row = &qkv[j * 3 * hidden..(j + 1) * 3 * hidden];
            q.extend(row[h * d..(h + 1) * d].iter().map(|v| v * scale));
            k.extend_from_slice(&row[hidden + h * d..hidden + (h + 1) * d]);
            for (e, v) in row[2 * hidden + h * d..2 * hidden + (h + 1) * d]
                .iter()
                .enumerate()
            {
                vt[e * len + j] = *v;
            }
        }
        let mut probs = vec![0.0f32; len * len];
        dots(simd, &q, &k, d, &mut probs);
        for row in probs.chunks_exact_mut(len) {
            let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            let mut total = 0.0;
            for p in row.iter_mut() {
                *p = (*p - max).exp();
                total += *p;
            }
            let inv = simd.splat_f32s(1.0 / total);
            let (head, tail) = S::as_mut_simd_f32s(row);
            for p in head {
                *p = simd.mul_f32s(*p, inv);
            }
            for p in tail {
                *p /= total;
            }
        }
        let mut ctx = vec![0.0f32; len * d];
        dots(simd, &probs, &vt, len, &mut ctx);
        ctx
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn naive_linear(x: &[f32], w: &[f32], b: &[f32], n_in: usize) -> Vec<f32> {
        let n_out = b.len();
        let t = x.len() / n_in;
        let mut y = vec![0.0; t * n_out];
        for i in 0..t {
            for o in 0..n_out {
                let mut s = f64::from(b[o]);
                for k in 0..n_in {
                    s += f64::from(x[i * n_in + k]) * f64::from(w[o * n_in + k]);
                }
                y[i * n_out + o] = s as f32;
            }
        }
        y
    }

    fn values(n: usize, seed: u32) -> Vec<f32> {
        // A small LCG: deterministic, spread over [-1, 1).
        let mut s = seed.wrapping_mul(2_654_435_761).wrapping_add(1);
        (0..n)
            .map(|_| {
                s = s.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                (s >> 8) as f32 / (1u32 << 23) as f32 - 1.0
            })
            .collect()
    }

    #[test]
    fn linear_matches_a_naive_product_for_awkward_shapes() {
        // Token counts around the 3-token tile and 64-token block, widths with vector tails,
        // output counts that are not multiples of 4.
        for (t, n_in, n_out) in [
            (1, 8, 4),
            (2, 13, 7),
            (5, 40, 9),
            (67, 33, 130),
            (3, 384, 1),
        ] {
            let x = values(t * n_in, 1);
            let w = values(n_out * n_in, 2);
            let b = values(n_out, 3);
            let got = linear(&x, &w, &b, n_in);
            let want = naive_linear(&x, &w, &b, n_in);
            for (g, w) in got.iter().zip(&want) {
                assert!((g - w).abs() < 1e-4, "{t}×{n_in}→{n_out}: {g} vs {w}");
            }
        }
    }

    #[test]
    fn erf_is_accurate_and_gelu_has_its_known_values() {
        // Reference values of erf.
        for (x, want) in [
            (0.0f32, 0.0f32),
            (0.5, 0.520_499_9),
            (1.0, 0.842_700_8),
            (-1.5, -0.966_105_1),
            (2.5, 0.999_593),
            (10.0, 1.0),
        ] {
            assert!((erf(x) - want).abs() < 2e-7, "erf({x}) = {}", erf(x));
        }
        let mut v = vec![-3.0, -1.0, 0.0, 1.0, 3.0];
        gelu(&mut v);
        let want = [-0.004_049_7, -0.158_655_3, 0.0, 0.841_344_7, 2.995_950_3];
        for (g, w) in v.iter().zip(want) {
            assert!((g - w).abs() < 1e-6, "{g} vs {w}");
        }
    }

    #[test]
    fn layer_norm_and_attention_match_their_definitions() {
        let mut x = vec![1.0, 2.0, 3.0, 4.0, 10.0, 10.0, 10.0, 10.0];
        add_layer_norm(&mut x, &[0.0; 8], &[1.0; 4], &[0.5; 4], 1e-12);
        let z = 1.0 / 1.25f32.sqrt();
        for (g, w) in x[..4].iter().zip([-1.5 * z, -0.5 * z, 0.5 * z, 1.5 * z]) {
            assert!((g - (w + 0.5)).abs() < 1e-5);
        }
        assert!(x[4..].iter().all(|v| (v - 0.5).abs() < 1e-5));

        // Two sequences (3 and 2 tokens), two heads of width 2, against a direct
        // computation: a token attends only within its own sequence.
        let (hidden, heads) = (4, 2);
        let bounds = [(0, 3), (3, 5)];
        let qkv = values(5 * 3 * hidden, 7);
        let got = attention(&qkv, &bounds, hidden, heads);
        let d = hidden / heads;
        for (start, end) in bounds {
            for h in 0..heads {
                for i in start..end {
                    let q = |t: usize, e: usize| qkv[t * 3 * hidden + h * d + e];
                    let k = |t: usize, e: usize| qkv[t * 3 * hidden + hidden + h * d + e];
                    let v = |t: usize, e: usize| qkv[t * 3 * hidden + 2 * hidden + h * d + e];
                    let s: Vec<f32> = (start..end)
                        .map(|j| (0..d).map(|e| q(i, e) * k(j, e)).sum::<f32>() / (d as f32).sqrt())
                        .collect();
                    let z: f32 = s.iter().map(|s| s.exp()).sum();
                    for e in 0..d {
                        let want: f32 =
                            (start..end).map(|j| s[j - start].exp() / z * v(j, e)).sum();
                        let g = got[i * hidden + h * d + e];
                        assert!((g - want).abs() < 1e-5, "{g} vs {want}");
                    }
                }
            }
        }
    }
}
