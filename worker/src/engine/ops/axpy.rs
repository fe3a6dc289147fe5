//! `z0 + a·zd`, optionally through a ReLU, as one forward-only op: a line
//! search point's first-layer output from the cache of
//! `engine::landscape` (z0 at θ0, zd along the direction).
//!
//! **Why.** candle computes it as `affine` then `add` (then `relu`): two or
//! three full-size outputs, allocations and passes per batch and point. For
//! the 64-128-10 MLP those passes were about a quarter of a line search's
//! time. Here it is one pass into one output, with the same arithmetic
//! (`z0 + (zd·a + 0)`, as candle's `affine(a, 0)` then `add`), so the two
//! paths give the same bits.

use candle_core::{CpuStorage, CustomOp2, Layout, Result, Shape, Tensor};

use super::{contiguous_f32, use_fast_path};

/// `z0 + a·zd`, and `max(·, 0)` of it with `relu`; `z0` and `zd` of the
/// same shape. No gradient (a line search only evaluates).
pub fn axpy(z0: &Tensor, zd: &Tensor, a: f64, relu: bool) -> Result<Tensor> {
    if !use_fast_path(&[z0, zd]) {
        let z = (z0 + zd.affine(a, 0.0)?)?;
        return if relu { z.relu() } else { Ok(z) };
    }
    z0.contiguous()?
        .apply_op2_no_bwd(&zd.contiguous()?, &Axpy { a: a as f32, relu })
}

/// The kernel of [`axpy`]: `out[i] = z0[i] + (zd[i]·a + 0)`, then the ReLU.
pub(crate) fn axpy_forward(out: &mut [f32], z0: &[f32], zd: &[f32], a: f32, relu: bool) {
    let pairs = out.iter_mut().zip(z0.iter().zip(zd));
    if relu {
        for (o, (&z, &d)) in pairs {
            *o = (z + (d * a + 0.0)).max(0.0);
        }
    } else {
        for (o, (&z, &d)) in pairs {
            *o = z + (d * a + 0.0);
        }
    }
}

struct Axpy {
    a: f32,
    relu: bool,
}

impl CustomOp2 for Axpy {
    fn name(&self) -> &'static str {
        "ridgeline-axpy"
    }

    fn cpu_fwd(
        &self,
        s0: &CpuStorage,
        l0: &Layout,
        sd: &CpuStorage,
        ld: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        if l0.dims() != ld.dims() {
            candle_core::bail!("axpy: z0 {:?} and zd {:?} differ", l0.dims(), ld.dims())
        }
        let z0 = contiguous_f32(s0, l0, "axpy z0")?;
        let zd = contiguous_f32(sd, ld, "axpy zd")?;
        let mut out = vec![0f32; z0.len()];
        axpy_forward(&mut out, z0, zd, self.a, self.relu);
        Ok((CpuStorage::F32(out), l0.shape().clone()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::ops::tests::randn;

    /// Bit for bit what candle's `affine` + `add` (+ `relu`) give.
    #[test]
    fn axpy_gives_the_bits_of_candle_s_ops() {
        let z0 = randn(&[37, 11], 1);
        let zd = randn(&[37, 11], 2);
        for a in [-1.5, -0.0, 0.25, 1.0 / 3.0, 7.0] {
            for relu in [false, true] {
                let fused = axpy(&z0, &zd, a, relu).unwrap();
                let mut reference = (&z0 + zd.affine(a, 0.0).unwrap()).unwrap();
                if relu {
                    reference = reference.relu().unwrap();
                }
                let bits = |t: &Tensor| -> Vec<u32> {
                    t.flatten_all()
                        .unwrap()
                        .to_vec1::<f32>()
                        .unwrap()
                        .iter()
                        .map(|v| v.to_bits())
                        .collect()
                };
                assert_eq!(bits(&fused), bits(&reference), "a = {a}, relu = {relu}");
            }
        }
        let short = randn(&[36, 11], 3);
        assert!(axpy(&z0, &short, 1.0, false).is_err());
    }
}
