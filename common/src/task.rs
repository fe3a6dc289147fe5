//! What a worker is asked to do: the JSON in a `TaskAssignment`.
//!
//! A task is either a chunk of a training run (epochs `from_epoch` to
//! `to_epoch`, continuing from the previous chunk's checkpoint) or a block
//! of line-search points. Workers rebuild θ0 and random directions from the
//! seed (the engine is deterministic), so only checkpoints and trained
//! weights travel as artifacts.

use serde::{Deserialize, Serialize};

use crate::RunSpec;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum TaskSpec {
    Train(TrainTask),
    LineSearch(LineSearchTask),
}

impl TaskSpec {
    pub fn curve(&self) -> &str {
        match self {
            TaskSpec::Train(t) => &t.curve,
            TaskSpec::LineSearch(t) => &t.curve,
        }
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"))
    }

    pub fn from_json(s: &str) -> Result<TaskSpec, serde_json::Error> {
        serde_json::from_str(s)
    }
}

/// What a task's measurements are checked against, read from its JSON
/// spec without building the rest (the run's data and model are skipped
/// unparsed): the coordinator reads it on every report and completion.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct TaskShape {
    pub kind: TaskKind,
    /// A training chunk's epochs (0 for a line search).
    #[serde(default)]
    pub from_epoch: usize,
    #[serde(default)]
    pub to_epoch: usize,
    /// A line search's points: (index in the job's list, a).
    #[serde(default)]
    pub points: Vec<(u32, f64)>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TaskKind {
    Train,
    LineSearch,
}

impl TaskShape {
    pub fn from_json(s: &str) -> Result<TaskShape, serde_json::Error> {
        serde_json::from_str(s)
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainTask {
    pub curve: String,
    pub run: RunSpec,
    pub from_epoch: usize,
    pub to_epoch: usize,
    /// Content hash of the checkpoint at `from_epoch` (none when it is 0).
    pub checkpoint: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum DirectionSpec {
    /// Gaussian direction drawn from `seed`.
    Random {
        seed: u64,
        filter_normalize: bool,
        include_biases: bool,
    },
    /// θ_short − θ0 after `epochs` epochs on the first `subset` training
    /// examples at a constant `lr`.
    Trained {
        subset: usize,
        epochs: usize,
        lr: f64,
    },
    /// Towards trained weights (artifact hash): d = θ1 − θ0.
    Toward { weights: String },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LineSearchTask {
    pub curve: String,
    /// Data, model and seed of θ0.
    pub run: RunSpec,
    pub direction: DirectionSpec,
    /// (index in the job's list, a).
    pub points: Vec<(u32, f64)>,
}
