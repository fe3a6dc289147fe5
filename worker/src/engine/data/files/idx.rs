//! MNIST's IDX format (also used by Fashion-MNIST, KMNIST, EMNIST…).
//!
//! An IDX file is a 4-byte magic — two zero bytes, an element-type byte and
//! a dimension count — followed by that many big-endian `u32` dimensions and
//! then the elements, big-endian, in row-major order. The files are commonly
//! distributed gzipped; compression is detected from the content (the gzip
//! magic `1f 8b`), never from the file name, since downloads are often
//! renamed or decompressed in place.
//!
//! An images file is `[N, D]`, `[N, H, W]` or `[N, C, H, W]`; a labels file is
//! `[N]` of an integer type. Every malformed file is refused with an error
//! naming the file and the problem; nothing here panics on file content.

use std::fmt;
use std::io::Read;
use std::path::Path;

use flate2::read::MultiGzDecoder;
use ridgeline_common::spec::IdxSpec;
use ridgeline_common::Task;

use crate::engine::data::{DataError, RawDataset, RawSplit, Targets};

/// Largest decompressed size accepted for a gzipped file. Far above any real
/// IDX dataset (MNIST's training images are 47 MB), but it stops a
/// decompression bomb before it exhausts memory.
const MAX_DECOMPRESSED_BYTES: u64 = 4 << 30;

/// Loads the IDX files of `spec`: the training pair, and the heldout pair
/// when both of its files are given (otherwise `heldout` is `None` and the
/// caller holds out part of the training set).
///
/// Images become f32 values as stored (e.g. 0..255; normalisation happens
/// later); labels become class indices, and `outputs` is the largest label
/// over both splits plus one.
pub fn load(spec: &IdxSpec) -> Result<RawDataset, DataError> {
    let (train, train_shape) = load_pair(&spec.train_images, &spec.train_labels)?;

    let heldout = match (&spec.heldout_images, &spec.heldout_labels) {
        (Some(images), Some(labels)) => {
            let (split, shape) = load_pair(images, labels)?;
            if shape != train_shape {
                return Err(DataError::format(
                    images,
                    format!(
                        "heldout images are {} per example but the training images ({}) are {}",
                        dims_text(&shape),
                        file_name(&spec.train_images),
                        dims_text(&train_shape)
                    ),
                ));
            }
            Some(split)
        }
        (None, None) => None,
        // The spec validator refuses this too; repeated here because a
        // spec built in code skips validation, and silently ignoring the
        // lone file would train on the wrong split.
        (Some(images), None) => {
            return Err(DataError::format(
                images,
                "heldout images are given without heldout labels (give both or neither)",
            ))
        }
        (None, Some(labels)) => {
            return Err(DataError::format(
                labels,
                "heldout labels are given without heldout images (give both or neither)",
            ))
        }
    };

    let max_label = std::iter::once(&train)
        .chain(heldout.as_ref())
        .filter_map(|s| match &s.y {
            Targets::Classes(c) => c.iter().copied().max(),
            Targets::Values { .. } => None,
        })
        .max()
        .unwrap_or(0);
    // On 64-bit targets this cannot overflow; checked so that it also holds
    // elsewhere.
    let outputs = (max_label as usize).checked_add(1).ok_or_else(|| {
        DataError::format(
            &spec.train_labels,
            format!("label {max_label} is too large"),
        )
    })?;

    let raw = RawDataset {
        name: format!("idx({})", file_name(&spec.train_images)),
        task: Task::Classification,
        input_shape: train_shape,
        outputs,
        train,
        heldout,
    };
    raw.check()?;
    Ok(raw)
}

