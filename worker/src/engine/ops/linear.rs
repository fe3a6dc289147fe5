//! A fully connected layer `y = x·Wᵀ + b` as one op.
//!
//! **Why.** `candle_nn::Linear` is a matmul and a broadcast add. Their
//! backward computes `∂L/∂x` even when `x` is the data batch (for the
//! 784-256 layer that is a third of the step's flops), reduces the bias
//! gradient with `sum_keepdim(0)` (0.76 ms on 1797×128 against 0.013 ms in
//! PyTorch), and adds every gradient into a fresh zero tensor. Here the
//! bias is the gemm's starting value, the weight and input gradients are
//! one gemm each (the latter only when `x` tracks a gradient), and the bias
//! gradient a row sum.

use candle_core::{CpuStorage, CustomOp2, CustomOp3, Layout, Result, Shape, Tensor};

use super::conv::ChannelSum;
use super::gemm::{matmul, Mat};
use super::{contiguous_f32, use_fast_path};

/// `x·Wᵀ + b` for `x: [B, in]`, `w: [out, in]`, `b: [out]`; `x` of higher
/// rank is flattened from its second dimension.
pub fn linear(x: &Tensor, w: &Tensor, b: &Tensor) -> Result<Tensor> {
    let x = if x.rank() == 2 {
        x.clone()
    } else {
        x.flatten_from(1)?
    };
    if !use_fast_path(&[&x, w, b]) {
        return x.matmul(&w.t()?)?.broadcast_add(b);
    }
    x.contiguous()?
        .apply_op3(&w.contiguous()?, &b.contiguous()?, Linear { relu: false })
}

/// `relu(x·Wᵀ + b)` as one op (same shapes as [`linear`]): the ReLU is
/// applied to the gemm's output in place, and its backward masks the
/// output gradient before the layer's gemms, instead of candle's `relu`
/// node (its own output tensor, and five full-size ops and allocations
/// backward).
pub fn linear_relu(x: &Tensor, w: &Tensor, b: &Tensor) -> Result<Tensor> {
    let x = if x.rank() == 2 {
        x.clone()
    } else {
        x.flatten_from(1)?
    };
    if !use_fast_path(&[&x, w, b]) {
        return x.matmul(&w.t()?)?.broadcast_add(b)?.relu();
    }
    x.contiguous()?
        .apply_op3(&w.contiguous()?, &b.contiguous()?, Linear { relu: true })
}

/// Multiply-adds (m·n·k) below which a gemm runs on the calling thread:
/// for small products (the 64-wide MLP, the CNN's head) handing part of it
/// to another thread costs more than it saves. Larger ones are split by the
/// `gemm` crate over rayon's pool. Depends on the sizes only, so results do
/// not depend on the thread count.
const PARALLEL_MIN_WORK: usize = 4 << 20;

/// `dst = a · b` (row-major `a.rows × b.cols`, `accumulate` as in
/// [`matmul`]), multithreaded only above [`PARALLEL_MIN_WORK`].
pub(crate) fn linear_matmul(dst: &mut [f32], a: Mat<'_>, b: Mat<'_>, accumulate: bool) {
    let threads = if a.rows * b.cols * a.cols < PARALLEL_MIN_WORK {
        1
    } else {
        rayon::current_num_threads()
    };
    matmul(dst, b.cols, 1, a, b, accumulate, threads);
}

/// The forward kernel of [`linear`] / [`linear_relu`] on slices: `y[B,
/// out] = relu?(b + x[B, in]·w[out, in]ᵀ)`, `y` overwritten.
#[allow(clippy::too_many_arguments)]
pub(crate) fn linear_forward(
    y: &mut [f32],
    x: &[f32],
    w: &[f32],
    b: &[f32],
    batch: usize,
    fan_in: usize,
    fan_out: usize,
    relu: bool,
) {
    for row in y[..batch * fan_out].chunks_exact_mut(fan_out.max(1)) {
        row.copy_from_slice(b);
    }
    linear_matmul(
        &mut y[..batch * fan_out],
        Mat::rm(x, batch, fan_in),
        Mat::rm(w, fan_out, fan_in).t(),
        true,
    );
    if relu {
        for v in &mut y[..batch * fan_out] {
            *v = v.max(0.0);
        }
    }
}

