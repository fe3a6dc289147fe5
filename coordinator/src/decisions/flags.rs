//! The red flags of SPEC §1: the procedure's bug detector. Each check is a
//! function returning `Some(RedFlag)` when it fires. The rules:
//!
//! | code | fires when |
//! |---|---|
//! | `init_far_from_chance` | the heldout metric at θ0 is far from chance: accuracy more than max(0.05, chance/2, 4 binomial SEs) from chance; R² above 0.1; \|Pearson r\| above max(0.3, 4/√n) |
//! | `diverged_at_small_lr` | a seed of the LR ramp diverged (NaN/inf) at an LR below the chosen one, or in the first third of the ramp's epochs |
//! | `no_lr_improves` | no LR in the ramp raised the mean heldout metric by more than the noise between seeds (the ramp rule found no steady region) |
//! | `single_class` | one class takes at least 95% of the trained model's predictions (at least 2 classes) |
//! | `train_good_heldout_chance` | the training metric closes at least half the gap from chance to perfect (1), while the heldout metric closes less than a tenth of it |
//! | `line_search_a1_mismatch` | the final line search at a = 1 disagrees with the trained model's own figure |
//! | `heldout_overlaps_training` | exact duplicates of training rows make up at least `min_fraction` (default: any) of the heldout set |

use std::collections::hash_map::DefaultHasher;
use std::collections::HashMap;
use std::hash::{Hash, Hasher};

use serde::{Deserialize, Serialize};

use super::common::{fmt_num, MetricKind};
use super::landscape::LineSearchShape;
use super::ramp::RampAnalysis;

/// One red flag: a stable code, a short title and a sentence of detail.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RedFlag {
    pub code: String,
    pub title: String,
    pub detail: String,
}

impl RedFlag {
    fn new(code: &str, title: &str, detail: String) -> Self {
        Self {
            code: code.to_string(),
            title: title.to_string(),
            detail,
        }
    }
}

/// The flags' codes.
pub mod codes {
    pub const INIT_FAR_FROM_CHANCE: &str = "init_far_from_chance";
    pub const DIVERGED_AT_SMALL_LR: &str = "diverged_at_small_lr";
    pub const NO_LR_IMPROVES: &str = "no_lr_improves";
    pub const SINGLE_CLASS: &str = "single_class";
    pub const TRAIN_GOOD_HELDOUT_CHANCE: &str = "train_good_heldout_chance";
    pub const LINE_SEARCH_A1_MISMATCH: &str = "line_search_a1_mismatch";
    pub const HELDOUT_OVERLAPS_TRAINING: &str = "heldout_overlaps_training";
}

/// How far from chance the metric at θ0 may be (see the table above).
pub fn init_chance_tolerance(metric: MetricKind, chance: f64, heldout_size: Option<usize>) -> f64 {
    let n = heldout_size.filter(|&n| n > 0).map(|n| n as f64);
    match metric {
        MetricKind::Accuracy | MetricKind::Other => {
            let p = chance.clamp(0.0, 1.0);
            let se = n.map(|n| (p * (1.0 - p) / n).sqrt()).unwrap_or(0.0);
            0.05f64.max(0.5 * p).max(4.0 * se)
        }
        MetricKind::R2 => 0.1,
        MetricKind::Pearson => 0.3f64.max(n.map(|n| 4.0 / n.sqrt()).unwrap_or(0.0)),
    }
}

