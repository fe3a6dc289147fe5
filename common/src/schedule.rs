//! Learning-rate and momentum schedules: pure functions of the position in
//! the run, measured in epochs (`t = 0` is the start of the first epoch).
//!
//! A schedule is evaluated once per epoch (`t = 0, 1, 2, …`) or, when a
//! finer curve is wanted, every k batches (`t` fractional). The value at `t`
//! applies to the training steps from `t` until the next evaluation point.
//!
//! | schedule | value at t |
//! |---|---|
//! | constant | lr |
//! | exp_ramp | start·(end/start)^(t/(epochs−1)) — `end` is reached at the last epoch |
//! | linear_ramp | start + (end−start)·t/(epochs−1) |
//! | power_decay | lr·a^t, a = (2/3)^(1/M) unless `a` is given |
//! | cyclical | sawtooth: 2·lr at the start of each M-epoch cycle, shrinking linearly to lr/2 at its last epoch, then back to 2·lr |

use serde::{Deserialize, Serialize};

use crate::spec::{check_positive, check_unit_interval, SpecError};

/// The `[schedule]` section of a run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScheduleSpec {
    pub lr: LrSchedule,
    /// `None`: the optimizer's default momentum (see `OptimizerSpec`).
    #[serde(default)]
    pub momentum: Option<MomentumSchedule>,
    /// Re-evaluate the schedules every this many batches (`None`: every
    /// epoch).
    #[serde(default)]
    pub every_batches: Option<usize>,
}

impl ScheduleSpec {
    pub fn constant(lr: f64, momentum: Option<f64>) -> Self {
        Self {
            lr: LrSchedule::Constant { lr },
            momentum: momentum.map(|value| MomentumSchedule::Constant { value }),
            every_batches: None,
        }
    }

    pub fn validate(&self) -> Result<(), SpecError> {
        self.lr.validate().map_err(|e| e.within("lr"))?;
        if let Some(m) = &self.momentum {
            m.validate().map_err(|e| e.within("momentum"))?;
        }
        if self.every_batches == Some(0) {
            return Err(SpecError::new(
                "every_batches",
                "must be at least 1 (leave it out to step once per epoch)",
            ));
        }
        Ok(())
    }

    /// The schedule position of global training step `step` (0-based) in a
    /// run with `batches_per_epoch` batches per epoch: the epoch index when
    /// stepping per epoch, or the start of the current k-batch block in
    /// fractional epochs.
    pub fn position(&self, step: u64, batches_per_epoch: usize) -> f64 {
        let bpe = batches_per_epoch.max(1) as u64;
        match self.every_batches {
            None => (step / bpe) as f64,
            Some(k) => {
                let epoch = step / bpe;
                let within = step % bpe;
                // Blocks restart at each epoch boundary so every epoch is
                // stepped the same way whatever its length.
                let block_start = (within / k as u64) * k as u64;
                epoch as f64 + block_start as f64 / bpe as f64
            }
        }
    }
}

/// Learning rate as a function of the epoch position.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum LrSchedule {
    Constant {
        lr: f64,
    },
    /// Geometric growth from `start` (epoch 0) to `end` (epoch `epochs`−1).
    ExpRamp {
        start: f64,
        end: f64,
        epochs: usize,
    },
    /// Linear growth from `start` to `end` over `epochs` epochs.
    LinearRamp {
        start: f64,
        end: f64,
        epochs: usize,
    },
    /// lr·a^t with a = (2/3)^(1/m): after M epochs the rate is 2/3 of lr.
    PowerDecay {
        lr: f64,
        m: f64,
    },
    /// Sawtooth between 2·lr and lr/2 with an M-epoch period.
    Cyclical {
        lr: f64,
        m: usize,
    },
}

impl LrSchedule {
    /// The learning rate at position `t` (epochs).
    pub fn at(&self, t: f64) -> f64 {
        match *self {
            LrSchedule::Constant { lr } => lr,
            LrSchedule::ExpRamp { start, end, epochs } => {
                start * (end / start).powf(ramp_fraction(t, epochs))
            }
            LrSchedule::LinearRamp { start, end, epochs } => {
                start + (end - start) * ramp_fraction(t, epochs)
            }
            LrSchedule::PowerDecay { lr, m } => lr * power_decay_base(m).powf(t),
            LrSchedule::Cyclical { lr, m } => {
                let (upper, lower) = (2.0 * lr, 0.5 * lr);
                if m <= 1 {
                    return upper;
                }
                let phase = t.rem_euclid(m as f64);
                let frac = (phase / (m - 1) as f64).min(1.0);
                upper - (upper - lower) * frac
            }
        }
    }

