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
        out.par_chunks_mut(PLANES * ho * wo)
            .zip(x.par_chunks(PLANES * h * w))
            .for_each(|(out, x)| {
                for (out, plane) in out.chunks_exact_mut(ho * wo).zip(x.chunks_exact(h * w)) {
                    for oy in 0..ho {
                        for ox in 0..wo {
                            out[oy * wo + ox] = window_max(plane, w, oy, ox).1.max(0.0);
                        }
                    }
                }
            });
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
        gx.par_chunks_mut(PLANES * h * w)
            .zip(x.par_chunks(PLANES * h * w))
            .zip(g.par_chunks(PLANES * ho * wo))
            .for_each(|((gx, x), g)| {
                for ((gx, plane), g) in gx
                    .chunks_exact_mut(h * w)
                    .zip(x.chunks_exact(h * w))
                    .zip(g.chunks_exact(ho * wo))
                {
                    for oy in 0..ho {
                        for ox in 0..wo {
                            let (i, v) = window_max(plane, w, oy, ox);
                            if v > 0.0 {
                                gx[i] = g[oy * wo + ox];
                            }
                        }
                    }
                }
            });
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