/// The heldout metric at θ0 (before any training) should be at chance. An
/// R² below 0 is normal for an untrained regression network (its outputs
/// have their own variance), so only R² above chance + 0.1 fires.
pub fn flag_init_far_from_chance(
    metric: MetricKind,
    value_at_init: f64,
    chance: f64,
    heldout_size: Option<usize>,
) -> Option<RedFlag> {
    if !value_at_init.is_finite() || !chance.is_finite() {
        return None;
    }
    let tol = init_chance_tolerance(metric, chance, heldout_size);
    let gap = value_at_init - chance;
    let fires = match metric {
        MetricKind::R2 => gap > tol,
        _ => gap.abs() > tol,
    };
    fires.then(|| {
        RedFlag::new(
            codes::INIT_FAR_FROM_CHANCE,
            "Metric at the initial weights is far from chance",
            format!(
                "Before any training the {} is {} while chance is {} (allowed ±{}). An untrained network should be at chance: check for heldout data leaking into the model, weights that are not freshly initialised, or a metric computed on the wrong labels.",
                metric.label(),
                fmt_num(value_at_init),
                fmt_num(chance),
                fmt_num(tol)
            ),
        )
    })
}

/// A seed of the LR ramp diverged at a small LR: below the chosen LR, or in
/// the first third of the ramp's epochs (index `i` with 3·i < epochs).
/// `divergence` is per seed the first fallen epoch index (as in
/// [`RampAnalysis::divergence`]).
pub fn flag_divergence_at_small_lr(
    lrs: &[f64],
    divergence: &[Option<usize>],
    chosen_lr: Option<f64>,
) -> Option<RedFlag> {
    let n = lrs.len();
    let (seed, i) = divergence
        .iter()
        .enumerate()
        .filter_map(|(s, d)| d.map(|i| (s, i)))
        .filter(|&(_, i)| i < n)
        .min_by_key(|&(_, i)| i)?;
    let lr = lrs[i];
    let early = 3 * i < n;
    let below = chosen_lr.is_some_and(|c| lr.is_finite() && lr < c);
    (early || below).then(|| {
        let why = match (early, below) {
            (true, true) => "in the first third of the ramp and below the chosen LR",
            (true, false) => "in the first third of the ramp",
            _ => "below the chosen LR",
        };
        RedFlag::new(
            codes::DIVERGED_AT_SMALL_LR,
            "Loss became NaN/inf at a small learning rate",
            format!(
                "Seed {seed} diverged at epoch {i} of {n} (lr {}), {why}. A small learning rate should not blow up: check for a log of zero, a division by zero, exploding inputs (unnormalised data) or a bad initialisation.",
                fmt_num(lr)
            ),
        )
    })
}

/// No LR in the ramp improved the metric by more than the noise: the
/// model is not learning (or the labels carry no signal). Fires exactly
/// when the ramp rule found no steady region (the mean never rose more
/// than `region_k`·σ above its floor before the cliff), including a ramp
/// that diverged in its first epochs; stays silent on an empty ramp or a
/// single epoch with nothing after it (too little to say).
pub fn flag_no_lr_improves(ramp: &RampAnalysis) -> Option<RedFlag> {
    if ramp.n_points == 0 || ramp.n_seeds == 0 || ramp.region.is_some() {
        return None;
    }
    if ramp.usable_points == 1 && ramp.cliff.is_none() {
        return None;
    }
    Some(RedFlag::new(
        codes::NO_LR_IMPROVES,
        "No learning rate in the ramp improves the metric",
        format!(
            "Over {} usable epochs of the ramp (lr {} to {}), the mean heldout metric never rose by more than the noise between seeds ({}). Check that the labels match the inputs (not shuffled), that gradients reach the weights, and that the model can represent the task.",
            ramp.usable_points,
            fmt_num(ramp.start.map(|p| p.x).unwrap_or(f64::NAN)),
            fmt_num(ramp.max_x.unwrap_or(f64::NAN)),
            fmt_num(ramp.noise.unwrap_or(f64::NAN))
        ),
    ))
}

/// Predictions above this fraction in one class fire [`flag_single_class`].
pub const SINGLE_CLASS_FRACTION: f64 = 0.95;

