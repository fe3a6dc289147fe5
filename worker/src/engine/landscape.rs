//! Weight-space tools: a model's weights as one [`WeightSet`], directions in
//! weight space, and line searches θ(a) = θ0 + a·d.
//!
//! Directions are the procedure's step 1 ("line search along a random
//! direction, and along the direction of brief training") and its final
//! check (interpolation from θ0 to the trained weights, a ∈ [−0.5, 1.5]).
//!
//! **Random directions** are Gaussian and filter-normalised as in Li et al.
//! 2018 ("Visualizing the loss landscape of neural nets"): each output unit
//! (row of a linear weight, filter of a convolution) of d is rescaled to the
//! norm of the same unit in θ0, so a step a moves every unit by the same
//! fraction of its own size whatever the layer's scale. **Biases are zero**
//! in random directions by default, as in Li et al.: a bias has one value per
//! unit, so "filter normalisation" would set |d_b| = |θ0_b| exactly, and with
//! PyTorch-style initial biases near 0 that is a direction of almost no
//! length that adds noise to the curve without moving anything. Set
//! [`DirectionOptions::include_biases`] to normalise biases per unit
//! instead.

use candle_core::{DType, Device, Tensor};
use rand_distr::{Distribution, StandardNormal};
use ridgeline_common::LinePoint;

use crate::engine::data::Dataset;
use crate::engine::error::{EngineError, Result};
use crate::engine::model::{Network, ParamRole, Params};
use crate::engine::rng;
use crate::engine::train::{evaluate, evaluate_with};

/// A full set of model weights (or a direction), in parameter order.
#[derive(Debug, Clone)]
pub struct WeightSet {
    pub names: Vec<String>,
    pub tensors: Vec<Tensor>,
}

impl WeightSet {
    /// A copy of the current values of `params`.
    pub fn from_params(params: &Params) -> Result<WeightSet> {
        let tensors = params
            .vars()
            .iter()
            .map(|v| v.as_tensor().copy())
            .collect::<candle_core::Result<Vec<_>>>()?;
        Ok(WeightSet {
            names: params.names().to_vec(),
            tensors,
        })
    }

    pub fn numel(&self) -> usize {
        self.tensors.iter().map(|t| t.elem_count()).sum()
    }

    /// Checks that this set has the names and shapes of `params`.
    pub fn check_matches(&self, params: &Params) -> Result<()> {
        if self.names != params.names() {
            return Err(EngineError::Checkpoint(format!(
                "weights are for parameters [{}]; the model has [{}]",
                self.names.join(", "),
                params.names().join(", ")
            )));
        }
        for ((name, t), v) in self.names.iter().zip(&self.tensors).zip(params.vars()) {
            if t.dims() != v.dims() {
                return Err(EngineError::Checkpoint(format!(
                    "`{name}` is shaped {:?}; the model's is {:?}",
                    t.dims(),
                    v.dims()
                )));
            }
        }
        Ok(())
    }

    /// All weights as one vector, in parameter order.
    pub fn flatten(&self) -> Result<Tensor> {
        let flat = self
            .tensors
            .iter()
            .map(|t| t.flatten_all())
            .collect::<candle_core::Result<Vec<_>>>()?;
        Ok(Tensor::cat(&flat, 0)?)
    }

    /// The inverse of [`WeightSet::flatten`], with this set's names and
    /// shapes.
    pub fn unflatten(&self, flat: &Tensor) -> Result<WeightSet> {
        if flat.dims() != [self.numel()] {
            return Err(EngineError::Checkpoint(format!(
                "a flat vector of {:?} cannot be unflattened into {} weights",
                flat.dims(),
                self.numel()
            )));
        }
        let mut offset = 0;
        let mut tensors = Vec::with_capacity(self.tensors.len());
        for t in &self.tensors {
            let n = t.elem_count();
            tensors.push(flat.narrow(0, offset, n)?.reshape(t.shape())?);
            offset += n;
        }
        Ok(WeightSet {
            names: self.names.clone(),
            tensors,
        })
    }