/// The ReLU's backward from its output, in place: `g ← g·[y > 0]` (as
/// [`ReluMask`] computes it).
pub(crate) fn relu_mask_inplace(g: &mut [f32], y: &[f32]) {
    // A select, not a branch (which mispredicts on half the values).
    for (g, &y) in g.iter_mut().zip(y) {
        *g = if y > 0.0 { *g } else { 0.0 };
    }
}

struct Linear {
    relu: bool,
}

impl CustomOp3 for Linear {
    fn name(&self) -> &'static str {
        "ridgeline-linear"
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
        let (&[batch, fan_in], &[fan_out, fan_in2], &[nb]) = (xl.dims(), wl.dims(), bl.dims())
        else {
            candle_core::bail!(
                "linear: input {:?}, weight {:?}, bias {:?}",
                xl.dims(),
                wl.dims(),
                bl.dims()
            )
        };
        if fan_in != fan_in2 || nb != fan_out {
            candle_core::bail!(
                "linear: input {:?} does not fit weight {:?} and bias {:?}",
                xl.dims(),
                wl.dims(),
                bl.dims()
            )
        }
        let x = contiguous_f32(xs, xl, "linear input")?;
        let w = contiguous_f32(ws, wl, "linear weight")?;
        let b = contiguous_f32(bs, bl, "linear bias")?;
        let mut y = vec![0f32; batch * fan_out];
        linear_forward(&mut y, x, w, b, batch, fan_in, fan_out, self.relu);
        Ok((CpuStorage::F32(y), Shape::from((batch, fan_out))))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _b: &Tensor,
        res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let grad = grad.contiguous()?;
        // Through the ReLU: the gradient where the output is positive.
        let grad = if self.relu {
            grad.apply_op2_no_bwd(res, &ReluMask)?
        } else {
            grad
        };
        // ∂L/∂x = G·W, only when x needs it.
        let gx = if x.track_op() {
            Some(grad.apply_op2_no_bwd(
                w,
                &MatMul {
                    ta: false,
                    tb: false,
                },
            )?)
        } else {
            None
        };
        // ∂L/∂W = Gᵀ·x.
        let gw = grad.apply_op2_no_bwd(
            x,
            &MatMul {
                ta: true,
                tb: false,
            },
        )?;
        let gb = grad.apply_op1_no_bwd(&ChannelSum)?;
        Ok((gx, Some(gw), Some(gb)))
    }
}

/// `op(a)·op(b)` of two contiguous matrices, `op` the transpose where asked.
pub(crate) struct MatMul {
    pub ta: bool,
    pub tb: bool,
}

impl CustomOp2 for MatMul {
    fn name(&self) -> &'static str {
        "ridgeline-matmul"
    }

    fn cpu_fwd(
        &self,
        a_s: &CpuStorage,
        al: &Layout,
        b_s: &CpuStorage,
        bl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (&[ar, ac], &[br, bc]) = (al.dims(), bl.dims()) else {
            candle_core::bail!("matmul of {:?} and {:?}", al.dims(), bl.dims())
        };
        let a = Mat::rm(contiguous_f32(a_s, al, "matmul lhs")?, ar, ac);
        let b = Mat::rm(contiguous_f32(b_s, bl, "matmul rhs")?, br, bc);
        let a = if self.ta { a.t() } else { a };
        let b = if self.tb { b.t() } else { b };
        if a.cols != b.rows {
            candle_core::bail!("matmul of {:?} and {:?}", al.dims(), bl.dims())
        }
        let mut out = vec![0f32; a.rows * b.cols];
        linear_matmul(&mut out, a, b, false);
        Ok((CpuStorage::F32(out), Shape::from((a.rows, b.cols))))
    }
}

/// `(grad, y) → grad · [y > 0]`, the ReLU's backward from its output.
struct ReluMask;