/// Loads one images file and its labels file into a split, and returns the
/// per-example input shape alongside.
fn load_pair(images_path: &Path, labels_path: &Path) -> Result<(RawSplit, Vec<usize>), DataError> {
    let images_bytes = read_maybe_gzipped(images_path)?;
    let images = IdxArray::parse(&images_bytes, Role::Images)
        .map_err(|m| DataError::format(images_path, m))?;
    let labels_bytes = read_maybe_gzipped(labels_path)?;
    let labels = IdxArray::parse(&labels_bytes, Role::Labels)
        .map_err(|m| DataError::format(labels_path, m))?;

    let n_images = images.dims.first().copied().unwrap_or(0);
    let n_labels = labels.dims.first().copied().unwrap_or(0);
    if n_images != n_labels {
        return Err(DataError::format(
            labels_path,
            format!(
                "labels file has {n_labels} labels but images file {} has {n_images} images",
                file_name(images_path)
            ),
        ));
    }
    if n_images == 0 {
        return Err(DataError::format(
            images_path,
            "images file holds no images (N = 0)",
        ));
    }

    let input_shape = match images.dims.as_slice() {
        // A single-channel image stack: the models expect [C, H, W].
        [_, h, w] => vec![1, *h, *w],
        [_, rest @ ..] => rest.to_vec(),
        [] => Vec::new(), // unreachable: parse() checked the dimension count
    };
    let x = images.to_f32();
    let y = labels
        .to_labels()
        .map_err(|m| DataError::format(labels_path, m))?;
    Ok((
        RawSplit {
            x,
            y: Targets::Classes(y),
        },
        input_shape,
    ))
}

/// What a file is expected to hold; it decides which shapes are accepted and
/// how messages describe the data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    Images,
    Labels,
}

/// IDX element types.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ElemType {
    U8,
    I8,
    I16,
    I32,
    F32,
    F64,
}

impl ElemType {
    fn from_code(code: u8) -> Option<ElemType> {
        Some(match code {
            0x08 => ElemType::U8,
            0x09 => ElemType::I8,
            0x0B => ElemType::I16,
            0x0C => ElemType::I32,
            0x0D => ElemType::F32,
            0x0E => ElemType::F64,
            _ => return None,
        })
    }

    fn size(self) -> usize {
        match self {
            ElemType::U8 | ElemType::I8 => 1,
            ElemType::I16 => 2,
            ElemType::I32 | ElemType::F32 => 4,
            ElemType::F64 => 8,
        }
    }

    fn is_integer(self) -> bool {
        !matches!(self, ElemType::F32 | ElemType::F64)
    }
}

impl fmt::Display for ElemType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ElemType::U8 => "u8",
            ElemType::I8 => "i8",
            ElemType::I16 => "i16",
            ElemType::I32 => "i32",
            ElemType::F32 => "f32",
            ElemType::F64 => "f64",
        })
    }
}

/// A parsed IDX file: its header and exactly the bytes of its elements.
#[derive(Debug)]
struct IdxArray<'a> {
    elem: ElemType,
    dims: Vec<usize>,
    data: &'a [u8],
}