    fn zip_with(
        &self,
        other: &WeightSet,
        f: impl Fn(&Tensor, &Tensor) -> candle_core::Result<Tensor>,
    ) -> Result<WeightSet> {
        if self.names != other.names {
            return Err(EngineError::Checkpoint(format!(
                "weight sets differ: [{}] vs [{}]",
                self.names.join(", "),
                other.names.join(", ")
            )));
        }
        let tensors = self
            .tensors
            .iter()
            .zip(&other.tensors)
            .map(|(a, b)| f(a, b))
            .collect::<candle_core::Result<Vec<_>>>()?;
        Ok(WeightSet {
            names: self.names.clone(),
            tensors,
        })
    }

    /// self + a·d.
    pub fn axpy(&self, a: f64, d: &WeightSet) -> Result<WeightSet> {
        self.zip_with(d, |w, d| w + d.affine(a, 0.0)?)
    }

    /// self − other (e.g. the direction θ1 − θ0).
    pub fn sub(&self, other: &WeightSet) -> Result<WeightSet> {
        self.zip_with(other, |a, b| a - b)
    }

    /// Euclidean norm of all weights together.
    pub fn norm(&self) -> Result<f64> {
        let mut s = 0f64;
        for t in &self.tensors {
            s += t
                .to_dtype(DType::F64)?
                .sqr()?
                .sum_all()?
                .to_scalar::<f64>()?;
        }
        Ok(s.sqrt())
    }

    pub fn to_device(&self, device: &Device) -> Result<WeightSet> {
        Ok(WeightSet {
            names: self.names.clone(),
            tensors: self
                .tensors
                .iter()
                .map(|t| t.to_device(device))
                .collect::<candle_core::Result<Vec<_>>>()?,
        })
    }
}

/// How a random direction is drawn.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DirectionOptions {
    /// Filter-normalise (Li et al.); otherwise plain N(0, 1) entries.
    pub filter_normalize: bool,
    /// Give biases a direction too (normalised per unit); default: zero.
    pub include_biases: bool,
}

impl Default for DirectionOptions {
    fn default() -> Self {
        Self {
            filter_normalize: true,
            include_biases: false,
        }
    }
}

/// A Gaussian direction for the weights `theta0` of a model with parameter
/// `roles`, drawn from `seed` (one stream per parameter name).
pub fn random_direction(
    theta0: &WeightSet,
    roles: &[ParamRole],
    seed: u64,
    options: DirectionOptions,
) -> Result<WeightSet> {
    if roles.len() != theta0.tensors.len() {
        return Err(EngineError::Model(format!(
            "{} parameter roles for {} weights",
            roles.len(),
            theta0.tensors.len()
        )));
    }
    let mut tensors = Vec::with_capacity(theta0.tensors.len());
    for ((name, w), role) in theta0.names.iter().zip(&theta0.tensors).zip(roles) {
        let dims = w.dims().to_vec();
        let n = w.elem_count();
        if *role == ParamRole::Bias && !options.include_biases {
            tensors.push(w.zeros_like()?);
            continue;
        }
        let mut r = rng::stream(seed, &format!("direction/{name}"), 0);
        let mut d: Vec<f32> = (0..n).map(|_| StandardNormal.sample(&mut r)).collect();
        if options.filter_normalize {
            let w_host = w.flatten_all()?.to_dtype(DType::F32)?.to_vec1::<f32>()?;
            // Units along the first dimension; a bias has one value per unit.
            let units = dims.first().copied().unwrap_or(1).max(1);
            let per = n / units;
            for u in 0..units {
                let range = u * per..(u + 1) * per;
                let wn = norm(&w_host[range.clone()]);
                let dn = norm(&d[range.clone()]);
                let scale = if dn > 0.0 { wn / dn } else { 0.0 };
                for x in &mut d[range] {
                    *x = (*x as f64 * scale) as f32;
                }
            }
        }
        tensors.push(Tensor::from_vec(d, dims, w.device())?);
    }
    Ok(WeightSet {
        names: theta0.names.clone(),
        tensors,
    })
}

