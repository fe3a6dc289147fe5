//! 2-D convolution with bias as im2col + one gemm per image, in both
//! directions.
//!
//! **Why.** candle 0.11's CPU backward of `conv2d` computes the input
//! gradient with a direct `conv_transpose2d` loop (no gemm) even for the
//! first layer, whose input is data and needs no gradient, and the weight
//! gradient as a convolution whose "kernel" is the whole 28×28 gradient
//! image; a CNN training step took ~120 ms here against ~11 ms in PyTorch
//! (see `bench/RESULTS.md`). Here every direction is a gemm over an
//! im2col matrix:
//!
//! * forward, per image: `out[Cout, P] = bias + W[Cout, K] · col[K, P]`;
//! * weight gradient, per chunk of images: `gW[Cout, K] += G[Cout, P·n] ·
//!   colᵀ[P·n, K]`, partial sums per fixed chunk added in chunk order (so the
//!   result does not depend on the thread count);
//! * input gradient, per image: `gcol[K, P] = Wᵀ · G`, scattered back by
//!   col2im; **skipped** when the input tracks no gradient (the data);
//! * bias gradient: the sum of `G` over batch and positions.
//!
//! with `K = Cin·kh·kw` and `P = Hout·Wout`. Images are spread over rayon's
//! pool (each gemm single-threaded), so no column matrix for the whole
//! batch is ever built.

use candle_core::{CpuStorage, CustomOp1, CustomOp2, CustomOp3, Layout, Result, Shape, Tensor};
use std::sync::Mutex;

use rayon::prelude::*;

use super::gemm::{matmul, Mat};
use super::{contiguous_f32, use_fast_path};

/// Images per work item (and per partial weight-gradient sum). Fixed, so
/// that summation order, hence the numbers, do not depend on the threads.
const CHUNK: usize = 8;

/// `conv2d(x, w) + b` with "NCHW" `x: [B, Cin, H, W]`, `w: [Cout, Cin, kh,
/// kw]`, `b: [Cout]`, zero padding `padding` on every side, stride `stride`,
/// no dilation or groups. Falls back to candle's own ops off the CPU or for
/// other dtypes than f32.
pub fn conv2d(x: &Tensor, w: &Tensor, b: &Tensor, stride: usize, padding: usize) -> Result<Tensor> {
    if !use_fast_path(&[x, w, b]) {
        let y = x.conv2d(w, padding, stride, 1, 1)?;
        return y.broadcast_add(&b.reshape((1, b.elem_count(), 1, 1))?);
    }
    x.contiguous()?.apply_op3(
        &w.contiguous()?,
        &b.contiguous()?,
        Conv2d { stride, padding },
    )
}

#[derive(Debug, Clone, Copy)]
struct Conv2d {
    stride: usize,
    padding: usize,
}

/// Sizes of one convolution.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Geom {
    batch: usize,
    cin: usize,
    h: usize,
    w: usize,
    cout: usize,
    kh: usize,
    kw: usize,
    stride: usize,
    pad: usize,
    ho: usize,
    wo: usize,
}

