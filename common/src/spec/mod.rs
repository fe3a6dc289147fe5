//! Specifications of a training run: the `[data]`, `[model]`, `[optimizer]`
//! and `[schedule]` sections of a job file, and [`RunSpec`] which ties them
//! together with the run's length, batch size and seed.
//!
//! Every struct rejects unknown fields (a typo is an error, not a silently
//! ignored setting) and has a `validate()` that checks values and names the
//! offending field with its full path, e.g. `schedule.lr.start`.

mod data;
mod model;
mod optim;

pub use data::*;
pub use model::*;
pub use optim::*;

use serde::{Deserialize, Serialize};

use crate::schedule::ScheduleSpec;

/// A specification failed validation: `field` is the dotted path of the
/// offending field, `message` says what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{field}`: {message}")]
pub struct SpecError {
    pub field: String,
    pub message: String,
}

impl SpecError {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            message: message.into(),
        }
    }

    /// Prefixes the field path with the name of the enclosing section.
    pub fn within(mut self, section: &str) -> Self {
        self.field = if self.field.is_empty() {
            section.to_string()
        } else {
            format!("{section}.{}", self.field)
        };
        self
    }
}

/// Helpers shared by the validators.
pub fn check_positive(field: &str, v: f64) -> Result<(), SpecError> {
    if !v.is_finite() || v <= 0.0 {
        return Err(SpecError::new(
            field,
            format!("must be a finite number > 0, got {v}"),
        ));
    }
    Ok(())
}

pub fn check_non_negative(field: &str, v: f64) -> Result<(), SpecError> {
    if !v.is_finite() || v < 0.0 {
        return Err(SpecError::new(
            field,
            format!("must be a finite number >= 0, got {v}"),
        ));
    }
    Ok(())
}

pub fn check_unit_interval(field: &str, v: f64) -> Result<(), SpecError> {
    if !v.is_finite() || !(0.0..1.0).contains(&v) {
        return Err(SpecError::new(field, format!("must be in [0, 1), got {v}")));
    }
    Ok(())
}

/// What a dataset asks the model to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Task {
    /// Integer labels in `0..classes`; loss = cross-entropy, metric = accuracy.
    Classification,
    /// Real-valued targets (one or more outputs); loss = MSE, metric = R² or
    /// Pearson r averaged over outputs.
    Regression,
}

/// The figure the procedure reads its curves in (higher is better for all).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MetricKind {
    Accuracy,
    /// Coefficient of determination, averaged over outputs.
    R2,
    /// Pearson correlation, averaged over outputs.
    Pearson,
}

impl MetricKind {
    /// The default metric for a task.
    pub fn default_for(task: Task) -> Self {
        match task {
            Task::Classification => MetricKind::Accuracy,
            Task::Regression => MetricKind::R2,
        }
    }

    /// Whether this metric applies to `task`.
    pub fn applies_to(self, task: Task) -> bool {
        matches!(
            (self, task),
            (MetricKind::Accuracy, Task::Classification)
                | (MetricKind::R2 | MetricKind::Pearson, Task::Regression)
        )
    }
}

fn default_batch_size() -> usize {
    64
}
fn default_train_eval_size() -> usize {
    1000
}

/// Everything needed to train one model: the unit a worker executes (in
/// chunks of epochs) and the unit whose numbers must be reproducible.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunSpec {
    pub data: DataSpec,
    pub model: ModelSpec,
    pub optimizer: OptimizerSpec,
    pub schedule: ScheduleSpec,
    /// Number of epochs of the whole run.
    pub epochs: usize,
    #[serde(default = "default_batch_size")]
    pub batch_size: usize,
    /// Seeds the initial weights and the order of the data in every epoch.
    /// The data themselves are seeded separately (`data.source.seed`) so that
    /// replicates see the same dataset.
    #[serde(default)]
    pub seed: u64,
    /// Size of the fixed training subset on which the training metric is
    /// reported (the first N examples of the training split).
    #[serde(default = "default_train_eval_size")]
    pub train_eval_size: usize,
    /// Report every this many batches as well as at the end of each epoch
    /// (`None`: once per epoch).
    #[serde(default)]
    pub report_every_batches: Option<usize>,
    /// Metric for decisions; default: accuracy (classification) or R²
    /// (regression).
    #[serde(default)]
    pub metric: Option<MetricKind>,
}

