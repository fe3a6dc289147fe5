//! Datasets: built-in generators and file loaders produce a [`RawDataset`]
//! on the host; [`load`] splits off a heldout set when the source has none,
//! normalises with training statistics, and moves everything to the device
//! as one contiguous tensor per split, from which batches are gathered.
//!
//! ```text
//! DataSpec ─► builtin::* / files::* ─► RawDataset ─► split ─► normalise ─► Dataset (device)
//! ```
//!
//! [`summarize`] describes a loaded dataset for the coordinator's red flags
//! (class count, heldout examples that copy training examples).

pub mod builtin;
mod error;
pub mod files;
mod order;
mod raw;
mod summary;

use candle_core::{DType, Device, Tensor};
use rand::seq::SliceRandom;
use ridgeline_common::spec::Normalize;
use ridgeline_common::{DataSpec, DatasetSource, Task};

pub use error::DataError;
pub use order::{epoch_order, Batches};
pub use raw::{RawDataset, RawSplit, Targets};
pub use summary::summarize;

use super::rng;

/// One split on the device.
#[derive(Debug, Clone)]
pub struct Split {
    /// `[n, ...input_shape]`, f32.
    pub x: Tensor,
    /// Classification: `[n]` u32 class indices. Regression: `[n, outputs]` f32.
    pub y: Tensor,
    pub len: usize,
}

impl Split {
    fn from_raw(
        raw: &RawSplit,
        input_shape: &[usize],
        device: &Device,
    ) -> Result<Split, DataError> {
        let n = raw.len();
        let mut shape = vec![n];
        shape.extend_from_slice(input_shape);
        let x = Tensor::from_slice(&raw.x, shape, device)?;
        let y = match &raw.y {
            Targets::Classes(c) => Tensor::from_slice(c, n, device)?,
            Targets::Values { data, width } => Tensor::from_slice(data, (n, *width), device)?,
        };
        Ok(Split { x, y, len: n })
    }

    /// The first `n` examples (or all, if fewer).
    pub fn head(&self, n: usize) -> Result<Split, DataError> {
        let n = n.min(self.len);
        Ok(Split {
            x: self.x.narrow(0, 0, n)?,
            y: self.y.narrow(0, 0, n)?,
            len: n,
        })
    }

    /// Gathers the examples at `idx` (a u32 index tensor on the same device).
    pub fn gather(&self, idx: &Tensor) -> candle_core::Result<(Tensor, Tensor)> {
        Ok((self.x.index_select(idx, 0)?, self.y.index_select(idx, 0)?))
    }
}

/// A prepared dataset on a device.
#[derive(Debug, Clone)]
pub struct Dataset {
    pub name: String,
    pub task: Task,
    /// Shape of one example: `[features]` or `[channels, height, width]`.
    pub input_shape: Vec<usize>,
    /// Number of classes (classification) or outputs (regression).
    pub outputs: usize,
    pub train: Split,
    pub heldout: Split,
}

impl Dataset {
    /// Accuracy of always guessing the most frequent training class, or
    /// `None` for regression (where chance R² is 0).
    pub fn chance_accuracy(&self) -> Option<f64> {
        if self.task != Task::Classification {
            return None;
        }
        let labels = self.train.y.to_vec1::<u32>().ok()?;
        let mut counts = vec![0usize; self.outputs];
        for l in labels {
            if let Some(c) = counts.get_mut(l as usize) {
                *c += 1;
            }
        }
        let best = counts.into_iter().max().unwrap_or(0);
        Some(best as f64 / self.train.len.max(1) as f64)
    }
}

/// Loads or generates the dataset of `spec` on the host (no device work).
pub fn load_raw(spec: &DataSpec) -> Result<RawDataset, DataError> {
    let raw = match &spec.source {
        DatasetSource::Glyphs(s) => builtin::glyphs::generate(s),
        DatasetSource::Tabular(s) => builtin::tabular::generate(s),
        DatasetSource::Neurons(s) => builtin::neurons::generate(s),
        DatasetSource::Idx(s) => files::idx::load(s)?,
        DatasetSource::Npy(s) => files::npy::load_pair(s)?,
        DatasetSource::Npz(s) => files::npy::load_npz(s)?,
        DatasetSource::Csv(s) => files::csv::load(s)?,
    };
    raw.check()?;
    Ok(raw)
}