impl Geom {
    pub(crate) fn new(x: &[usize], w: &[usize], stride: usize, pad: usize) -> Result<Geom> {
        let (&[batch, cin, h, wd], &[cout, cin2, kh, kw]) = (x, w) else {
            candle_core::bail!("conv2d: input {x:?} and kernel {w:?} must both have rank 4")
        };
        if cin != cin2 || stride == 0 || h + 2 * pad < kh || wd + 2 * pad < kw {
            candle_core::bail!(
                "conv2d: input {x:?} does not fit kernel {w:?} (stride {stride}, padding {pad})"
            )
        }
        Ok(Geom {
            batch,
            cin,
            h,
            w: wd,
            cout,
            kh,
            kw,
            stride,
            pad,
            ho: (h + 2 * pad - kh) / stride + 1,
            wo: (wd + 2 * pad - kw) / stride + 1,
        })
    }
    /// Rows of the column matrix.
    pub(crate) fn k(&self) -> usize {
        self.cin * self.kh * self.kw
    }
    /// Output positions per channel.
    pub(crate) fn p(&self) -> usize {
        self.ho * self.wo
    }
    pub(crate) fn in_len(&self) -> usize {
        self.cin * self.h * self.w
    }
    pub(crate) fn out_len(&self) -> usize {
        self.cout * self.p()
    }
    /// Output columns `ox` whose input column `ox·s + kx − pad` lies inside
    /// the image.
    fn valid_ox(&self, kx: usize) -> std::ops::Range<usize> {
        let (s, pad) = (self.stride, self.pad);
        let lo = if kx >= pad { 0 } else { (pad - kx).div_ceil(s) };
        // ox·s + kx − pad ≤ w − 1  ⇔  ox ≤ (w − 1 + pad − kx) / s
        let hi = if self.w + pad > kx {
            ((self.w - 1 + pad - kx) / s + 1).min(self.wo)
        } else {
            0
        };
        lo.min(hi)..hi
    }
    /// The input row of output row `oy` and kernel row `ky`, if inside.
    fn iy(&self, oy: usize, ky: usize) -> Option<usize> {
        (oy * self.stride + ky)
            .checked_sub(self.pad)
            .filter(|&iy| iy < self.h)
    }

    /// Writes one image's column matrix into `col` (row `r` starts at
    /// `r * rs`, `P` values per row), zeros where the kernel overhangs.
    fn im2col(&self, x: &[f32], col: &mut [f32], rs: usize) {
        let (p, wo) = (self.p(), self.wo);
        for ci in 0..self.cin {
            let plane = &x[ci * self.h * self.w..(ci + 1) * self.h * self.w];
            for ky in 0..self.kh {
                for kx in 0..self.kw {
                    let r = (ci * self.kh + ky) * self.kw + kx;
                    let row = &mut col[r * rs..r * rs + p];
                    let valid = self.valid_ox(kx);
                    for oy in 0..self.ho {
                        let out = &mut row[oy * wo..(oy + 1) * wo];
                        let Some(iy) = self.iy(oy, ky) else {
                            out.fill(0.0);
                            continue;
                        };
                        let src = &plane[iy * self.w..(iy + 1) * self.w];
                        out[..valid.start].fill(0.0);
                        out[valid.end..].fill(0.0);
                        if self.stride == 1 {
                            let ix0 = valid.start + kx - self.pad;
                            out[valid.clone()].copy_from_slice(&src[ix0..ix0 + valid.len()]);
                        } else {
                            for ox in valid.clone() {
                                out[ox] = src[ox * self.stride + kx - self.pad];
                            }
                        }
                    }
                }
            }
        }
    }

    /// The adjoint of [`Geom::im2col`]: adds `col` (one image, row stride
    /// `P`) into the image gradient `gx`.
    fn col2im_add(&self, col: &[f32], gx: &mut [f32]) {
        let (p, wo) = (self.p(), self.wo);
        for ci in 0..self.cin {
            let plane = &mut gx[ci * self.h * self.w..(ci + 1) * self.h * self.w];
            for ky in 0..self.kh {
                for kx in 0..self.kw {
                    let r = (ci * self.kh + ky) * self.kw + kx;
                    let row = &col[r * p..(r + 1) * p];
                    let valid = self.valid_ox(kx);
                    for oy in 0..self.ho {
                        let Some(iy) = self.iy(oy, ky) else { continue };
                        let src = &row[oy * wo..(oy + 1) * wo];
                        let dst = &mut plane[iy * self.w..(iy + 1) * self.w];
                        if self.stride == 1 {
                            let ix0 = valid.start + kx - self.pad;
                            for (d, s) in dst[ix0..ix0 + valid.len()]
                                .iter_mut()
                                .zip(&src[valid.clone()])
                            {
                                *d += s;
                            }
                        } else {
                            for ox in valid.clone() {
                                dst[ox * self.stride + kx - self.pad] += src[ox];
                            }
                        }
                    }
                }
            }
        }
    }
}

