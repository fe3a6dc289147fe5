//! Types and small statistics shared by the decisions.
//!
//! Conventions used everywhere in [`crate::decisions`]:
//!
//! * Metrics are "higher is better" (accuracy, R², Pearson r); losses are
//!   "lower is better" (cross-entropy, MSE).
//! * A non-finite value (NaN, ±inf) is an outcome (a diverged or missing
//!   measurement), never a reason to panic.
//! * Every decision output holds only finite numbers or `None`, so that it
//!   round-trips through JSON (serde_json writes NaN as `null`).

use serde::{Deserialize, Serialize};

/// How much a decision can be trusted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Confidence {
    /// The rule found what it looks for, well above the noise.
    Clear,
    /// A value was chosen, but the evidence is thin (see the reasons).
    Weak,
    /// The data did not allow a choice (empty, diverged at once, flat...).
    Undetermined,
}

/// The heldout metric a curve reports (only used for wording and for the
/// red flags' chance levels).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MetricKind {
    /// Classification accuracy in [0, 1].
    Accuracy,
    /// Coefficient of determination (1 is perfect, 0 is the mean predictor).
    R2,
    /// Pearson correlation between predictions and targets.
    Pearson,
    /// Anything else, higher is better.
    #[default]
    Other,
}

impl MetricKind {
    /// Parses the proto's metric names ("accuracy", "r2", "pearson").
    pub fn from_name(name: &str) -> Self {
        match name.to_ascii_lowercase().as_str() {
            "accuracy" | "acc" => Self::Accuracy,
            "r2" | "r²" => Self::R2,
            "pearson" | "pearson_r" | "r" => Self::Pearson,
            _ => Self::Other,
        }
    }

    /// Words for the Thoughts paragraphs, e.g. "heldout accuracy".
    pub fn label(self) -> &'static str {
        match self {
            Self::Accuracy => "heldout accuracy",
            Self::R2 => "heldout R²",
            Self::Pearson => "heldout Pearson r",
            Self::Other => "heldout metric",
        }
    }

    /// The best value the metric can reach: 1 for accuracy, R² and
    /// Pearson r; `None` for [`MetricKind::Other`], which has no ceiling.
    pub fn ceiling(self) -> Option<f64> {
        match self {
            Self::Accuracy | Self::R2 | Self::Pearson => Some(1.0),
            Self::Other => None,
        }
    }

    /// The chance level: 1/classes for accuracy (balanced classes; pass the
    /// majority-class fraction instead where classes are unbalanced), 0 for
    /// R² and Pearson r. `None` for accuracy without a class count, and for
    /// [`MetricKind::Other`].
    pub fn chance(self, classes: Option<usize>) -> Option<f64> {
        match self {
            Self::Accuracy => classes.filter(|&k| k > 0).map(|k| 1.0 / k as f64),
            Self::R2 | Self::Pearson => Some(0.0),
            Self::Other => None,
        }
    }
}

/// The axis a ramp's hyperparameter moves along. Steepness is measured per
/// unit of this axis: per decade (log10) for an exponential LR ramp, per
/// unit for a linear ramp (momentum, or a linear LR ramp).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Axis {
    Log,
    Linear,
}

impl Axis {
    /// The coordinate of `x` on this axis (`None` for a non-positive x on a
    /// log axis, or a non-finite x).
    pub fn coord(self, x: f64) -> Option<f64> {
        if !x.is_finite() {
            return None;
        }
        match self {
            Axis::Log => (x > 0.0).then(|| x.log10()),
            Axis::Linear => Some(x),
        }
    }
}

/// Per-seed curves aligned on shared x values: `seeds[s][i]` is seed `s`'s
/// value at `x[i]`. A missing value is NaN (a seed shorter than `x` is
/// missing its tail).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SeedCurves {
    pub x: Vec<f64>,
    pub seeds: Vec<Vec<f64>>,
}

