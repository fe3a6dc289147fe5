//! The `[optimizer]` section. Learning rate and momentum are not here: they
//! come from the schedule, because the procedure changes them every epoch.

use serde::{Deserialize, Serialize};

use super::{check_non_negative, check_positive, check_unit_interval, SpecError};

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum OptimizerSpec {
    /// SGD with classical momentum in the procedure's form
    /// (v ← μv − lr·∇L; w ← w + v), or Nesterov momentum.
    Sgd(SgdSpec),
    /// Adam; the schedule's momentum, when given, drives β1.
    Adam(AdamSpec),
    /// Adam with decoupled weight decay.
    #[serde(rename = "adamw")]
    AdamW(AdamSpec),
    /// RMSprop (PyTorch's form); the schedule's momentum drives its momentum.
    Rmsprop(RmspropSpec),
    Adagrad(AdagradSpec),
}

impl OptimizerSpec {
    pub fn name(&self) -> &'static str {
        match self {
            OptimizerSpec::Sgd(s) if s.nesterov => "nesterov",
            OptimizerSpec::Sgd(_) => "sgd",
            OptimizerSpec::Adam(_) => "adam",
            OptimizerSpec::AdamW(_) => "adamw",
            OptimizerSpec::Rmsprop(_) => "rmsprop",
            OptimizerSpec::Adagrad(_) => "adagrad",
        }
    }

    /// Momentum used when the schedule gives none: 0 for SGD and RMSprop,
    /// β1 = 0.9 for Adam/AdamW, none for Adagrad.
    pub fn default_momentum(&self) -> f64 {
        match self {
            OptimizerSpec::Adam(s) | OptimizerSpec::AdamW(s) => s.beta1,
            _ => 0.0,
        }
    }

    pub fn sgd() -> Self {
        OptimizerSpec::Sgd(SgdSpec::default())
    }

    pub fn validate(&self) -> Result<(), SpecError> {
        match self {
            OptimizerSpec::Sgd(s) => check_non_negative("weight_decay", s.weight_decay),
            OptimizerSpec::Adam(s) | OptimizerSpec::AdamW(s) => {
                check_unit_interval("beta1", s.beta1)?;
                check_unit_interval("beta2", s.beta2)?;
                check_positive("eps", s.eps)?;
                check_non_negative("weight_decay", s.weight_decay)
            }
            OptimizerSpec::Rmsprop(s) => {
                check_unit_interval("alpha", s.alpha)?;
                check_positive("eps", s.eps)?;
                check_non_negative("weight_decay", s.weight_decay)
            }
            OptimizerSpec::Adagrad(s) => {
                check_positive("eps", s.eps)?;
                check_non_negative("lr_decay", s.lr_decay)?;
                check_non_negative("weight_decay", s.weight_decay)
            }
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SgdSpec {
    #[serde(default)]
    pub nesterov: bool,
    /// L2 penalty added to the gradient.
    #[serde(default)]
    pub weight_decay: f64,
}

fn d_beta1() -> f64 {
    0.9
}
fn d_beta2() -> f64 {
    0.999
}
fn d_eps() -> f64 {
    1e-8
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdamSpec {
    #[serde(default = "d_beta1")]
    pub beta1: f64,
    #[serde(default = "d_beta2")]
    pub beta2: f64,
    #[serde(default = "d_eps")]
    pub eps: f64,
    /// Adam: L2 penalty added to the gradient; AdamW: decoupled decay.
    #[serde(default)]
    pub weight_decay: f64,
}

impl Default for AdamSpec {
    fn default() -> Self {
        Self {
            beta1: d_beta1(),
            beta2: d_beta2(),
            eps: d_eps(),
            weight_decay: 0.0,
        }
    }
}

fn d_alpha() -> f64 {
    0.99
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RmspropSpec {
    #[serde(default = "d_alpha")]
    pub alpha: f64,
    #[serde(default = "d_eps")]
    pub eps: f64,
    #[serde(default)]
    pub weight_decay: f64,
}

impl Default for RmspropSpec {
    fn default() -> Self {
        Self {
            alpha: d_alpha(),
            eps: d_eps(),
            weight_decay: 0.0,
        }
    }
}

fn d_adagrad_eps() -> f64 {
    1e-10
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdagradSpec {
    #[serde(default = "d_adagrad_eps")]
    pub eps: f64,
    #[serde(default)]
    pub lr_decay: f64,
    #[serde(default)]
    pub weight_decay: f64,
}

impl Default for AdagradSpec {
    fn default() -> Self {
        Self {
            eps: d_adagrad_eps(),
            lr_decay: 0.0,
            weight_decay: 0.0,
        }
    }
}