    /// The rate the schedule is built around (the ramp's end for ramps).
    pub fn base(&self) -> f64 {
        match *self {
            LrSchedule::Constant { lr }
            | LrSchedule::PowerDecay { lr, .. }
            | LrSchedule::Cyclical { lr, .. } => lr,
            LrSchedule::ExpRamp { end, .. } | LrSchedule::LinearRamp { end, .. } => end,
        }
    }

    pub fn validate(&self) -> Result<(), SpecError> {
        match *self {
            LrSchedule::Constant { lr } => check_positive("lr", lr),
            LrSchedule::ExpRamp { start, end, epochs }
            | LrSchedule::LinearRamp { start, end, epochs } => {
                check_positive("start", start)?;
                check_positive("end", end)?;
                if epochs < 2 {
                    return Err(SpecError::new("epochs", "a ramp needs at least 2 epochs"));
                }
                Ok(())
            }
            LrSchedule::PowerDecay { lr, m } => {
                check_positive("lr", lr)?;
                check_positive("m", m)
            }
            LrSchedule::Cyclical { lr, m } => {
                check_positive("lr", lr)?;
                if m == 0 {
                    return Err(SpecError::new("m", "must be at least 1"));
                }
                Ok(())
            }
        }
    }
}

/// a = (2/3)^(1/M): the procedure's power-decay base.
pub fn power_decay_base(m: f64) -> f64 {
    (2.0f64 / 3.0).powf(1.0 / m)
}

/// Position within a ramp of `epochs` epochs, in [0, 1] at integer epochs
/// (it may pass 1 within the last epoch when stepping every k batches).
fn ramp_fraction(t: f64, epochs: usize) -> f64 {
    if epochs <= 1 {
        return 1.0;
    }
    t / (epochs - 1) as f64
}

/// Momentum as a function of the epoch position.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum MomentumSchedule {
    Constant {
        value: f64,
    },
    /// Linear from `start` to `end` over `epochs` epochs.
    LinearRamp {
        start: f64,
        end: f64,
        epochs: usize,
    },
    /// Geometric in (1 − μ): from `start` to `end` with 1−μ shrinking by the
    /// same factor every epoch, so 0.9 → 0.99 gets as many epochs as
    /// 0 → 0.9. The natural ramp towards 0.99.
    OneMinusExpRamp {
        start: f64,
        end: f64,
        epochs: usize,
    },
}

impl MomentumSchedule {
    pub fn at(&self, t: f64) -> f64 {
        let v = match *self {
            MomentumSchedule::Constant { value } => value,
            MomentumSchedule::LinearRamp { start, end, epochs } => {
                start + (end - start) * ramp_fraction(t, epochs)
            }
            MomentumSchedule::OneMinusExpRamp { start, end, epochs } => {
                let (a, b) = (1.0 - start, 1.0 - end);
                1.0 - a * (b / a).powf(ramp_fraction(t, epochs))
            }
        };
        // Stepping every k batches may run a ramp slightly past its end.
        v.clamp(0.0, 0.999_999)
    }