/// The trained model predicts (almost) a single class: the majority class
/// takes at least 95% of predictions, with at least two classes. Call it on
/// the trained model's heldout predictions (at θ0 one class is normal).
/// With labels that are themselves this unbalanced, the flag is expected.
pub fn flag_single_class_fraction(majority_fraction: f64, classes: usize) -> Option<RedFlag> {
    (classes >= 2 && majority_fraction.is_finite() && majority_fraction >= SINGLE_CLASS_FRACTION)
        .then(|| {
            RedFlag::new(
                codes::SINGLE_CLASS,
                "The model predicts a single class",
                format!(
                    "{}% of the heldout predictions fall in one class out of {classes}. The network has collapsed to a constant answer: check the loss (logits vs probabilities), the learning rate, class balance and dead activations.",
                    fmt_num(100.0 * majority_fraction)
                ),
            )
        })
}

/// [`flag_single_class_fraction`] from per-class prediction counts.
pub fn flag_single_class(prediction_counts: &[u64]) -> Option<RedFlag> {
    let total: u64 = prediction_counts.iter().sum();
    let max = prediction_counts.iter().copied().max().unwrap_or(0);
    if total == 0 {
        return None;
    }
    flag_single_class_fraction(max as f64 / total as f64, prediction_counts.len())
}

/// Training metric good but heldout at chance (memorisation, or heldout
/// labels that do not match): with `gap = 1 − chance`, train ≥ chance +
/// 0.5·gap and heldout ≤ chance + 0.1·gap.
pub fn flag_train_good_heldout_chance(
    metric: MetricKind,
    train: f64,
    heldout: f64,
    chance: f64,
) -> Option<RedFlag> {
    if !train.is_finite() || !heldout.is_finite() || !chance.is_finite() || chance >= 1.0 {
        return None;
    }
    let gap = 1.0 - chance;
    (train >= chance + 0.5 * gap && heldout <= chance + 0.1 * gap).then(|| {
        RedFlag::new(
            codes::TRAIN_GOOD_HELDOUT_CHANCE,
            "Training metric is good but heldout is at chance",
            format!(
                "The training {m} is {} but the heldout {m} is {} (chance {}). The model memorises the training set without learning anything that transfers: check that heldout inputs and labels are paired and preprocessed like the training ones, and that training labels are not shuffled.",
                fmt_num(train),
                fmt_num(heldout),
                fmt_num(chance),
                m = match metric {
                    MetricKind::Accuracy => "accuracy",
                    MetricKind::R2 => "R²",
                    MetricKind::Pearson => "Pearson r",
                    MetricKind::Other => "metric",
                }
            ),
        )
    })
}

/// The final line search at a = 1 disagrees with the trained model's own
/// figure (see [`super::landscape`] for the tolerance).
pub fn flag_line_search_mismatch(shape: &LineSearchShape) -> Option<RedFlag> {
    let c = shape.at_one.as_ref()?;
    (c.agrees == Some(false)).then(|| {
        let mut parts = vec![];
        if let (Some(l), Some(t)) = (c.metric_line, c.metric_trained) {
            parts.push(format!("metric {} on the line vs {} reported", fmt_num(l), fmt_num(t)));
        }
        if let (Some(l), Some(t)) = (c.loss_line, c.loss_trained) {
            parts.push(format!("loss {} on the line vs {} reported", fmt_num(l), fmt_num(t)));
        }
        RedFlag::new(
            codes::LINE_SEARCH_A1_MISMATCH,
            "Final line search at a = 1 disagrees with the trained model",
            format!(
                "At a = 1 the line search evaluates the trained weights, yet: {}. Check that the line search loads the right final weights, evaluates the same heldout data, and uses the same evaluation mode (e.g. batch-norm statistics).",
                parts.join("; ")
            ),
        )
    })
}

/// Heldout rows that are exact copies of training rows, as a fraction of
/// the heldout set, at or above `min_fraction` (0 by default: any
/// duplicate fires; raise it for data with natural duplicates).
pub fn flag_heldout_overlap(
    duplicates: usize,
    heldout_size: usize,
    min_fraction: f64,
) -> Option<RedFlag> {
    if duplicates == 0 || heldout_size == 0 {
        return None;
    }
    let frac = duplicates as f64 / heldout_size as f64;
    (frac >= min_fraction).then(|| {
        RedFlag::new(
            codes::HELDOUT_OVERLAPS_TRAINING,
            "Heldout data overlaps training data",
            format!(
                "{duplicates} of {heldout_size} heldout examples ({}%) are exact copies of training examples, so heldout figures overstate how well the model generalises. Check how the split was made (the same file twice, or duplicates in the source data).",
                fmt_num(100.0 * frac)
            ),
        )
    })
}

