//! SGD's update as two in-place passes (velocity, then weights) on the CPU.
//!
//! **Why.** Written with tensor ops, one SGD step is five to nine passes
//! over each parameter (scale, scale, subtract, add, copy into the
//! variable, plus the weight-decay and Nesterov terms), each allocating a
//! new tensor. These two in-place passes compute the very same f32
//! expressions in the same order, so the numbers are bit-identical to the
//! tensor version (checked below, and by `worker/tests/optim_pytorch.rs`
//! against PyTorch).

use candle_core::{CpuStorage, DType, InplaceOp2, InplaceOp3, Layout, Result, Tensor};
use ridgeline_common::spec::SgdSpec;

/// Whether the fused update applies: CPU f32 tensors of one shape.
pub(super) fn applies(w: &Tensor, g: &Tensor, v: &Tensor) -> bool {
    [w, g, v]
        .iter()
        .all(|t| t.device().is_cpu() && t.dtype() == DType::F32)
        && w.dims() == g.dims()
        && w.dims() == v.dims()
        && w.is_contiguous()
        && v.is_contiguous()
}

/// v ← μv − lr·g′ and w ← w + v (Nesterov: w ← w + μv − lr·g′), with
/// g′ = g + wd·w; `w` and `v` in place.
pub(super) fn sgd(w: &Tensor, g: &Tensor, v: &Tensor, lr: f64, mu: f64, s: SgdSpec) -> Result<()> {
    let k = Coeffs::new(lr, mu, s);
    v.inplace_op3(g, w, &Velocity(k))?;
    w.inplace_op3(v, g, &Weights(k))
}

/// [`sgd`] with the gradient given as a slice (the hand-written training
/// step's buffer): the same two passes, the same numbers.
pub(super) fn sgd_from_slice(
    w: &Tensor,
    g: &[f32],
    v: &Tensor,
    lr: f64,
    mu: f64,
    s: SgdSpec,
) -> Result<()> {
    let k = Coeffs::new(lr, mu, s);
    v.inplace_op2(w, &VelocityFromSlice(k, g))?;
    w.inplace_op2(v, &WeightsFromSlice(k, g))
}

/// v ← v·μ − g′·lr, elementwise.
fn velocity(v: &mut [f32], g: &[f32], w: &[f32], k: Coeffs) {
    for ((v, &g), &w) in v.iter_mut().zip(g).zip(w) {
        *v = (*v * k.mu + 0.0) - (k.grad(g, w) * k.lr + 0.0);
    }
}

/// w ← w + v (Nesterov: w ← w + (v·μ − g′·lr)), elementwise.
fn weights(w: &mut [f32], v: &[f32], g: &[f32], k: Coeffs) {
    for ((w, &v), &g) in w.iter_mut().zip(v).zip(g) {
        let update = if k.nesterov {
            (v * k.mu + 0.0) - (k.grad(g, *w) * k.lr + 0.0)
        } else {
            v
        };
        *w += update;
    }
}

/// [`Velocity`] with the gradient as a slice: on v, reading w.
struct VelocityFromSlice<'a>(Coeffs, &'a [f32]);

impl InplaceOp2 for VelocityFromSlice<'_> {
    fn name(&self) -> &'static str {
        "ridgeline-sgd-velocity"
    }

    fn cpu_fwd(
        &self,
        vs: &mut CpuStorage,
        vl: &Layout,
        ws: &CpuStorage,
        wl: &Layout,
    ) -> Result<()> {
        let (g, w) = (self.1, slice(ws, wl)?);
        let v = slice_mut(vs, vl)?;
        if v.len() != g.len() || v.len() != w.len() {
            candle_core::bail!("sgd: operands differ in size")
        }
        velocity(v, g, w, self.0);
        Ok(())
    }
}

/// [`Weights`] with the gradient as a slice: on w, reading v.
struct WeightsFromSlice<'a>(Coeffs, &'a [f32]);

impl InplaceOp2 for WeightsFromSlice<'_> {
    fn name(&self) -> &'static str {
        "ridgeline-sgd-weights"
    }

    fn cpu_fwd(
        &self,
        ws: &mut CpuStorage,
        wl: &Layout,
        vs: &CpuStorage,
        vl: &Layout,
    ) -> Result<()> {
        let (v, g) = (slice(vs, vl)?, self.1);
        let w = slice_mut(ws, wl)?;
        if v.len() != g.len() || v.len() != w.len() {
            candle_core::bail!("sgd: operands differ in size")
        }
        weights(w, v, g, self.0);
        Ok(())
    }
}

#[derive(Clone, Copy)]
struct Coeffs {
    lr: f32,
    mu: f32,
    wd: Option<f32>,
    nesterov: bool,
}

