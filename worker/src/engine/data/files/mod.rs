//! File loaders: MNIST's IDX format, NPY/NPZ arrays, CSV. Every malformed
//! file gives a [`DataError`](super::DataError) naming the file and the
//! problem; none panics.

pub mod csv;
pub mod idx;
pub mod npy;
