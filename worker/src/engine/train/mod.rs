//! The training loop.
//!
//! A [`Trainer`] owns one run: the network, its optimizer, and the counters
//! (epochs and steps done). [`Trainer::run`] trains up to a given epoch,
//! handing an [`EpochReport`] to an [`Observer`] after every epoch (and every
//! k batches when asked); a fresh run first reports epoch 0, the initial
//! weights. A NaN/inf loss ends the run as [`RunOutcome::Diverged`] — a
//! result, not an error. [`Trainer::checkpoint`] and [`Trainer::resume`] cut
//! a run into chunks that continue bit-for-bit on the same device.
//!
//! On the CPU, the built-in ReLU MLP/CNN trained with SGD on a
//! classification task take a hand-written training step (`direct.rs`:
//! forward, backward and update in reused buffers, without candle's
//! autograd) that computes exactly the same numbers; everything else goes
//! through candle's `backward()`.

mod checkpoint;
mod direct;
mod metrics;

use std::sync::Arc;

use candle_core::Device;
use ridgeline_common::{EpochReport, MetricKind, Metrics, RunOutcome, RunSpec, Task};

pub use checkpoint::{fingerprint, Checkpoint};
pub(crate) use metrics::evaluate_with;
pub use metrics::{evaluate, loss, regression_metrics, RegressionMetrics};

use crate::engine::data::{Batches, Dataset, Split};
use crate::engine::error::{EngineError, Result};
use crate::engine::landscape::WeightSet;
use crate::engine::model::{ModelContext, ModelRegistry, Network};
use crate::engine::optim::{Hyper, Optimizer};
use direct::DirectStep;

/// What the observer wants after a report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flow {
    Continue,
    Stop,
}

/// Receives reports as they are produced, and can stop the run.
pub trait Observer {
    fn report(&mut self, report: &EpochReport) -> Flow;
    /// Checked before every training step: `true` stops the run promptly
    /// (cancellation).
    fn cancelled(&self) -> bool {
        false
    }
}

impl<F: FnMut(&EpochReport) -> Flow> Observer for F {
    fn report(&mut self, report: &EpochReport) -> Flow {
        self(report)
    }
}

/// An observer that keeps every report.
#[derive(Debug, Default, Clone)]
pub struct Collect(pub Vec<EpochReport>);

impl Observer for Collect {
    fn report(&mut self, report: &EpochReport) -> Flow {
        self.0.push(*report);
        Flow::Continue
    }
}

/// Default batch size for evaluation passes (no gradients are kept, so it
/// can be larger than the training batch).
pub const EVAL_BATCH: usize = 1000;

/// One training run.
pub struct Trainer {
    spec: RunSpec,
    data: Arc<Dataset>,
    net: Network,
    opt: Optimizer,
    metric: MetricKind,
    train_eval: Split,
    eval_batch: usize,
    epoch: usize,
    step: u64,
    /// The hand-written training step, where it applies (`direct.rs`);
    /// `None`: candle's autograd.
    direct: Option<DirectStep>,
}

impl Trainer {
    /// A fresh run of `spec` on `data` (already loaded on `device`).
    pub fn new(
        spec: &RunSpec,
        data: Arc<Dataset>,
        device: &Device,
        registry: &ModelRegistry,
    ) -> Result<Trainer> {
        spec.validate()?;
        let ctx = ModelContext {
            input_shape: data.input_shape.clone(),
            outputs: data.outputs,
            task: data.task,
        };
        let net = Network::build(&spec.model, &ctx, spec.seed, device, registry)?;
        let opt = Optimizer::new(spec.optimizer, net.params())?;
        let metric = spec
            .metric
            .unwrap_or_else(|| MetricKind::default_for(data.task));
        if !metric.applies_to(data.task) {
            return Err(EngineError::Spec(ridgeline_common::SpecError::new(
                "metric",
                format!("{metric:?} does not apply to a {:?} dataset", data.task),
            )));
        }
        let train_eval = data.train.head(spec.train_eval_size)?;
        let direct = DirectStep::plan(spec, &data, &net, device);
        Ok(Trainer {
            spec: spec.clone(),
            data,
            net,
            opt,
            metric,
            train_eval,
            eval_batch: EVAL_BATCH,
            epoch: 0,
            step: 0,
            direct,
        })
    }