impl SeedCurves {
    pub fn new(x: Vec<f64>, seeds: Vec<Vec<f64>>) -> Self {
        Self { x, seeds }
    }

    /// Aligns per-seed `(x, value)` lists on the union of their x values
    /// (matched exactly, as the analysis module does: seeds of one
    /// configuration share their schedule). Points are sorted by x; a seed
    /// without a value at some x gets NaN there; non-finite x are dropped.
    pub fn from_points(per_seed: &[Vec<(f64, f64)>]) -> Self {
        let mut xs: Vec<f64> = per_seed
            .iter()
            .flatten()
            .map(|p| p.0)
            .filter(|x| x.is_finite())
            .collect();
        xs.sort_by(|a, b| a.total_cmp(b));
        xs.dedup_by(|a, b| a.to_bits() == b.to_bits());
        let seeds = per_seed
            .iter()
            .map(|pts| {
                let mut row = vec![f64::NAN; xs.len()];
                for &(x, v) in pts {
                    if let Ok(i) = xs.binary_search_by(|p| p.total_cmp(&x)) {
                        row[i] = v;
                    }
                }
                row
            })
            .collect();
        Self { x: xs, seeds }
    }

    pub fn len(&self) -> usize {
        self.x.len()
    }

    pub fn is_empty(&self) -> bool {
        self.x.is_empty()
    }

    pub fn n_seeds(&self) -> usize {
        self.seeds.len()
    }

    /// Seed `s` at point `i` (NaN if absent).
    pub fn value(&self, s: usize, i: usize) -> f64 {
        self.seeds
            .get(s)
            .and_then(|r| r.get(i))
            .copied()
            .unwrap_or(f64::NAN)
    }

    /// The values of all seeds at point `i`.
    pub fn column(&self, i: usize) -> Vec<f64> {
        (0..self.n_seeds()).map(|s| self.value(s, i)).collect()
    }

    /// Mean over seeds at each point, NaN where any seed is non-finite (or
    /// there are no seeds): a mean over the survivors would be biased.
    pub fn strict_mean(&self) -> Vec<f64> {
        (0..self.len())
            .map(|i| {
                let c = self.column(i);
                if c.is_empty() || c.iter().any(|v| !v.is_finite()) {
                    f64::NAN
                } else {
                    c.iter().sum::<f64>() / c.len() as f64
                }
            })
            .collect()
    }

    /// Mean over the seeds that are finite at each point (NaN where none).
    pub fn finite_mean(&self) -> Vec<f64> {
        (0..self.len())
            .map(|i| mean(&self.column(i)).unwrap_or(f64::NAN))
            .collect()
    }

    /// Sample standard deviation over seeds at each point (NaN where fewer
    /// than two seeds are finite).
    pub fn finite_std(&self) -> Vec<f64> {
        (0..self.len())
            .map(|i| sample_std(&self.column(i)).unwrap_or(f64::NAN))
            .collect()
    }
}

/// Mean of the finite values (`None` if there are none).
pub fn mean(v: &[f64]) -> Option<f64> {
    let f: Vec<f64> = v.iter().copied().filter(|x| x.is_finite()).collect();
    if f.is_empty() {
        None
    } else {
        Some(f.iter().sum::<f64>() / f.len() as f64)
    }
}

/// Sample standard deviation of the finite values (`None` below two).
pub fn sample_std(v: &[f64]) -> Option<f64> {
    let f: Vec<f64> = v.iter().copied().filter(|x| x.is_finite()).collect();
    if f.len() < 2 {
        return None;
    }
    let m = f.iter().sum::<f64>() / f.len() as f64;
    let var = f.iter().map(|x| (x - m) * (x - m)).sum::<f64>() / (f.len() - 1) as f64;
    Some(var.sqrt())
}