fn norm(x: &[f32]) -> f64 {
    x.iter()
        .map(|&v| (v as f64) * (v as f64))
        .sum::<f64>()
        .sqrt()
}

/// Where and how line-search points are evaluated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EvalOptions {
    /// Size of the fixed training subset (the first N training examples, as
    /// in training reports).
    pub train_eval_size: usize,
    /// Examples per forward pass.
    pub eval_batch: usize,
}

impl Default for EvalOptions {
    fn default() -> Self {
        Self {
            train_eval_size: 1000,
            eval_batch: crate::engine::train::EVAL_BATCH,
        }
    }
}

/// Evaluates train and heldout loss/metric at θ0 + a·d for each `alpha`,
/// overwriting the network's weights in place (restored to what they were
/// at the end, also on error).
///
/// `on_point` sees each point as soon as it is measured;
/// returning `false` stops early (cancellation).
pub fn line_search(
    net: &Network,
    theta0: &WeightSet,
    direction: &WeightSet,
    alphas: &[f64],
    data: &Dataset,
    eval: EvalOptions,
    mut on_point: impl FnMut(&LinePoint) -> bool,
) -> Result<Vec<LinePoint>> {
    theta0.check_matches(net.params())?;
    direction.check_matches(net.params())?;
    let train = data.train.head(eval.train_eval_size)?;
    let metric = ridgeline_common::MetricKind::default_for(data.task);
    let before = net.weights()?;
    let mut out = Vec::with_capacity(alphas.len());
    if let Some(split) = first_layer_cache(net, theta0, direction, &[&train, &data.heldout], eval)?
    {
        let result = (|| {
            for &a in alphas {
                let p = split.point(
                    net,
                    theta0,
                    direction,
                    a,
                    [&train, &data.heldout],
                    data.task,
                    metric,
                    eval,
                )?;
                out.push(p);
                if !on_point(&p) {
                    break;
                }
            }
            Ok::<_, EngineError>(())
        })();
        net.set_weights(&before)?;
        result?;
        return Ok(out);
    }
    let result = (|| {
        for &a in alphas {
            for ((var, w0), d) in net
                .params()
                .vars()
                .iter()
                .zip(&theta0.tensors)
                .zip(&direction.tensors)
            {
                var.set(&(w0 + d.affine(a, 0.0)?)?)?;
            }
            let p = LinePoint {
                alpha: a,
                train: evaluate(net, &train, data.task, metric, eval.eval_batch)?,
                heldout: evaluate(net, &data.heldout, data.task, metric, eval.eval_batch)?,
            };
            out.push(p);
            if !on_point(&p) {
                break;
            }
        }
        Ok::<_, EngineError>(())
    })();
    net.set_weights(&before)?;
    result?;
    Ok(out)
}

/// Most floats the first-layer cache of a line search may hold (z0 and zd
/// for every evaluated example): 256 MiB. Beyond it, the plain path.
const FIRST_LAYER_CACHE_FLOATS: usize = 64 << 20;

/// Smallest first-layer fan-in for which the cache pays (see below).
const MIN_FAN_IN: usize = 32;

/// The line search's fast path for models that split after an affine
/// first layer ([`crate::engine::model::Model::split_first`]): for every
/// evaluation batch, the first layer's output at θ0 (z0) and along d (zd,
/// the layer applied with d's weight and bias), computed once. At a point
/// a the first layer's output is z0 + a·zd, so a point costs only the rest
/// of the network; for an MLP that skips almost all of its flops.
struct FirstLayerCache {
    /// Per split, per batch: (z0, zd).
    batches: Vec<Vec<(Tensor, Tensor)>>,
}