fn row_hash(row: &[f32]) -> u64 {
    let mut h = DefaultHasher::new();
    for v in row {
        v.to_bits().hash(&mut h);
    }
    h.finish()
}

/// Counts the heldout rows whose bytes exactly equal some training row.
/// Both are row-major with `row_len` values per row (a trailing partial row
/// is ignored). Rows are hashed by their bytes and hash matches are
/// confirmed by comparing the bytes, so the count is exact (note that
/// 0.0 and −0.0, or two NaN payloads, are different bytes).
pub fn count_duplicate_rows(train: &[f32], heldout: &[f32], row_len: usize) -> usize {
    if row_len == 0 {
        return 0;
    }
    let train_rows: Vec<&[f32]> = train.chunks_exact(row_len).collect();
    let held_rows: Vec<&[f32]> = heldout.chunks_exact(row_len).collect();
    count_duplicates(&train_rows, &held_rows)
}

/// [`count_duplicate_rows`] for rows given one by one (rows may differ in
/// length; rows of different lengths never match).
pub fn count_duplicate_row_sets<R: AsRef<[f32]>>(train: &[R], heldout: &[R]) -> usize {
    let t: Vec<&[f32]> = train.iter().map(|r| r.as_ref()).collect();
    let h: Vec<&[f32]> = heldout.iter().map(|r| r.as_ref()).collect();
    count_duplicates(&t, &h)
}