    /// Continues a run of `spec` from `checkpoint`.
    pub fn resume(
        spec: &RunSpec,
        data: Arc<Dataset>,
        device: &Device,
        registry: &ModelRegistry,
        checkpoint: &Checkpoint,
    ) -> Result<Trainer> {
        let mut t = Trainer::new(spec, data, device, registry)?;
        let want = fingerprint(spec);
        if checkpoint.fingerprint != want {
            return Err(EngineError::Checkpoint(format!(
                "the checkpoint belongs to another run (spec fingerprint {} ≠ {want})",
                checkpoint.fingerprint
            )));
        }
        if checkpoint.optimizer != t.opt.spec().name() {
            return Err(EngineError::Checkpoint(format!(
                "the checkpoint was written by {}; this run uses {}",
                checkpoint.optimizer,
                t.opt.spec().name()
            )));
        }
        let weights = checkpoint.weights.to_device(device)?;
        t.net.set_weights(&weights)?;
        t.opt.load_state(&checkpoint.optimizer_state)?;
        t.epoch = checkpoint.epoch;
        t.step = checkpoint.step;
        Ok(t)
    }

    pub fn network(&self) -> &Network {
        &self.net
    }

    pub fn spec(&self) -> &RunSpec {
        &self.spec
    }

    /// Epochs completed.
    pub fn epoch(&self) -> usize {
        self.epoch
    }

    /// Steps completed.
    pub fn step(&self) -> u64 {
        self.step
    }

    pub fn batches_per_epoch(&self) -> usize {
        Batches::count(self.data.train.len, self.spec.batch_size)
    }

    /// Whether training steps are the hand-written CPU step (built-in ReLU
    /// MLP/CNN, cross-entropy, SGD, f32) rather than candle's autograd.
    pub fn uses_direct_step(&self) -> bool {
        self.direct.is_some()
    }

    /// Trains through candle's autograd even where the hand-written step
    /// applies: for tests and benchmarks that compare the two.
    #[doc(hidden)]
    pub fn force_autograd(&mut self) {
        self.direct = None;
    }

    pub fn set_eval_batch(&mut self, n: usize) {
        self.eval_batch = n.max(1);
    }

    /// The state to continue this run later.
    pub fn checkpoint(&self) -> Result<Checkpoint> {
        Ok(Checkpoint {
            fingerprint: fingerprint(&self.spec),
            optimizer: self.opt.spec().name().to_string(),
            epoch: self.epoch,
            step: self.step,
            weights: self.net.weights()?,
            optimizer_state: self.opt.state()?,
        })
    }

    /// Learning rate and momentum of global step `step`.
    pub fn hyper_at(&self, step: u64) -> Hyper {
        let s = &self.spec.schedule;
        let t = s.position(step, self.batches_per_epoch());
        Hyper {
            lr: s.lr.at(t),
            momentum: s
                .momentum
                .as_ref()
                .map_or_else(|| self.spec.optimizer.default_momentum(), |m| m.at(t)),
        }
    }

    /// Loss and metrics on the fixed training subset and the heldout split.
    pub fn evaluate(&self) -> Result<(Metrics, Metrics)> {
        let task = self.data.task;
        Ok((
            evaluate(
                &self.net,
                &self.train_eval,
                task,
                self.metric,
                self.eval_batch,
            )?,
            evaluate(
                &self.net,
                &self.data.heldout,
                task,
                self.metric,
                self.eval_batch,
            )?,
        ))
    }

    fn make_report(&self, hyper: Hyper, batch_loss: Option<f64>) -> Result<EpochReport> {
        let (train, heldout) = self.evaluate()?;
        let bpe = self.batches_per_epoch().max(1) as f64;
        Ok(EpochReport {
            epoch: self.epoch,
            step: self.step,
            progress: self.step as f64 / bpe,
            lr: hyper.lr,
            momentum: hyper.momentum,
            batch_loss,
            train,
            heldout,
        })
    }