    pub fn validate(&self) -> Result<(), SpecError> {
        match *self {
            MomentumSchedule::Constant { value } => check_unit_interval("value", value),
            MomentumSchedule::LinearRamp { start, end, epochs }
            | MomentumSchedule::OneMinusExpRamp { start, end, epochs } => {
                check_unit_interval("start", start)?;
                check_unit_interval("end", end)?;
                if epochs < 2 {
                    return Err(SpecError::new("epochs", "a ramp needs at least 2 epochs"));
                }
                Ok(())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() <= 1e-12 * (1.0 + a.abs().max(b.abs()))
    }

    #[test]
    fn exp_ramp_hits_both_ends_and_is_geometric() {
        let s = LrSchedule::ExpRamp {
            start: 1e-4,
            end: 1.0,
            epochs: 5,
        };
        assert!(close(s.at(0.0), 1e-4));
        assert!(close(s.at(4.0), 1.0));
        // Constant ratio of 10 between consecutive epochs.
        for e in 0..4 {
            assert!(close(s.at(e as f64 + 1.0) / s.at(e as f64), 10.0));
        }
    }

    #[test]
    fn linear_ramps() {
        let s = LrSchedule::LinearRamp {
            start: 0.1,
            end: 0.5,
            epochs: 5,
        };
        let got: Vec<f64> = (0..5).map(|e| s.at(e as f64)).collect();
        for (g, w) in got.iter().zip([0.1, 0.2, 0.3, 0.4, 0.5]) {
            assert!(close(*g, w), "{got:?}");
        }
        let m = MomentumSchedule::LinearRamp {
            start: 0.0,
            end: 0.99,
            epochs: 4,
        };
        assert!(close(m.at(0.0), 0.0));
        assert!(close(m.at(3.0), 0.99));
        assert!(close(m.at(1.5), 0.495));
    }

    #[test]
    fn one_minus_ramp_is_geometric_in_one_minus_mu() {
        let m = MomentumSchedule::OneMinusExpRamp {
            start: 0.0,
            end: 0.99,
            epochs: 3,
        };
        assert!(close(m.at(0.0), 0.0));
        assert!(close(m.at(1.0), 0.9));
        assert!(close(m.at(2.0), 0.99));
        // Past the end (per-batch stepping) stays below 1.
        assert!(m.at(10.0) < 1.0);
    }

    #[test]
    fn power_decay_reaches_two_thirds_after_m_epochs() {
        let s = LrSchedule::PowerDecay { lr: 0.3, m: 6.0 };
        assert!(close(s.at(0.0), 0.3));
        assert!(close(s.at(6.0), 0.2));
        assert!(close(s.at(12.0), 0.3 * 4.0 / 9.0));
        assert!(close(power_decay_base(1.0), 2.0 / 3.0));
    }

    #[test]
    fn cyclical_is_a_sawtooth_from_upper_to_lower() {
        let s = LrSchedule::Cyclical { lr: 1.0, m: 4 };
        let got: Vec<f64> = (0..9).map(|e| s.at(e as f64)).collect();
        let want = [2.0, 1.5, 1.0, 0.5, 2.0, 1.5, 1.0, 0.5, 2.0];
        for (g, w) in got.iter().zip(want) {
            assert!(close(*g, w), "{got:?}");
        }
        // Within the last epoch of a cycle it stays at the lower bound.
        assert!(close(s.at(3.5), 0.5));
        assert!(close(LrSchedule::Cyclical { lr: 1.0, m: 1 }.at(3.0), 2.0));
    }

    #[test]
    fn positions_per_epoch_and_per_k_batches() {
        let mut s = ScheduleSpec::constant(0.1, None);
        assert_eq!(s.position(0, 10), 0.0);
        assert_eq!(s.position(9, 10), 0.0);
        assert_eq!(s.position(10, 10), 1.0);
        s.every_batches = Some(4);
        let got: Vec<f64> = (0..12).map(|st| s.position(st, 10)).collect();
        assert_eq!(
            got,
            vec![0.0, 0.0, 0.0, 0.0, 0.4, 0.4, 0.4, 0.4, 0.8, 0.8, 1.0, 1.0]
        );
    }

    #[test]
    fn validation_names_the_field() {
        let s = ScheduleSpec {
            lr: LrSchedule::ExpRamp {
                start: 1e-3,
                end: 1.0,
                epochs: 1,
            },
            momentum: None,
            every_batches: None,
        };
        assert_eq!(s.validate().unwrap_err().field, "lr.epochs");
        let s = ScheduleSpec {
            lr: LrSchedule::Constant { lr: f64::NAN },
            momentum: None,
            every_batches: None,
        };
        assert_eq!(s.validate().unwrap_err().field, "lr.lr");
        let s = ScheduleSpec::constant(0.1, Some(1.0));
        assert_eq!(s.validate().unwrap_err().field, "momentum.value");
    }
}