/// Scratch buffers for the convolution kernels. Column matrices come from a
/// pool that work items take from and give back to, so only as many exist
/// as run at once (one per thread: they stay in cache) and a caller that
/// keeps its scratch (the hand-written training step) allocates nothing
/// after the first batch. Every buffer is overwritten before it is read,
/// so which one a work item gets does not change the numbers.
#[derive(Debug, Default)]
pub(crate) struct ConvScratch {
    pool: Mutex<Vec<Vec<f32>>>,
    /// Partial weight gradients, one per chunk (summed in chunk order).
    part: Vec<Vec<f32>>,
}

/// A buffer of at least `len` elements from `pool`.
fn take(pool: &Mutex<Vec<Vec<f32>>>, len: usize) -> Vec<f32> {
    let mut v = pool
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .pop()
        .unwrap_or_default();
    if v.len() < len {
        // A fresh zeroed allocation (calloc: no pass over the memory), not
        // `resize`, which writes every element.
        v = vec![0f32; len];
    }
    v
}

/// Gives a buffer of [`take`] back.
fn give(pool: &Mutex<Vec<Vec<f32>>>, v: Vec<f32>) {
    pool.lock().unwrap_or_else(|e| e.into_inner()).push(v);
}

/// At least `chunks` buffers of at least `len` elements each.
fn buffers(v: &mut Vec<Vec<f32>>, chunks: usize, len: usize) -> &mut [Vec<f32>] {
    if v.len() < chunks {
        v.resize_with(chunks, Vec::new);
    }
    for b in &mut v[..chunks] {
        if b.len() < len {
            b.resize(len, 0.0);
        }
    }
    &mut v[..chunks]
}

impl Geom {
    /// Work items (chunks of [`CHUNK`] images) of the batch.
    fn chunks(&self) -> usize {
        self.batch.div_ceil(CHUNK)
    }

    /// Forward: `out[B, Cout, Ho, Wo]` (overwritten) = `b + conv(x, w)`.
    pub(crate) fn forward(
        &self,
        x: &[f32],
        w: &[f32],
        b: &[f32],
        out: &mut [f32],
        scratch: &mut ConvScratch,
    ) {
        let (k, p) = (self.k(), self.p());
        let pool = &scratch.pool;
        out[..self.batch * self.out_len()]
            .par_chunks_mut(CHUNK * self.out_len())
            .zip(x[..self.batch * self.in_len()].par_chunks(CHUNK * self.in_len()))
            .for_each(|(out, x)| {
                let mut buf = take(pool, k * p);
                let col = &mut buf[..k * p];
                for (out, x) in out
                    .chunks_exact_mut(self.out_len())
                    .zip(x.chunks_exact(self.in_len()))
                {
                    for (row, &bias) in out.chunks_exact_mut(p).zip(b) {
                        row.fill(bias);
                    }
                    self.im2col(x, col, p);
                    matmul(
                        out,
                        p,
                        1,
                        Mat::rm(w, self.cout, k),
                        Mat::rm(col, k, p),
                        true,
                        1,
                    );
                }
                give(pool, buf);
            });
    }

    /// Weight gradient: `gw[Cout, Cin, kh, kw]` (overwritten) from the
    /// input `x` and the output gradient `go`; a partial sum per chunk,
    /// added in chunk order.
    pub(crate) fn weight_grad(
        &self,
        x: &[f32],
        go: &[f32],
        gw: &mut [f32],
        scratch: &mut ConvScratch,
    ) {
        let (k, p) = (self.k(), self.p());
        let chunks = self.chunks();
        let ConvScratch { pool, part } = scratch;
        let part = buffers(part, chunks, self.cout * k);
        let pool = &*pool;
        x[..self.batch * self.in_len()]
            .par_chunks(CHUNK * self.in_len())
            .zip(go[..self.batch * self.out_len()].par_chunks(CHUNK * self.out_len()))
            .zip(part.par_iter_mut())
            .for_each(|((x, go), part)| {
                let n = x.len() / self.in_len();
                let cols = n * p;
                // The chunk's column matrix [K, n·P] and gradient [Cout, n·P].
                let mut buf = take(pool, (k + self.cout) * CHUNK * p);
                let (col, gm) = buf.split_at_mut(k * cols);
                let gm = &mut gm[..self.cout * cols];
                for (j, (x, go)) in x
                    .chunks_exact(self.in_len())
                    .zip(go.chunks_exact(self.out_len()))
                    .enumerate()
                {
                    self.im2col(x, &mut col[j * p..], cols);
                    for (co, src) in go.chunks_exact(p).enumerate() {
                        gm[co * cols + j * p..co * cols + (j + 1) * p].copy_from_slice(src);
                    }
                }
                matmul(
                    &mut part[..self.cout * k],
                    k,
                    1,
                    Mat::rm(gm, self.cout, cols),
                    Mat::rm(col, k, cols).t(),
                    false,
                    1,
                );
                give(pool, buf);
            });
        let gw = &mut gw[..self.cout * k];
        gw.fill(0.0);
        for part in part.iter() {
            for (a, b) in gw.iter_mut().zip(part) {
                *a += b;
            }
        }
    }

