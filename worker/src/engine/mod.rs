//! The training engine: everything a worker needs to do the procedure's
//! actual work on candle.
//!
//! * [`data`]: built-in datasets and file loaders → tensors on the device.
//! * [`model`]: MLP/CNN from a declarative spec, seeded initialisation, and
//!   the [`model::Model`] trait for researchers' own models.
//! * [`optim`]: SGD (classical momentum in the procedure's form, Nesterov),
//!   Adam, AdamW, RMSprop, Adagrad, with explicit resumable state.
//! * [`train`]: the training loop with per-epoch reports, divergence
//!   detection, cancellation and exact checkpoints.
//! * [`landscape`]: weight-space tools (flatten, directions, line searches,
//!   interpolation).
//! * [`artifact`]: safetensors files addressed by content hash.
//! * [`device`]: `cpu` / `cuda:N` / `auto`, and candle's thread pools.

pub mod artifact;
pub mod data;
pub mod device;
pub mod error;
pub mod landscape;
pub mod model;
pub mod ops;
pub mod optim;
pub mod rng;
pub mod train;

pub use error::{EngineError, Result};