impl Coeffs {
    fn new(lr: f64, mu: f64, s: SgdSpec) -> Coeffs {
        Coeffs {
            lr: lr as f32,
            mu: mu as f32,
            wd: (s.weight_decay != 0.0).then_some(s.weight_decay as f32),
            nesterov: s.nesterov,
        }
    }

    /// g′ = g + wd·w, as `g + w.affine(wd, 0)` computes it.
    #[inline]
    fn grad(&self, g: f32, w: f32) -> f32 {
        match self.wd {
            Some(wd) => g + (w * wd + 0.0),
            None => g,
        }
    }
}

fn slice<'a>(s: &'a CpuStorage, l: &Layout) -> Result<&'a [f32]> {
    super::super::ops::contiguous_f32(s, l, "sgd operand")
}

fn slice_mut<'a>(s: &'a mut CpuStorage, l: &Layout) -> Result<&'a mut [f32]> {
    match (s, l.contiguous_offsets()) {
        (CpuStorage::F32(v), Some((a, b))) => Ok(&mut v[a..b]),
        _ => candle_core::bail!("sgd: expected a contiguous f32 tensor"),
    }
}

/// On the velocity: v ← v·μ − g′·lr (as `v.affine(μ, 0) − g′.affine(lr, 0)`).
struct Velocity(Coeffs);

impl InplaceOp3 for Velocity {
    fn name(&self) -> &'static str {
        "ridgeline-sgd-velocity"
    }

    fn cpu_fwd(
        &self,
        vs: &mut CpuStorage,
        vl: &Layout,
        gs: &CpuStorage,
        gl: &Layout,
        ws: &CpuStorage,
        wl: &Layout,
    ) -> Result<()> {
        let k = self.0;
        let (g, w) = (slice(gs, gl)?, slice(ws, wl)?);
        let v = slice_mut(vs, vl)?;
        if v.len() != g.len() || v.len() != w.len() {
            candle_core::bail!("sgd: operands differ in size")
        }
        velocity(v, g, w, k);
        Ok(())
    }
}

/// On the weights: w ← w + v, or for Nesterov w ← w + (v·μ − g′·lr).
struct Weights(Coeffs);

impl InplaceOp3 for Weights {
    fn name(&self) -> &'static str {
        "ridgeline-sgd-weights"
    }

    fn cpu_fwd(
        &self,
        ws: &mut CpuStorage,
        wl: &Layout,
        vs: &CpuStorage,
        vl: &Layout,
        gs: &CpuStorage,
        gl: &Layout,
    ) -> Result<()> {
        let k = self.0;
        let (v, g) = (slice(vs, vl)?, slice(gs, gl)?);
        let w = slice_mut(ws, wl)?;
        if v.len() != g.len() || v.len() != w.len() {
            candle_core::bail!("sgd: operands differ in size")
        }
        weights(w, v, g, k);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use candle_core::{Device, Tensor};

    use super::*;

    /// The tensor-op form the fused update replaces.
    fn reference(
        w: &Tensor,
        g: &Tensor,
        v: &Tensor,
        lr: f64,
        mu: f64,
        s: SgdSpec,
    ) -> (Tensor, Tensor) {
        let g = if s.weight_decay == 0.0 {
            g.clone()
        } else {
            (g + w.affine(s.weight_decay, 0.0).unwrap()).unwrap()
        };
        let v = (v.affine(mu, 0.0).unwrap() - g.affine(lr, 0.0).unwrap()).unwrap();
        let update = if s.nesterov {
            (v.affine(mu, 0.0).unwrap() - g.affine(lr, 0.0).unwrap()).unwrap()
        } else {
            v.clone()
        };
        ((w + update).unwrap(), v)
    }

    #[test]
    fn fused_sgd_is_bit_identical_to_the_tensor_form() {
        let dev = Device::Cpu;
        let t = |seed: u32| {
            let v: Vec<f32> = (0..257u32)
                .map(|i| {
                    (i.wrapping_mul(2654435761).wrapping_add(seed) % 1000) as f32 / 333.0 - 1.5
                })
                .collect();
            Tensor::from_vec(v, 257, &dev).unwrap()
        };
        for (nesterov, wd) in [(false, 0.0), (true, 0.0), (false, 1e-2), (true, 3e-3)] {
            let s = SgdSpec {
                nesterov,
                weight_decay: wd,
            };
            let (w, g, v) = (t(1), t(2), t(3));
            let (w_ref, v_ref) = reference(&w, &g, &v, 0.07, 0.9, s);
            sgd(&w, &g, &v, 0.07, 0.9, s).unwrap();
            assert_eq!(w.to_vec1::<f32>().unwrap(), w_ref.to_vec1::<f32>().unwrap());
            assert_eq!(v.to_vec1::<f32>().unwrap(), v_ref.to_vec1::<f32>().unwrap());
        }
    }
}