    /// Input gradient: `gx[B, Cin, H, W]` (overwritten) from the output
    /// gradient `go` and the kernel `w`.
    pub(crate) fn input_grad(
        &self,
        go: &[f32],
        w: &[f32],
        gx: &mut [f32],
        scratch: &mut ConvScratch,
    ) {
        let (k, p) = (self.k(), self.p());
        let pool = &scratch.pool;
        let gx = &mut gx[..self.batch * self.in_len()];
        gx.fill(0.0);
        gx.par_chunks_mut(CHUNK * self.in_len())
            .zip(go[..self.batch * self.out_len()].par_chunks(CHUNK * self.out_len()))
            .for_each(|(gx, go)| {
                let mut buf = take(pool, k * p);
                let col = &mut buf[..k * p];
                for (gx, go) in gx
                    .chunks_exact_mut(self.in_len())
                    .zip(go.chunks_exact(self.out_len()))
                {
                    matmul(
                        col,
                        p,
                        1,
                        Mat::rm(w, self.cout, k).t(),
                        Mat::rm(go, self.cout, p),
                        false,
                        1,
                    );
                    self.col2im_add(col, gx);
                }
                give(pool, buf);
            });
    }
}

impl CustomOp3 for Conv2d {
    fn name(&self) -> &'static str {
        "ridgeline-conv2d"
    }

    fn cpu_fwd(
        &self,
        xs: &CpuStorage,
        xl: &Layout,
        ws: &CpuStorage,
        wl: &Layout,
        bs: &CpuStorage,
        bl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let g = Geom::new(xl.dims(), wl.dims(), self.stride, self.padding)?;
        let x = contiguous_f32(xs, xl, "conv2d input")?;
        let w = contiguous_f32(ws, wl, "conv2d kernel")?;
        let b = contiguous_f32(bs, bl, "conv2d bias")?;
        if b.len() != g.cout {
            candle_core::bail!("conv2d: bias of {} for {} filters", b.len(), g.cout)
        }
        let mut out = vec![0f32; g.batch * g.out_len()];
        g.forward(x, w, b, &mut out, &mut ConvScratch::default());
        let shape = Shape::from((g.batch, g.cout, g.ho, g.wo));
        Ok((CpuStorage::F32(out), shape))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _b: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let grad = grad.contiguous()?;
        let gx = if x.track_op() {
            Some(grad.apply_op2_no_bwd(
                w,
                &Conv2dInputGrad {
                    conv: *self,
                    input: x.dims().to_vec(),
                },
            )?)
        } else {
            None
        };
        let gw = x.apply_op2_no_bwd(
            &grad,
            &Conv2dWeightGrad {
                conv: *self,
                kernel: w.dims().to_vec(),
            },
        )?;
        let gb = grad.apply_op1_no_bwd(&ChannelSum)?;
        Ok((gx, Some(gw), Some(gb)))
    }
}

/// Weight gradient: `(x, grad_out) → gW` shaped like the kernel.
struct Conv2dWeightGrad {
    conv: Conv2d,
    kernel: Vec<usize>,
}

