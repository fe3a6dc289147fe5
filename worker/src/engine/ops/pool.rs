//! ReLU followed by 2×2 max pooling (stride 2), as one op.
//!
//! **Why.** candle's `max_pool2d` backward builds the gradient from about
//! seven full-size tensor ops (upsample, compare, cast, average-pool,
//! multiply, upsample, multiply), and `relu`'s from three more, on the
//! largest activations of the CNN (64×16×28×28 per step). Since
//! `max(relu(a), relu(b)) = relu(max(a, b))`, one pass over the input gives
//! the output, and one pass gives the gradient: each window's gradient goes
//! to its (first) largest input when that is positive, as in PyTorch.

use candle_core::{CpuStorage, CustomOp1, CustomOp2, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use super::{contiguous_f32, use_fast_path};

/// `max_pool2d(relu(x), 2)` for `x: [B, C, H, W]` (odd edges dropped).
pub fn relu_max_pool2d(x: &Tensor) -> Result<Tensor> {
    if !use_fast_path(&[x]) {
        return x.relu()?.max_pool2d(2);
    }
    x.contiguous()?.apply_op1(ReluMaxPool)
}

/// Planes (one channel of one image) per work item.
const PLANES: usize = 16;

fn dims(l: &Layout) -> Result<(usize, usize, usize)> {
    match l.dims() {
        &[b, c, h, w] if h >= 2 && w >= 2 => Ok((b * c, h, w)),
        d => candle_core::bail!("relu + 2×2 max pool of a tensor shaped {d:?}"),
    }
}

/// Index (within the plane) of the first largest value of the window at
/// output (oy, ox), and that value.
#[inline]
fn window_max(plane: &[f32], w: usize, oy: usize, ox: usize) -> (usize, f32) {
    let i = 2 * oy * w + 2 * ox;
    let mut best = (i, plane[i]);
    for j in [i + 1, i + w, i + w + 1] {
        if plane[j] > best.1 {
            best = (j, plane[j]);
        }
    }
    best
}

/// The forward kernel: `out[planes, h/2, w/2]` (overwritten) from `x[planes,
/// h, w]`.
pub(crate) fn relu_max_pool_forward(x: &[f32], out: &mut [f32], planes: usize, h: usize, w: usize) {
    let (ho, wo) = (h / 2, w / 2);
    out[..planes * ho * wo]
        .par_chunks_mut(PLANES * ho * wo)
        .zip(x[..planes * h * w].par_chunks(PLANES * h * w))
        .for_each(|(out, x)| {
            for (out, plane) in out.chunks_exact_mut(ho * wo).zip(x.chunks_exact(h * w)) {
                for oy in 0..ho {
                    for ox in 0..wo {
                        out[oy * wo + ox] = window_max(plane, w, oy, ox).1.max(0.0);
                    }
                }
            }
        });
}

/// The backward kernel: `gx[planes, h, w]` (overwritten) from the input `x`
/// and the output gradient `g[planes, h/2, w/2]`.
pub(crate) fn relu_max_pool_backward(
    x: &[f32],
    g: &[f32],
    gx: &mut [f32],
    planes: usize,
    h: usize,
    w: usize,
) {
    let (ho, wo) = (h / 2, w / 2);
    gx[..planes * h * w]
        .par_chunks_mut(PLANES * h * w)
        .zip(x[..planes * h * w].par_chunks(PLANES * h * w))
        .zip(g[..planes * ho * wo].par_chunks(PLANES * ho * wo))
        .for_each(|((gx, x), g)| {
            for ((gx, plane), g) in gx
                .chunks_exact_mut(h * w)
                .zip(x.chunks_exact(h * w))
                .zip(g.chunks_exact(ho * wo))
            {
                // One pass: every window's four values (zero but at its
                // first largest value, when that is positive; as
                // `window_max`, with selects instead of unpredictable
                // branches), then the odd edges no window covers.
                for oy in 0..ho {
                    let r = 2 * oy * w;
                    let (x0, x1) = (&plane[r..r + 2 * wo], &plane[r + w..r + w + 2 * wo]);
                    let g = &g[oy * wo..(oy + 1) * wo];
                    let (q0, q1) = gx[r..r + 2 * w].split_at_mut(w);
                    for ((((q0, q1), x0), x1), &g) in q0[..2 * wo]
                        .chunks_exact_mut(2)
                        .zip(q1[..2 * wo].chunks_exact_mut(2))
                        .zip(x0.chunks_exact(2))
                        .zip(x1.chunks_exact(2))
                        .zip(g)
                    {
                        let (a, b, c, d) = (x0[0], x0[1], x1[0], x1[1]);
                        let gt_b = b > a;
                        let m = if gt_b { b } else { a };
                        let gt_c = c > m;
                        let m = if gt_c { c } else { m };
                        let gt_d = d > m;
                        let m = if gt_d { d } else { m };
                        let v = if m > 0.0 { g } else { 0.0 };
                        // The winner is the last of b, c, d that beat the
                        // running maximum, else a.
                        let (wd, wc) = (gt_d, gt_c & !gt_d);
                        let wb = gt_b & !gt_c & !gt_d;
                        let wa = !(gt_b | gt_c | gt_d);
                        q0[0] = if wa { v } else { 0.0 };
                        q0[1] = if wb { v } else { 0.0 };
                        q1[0] = if wc { v } else { 0.0 };
                        q1[1] = if wd { v } else { 0.0 };
                    }
                    if w % 2 == 1 {
                        q0[w - 1] = 0.0;
                        q1[w - 1] = 0.0;
                    }
                }
                gx[2 * ho * w..].fill(0.0);
            }
        });
}

/// The first largest of a window's values `a, b, c, d` (in that order,
/// as [`window_max`]: a later value wins only if strictly larger), as
/// (position 0..4, value), with selects rather than branches.
#[inline]
fn first_max(a: f32, b: f32, c: f32, d: f32) -> (u8, f32) {
    let gt_b = b > a;
    let m = if gt_b { b } else { a };
    let gt_c = c > m;
    let m = if gt_c { c } else { m };
    let gt_d = d > m;
    let m = if gt_d { d } else { m };
    let pos = if gt_d {
        3
    } else if gt_c {
        2
    } else if gt_b {
        1
    } else {
        0
    };
    (pos, m)
}

/// [`relu_max_pool_forward`] that also records, per window, the position
/// of its first largest value (`arg[planes, h/2, w/2]`, 0..4 in reading
/// order), for [`relu_max_pool_backward_from_arg`]: the same outputs.
pub(crate) fn relu_max_pool_forward_arg(
    x: &[f32],
    out: &mut [f32],
    arg: &mut [u8],
    planes: usize,
    h: usize,
    w: usize,
) {
    let (ho, wo) = (h / 2, w / 2);
    out[..planes * ho * wo]
        .par_chunks_mut(PLANES * ho * wo)
        .zip(arg[..planes * ho * wo].par_chunks_mut(PLANES * ho * wo))
        .zip(x[..planes * h * w].par_chunks(PLANES * h * w))
        .for_each(|((out, arg), x)| {
            for ((out, arg), plane) in out
                .chunks_exact_mut(ho * wo)
                .zip(arg.chunks_exact_mut(ho * wo))
                .zip(x.chunks_exact(h * w))
            {
                for oy in 0..ho {
                    let r = 2 * oy * w;
                    let (x0, x1) = (&plane[r..r + 2 * wo], &plane[r + w..r + w + 2 * wo]);
                    for (((o, a), x0), x1) in out[oy * wo..(oy + 1) * wo]
                        .iter_mut()
                        .zip(&mut arg[oy * wo..(oy + 1) * wo])
                        .zip(x0.chunks_exact(2))
                        .zip(x1.chunks_exact(2))
                    {
                        let (pos, m) = first_max(x0[0], x0[1], x1[0], x1[1]);
                        *o = m.max(0.0);
                        *a = pos;
                    }
                }
            }
        });
}

/// [`relu_max_pool_backward`] from the forward's outputs `y` and window
/// positions `arg` instead of its input: the same gradient (a window passes
/// its gradient where its output is positive, i.e. its maximum is).
pub(crate) fn relu_max_pool_backward_from_arg(
    y: &[f32],
    arg: &[u8],
    g: &[f32],
    gx: &mut [f32],
    planes: usize,
    h: usize,
    w: usize,
) {
    let (ho, wo) = (h / 2, w / 2);
    gx[..planes * h * w]
        .par_chunks_mut(PLANES * h * w)
        .zip(y[..planes * ho * wo].par_chunks(PLANES * ho * wo))
        .zip(arg[..planes * ho * wo].par_chunks(PLANES * ho * wo))
        .zip(g[..planes * ho * wo].par_chunks(PLANES * ho * wo))
        .for_each(|(((gx, y), arg), g)| {
            for (((gx, y), arg), g) in gx
                .chunks_exact_mut(h * w)
                .zip(y.chunks_exact(ho * wo))
                .zip(arg.chunks_exact(ho * wo))
                .zip(g.chunks_exact(ho * wo))
            {
                for oy in 0..ho {
                    let r = 2 * oy * w;
                    let (q0, q1) = gx[r..r + 2 * w].split_at_mut(w);
                    let row = oy * wo..(oy + 1) * wo;
                    for ((((q0, q1), &y), &pos), &g) in q0[..2 * wo]
                        .chunks_exact_mut(2)
                        .zip(q1[..2 * wo].chunks_exact_mut(2))
                        .zip(&y[row.clone()])
                        .zip(&arg[row.clone()])
                        .zip(&g[row])
                    {
                        let v = if y > 0.0 { g } else { 0.0 };
                        q0[0] = if pos == 0 { v } else { 0.0 };
                        q0[1] = if pos == 1 { v } else { 0.0 };
                        q1[0] = if pos == 2 { v } else { 0.0 };
                        q1[1] = if pos == 3 { v } else { 0.0 };
                    }
                    if w % 2 == 1 {
                        q0[w - 1] = 0.0;
                        q1[w - 1] = 0.0;
                    }
                }
                gx[2 * ho * w..].fill(0.0);
            }
        });
}

struct ReluMaxPool;

impl CustomOp1 for ReluMaxPool {
    fn name(&self) -> &'static str {
        "ridgeline-relu-max-pool2d"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let (planes, h, w) = dims(l)?;
        let (ho, wo) = (h / 2, w / 2);
        let x = contiguous_f32(s, l, "relu max pool input")?;
        let mut out = vec![0f32; planes * ho * wo];
        relu_max_pool_forward(x, &mut out, planes, h, w);
        let d = l.dims();
        Ok((CpuStorage::F32(out), Shape::from((d[0], d[1], ho, wo))))
    }

    fn bwd(&self, x: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        Ok(Some(
            x.apply_op2_no_bwd(&grad.contiguous()?, &ReluMaxPoolGrad)?,
        ))
    }
}

