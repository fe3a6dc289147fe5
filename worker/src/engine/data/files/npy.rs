//! NumPy's `.npy` arrays and `.npz` archives of them.
//!
//! A `.npy` file is the magic `\x93NUMPY`, a format version (1.0, 2.0 or
//! 3.0), a little-endian header length (`u16` in 1.0, `u32` after), and a
//! header that is a Python dict literal such as
//! `{'descr': '<f4', 'fortran_order': False, 'shape': (60000, 784), }`,
//! followed by the raw elements. The header is parsed here by a small parser
//! for the literal subset numpy writes, never evaluated.
//!
//! A `.npz` archive is a zip file (stored by `np.savez`, deflated by
//! `np.savez_compressed`) whose members are `<key>.npy` files.
//!
//! Inputs `x` are `[N, ...]` and become f32; targets `y` are `[N]` or
//! `[N, T]`. Numeric dtypes of 1 to 8 bytes (including half floats and
//! bools) are read in either byte order and either memory order; object,
//! string and structured arrays are refused. Nothing here panics on file
//! content.

use std::fmt;
use std::fs::File;
use std::io::{BufReader, Read, Seek};
use std::path::Path;

use ridgeline_common::spec::{NpySpec, NpzSpec};
use ridgeline_common::Task;
use zip::ZipArchive;

use crate::engine::data::{labels_from_f64, DataError, RawDataset, RawSplit, Targets};

/// Largest decompressed `.npz` member accepted: far beyond any dataset that
/// fits this engine's memory budget, but it stops a decompression bomb.
const MAX_MEMBER_BYTES: u64 = 4 << 30;

/// Longest header accepted. numpy itself refuses headers over 10 000 bytes
/// by default; a numeric array's header is under 200. Capping it bounds the
/// parser's work on a hostile file.
const MAX_HEADER_BYTES: usize = 1 << 20;

/// Deepest nesting of brackets accepted in a header, so a hostile header of
/// nested parentheses cannot overflow the parser's stack.
const MAX_HEADER_DEPTH: usize = 16;

/// Loads inputs from `spec.x` and targets from `spec.y`, two `.npy` files
/// with the same first dimension. The task is `spec.task`, or else
/// classification for integer/bool targets and regression for float ones.
/// `heldout` is `None`: the caller holds out part of the examples.
pub fn load_pair(spec: &NpySpec) -> Result<RawDataset, DataError> {
    let x_bytes = std::fs::read(&spec.x).map_err(|e| DataError::io(&spec.x, e))?;
    let y_bytes = std::fs::read(&spec.y).map_err(|e| DataError::io(&spec.y, e))?;
    let xs = Source::file(&spec.x);
    let ys = Source::file(&spec.y);
    let x = NpyArray::parse(&x_bytes).map_err(|m| xs.err(m))?;
    let y = NpyArray::parse(&y_bytes).map_err(|m| ys.err(m))?;
    let name = format!("npy({}, {})", file_name(&spec.x), file_name(&spec.y));
    assemble(name, (&x, &xs), (&y, &ys), spec.task)
}

/// Loads inputs and targets from the members `<x_key>.npy` and
/// `<y_key>.npy` of the `.npz` archive `spec.path`, with the same semantics
/// as [`load_pair`].
pub fn load_npz(spec: &NpzSpec) -> Result<RawDataset, DataError> {
    let path = spec.path.as_path();
    let file = File::open(path).map_err(|e| DataError::io(path, e))?;
    // The file opened, so even an I/O error here (typically an early end of
    // file) means a damaged archive rather than a missing one.
    let mut archive = ZipArchive::new(BufReader::new(file))
        .map_err(|e| DataError::format(path, format!("not a valid .npz (zip) archive: {e}")))?;
    let x_bytes = read_member(&mut archive, path, &spec.x_key)?;
    let y_bytes = read_member(&mut archive, path, &spec.y_key)?;
    let xs = Source::member(path, &spec.x_key);
    let ys = Source::member(path, &spec.y_key);
    let x = NpyArray::parse(&x_bytes).map_err(|m| xs.err(m))?;
    let y = NpyArray::parse(&y_bytes).map_err(|m| ys.err(m))?;
    let name = format!("npz({})", file_name(path));
    assemble(name, (&x, &xs), (&y, &ys), spec.task)
}

/// Where an array came from, for error messages: a file, or a member of an
/// archive (the path is then the archive's and messages name the key).
struct Source<'a> {
    path: &'a Path,
    /// How messages refer to the array from elsewhere: `x.npy`, `array 'x'`.
    label: String,
    /// Prefix of this array's own messages ("" for a file of its own).
    prefix: String,
}

impl<'a> Source<'a> {
    fn file(path: &'a Path) -> Self {
        Source {
            path,
            label: file_name(path),
            prefix: String::new(),
        }
    }

    fn member(path: &'a Path, key: &str) -> Self {
        Source {
            path,
            label: format!("array '{key}'"),
            prefix: format!("array '{key}': "),
        }
    }

    fn err(&self, message: impl fmt::Display) -> DataError {
        DataError::format(self.path, format!("{}{message}", self.prefix))
    }

    /// Adds this source's prefix to an error made by a shared helper that
    /// only knows the path.
    fn rewrap(&self, e: DataError) -> DataError {
        match e {
            DataError::Format { path, message } => DataError::Format {
                path,
                message: format!("{}{message}", self.prefix),
            },
            other => other,
        }
    }
}

/// Reads the member `<key>.npy` of `archive` whole.
fn read_member<R: Read + Seek>(
    archive: &mut ZipArchive<R>,
    path: &Path,
    key: &str,
) -> Result<Vec<u8>, DataError> {
    let member = format!("{key}.npy");
    if archive.index_for_name(&member).is_none() {
        let mut keys: Vec<String> = archive
            .file_names()
            .map(|n| format!("'{}'", n.strip_suffix(".npy").unwrap_or(n)))
            .collect();
        keys.sort();
        let present = if keys.is_empty() {
            "none (the archive is empty)".to_string()
        } else {
            keys.join(", ")
        };
        return Err(DataError::format(
            path,
            format!("has no array '{key}' (member '{member}'); arrays present: {present}"),
        ));
    }
    let mut file = archive
        .by_name(&member)
        .map_err(|e| DataError::format(path, format!("cannot open member '{member}': {e}")))?;
    let mut bytes = Vec::new();
    // The zip reader checks the CRC at the end, so corruption surfaces here.
    (&mut file)
        .take(MAX_MEMBER_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| {
            DataError::format(path, format!("member '{member}' could not be read: {e}"))
        })?;
    if bytes.len() as u64 > MAX_MEMBER_BYTES {
        return Err(DataError::format(
            path,
            format!(
                "member '{member}' decompresses to more than {} GiB; refused as implausibly large",
                MAX_MEMBER_BYTES >> 30
            ),
        ));
    }
    Ok(bytes)
}