impl CustomOp2 for Conv2dWeightGrad {
    fn name(&self) -> &'static str {
        "ridgeline-conv2d-weight-grad"
    }

    fn cpu_fwd(
        &self,
        xs: &CpuStorage,
        xl: &Layout,
        gs: &CpuStorage,
        gl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let g = Geom::new(xl.dims(), &self.kernel, self.conv.stride, self.conv.padding)?;
        if gl.dims() != [g.batch, g.cout, g.ho, g.wo] {
            candle_core::bail!("conv2d weight grad: gradient shaped {:?}", gl.dims())
        }
        let x = contiguous_f32(xs, xl, "conv2d input")?;
        let go = contiguous_f32(gs, gl, "conv2d output gradient")?;
        let mut gw = vec![0f32; g.cout * g.k()];
        g.weight_grad(x, go, &mut gw, &mut ConvScratch::default());
        Ok((CpuStorage::F32(gw), Shape::from(self.kernel.clone())))
    }
}

/// Input gradient: `(grad_out, w) → gx` shaped like the input.
struct Conv2dInputGrad {
    conv: Conv2d,
    input: Vec<usize>,
}

impl CustomOp2 for Conv2dInputGrad {
    fn name(&self) -> &'static str {
        "ridgeline-conv2d-input-grad"
    }

    fn cpu_fwd(
        &self,
        gs: &CpuStorage,
        gl: &Layout,
        ws: &CpuStorage,
        wl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let g = Geom::new(&self.input, wl.dims(), self.conv.stride, self.conv.padding)?;
        if gl.dims() != [g.batch, g.cout, g.ho, g.wo] {
            candle_core::bail!("conv2d input grad: gradient shaped {:?}", gl.dims())
        }
        let go = contiguous_f32(gs, gl, "conv2d output gradient")?;
        let w = contiguous_f32(ws, wl, "conv2d kernel")?;
        let mut gx = vec![0f32; g.batch * g.in_len()];
        g.input_grad(go, w, &mut gx, &mut ConvScratch::default());
        Ok((CpuStorage::F32(gx), Shape::from(self.input.clone())))
    }
}

/// `out[c] = Σ` over batch and positions of `v[B, C, inner]`, accumulated
/// in f64 in a fixed order (a bias gradient); `out` overwritten.
pub(crate) fn channel_sum(v: &[f32], batch: usize, c: usize, inner: usize, out: &mut [f32]) {
    let mut acc = [0f64; 64];
    let mut heap;
    let acc: &mut [f64] = if c <= acc.len() {
        &mut acc[..c]
    } else {
        heap = vec![0f64; c];
        &mut heap
    };
    if c == 0 || inner == 0 {
        // Nothing to add.
    } else if inner == 1 {
        // [B, C]: add row by row (vectorises over C).
        for row in v.chunks_exact(c).take(batch) {
            for (a, &x) in acc.iter_mut().zip(row) {
                *a += x as f64;
            }
        }
    } else {
        // Per image, each row's sum from left to right, then added to its
        // channel's total: eight rows at a time, so that eight independent
        // additions are in flight instead of one chain (the same numbers as
        // summing row by row).
        const ROWS: usize = 8;
        for img in v.chunks_exact(c * inner).take(batch) {
            for (acc, rows) in acc.chunks_mut(ROWS).zip(img.chunks(ROWS * inner)) {
                let n = acc.len();
                let mut s = [0f64; ROWS];
                if n == ROWS {
                    let r: [&[f32]; ROWS] =
                        std::array::from_fn(|j| &rows[j * inner..(j + 1) * inner]);
                    #[allow(clippy::needless_range_loop)] // i indexes eight rows
                    for i in 0..inner {
                        for j in 0..ROWS {
                            s[j] += r[j][i] as f64;
                        }
                    }
                } else {
                    for (s, row) in s.iter_mut().zip(rows.chunks_exact(inner)) {
                        *s = row.iter().map(|&x| x as f64).sum::<f64>();
                    }
                }
                for (a, s) in acc.iter_mut().zip(&s[..n]) {
                    *a += s;
                }
            }
        }
    }
    for (o, a) in out[..c].iter_mut().zip(acc.iter()) {
        *o = *a as f32;
    }
}

/// `[B, C, ...] → [C]`: the sum over every dimension but the second (a
/// bias gradient), accumulated in f64 in a fixed order.
pub(crate) struct ChannelSum;

