//! The `[data]` section: where the examples come from and how they are
//! prepared.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::{check_positive, SpecError, Task};

/// A data file uploaded to the coordinator is named `artifact:<sha256>` in
/// a job instead of by a path (`coordinator upload FILE` prints the name);
/// workers fetch it by hash, verify it, and cache it.
pub const ARTIFACT_PREFIX: &str = "artifact:";

/// The content hash of an `artifact:<sha256>` file name, if it is one.
pub fn artifact_hash(path: &std::path::Path) -> Option<&str> {
    path.to_str()?.strip_prefix(ARTIFACT_PREFIX)
}

/// The directories whose files a job may name (`--data-root`, on the
/// coordinator and on workers). Empty: any path the process can read.
///
/// A path is inside when it is absolute, lies under a root once `.` and
/// `..` are resolved, and still does once symlinks are resolved. Paths
/// outside are refused before the filesystem is asked anything about them,
/// so a job file cannot probe which files exist elsewhere.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DataRoots(Vec<Root>);

/// A root as given (made absolute) and with its symlinks resolved: a path
/// may name it either way.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Root {
    given: PathBuf,
    real: PathBuf,
}

impl Root {
    fn holds(&self, p: &std::path::Path) -> bool {
        p.starts_with(&self.given) || p.starts_with(&self.real)
    }
}

impl DataRoots {
    /// Any path.
    pub fn any() -> Self {
        Self::default()
    }

    /// The given directories, which must exist.
    pub fn new(dirs: &[PathBuf]) -> Result<Self, String> {
        dirs.iter()
            .map(|d| {
                let real = d
                    .canonicalize()
                    .map_err(|e| format!("--data-root {}: {e}", d.display()))?;
                let given = std::path::absolute(d)
                    .map_err(|e| format!("--data-root {}: {e}", d.display()))?;
                Ok(Root { given, real })
            })
            .collect::<Result<Vec<_>, String>>()
            .map(Self)
    }

    pub fn is_any(&self) -> bool {
        self.0.is_empty()
    }

    /// Accepts `path` if it is inside a root (see the type's docs).
    pub fn check(&self, path: &std::path::Path) -> Result<(), String> {
        if self.is_any() {
            return Ok(());
        }
        let roots = || {
            self.0
                .iter()
                .map(|r| r.given.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        };
        let outside = || {
            format!(
                "{} is outside the data roots ({}): name a file under one of them, or upload it \
                 with `coordinator upload`",
                path.display(),
                roots()
            )
        };
        if !path.is_absolute() {
            return Err(format!(
                "{} is a relative path: with data roots ({}) give the absolute path",
                path.display(),
                roots()
            ));
        }
        let mut lexical = PathBuf::new();
        for part in path.components() {
            match part {
                std::path::Component::ParentDir => {
                    lexical.pop();
                }
                std::path::Component::CurDir => {}
                other => lexical.push(other),
            }
        }
        if !self.0.iter().any(|r| r.holds(&lexical)) {
            return Err(outside());
        }
        // Inside by name; inside once symlinks are followed too? (A file
        // that cannot be resolved, e.g. a missing one, is left to whoever
        // reads it to report.)
        match lexical.canonicalize() {
            Ok(real) if !self.0.iter().any(|r| real.starts_with(&r.real)) => Err(outside()),
            _ => Ok(()),
        }
    }
}

/// How inputs are rescaled. Statistics always come from the training split
/// only, so no heldout information leaks into training.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Normalize {
    /// Leave inputs as loaded.
    None,
    /// Per input feature (per pixel for images): subtract the training mean,
    /// divide by the training standard deviation.
    #[default]
    Standardize,
    /// One affine map for all features: training minimum → 0, maximum → 1.
    MinMax,
}

fn default_heldout_fraction() -> f64 {
    0.2
}