/// Median of the finite values (`None` if there are none).
pub fn median(v: &[f64]) -> Option<f64> {
    let mut f: Vec<f64> = v.iter().copied().filter(|x| x.is_finite()).collect();
    if f.is_empty() {
        return None;
    }
    f.sort_by(|a, b| a.total_cmp(b));
    let n = f.len();
    Some(if n % 2 == 1 {
        f[n / 2]
    } else {
        0.5 * (f[n / 2 - 1] + f[n / 2])
    })
}

/// Noise of a single curve estimated from its own roughness: the median
/// absolute second difference divided by 0.6745·√6 (for white noise of
/// standard deviation σ on a smooth trend, a second difference has
/// standard deviation σ·√6, and the median absolute value of a normal is
/// 0.6745 σ). Needs three consecutive finite points.
pub fn roughness_noise(curve: &[f64]) -> Option<f64> {
    let d2: Vec<f64> = curve
        .windows(3)
        .filter(|w| w.iter().all(|v| v.is_finite()))
        .map(|w| (w[0] - 2.0 * w[1] + w[2]).abs())
        .collect();
    median(&d2).map(|m| m / (0.6745 * 6f64.sqrt()))
}

/// Smooths with the kernel [1, 2, 1]/4; the end points are kept as they are.
pub fn smooth_121(v: &[f64]) -> Vec<f64> {
    let n = v.len();
    (0..n)
        .map(|i| {
            if i == 0 || i + 1 == n {
                v[i]
            } else {
                0.25 * v[i - 1] + 0.5 * v[i] + 0.25 * v[i + 1]
            }
        })
        .collect()
}

/// Centered moving average over `window` points (odd; shrunk to the points
/// available at the ends), ignoring non-finite values.
pub fn moving_average(v: &[f64], window: usize) -> Vec<f64> {
    let h = window.max(1) / 2;
    (0..v.len())
        .map(|i| {
            let lo = i.saturating_sub(h);
            let hi = (i + h + 1).min(v.len());
            mean(&v[lo..hi]).unwrap_or(f64::NAN)
        })
        .collect()
}

/// Range (max − min) of the finite values; 0 when fewer than one.
pub fn finite_range(v: &[f64]) -> f64 {
    let f = v.iter().copied().filter(|x| x.is_finite());
    let (lo, hi) = f.fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), x| {
        (lo.min(x), hi.max(x))
    });
    if hi >= lo {
        hi - lo
    } else {
        0.0
    }
}

/// A number for the Thoughts paragraphs: three significant digits, trailing
/// zeros removed, scientific notation for very small or large magnitudes.
pub fn fmt_num(v: f64) -> String {
    if !v.is_finite() {
        return "n/a".to_string();
    }
    let a = v.abs();
    if a == 0.0 {
        return "0".to_string();
    }
    if !(1e-3..1e5).contains(&a) {
        let s = format!("{v:.2e}");
        // "3.00e-5" → "3e-5", "3.10e-5" → "3.1e-5".
        if let Some((m, e)) = s.split_once('e') {
            let m = trim_zeros(m);
            return format!("{m}e{e}");
        }
        return s;
    }
    let digits = (2 - a.log10().floor() as i32).max(0) as usize;
    trim_zeros(&format!("{v:.digits$}"))
}

fn trim_zeros(s: &str) -> String {
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        s.to_string()
    }
}

/// The sentence-initial form of `s` (first letter upper-cased).
pub fn cap(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(f) => f.to_uppercase().chain(c).collect(),
        None => String::new(),
    }
}