/// Builds the dataset from parsed inputs and targets: checks that they
/// agree, picks the task, and converts the values.
fn assemble(
    name: String,
    (x, xs): (&NpyArray, &Source),
    (y, ys): (&NpyArray, &Source),
    task: Option<Task>,
) -> Result<RawDataset, DataError> {
    let Some((&n, example_dims)) = x.shape.split_first() else {
        return Err(xs.err(
            "inputs are a 0-dimensional scalar (shape ()); expected one row per example, shape (N, ...)",
        ));
    };
    if n == 0 {
        return Err(xs.err(format!(
            "inputs hold no examples (shape {})",
            shape_text(&x.shape)
        )));
    }
    // A 1-D x is one scalar feature per example.
    let input_shape = if example_dims.is_empty() {
        vec![1]
    } else {
        example_dims.to_vec()
    };

    let Some(&y_n) = y.shape.first() else {
        return Err(ys.err(
            "targets are a 0-dimensional scalar (shape ()); expected one row per example, shape (N,) or (N, T)",
        ));
    };
    if y_n != n {
        return Err(ys.err(format!(
            "targets have {y_n} rows (shape {}) but the inputs {} have {n} examples (shape {}); \
             both need one row per example",
            shape_text(&y.shape),
            xs.label,
            shape_text(&x.shape)
        )));
    }

    let task = task.unwrap_or(if y.elem.is_float() {
        Task::Regression
    } else {
        Task::Classification
    });
    let (targets, outputs) = match task {
        Task::Classification => {
            if !matches!(y.shape.as_slice(), [_] | [_, 1]) {
                return Err(ys.err(format!(
                    "class labels must have shape (N,) or (N, 1), got shape {}",
                    shape_text(&y.shape)
                )));
            }
            let labels = labels_from_f64(&y.values(|v| v), ys.path).map_err(|e| ys.rewrap(e))?;
            let max = labels.iter().copied().max().unwrap_or(0);
            let outputs = (max as usize)
                .checked_add(1)
                .ok_or_else(|| ys.err(format!("label {max} is too large")))?;
            (Targets::Classes(labels), outputs)
        }
        Task::Regression => {
            let width = match y.shape.as_slice() {
                [_] => 1,
                [_, t] => *t,
                _ => {
                    return Err(ys.err(format!(
                        "regression targets must have shape (N,) or (N, T), got shape {}",
                        shape_text(&y.shape)
                    )))
                }
            };
            if width == 0 {
                return Err(ys.err(format!(
                    "targets have no columns (shape {})",
                    shape_text(&y.shape)
                )));
            }
            (
                Targets::Values {
                    data: y.values(|v| v as f32),
                    width,
                },
                width,
            )
        }
    };

    let raw = RawDataset {
        name,
        task,
        input_shape,
        outputs,
        train: RawSplit {
            x: x.values(|v| v as f32),
            y: targets,
        },
        heldout: None,
    };
    raw.check()?;
    Ok(raw)
}

/// Element types this loader reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Elem {
    F2,
    F4,
    F8,
    I1,
    I2,
    I4,
    I8,
    U1,
    U2,
    U4,
    U8,
    Bool,
}

impl Elem {
    fn size(self) -> usize {
        match self {
            Elem::I1 | Elem::U1 | Elem::Bool => 1,
            Elem::F2 | Elem::I2 | Elem::U2 => 2,
            Elem::F4 | Elem::I4 | Elem::U4 => 4,
            Elem::F8 | Elem::I8 | Elem::U8 => 8,
        }
    }

    fn is_float(self) -> bool {
        matches!(self, Elem::F2 | Elem::F4 | Elem::F8)
    }
}

/// A parsed `.npy` file: its header and exactly the bytes of its elements.
#[derive(Debug)]
struct NpyArray<'a> {
    elem: Elem,
    big_endian: bool,
    fortran_order: bool,
    shape: Vec<usize>,
    data: &'a [u8],
}

