//! The `[procedure]` section of a `procedure` job: the seven steps of the
//! seed blog post (SPEC §1) and their settings. Every field has a default,
//! so `[procedure]` alone runs the whole procedure.
//!
//! ```toml
//! kind = "procedure"
//! replicates = 3
//! [procedure]
//! steps = [1, 2, 3, 4, 5, 6, 7]  # all by default; 3 and 4 need 2; 5-7 need 4
//! lr_start = 1e-4                # step 2: the LR ramp
//! lr_end = 10.0
//! lr_epochs = 10
//! momentum_epochs = 8            # step 3: μ from 0 to 0.99
//! confirm_epochs = 5             # step 3: (lr, μ) against (lr, 0)
//! epochs = 20                    # steps 4-6: "train to convergence"
//! points = 41                    # steps 1 and 7: line-search points
//! variants = ["adam"]            # step 6
//! delta_min = 0.002              # smallest gain a comparison adopts
//! ```
//!
//! The coordinator turns this into a DAG of stages (see the planner); the
//! curve of every run is named `<stage>,seed=<s>` so that a job's stored
//! curves say which stage measured them.

use serde::{Deserialize, Serialize};

use crate::job::DirectionKind;
use crate::schedule::{LrSchedule, MomentumSchedule, ScheduleSpec};
use crate::spec::{
    check_non_negative, check_positive, check_unit_interval, AdagradSpec, AdamSpec, RmspropSpec,
    SgdSpec, SpecError,
};
use crate::OptimizerSpec;

/// An SGD variant of step 6.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Variant {
    Adam,
    #[serde(rename = "adamw")]
    AdamW,
    Rmsprop,
    Nesterov,
    Adagrad,
}

impl Variant {
    pub fn as_str(self) -> &'static str {
        match self {
            Variant::Adam => "adam",
            Variant::AdamW => "adamw",
            Variant::Rmsprop => "rmsprop",
            Variant::Nesterov => "nesterov",
            Variant::Adagrad => "adagrad",
        }
    }

    /// The optimizer with its default settings.
    pub fn optimizer(self) -> OptimizerSpec {
        match self {
            Variant::Adam => OptimizerSpec::Adam(AdamSpec::default()),
            Variant::AdamW => OptimizerSpec::AdamW(AdamSpec::default()),
            Variant::Rmsprop => OptimizerSpec::Rmsprop(RmspropSpec::default()),
            Variant::Nesterov => OptimizerSpec::Sgd(SgdSpec {
                nesterov: true,
                ..SgdSpec::default()
            }),
            Variant::Adagrad => OptimizerSpec::Adagrad(AdagradSpec::default()),
        }
    }

    /// The momentum its ramp and run use (`None`: the optimizer's own
    /// default, e.g. Adam's β1 = 0.9). Nesterov momentum needs a momentum.
    pub fn momentum(self) -> Option<f64> {
        match self {
            Variant::Nesterov => Some(0.9),
            Variant::Adagrad => None,
            Variant::Rmsprop => Some(0.0),
            Variant::Adam | Variant::AdamW => None,
        }
    }
}

