//! Loss and metrics of a network on a split: cross-entropy and accuracy for
//! classification; mean squared error, R² and Pearson r for regression.

use candle_core::{DType, Tensor, D};
use rayon::prelude::*;
use ridgeline_common::{MetricKind, Metrics, Task};

use crate::engine::data::Split;
use crate::engine::error::Result;
use crate::engine::model::Network;
use crate::engine::ops::{self, BatchSummary};

/// The training loss of a batch: mean cross-entropy over examples
/// (classification) or mean squared error over all entries (regression).
pub fn loss(task: Task, out: &Tensor, y: &Tensor) -> candle_core::Result<Tensor> {
    match task {
        Task::Classification => crate::engine::ops::cross_entropy(out, y),
        Task::Regression => candle_nn::loss::mse(out, y),
    }
}

/// Evaluates `net` on all of `split` in batches of `eval_batch`.
pub fn evaluate(
    net: &Network,
    split: &Split,
    task: Task,
    metric: MetricKind,
    eval_batch: usize,
) -> Result<Metrics> {
    evaluate_with(split, task, metric, eval_batch, |_, x| net.forward(x))
}

/// [`evaluate`] with the model's outputs given by `forward(batch index,
/// inputs)` for consecutive batches of `eval_batch` examples of `split`
/// (the line search's fast path computes them from cached first-layer
/// outputs).
///
/// On the CPU, with more than one thread in rayon's pool (the task's
/// threads), the batches run in parallel, each computed as it would be
/// alone, and their figures are combined in batch order: the result does
/// not depend on the thread count. For the small models, whose ops are too
/// small to split, this is where a second thread helps. With one thread
/// they run here, on the caller's thread, as before: a worker whose slots
/// share a one-thread pool would otherwise queue its tasks' evaluations
/// behind each other.
pub(crate) fn evaluate_with(
    split: &Split,
    task: Task,
    metric: MetricKind,
    eval_batch: usize,
    forward: impl Fn(usize, &Tensor) -> candle_core::Result<Tensor> + Sync,
) -> Result<Metrics> {
    let n = split.len;
    let bs = eval_batch.max(1);
    let batches = n.div_ceil(bs);
    // Batch `i`: its model outputs and labels.
    let run = |i: usize| -> candle_core::Result<(Tensor, Tensor)> {
        let start = i * bs;
        let len = bs.min(n - start);
        let x = split.x.narrow(0, start, len)?;
        Ok((forward(i, &x)?, split.y.narrow(0, start, len)?))
    };
    let parallel = split.x.device().is_cpu() && batches > 1 && rayon::current_num_threads() > 1;
    match task {
        Task::Classification => {
            let figures = per_batch(parallel, batches, |i| {
                let (logits, y) = run(i)?;
                Ok((summarize(&logits, &y)?, y.dim(0)?))
            })?;
            let mut loss_sum = 0f64;
            let mut correct = 0u64;
            let mut predicted: Vec<u64> = vec![];
            for (b, len) in &figures {
                loss_sum += b.loss * *len as f64;
                correct += b.correct;
                if predicted.len() < b.predicted.len() {
                    predicted.resize(b.predicted.len(), 0);
                }
                for (p, c) in predicted.iter_mut().zip(&b.predicted) {
                    *p += c;
                }
            }
            let denom = n.max(1) as f64;
            let accuracy = correct as f64 / denom;
            Ok(Metrics {
                loss: loss_sum / denom,
                metric: accuracy,
                accuracy: Some(accuracy),
                r2: None,
                pearson: None,
                majority_fraction: (n > 0)
                    .then(|| predicted.iter().copied().max().unwrap_or(0) as f64 / denom),
            })
        }
        Task::Regression => {
            let preds = per_batch(parallel, batches, |i| {
                let (p, _) = run(i)?;
                p.flatten_all()?.to_dtype(DType::F32)?.to_vec1::<f32>()
            })?
            .concat();
            let targets = split
                .y
                .flatten_all()?
                .to_dtype(DType::F32)?
                .to_vec1::<f32>()?;
            let width = split.y.dims().get(1).copied().unwrap_or(1).max(1);
            let r = regression_metrics(&preds, &targets, width);
            let metric_value = match metric {
                MetricKind::Pearson => r.pearson,
                _ => r.r2,
            };
            Ok(Metrics {
                loss: r.mse,
                metric: metric_value,
                accuracy: None,
                r2: Some(r.r2),
                pearson: Some(r.pearson),
                majority_fraction: None,
            })
        }
    }
}

/// `f(0), …, f(batches − 1)` in order, computed on rayon's pool when
/// `parallel`.
fn per_batch<T: Send>(
    parallel: bool,
    batches: usize,
    f: impl Fn(usize) -> candle_core::Result<T> + Sync,
) -> candle_core::Result<Vec<T>> {
    if parallel {
        (0..batches).into_par_iter().map(&f).collect()
    } else {
        (0..batches).map(f).collect()
    }
}

/// A classifier's figures on one batch: one op on the CPU
/// ([`ops::summarize`]), candle's ops elsewhere.
fn summarize(logits: &Tensor, y: &Tensor) -> candle_core::Result<BatchSummary> {
    if let Some(summary) = ops::summarize(logits, y)? {
        return Ok(summary);
    }
    let loss = ops::cross_entropy(logits, y)?
        .to_dtype(DType::F64)?
        .to_scalar::<f64>()?;
    let argmax = logits.argmax(D::Minus1)?;
    let hit = argmax.eq(y)?.to_dtype(DType::F64)?.sum_all()?;
    let mut predicted = vec![0; logits.dim(D::Minus1)?];
    for class in argmax.to_vec1::<u32>()? {
        predicted[class as usize] += 1;
    }
    Ok(BatchSummary {
        loss,
        correct: hit.to_scalar::<f64>()? as u64,
        predicted,
    })
}

