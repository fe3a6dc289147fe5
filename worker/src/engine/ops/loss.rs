//! Mean softmax cross-entropy over a batch, as one op.
//!
//! **Why.** `candle_nn::loss::cross_entropy` is log-softmax (max, subtract,
//! exp, sum, log, subtract) and a gather, sum and scale: about fifteen tiny
//! ops forward and as many backward, each with its own allocation and
//! dispatch, on a 64×10 tensor. For the small MLPs that fixed cost is a
//! noticeable share of a training step. Here the forward is one pass and
//! the gradient `(softmax − onehot)·g/B` one more.

use candle_core::{CpuStorage, CustomOp2, CustomOp3, Layout, Result, Shape, Tensor};

use super::{contiguous_f32, use_fast_path};

/// Mean over rows of `−log softmax(logits)[label]` for `logits: [B, C]` f32
/// and class indices `labels: [B]` (u8, u32 or i64); a scalar.
pub fn cross_entropy(logits: &Tensor, labels: &Tensor) -> Result<Tensor> {
    if !use_fast_path(&[logits]) || !labels.device().is_cpu() {
        return candle_nn::loss::cross_entropy(logits, labels);
    }
    logits
        .contiguous()?
        .apply_op2(&labels.contiguous()?, CrossEntropy)
}

/// The class indices as usize, checked against `classes`.
fn labels(s: &CpuStorage, l: &Layout, classes: usize) -> Result<Vec<usize>> {
    let Some((a, b)) = l.contiguous_offsets() else {
        candle_core::bail!("cross entropy: labels must be contiguous")
    };
    let v: Vec<usize> = match s {
        CpuStorage::U32(v) => v[a..b].iter().map(|&c| c as usize).collect(),
        CpuStorage::U8(v) => v[a..b].iter().map(|&c| c as usize).collect(),
        CpuStorage::I64(v) => v[a..b]
            .iter()
            .map(|&c| usize::try_from(c).unwrap_or(usize::MAX))
            .collect(),
        _ => candle_core::bail!("cross entropy: labels must be u8, u32 or i64"),
    };
    if let Some(bad) = v.iter().find(|&&c| c >= classes) {
        candle_core::bail!("cross entropy: label {bad} for {classes} classes")
    }
    Ok(v)
}

/// An op's logits (`[B, C]` f32, contiguous), its labels (`[B]`, each
/// below C) and C.
fn inputs<'a>(
    ls: &'a CpuStorage,
    ll: &Layout,
    ys: &CpuStorage,
    yl: &Layout,
) -> Result<(&'a [f32], Vec<usize>, usize)> {
    let classes = match (ll.dims(), yl.dims()) {
        (&[b, c], &[b2]) if b == b2 && c > 0 => c,
        (l, y) => candle_core::bail!("cross entropy of logits {l:?} with labels {y:?}"),
    };
    let x = contiguous_f32(ls, ll, "cross entropy logits")?;
    Ok((x, labels(ys, yl, classes)?, classes))
}

/// The forward kernel: the mean over rows of `x[B, classes]` of
/// `−log softmax(row)[label]` (the sum in f64), `B = labels.len()`.
pub(crate) fn cross_entropy_forward(x: &[f32], labels: &[usize], classes: usize) -> f32 {
    let mut sum = 0f64;
    for (row, &label) in x.chunks_exact(classes).zip(labels) {
        let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let sum_exp: f32 = row.iter().map(|&v| (v - max).exp()).sum();
        // −log softmax[label] = log Σ exp(x − max) − (x[label] − max)
        sum += (sum_exp.ln() - (row[label] - max)) as f64;
    }
    (sum / labels.len().max(1) as f64) as f32
}

/// The backward kernel: `out[B, classes]` (overwritten) = `(softmax(x) −
/// onehot(labels))·g/B`, `g` the loss's upstream gradient.
pub(crate) fn cross_entropy_grad(
    x: &[f32],
    labels: &[usize],
    classes: usize,
    g: f32,
    out: &mut [f32],
) {
    let scale = g / labels.len().max(1) as f32;
    for ((o, row), &label) in out
        .chunks_exact_mut(classes)
        .zip(x.chunks_exact(classes))
        .zip(labels)
    {
        let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let mut sum_exp = 0f32;
        for (o, &v) in o.iter_mut().zip(row) {
            *o = (v - max).exp();
            sum_exp += *o;
        }
        let inv = scale / sum_exp;
        for o in o.iter_mut() {
            *o *= inv;
        }
        o[label] -= scale;
    }
}

