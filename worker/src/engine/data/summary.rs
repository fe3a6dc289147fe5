//! What a worker reports about a task's dataset, for the coordinator's red
//! flags: the class count (chance level at θ0) and how many heldout
//! examples are exact copies of training examples (a leaky split).

use std::collections::HashMap;

use candle_core::{DType, Tensor};
use ridgeline_common::{DataSummary, Task};

use super::{DataError, Dataset, Split};

/// The summary of a loaded dataset. Copies both splits to the host once;
/// O(n·d) time, and one hash per training example.
pub fn summarize(data: &Dataset) -> Result<DataSummary, DataError> {
    let classes = match data.task {
        Task::Classification => u32::try_from(data.outputs).unwrap_or(u32::MAX),
        Task::Regression => 0,
    };
    let train = HostRows::of(&data.train)?;
    let heldout = HostRows::of(&data.heldout)?;
    Ok(DataSummary {
        classes,
        train_rows: data.train.len as u64,
        heldout_rows: data.heldout.len as u64,
        heldout_in_train: count_copies(&train, &heldout),
    })
}

/// One split on the host as bit patterns: `x` and `y` row after row, so that
/// equality is bit-identity (`-0.0 ≠ 0.0`, a NaN equals the same NaN).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct HostRows {
    pub x: Vec<u32>,
    pub x_width: usize,
    pub y: Vec<u32>,
    pub y_width: usize,
    pub len: usize,
}

impl HostRows {
    fn of(split: &Split) -> Result<HostRows, DataError> {
        let len = split.len;
        let x = bits(&split.x)?;
        let y = bits(&split.y)?;
        let width = |v: &[u32], what: &str| -> Result<usize, DataError> {
            if len == 0 {
                return Ok(0);
            }
            if !v.len().is_multiple_of(len) {
                return Err(DataError::Invalid(format!(
                    "{what} holds {} values, not a whole number of rows for {len} examples",
                    v.len()
                )));
            }
            Ok(v.len() / len)
        };
        Ok(HostRows {
            x_width: width(&x, "inputs")?,
            y_width: width(&y, "targets")?,
            x,
            y,
            len,
        })
    }

    fn row(&self, i: usize) -> (&[u32], &[u32]) {
        (
            &self.x[i * self.x_width..(i + 1) * self.x_width],
            &self.y[i * self.y_width..(i + 1) * self.y_width],
        )
    }

    /// A 64-bit hash of example `i` (inputs and target). Collisions only
    /// cost an extra comparison: hits are confirmed by equality.
    fn hash(&self, i: usize) -> u64 {
        let (x, y) = self.row(i);
        let mut h = 0x9e37_79b9_7f4a_7c15u64 ^ (x.len() as u64) ^ ((y.len() as u64) << 32);
        for &w in x.iter().chain(y) {
            h = (h.rotate_left(5) ^ u64::from(w)).wrapping_mul(0x517c_c1b7_2722_0a95);
        }
        // splitmix64's finaliser, so every input bit reaches every output bit.
        h ^= h >> 30;
        h = h.wrapping_mul(0xbf58_476d_1ce4_e5b9);
        h ^= h >> 27;
        h = h.wrapping_mul(0x94d0_49bb_1331_11eb);
        h ^ (h >> 31)
    }
}

/// The values of a tensor (f32 or u32) as bit patterns, row-major.
fn bits(t: &Tensor) -> Result<Vec<u32>, DataError> {
    let flat = t.flatten_all()?;
    Ok(match flat.dtype() {
        DType::U32 => flat.to_vec1::<u32>()?,
        DType::F32 => flat
            .to_vec1::<f32>()?
            .into_iter()
            .map(f32::to_bits)
            .collect(),
        other => {
            return Err(DataError::Invalid(format!(
                "dataset tensors are f32 or u32, not {other:?}"
            )))
        }
    })
}

/// Heldout examples whose inputs and target are bit-identical to those of
/// some training example. Splits of different widths share no example.
pub(crate) fn count_copies(train: &HostRows, heldout: &HostRows) -> u64 {
    count_copies_by(train, heldout, HostRows::hash)
}