/// The `[data]` section of a job file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataSpec {
    pub source: DatasetSource,
    #[serde(default)]
    pub normalize: Normalize,
    /// Regression only: also standardize the targets (statistics from the
    /// training split). R² and Pearson r are unaffected by it.
    #[serde(default)]
    pub standardize_targets: bool,
    /// For sources without their own heldout split: the fraction of examples
    /// held out (a fixed, seeded split).
    #[serde(default = "default_heldout_fraction")]
    pub heldout_fraction: f64,
    /// Seed of that fixed split.
    #[serde(default)]
    pub split_seed: u64,
}

impl DataSpec {
    /// A spec with default preparation for `source`.
    pub fn new(source: DatasetSource) -> Self {
        Self {
            source,
            normalize: Normalize::default(),
            standardize_targets: false,
            heldout_fraction: default_heldout_fraction(),
            split_seed: 0,
        }
    }

    pub fn validate(&self) -> Result<(), SpecError> {
        self.source.validate().map_err(|e| e.within("source"))?;
        if !(self.heldout_fraction > 0.0 && self.heldout_fraction < 1.0) {
            return Err(SpecError::new(
                "heldout_fraction",
                format!(
                    "must be strictly between 0 and 1, got {}",
                    self.heldout_fraction
                ),
            ));
        }
        Ok(())
    }
}

/// Where the examples come from: a built-in generator (no download, fully
/// determined by its seed) or files.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum DatasetSource {
    /// 28×28 single-channel glyph digits, 10 classes.
    Glyphs(GlyphsSpec),
    /// Tabular classification: Gaussian clusters with nonlinear structure.
    Tabular(TabularSpec),
    /// Regression: responses of simulated visual neurons to images.
    Neurons(NeuronsSpec),
    /// MNIST's IDX files (the four `*-ubyte` files, gzipped or not).
    Idx(IdxSpec),
    /// A pair of `.npy` files (inputs and labels/targets).
    Npy(NpySpec),
    /// One `.npz` archive holding inputs and labels/targets.
    Npz(NpzSpec),
    /// A CSV file with a header row and a label column.
    Csv(CsvSpec),
}

