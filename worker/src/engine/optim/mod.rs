//! Optimizers with explicit, resumable state, written over candle [`Var`]s.
//!
//! Learning rate and momentum are not part of an optimizer: they are passed
//! to every [`Optimizer::step`] as a [`Hyper`], because the procedure's ramps
//! change them every epoch (or every k batches).
//!
//! | optimizer | update (g = ∇L, plus `weight_decay`·w where it is an L2 term) |
//! |---|---|
//! | SGD | v ← μv − lr·g; w ← w + v (the procedure's form, see below) |
//! | Nesterov | v ← μv − lr·g; w ← w + μv − lr·g |
//! | Adam | PyTorch's Adam; μ drives β1 (bias correction with the current β1) |
//! | AdamW | Adam with decoupled decay w ← w·(1 − lr·wd) |
//! | RMSprop | PyTorch's RMSprop; μ drives its momentum |
//! | Adagrad | PyTorch's Adagrad with `lr_decay` |
//!
//! **SGD momentum form.** PyTorch keeps b ← μb + g and steps w ← w − lr·b,
//! so the learning rate multiplies the whole history: changing lr rescales
//! every past gradient at once. The procedure's form keeps the velocity in
//! weight units (v ← μv − lr·g), so an lr change only affects new gradients.
//! The two agree exactly while lr is constant, and differ as soon as a ramp
//! or decay changes it (see `worker/tests/optim_pytorch.rs`).

use candle_core::backprop::GradStore;
use candle_core::{Tensor, Var};
use ridgeline_common::OptimizerSpec;

use crate::engine::error::{EngineError, Result};
use crate::engine::model::Params;

mod fused;

/// The step's learning rate and momentum (β1 for Adam/AdamW; ignored by
/// Adagrad).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Hyper {
    pub lr: f64,
    pub momentum: f64,
}

/// Everything an optimizer carries from one step to the next: the number of
/// steps taken and, per parameter, its slot tensors (named
/// `"<param>.<slot>"`, e.g. `"fc0.weight.velocity"`).
#[derive(Debug, Clone)]
pub struct OptimizerState {
    pub steps: u64,
    pub slots: Vec<(String, Tensor)>,
}

/// An optimizer bound to a model's parameters.
pub struct Optimizer {
    spec: OptimizerSpec,
    vars: Vec<Var>,
    names: Vec<String>,
    /// `slots[param][slot]`, in the order of [`slot_names`].
    slots: Vec<Vec<Tensor>>,
    steps: u64,
}

/// The per-parameter state an optimizer keeps.
pub fn slot_names(spec: &OptimizerSpec) -> &'static [&'static str] {
    match spec {
        OptimizerSpec::Sgd(_) => &["velocity"],
        OptimizerSpec::Adam(_) | OptimizerSpec::AdamW(_) => &["exp_avg", "exp_avg_sq"],
        OptimizerSpec::Rmsprop(_) => &["square_avg", "momentum_buffer"],
        OptimizerSpec::Adagrad(_) => &["sum"],
    }
}

impl Optimizer {
    /// A fresh optimizer (zero state) for `params`.
    pub fn new(spec: OptimizerSpec, params: &Params) -> Result<Self> {
        let n_slots = slot_names(&spec).len();
        let slots = params
            .vars()
            .iter()
            .map(|v| (0..n_slots).map(|_| v.as_tensor().zeros_like()).collect())
            .collect::<candle_core::Result<Vec<Vec<Tensor>>>>()?;
        Ok(Self {
            spec,
            vars: params.vars().to_vec(),
            names: params.names().to_vec(),
            slots,
            steps: 0,
        })
    }

    pub fn spec(&self) -> &OptimizerSpec {
        &self.spec
    }

    /// Steps taken so far.
    pub fn steps(&self) -> u64 {
        self.steps
    }

    /// Computes the gradients of `loss` and takes one step.
    pub fn backward_step(&mut self, loss: &Tensor, hyper: Hyper) -> Result<()> {
        let grads = loss.backward()?;
        self.step(&grads, hyper)
    }