impl<'a> NpyArray<'a> {
    /// Parses the header of `bytes` and checks that exactly the announced
    /// number of data bytes follow. Errors are messages for the caller to
    /// attach the source to.
    fn parse(bytes: &'a [u8]) -> Result<NpyArray<'a>, String> {
        const MAGIC: &[u8; 6] = b"\x93NUMPY";
        let Some((magic, rest)) = bytes.split_first_chunk::<6>() else {
            return Err(format!(
                "not an NPY file: {} bytes is too short for the NPY magic \\x93NUMPY",
                bytes.len()
            ));
        };
        if magic != MAGIC {
            return Err(format!(
                "not an NPY file: expected the magic \\x93NUMPY, found {}",
                magic
                    .iter()
                    .map(|b| format!("{b:02x}"))
                    .collect::<Vec<_>>()
                    .join(" ")
            ));
        }
        let Some((&[major, minor], rest)) = rest.split_first_chunk::<2>() else {
            return Err("truncated: the file ends inside the format version".into());
        };
        let (header_len, rest) = match major {
            1 => rest
                .split_first_chunk::<2>()
                .map(|(l, r)| (usize::from(u16::from_le_bytes(*l)), r)),
            2 | 3 => rest
                .split_first_chunk::<4>()
                .map(|(l, r)| (u32::from_le_bytes(*l) as usize, r)),
            _ => {
                return Err(format!(
                    "unsupported NPY format version {major}.{minor} (1.0, 2.0 and 3.0 are read)"
                ))
            }
        }
        .ok_or("truncated: the file ends inside the header length")?;
        if header_len > MAX_HEADER_BYTES {
            return Err(format!(
                "header length {header_len} bytes is implausibly large (limit {MAX_HEADER_BYTES})"
            ));
        }
        let Some((header, data)) = rest.split_at_checked(header_len) else {
            return Err(format!(
                "truncated: the header length says {header_len} bytes but only {} follow",
                rest.len()
            ));
        };
        // Versions 1.0 and 2.0 store the header as latin-1, 3.0 as UTF-8.
        let text: String = if major == 3 {
            String::from_utf8(header.to_vec())
                .map_err(|e| format!("header is not valid UTF-8: {e}"))?
        } else {
            header.iter().map(|&b| char::from(b)).collect()
        };
        let header = Header::parse(&text)
            .map_err(|m| format!("header is not parseable: {m}; header: {}", clip(&text, 200)))?;
        let (elem, big_endian) = parse_descr(&header.descr)?;

        let count = header
            .shape
            .iter()
            .try_fold(1usize, |acc, &d| acc.checked_mul(d))
            .and_then(|c| c.checked_mul(elem.size()));
        let Some(expected) = count else {
            return Err(format!(
                "header says shape {} of '{}': that size overflows",
                shape_text(&header.shape),
                header.descr
            ));
        };
        match data.len().cmp(&expected) {
            std::cmp::Ordering::Less => Err(format!(
                "truncated: header says shape {} of '{}' ({expected} bytes) but only {} bytes of data follow",
                shape_text(&header.shape),
                header.descr,
                data.len()
            )),
            std::cmp::Ordering::Greater => Err(format!(
                "shape/data size mismatch: header says shape {} of '{}' ({expected} bytes) but {} bytes of \
                 data follow ({} extra)",
                shape_text(&header.shape),
                header.descr,
                data.len(),
                data.len() - expected
            )),
            std::cmp::Ordering::Equal => Ok(NpyArray {
                elem,
                big_endian,
                fortran_order: header.fortran_order,
                shape: header.shape,
                data,
            }),
        }
    }

    /// All elements through `cast`, in C (row-major) order whatever the
    /// file's memory order. Values pass through f64, which holds every
    /// supported type exactly except 64-bit integers beyond 2^53 (rounded;
    /// such values are absurd as data or labels).
    fn values<T: Copy>(&self, cast: impl Fn(f64) -> T) -> Vec<T> {
        let be = self.big_endian;
        let d = self.data;
        let file_order: Vec<T> = match self.elem {
            Elem::F2 => decode(d, |b| cast(f64::from(f16_to_f32(u16_bytes(b, be))))),
            Elem::F4 => decode(d, |b| cast(f64::from(f32::from_bits(u32_bytes(b, be))))),
            Elem::F8 => decode(d, |b| cast(f64::from_bits(u64_bytes(b, be)))),
            Elem::I1 => d.iter().map(|&b| cast(f64::from(b as i8))).collect(),
            Elem::I2 => decode(d, |b| cast(f64::from(u16_bytes(b, be) as i16))),
            Elem::I4 => decode(d, |b| cast(f64::from(u32_bytes(b, be) as i32))),
            Elem::I8 => decode(d, |b| cast(u64_bytes(b, be) as i64 as f64)),
            Elem::U1 => d.iter().map(|&b| cast(f64::from(b))).collect(),
            Elem::U2 => decode(d, |b| cast(f64::from(u16_bytes(b, be)))),
            Elem::U4 => decode(d, |b| cast(f64::from(u32_bytes(b, be)))),
            Elem::U8 => decode(d, |b| cast(u64_bytes(b, be) as f64)),
            Elem::Bool => d
                .iter()
                .map(|&b| cast(if b != 0 { 1.0 } else { 0.0 }))
                .collect(),
        };
        if self.fortran_order && self.shape.len() > 1 {
            fortran_to_c(&file_order, &self.shape)
        } else {
            file_order
        }
    }
}

/// Decodes consecutive `N`-byte elements of `data` with `f`.
fn decode<const N: usize, T>(data: &[u8], f: impl Fn([u8; N]) -> T) -> Vec<T> {
    data.chunks_exact(N)
        .map(|c| {
            let mut b = [0u8; N];
            b.copy_from_slice(c); // chunks_exact(N) yields exactly N bytes
            f(b)
        })
        .collect()
}

fn u16_bytes(b: [u8; 2], big_endian: bool) -> u16 {
    if big_endian {
        u16::from_be_bytes(b)
    } else {
        u16::from_le_bytes(b)
    }
}

fn u32_bytes(b: [u8; 4], big_endian: bool) -> u32 {
    if big_endian {
        u32::from_be_bytes(b)
    } else {
        u32::from_le_bytes(b)
    }
}

fn u64_bytes(b: [u8; 8], big_endian: bool) -> u64 {
    if big_endian {
        u64::from_be_bytes(b)
    } else {
        u64::from_le_bytes(b)
    }
}

/// IEEE 754 half precision to single precision, exactly (every half value
/// is representable as f32).
fn f16_to_f32(h: u16) -> f32 {
    let sign = u32::from(h >> 15) << 31;
    let exp = u32::from((h >> 10) & 0x1f);
    let mant = u32::from(h & 0x3ff);
    let bits = match exp {
        0 if mant == 0 => sign, // ±0
        0 => {
            // Subnormal: mant × 2^-24. Both factors and the product are exact
            // in f32, so no rounding happens.
            let magnitude = mant as f32 * f32::from_bits(0x3380_0000); // 2^-24
            return if sign != 0 { -magnitude } else { magnitude };
        }
        0x1f => sign | 0x7f80_0000 | (mant << 13), // ±inf, NaN (payload kept)
        // Normal: rebias the exponent from 15 to 127.
        _ => sign | ((exp + 127 - 15) << 23) | (mant << 13),
    };
    f32::from_bits(bits)
}

/// Reorders elements stored in Fortran (column-major) order into C
/// (row-major) order. `shape`'s product is `f.len()` (checked by the parser).
fn fortran_to_c<T: Copy>(f: &[T], shape: &[usize]) -> Vec<T> {
    // Column-major strides: the first index varies fastest.
    let mut strides = Vec::with_capacity(shape.len());
    let mut s = 1usize;
    for &d in shape {
        strides.push(s);
        s = s.saturating_mul(d);
    }
    let mut out = Vec::with_capacity(f.len());
    let mut index = vec![0usize; shape.len()];
    let mut offset = 0usize;
    for _ in 0..f.len() {
        if let Some(&v) = f.get(offset) {
            out.push(v);
        }
        // Advance the multi-index in C order (last index fastest), keeping
        // the Fortran offset in step.
        for ((i, &d), &st) in index.iter_mut().zip(shape).zip(&strides).rev() {
            *i += 1;
            offset += st;
            if *i < d {
                break;
            }
            *i = 0;
            offset -= st * d;
        }
    }
    out
}

/// Parses a `descr` string such as `<f4` into an element type and whether
/// it is big-endian, refusing everything but plain numeric types.
fn parse_descr(descr: &str) -> Result<(Elem, bool), String> {
    let native_big = cfg!(target_endian = "big");
    let (big_endian, code) = match descr.as_bytes().first() {
        Some(b'<') => (false, descr.get(1..).unwrap_or("")),
        Some(b'>') => (true, descr.get(1..).unwrap_or("")),
        // '=' is the native order. '|' means "not applicable" and numpy
        // writes it only for 1-byte types, where the order is irrelevant.
        Some(b'|') | Some(b'=') => (native_big, descr.get(1..).unwrap_or("")),
        _ => (native_big, descr),
    };
    let elem = match code {
        "f2" | "e" => Elem::F2,
        "f4" | "f" => Elem::F4,
        "f8" | "d" => Elem::F8,
        "i1" | "b" => Elem::I1,
        "i2" | "h" => Elem::I2,
        "i4" => Elem::I4,
        "i8" | "q" => Elem::I8,
        "u1" | "B" => Elem::U1,
        "u2" | "H" => Elem::U2,
        "u4" => Elem::U4,
        "u8" | "Q" => Elem::U8,
        "b1" | "?" => Elem::Bool,
        _ => {
            let what = match code.chars().next() {
                Some('O') => {
                    "object arrays are not supported (they need pickle); save a numeric array"
                }
                Some('U' | 'S' | 'a') => {
                    "string arrays are not supported; convert to numbers (e.g. class indices)"
                }
                Some('c') => "complex numbers are not supported",
                Some('M' | 'm') => "dates and time deltas are not supported",
                Some('V') => "structured (record) and void arrays are not supported",
                Some('f') => "only f2, f4 and f8 floats are supported",
                Some('i' | 'u') => "only 1-, 2-, 4- and 8-byte integers are supported",
                _ => "unknown type code",
            };
            return Err(format!(
                "unsupported dtype '{descr}': {what} (supported: f2 f4 f8 i1 i2 i4 i8 u1 u2 u4 u8 b1)"
            ));
        }
    };
    Ok((elem, big_endian))
}

/// The three fields of an NPY header.
#[derive(Debug)]
struct Header {
    descr: String,
    fortran_order: bool,
    shape: Vec<usize>,
}

impl Header {
    fn parse(text: &str) -> Result<Header, String> {
        let mut p = Parser {
            s: text.as_bytes(),
            pos: 0,
        };
        let value = p.value(0)?;
        p.skip_ws();
        if p.pos < p.s.len() {
            return Err(format!("unexpected text after the dict at byte {}", p.pos));
        }
        let Py::Dict(items) = value else {
            return Err("the header is not a dict".into());
        };
        let get = |key: &str| {
            items
                .iter()
                .find(|(k, _)| matches!(k, Py::Str(s) if s == key))
                .map(|(_, v)| v)
                .ok_or_else(|| format!("the header has no '{key}' key"))
        };
        let descr = match get("descr")? {
            Py::Str(s) => s.clone(),
            Py::List(_) => {
                return Err(
                    "'descr' is a list: structured (record) arrays are not supported".into(),
                );
            }
            other => return Err(format!("'descr' must be a string, got {other:?}")),
        };
        let fortran_order = match get("fortran_order")? {
            Py::Bool(b) => *b,
            other => {
                return Err(format!(
                    "'fortran_order' must be True or False, got {other:?}"
                ))
            }
        };
        let dim = |v: &Py| match v {
            Py::Int(i) => {
                usize::try_from(*i).map_err(|_| format!("shape entry {i} is not a valid dimension"))
            }
            other => Err(format!("shape entries must be integers, got {other:?}")),
        };
        let shape = match get("shape")? {
            Py::Tuple(items) | Py::List(items) => {
                items.iter().map(dim).collect::<Result<Vec<_>, _>>()?
            }
            // `shape: 5` is what a hand-written header might say for (5,).
            v @ Py::Int(_) => vec![dim(v)?],
            other => {
                return Err(format!(
                    "'shape' must be a tuple of integers, got {other:?}"
                ))
            }
        };
        Ok(Header {
            descr,
            fortran_order,
            shape,
        })
    }
}

/// The Python literal values an NPY header can contain.
#[derive(Debug, Clone, PartialEq)]
enum Py {
    Str(String),
    Int(i64),
    Bool(bool),
    None,
    Tuple(Vec<Py>),
    List(Vec<Py>),
    Dict(Vec<(Py, Py)>),
}

/// A recursive-descent parser for the Python literal subset numpy writes.
/// It works on bytes: every syntax character is ASCII, and string contents
/// are cut at ASCII quotes, so UTF-8 stays intact.
struct Parser<'s> {
    s: &'s [u8],
    pos: usize,
}