impl DatasetSource {
    /// Short name for logs and reports.
    pub fn kind(&self) -> &'static str {
        match self {
            DatasetSource::Glyphs(_) => "glyphs",
            DatasetSource::Tabular(_) => "tabular",
            DatasetSource::Neurons(_) => "neurons",
            DatasetSource::Idx(_) => "idx",
            DatasetSource::Npy(_) => "npy",
            DatasetSource::Npz(_) => "npz",
            DatasetSource::Csv(_) => "csv",
        }
    }

    /// The files this source reads, mutably (a worker replaces
    /// `artifact:<sha256>` references by the path of its cached copy).
    pub fn files_mut(&mut self) -> Vec<&mut PathBuf> {
        match self {
            DatasetSource::Glyphs(_) | DatasetSource::Tabular(_) | DatasetSource::Neurons(_) => {
                vec![]
            }
            DatasetSource::Idx(s) => {
                let mut v = vec![&mut s.train_images, &mut s.train_labels];
                v.extend(s.heldout_images.iter_mut());
                v.extend(s.heldout_labels.iter_mut());
                v
            }
            DatasetSource::Npy(s) => vec![&mut s.x, &mut s.y],
            DatasetSource::Npz(s) => vec![&mut s.path],
            DatasetSource::Csv(s) => vec![&mut s.path],
        }
    }

    /// The files this source reads (empty for built-in generators).
    pub fn files(&self) -> Vec<&PathBuf> {
        match self {
            DatasetSource::Glyphs(_) | DatasetSource::Tabular(_) | DatasetSource::Neurons(_) => {
                vec![]
            }
            DatasetSource::Idx(s) => {
                let mut v = vec![&s.train_images, &s.train_labels];
                v.extend(s.heldout_images.iter());
                v.extend(s.heldout_labels.iter());
                v
            }
            DatasetSource::Npy(s) => vec![&s.x, &s.y],
            DatasetSource::Npz(s) => vec![&s.path],
            DatasetSource::Csv(s) => vec![&s.path],
        }
    }

    pub fn validate(&self) -> Result<(), SpecError> {
        fn counts(n_train: usize, n_heldout: usize) -> Result<(), SpecError> {
            if n_train == 0 {
                return Err(SpecError::new("n_train", "must be at least 1"));
            }
            if n_heldout == 0 {
                return Err(SpecError::new("n_heldout", "must be at least 1"));
            }
            Ok(())
        }
        fn path(field: &str, p: &std::path::Path) -> Result<(), SpecError> {
            if p.as_os_str().is_empty() {
                return Err(SpecError::new(field, "is an empty path"));
            }
            Ok(())
        }
        match self {
            DatasetSource::Glyphs(s) => {
                counts(s.n_train, s.n_heldout)?;
                if !(0.0..=1.0).contains(&s.noise) {
                    return Err(SpecError::new(
                        "noise",
                        format!("must be in [0, 1], got {}", s.noise),
                    ));
                }
                if !(0.0..=1.0).contains(&s.jitter) {
                    return Err(SpecError::new(
                        "jitter",
                        format!("must be in [0, 1], got {}", s.jitter),
                    ));
                }
            }
            DatasetSource::Tabular(s) => {
                counts(s.n_train, s.n_heldout)?;
                if s.classes < 2 {
                    return Err(SpecError::new("classes", "must be at least 2"));
                }
                if s.features < 2 {
                    return Err(SpecError::new("features", "must be at least 2"));
                }
                if s.informative == 0 || s.informative > s.features {
                    return Err(SpecError::new(
                        "informative",
                        format!(
                            "must be between 1 and features ({}), got {}",
                            s.features, s.informative
                        ),
                    ));
                }
                if s.clusters_per_class == 0 {
                    return Err(SpecError::new("clusters_per_class", "must be at least 1"));
                }
                check_positive("class_sep", s.class_sep)?;
            }
            DatasetSource::Neurons(s) => {
                counts(s.n_train, s.n_heldout)?;
                if s.neurons == 0 {
                    return Err(SpecError::new("neurons", "must be at least 1"));
                }
                if s.image_size < 8 {
                    return Err(SpecError::new("image_size", "must be at least 8"));
                }
                if !(s.noise.is_finite() && s.noise >= 0.0) {
                    return Err(SpecError::new(
                        "noise",
                        format!("must be >= 0, got {}", s.noise),
                    ));
                }
            }
            DatasetSource::Idx(s) => {
                path("train_images", &s.train_images)?;
                path("train_labels", &s.train_labels)?;
                if s.heldout_images.is_some() != s.heldout_labels.is_some() {
                    return Err(SpecError::new(
                        "heldout_labels",
                        "heldout_images and heldout_labels must be given together",
                    ));
                }
            }
            DatasetSource::Npy(s) => {
                path("x", &s.x)?;
                path("y", &s.y)?;
            }
            DatasetSource::Npz(s) => {
                path("path", &s.path)?;
            }
            DatasetSource::Csv(s) => {
                path("path", &s.path)?;
                if s.label_column.trim().is_empty() {
                    return Err(SpecError::new("label_column", "must name a column"));
                }
            }
        }
        Ok(())
    }
}

fn d_glyph_train() -> usize {
    4000
}
fn d_glyph_heldout() -> usize {
    1000
}
fn d_glyph_jitter() -> f64 {
    0.5
}
fn d_glyph_noise() -> f64 {
    0.15
}

/// Built-in glyph digits: ten stroke-drawn digit shapes rendered at 28×28
/// with random affine jitter (rotation, scale, shear, shift), stroke thickness
/// and pixel noise.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GlyphsSpec {
    #[serde(default = "d_glyph_train")]
    pub n_train: usize,
    #[serde(default = "d_glyph_heldout")]
    pub n_heldout: usize,
    #[serde(default)]
    pub seed: u64,
    /// Strength of the affine jitter, 0 (none) to 1 (strong).
    #[serde(default = "d_glyph_jitter")]
    pub jitter: f64,
    /// Standard deviation of additive pixel noise (pixels are in [0, 1]).
    #[serde(default = "d_glyph_noise")]
    pub noise: f64,
}