    /// One update of every parameter that has a gradient in `grads`
    /// (parameters without one are left alone, as in PyTorch).
    pub fn step(&mut self, grads: &GradStore, hyper: Hyper) -> Result<()> {
        self.steps += 1;
        let t = self.steps;
        let Hyper { lr, momentum: mu } = hyper;
        for (i, var) in self.vars.iter().enumerate() {
            let Some(g) = grads.get(var) else { continue };
            let w = var.as_tensor();
            let slots = &mut self.slots[i];
            match self.spec {
                OptimizerSpec::Sgd(s) if fused::applies(w, g, &slots[0]) => {
                    fused::sgd(w, &g.contiguous()?, &slots[0], lr, mu, s)?;
                }
                OptimizerSpec::Sgd(s) => {
                    let g = with_l2(g, w, s.weight_decay)?;
                    // v ← μv − lr·g
                    let v = (slots[0].affine(mu, 0.0)? - g.affine(lr, 0.0)?)?;
                    let update = if s.nesterov {
                        // w ← w + μv − lr·g
                        (v.affine(mu, 0.0)? - g.affine(lr, 0.0)?)?
                    } else {
                        v.clone()
                    };
                    var.set(&(w + update)?)?;
                    slots[0] = v;
                }
                OptimizerSpec::Adam(s) | OptimizerSpec::AdamW(s) => {
                    let decoupled = matches!(self.spec, OptimizerSpec::AdamW(_));
                    let (w, g) = if decoupled {
                        (w.affine(1.0 - lr * s.weight_decay, 0.0)?, g.clone())
                    } else {
                        (w.clone(), with_l2(g, w, s.weight_decay)?)
                    };
                    let beta1 = mu;
                    let m = (slots[0].affine(beta1, 0.0)? + g.affine(1.0 - beta1, 0.0)?)?;
                    let v =
                        (slots[1].affine(s.beta2, 0.0)? + g.sqr()?.affine(1.0 - s.beta2, 0.0)?)?;
                    let bc1 = 1.0 - beta1.powi(t as i32);
                    let bc2 = 1.0 - s.beta2.powi(t as i32);
                    let denom = v.sqrt()?.affine(1.0 / bc2.sqrt(), s.eps)?;
                    let step = (m.affine(lr / bc1, 0.0)? / denom)?;
                    var.set(&(w - step)?)?;
                    slots[0] = m;
                    slots[1] = v;
                }
                OptimizerSpec::Rmsprop(s) => {
                    let g = with_l2(g, w, s.weight_decay)?;
                    let sq =
                        (slots[0].affine(s.alpha, 0.0)? + g.sqr()?.affine(1.0 - s.alpha, 0.0)?)?;
                    let avg = sq.sqrt()?.affine(1.0, s.eps)?;
                    let scaled = (g / avg)?;
                    // With μ = 0 this is PyTorch's momentum-free update.
                    let buf = (slots[1].affine(mu, 0.0)? + scaled)?;
                    var.set(&(w - buf.affine(lr, 0.0)?)?)?;
                    slots[0] = sq;
                    slots[1] = buf;
                }
                OptimizerSpec::Adagrad(s) => {
                    let g = with_l2(g, w, s.weight_decay)?;
                    let clr = lr / (1.0 + (t - 1) as f64 * s.lr_decay);
                    let sum = (&slots[0] + g.sqr()?)?;
                    let std = sum.sqrt()?.affine(1.0, s.eps)?;
                    var.set(&(w - (g / std)?.affine(clr, 0.0)?)?)?;
                    slots[0] = sum;
                }
            }
        }
        Ok(())
    }

    /// One SGD step with the gradients given as slices, one per parameter
    /// in order (the hand-written training step's buffers): the very update
    /// [`Optimizer::step`] makes with those gradients (CPU, f32).
    pub(crate) fn sgd_step_from_slices(&mut self, grads: &[Vec<f32>], hyper: Hyper) -> Result<()> {
        let OptimizerSpec::Sgd(s) = self.spec else {
            return Err(EngineError::Model(format!(
                "the hand-written training step needs SGD, not {}",
                self.spec.name()
            )));
        };
        if grads.len() != self.vars.len() {
            return Err(EngineError::Model(format!(
                "{} gradients for {} parameters",
                grads.len(),
                self.vars.len()
            )));
        }
        self.steps += 1;
        for ((var, slots), g) in self.vars.iter().zip(&self.slots).zip(grads) {
            fused::sgd_from_slice(var.as_tensor(), g, &slots[0], hyper.lr, hyper.momentum, s)?;
        }
        Ok(())
    }

    /// A copy of the state, for a checkpoint.
    pub fn state(&self) -> Result<OptimizerState> {
        let names = slot_names(&self.spec);
        let slots = self
            .names
            .iter()
            .zip(&self.slots)
            .flat_map(|(p, s)| {
                names
                    .iter()
                    .zip(s)
                    // A copy: the slots are updated in place (fused SGD).
                    .map(move |(n, t)| Ok((format!("{p}.{n}"), t.copy()?)))
            })
            .collect::<candle_core::Result<Vec<_>>>()?;
        Ok(OptimizerState {
            steps: self.steps,
            slots,
        })
    }

    /// Restores a state taken with [`Optimizer::state`] from an optimizer of
    /// the same kind over the same parameters.
    pub fn load_state(&mut self, state: &OptimizerState) -> Result<()> {
        let names = slot_names(&self.spec);
        let expected = self.names.len() * names.len();
        if state.slots.len() != expected {
            return Err(EngineError::Checkpoint(format!(
                "optimizer state has {} slot tensors; {} with {} parameters needs {expected}",
                state.slots.len(),
                self.spec.name(),
                self.names.len()
            )));
        }
        let mut it = state.slots.iter();
        for (i, p) in self.names.iter().enumerate() {
            for (j, n) in names.iter().enumerate() {
                let (key, t) = it
                    .next()
                    .ok_or_else(|| EngineError::Checkpoint("optimizer state ended early".into()))?;
                let want = format!("{p}.{n}");
                if *key != want {
                    return Err(EngineError::Checkpoint(format!(
                        "optimizer state has `{key}` where `{want}` was expected"
                    )));
                }
                let var = &self.vars[i];
                if t.dims() != var.dims() {
                    return Err(EngineError::Checkpoint(format!(
                        "optimizer slot `{key}` is shaped {:?}; the parameter is {:?}",
                        t.dims(),
                        var.dims()
                    )));
                }
                // A copy, never the caller's storage (slots change in place).
                self.slots[i][j] = t.to_device(var.device())?.to_dtype(var.dtype())?.copy()?;
            }
        }
        self.steps = state.steps;
        Ok(())
    }
}

/// g + wd·w (PyTorch's `weight_decay` as an L2 term).
fn with_l2(g: &Tensor, w: &Tensor, wd: f64) -> candle_core::Result<Tensor> {
    if wd == 0.0 {
        Ok(g.clone())
    } else {
        g + w.affine(wd, 0.0)?
    }
}
