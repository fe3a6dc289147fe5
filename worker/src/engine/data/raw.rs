//! Examples on the host, as loaders and generators produce them, before
//! splitting, normalisation and the move to the device.

use ridgeline_common::Task;

use super::DataError;

/// Labels or regression targets of a split.
#[derive(Debug, Clone, PartialEq)]
pub enum Targets {
    /// One class index per example.
    Classes(Vec<u32>),
    /// `width` real values per example, row-major.
    Values { data: Vec<f32>, width: usize },
}

impl Targets {
    /// Number of examples.
    pub fn len(&self) -> usize {
        match self {
            Targets::Classes(c) => c.len(),
            Targets::Values { data, width } => {
                if *width == 0 {
                    0
                } else {
                    data.len() / width
                }
            }
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The examples at `idx`, in that order.
    pub fn select(&self, idx: &[usize]) -> Targets {
        match self {
            Targets::Classes(c) => Targets::Classes(idx.iter().map(|&i| c[i]).collect()),
            Targets::Values { data, width } => Targets::Values {
                data: idx
                    .iter()
                    .flat_map(|&i| data[i * width..(i + 1) * width].iter().copied())
                    .collect(),
                width: *width,
            },
        }
    }
}

/// One split: `x` holds `targets.len()` examples of `input_shape` each,
/// row-major, as f32.
#[derive(Debug, Clone, PartialEq)]
pub struct RawSplit {
    pub x: Vec<f32>,
    pub y: Targets,
}

impl RawSplit {
    pub fn len(&self) -> usize {
        self.y.len()
    }

    pub fn is_empty(&self) -> bool {
        self.y.is_empty()
    }

    /// The examples at `idx`, in that order.
    pub fn select(&self, idx: &[usize], example_len: usize) -> RawSplit {
        RawSplit {
            x: idx
                .iter()
                .flat_map(|&i| {
                    self.x[i * example_len..(i + 1) * example_len]
                        .iter()
                        .copied()
                })
                .collect(),
            y: self.y.select(idx),
        }
    }
}

/// A dataset as loaded from files or generated, on the host.
#[derive(Debug, Clone, PartialEq)]
pub struct RawDataset {
    /// Human-readable origin, e.g. `glyphs(seed=0)` or a file name.
    pub name: String,
    pub task: Task,
    /// Shape of one example: `[features]` or `[channels, height, width]`.
    pub input_shape: Vec<usize>,
    /// Number of classes (classification) or of outputs (regression).
    pub outputs: usize,
    pub train: RawSplit,
    /// `None` when the source has no heldout split of its own.
    pub heldout: Option<RawSplit>,
}

/// The most classes (or regression outputs) a dataset may declare. A label
/// file whose largest label is huge would otherwise size the output layer
/// from it.
pub const MAX_OUTPUTS: usize = 100_000;

impl RawDataset {
    /// Number of f32 values per example.
    pub fn example_len(&self) -> usize {
        self.input_shape.iter().product()
    }

    /// Checks that every part agrees with every other: sizes, label range,
    /// finite values. Loaders call it so a bad file is refused at load time.
    pub fn check(&self) -> Result<(), DataError> {
        let el = self.example_len();
        if el == 0 {
            return Err(DataError::Invalid(format!(
                "{}: examples have an empty shape {:?}",
                self.name, self.input_shape
            )));
        }
        if self.outputs == 0 {
            return Err(DataError::Invalid(format!("{}: no outputs", self.name)));
        }
        if self.outputs > MAX_OUTPUTS {
            return Err(DataError::Invalid(format!(
                "{}: {} classes/outputs is more than the {MAX_OUTPUTS} supported \
                 (a label column holding ids or measurements rather than classes?)",
                self.name, self.outputs
            )));
        }
        let splits = std::iter::once(("train", &self.train))
            .chain(self.heldout.iter().map(|h| ("heldout", h)));
        for (which, s) in splits {
            if s.is_empty() {
                return Err(DataError::Invalid(format!(
                    "{}: the {which} split is empty",
                    self.name
                )));
            }
            if s.x.len() != s.len() * el {
                return Err(DataError::Invalid(format!(
                    "{}: the {which} split has {} labels but {} input values ({} per example expected)",
                    self.name,
                    s.len(),
                    s.x.len(),
                    el
                )));
            }
            if let Some(i) = s.x.iter().position(|v| !v.is_finite()) {
                return Err(DataError::Invalid(format!(
                    "{}: the {which} split has a non-finite input value in example {}",
                    self.name,
                    i / el
                )));
            }
            match (&s.y, self.task) {
                (Targets::Classes(c), ridgeline_common::Task::Classification) => {
                    if let Some((i, &l)) = c
                        .iter()
                        .enumerate()
                        .find(|(_, &l)| l as usize >= self.outputs)
                    {
                        return Err(DataError::Invalid(format!(
                            "{}: the {which} split's label {l} (example {i}) is out of range 0..{}",
                            self.name, self.outputs
                        )));
                    }
                }
                (Targets::Values { data, width }, ridgeline_common::Task::Regression) => {
                    if *width != self.outputs {
                        return Err(DataError::Invalid(format!(
                            "{}: the {which} split has {width} targets per example, expected {}",
                            self.name, self.outputs
                        )));
                    }
                    if let Some(i) = data.iter().position(|v| !v.is_finite()) {
                        return Err(DataError::Invalid(format!(
                            "{}: the {which} split has a non-finite target in example {}",
                            self.name,
                            i / width
                        )));
                    }
                }
                _ => {
                    return Err(DataError::Invalid(format!(
                        "{}: the {which} split's targets do not match the task {:?}",
                        self.name, self.task
                    )))
                }
            }
        }
        Ok(())
    }
}