fn d_steps() -> Vec<u8> {
    vec![1, 2, 3, 4, 5, 6, 7]
}
fn d_lr_start() -> f64 {
    1e-4
}
fn d_lr_end() -> f64 {
    10.0
}
fn d_lr_epochs() -> usize {
    10
}
fn d_mu_end() -> f64 {
    0.99
}
fn d_momentum_epochs() -> usize {
    8
}
fn d_confirm_epochs() -> usize {
    5
}
fn d_epochs() -> usize {
    20
}
fn d_points() -> usize {
    41
}
fn d_points_per_task() -> usize {
    8
}
fn d_variants() -> Vec<Variant> {
    vec![Variant::Adam]
}
fn d_variant_lr_start() -> f64 {
    1e-5
}
fn d_variant_lr_end() -> f64 {
    1.0
}
fn d_delta_min() -> f64 {
    0.002
}
fn d_true() -> bool {
    true
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProcedureSection {
    /// The steps to run (1-7).
    #[serde(default = "d_steps")]
    pub steps: Vec<u8>,
    /// Step 2: the LR grows exponentially from `lr_start` to `lr_end` over
    /// `lr_epochs` epochs, with momentum 0.
    #[serde(default = "d_lr_start")]
    pub lr_start: f64,
    #[serde(default = "d_lr_end")]
    pub lr_end: f64,
    #[serde(default = "d_lr_epochs")]
    pub lr_epochs: usize,
    /// Raise the LR every k batches for a finer ramp.
    #[serde(default)]
    pub lr_every_batches: Option<usize>,
    /// Step 3: momentum from `momentum_start` to `momentum_end` (geometric
    /// in 1 − μ) over `momentum_epochs` epochs at the chosen LR.
    #[serde(default)]
    pub momentum_start: f64,
    #[serde(default = "d_mu_end")]
    pub momentum_end: f64,
    #[serde(default = "d_momentum_epochs")]
    pub momentum_epochs: usize,
    /// Step 3: the confirmation (lr, μ) against (lr, 0) runs this long.
    #[serde(default = "d_confirm_epochs")]
    pub confirm_epochs: usize,
    /// Steps 4-6: the length of the runs "to convergence" (M is found
    /// inside it) and of the decay, cyclical and variant runs.
    #[serde(default = "d_epochs")]
    pub epochs: usize,
    /// Steps 1 and 7: points of each line search (a in [-1, 1] for step
    /// 1, [-0.5, 1.5] for step 7), and points per task.
    #[serde(default = "d_points")]
    pub points: usize,
    #[serde(default = "d_points_per_task")]
    pub points_per_task: usize,
    /// Step 1's direction: random (filter-normalised) or trained briefly.
    #[serde(default)]
    pub direction: DirectionKind,
    #[serde(default = "d_true")]
    pub filter_normalize: bool,
    /// Step 6: the variants, each with its own LR ramp from
    /// `variant_lr_start` to `variant_lr_end`.
    #[serde(default = "d_variants")]
    pub variants: Vec<Variant>,
    #[serde(default = "d_variant_lr_start")]
    pub variant_lr_start: f64,
    #[serde(default = "d_variant_lr_end")]
    pub variant_lr_end: f64,
    /// A comparison adopts the candidate only if its mean beats the
    /// baseline's by more than max(delta_min, 2 × SE of the paired
    /// difference).
    #[serde(default = "d_delta_min")]
    pub delta_min: f64,
}

impl Default for ProcedureSection {
    fn default() -> Self {
        // serde's defaults are the one source of truth.
        toml::from_str("").unwrap_or_else(|_| unreachable!("every field has a default"))
    }
}

impl ProcedureSection {
    pub fn runs_step(&self, step: u8) -> bool {
        self.steps.contains(&step)
    }

    /// Step 2: exponential from `lr_start` to `lr_end`, momentum 0.
    pub fn lr_ramp_schedule(&self) -> ScheduleSpec {
        ScheduleSpec {
            lr: LrSchedule::ExpRamp {
                start: self.lr_start,
                end: self.lr_end,
                epochs: self.lr_epochs,
            },
            momentum: Some(MomentumSchedule::Constant { value: 0.0 }),
            every_batches: self.lr_every_batches,
        }
    }

    /// Step 3: momentum ramp at the chosen `lr`.
    pub fn momentum_ramp_schedule(&self, lr: f64) -> ScheduleSpec {
        ScheduleSpec {
            lr: LrSchedule::Constant { lr },
            momentum: Some(MomentumSchedule::OneMinusExpRamp {
                start: self.momentum_start,
                end: self.momentum_end,
                epochs: self.momentum_epochs,
            }),
            every_batches: None,
        }
    }

    /// Step 6: a variant's own LR ramp.
    pub fn variant_ramp_schedule(&self, v: Variant) -> ScheduleSpec {
        ScheduleSpec {
            lr: LrSchedule::ExpRamp {
                start: self.variant_lr_start,
                end: self.variant_lr_end,
                epochs: self.lr_epochs,
            },
            momentum: v
                .momentum()
                .map(|value| MomentumSchedule::Constant { value }),
            every_batches: self.lr_every_batches,
        }
    }

    pub fn validate(&self) -> Result<(), SpecError> {
        if self.steps.is_empty() {
            return Err(SpecError::new("steps", "needs at least one step (1-7)"));
        }
        for (i, &s) in self.steps.iter().enumerate() {
            if !(1..=7).contains(&s) {
                return Err(SpecError::new(
                    format!("steps[{i}]"),
                    format!("{s} is not a step (1-7)"),
                ));
            }
            if self.steps[..i].contains(&s) {
                return Err(SpecError::new(
                    format!("steps[{i}]"),
                    format!("step {s} is listed twice"),
                ));
            }
        }
        for (step, needs) in [(3, 2), (4, 2), (5, 4), (6, 4), (7, 4)] {
            if self.runs_step(step) && !self.runs_step(needs) {
                return Err(SpecError::new(
                    "steps",
                    format!("step {step} needs step {needs} (add {needs}, or leave {step} out)"),
                ));
            }
        }
        check_positive("lr_start", self.lr_start)?;
        check_positive("lr_end", self.lr_end)?;
        if self.lr_end <= self.lr_start {
            return Err(SpecError::new("lr_end", "must be larger than lr_start"));
        }
        if self.lr_epochs < 3 {
            return Err(SpecError::new(
                "lr_epochs",
                "a ramp needs at least 3 epochs",
            ));
        }
        if self.lr_every_batches == Some(0) {
            return Err(SpecError::new("lr_every_batches", "must be at least 1"));
        }
        check_unit_interval("momentum_start", self.momentum_start)?;
        check_unit_interval("momentum_end", self.momentum_end)?;
        if self.momentum_end <= self.momentum_start {
            return Err(SpecError::new(
                "momentum_end",
                "must be larger than momentum_start",
            ));
        }
        if self.momentum_epochs < 3 {
            return Err(SpecError::new(
                "momentum_epochs",
                "a ramp needs at least 3 epochs",
            ));
        }
        if self.confirm_epochs == 0 {
            return Err(SpecError::new("confirm_epochs", "must be at least 1"));
        }
        if self.epochs < 2 {
            return Err(SpecError::new("epochs", "must be at least 2"));
        }
        if self.points < 3 || self.points > 10_000 {
            return Err(SpecError::new("points", "must be between 3 and 10000"));
        }
        if self.points_per_task == 0 {
            return Err(SpecError::new("points_per_task", "must be at least 1"));
        }
        for (i, v) in self.variants.iter().enumerate() {
            if self.variants[..i].contains(v) {
                return Err(SpecError::new(
                    format!("variants[{i}]"),
                    format!("`{}` is listed twice", v.as_str()),
                ));
            }
        }
        check_positive("variant_lr_start", self.variant_lr_start)?;
        check_positive("variant_lr_end", self.variant_lr_end)?;
        if self.variant_lr_end <= self.variant_lr_start {
            return Err(SpecError::new(
                "variant_lr_end",
                "must be larger than variant_lr_start",
            ));
        }
        check_non_negative("delta_min", self.delta_min)?;
        Ok(())
    }
}

/// Curve and group names of a procedure job's runs: `<group>,seed=<s>`.
pub mod groups {
    pub const INITIAL_LINE_SEARCH: &str = "initial_line_search";
    pub const LR_RAMP: &str = "lr_ramp";
    pub const MOMENTUM_RAMP: &str = "momentum_ramp";
    /// Step 3's confirmation: (lr, μ) and (lr, 0).
    pub const CONFIRM_WITH: &str = "confirm_momentum";
    pub const CONFIRM_WITHOUT: &str = "confirm_no_momentum";
    /// Step 4: the run to convergence (the "no decay" baseline), then decay.
    pub const CONVERGE: &str = "converge";
    pub const DECAY: &str = "decay";
    /// Step 5.
    pub const CYCLICAL: &str = "cyclical";
    pub const FINAL_LINE_SEARCH: &str = "final_line_search";

    /// Step 6: a variant's own LR ramp.
    pub fn variant_ramp(v: &str) -> String {
        format!("variant_ramp:{v}")
    }

    /// Step 6: a variant's run as long as the SGD one.
    pub fn variant(v: &str) -> String {
        format!("variant:{v}")
    }

    pub fn curve(group: &str, seed: u64) -> String {
        format!("{group},seed={seed}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_section_runs_everything_with_defaults() {
        let p = ProcedureSection::default();
        assert_eq!(p.steps, vec![1, 2, 3, 4, 5, 6, 7]);
        assert_eq!(p.variants, vec![Variant::Adam]);
        assert_eq!(p.points, 41);
        p.validate().unwrap();
    }

    #[test]
    fn steps_need_what_they_build_on() {
        let p = ProcedureSection {
            steps: vec![1, 3],
            ..Default::default()
        };
        let e = p.validate().unwrap_err();
        assert_eq!(e.field, "steps");
        assert!(e.message.contains("step 3 needs step 2"), "{e}");
        let p = ProcedureSection {
            steps: vec![1, 2, 8],
            ..Default::default()
        };
        assert_eq!(p.validate().unwrap_err().field, "steps[2]");
        let p = ProcedureSection {
            steps: vec![1, 2],
            ..Default::default()
        };
        p.validate().unwrap();
    }

    #[test]
    fn bad_numbers_name_their_field() {
        let p = ProcedureSection {
            lr_end: 1e-5,
            ..Default::default()
        };
        assert_eq!(p.validate().unwrap_err().field, "lr_end");
        let p = ProcedureSection {
            delta_min: f64::NAN,
            ..Default::default()
        };
        assert_eq!(p.validate().unwrap_err().field, "delta_min");
        let p = ProcedureSection {
            variants: vec![Variant::Adam, Variant::Adam],
            ..Default::default()
        };
        assert_eq!(p.validate().unwrap_err().field, "variants[1]");
    }
}