impl Default for GlyphsSpec {
    fn default() -> Self {
        Self {
            n_train: d_glyph_train(),
            n_heldout: d_glyph_heldout(),
            seed: 0,
            jitter: d_glyph_jitter(),
            noise: d_glyph_noise(),
        }
    }
}

fn d_tab_train() -> usize {
    2000
}
fn d_tab_heldout() -> usize {
    500
}
fn d_tab_features() -> usize {
    16
}
fn d_tab_informative() -> usize {
    8
}
fn d_tab_classes() -> usize {
    4
}
fn d_tab_clusters() -> usize {
    3
}
fn d_tab_sep() -> f64 {
    1.5
}

/// Built-in tabular classification: each class is a mixture of Gaussian
/// clusters in an informative subspace (so classes are not linearly
/// separable), the remaining features are noise, and all features are mixed
/// by a random linear map.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TabularSpec {
    #[serde(default = "d_tab_train")]
    pub n_train: usize,
    #[serde(default = "d_tab_heldout")]
    pub n_heldout: usize,
    #[serde(default)]
    pub seed: u64,
    #[serde(default = "d_tab_features")]
    pub features: usize,
    #[serde(default = "d_tab_informative")]
    pub informative: usize,
    #[serde(default = "d_tab_classes")]
    pub classes: usize,
    #[serde(default = "d_tab_clusters")]
    pub clusters_per_class: usize,
    /// Distance scale between cluster centres (larger: easier).
    #[serde(default = "d_tab_sep")]
    pub class_sep: f64,
}

impl Default for TabularSpec {
    fn default() -> Self {
        Self {
            n_train: d_tab_train(),
            n_heldout: d_tab_heldout(),
            seed: 0,
            features: d_tab_features(),
            informative: d_tab_informative(),
            classes: d_tab_classes(),
            clusters_per_class: d_tab_clusters(),
            class_sep: d_tab_sep(),
        }
    }
}

fn d_neu_train() -> usize {
    2000
}
fn d_neu_heldout() -> usize {
    500
}
fn d_neu_neurons() -> usize {
    8
}
fn d_neu_size() -> usize {
    16
}
fn d_neu_noise() -> f64 {
    0.3
}

/// Built-in regression modelled on the procedure's own example: images go
/// through a bank of oriented filters (the "image features"); each simulated
/// neuron responds with a nonlinearity of a linear readout of those features,
/// plus noise. One output per neuron.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NeuronsSpec {
    #[serde(default = "d_neu_train")]
    pub n_train: usize,
    #[serde(default = "d_neu_heldout")]
    pub n_heldout: usize,
    #[serde(default)]
    pub seed: u64,
    #[serde(default = "d_neu_neurons")]
    pub neurons: usize,
    /// Side of the square input images.
    #[serde(default = "d_neu_size")]
    pub image_size: usize,
    /// Response noise, relative to each neuron's response standard deviation.
    #[serde(default = "d_neu_noise")]
    pub noise: f64,
}

impl Default for NeuronsSpec {
    fn default() -> Self {
        Self {
            n_train: d_neu_train(),
            n_heldout: d_neu_heldout(),
            seed: 0,
            neurons: d_neu_neurons(),
            image_size: d_neu_size(),
            noise: d_neu_noise(),
        }
    }
}

/// MNIST-style IDX files. Images are `u8` (any H×W); labels `u8`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IdxSpec {
    pub train_images: PathBuf,
    pub train_labels: PathBuf,
    /// The `t10k-*` pair. Without it a fixed split of the training files is
    /// held out (`data.heldout_fraction`).
    #[serde(default)]
    pub heldout_images: Option<PathBuf>,
    #[serde(default)]
    pub heldout_labels: Option<PathBuf>,
}

/// Inputs and labels as two `.npy` files with the same first dimension.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NpySpec {
    pub x: PathBuf,
    pub y: PathBuf,
    /// Default: classification for integer labels, regression for floats.
    #[serde(default)]
    pub task: Option<Task>,
}