fn first_layer_cache(
    net: &Network,
    theta0: &WeightSet,
    d: &WeightSet,
    splits: &[&crate::engine::data::Split],
    eval: EvalOptions,
) -> Result<Option<FirstLayerCache>> {
    let Some(model) = net.split_first() else {
        return Ok(None);
    };
    if net.roles().get(..2) != Some(&[ParamRole::Weight, ParamRole::Bias][..]) {
        return Ok(None);
    }
    // z0 + a·zd costs a few memory passes per output; recomputing the
    // layer costs 2·fan-in flops per output. Measured: a win for the
    // 784-256 layer (fan-in 784), a loss for a 3×3 conv on one channel
    // (fan-in 9, CNN line search 0.54× of its eval with the cache).
    let w = &theta0.tensors[0];
    let fan_in = w.elem_count() / w.dims().first().copied().unwrap_or(1).max(1);
    if fan_in < MIN_FAN_IN {
        return Ok(None);
    }
    let bs = eval.eval_batch.max(1);
    let mut batches = Vec::with_capacity(splits.len());
    let mut floats = 0usize;
    for split in splits {
        let mut cached = vec![];
        let mut start = 0;
        while start < split.len {
            let len = bs.min(split.len - start);
            let x = split.x.narrow(0, start, len)?;
            let z0 = model.first(&x, &theta0.tensors[0], &theta0.tensors[1])?;
            let zd = model.first(&x, &d.tensors[0], &d.tensors[1])?;
            floats += 2 * z0.elem_count();
            if floats > FIRST_LAYER_CACHE_FLOATS {
                return Ok(None);
            }
            cached.push((z0, zd));
            start += len;
        }
        batches.push(cached);
    }
    Ok(Some(FirstLayerCache { batches }))
}

impl FirstLayerCache {
    /// Train and heldout loss/metric at θ0 + a·d.
    #[allow(clippy::too_many_arguments)]
    fn point(
        &self,
        net: &Network,
        theta0: &WeightSet,
        d: &WeightSet,
        a: f64,
        splits: [&crate::engine::data::Split; 2],
        task: ridgeline_common::Task,
        metric: ridgeline_common::MetricKind,
        eval: EvalOptions,
    ) -> Result<LinePoint> {
        let model = net
            .split_first()
            .ok_or_else(|| EngineError::Model("the model no longer splits".into()))?;
        // Only the layers after the first read the network's own weights.
        for ((var, w0), d) in net
            .params()
            .vars()
            .iter()
            .zip(&theta0.tensors)
            .zip(&d.tensors)
            .skip(2)
        {
            var.set(&(w0 + d.affine(a, 0.0)?)?)?;
        }
        let mut metrics = [None, None];
        for ((m, split), cached) in metrics.iter_mut().zip(splits).zip(&self.batches) {
            *m = Some(evaluate_with(
                split,
                task,
                metric,
                eval.eval_batch,
                |i, _| {
                    let (z0, zd) = &cached[i];
                    model.rest_at(z0, zd, a)
                },
            )?);
        }
        let [Some(train), Some(heldout)] = metrics else {
            unreachable!("both splits are evaluated")
        };
        Ok(LinePoint {
            alpha: a,
            train,
            heldout,
        })
    }
}

/// Interpolation θ0 + a·(θ1 − θ0): the line search along the direction from
/// `theta0` to `theta1`, so a = 0 is θ0 and a = 1 is θ1.
pub fn interpolate(
    net: &Network,
    theta0: &WeightSet,
    theta1: &WeightSet,
    alphas: &[f64],
    data: &Dataset,
    eval: EvalOptions,
) -> Result<Vec<LinePoint>> {
    let d = theta1.sub(theta0)?;
    line_search(net, theta0, &d, alphas, data, eval, |_| true)
}