impl RunSpec {
    /// Checks every field; the error names the first offending one.
    pub fn validate(&self) -> Result<(), SpecError> {
        self.data.validate().map_err(|e| e.within("data"))?;
        self.model.validate().map_err(|e| e.within("model"))?;
        self.optimizer
            .validate()
            .map_err(|e| e.within("optimizer"))?;
        self.schedule.validate().map_err(|e| e.within("schedule"))?;
        if self.epochs == 0 {
            return Err(SpecError::new("epochs", "must be at least 1"));
        }
        if self.batch_size == 0 {
            return Err(SpecError::new("batch_size", "must be at least 1"));
        }
        if self.train_eval_size == 0 {
            return Err(SpecError::new("train_eval_size", "must be at least 1"));
        }
        if self.report_every_batches == Some(0) {
            return Err(SpecError::new(
                "report_every_batches",
                "must be at least 1 (leave it out to report once per epoch)",
            ));
        }
        if let (OptimizerSpec::Adagrad(_), Some(_)) = (&self.optimizer, &self.schedule.momentum) {
            return Err(SpecError::new(
                "schedule.momentum",
                "adagrad has no momentum; remove the momentum schedule",
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str = r#"
epochs = 5
batch_size = 32
seed = 3

[data]
normalize = "standardize"
[data.source]
kind = "glyphs"
n_train = 200
n_heldout = 50

[model]
kind = "cnn"
channels = [8, 16]
dense = [32]

[optimizer]
kind = "sgd"

[schedule]
lr = { kind = "exp_ramp", start = 1e-4, end = 1.0, epochs = 5 }
momentum = { kind = "constant", value = 0.9 }
"#;

    #[test]
    fn parses_and_validates_a_toml_run() {
        let spec: RunSpec = toml::from_str(EXAMPLE).unwrap();
        spec.validate().unwrap();
        assert_eq!(spec.epochs, 5);
        assert!(matches!(spec.model, ModelSpec::Cnn(_)));
        // JSON round trip keeps everything.
        let json = serde_json::to_string(&spec).unwrap();
        let back: RunSpec = serde_json::from_str(&json).unwrap();
        assert_eq!(back, spec);
    }

    #[test]
    fn unknown_fields_are_refused_with_their_name() {
        let bad = EXAMPLE.replace("n_heldout = 50", "n_heldout = 50\nn_hledout = 2");
        let err = toml::from_str::<RunSpec>(&bad).unwrap_err().to_string();
        assert!(err.contains("n_hledout"), "{err}");
        let bad = EXAMPLE.replace("channels = [8, 16]", "chanels = [8, 16]");
        let err = toml::from_str::<RunSpec>(&bad).unwrap_err().to_string();
        assert!(err.contains("chanels"), "{err}");
    }

    #[test]
    fn bad_values_name_their_field() {
        let bad = EXAMPLE.replace("start = 1e-4", "start = -1e-4");
        let spec: RunSpec = toml::from_str(&bad).unwrap();
        let err = spec.validate().unwrap_err();
        assert_eq!(err.field, "schedule.lr.start");
        let bad = EXAMPLE.replace("epochs = 5\nbatch", "epochs = 0\nbatch");
        let spec: RunSpec = toml::from_str(&bad).unwrap();
        assert_eq!(spec.validate().unwrap_err().field, "epochs");
        let bad = EXAMPLE.replace("n_train = 200", "n_train = 0");
        let spec: RunSpec = toml::from_str(&bad).unwrap();
        assert_eq!(spec.validate().unwrap_err().field, "data.source.n_train");
    }
}