impl Parser<'_> {
    fn peek(&self) -> Option<u8> {
        self.s.get(self.pos).copied()
    }

    fn skip_ws(&mut self) {
        while self.peek().is_some_and(|c| c.is_ascii_whitespace()) {
            self.pos += 1;
        }
    }

    fn expected(&self, what: &str) -> String {
        match self.peek() {
            Some(c) => format!(
                "expected {what} at byte {}, found '{}'",
                self.pos,
                char::from(c)
            ),
            None => format!(
                "expected {what} at byte {}, found the end of the header",
                self.pos
            ),
        }
    }

    fn value(&mut self, depth: usize) -> Result<Py, String> {
        if depth > MAX_HEADER_DEPTH {
            return Err(format!(
                "nesting deeper than {MAX_HEADER_DEPTH} levels at byte {}",
                self.pos
            ));
        }
        self.skip_ws();
        match self.peek() {
            Some(b'{') => self.dict(depth),
            Some(b'(') => self.seq(b')', depth).map(Py::Tuple),
            Some(b'[') => self.seq(b']', depth).map(Py::List),
            Some(q @ (b'\'' | b'"')) => self.string(q).map(Py::Str),
            Some(c) if c == b'-' || c.is_ascii_digit() => self.int(),
            Some(c) if c.is_ascii_alphabetic() => {
                let start = self.pos;
                while self
                    .peek()
                    .is_some_and(|c| c.is_ascii_alphanumeric() || c == b'_')
                {
                    self.pos += 1;
                }
                match self.s.get(start..self.pos) {
                    Some(b"True") => Ok(Py::Bool(true)),
                    Some(b"False") => Ok(Py::Bool(false)),
                    Some(b"None") => Ok(Py::None),
                    word => Err(format!(
                        "unknown name '{}' at byte {start}",
                        String::from_utf8_lossy(word.unwrap_or_default())
                    )),
                }
            }
            _ => Err(self.expected("a value")),
        }
    }

    fn dict(&mut self, depth: usize) -> Result<Py, String> {
        self.pos += 1; // '{'
        let mut items = Vec::new();
        loop {
            self.skip_ws();
            if self.peek() == Some(b'}') {
                self.pos += 1;
                return Ok(Py::Dict(items));
            }
            let key = self.value(depth + 1)?;
            self.skip_ws();
            if self.peek() != Some(b':') {
                return Err(self.expected("':'"));
            }
            self.pos += 1;
            let value = self.value(depth + 1)?;
            items.push((key, value));
            self.skip_ws();
            match self.peek() {
                Some(b',') => self.pos += 1,
                Some(b'}') => {}
                _ => return Err(self.expected("',' or '}'")),
            }
        }
    }

    /// A tuple or list, up to `close`. `(3)` is read as a one-element tuple,
    /// a harmless leniency: it only matters for `shape`.
    fn seq(&mut self, close: u8, depth: usize) -> Result<Vec<Py>, String> {
        self.pos += 1; // '(' or '['
        let mut items = Vec::new();
        loop {
            self.skip_ws();
            if self.peek() == Some(close) {
                self.pos += 1;
                return Ok(items);
            }
            items.push(self.value(depth + 1)?);
            self.skip_ws();
            match self.peek() {
                Some(b',') => self.pos += 1,
                Some(c) if c == close => {}
                _ => return Err(self.expected(&format!("',' or '{}'", char::from(close)))),
            }
        }
    }

    fn string(&mut self, quote: u8) -> Result<String, String> {
        let start = self.pos;
        self.pos += 1;
        let mut out = Vec::new();
        loop {
            match self.peek() {
                None => return Err(format!("unterminated string starting at byte {start}")),
                Some(c) if c == quote => {
                    self.pos += 1;
                    return Ok(String::from_utf8_lossy(&out).into_owned());
                }
                // Escapes never occur in numeric descrs; keep the escaped
                // character literally so parsing stays in step.
                Some(b'\\') => {
                    self.pos += 1;
                    if let Some(c) = self.peek() {
                        out.push(c);
                        self.pos += 1;
                    }
                }
                Some(c) => {
                    out.push(c);
                    self.pos += 1;
                }
            }
        }
    }

    fn int(&mut self) -> Result<Py, String> {
        let start = self.pos;
        if self.peek() == Some(b'-') {
            self.pos += 1;
        }
        while self.peek().is_some_and(|c| c.is_ascii_digit()) {
            self.pos += 1;
        }
        let digits = self.s.get(start..self.pos).unwrap_or_default();
        let text = String::from_utf8_lossy(digits);
        // Python 2 wrote long integers with an `L` suffix, e.g. `(10L, 3L)`.
        if self.peek() == Some(b'L') {
            self.pos += 1;
        }
        text.parse::<i64>()
            .map(Py::Int)
            .map_err(|e| format!("bad integer '{text}' at byte {start}: {e}"))
    }
}