/// `n` evenly spaced values from `lo` to `hi` inclusive.
pub fn linspace(lo: f64, hi: f64, n: usize) -> Vec<f64> {
    match n {
        0 => vec![],
        1 => vec![lo],
        _ => (0..n)
            .map(|i| lo + (hi - lo) * i as f64 / (n - 1) as f64)
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use candle_core::Device;
    use ridgeline_common::spec::{Activation, CnnSpec, MlpSpec, ModelSpec, Pool};
    use ridgeline_common::{MetricKind, Task};

    use super::*;
    use crate::engine::data::Split;
    use crate::engine::model::{ModelContext, ModelRegistry};
    use crate::engine::ops::tests::randn;

    /// The first-layer fast path gives the figures of the plain path (set
    /// θ0 + a·d, evaluate) for an MLP and a CNN, with batches that do not
    /// divide the data.
    #[test]
    fn line_search_fast_path_matches_setting_the_weights() {
        let dev = Device::Cpu;
        let mlp = ModelSpec::Mlp(MlpSpec {
            hidden: vec![12, 7],
            activation: Activation::Tanh,
            init: Default::default(),
        });
        // A ReLU MLP folds its first activation into z0 + a·zd.
        let relu_mlp = ModelSpec::Mlp(MlpSpec {
            hidden: vec![12, 7],
            activation: Activation::Relu,
            init: Default::default(),
        });
        let cnn = ModelSpec::Cnn(CnnSpec {
            channels: vec![3, 4],
            kernel: 3,
            stride: 1,
            pool: Pool::Max,
            dense: vec![],
            activation: Activation::Relu,
            init: Default::default(),
        });
        for (spec, shape) in [
            (mlp, vec![1, 6, 6]),
            (relu_mlp, vec![36]),
            (cnn, vec![4, 8, 8]),
        ] {
            let ctx = ModelContext {
                input_shape: shape.clone(),
                outputs: 5,
                task: Task::Classification,
            };
            let net = Network::build(&spec, &ctx, 1, &dev, &ModelRegistry::default()).unwrap();
            let split = |n: usize, seed: u64| {
                let mut dims = vec![n];
                dims.extend_from_slice(&shape);
                let y: Vec<u32> = (0..n as u32).map(|i| i % 5).collect();
                Split {
                    x: randn(&dims, seed),
                    y: Tensor::from_vec(y, n, &dev).unwrap(),
                    len: n,
                }
            };
            let data = Dataset {
                name: "random".into(),
                task: Task::Classification,
                input_shape: shape.clone(),
                outputs: 5,
                train: split(23, 1),
                heldout: split(9, 2),
            };
            let theta0 = net.weights().unwrap();
            let d = random_direction(&theta0, net.roles(), 4, DirectionOptions::default()).unwrap();
            let eval = EvalOptions {
                train_eval_size: 20,
                eval_batch: 6,
            };
            let alphas = [-1.0, 0.0, 0.5, 2.0];
            let cache = first_layer_cache(&net, &theta0, &d, &[&data.train], eval).unwrap();
            assert!(cache.is_some(), "{spec:?} takes the fast path");
            let fast = line_search(&net, &theta0, &d, &alphas, &data, eval, |_| true).unwrap();
            assert_eq!(fast.len(), alphas.len());
            let train = data.train.head(20).unwrap();
            for (p, &a) in fast.iter().zip(&alphas) {
                net.set_weights(&theta0.axpy(a, &d).unwrap()).unwrap();
                let m = MetricKind::Accuracy;
                let t = evaluate(&net, &train, Task::Classification, m, 6).unwrap();
                let h = evaluate(&net, &data.heldout, Task::Classification, m, 6).unwrap();
                assert!(
                    (p.train.loss - t.loss).abs() < 1e-5,
                    "{} vs {}",
                    p.train.loss,
                    t.loss
                );
                assert!((p.heldout.loss - h.loss).abs() < 1e-5);
                assert_eq!(p.train.accuracy, t.accuracy);
                assert_eq!(p.heldout.accuracy, h.accuracy);
            }
        }
    }
}