fn count_duplicates(train: &[&[f32]], heldout: &[&[f32]]) -> usize {
    let mut by_hash: HashMap<u64, Vec<usize>> = HashMap::new();
    for (i, r) in train.iter().enumerate() {
        by_hash.entry(row_hash(r)).or_default().push(i);
    }
    let same = |a: &[f32], b: &[f32]| {
        a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x.to_bits() == y.to_bits())
    };
    heldout
        .iter()
        .filter(|h| {
            by_hash
                .get(&row_hash(h))
                .is_some_and(|is| is.iter().any(|&i| same(train[i], h)))
        })
        .count()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decisions::landscape::{
        line_search_shape, LineSearchInput, LineSearchKind, LineSearchOptions, TrainedFigure,
    };
    use crate::decisions::ramp::{analyze_ramp, RampInput, RampOptions};

    #[test]
    fn init_far_from_chance() {
        let acc = MetricKind::Accuracy;
        assert!(flag_init_far_from_chance(acc, 0.11, 0.1, Some(1000)).is_none());
        assert!(flag_init_far_from_chance(acc, 0.08, 0.1, None).is_none());
        let f = flag_init_far_from_chance(acc, 0.45, 0.1, Some(1000)).unwrap();
        assert_eq!(f.code, codes::INIT_FAR_FROM_CHANCE);
        assert!(f.detail.contains("0.45"), "{}", f.detail);
        // Binary: chance 0.5, tolerance 0.25.
        assert!(flag_init_far_from_chance(acc, 0.7, 0.5, None).is_none());
        assert!(flag_init_far_from_chance(acc, 0.8, 0.5, None).is_some());
        // A tiny heldout set widens the tolerance (4 SEs of 0.3·0.7/20).
        assert!(flag_init_far_from_chance(acc, 0.7, 0.3, Some(20)).is_none());
        // R²: negative is normal at init, high is not.
        assert!(flag_init_far_from_chance(MetricKind::R2, -3.0, 0.0, None).is_none());
        assert!(flag_init_far_from_chance(MetricKind::R2, 0.4, 0.0, None).is_some());
        assert!(flag_init_far_from_chance(MetricKind::Pearson, -0.5, 0.0, None).is_some());
        assert!(flag_init_far_from_chance(MetricKind::Pearson, 0.1, 0.0, Some(50)).is_none());
        assert!(flag_init_far_from_chance(acc, f64::NAN, 0.1, None).is_none());
    }

    #[test]
    fn divergence_at_small_lr() {
        let lrs: Vec<f64> = (0..30).map(|i| 1e-5 * 10f64.powf(i as f64 / 5.0)).collect();
        // Epoch 4 of 30 is in the first third.
        let f = flag_divergence_at_small_lr(&lrs, &[None, Some(4), Some(20)], Some(1e-2)).unwrap();
        assert_eq!(f.code, codes::DIVERGED_AT_SMALL_LR);
        assert!(
            f.detail.contains("Seed 1") && f.detail.contains("first third"),
            "{}",
            f.detail
        );
        // Epoch 20 (lr 0.1) above the chosen 0.01 and late: fine.
        assert!(flag_divergence_at_small_lr(&lrs, &[None, Some(20)], Some(1e-2)).is_none());
        // Epoch 12 is past the first third but below a chosen lr of 0.1.
        let f = flag_divergence_at_small_lr(&lrs, &[Some(12)], Some(0.1)).unwrap();
        assert!(f.detail.contains("below the chosen"), "{}", f.detail);
        assert!(flag_divergence_at_small_lr(&lrs, &[None, None], Some(0.1)).is_none());
        assert!(flag_divergence_at_small_lr(&[], &[Some(0)], None).is_none());
        // From a ramp analysis: NaN loss at epoch 2 of 12.
        let input = RampInput {
            x: lrs[..12].to_vec(),
            metric: vec![vec![0.1; 12]; 2],
            loss: vec![vec![2.3; 12], {
                let mut l = vec![2.3; 12];
                l[2] = f64::NAN;
                l
            }],
            diverged_at: vec![],
        };
        let a = analyze_ramp(&input, &RampOptions::default());
        assert!(flag_divergence_at_small_lr(&input.x, &a.divergence, None).is_some());
    }

    #[test]
    fn no_lr_improves() {
        let flat = RampInput {
            x: (1..=10).map(|i| i as f64 * 0.1).collect(),
            metric: vec![
                vec![0.1, 0.11, 0.1, 0.09, 0.1, 0.1, 0.11, 0.1, 0.09, 0.1],
                vec![0.11, 0.1, 0.09, 0.1, 0.1, 0.11, 0.1, 0.09, 0.1, 0.1],
            ],
            ..Default::default()
        };
        let f = flag_no_lr_improves(&analyze_ramp(&flat, &RampOptions::default())).unwrap();
        assert_eq!(f.code, codes::NO_LR_IMPROVES);
        let rising = RampInput {
            x: flat.x.clone(),
            metric: vec![(0..10).map(|i| 0.1 + 0.08 * i as f64).collect(); 2],
            ..Default::default()
        };
        assert!(flag_no_lr_improves(&analyze_ramp(&rising, &RampOptions::default())).is_none());
        // Diverged at once: nothing improved.
        let dead = RampInput {
            diverged_at: vec![Some(0)],
            ..rising.clone()
        };
        assert!(flag_no_lr_improves(&analyze_ramp(&dead, &RampOptions::default())).is_some());
        assert!(flag_no_lr_improves(&analyze_ramp(
            &RampInput::default(),
            &RampOptions::default()
        ))
        .is_none());
    }

    #[test]
    fn single_class() {
        let f = flag_single_class(&[0, 990, 5, 5]).unwrap();
        assert_eq!(f.code, codes::SINGLE_CLASS);
        assert!(f.detail.contains("99%"), "{}", f.detail);
        assert!(flag_single_class(&[100, 120, 90]).is_none());
        assert!(flag_single_class(&[]).is_none());
        assert!(flag_single_class(&[0, 0]).is_none());
        assert!(
            flag_single_class(&[50]).is_none(),
            "one class is not a collapse"
        );
        assert!(flag_single_class_fraction(0.95, 10).is_some());
        assert!(flag_single_class_fraction(0.94, 10).is_none());
    }

    #[test]
    fn train_good_heldout_chance() {
        let acc = MetricKind::Accuracy;
        let f = flag_train_good_heldout_chance(acc, 0.99, 0.11, 0.1).unwrap();
        assert_eq!(f.code, codes::TRAIN_GOOD_HELDOUT_CHANCE);
        assert!(flag_train_good_heldout_chance(acc, 0.99, 0.9, 0.1).is_none());
        assert!(flag_train_good_heldout_chance(acc, 0.3, 0.1, 0.1).is_none());
        assert!(flag_train_good_heldout_chance(MetricKind::R2, 0.8, 0.02, 0.0).is_some());
        assert!(flag_train_good_heldout_chance(MetricKind::R2, 0.8, -0.5, 0.0).is_some());
        assert!(flag_train_good_heldout_chance(MetricKind::R2, 0.8, 0.4, 0.0).is_none());
        assert!(flag_train_good_heldout_chance(acc, f64::NAN, 0.1, 0.1).is_none());
    }

    #[test]
    fn line_search_mismatch() {
        let input = LineSearchInput {
            a: vec![0.0, 0.5, 1.0],
            metric: vec![vec![0.1, 0.5, 0.9]],
            loss: vec![vec![2.3, 1.0, 0.3]],
        };
        let o = LineSearchOptions::new(LineSearchKind::Final, MetricKind::Accuracy);
        let good = [TrainedFigure {
            metric: Some(0.9),
            loss: Some(0.3),
        }];
        assert!(flag_line_search_mismatch(&line_search_shape(&input, &good, &o)).is_none());
        let bad = [TrainedFigure {
            metric: Some(0.97),
            loss: Some(0.1),
        }];
        let f = flag_line_search_mismatch(&line_search_shape(&input, &bad, &o)).unwrap();
        assert_eq!(f.code, codes::LINE_SEARCH_A1_MISMATCH);
        assert!(
            f.detail.contains("0.97") && f.detail.contains("loss"),
            "{}",
            f.detail
        );
        assert!(flag_line_search_mismatch(&line_search_shape(&input, &[], &o)).is_none());
    }

    #[test]
    fn heldout_overlap_and_duplicate_counting() {
        let train = [1.0f32, 2.0, 3.0, 4.0, 5.0, 6.0];
        let held = [3.0f32, 4.0, 7.0, 8.0, 1.0, 2.0, 0.0];
        assert_eq!(count_duplicate_rows(&train, &held, 2), 2);
        assert_eq!(count_duplicate_rows(&train, &held, 0), 0);
        assert_eq!(count_duplicate_rows(&[], &held, 2), 0);
        // Exact bytes: −0.0 is not 0.0.
        assert_eq!(count_duplicate_rows(&[0.0], &[-0.0], 1), 0);
        let nan = f32::NAN;
        assert_eq!(count_duplicate_rows(&[nan], &[nan], 1), 1);
        let rows = vec![vec![1.0f32, 2.0], vec![3.0]];
        assert_eq!(count_duplicate_row_sets(&rows, &[vec![3.0], vec![1.0]]), 1);

        let f = flag_heldout_overlap(2, 3, 0.0).unwrap();
        assert_eq!(f.code, codes::HELDOUT_OVERLAPS_TRAINING);
        assert!(f.detail.contains("2 of 3"), "{}", f.detail);
        assert!(flag_heldout_overlap(0, 100, 0.0).is_none());
        assert!(flag_heldout_overlap(1, 1000, 0.01).is_none());
        assert!(flag_heldout_overlap(20, 1000, 0.01).is_some());
        assert!(flag_heldout_overlap(3, 0, 0.0).is_none());
        serde_json::from_str::<RedFlag>(&serde_json::to_string(&f).unwrap()).unwrap();
    }
}