impl CustomOp1 for ChannelSum {
    fn name(&self) -> &'static str {
        "ridgeline-channel-sum"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let dims = l.dims();
        if dims.len() < 2 {
            candle_core::bail!("channel sum of a tensor shaped {dims:?}")
        }
        let (batch, c) = (dims[0], dims[1]);
        let inner: usize = dims[2..].iter().product();
        let v = contiguous_f32(s, l, "channel sum input")?;
        let mut out = vec![0f32; c];
        channel_sum(v, batch, c, inner, &mut out);
        Ok((CpuStorage::F32(out), Shape::from(c)))
    }
}

#[cfg(test)]
mod tests {
    use candle_core::Var;

    use super::*;
    use crate::engine::ops::tests::{assert_close, assert_same_gradients, randn};

    /// Forward and all three gradients against candle's reference ops, for
    /// odd sizes, several paddings and strides.
    #[test]
    fn conv2d_matches_candle_forward_and_backward() {
        for (i, &(b, cin, h, w, cout, k, stride, pad)) in [
            (3, 1, 7, 6, 4, 3, 1, 1),
            (2, 3, 9, 8, 5, 3, 1, 1),
            (9, 2, 8, 8, 3, 3, 2, 1),
            (2, 2, 6, 7, 3, 5, 1, 2),
            (1, 4, 5, 5, 2, 1, 1, 0),
            (2, 3, 7, 7, 2, 3, 2, 0),
        ]
        .iter()
        .enumerate()
        {
            let seed = i as u64 * 10;
            // The input is a variable too, so its gradient is checked.
            let x = Var::from_tensor(&randn(&[b, cin, h, w], seed)).unwrap();
            let wt = Var::from_tensor(&randn(&[cout, cin, k, k], seed + 1)).unwrap();
            let bias = Var::from_tensor(&randn(&[cout], seed + 2)).unwrap();
            // A non-uniform upstream gradient: loss = Σ y·r.
            let y = conv2d(x.as_tensor(), wt.as_tensor(), bias.as_tensor(), stride, pad).unwrap();
            let reference = x
                .as_tensor()
                .conv2d(wt.as_tensor(), pad, stride, 1, 1)
                .unwrap()
                .broadcast_add(&bias.as_tensor().reshape((1, cout, 1, 1)).unwrap())
                .unwrap();
            assert_eq!(y.dims(), reference.dims());
            assert_close(&y, &reference, 1e-4, "conv2d forward");
            assert_same_gradients(
                y,
                reference,
                &[(&x, "input"), (&wt, "weight"), (&bias, "bias")],
                seed + 3,
                &format!("conv2d, case {i}"),
            );
        }
    }

    /// The bias gradient sums eight rows at a time: the same numbers as
    /// one row after the other (with a channel count that is not a multiple
    /// of eight).
    #[test]
    fn channel_sum_is_the_row_by_row_sum() {
        let (b, c, inner) = (3, 19, 37);
        let v = randn(&[b, c, inner], 9)
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        let mut out = vec![0f32; c];
        channel_sum(&v, b, c, inner, &mut out);
        let mut acc = vec![0f64; c];
        for img in v.chunks_exact(c * inner) {
            for (a, row) in acc.iter_mut().zip(img.chunks_exact(inner)) {
                *a += row.iter().map(|&x| x as f64).sum::<f64>();
            }
        }
        let want: Vec<f32> = acc.iter().map(|&a| a as f32).collect();
        assert_eq!(out, want);
    }

    #[test]
    fn no_input_gradient_for_data() {
        let x = randn(&[2, 1, 5, 5], 1);
        let wt = Var::from_tensor(&randn(&[2, 1, 3, 3], 2)).unwrap();
        let bias = Var::from_tensor(&randn(&[2], 3)).unwrap();
        let y = conv2d(&x, wt.as_tensor(), bias.as_tensor(), 1, 1).unwrap();
        let g = y.sum_all().unwrap().backward().unwrap();
        assert!(g.get(&x).is_none());
        assert!(g.get(wt.as_tensor()).is_some() && g.get(bias.as_tensor()).is_some());
    }
}