/// "1 seed" / "3 seeds".
pub fn seeds_phrase(n: usize) -> String {
    if n == 1 {
        "1 seed".to_string()
    } else {
        format!("{n} seeds")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statistics_ignore_non_finite_values() {
        assert_eq!(mean(&[1.0, f64::NAN, 3.0]), Some(2.0));
        assert_eq!(mean(&[]), None);
        assert_eq!(sample_std(&[1.0]), None);
        assert!((sample_std(&[1.0, 3.0]).unwrap() - 2f64.sqrt()).abs() < 1e-12);
        assert_eq!(median(&[3.0, 1.0, f64::INFINITY, 2.0]), Some(2.0));
        assert_eq!(median(&[4.0, 1.0]), Some(2.5));
        assert_eq!(median(&[f64::NAN]), None);
        assert_eq!(finite_range(&[]), 0.0);
        assert_eq!(finite_range(&[2.0, f64::NAN, -1.0]), 3.0);
    }

    #[test]
    fn roughness_noise_is_zero_on_a_straight_line_and_sees_noise() {
        let line: Vec<f64> = (0..20).map(|i| 0.1 * i as f64).collect();
        assert!(roughness_noise(&line).unwrap() < 1e-12);
        // Alternating ±0.01 on a line: second differences are ±0.04.
        let zig: Vec<f64> = (0..20)
            .map(|i| 0.1 * i as f64 + if i % 2 == 0 { 0.01 } else { -0.01 })
            .collect();
        let n = roughness_noise(&zig).unwrap();
        assert!((n - 0.04 / (0.6745 * 6f64.sqrt())).abs() < 1e-9);
        assert_eq!(roughness_noise(&[1.0, 2.0]), None);
    }

    #[test]
    fn smoothing_and_moving_average() {
        assert_eq!(smooth_121(&[0.0, 4.0, 0.0]), vec![0.0, 2.0, 0.0]);
        assert!(smooth_121(&[]).is_empty());
        assert_eq!(
            moving_average(&[1.0, 2.0, 3.0, 4.0], 3),
            vec![1.5, 2.0, 3.0, 3.5]
        );
    }

    #[test]
    fn seed_curves_align_points_on_x() {
        let c = SeedCurves::from_points(&[
            vec![(2.0, 0.5), (1.0, 0.4)],
            vec![(1.0, 0.6), (3.0, 0.9), (f64::NAN, 1.0)],
        ]);
        assert_eq!(c.x, vec![1.0, 2.0, 3.0]);
        assert_eq!(c.seeds[0][..2], [0.4, 0.5]);
        assert!(c.seeds[0][2].is_nan());
        assert!(c.seeds[1][1].is_nan());
        let m = c.strict_mean();
        assert!((m[0] - 0.5).abs() < 1e-12 && m[1].is_nan());
        assert_eq!(c.finite_mean()[1], 0.5);
        assert!(c.value(5, 0).is_nan());
        assert!(SeedCurves::default().strict_mean().is_empty());
    }

    #[test]
    fn numbers_read_well() {
        assert_eq!(fmt_num(1.5), "1.5");
        assert_eq!(fmt_num(0.0316), "0.0316");
        assert_eq!(fmt_num(0.91234), "0.912");
        assert_eq!(fmt_num(123.4), "123");
        assert_eq!(fmt_num(3e-5), "3e-5");
        assert_eq!(fmt_num(-0.5), "-0.5");
        assert_eq!(fmt_num(0.0), "0");
        assert_eq!(fmt_num(f64::NAN), "n/a");
        assert_eq!(cap("cyclical lr"), "Cyclical lr");
        assert_eq!(cap(""), "");
    }

    #[test]
    fn metric_kinds() {
        assert_eq!(MetricKind::from_name("accuracy"), MetricKind::Accuracy);
        assert_eq!(MetricKind::from_name("R2"), MetricKind::R2);
        assert_eq!(MetricKind::Accuracy.chance(Some(10)), Some(0.1));
        assert_eq!(MetricKind::Accuracy.chance(None), None);
        assert_eq!(MetricKind::Pearson.chance(None), Some(0.0));
        assert_eq!(Axis::Log.coord(100.0), Some(2.0));
        assert_eq!(Axis::Log.coord(0.0), None);
        assert_eq!(Axis::Linear.coord(0.0), Some(0.0));
    }
}