impl CustomOp2 for ReluMask {
    fn name(&self) -> &'static str {
        "ridgeline-relu-mask"
    }

    fn cpu_fwd(
        &self,
        gs: &CpuStorage,
        gl: &Layout,
        ys: &CpuStorage,
        yl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let g = contiguous_f32(gs, gl, "relu mask gradient")?;
        let y = contiguous_f32(ys, yl, "relu mask output")?;
        if g.len() != y.len() {
            candle_core::bail!("relu mask: {:?} against {:?}", gl.dims(), yl.dims())
        }
        let out = g
            .iter()
            .zip(y)
            .map(|(&g, &y)| if y > 0.0 { g } else { 0.0 })
            .collect();
        Ok((CpuStorage::F32(out), gl.shape().clone()))
    }
}

#[cfg(test)]
mod tests {
    use candle_core::Var;

    use super::*;
    use crate::engine::ops::tests::{assert_close, assert_same_gradients, randn};

    #[test]
    fn linear_matches_candle_forward_and_backward() {
        for (i, &(batch, fan_in, fan_out)) in [(5, 7, 3), (64, 33, 17), (1, 4, 1), (130, 70, 9)]
            .iter()
            .enumerate()
        {
            let seed = 100 + 10 * i as u64;
            let x = Var::from_tensor(&randn(&[batch, fan_in], seed)).unwrap();
            let w = Var::from_tensor(&randn(&[fan_out, fan_in], seed + 1)).unwrap();
            let b = Var::from_tensor(&randn(&[fan_out], seed + 2)).unwrap();
            let y = linear(x.as_tensor(), w.as_tensor(), b.as_tensor()).unwrap();
            let reference = candle_core::Module::forward(
                &candle_nn::Linear::new(w.as_tensor().clone(), Some(b.as_tensor().clone())),
                x.as_tensor(),
            )
            .unwrap();
            assert_close(&y, &reference, 1e-5, "linear forward");
            assert_same_gradients(
                y,
                reference,
                &[(&x, "input"), (&w, "weight"), (&b, "bias")],
                seed + 3,
                &format!("linear, case {i}"),
            );
        }
    }

    #[test]
    fn linear_relu_matches_candle_forward_and_backward() {
        // The last case is large enough for the multithreaded gemm.
        for (i, &(batch, fan_in, fan_out)) in [(5, 7, 3), (64, 33, 17), (1, 4, 1), (64, 784, 256)]
            .iter()
            .enumerate()
        {
            let seed = 200 + 10 * i as u64;
            let x = Var::from_tensor(&randn(&[batch, fan_in], seed)).unwrap();
            let w = Var::from_tensor(&randn(&[fan_out, fan_in], seed + 1)).unwrap();
            let b = Var::from_tensor(&randn(&[fan_out], seed + 2)).unwrap();
            let y = linear_relu(x.as_tensor(), w.as_tensor(), b.as_tensor()).unwrap();
            let reference = candle_core::Module::forward(
                &candle_nn::Linear::new(w.as_tensor().clone(), Some(b.as_tensor().clone())),
                x.as_tensor(),
            )
            .unwrap()
            .relu()
            .unwrap();
            assert_close(&y, &reference, 1e-4, "linear relu forward");
            assert_same_gradients(
                y,
                reference,
                &[(&x, "input"), (&w, "weight"), (&b, "bias")],
                seed + 3,
                &format!("linear relu, case {i}"),
            );
        }
    }

    #[test]
    fn no_input_gradient_for_data_and_images_are_flattened() {
        let x = randn(&[3, 2, 2, 2], 1);
        let w = Var::from_tensor(&randn(&[4, 8], 2)).unwrap();
        let b = Var::from_tensor(&randn(&[4], 3)).unwrap();
        let y = linear(&x, w.as_tensor(), b.as_tensor()).unwrap();
        assert_eq!(y.dims(), &[3, 4]);
        let g = y.sum_all().unwrap().backward().unwrap();
        assert!(g.get(&x).is_none());
        assert!(g.get(w.as_tensor()).is_some());
    }
}