/// `(x, grad_out) → grad_x` of [`ReluMaxPool`].
struct ReluMaxPoolGrad;

impl CustomOp2 for ReluMaxPoolGrad {
    fn name(&self) -> &'static str {
        "ridgeline-relu-max-pool2d-grad"
    }

    fn cpu_fwd(
        &self,
        xs: &CpuStorage,
        xl: &Layout,
        gs: &CpuStorage,
        gl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (planes, h, w) = dims(xl)?;
        let (ho, wo) = (h / 2, w / 2);
        if gl.dims().iter().product::<usize>() != planes * ho * wo {
            candle_core::bail!(
                "relu max pool grad: gradient {:?} for input {:?}",
                gl.dims(),
                xl.dims()
            )
        }
        let x = contiguous_f32(xs, xl, "relu max pool input")?;
        let g = contiguous_f32(gs, gl, "relu max pool gradient")?;
        let mut gx = vec![0f32; planes * h * w];
        relu_max_pool_backward(x, g, &mut gx, planes, h, w);
        Ok((CpuStorage::F32(gx), xl.shape().clone()))
    }
}

#[cfg(test)]
mod tests {
    use candle_core::{Device, Var};

    use super::*;
    use crate::engine::ops::tests::{assert_close, randn};

    /// Σ relu_max_pool2d(x)·r, in f64.
    fn objective(x: &[f32], shape: &[usize], r: &Tensor) -> f64 {
        let x = Tensor::from_slice(x, shape, &Device::Cpu).unwrap();
        let y = relu_max_pool2d(&x).unwrap();
        (y.to_dtype(candle_core::DType::F64).unwrap()
            * r.to_dtype(candle_core::DType::F64).unwrap())
        .unwrap()
        .sum_all()
        .unwrap()
        .to_scalar::<f64>()
        .unwrap()
    }