/// Loads `spec` and prepares it on `device`.
pub fn load(spec: &DataSpec, device: &Device) -> Result<Dataset, DataError> {
    prepare(load_raw(spec)?, spec, device)
}

/// Splits, normalises and moves a raw dataset to `device`.
pub fn prepare(raw: RawDataset, spec: &DataSpec, device: &Device) -> Result<Dataset, DataError> {
    raw.check()?;
    let el = raw.example_len();
    let RawDataset {
        name,
        task,
        input_shape,
        outputs,
        train,
        heldout,
    } = raw;
    let (mut train, mut heldout) = match heldout {
        Some(h) => (train, h),
        None => split_heldout(&train, el, spec.heldout_fraction, spec.split_seed, &name)?,
    };
    normalize_inputs(&mut train, &mut heldout, el, spec.normalize);
    if spec.standardize_targets && task == Task::Regression {
        standardize_targets(&mut train, &mut heldout);
    }
    Ok(Dataset {
        train: Split::from_raw(&train, &input_shape, device)?,
        heldout: Split::from_raw(&heldout, &input_shape, device)?,
        name,
        task,
        input_shape,
        outputs,
    })
}

/// A fixed, seeded split of `all` into (train, heldout).
fn split_heldout(
    all: &RawSplit,
    example_len: usize,
    fraction: f64,
    seed: u64,
    name: &str,
) -> Result<(RawSplit, RawSplit), DataError> {
    let n = all.len();
    let n_heldout = ((n as f64) * fraction).round() as usize;
    if n_heldout == 0 || n_heldout >= n {
        return Err(DataError::Invalid(format!(
            "{name}: {n} examples cannot be split with heldout_fraction {fraction} \
             (it leaves {n_heldout} heldout and {} training examples)",
            n.saturating_sub(n_heldout)
        )));
    }
    let mut idx: Vec<usize> = (0..n).collect();
    idx.shuffle(&mut rng::stream(seed, "heldout-split", 0));
    let (h, t) = idx.split_at(n_heldout);
    let (mut h, mut t) = (h.to_vec(), t.to_vec());
    // Keep the original order within each split: easier to relate to the file.
    h.sort_unstable();
    t.sort_unstable();
    Ok((all.select(&t, example_len), all.select(&h, example_len)))
}

fn normalize_inputs(train: &mut RawSplit, heldout: &mut RawSplit, el: usize, how: Normalize) {
    match how {
        Normalize::None => {}
        Normalize::MinMax => {
            let (lo, hi) = train
                .x
                .iter()
                .fold((f32::INFINITY, f32::NEG_INFINITY), |(lo, hi), &v| {
                    (lo.min(v), hi.max(v))
                });
            let scale = if hi > lo { 1.0 / (hi - lo) } else { 1.0 };
            for v in train.x.iter_mut().chain(heldout.x.iter_mut()) {
                *v = (*v - lo) * scale;
            }
        }
        Normalize::Standardize => {
            let (mean, std) = column_stats(&train.x, el);
            for split in [train, heldout] {
                for row in split.x.chunks_exact_mut(el) {
                    for ((v, m), s) in row.iter_mut().zip(&mean).zip(&std) {
                        *v = (*v - m) / s;
                    }
                }
            }
        }
    }
}

/// Per-column mean and standard deviation (a constant column gets std 1 so it
/// maps to zero rather than NaN). Accumulated in f64.
fn column_stats(x: &[f32], width: usize) -> (Vec<f32>, Vec<f32>) {
    let rows = (x.len() / width).max(1) as f64;
    let mut sum = vec![0f64; width];
    let mut sq = vec![0f64; width];
    for row in x.chunks_exact(width) {
        for (j, &v) in row.iter().enumerate() {
            sum[j] += v as f64;
            sq[j] += (v as f64) * (v as f64);
        }
    }
    let mean: Vec<f64> = sum.iter().map(|s| s / rows).collect();
    let std = sq
        .iter()
        .zip(&mean)
        .map(|(q, m)| {
            let var = (q / rows - m * m).max(0.0);
            if var > 1e-12 {
                var.sqrt() as f32
            } else {
                1.0
            }
        })
        .collect();
    (mean.into_iter().map(|m| m as f32).collect(), std)
}