/// Python's rendering of a shape: `(3,)`, `(2, 3)`, `()`.
fn shape_text(shape: &[usize]) -> String {
    match shape {
        [d] => format!("({d},)"),
        _ => format!(
            "({})",
            shape
                .iter()
                .map(|d| d.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

/// At most `max` characters of `s`, marked when cut.
fn clip(s: &str, max: usize) -> String {
    let s = s.trim_end();
    if s.chars().count() <= max {
        format!("{s:?}")
    } else {
        format!("{:?}…", s.chars().take(max).collect::<String>())
    }
}

/// The file name of `path` (or the whole path if it has none).
fn file_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| path.display().to_string())
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::path::PathBuf;

    use zip::write::SimpleFileOptions;
    use zip::CompressionMethod;

    use super::*;

    /// A `.npy` file of format version `major`.0 with header dict `dict`,
    /// padded as numpy pads it (total header a multiple of 64 bytes).
    fn npy_v(major: u8, dict: &str, data: &[u8]) -> Vec<u8> {
        let len_bytes = if major == 1 { 2 } else { 4 };
        let unpadded = 6 + 2 + len_bytes + dict.len() + 1; // + 1 for the '\n'
        let mut header = dict.to_string();
        header.extend(std::iter::repeat_n(' ', (64 - unpadded % 64) % 64));
        header.push('\n');
        let mut v = b"\x93NUMPY".to_vec();
        v.extend_from_slice(&[major, 0]);
        if major == 1 {
            v.extend_from_slice(&(header.len() as u16).to_le_bytes());
        } else {
            v.extend_from_slice(&(header.len() as u32).to_le_bytes());
        }
        v.extend_from_slice(header.as_bytes());
        v.extend_from_slice(data);
        v
    }

    fn npy(descr: &str, fortran: bool, shape: &str, data: &[u8]) -> Vec<u8> {
        let f = if fortran { "True" } else { "False" };
        npy_v(
            1,
            &format!("{{'descr': '{descr}', 'fortran_order': {f}, 'shape': {shape}, }}"),
            data,
        )
    }

    fn le_f32(v: &[f32]) -> Vec<u8> {
        v.iter().flat_map(|x| x.to_le_bytes()).collect()
    }

    fn le_f64(v: &[f64]) -> Vec<u8> {
        v.iter().flat_map(|x| x.to_le_bytes()).collect()
    }

    fn le_i64(v: &[i64]) -> Vec<u8> {
        v.iter().flat_map(|x| x.to_le_bytes()).collect()
    }

    fn write(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, bytes).unwrap();
        p
    }

    /// Writes `x.npy` and `y.npy` into `dir` and loads them.
    fn pair(dir: &Path, x: &[u8], y: &[u8], task: Option<Task>) -> Result<RawDataset, DataError> {
        load_pair(&NpySpec {
            x: write(dir, "x.npy", x),
            y: write(dir, "y.npy", y),
            task,
        })
    }

    fn pair_err(x: &[u8], y: &[u8]) -> String {
        let d = tempfile::tempdir().unwrap();
        pair(d.path(), x, y, None).unwrap_err().to_string()
    }

    fn good_x() -> Vec<u8> {
        npy(
            "<f4",
            false,
            "(3, 2)",
            &le_f32(&[0.0, 1.0, 2.0, 3.0, 4.0, 5.0]),
        )
    }

    fn good_y() -> Vec<u8> {
        npy("<i8", false, "(3,)", &le_i64(&[2, 0, 1]))
    }

    #[test]
    fn f32_x_and_i64_y_load_as_classification() {
        let d = tempfile::tempdir().unwrap();
        let raw = pair(d.path(), &good_x(), &good_y(), None).unwrap();
        assert_eq!(raw.name, "npy(x.npy, y.npy)");
        assert_eq!(raw.task, Task::Classification);
        assert_eq!(raw.input_shape, vec![2]);
        assert_eq!(raw.outputs, 3);
        assert_eq!(raw.train.x, vec![0.0, 1.0, 2.0, 3.0, 4.0, 5.0]);
        assert_eq!(raw.train.y, Targets::Classes(vec![2, 0, 1]));
        assert!(raw.heldout.is_none());
    }

    #[test]
    fn f8_x_and_2d_y_load_as_regression() {
        let d = tempfile::tempdir().unwrap();
        let x = npy(
            "<f8",
            false,
            "(2, 2, 2)",
            &le_f64(&[0.5, 1.5, 2.5, 3.5, 4.5, 5.5, 6.5, 7.5]),
        );
        let y = npy(
            "<f8",
            false,
            "(2, 3)",
            &le_f64(&[0.1, 0.2, 0.3, -1.0, -2.0, -3.0]),
        );
        let raw = pair(d.path(), &x, &y, None).unwrap();
        assert_eq!(raw.task, Task::Regression);
        assert_eq!(raw.input_shape, vec![2, 2]);
        assert_eq!(raw.outputs, 3);
        assert_eq!(raw.train.x[7], 7.5);
        assert_eq!(
            raw.train.y,
            Targets::Values {
                data: vec![0.1, 0.2, 0.3, -1.0, -2.0, -3.0],
                width: 3
            }
        );
        // A 1-D float y is one target per example; a 1-D x one feature.
        let x = npy("<f8", false, "(3,)", &le_f64(&[1.0, 2.0, 3.0]));
        let y = npy("<f4", false, "(3,)", &le_f32(&[0.5, 0.25, 0.125]));
        let raw = pair(d.path(), &x, &y, None).unwrap();
        assert_eq!((raw.input_shape.clone(), raw.outputs), (vec![1], 1));
        assert_eq!(
            raw.train.y,
            Targets::Values {
                data: vec![0.5, 0.25, 0.125],
                width: 1
            }
        );
    }

    #[test]
    fn big_endian_is_decoded() {
        let d = tempfile::tempdir().unwrap();
        let x: Vec<u8> = [1.5f32, -2.0, 3.25, 1e6]
            .iter()
            .flat_map(|v| v.to_be_bytes())
            .collect();
        let y: Vec<u8> = [1i32, 3].iter().flat_map(|v| v.to_be_bytes()).collect();
        let raw = pair(
            d.path(),
            &npy(">f4", false, "(2, 2)", &x),
            &npy(">i4", false, "(2,)", &y),
            None,
        )
        .unwrap();
        assert_eq!(raw.train.x, vec![1.5, -2.0, 3.25, 1e6]);
        assert_eq!(raw.train.y, Targets::Classes(vec![1, 3]));
        assert_eq!(raw.outputs, 4);
        let x: Vec<u8> = [0x3C00u16, 0xC000]
            .iter()
            .flat_map(|v| v.to_be_bytes())
            .collect();
        let y: Vec<u8> = [7u64, 0].iter().flat_map(|v| v.to_be_bytes()).collect();
        let raw = pair(
            d.path(),
            &npy(">f2", false, "(2,)", &x),
            &npy(">u8", false, "(2,)", &y),
            None,
        )
        .unwrap();
        assert_eq!(raw.train.x, vec![1.0, -2.0]);
        assert_eq!(raw.train.y, Targets::Classes(vec![7, 0]));
    }

    #[test]
    fn fortran_order_is_converted_to_c_order() {
        let d = tempfile::tempdir().unwrap();
        // C order [[0, 1, 2], [3, 4, 5]] is stored column by column.
        let x = npy(
            "<f4",
            true,
            "(2, 3)",
            &le_f32(&[0.0, 3.0, 1.0, 4.0, 2.0, 5.0]),
        );
        let y = npy("<i8", false, "(2,)", &le_i64(&[0, 1]));
        let raw = pair(d.path(), &x, &y, None).unwrap();
        assert_eq!(raw.train.x, vec![0.0, 1.0, 2.0, 3.0, 4.0, 5.0]);

        // Three dimensions: element (i, j, k) has value 100i + 10j + k and
        // sits at Fortran offset i + 2j + 6k.
        let (a, b, c) = (2, 3, 4);
        let mut stored = vec![0f32; a * b * c];
        for i in 0..a {
            for j in 0..b {
                for k in 0..c {
                    stored[i + a * j + a * b * k] = (100 * i + 10 * j + k) as f32;
                }
            }
        }
        let x = npy("<f4", true, "(2, 3, 4)", &le_f32(&stored));
        let raw = pair(d.path(), &x, &y, None).unwrap();
        assert_eq!(raw.input_shape, vec![3, 4]);
        let expected: Vec<f32> = (0..a)
            .flat_map(|i| {
                (0..b).flat_map(move |j| (0..c).map(move |k| (100 * i + 10 * j + k) as f32))
            })
            .collect();
        assert_eq!(raw.train.x, expected);
        // A Fortran-ordered 2-D label column is fine too.
        let y2 = npy("<i8", true, "(2, 1)", &le_i64(&[1, 0]));
        let raw = pair(d.path(), &x, &y2, None).unwrap();
        assert_eq!(raw.train.y, Targets::Classes(vec![1, 0]));
    }

    #[test]
    fn v2_and_v3_headers_are_read() {
        let d = tempfile::tempdir().unwrap();
        let dict = "{'descr': '<f4', 'fortran_order': False, 'shape': (3, 2), }";
        let x_data = le_f32(&[0.0, 1.0, 2.0, 3.0, 4.0, 5.0]);
        for major in [2, 3] {
            let raw = pair(d.path(), &npy_v(major, dict, &x_data), &good_y(), None).unwrap();
            assert_eq!(raw.train.x.len(), 6, "v{major}");
            assert_eq!(raw.input_shape, vec![2], "v{major}");
        }
        // Python 2's long integers and double quotes.
        let dict = "{\"descr\": \"<f4\", \"fortran_order\": False, \"shape\": (3L, 2L)}";
        let raw = pair(d.path(), &npy_v(1, dict, &x_data), &good_y(), None).unwrap();
        assert_eq!(raw.input_shape, vec![2]);
    }

    #[test]
    fn small_ints_bools_and_halves() {
        let d = tempfile::tempdir().unwrap();
        let x = npy("|u1", false, "(2, 2)", &[0, 255, 7, 8]);
        let y = npy("|b1", false, "(2,)", &[1, 0]);
        let raw = pair(d.path(), &x, &y, None).unwrap();
        assert_eq!(raw.train.x, vec![0.0, 255.0, 7.0, 8.0]);
        assert_eq!((raw.task, raw.outputs), (Task::Classification, 2));
        assert_eq!(raw.train.y, Targets::Classes(vec![1, 0]));
        let x = npy("|i1", false, "(2,)", &[0xFF, 5]);
        let y = npy(
            "=i2",
            false,
            "(2,)",
            &[3i16, 1]
                .iter()
                .flat_map(|v| v.to_ne_bytes())
                .collect::<Vec<_>>(),
        );
        let raw = pair(d.path(), &x, &y, None).unwrap();
        assert_eq!(raw.train.x, vec![-1.0, 5.0]);
        assert_eq!(raw.train.y, Targets::Classes(vec![3, 1]));
        // Half-precision regression targets.
        let y = npy("<f2", false, "(2,)", &[0x00, 0x38, 0xFF, 0x7B]);
        let raw = pair(d.path(), &x, &y, None).unwrap();
        assert_eq!(raw.task, Task::Regression);
        assert_eq!(
            raw.train.y,
            Targets::Values {
                data: vec![0.5, 65504.0],
                width: 1
            }
        );
    }

    #[test]
    fn half_conversion_is_exact() {
        assert_eq!(f16_to_f32(0x0000).to_bits(), 0.0f32.to_bits());
        assert_eq!(f16_to_f32(0x8000).to_bits(), (-0.0f32).to_bits());
        assert_eq!(f16_to_f32(0x3C00), 1.0);
        assert_eq!(f16_to_f32(0xC000), -2.0);
        assert_eq!(f16_to_f32(0x3555), 0.333_251_95);
        assert_eq!(f16_to_f32(0x7BFF), 65504.0);
        assert_eq!(f16_to_f32(0x0400), 2f32.powi(-14)); // smallest normal
        assert_eq!(f16_to_f32(0x0001), 2f32.powi(-24)); // smallest subnormal
        assert_eq!(f16_to_f32(0x83FF), -(1023.0 * 2f32.powi(-24)));
        assert_eq!(f16_to_f32(0x7C00), f32::INFINITY);
        assert_eq!(f16_to_f32(0xFC00), f32::NEG_INFINITY);
        assert!(f16_to_f32(0x7E00).is_nan());
    }

    #[test]
    fn task_override_and_float_labels() {
        let d = tempfile::tempdir().unwrap();
        let y = npy("<f8", false, "(3,)", &le_f64(&[0.0, 4.0, 1.0]));
        let raw = pair(d.path(), &good_x(), &y, Some(Task::Classification)).unwrap();
        assert_eq!(raw.train.y, Targets::Classes(vec![0, 4, 1]));
        assert_eq!(raw.outputs, 5);
        // Integer targets as regression.
        let raw = pair(d.path(), &good_x(), &good_y(), Some(Task::Regression)).unwrap();
        assert_eq!(
            raw.train.y,
            Targets::Values {
                data: vec![2.0, 0.0, 1.0],
                width: 1
            }
        );
        // Fractional, negative, or 2-D class labels are refused.
        let y = npy("<f8", false, "(3,)", &le_f64(&[0.0, 1.5, 1.0]));
        let err = pair(d.path(), &good_x(), &y, Some(Task::Classification))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("y.npy") && err.contains("label 1.5 of example 1"),
            "{err}"
        );
        let err = pair_err(&good_x(), &npy("<i8", false, "(3,)", &le_i64(&[0, -1, 1])));
        assert!(err.contains("y.npy") && err.contains("label -1"), "{err}");
        let err = pair_err(&good_x(), &npy("<i8", false, "(3, 2)", &le_i64(&[0; 6])));
        assert!(
            err.contains("y.npy") && err.contains("shape (N,) or (N, 1), got shape (3, 2)"),
            "{err}"
        );
    }

    fn npz(
        dir: &Path,
        name: &str,
        method: CompressionMethod,
        members: &[(&str, Vec<u8>)],
    ) -> PathBuf {
        let p = dir.join(name);
        let mut w = zip::ZipWriter::new(File::create(&p).unwrap());
        for (member, bytes) in members {
            w.start_file(
                *member,
                SimpleFileOptions::default().compression_method(method),
            )
            .unwrap();
            w.write_all(bytes).unwrap();
        }
        w.finish().unwrap();
        p
    }

    #[test]
    fn npz_stored_and_deflated_with_custom_keys() {
        let d = tempfile::tempdir().unwrap();
        for (name, method) in [
            ("s.npz", CompressionMethod::Stored),
            ("d.npz", CompressionMethod::Deflated),
        ] {
            let members = [
                ("meta.npy", good_y()),
                ("inputs.npy", good_x()),
                ("targets.npy", good_y()),
            ];
            let spec = NpzSpec {
                path: npz(d.path(), name, method, &members),
                x_key: "inputs".into(),
                y_key: "targets".into(),
                task: None,
            };
            let raw = load_npz(&spec).unwrap();
            assert_eq!(raw.name, format!("npz({name})"));
            assert_eq!(raw.task, Task::Classification);
            assert_eq!(raw.input_shape, vec![2]);
            assert_eq!(raw.train.x, vec![0.0, 1.0, 2.0, 3.0, 4.0, 5.0]);
            assert_eq!(raw.train.y, Targets::Classes(vec![2, 0, 1]));
        }
    }

    #[test]
    fn missing_npz_key_lists_present_keys() {
        let d = tempfile::tempdir().unwrap();
        let members = [("inputs.npy", good_x()), ("labels.npy", good_y())];
        let spec = NpzSpec {
            path: npz(d.path(), "keys.npz", CompressionMethod::Deflated, &members),
            x_key: "inputs".into(),
            y_key: "y".into(),
            task: None,
        };
        let err = load_npz(&spec).unwrap_err().to_string();
        assert!(err.contains("keys.npz"), "{err}");
        assert!(
            err.contains("has no array 'y' (member 'y.npy'); arrays present: 'inputs', 'labels'"),
            "{err}"
        );
        // Errors inside a member name the archive and the key.
        let members = [
            ("x.npy", good_x()),
            ("y.npy", npy("<i8", false, "(2,)", &le_i64(&[0, 1]))),
        ];
        let spec = NpzSpec {
            path: npz(d.path(), "n.npz", CompressionMethod::Stored, &members),
            x_key: "x".into(),
            y_key: "y".into(),
            task: None,
        };
        let err = load_npz(&spec).unwrap_err().to_string();
        assert!(
            err.contains("n.npz: array 'y': targets have 2 rows"),
            "{err}"
        );
        assert!(err.contains("inputs array 'x' have 3 examples"), "{err}");
        // Not a zip at all.
        let spec = NpzSpec {
            path: write(d.path(), "junk.npz", b"not a zip"),
            x_key: "x".into(),
            y_key: "y".into(),
            task: None,
        };
        let err = load_npz(&spec).unwrap_err().to_string();
        assert!(
            err.contains("junk.npz") && err.contains("not a valid .npz"),
            "{err}"
        );
    }

    #[test]
    fn truncated_npy_is_reported() {
        let mut x = good_x();
        x.truncate(x.len() - 5);
        let err = pair_err(&x, &good_y());
        assert!(err.contains("x.npy"), "{err}");
        assert!(
            err.contains("truncated: header says shape (3, 2) of '<f4' (24 bytes) but only 19 bytes of data follow"),
            "{err}"
        );
        // Cut inside the header.
        let err = pair_err(&good_x()[..30], &good_y());
        assert!(
            err.contains("x.npy") && err.contains("truncated: the header length says"),
            "{err}"
        );
        // Extra data after the array.
        let mut y = good_y();
        y.extend_from_slice(&[0; 3]);
        let err = pair_err(&good_x(), &y);
        assert!(
            err.contains("y.npy") && err.contains("size mismatch") && err.contains("(3 extra)"),
            "{err}"
        );
    }

    #[test]
    fn bad_header_is_reported() {
        let bad = npy_v(
            1,
            "{'descr': '<f4', 'fortran_order': False, 'shape': (3, 2}",
            &[0; 24],
        );
        let err = pair_err(&bad, &good_y());
        assert!(
            err.contains("x.npy") && err.contains("header is not parseable: expected ',' or ')'"),
            "{err}"
        );
        let bad = npy_v(1, "{'descr': '<f4', 'shape': (3, 2), }", &[0; 24]);
        let err = pair_err(&bad, &good_y());
        assert!(
            err.contains("x.npy") && err.contains("no 'fortran_order' key"),
            "{err}"
        );
        let bad = npy_v(1, &format!("{{'descr': {}", "(".repeat(5000)), &[]);
        let err = pair_err(&bad, &good_y());
        assert!(
            err.contains("x.npy") && err.contains("nesting deeper"),
            "{err}"
        );
        let err = pair_err(b"PK\x03\x04 this is a zip", &good_y());
        assert!(
            err.contains("x.npy") && err.contains("not an NPY file"),
            "{err}"
        );
        let mut v4 = good_x();
        v4[6] = 4;
        let err = pair_err(&v4, &good_y());
        assert!(err.contains("unsupported NPY format version 4.0"), "{err}");
    }

    #[test]
    fn unsupported_dtypes_are_refused() {
        for (descr, expect) in [
            ("|O", "object arrays"),
            ("<U5", "string arrays"),
            ("|S3", "string arrays"),
            ("<c8", "complex"),
            ("<f16", "only f2, f4 and f8"),
            ("<M8[ns]", "dates"),
        ] {
            let err = pair_err(&npy(descr, false, "(3,)", &[0; 24]), &good_y());
            assert!(err.contains("x.npy"), "{err}");
            assert!(
                err.contains(&format!("unsupported dtype '{descr}'")) && err.contains(expect),
                "{err}"
            );
        }
        let structured = npy_v(
            1,
            "{'descr': [('a', '<f4')], 'fortran_order': False, 'shape': (3,), }",
            &[0; 12],
        );
        let err = pair_err(&structured, &good_y());
        assert!(err.contains("x.npy") && err.contains("structured"), "{err}");
    }

    #[test]
    fn n_mismatch_is_reported() {
        let y = npy("<i8", false, "(2,)", &le_i64(&[0, 1]));
        let err = pair_err(&good_x(), &y);
        assert!(err.contains("y.npy"), "{err}");
        assert!(
            err.contains("targets have 2 rows (shape (2,)) but the inputs x.npy have 3 examples (shape (3, 2))"),
            "{err}"
        );
    }

    #[test]
    fn non_finite_and_empty_inputs_are_refused() {
        let x = npy(
            "<f4",
            false,
            "(3, 2)",
            &le_f32(&[0.0, 1.0, f32::NAN, 3.0, 4.0, 5.0]),
        );
        let err = pair_err(&x, &good_y());
        assert!(
            err.contains("x.npy") && err.contains("non-finite input value in example 1"),
            "{err}"
        );
        let x = npy("<f4", false, "(0, 2)", &[]);
        let err = pair_err(&x, &npy("<i8", false, "(0,)", &[]));
        assert!(
            err.contains("x.npy") && err.contains("no examples"),
            "{err}"
        );
        let err = pair_err(&npy("<f4", false, "()", &[0; 4]), &good_y());
        assert!(
            err.contains("x.npy") && err.contains("0-dimensional"),
            "{err}"
        );
    }
}