fn d_x_key() -> String {
    "x".into()
}
fn d_y_key() -> String {
    "y".into()
}

/// Inputs and labels in one `.npz` archive (stored or deflated).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NpzSpec {
    pub path: PathBuf,
    #[serde(default = "d_x_key")]
    pub x_key: String,
    #[serde(default = "d_y_key")]
    pub y_key: String,
    #[serde(default)]
    pub task: Option<Task>,
}

/// A CSV file with a header row; every column but the label column is a
/// numeric feature.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CsvSpec {
    pub path: PathBuf,
    pub label_column: String,
    /// Default: classification when every label is a non-negative integer.
    #[serde(default)]
    pub task: Option<Task>,
}

#[cfg(test)]
mod tests {
    #[test]
    fn data_roots_confine_paths_and_do_not_probe_outside() {
        use super::DataRoots;
        let dir = tempfile_dir();
        let root = dir.join("root");
        std::fs::create_dir_all(root.join("sub")).unwrap();
        std::fs::write(root.join("sub/train.idx"), b"x").unwrap();
        std::fs::write(dir.join("secret"), b"x").unwrap();
        #[cfg(unix)]
        std::os::unix::fs::symlink(dir.join("secret"), root.join("link")).unwrap();
        let roots = DataRoots::new(std::slice::from_ref(&root)).unwrap();
        assert!(roots.check(&root.join("sub/train.idx")).is_ok());
        assert!(roots.check(&root.join("sub/../sub/./train.idx")).is_ok());
        for bad in [
            dir.join("secret"),
            root.join("../secret"),
            root.join("sub/../../secret"),
            "/etc/passwd".into(),
        ] {
            let e = roots.check(&bad).unwrap_err();
            assert!(
                e.contains("outside the data roots"),
                "{}: {e}",
                bad.display()
            );
        }
        // A file outside that does not exist reads the same as one that
        // does: nothing is learnt about the filesystem outside.
        let e = roots.check(&dir.join("no-such-file")).unwrap_err();
        assert!(e.contains("outside the data roots"), "{e}");
        #[cfg(unix)]
        {
            let e = roots.check(&root.join("link")).unwrap_err();
            assert!(e.contains("outside the data roots"), "symlink out: {e}");
        }
        let e = roots
            .check(std::path::Path::new("rel/train.idx"))
            .unwrap_err();
        assert!(e.contains("relative path"), "{e}");
        // A missing file inside is for the reader to report.
        assert!(roots.check(&root.join("missing.idx")).is_ok());
        assert!(DataRoots::any()
            .check(std::path::Path::new("/anything"))
            .is_ok());
        assert!(DataRoots::new(&[dir.join("nope")])
            .unwrap_err()
            .contains("--data-root"));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    fn tempfile_dir() -> std::path::PathBuf {
        let d = std::env::temp_dir().join(format!(
            "ridgeline-roots-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    use super::*;

    #[test]
    fn tagged_sources_refuse_unknown_fields() {
        let ok: DataSpec =
            serde_json::from_str(r#"{"source":{"kind":"tabular","classes":3}}"#).unwrap();
        ok.validate().unwrap();
        let err = serde_json::from_str::<DataSpec>(r#"{"source":{"kind":"tabular","clases":3}}"#)
            .unwrap_err()
            .to_string();
        assert!(err.contains("clases"), "{err}");
        let err = serde_json::from_str::<DataSpec>(r#"{"source":{"kind":"imagenet"}}"#)
            .unwrap_err()
            .to_string();
        assert!(err.contains("imagenet"), "{err}");
    }

    #[test]
    fn idx_heldout_pair_must_be_complete() {
        let s = DataSpec::new(DatasetSource::Idx(IdxSpec {
            train_images: "a".into(),
            train_labels: "b".into(),
            heldout_images: Some("c".into()),
            heldout_labels: None,
        }));
        assert_eq!(s.validate().unwrap_err().field, "source.heldout_labels");
    }
}