impl<'a> IdxArray<'a> {
    /// Parses and validates the header of `bytes` for `role`, and checks that
    /// exactly the announced number of data bytes follow. Errors are messages
    /// for the caller to attach the path to.
    fn parse(bytes: &'a [u8], role: Role) -> Result<IdxArray<'a>, String> {
        let Some((magic, rest)) = bytes.split_first_chunk::<4>() else {
            return Err(format!(
                "not an IDX file: {} bytes is too short for the 4-byte IDX magic",
                bytes.len()
            ));
        };
        let [z0, z1, code, ndims] = *magic;
        let elem = ElemType::from_code(code)
            .filter(|_| z0 == 0 && z1 == 0)
            .ok_or_else(|| {
                format!(
                    "not an IDX file: bad magic {z0:02x} {z1:02x} {code:02x} {ndims:02x} \
                 (expected 00 00, a type byte 08/09/0b/0c/0d/0e, and a dimension count)"
                )
            })?;
        let ndims = usize::from(ndims);
        if ndims == 0 {
            return Err("IDX header declares 0 dimensions".into());
        }

        let dims_len = ndims * 4; // at most 255 * 4: cannot overflow
        let Some((dim_bytes, data)) = rest.split_at_checked(dims_len) else {
            return Err(format!(
                "truncated header: {ndims} dimensions need {} header bytes but the file has {}",
                4 + dims_len,
                bytes.len()
            ));
        };
        let dims: Vec<usize> = dim_bytes
            .chunks_exact(4)
            .map(|c| {
                let mut b = [0u8; 4];
                b.copy_from_slice(c); // chunks_exact(4) yields exactly 4 bytes
                u32::from_be_bytes(b) as usize
            })
            .collect();

        // Check the role before the size, so a swapped pair of files gets
        // the helpful message rather than a confusing size complaint.
        match role {
            Role::Images if ndims == 1 => {
                return Err(format!(
                    "expected an images file ([N, H, W], [N, C, H, W] or [N, D]) but it has one \
                     dimension [{}]: is this a labels file?",
                    dims_text(&dims)
                ))
            }
            Role::Images if ndims > 4 => {
                return Err(format!(
                    "images file has {ndims} dimensions [{}]; expected [N, D], [N, H, W] or \
                     [N, C, H, W]",
                    dims_text(&dims)
                ))
            }
            Role::Labels if ndims != 1 => {
                return Err(format!(
                    "expected a labels file with one dimension [N] but it has {ndims}: [{}]; \
                     is this an images file?",
                    dims_text(&dims)
                ))
            }
            Role::Labels if !elem.is_integer() => {
                return Err(format!(
                    "labels must have an integer type, but the file holds {elem} values"
                ))
            }
            _ => {}
        }

        let describe = || match role {
            Role::Images => format!(
                "{} images of {}",
                dims.first().copied().unwrap_or(0),
                dims_text(dims.get(1..).unwrap_or(&[]))
            ),
            Role::Labels => format!("{} labels", dims.first().copied().unwrap_or(0)),
        };
        let expected = dims
            .iter()
            .try_fold(elem.size(), |acc, &d| acc.checked_mul(d))
            .ok_or_else(|| format!("header says {} ({elem}): that size overflows", describe()))?;
        match data.len().cmp(&expected) {
            std::cmp::Ordering::Less => Err(format!(
                "truncated: header says {} ({elem}, {expected} bytes) but only {} bytes follow",
                describe(),
                data.len()
            )),
            std::cmp::Ordering::Greater => Err(format!(
                "trailing garbage: header says {} ({elem}, {expected} bytes) but {} bytes \
                 follow ({} extra)",
                describe(),
                data.len(),
                data.len() - expected
            )),
            std::cmp::Ordering::Equal => Ok(IdxArray { elem, dims, data }),
        }
    }

    /// All elements as f32, in file order. Values are kept as stored;
    /// f64 values beyond f32's range become infinite and are refused later by
    /// `RawDataset::check`.
    fn to_f32(&self) -> Vec<f32> {
        match self.elem {
            ElemType::U8 => self.data.iter().map(|&b| f32::from(b)).collect(),
            ElemType::I8 => self.data.iter().map(|&b| f32::from(b as i8)).collect(),
            ElemType::I16 => be_values(self.data, |b| f32::from(i16::from_be_bytes(b))),
            ElemType::I32 => be_values(self.data, |b| i32::from_be_bytes(b) as f32),
            ElemType::F32 => be_values(self.data, f32::from_be_bytes),
            ElemType::F64 => be_values(self.data, |b| f64::from_be_bytes(b) as f32),
        }
    }

    /// All elements as class indices; negative labels are refused.
    fn to_labels(&self) -> Result<Vec<u32>, String> {
        let values: Vec<i64> = match self.elem {
            ElemType::U8 => self.data.iter().map(|&b| i64::from(b)).collect(),
            ElemType::I8 => self.data.iter().map(|&b| i64::from(b as i8)).collect(),
            ElemType::I16 => be_values(self.data, |b| i64::from(i16::from_be_bytes(b))),
            ElemType::I32 => be_values(self.data, |b| i64::from(i32::from_be_bytes(b))),
            ElemType::F32 | ElemType::F64 => {
                return Err(format!(
                    "labels must have an integer type, but the file holds {} values",
                    self.elem
                ))
            }
        };
        values
            .iter()
            .enumerate()
            .map(|(i, &v)| {
                u32::try_from(v).map_err(|_| {
                    format!("label {v} at index {i} is negative; class labels must be >= 0")
                })
            })
            .collect()
    }
}

/// Decodes consecutive big-endian `N`-byte elements of `data` with `f`.
fn be_values<const N: usize, T>(data: &[u8], f: impl Fn([u8; N]) -> T) -> Vec<T> {
    data.chunks_exact(N)
        .map(|c| {
            let mut b = [0u8; N];
            b.copy_from_slice(c); // chunks_exact(N) yields exactly N bytes
            f(b)
        })
        .collect()
}

/// Reads `path` whole, decompressing it if it starts with the gzip magic.
fn read_maybe_gzipped(path: &Path) -> Result<Vec<u8>, DataError> {
    let bytes = std::fs::read(path).map_err(|e| DataError::io(path, e))?;
    if !bytes.starts_with(&[0x1f, 0x8b]) {
        return Ok(bytes);
    }
    // MultiGzDecoder: a gzip file may hold several concatenated members
    // (e.g. written by `cat a.gz b.gz`); all belong to the data.
    let mut out = Vec::new();
    MultiGzDecoder::new(bytes.as_slice())
        .take(MAX_DECOMPRESSED_BYTES + 1)
        .read_to_end(&mut out)
        .map_err(|e| {
            DataError::format(path, format!("gzip data could not be decompressed: {e}"))
        })?;
    if out.len() as u64 > MAX_DECOMPRESSED_BYTES {
        return Err(DataError::format(
            path,
            format!(
                "decompresses to more than {} GiB; refused as implausibly large for an IDX file",
                MAX_DECOMPRESSED_BYTES >> 30
            ),
        ));
    }
    Ok(out)
}

/// `28×28`-style rendering of dimensions for messages.
fn dims_text(dims: &[usize]) -> String {
    if dims.is_empty() {
        return "scalars".into();
    }
    dims.iter()
        .map(|d| d.to_string())
        .collect::<Vec<_>>()
        .join("×")
}

/// The file name of `path` (or the whole path if it has none), for names
/// and messages.
fn file_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| path.display().to_string())
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::path::PathBuf;

    use flate2::write::GzEncoder;
    use flate2::Compression;

    use super::*;

    /// An IDX file with element type `code`, dimensions `dims` and raw
    /// (already big-endian) element bytes `data`.
    fn idx(code: u8, dims: &[u32], data: &[u8]) -> Vec<u8> {
        let mut v = vec![0, 0, code, dims.len() as u8];
        for d in dims {
            v.extend_from_slice(&d.to_be_bytes());
        }
        v.extend_from_slice(data);
        v
    }

    fn gzip(bytes: &[u8]) -> Vec<u8> {
        let mut e = GzEncoder::new(Vec::new(), Compression::fast());
        e.write_all(bytes).unwrap();
        e.finish().unwrap()
    }

    /// `n` u8 images of `h`×`w` whose pixel values identify image and pixel.
    fn images(n: usize, h: usize, w: usize) -> Vec<u8> {
        let data: Vec<u8> = (0..n * h * w).map(|i| (i % 251) as u8).collect();
        idx(0x08, &[n as u32, h as u32, w as u32], &data)
    }

    fn labels(l: &[u8]) -> Vec<u8> {
        idx(0x08, &[l.len() as u32], l)
    }

    fn write(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, bytes).unwrap();
        p
    }

    fn spec(ti: PathBuf, tl: PathBuf) -> IdxSpec {
        IdxSpec {
            train_images: ti,
            train_labels: tl,
            heldout_images: None,
            heldout_labels: None,
        }
    }

    fn err_of(spec: &IdxSpec) -> String {
        load(spec).unwrap_err().to_string()
    }

    #[test]
    fn loads_plain_28x28_without_heldout() {
        let d = tempfile::tempdir().unwrap();
        let s = spec(
            write(d.path(), "train-images-idx3-ubyte", &images(3, 28, 28)),
            write(d.path(), "train-labels-idx1-ubyte", &labels(&[5, 0, 4])),
        );
        let raw = load(&s).unwrap();
        assert_eq!(raw.name, "idx(train-images-idx3-ubyte)");
        assert_eq!(raw.task, Task::Classification);
        assert_eq!(raw.input_shape, vec![1, 28, 28]);
        assert_eq!(raw.outputs, 6);
        assert_eq!(raw.train.x.len(), 3 * 28 * 28);
        assert_eq!(raw.train.x[0..3], [0.0, 1.0, 2.0]);
        assert_eq!(raw.train.x[784], (784 % 251) as f32);
        assert_eq!(raw.train.y, Targets::Classes(vec![5, 0, 4]));
        assert!(raw.heldout.is_none());
    }

    #[test]
    fn loads_gzipped_8x8_with_heldout() {
        let d = tempfile::tempdir().unwrap();
        let mut s = spec(
            write(d.path(), "train-images.gz", &gzip(&images(4, 8, 8))),
            write(d.path(), "train-labels.gz", &gzip(&labels(&[1, 2, 3, 1]))),
        );
        // Compression is detected by content: this one has no .gz suffix.
        s.heldout_images = Some(write(d.path(), "t10k-images", &gzip(&images(2, 8, 8))));
        s.heldout_labels = Some(write(d.path(), "t10k-labels", &labels(&[7, 0])));
        let raw = load(&s).unwrap();
        assert_eq!(raw.name, "idx(train-images.gz)");
        assert_eq!(raw.input_shape, vec![1, 8, 8]);
        assert_eq!(raw.outputs, 8, "max label over both splits + 1");
        assert_eq!(raw.train.len(), 4);
        assert_eq!(raw.train.x[63], 63.0);
        let h = raw.heldout.unwrap();
        assert_eq!(h.len(), 2);
        assert_eq!(h.x.len(), 2 * 64);
        assert_eq!(h.y, Targets::Classes(vec![7, 0]));
    }

    #[test]
    fn loads_flat_channel_and_wide_types() {
        let d = tempfile::tempdir().unwrap();
        // [N, D] of i16 with i32 labels.
        let x: Vec<u8> = [-3i16, 300, 7, -1]
            .iter()
            .flat_map(|v| v.to_be_bytes())
            .collect();
        let y: Vec<u8> = [2i32, 0].iter().flat_map(|v| v.to_be_bytes()).collect();
        let s = spec(
            write(d.path(), "flat", &idx(0x0B, &[2, 2], &x)),
            write(d.path(), "flat-labels", &idx(0x0C, &[2], &y)),
        );
        let raw = load(&s).unwrap();
        assert_eq!(raw.input_shape, vec![2]);
        assert_eq!(raw.train.x, vec![-3.0, 300.0, 7.0, -1.0]);
        assert_eq!(raw.outputs, 3);

        // [N, C, H, W] of f32 and of f64, with i8 labels.
        let x32: Vec<u8> = (0..2 * 3 * 2 * 2)
            .flat_map(|i| (i as f32 * 0.5).to_be_bytes())
            .collect();
        let x64: Vec<u8> = (0..2 * 3 * 2 * 2)
            .flat_map(|i| (i as f64 * 0.5).to_be_bytes())
            .collect();
        let l = write(d.path(), "chw-labels", &idx(0x09, &[2], &[1, 0]));
        for (name, code, data) in [("chw32", 0x0D, x32), ("chw64", 0x0E, x64)] {
            let s = spec(
                write(d.path(), name, &idx(code, &[2, 3, 2, 2], &data)),
                l.clone(),
            );
            let raw = load(&s).unwrap();
            assert_eq!(raw.input_shape, vec![3, 2, 2], "{name}");
            assert_eq!(raw.train.x[5], 2.5, "{name}");
            assert_eq!(raw.outputs, 2, "{name}");
        }
    }

    #[test]
    fn truncated_data_is_reported() {
        let d = tempfile::tempdir().unwrap();
        let mut bytes = images(60, 28, 28);
        bytes.truncate(16 + 1234);
        let s = spec(
            write(d.path(), "cut-images", &bytes),
            write(d.path(), "cut-labels", &labels(&[0; 60])),
        );
        let err = err_of(&s);
        assert!(err.contains("cut-images"), "{err}");
        assert!(
            err.contains("truncated: header says 60 images of 28×28 (u8, 47040 bytes) but only 1234 bytes follow"),
            "{err}"
        );
        // A truncated gzip stream is reported too.
        let gz = gzip(&images(60, 28, 28));
        let s = spec(
            write(d.path(), "cut-images.gz", &gz[..gz.len() / 2]),
            write(d.path(), "cut-labels", &labels(&[0; 60])),
        );
        let err = err_of(&s);
        assert!(err.contains("cut-images.gz"), "{err}");
        assert!(err.contains("truncated") || err.contains("gzip"), "{err}");
        // So is a header cut inside its dimensions, and an empty file.
        let s = spec(
            write(d.path(), "short", &[0, 0, 8, 3, 0, 0]),
            write(d.path(), "l", &labels(&[0])),
        );
        let err = err_of(&s);
        assert!(
            err.contains("short") && err.contains("truncated header"),
            "{err}"
        );
        let s = spec(
            write(d.path(), "empty", &[]),
            write(d.path(), "l", &labels(&[0])),
        );
        let err = err_of(&s);
        assert!(err.contains("empty") && err.contains("too short"), "{err}");
    }

    #[test]
    fn bad_magic_is_reported() {
        let d = tempfile::tempdir().unwrap();
        let mut bytes = images(2, 8, 8);
        bytes[0] = 0x50;
        let s = spec(
            write(d.path(), "magic-images", &bytes),
            write(d.path(), "l", &labels(&[0, 1])),
        );
        let err = err_of(&s);
        assert!(
            err.contains("magic-images") && err.contains("bad magic 50 00 08 03"),
            "{err}"
        );
        // An unknown type byte.
        let bytes = idx(0x0A, &[2], &[0, 1]);
        let s = spec(
            write(d.path(), "i", &images(2, 8, 8)),
            write(d.path(), "type-labels", &bytes),
        );
        let err = err_of(&s);
        assert!(
            err.contains("type-labels") && err.contains("bad magic 00 00 0a 01"),
            "{err}"
        );
    }

    #[test]
    fn count_mismatch_is_reported() {
        let d = tempfile::tempdir().unwrap();
        let s = spec(
            write(d.path(), "imgs", &images(99, 2, 2)),
            write(d.path(), "lbls", &labels(&[0; 100])),
        );
        let err = err_of(&s);
        assert!(err.contains("lbls"), "{err}");
        assert!(
            err.contains("labels file has 100 labels but images file imgs has 99 images"),
            "{err}"
        );
    }

    #[test]
    fn trailing_bytes_are_reported() {
        let d = tempfile::tempdir().unwrap();
        let mut bytes = labels(&[0, 1, 2]);
        bytes.extend_from_slice(b"junk");
        let s = spec(
            write(d.path(), "i", &images(3, 8, 8)),
            write(d.path(), "tail-labels", &bytes),
        );
        let err = err_of(&s);
        assert!(err.contains("tail-labels"), "{err}");
        assert!(
            err.contains("trailing garbage") && err.contains("4 extra"),
            "{err}"
        );
    }

    #[test]
    fn swapped_files_are_reported() {
        let d = tempfile::tempdir().unwrap();
        let i = write(d.path(), "the-images", &images(2, 8, 8));
        let l = write(d.path(), "the-labels", &labels(&[0, 1]));
        let err = err_of(&spec(l.clone(), i.clone()));
        assert!(
            err.contains("the-labels") && err.contains("is this a labels file?"),
            "{err}"
        );
        let err = err_of(&spec(i.clone(), i.clone()));
        assert!(
            err.contains("the-images") && err.contains("is this an images file?"),
            "{err}"
        );
        // Float labels are not class labels.
        let f = write(d.path(), "float-labels", &idx(0x0D, &[2], &[0; 8]));
        let err = err_of(&spec(i, f));
        assert!(
            err.contains("float-labels") && err.contains("integer type"),
            "{err}"
        );
    }

    #[test]
    fn heldout_shape_must_match_training() {
        let d = tempfile::tempdir().unwrap();
        let mut s = spec(
            write(d.path(), "ti", &images(2, 28, 28)),
            write(d.path(), "tl", &labels(&[0, 1])),
        );
        s.heldout_images = Some(write(d.path(), "hi", &images(2, 8, 8)));
        s.heldout_labels = Some(write(d.path(), "hl", &labels(&[0, 1])));
        let err = err_of(&s);
        assert!(err.contains("hi:"), "{err}");
        assert!(err.contains("1×8×8") && err.contains("1×28×28"), "{err}");
    }

    #[test]
    fn missing_file_and_negative_labels_are_reported() {
        let d = tempfile::tempdir().unwrap();
        let i = write(d.path(), "i", &images(2, 8, 8));
        let err = err_of(&spec(i.clone(), d.path().join("no-such-labels")));
        assert!(err.contains("no-such-labels"), "{err}");
        let neg = write(d.path(), "neg-labels", &idx(0x09, &[2], &[0, 0xFF]));
        let err = err_of(&spec(i, neg));
        assert!(
            err.contains("neg-labels") && err.contains("label -1 at index 1 is negative"),
            "{err}"
        );
    }

    #[test]
    fn absurd_header_sizes_do_not_allocate() {
        let d = tempfile::tempdir().unwrap();
        let huge = idx(0x0E, &[u32::MAX, u32::MAX, u32::MAX, u32::MAX], &[]);
        let s = spec(
            write(d.path(), "huge", &huge),
            write(d.path(), "l", &labels(&[0])),
        );
        let err = err_of(&s);
        assert!(err.contains("huge") && err.contains("overflows"), "{err}");
        let big = idx(0x08, &[u32::MAX, 1000], &[1, 2, 3]);
        let s = spec(
            write(d.path(), "big", &big),
            write(d.path(), "l", &labels(&[0])),
        );
        let err = err_of(&s);
        assert!(
            err.contains("big") && err.contains("only 3 bytes follow"),
            "{err}"
        );
    }
}