/// Regression figures, each averaged uniformly over outputs (as
/// scikit-learn's `r2_score` default).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RegressionMetrics {
    pub mse: f64,
    pub r2: f64,
    pub pearson: f64,
}

/// `pred` and `target` are row-major `[n, width]`. Non-finite predictions
/// give non-finite figures (a diverged model), never a panic. An output with
/// constant targets counts R² = 0 / r = 0 for that output.
pub fn regression_metrics(pred: &[f32], target: &[f32], width: usize) -> RegressionMetrics {
    let width = width.max(1);
    let n = pred.len().min(target.len()) / width;
    if n == 0 {
        return RegressionMetrics {
            mse: f64::NAN,
            r2: f64::NAN,
            pearson: f64::NAN,
        };
    }
    let mut sq = 0f64;
    let (mut r2_sum, mut r_sum) = (0f64, 0f64);
    for j in 0..width {
        let col = |v: &[f32], i: usize| v[i * width + j] as f64;
        let (mut mp, mut mt) = (0f64, 0f64);
        for i in 0..n {
            mp += col(pred, i);
            mt += col(target, i);
        }
        mp /= n as f64;
        mt /= n as f64;
        let (mut ss_res, mut ss_tot, mut spp, mut spt) = (0f64, 0f64, 0f64, 0f64);
        for i in 0..n {
            let (p, t) = (col(pred, i), col(target, i));
            ss_res += (p - t) * (p - t);
            ss_tot += (t - mt) * (t - mt);
            spp += (p - mp) * (p - mp);
            spt += (p - mp) * (t - mt);
        }
        sq += ss_res;
        r2_sum += if ss_tot > 0.0 {
            1.0 - ss_res / ss_tot
        } else {
            0.0
        };
        r_sum += if spp > 0.0 && ss_tot > 0.0 {
            spt / (spp * ss_tot).sqrt()
        } else if spp.is_finite() {
            0.0
        } else {
            f64::NAN
        };
    }
    RegressionMetrics {
        mse: sq / (n * width) as f64,
        r2: r2_sum / width as f64,
        pearson: r_sum / width as f64,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn regression_metrics_match_hand_computation() {
        // One output: targets 1,2,3,4; predictions 1.5,2,2.5,4.5.
        let r = regression_metrics(&[1.5, 2.0, 2.5, 4.5], &[1., 2., 3., 4.], 1);
        assert!((r.mse - 0.1875).abs() < 1e-12);
        // ss_res = .75, ss_tot = 5 → R² = .85
        assert!((r.r2 - 0.85).abs() < 1e-12);
        // numpy.corrcoef([1.5,2,2.5,4.5],[1,2,3,4])[0,1] = 0.9326733179802504
        assert!((r.pearson - 0.932_673_317_980_250_4).abs() < 1e-12);
        // Two outputs averaged; a perfect column gives 1.
        let r = regression_metrics(
            &[1., 1.5, 2., 2., 3., 2.5, 4., 4.5],
            &[1., 1., 2., 2., 3., 3., 4., 4.],
            2,
        );
        assert!((r.r2 - (1.0 + 0.85) / 2.0).abs() < 1e-12);
        let r = regression_metrics(&[f32::NAN, 1.], &[1., 2.], 1);
        assert!(!r.mse.is_finite() && !r.r2.is_finite());
    }

    #[test]
    fn majority_fraction_is_the_share_of_the_most_predicted_class() {
        use crate::engine::model::{ModelContext, ModelRegistry};
        use candle_core::Device;
        use ridgeline_common::spec::{MlpSpec, ModelSpec};

        let dev = Device::Cpu;
        // A linear model 2 inputs → 3 classes, logits = W·x + b.
        let spec = ModelSpec::Mlp(MlpSpec {
            hidden: vec![],
            activation: Default::default(),
            init: Default::default(),
        });
        let ctx = ModelContext {
            input_shape: vec![2],
            outputs: 3,
            task: Task::Classification,
        };
        let net = Network::build(&spec, &ctx, 0, &dev, &ModelRegistry::default()).unwrap();
        let set = |w: &[f32], b: &[f32]| {
            for var in net.params().vars() {
                let t = if var.rank() == 2 {
                    Tensor::from_slice(w, (3, 2), &dev)
                } else {
                    Tensor::from_slice(b, 3, &dev)
                };
                var.set(&t.unwrap()).unwrap();
            }
        };
        let x = [1f32, 0., 1., 0., 1., 0., 0., 1., 1., 0.];
        let split = Split {
            x: Tensor::from_slice(&x, (5, 2), &dev).unwrap(),
            y: Tensor::from_slice(&[0u32, 1, 2, 1, 2], 5, &dev).unwrap(),
            len: 5,
        };
        let eval = || evaluate(&net, &split, Task::Classification, MetricKind::Accuracy, 2);

        // Always class 2 (the bias alone decides).
        set(&[0.; 6], &[0., 0., 1.]);
        let m = eval().unwrap();
        assert_eq!(m.majority_fraction, Some(1.0));
        assert!((m.metric - 0.4).abs() < 1e-12, "{m:?}");

        // Logits = (x0, x1, 0): four examples → class 0, one → class 1.
        set(&[1., 0., 0., 1., 0., 0.], &[0.; 3]);
        let m = eval().unwrap();
        assert_eq!(m.majority_fraction, Some(0.8));
        assert!((m.metric - 0.4).abs() < 1e-12, "{m:?}");
    }
}
