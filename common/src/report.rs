//! What a run reports as it goes: one [`EpochReport`] per epoch (or per k
//! batches), one [`LinePoint`] per line-search point, and how the run ended.
//! These are the figures that stream back to the coordinator and into
//! reports, so they are plain data.

use serde::{Deserialize, Serialize};

use crate::spec::MetricKind;

/// Loss and metrics of a model on one split.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Metrics {
    /// Mean cross-entropy (classification) or mean squared error (regression).
    pub loss: f64,
    /// The run's decision metric (accuracy, R² or Pearson r).
    pub metric: f64,
    pub accuracy: Option<f64>,
    pub r2: Option<f64>,
    pub pearson: Option<f64>,
    /// Classification: the share of predictions in the most often predicted
    /// class (1.0: a single class is predicted).
    #[serde(default)]
    pub majority_fraction: Option<f64>,
}

impl Metrics {
    /// The value of `kind`, if it applies to this task.
    pub fn get(&self, kind: MetricKind) -> Option<f64> {
        match kind {
            MetricKind::Accuracy => self.accuracy,
            MetricKind::R2 => self.r2,
            MetricKind::Pearson => self.pearson,
        }
    }

    /// Whether loss and metric are finite (a diverged model's are not).
    pub fn is_finite(&self) -> bool {
        self.loss.is_finite() && self.metric.is_finite()
    }
}

/// The state of a run after an epoch (or after k batches).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct EpochReport {
    /// Epochs completed when the report was made (0: the initial weights).
    pub epoch: usize,
    /// Training steps (batches) completed.
    pub step: u64,
    /// Progress in epochs, fractional for reports every k batches.
    pub progress: f64,
    /// Learning rate and momentum of the last step taken (for the epoch-0
    /// report: those the first step will use).
    pub lr: f64,
    pub momentum: f64,
    /// Mean training loss over the batches since the previous report
    /// (`None` for the epoch-0 report).
    pub batch_loss: Option<f64>,
    /// On the fixed training subset.
    pub train: Metrics,
    pub heldout: Metrics,
}

/// How a run (or a chunk of it) ended.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum RunOutcome {
    /// Reached the requested epoch.
    Completed { epoch: usize },
    /// The loss became NaN/inf: `epoch` is the epoch (0-based) in which it
    /// happened, `step` the global step.
    Diverged {
        epoch: usize,
        step: u64,
        reason: String,
    },
    /// Stopped early by the caller (cancellation), after `epoch` full epochs.
    Stopped { epoch: usize },
}

/// One point of a line search θ(a) = θ0 + a·d.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct LinePoint {
    pub alpha: f64,
    pub train: Metrics,
    pub heldout: Metrics,
}

/// What a worker found in a task's dataset.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct DataSummary {
    /// Number of classes (0 for regression).
    pub classes: u32,
    pub train_rows: u64,
    pub heldout_rows: u64,
    /// Heldout rows that are exact copies of a training row.
    pub heldout_in_train: u64,
}