    /// Trains until `until_epoch` epochs are complete (at most the spec's
    /// `epochs`), reporting to `observer`.
    pub fn run(&mut self, until_epoch: usize, observer: &mut dyn Observer) -> Result<RunOutcome> {
        let until = until_epoch.min(self.spec.epochs);
        let task: Task = self.data.task;
        if self.step == 0 && self.epoch == 0 {
            let r = self.make_report(self.hyper_at(0), None)?;
            if observer.report(&r) == Flow::Stop {
                return Ok(RunOutcome::Stopped { epoch: 0 });
            }
        }
        let n = self.data.train.len;
        let bpe = self.batches_per_epoch();
        let every = self.spec.report_every_batches.filter(|&k| k > 0 && k < bpe);
        while self.epoch < until {
            let epoch = self.epoch;
            let mut hyper = self.hyper_at(self.step);
            let (mut loss_sum, mut loss_n) = (0f64, 0usize);
            let batches = Batches::new(
                self.spec.seed,
                epoch,
                n,
                self.spec.batch_size,
                self.data.train.x.device(),
            )?;
            for (i, idx) in batches.enumerate() {
                if observer.cancelled() {
                    return Ok(RunOutcome::Stopped { epoch });
                }
                // The loss on the batch (and, on the hand-written step, the
                // gradients already); the update follows the NaN check.
                let (l, lv) = match self.direct.as_mut() {
                    Some(d) => {
                        let idx = idx?.to_vec1::<u32>()?;
                        let lv = d.forward_backward(&self.net, &self.data.train, &idx)?;
                        (None, lv as f64)
                    }
                    None => {
                        let (x, y) = self.data.train.gather(&idx?)?;
                        let out = self.net.forward(&x)?;
                        let l = loss(task, &out, &y)?;
                        let lv = l.to_dtype(candle_core::DType::F64)?.to_scalar::<f64>()?;
                        (Some(l), lv)
                    }
                };
                if !lv.is_finite() {
                    return Ok(RunOutcome::Diverged {
                        epoch,
                        step: self.step,
                        reason: format!(
                            "training loss became {lv} at step {} (epoch {epoch}, lr {:.4e}, momentum {:.3})",
                            self.step, hyper.lr, hyper.momentum
                        ),
                    });
                }
                hyper = self.hyper_at(self.step);
                match (l, self.direct.as_mut()) {
                    (Some(l), _) => self.opt.backward_step(&l, hyper)?,
                    (None, Some(d)) => d.update(&mut self.opt, hyper)?,
                    (None, None) => {
                        return Err(EngineError::Model(
                            "training step: no loss to differentiate (an internal error)".into(),
                        ))
                    }
                }
                self.step += 1;
                loss_sum += lv;
                loss_n += 1;
                if let Some(k) = every {
                    if (i + 1) % k == 0 && i + 1 < bpe {
                        let r = self.make_report(hyper, Some(loss_sum / loss_n as f64))?;
                        (loss_sum, loss_n) = (0.0, 0);
                        if observer.report(&r) == Flow::Stop {
                            return Ok(RunOutcome::Stopped { epoch });
                        }
                    }
                }
            }
            self.epoch += 1;
            let r = self.make_report(hyper, (loss_n > 0).then(|| loss_sum / loss_n as f64))?;
            if !r.train.is_finite() || !r.heldout.is_finite() {
                return Ok(RunOutcome::Diverged {
                    epoch,
                    step: self.step,
                    reason: format!(
                        "the model's outputs are no longer finite after epoch {epoch} (train loss {}, heldout loss {})",
                        r.train.loss, r.heldout.loss
                    ),
                });
            }
            if observer.report(&r) == Flow::Stop {
                return Ok(RunOutcome::Stopped { epoch: self.epoch });
            }
        }
        Ok(RunOutcome::Completed { epoch: self.epoch })
    }
}

/// The procedure's "direction of brief training": θ0 of `spec`'s model, and
/// d = θ_short − θ0 where θ_short is θ0 trained for `epochs` epochs on the
/// first `subset` training examples with `spec`'s optimizer and schedule.
pub fn brief_training_direction(
    spec: &RunSpec,
    data: &Arc<Dataset>,
    device: &Device,
    registry: &ModelRegistry,
    subset: usize,
    epochs: usize,
) -> Result<(WeightSet, WeightSet, RunOutcome)> {
    let mut small = (**data).clone();
    small.train = data.train.head(subset)?;
    let mut short = spec.clone();
    short.epochs = epochs;
    let mut t = Trainer::new(&short, Arc::new(small), device, registry)?;
    let theta0 = t.network().weights()?;
    let outcome = t.run(epochs, &mut |_: &EpochReport| Flow::Continue)?;
    let d = t.network().weights()?.sub(&theta0)?;
    Ok((theta0, d, outcome))
}
