//! Fast CPU kernels for the built-in models, as candle custom ops.
//!
//! candle 0.11's own CPU ops were measured to be the bottleneck of the
//! engine (profile in `bench/RESULTS.md`, "Where the time goes"); each op
//! here replaces a specific slow spot and says why in its module:
//!
//! | op | replaces | main reason |
//! |---|---|---|
//! | [`conv2d`] | `conv2d` + bias | backward: direct `conv_transpose2d`, no gemm |
//! | [`linear`] | `candle_nn::Linear` | input gradient of the data; bias via `sum_keepdim(0)` |
//! | [`linear_relu`] | `candle_nn::Linear` + `relu` | as `linear`; relu backward is five full-size ops |
//! | [`relu_max_pool2d`] | `relu` + `max_pool2d(2)` | pool backward is ~7 full-size tensor ops |
//! | [`cross_entropy`] | `candle_nn::loss::cross_entropy` | ~15 tiny ops per step |
//! | [`summarize`] | cross-entropy, `argmax`, `eq`, sums | nine tiny ops per evaluation batch |
//! | [`axpy`] | `affine` + `add` (+ `relu`) | a line search point's first layer: 2-3 full-size passes |
//!
//! Every training op computes a gradient only for arguments that track one
//! (data inputs get none; the two evaluation ops have no backward), runs on rayon's pool (`RAYON_NUM_THREADS`) with a
//! result that does not depend on the thread count, and falls back to
//! candle's own ops off the CPU or for dtypes other than f32, so a CUDA build
//! behaves as before. Tests compare each op, forward and backward, with
//! candle's reference ops.
//!
//! The kernels behind the ops are plain functions on slices
//! (`linear_forward`, `Geom::forward`/`weight_grad`/`input_grad`,
//! `relu_max_pool_forward`/`_backward`, `cross_entropy_forward`/`_grad`,
//! `channel_sum`), which the hand-written training step of
//! `engine::train` calls on its own buffers: both paths run the same code.

pub(crate) mod axpy;
pub(crate) mod conv;
pub(crate) mod gemm;
pub(crate) mod linear;
pub(crate) mod loss;
pub(crate) mod pool;

pub use axpy::axpy;
pub use conv::conv2d;
pub use linear::{linear, linear_relu};
pub use loss::{cross_entropy, summarize, BatchSummary};
pub use pool::relu_max_pool2d;

use candle_core::{CpuStorage, DType, Layout, Result, Tensor};

/// Whether the custom CPU kernels apply to these tensors (all on the CPU,
/// all f32).
pub(crate) fn use_fast_path(ts: &[&Tensor]) -> bool {
    ts.iter()
        .all(|t| t.device().is_cpu() && t.dtype() == DType::F32)
}

/// The f32 elements of a contiguous tensor's storage.
pub(crate) fn contiguous_f32<'a>(s: &'a CpuStorage, l: &Layout, what: &str) -> Result<&'a [f32]> {
    let CpuStorage::F32(v) = s else {
        candle_core::bail!("{what}: expected an f32 tensor")
    };
    match l.contiguous_offsets() {
        Some((a, b)) => Ok(&v[a..b]),
        None => candle_core::bail!("{what}: expected a contiguous tensor"),
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use candle_core::{Device, Tensor};
    use rand_distr::{Distribution, StandardNormal};

    use crate::engine::rng;

    /// A standard-normal f32 tensor on the CPU, drawn from `seed`.
    pub fn randn(shape: &[usize], seed: u64) -> Tensor {
        let mut r = rng::stream(seed, "ops-test", 0);
        let n: usize = shape.iter().product();
        let v: Vec<f32> = (0..n).map(|_| StandardNormal.sample(&mut r)).collect();
        Tensor::from_vec(v, shape, &Device::Cpu).unwrap()
    }

    /// The gradients of Σ r·y and Σ r·reference (r random, from `seed`)
    /// agree for each of `vars`: the op's backward against candle's.
    pub fn assert_same_gradients(
        y: Tensor,
        reference: Tensor,
        vars: &[(&candle_core::Var, &str)],
        seed: u64,
        what: &str,
    ) {
        let r = randn(y.dims(), seed);
        let g = (y * &r).unwrap().sum_all().unwrap().backward().unwrap();
        let gr = (reference * &r)
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();
        for (v, name) in vars {
            assert_close(
                g.get(v).unwrap(),
                gr.get(v).unwrap(),
                1e-4,
                &format!("{what}: {name} gradient"),
            );
        }
    }

    /// `|a − b| ≤ tol·(1 + |b|)` elementwise, with the same shape.
    pub fn assert_close(a: &Tensor, b: &Tensor, tol: f32, what: &str) {
        assert_eq!(a.dims(), b.dims(), "{what}: shapes differ");
        let a = a.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let b = b.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        for (i, (x, y)) in a.iter().zip(&b).enumerate() {
            assert!(
                (x - y).abs() <= tol * (1.0 + y.abs()),
                "{what}: element {i} is {x}, reference {y}"
            );
        }
    }
}