struct CrossEntropy;

impl CustomOp2 for CrossEntropy {
    fn name(&self) -> &'static str {
        "ridgeline-cross-entropy"
    }

    fn cpu_fwd(
        &self,
        ls: &CpuStorage,
        ll: &Layout,
        ys: &CpuStorage,
        yl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (x, y, classes) = inputs(ls, ll, ys, yl)?;
        let mean = cross_entropy_forward(x, &y, classes);
        Ok((CpuStorage::F32(vec![mean]), Shape::from(())))
    }

    fn bwd(
        &self,
        logits: &Tensor,
        labels: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let g = logits.apply_op3_no_bwd(labels, &grad.contiguous()?, &CrossEntropyGrad)?;
        Ok((Some(g), None))
    }
}

/// What evaluating a classifier on a batch needs, from one op instead of
/// candle's nine (cross-entropy, argmax, compare, sums and copies): for the
/// small models, those ops' fixed costs were most of an evaluation batch.
#[derive(Debug, Clone, PartialEq)]
pub struct BatchSummary {
    /// The mean cross-entropy, as [`cross_entropy`] gives it.
    pub loss: f64,
    /// Rows whose prediction is their label.
    pub correct: u64,
    /// Rows predicting each class. A row's prediction is its first
    /// maximum, as candle's `argmax` picks it.
    pub predicted: Vec<u64>,
}

/// The [`BatchSummary`] of `logits: [B, C]` against `labels: [B]`, in one
/// pass on the CPU; `None` off the CPU or for dtypes other than f32, where
/// the caller uses candle's ops.
pub fn summarize(logits: &Tensor, labels: &Tensor) -> Result<Option<BatchSummary>> {
    if !use_fast_path(&[logits]) || !labels.device().is_cpu() {
        return Ok(None);
    }
    let v = logits
        .contiguous()?
        .apply_op2_no_bwd(&labels.contiguous()?, &Summarize)?
        .to_vec1::<f64>()?;
    let [loss, correct, predicted @ ..] = &v[..] else {
        candle_core::bail!("batch summary: {} values", v.len())
    };
    Ok(Some(BatchSummary {
        loss: *loss,
        correct: *correct as u64,
        predicted: predicted.iter().map(|&c| c as u64).collect(),
    }))
}

/// The kernel of [`summarize`]: `out[0]` the mean cross-entropy, `out[1]`
/// the correct rows, `out[2 + c]` the rows predicting class `c`.
pub(crate) fn summarize_forward(x: &[f32], labels: &[usize], classes: usize, out: &mut [f64]) {
    out[0] = cross_entropy_forward(x, labels, classes) as f64;
    for (row, &label) in x.chunks_exact(classes).zip(labels) {
        // candle's argmax: the first strictly greater value replaces the
        // best, so ties go to the first and a NaN never wins (unless first).
        let (mut best, mut value) = (0, row[0]);
        for (i, &v) in row.iter().enumerate() {
            if value < v {
                best = i;
                value = v;
            }
        }
        if best == label {
            out[1] += 1.0;
        }
        out[2 + best] += 1.0;
    }
}

struct Summarize;

impl CustomOp2 for Summarize {
    fn name(&self) -> &'static str {
        "ridgeline-classification-summary"
    }

    fn cpu_fwd(
        &self,
        ls: &CpuStorage,
        ll: &Layout,
        ys: &CpuStorage,
        yl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (x, y, classes) = inputs(ls, ll, ys, yl)?;
        let mut out = vec![0f64; classes + 2];
        summarize_forward(x, &y, classes, &mut out);
        Ok((CpuStorage::F64(out), Shape::from(classes + 2)))
    }
}

/// `(logits, labels, g) → (softmax − onehot)·g/B`.
struct CrossEntropyGrad;