    /// The kernels that record each window's maximum give the same outputs
    /// and gradients as those that look at the input again, ties, zeros
    /// and odd edges included.
    #[test]
    fn recorded_window_maxima_give_the_same_numbers() {
        for (i, &(planes, h, w)) in [(3, 6, 6), (2, 7, 5), (5, 4, 9), (1, 2, 2)]
            .iter()
            .enumerate()
        {
            // Coarse values: many ties, zeros and negatives.
            let x: Vec<f32> = randn(&[planes * h * w], 600 + i as u64)
                .to_vec1::<f32>()
                .unwrap()
                .iter()
                .map(|v| (v * 2.0).round() / 2.0)
                .collect();
            let (ho, wo) = (h / 2, w / 2);
            let g = randn(&[planes * ho * wo], 700 + i as u64)
                .to_vec1::<f32>()
                .unwrap();
            let mut out = vec![1f32; planes * ho * wo];
            relu_max_pool_forward(&x, &mut out, planes, h, w);
            let mut gx = vec![1f32; planes * h * w];
            relu_max_pool_backward(&x, &g, &mut gx, planes, h, w);
            let mut out2 = vec![2f32; planes * ho * wo];
            let mut arg = vec![9u8; planes * ho * wo];
            relu_max_pool_forward_arg(&x, &mut out2, &mut arg, planes, h, w);
            let mut gx2 = vec![2f32; planes * h * w];
            relu_max_pool_backward_from_arg(&out2, &arg, &g, &mut gx2, planes, h, w);
            assert_eq!(out, out2, "case {i}: forward");
            assert_eq!(gx, gx2, "case {i}: backward");
        }
    }