fn standardize_targets(train: &mut RawSplit, heldout: &mut RawSplit) {
    let Targets::Values { data, width } = &train.y else {
        return;
    };
    let (mean, std) = column_stats(data, *width);
    for split in [train, heldout] {
        if let Targets::Values { data, width } = &mut split.y {
            for row in data.chunks_exact_mut(*width) {
                for ((v, m), s) in row.iter_mut().zip(&mean).zip(&std) {
                    *v = (*v - m) / s;
                }
            }
        }
    }
}

/// Converts class labels of any integer type read from a file, refusing
/// negative or fractional values. `what` names the file for the error.
pub fn labels_from_f64(values: &[f64], path: &std::path::Path) -> Result<Vec<u32>, DataError> {
    values
        .iter()
        .enumerate()
        .map(|(i, &v)| {
            if v.fract() != 0.0 || !(0.0..=u32::MAX as f64).contains(&v) {
                Err(DataError::format(
                    path,
                    format!("label {v} of example {i} is not a non-negative integer class"),
                ))
            } else {
                Ok(v as u32)
            }
        })
        .collect()
}

/// Dtype of a split's targets on the device.
pub fn target_dtype(task: Task) -> DType {
    match task {
        Task::Classification => DType::U32,
        Task::Regression => DType::F32,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn toy(n: usize) -> RawDataset {
        RawDataset {
            name: "toy".into(),
            task: Task::Classification,
            input_shape: vec![2],
            outputs: 2,
            train: RawSplit {
                x: (0..n * 2).map(|i| i as f32).collect(),
                y: Targets::Classes((0..n as u32).map(|i| i % 2).collect()),
            },
            heldout: None,
        }
    }

    #[test]
    fn absurd_class_counts_are_refused_before_anything_is_allocated() {
        let mut raw = toy(4);
        raw.outputs = 4_000_000_000;
        let err = raw.check().unwrap_err().to_string();
        assert!(err.contains("4000000000 classes"), "{err}");
    }

    #[test]
    fn heldout_split_is_fixed_disjoint_and_sized() {
        let spec = DataSpec::new(DatasetSource::Glyphs(Default::default()));
        let raw = toy(50);
        let (t, h) = split_heldout(&raw.train, 2, 0.2, 7, "toy").unwrap();
        assert_eq!((t.len(), h.len()), (40, 10));
        let (t2, h2) = split_heldout(&raw.train, 2, 0.2, 7, "toy").unwrap();
        assert_eq!((t.clone(), h.clone()), (t2, h2));
        // Disjoint: first feature identifies the example.
        let ids = |s: &RawSplit| s.x.chunks(2).map(|r| r[0] as i64).collect::<Vec<_>>();
        assert!(ids(&t).iter().all(|i| !ids(&h).contains(i)));
        let d = prepare(raw, &spec, &Device::Cpu).unwrap();
        assert_eq!((d.train.len, d.heldout.len), (40, 10));
    }

    #[test]
    fn standardize_uses_training_statistics() {
        let mut spec = DataSpec::new(DatasetSource::Glyphs(Default::default()));
        spec.normalize = Normalize::Standardize;
        let d = prepare(toy(100), &spec, &Device::Cpu).unwrap();
        let x = d.train.x.to_vec2::<f32>().unwrap();
        let mean0: f32 = x.iter().map(|r| r[0]).sum::<f32>() / x.len() as f32;
        let var0: f32 = x.iter().map(|r| (r[0] - mean0).powi(2)).sum::<f32>() / x.len() as f32;
        assert!(mean0.abs() < 1e-4, "{mean0}");
        assert!((var0 - 1.0).abs() < 1e-3, "{var0}");
    }

    #[test]
    fn too_small_to_split_is_a_clear_error() {
        let spec = DataSpec::new(DatasetSource::Glyphs(Default::default()));
        let err = prepare(toy(2), &spec, &Device::Cpu)
            .unwrap_err()
            .to_string();
        assert!(err.contains("heldout_fraction"), "{err}");
    }

    #[test]
    fn out_of_range_labels_are_refused() {
        let mut raw = toy(10);
        raw.train.y = Targets::Classes(vec![0, 1, 2, 0, 1, 0, 1, 0, 1, 0]);
        let err = raw.check().unwrap_err().to_string();
        assert!(
            err.contains("label 2") && err.contains("out of range"),
            "{err}"
        );
    }
}
