//! Built-in datasets: generated deterministically from their seed, no
//! download. Each returns a [`RawDataset`](super::RawDataset) with its own
//! heldout split.

pub mod glyphs;
pub mod neurons;
pub mod tabular;