/// [`count_copies`] with another hash of the examples (tests use a weak one
/// to see collisions confirmed).
fn count_copies_by(
    train: &HostRows,
    heldout: &HostRows,
    hash: impl Fn(&HostRows, usize) -> u64,
) -> u64 {
    if train.x_width != heldout.x_width || train.y_width != heldout.y_width {
        return 0;
    }
    // Training examples by hash: the first index in `first`, the others
    // with the same hash chained through `next`.
    const END: usize = usize::MAX;
    let mut first: HashMap<u64, usize> = HashMap::with_capacity(train.len);
    let mut next = vec![END; train.len];
    for (i, link) in next.iter_mut().enumerate() {
        if let Some(prev) = first.insert(hash(train, i), i) {
            *link = prev;
        }
    }
    (0..heldout.len)
        .filter(|&j| {
            let row = heldout.row(j);
            let mut i = first.get(&hash(heldout, j)).copied().unwrap_or(END);
            while i != END {
                if train.row(i) == row {
                    return true;
                }
                i = next[i];
            }
            false
        })
        .count() as u64
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::data::{self, Split};
    use candle_core::Device;
    use ridgeline_common::{DataSpec, DatasetSource};

    fn split(x: &[f32], y: Tensor, width: usize) -> Split {
        let n = x.len() / width;
        Split {
            x: Tensor::from_slice(x, (n, width), &Device::Cpu).unwrap(),
            y,
            len: n,
        }
    }

    fn classes(y: &[u32]) -> Tensor {
        Tensor::from_slice(y, y.len(), &Device::Cpu).unwrap()
    }

    fn dataset(task: Task, outputs: usize, train: Split, heldout: Split) -> Dataset {
        Dataset {
            name: "toy".into(),
            task,
            input_shape: vec![2],
            outputs,
            train,
            heldout,
        }
    }

    #[test]
    fn heldout_copies_of_training_examples_are_counted_exactly() {
        let train = split(
            &[0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 2.0, 3.0],
            classes(&[0, 1, 2, 1]),
            2,
        );
        // Rows: a copy of train row 1, a copy of train row 2, then the
        // inputs of train row 0 with another label, then -0.0 for 0.0
        // (different bits), then something new.
        let heldout = split(
            &[2.0, 3.0, 4.0, 5.0, 0.0, 1.0, -0.0, 1.0, 9.0, 9.0],
            classes(&[1, 2, 1, 0, 0]),
            2,
        );
        let d = dataset(Task::Classification, 3, train, heldout);
        let s = summarize(&d).unwrap();
        assert_eq!(
            s,
            DataSummary {
                classes: 3,
                train_rows: 4,
                heldout_rows: 5,
                heldout_in_train: 2,
            }
        );
    }

    #[test]
    fn regression_targets_are_part_of_the_example_and_classes_are_zero() {
        let y = |v: &[f32]| Tensor::from_slice(v, (v.len() / 2, 2), &Device::Cpu).unwrap();
        let train = split(&[1.0, 2.0, 3.0, 4.0], y(&[0.5, 0.25, 1.0, 2.0]), 2);
        let heldout = split(
            &[1.0, 2.0, 3.0, 4.0, 3.0, 4.0],
            y(&[0.5, 0.25, 1.0, 2.5, 1.0, 2.0]),
            2,
        );
        let d = dataset(Task::Regression, 2, train, heldout);
        let s = summarize(&d).unwrap();
        assert_eq!((s.classes, s.heldout_in_train), (0, 2));
        assert_eq!((s.train_rows, s.heldout_rows), (2, 3));
    }

    #[test]
    fn colliding_hashes_are_confirmed_before_counting() {
        let train = HostRows {
            x: vec![1, 2, 3, 4, 1, 2],
            x_width: 2,
            y: vec![0, 0, 1],
            y_width: 1,
            len: 3,
        };
        let heldout = HostRows {
            x: vec![1, 2, 1, 2, 5, 6],
            x_width: 2,
            y: vec![1, 2, 0],
            y_width: 1,
            len: 3,
        };
        assert_eq!(count_copies(&train, &heldout), 1);
        // Every example under one hash: equality alone decides.
        assert_eq!(count_copies_by(&train, &heldout, |_, _| 7), 1);
        // Only the first input decides the hash: (1, 2 | 2) collides with
        // both training rows starting with 1, and is told apart from them.
        assert_eq!(
            count_copies_by(&train, &heldout, |r, i| r.x[i * 2] as u64),
            1
        );
        // A duplicated training row chains under one hash; all are found.
        assert_eq!(count_copies(&train, &train), 3);
        assert_eq!(count_copies_by(&train, &train, |_, _| 0), 3);
        let empty = HostRows {
            x: vec![],
            x_width: 2,
            y: vec![],
            y_width: 1,
            len: 0,
        };
        assert_eq!(count_copies(&empty, &heldout), 0);
        assert_eq!(count_copies(&train, &empty), 0);
    }

    #[test]
    fn built_in_datasets_have_sane_summaries() {
        let small = [
            r#"{ "kind": "tabular", "n_train": 300, "n_heldout": 100, "seed": 4 }"#,
            r#"{ "kind": "glyphs", "n_train": 200, "n_heldout": 50, "seed": 4 }"#,
            r#"{ "kind": "neurons", "n_train": 100, "n_heldout": 40, "seed": 4, "image_size": 12, "neurons": 5 }"#,
        ];
        for source in small {
            let source: DatasetSource = serde_json::from_str(source).unwrap();
            let spec = DataSpec::new(source);
            let d = data::load(&spec, &Device::Cpu).unwrap();
            let s = summarize(&d).unwrap();
            assert_eq!(s.heldout_in_train, 0, "{}: {s:?}", d.name);
            assert_eq!(
                (s.train_rows, s.heldout_rows),
                (d.train.len as u64, d.heldout.len as u64)
            );
            match d.task {
                Task::Classification => assert!(s.classes > 1, "{}: {s:?}", d.name),
                Task::Regression => assert_eq!(s.classes, 0, "{}: {s:?}", d.name),
            }
        }

        // A file-like dataset split from a pool with a repeated example:
        // the copy that lands in heldout is found.
        let mut spec = DataSpec::new(DatasetSource::Glyphs(Default::default()));
        spec.heldout_fraction = 0.5;
        let raw = data::RawDataset {
            name: "dups".into(),
            task: Task::Classification,
            input_shape: vec![1],
            outputs: 2,
            train: data::RawSplit {
                x: vec![7.0; 40],
                y: data::Targets::Classes(vec![1; 40]),
            },
            heldout: None,
        };
        let d = data::prepare(raw, &spec, &Device::Cpu).unwrap();
        let s = summarize(&d).unwrap();
        assert_eq!(s.heldout_in_train, 20, "{s:?}");
    }
}
