use ridgeline_common::SpecError;

use super::data::DataError;

/// Errors of the training engine. Divergence is not an error: it is an
/// outcome of a run ([`crate::engine::train::Outcome::Diverged`]).
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error(transparent)]
    Spec(#[from] SpecError),
    #[error("data: {0}")]
    Data(#[from] DataError),
    /// The model spec does not fit the data (or a custom model is unknown).
    #[error("model: {0}")]
    Model(String),
    /// A checkpoint or artifact does not fit the run it is loaded into.
    #[error("checkpoint: {0}")]
    Checkpoint(String),
    /// A safetensors artifact is malformed or does not match its hash.
    #[error("artifact: {0}")]
    Artifact(String),
    #[error("device: {0}")]
    Device(String),
    #[error("{path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("tensor: {0}")]
    Tensor(#[from] candle_core::Error),
}

pub type Result<T, E = EngineError> = std::result::Result<T, E>;