impl CustomOp3 for CrossEntropyGrad {
    fn name(&self) -> &'static str {
        "ridgeline-cross-entropy-grad"
    }

    fn cpu_fwd(
        &self,
        ls: &CpuStorage,
        ll: &Layout,
        ys: &CpuStorage,
        yl: &Layout,
        gs: &CpuStorage,
        gl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (x, y, classes) = inputs(ls, ll, ys, yl)?;
        let &[g] = contiguous_f32(gs, gl, "cross entropy output gradient")? else {
            candle_core::bail!("cross entropy: output gradient is not a scalar")
        };
        let mut out = vec![0f32; x.len()];
        cross_entropy_grad(x, &y, classes, g, &mut out);
        Ok((CpuStorage::F32(out), ll.shape().clone()))
    }
}

#[cfg(test)]
mod tests {
    use candle_core::{Device, Var};

    use super::*;
    use crate::engine::ops::tests::{assert_close, randn};

    #[test]
    fn cross_entropy_matches_candle_forward_and_backward() {
        for (i, &(batch, classes)) in [(5, 3), (64, 10), (1, 2), (33, 7)].iter().enumerate() {
            let x = Var::from_tensor(&(randn(&[batch, classes], 500 + i as u64) * 3.0).unwrap())
                .unwrap();
            let y: Vec<u32> = (0..batch as u32)
                .map(|j| (j * 7 + 1) % classes as u32)
                .collect();
            let y = Tensor::from_vec(y, batch, &Device::Cpu).unwrap();
            let l = cross_entropy(x.as_tensor(), &y).unwrap();
            let reference = candle_nn::loss::cross_entropy(x.as_tensor(), &y).unwrap();
            assert_close(&l, &reference, 1e-5, "cross entropy");
            // Scale the loss so the upstream gradient is not 1.
            let g = (l * 1.7).unwrap().backward().unwrap();
            let gr = (reference * 1.7).unwrap().backward().unwrap();
            assert_close(
                g.get(&x).unwrap(),
                gr.get(&x).unwrap(),
                1e-5,
                &format!("cross entropy gradient, case {i}"),
            );
        }
        let x = randn(&[2, 3], 1);
        let bad = Tensor::from_vec(vec![0u32, 3], 2, &Device::Cpu).unwrap();
        assert!(cross_entropy(&x, &bad).is_err());
    }

    /// One op gives what cross-entropy, candle's `argmax`, `eq` and the
    /// counts give, ties and NaN rows included.
    #[test]
    fn a_batch_summary_agrees_with_candle_s_ops() {
        let (batch, classes) = (41, 5);
        // Rounded logits, so that rows have ties; one row of NaN.
        let mut x = (randn(&[batch, classes], 7) * 2.0)
            .unwrap()
            .round()
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        x[3 * classes + 2] = f32::NAN;
        let x = Tensor::from_vec(x, (batch, classes), &Device::Cpu).unwrap();
        let y: Vec<u32> = (0..batch as u32)
            .map(|j| (j * 3) % classes as u32)
            .collect();
        let y = Tensor::from_vec(y, batch, &Device::Cpu).unwrap();
        let s = summarize(&x, &y).unwrap().expect("an f32 CPU batch");
        let argmax = x.argmax(1).unwrap();
        let correct = argmax
            .eq(&y)
            .unwrap()
            .to_dtype(candle_core::DType::U32)
            .unwrap()
            .sum_all()
            .unwrap()
            .to_scalar::<u32>()
            .unwrap();
        let mut predicted = vec![0u64; classes];
        for c in argmax.to_vec1::<u32>().unwrap() {
            predicted[c as usize] += 1;
        }
        let loss = cross_entropy(&x, &y).unwrap().to_scalar::<f32>().unwrap();
        assert_eq!(s.correct, correct as u64);
        assert_eq!(s.predicted, predicted);
        assert_eq!(s.loss.to_bits(), (loss as f64).to_bits());
        assert!(s.correct > 0 && s.predicted.iter().filter(|&&c| c > 0).count() > 1);
        // Off the fast path (f64 logits), the caller uses candle's ops.
        let x64 = x.to_dtype(candle_core::DType::F64).unwrap();
        assert_eq!(summarize(&x64, &y).unwrap(), None);
    }
}