    /// Forward against candle's `relu` + `max_pool2d`; backward against
    /// central finite differences (the function is piecewise linear, so
    /// they are exact up to rounding). Not against candle's backward:
    /// candle 0.11's `max_pool2d` gradient is scaled by (number of maxima
    /// in the window)/4, i.e. a quarter of the true gradient for a unique
    /// maximum, where PyTorch (and this op) pass it whole.
    #[test]
    fn relu_max_pool_matches_candle_forward_and_finite_differences() {
        for (i, shape) in [[2, 3, 6, 6], [3, 2, 7, 5], [1, 1, 2, 2], [2, 5, 4, 9]]
            .iter()
            .enumerate()
        {
            let x = Var::from_tensor(&randn(shape, 300 + i as u64)).unwrap();
            let y = relu_max_pool2d(x.as_tensor()).unwrap();
            let reference = x.as_tensor().relu().unwrap().max_pool2d(2).unwrap();
            assert_close(&y, &reference, 0.0, "relu max pool forward");
            let r = randn(y.dims(), 400 + i as u64);
            let g = (y * &r).unwrap().sum_all().unwrap().backward().unwrap();
            let g = g
                .get(&x)
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1::<f32>()
                .unwrap();
            let host = x
                .as_tensor()
                .flatten_all()
                .unwrap()
                .to_vec1::<f32>()
                .unwrap();
            let eps = 1e-3f32;
            for j in 0..host.len() {
                let (mut up, mut down) = (host.clone(), host.clone());
                up[j] += eps;
                down[j] -= eps;
                let fd =
                    (objective(&up, shape, &r) - objective(&down, shape, &r)) / (2.0 * eps as f64);
                assert!(
                    (fd - g[j] as f64).abs() < 1e-2,
                    "case {i}, element {j}: gradient {}, finite difference {fd}",
                    g[j]
                );
            }
        }
    }
}
