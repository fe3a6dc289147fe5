//! Comparisons between a candidate configuration and a baseline (steps 3's
//! confirmation, 4, 5 and 6), with paired seeds: seed `i` of the candidate
//! ran with the same seed (initial weights, data order) as seed `i` of the
//! baseline.
//!
//! # The rules, precisely
//!
//! **Better final metric** ([`paired_comparison`]). Over the `n` seeds
//! where both final heldout metrics are finite, let `dᵢ = candidateᵢ −
//! baselineᵢ`, `d̄` their mean and `SE = sd(d)/√n` (sample sd). The
//! candidate is adopted only if `d̄ > max(δ_min, 2·SE)` (strictly). With a
//! single pair the SE is undefined and the threshold is `δ_min` alone
//! (weak). A candidate seed whose final value is non-finite while the
//! baseline's is finite counts as a failure: the candidate is not adopted.
//! The candidate is **clearly worse** when `d̄ < −max(δ_min, 2·SE)`.
//!
//! **Wins on speed** ([`speed_comparison`]). The target is the baseline's
//! final mean (mean over seeds at its last epoch). On the mean curves
//! (mean over seeds at each epoch; an epoch where any seed is non-finite
//! does not count), `E_b` is the first epoch at which the baseline's mean
//! reaches the target, and `E_c` the first at which the candidate's does.
//! The candidate wins on speed if `E_c ≤ (1 − 0.2)·E_b`: it reaches the
//! same figure in at least 20% fewer epochs.
//!
//! **Helps** ([`compare_runs`]): adopted on the final metric, or wins on
//! speed without being clearly worse at the end.

use serde::{Deserialize, Serialize};

use super::common::{
    cap, fmt_num, mean, sample_std, seeds_phrase, Confidence, MetricKind, SeedCurves,
};

/// The constants of the comparison rules.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CompareOptions {
    /// The smallest gain worth adopting, in metric units.
    pub delta_min: f64,
    /// The gain must also exceed this many standard errors.
    pub se_multiplier: f64,
    /// Fraction of epochs the candidate must save to win on speed.
    pub speed_margin: f64,
    /// For the wording of the Thoughts.
    pub metric: MetricKind,
}

impl Default for CompareOptions {
    fn default() -> Self {
        Self {
            delta_min: 0.002,
            se_multiplier: 2.0,
            speed_margin: 0.2,
            metric: MetricKind::Other,
        }
    }
}

/// The final-metric comparison with its numbers and Thoughts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PairedComparison {
    pub candidate: String,
    pub baseline: String,
    /// Seeds with finite values in both arms.
    pub n_pairs: usize,
    /// Seeds left out (missing in one arm, or baseline non-finite).
    pub dropped_pairs: usize,
    /// Candidate seeds that ended non-finite where the baseline did not.
    pub candidate_failures: usize,
    pub candidate_mean: Option<f64>,
    pub baseline_mean: Option<f64>,
    /// Mean of the paired differences (candidate − baseline).
    pub mean_difference: Option<f64>,
    /// Standard error of that mean (`None` below two pairs).
    pub standard_error: Option<f64>,
    /// max(δ_min, k·SE), or δ_min without an SE.
    pub threshold: f64,
    pub adopt: bool,
    pub clearly_worse: bool,
    pub confidence: Confidence,
    pub thoughts: String,
}

/// Compares final heldout metrics paired by seed (index `i` in both slices
/// is the same seed). See the module docs for the rule.
pub fn paired_comparison(
    candidate: &str,
    candidate_final: &[f64],
    baseline: &str,
    baseline_final: &[f64],
    opts: &CompareOptions,
) -> PairedComparison {
    let n_max = candidate_final.len().max(baseline_final.len());
    let mut diffs = vec![];
    let mut cs = vec![];
    let mut bs = vec![];
    let mut failures = 0;
    for i in 0..candidate_final.len().min(baseline_final.len()) {
        let (c, b) = (candidate_final[i], baseline_final[i]);
        if !b.is_finite() {
            continue;
        }
        if !c.is_finite() {
            failures += 1;
            continue;
        }
        diffs.push(c - b);
        cs.push(c);
        bs.push(b);
    }
    let n = diffs.len();
    let dropped = n_max - n - failures;
    let d = mean(&diffs);
    let se = sample_std(&diffs).map(|s| s / (n as f64).sqrt());
    let threshold = match se {
        Some(se) => opts.delta_min.max(opts.se_multiplier * se),
        None => opts.delta_min,
    };
    let adopt = failures == 0 && d.is_some_and(|d| d > threshold);
    let clearly_worse = failures > 0 || d.is_some_and(|d| d < -threshold);
    let confidence = match n {
        0 => Confidence::Undetermined,
        1 => Confidence::Weak,
        _ => Confidence::Clear,
    };

    let label = opts.metric.label();
    let cand_cap = cap(candidate);
    let mut t = vec![];
    match d {
        None => t.push(format!(
            "There is no seed with a finite final {label} in both {candidate} and {baseline}, so I cannot compare them; I keep {baseline}."
        )),
        Some(dv) => {
            t.push(format!(
                "{}, {candidate} ended at a mean {label} of {} against {} for {baseline}, a difference of {}.",
                if n == 1 {
                    "On a single seed".to_string()
                } else {
                    format!("Over {} paired by seed", seeds_phrase(n))
                },
                fmt_num(mean(&cs).unwrap_or(f64::NAN)),
                fmt_num(mean(&bs).unwrap_or(f64::NAN)),
                signed(dv)
            ));
            match se {
                Some(se) => t.push(format!(
                    "The standard error of that difference is {}, so to adopt {candidate} it had to beat {baseline} by more than {} (the larger of δ_min = {} and {}×SE).",
                    fmt_num(se),
                    fmt_num(threshold),
                    fmt_num(opts.delta_min),
                    fmt_num(opts.se_multiplier)
                )),
                None => t.push(format!(
                    "With a single seed there is no standard error, so only δ_min = {} stands between noise and a real gain; this comparison is weak, and more seeds would settle it.",
                    fmt_num(opts.delta_min)
                )),
            }
        }
    }
    if failures > 0 {
        t.push(format!(
            "{cand_cap} diverged (non-finite final value) on {} where {baseline} did not, so I do not adopt it.",
            seeds_phrase(failures)
        ));
    } else if let Some(dv) = d {
        t.push(if adopt {
            format!("The gain clears that bar, so I adopt {candidate}.")
        } else if dv > 0.0 {
            format!(
                "The gain does not clear that bar, so I keep {baseline}: it is within the noise."
            )
        } else if clearly_worse {
            format!("{cand_cap} is clearly worse, so I keep {baseline}.")
        } else {
            format!("{cand_cap} is no better, so I keep {baseline}.")
        });
    }
    if dropped > 0 {
        t.push(format!(
            "({} could not be paired and {} left out.)",
            seeds_phrase(dropped),
            if dropped == 1 { "was" } else { "were" }
        ));
    }

    PairedComparison {
        candidate: candidate.to_string(),
        baseline: baseline.to_string(),
        n_pairs: n,
        dropped_pairs: dropped,
        candidate_failures: failures,
        candidate_mean: mean(&cs),
        baseline_mean: mean(&bs),
        mean_difference: d,
        standard_error: se,
        threshold,
        adopt,
        clearly_worse,
        confidence,
        thoughts: t.join(" "),
    }
}

/// The speed comparison with its numbers and Thoughts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SpeedComparison {
    /// The baseline's final mean.
    pub target: Option<f64>,
    /// First epoch where the baseline's mean curve reaches the target.
    pub baseline_epochs: Option<f64>,
    /// First epoch where the candidate's mean curve reaches it.
    pub candidate_epochs: Option<f64>,
    /// 1 − candidate_epochs / baseline_epochs.
    pub saved_fraction: Option<f64>,
    pub wins: bool,
    pub thoughts: String,
}

fn first_reaching(c: &SeedCurves, target: f64) -> Option<f64> {
    let m = c.strict_mean();
    (0..c.len())
        .find(|&i| c.x[i].is_finite() && m[i].is_finite() && m[i] >= target)
        .map(|i| c.x[i])
}

/// Whether the candidate reaches the baseline's final mean in clearly
/// fewer epochs (see the module docs). x is the epoch count.
pub fn speed_comparison(
    candidate: &str,
    candidate_curves: &SeedCurves,
    baseline: &str,
    baseline_curves: &SeedCurves,
    opts: &CompareOptions,
) -> SpeedComparison {
    let label = opts.metric.label();
    let (cand_cap, base_cap) = (cap(candidate), cap(baseline));
    let target = baseline_curves
        .strict_mean()
        .last()
        .copied()
        .filter(|v| v.is_finite());
    let mut s = SpeedComparison {
        target,
        baseline_epochs: None,
        candidate_epochs: None,
        saved_fraction: None,
        wins: false,
        thoughts: String::new(),
    };
    let Some(target) = target else {
        s.thoughts = format!(
            "{base_cap} has no finite final mean {label} (no data, or a seed diverged), so there is no figure to race to."
        );
        return s;
    };
    s.baseline_epochs = first_reaching(baseline_curves, target);
    s.candidate_epochs = first_reaching(candidate_curves, target);
    match (s.baseline_epochs, s.candidate_epochs) {
        (Some(eb), Some(ec)) if eb > 0.0 => {
            let saved = 1.0 - ec / eb;
            s.saved_fraction = Some(saved);
            s.wins = ec <= (1.0 - opts.speed_margin) * eb + 1e-9;
            s.thoughts = format!(
                "{base_cap} first reached its final mean {label} of {} at epoch {}; {candidate} reached it at epoch {} ({} of the epochs). {}",
                fmt_num(target),
                fmt_num(eb),
                fmt_num(ec),
                pct(1.0 - saved),
                if s.wins {
                    format!("That is at least {} fewer, so {candidate} wins on speed.", pct(opts.speed_margin))
                } else {
                    format!("That is not {} fewer, so no clear win on speed.", pct(opts.speed_margin))
                }
            );
        }
        (_, None) => {
            s.thoughts = format!(
                "{cand_cap} never reached {baseline}'s final mean {label} of {}, so it does not win on speed.",
                fmt_num(target)
            );
        }
        _ => {
            s.thoughts = format!(
                "{base_cap} reached its final figure at epoch 0, so a speed-up cannot be measured."
            );
        }
    }
    s
}

/// A full comparison of two training runs (per-seed curves, paired by
/// seed index): the final metric, the speed, and whether the candidate
/// helps.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunComparison {
    pub final_metric: PairedComparison,
    pub speed: SpeedComparison,
    /// Adopted on the final metric, or wins on speed and not clearly worse.
    pub helps: bool,
    pub confidence: Confidence,
    pub thoughts: String,
}

/// Compares two runs: the final values are each seed's value at the last
/// x of its curves.
pub fn compare_runs(
    candidate: &str,
    candidate_curves: &SeedCurves,
    baseline: &str,
    baseline_curves: &SeedCurves,
    opts: &CompareOptions,
) -> RunComparison {
    let finals = |c: &SeedCurves| -> Vec<f64> {
        match c.len() {
            0 => vec![f64::NAN; c.n_seeds()],
            n => (0..c.n_seeds()).map(|s| c.value(s, n - 1)).collect(),
        }
    };
    let final_metric = paired_comparison(
        candidate,
        &finals(candidate_curves),
        baseline,
        &finals(baseline_curves),
        opts,
    );
    let speed = speed_comparison(candidate, candidate_curves, baseline, baseline_curves, opts);
    let by_speed = speed.wins && !final_metric.clearly_worse;
    let helps = final_metric.adopt || by_speed;
    let verdict = if final_metric.adopt {
        format!("Verdict: {candidate} helps.")
    } else if by_speed {
        format!("Verdict: {candidate} helps by training faster to the same figure, though not by ending higher.")
    } else if speed.wins {
        format!(
            "Verdict: {candidate} is faster early on but ends clearly worse, so I keep {baseline}."
        )
    } else {
        format!("Verdict: {candidate} does not help enough to adopt, so I keep {baseline}.")
    };
    let thoughts = format!("{} {} {verdict}", final_metric.thoughts, speed.thoughts);
    RunComparison {
        confidence: final_metric.confidence,
        final_metric,
        speed,
        helps,
        thoughts,
    }
}

fn signed(v: f64) -> String {
    if v > 0.0 {
        format!("+{}", fmt_num(v))
    } else {
        fmt_num(v)
    }
}

fn pct(f: f64) -> String {
    format!("{}%", fmt_num(100.0 * f))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(delta_min: f64) -> CompareOptions {
        CompareOptions {
            delta_min,
            metric: MetricKind::Accuracy,
            ..Default::default()
        }
    }

    #[test]
    fn adopts_only_above_twice_the_standard_error() {
        // Differences 0.02, 0.03, 0.04: mean 0.03, sd 0.01, SE 0.01/√3 =
        // 0.00577, 2·SE = 0.01155 < 0.03: adopted.
        let base = [0.80, 0.81, 0.82];
        let cand = [0.82, 0.84, 0.86];
        let c = paired_comparison("momentum", &cand, "no momentum", &base, &opts(0.002));
        assert!((c.mean_difference.unwrap() - 0.03).abs() < 1e-12);
        assert!((c.standard_error.unwrap() - 0.01 / 3f64.sqrt()).abs() < 1e-12);
        assert!(c.adopt && !c.clearly_worse);
        assert_eq!(c.confidence, Confidence::Clear);
        assert!(c.thoughts.contains("I adopt momentum"), "{}", c.thoughts);

        // Differences 0.001, 0.011, 0.021: mean 0.011, sd 0.01, 2·SE =
        // 0.01155 > 0.011: refused, though every seed improved.
        let cand = [0.801, 0.821, 0.841];
        let c = paired_comparison("momentum", &cand, "no momentum", &base, &opts(0.002));
        assert!(!c.adopt && !c.clearly_worse);
        assert!((c.threshold - 2.0 * 0.01 / 3f64.sqrt()).abs() < 1e-9);
        assert!(c.thoughts.contains("within the noise"), "{}", c.thoughts);
    }

    #[test]
    fn delta_min_is_a_floor_and_the_boundary_is_strict() {
        // Identical differences: SE = 0, threshold = δ_min.
        // (Dyadic numbers, so the arithmetic is exact.)
        let base = [0.5, 0.75];
        let c = paired_comparison("a", &[0.5625, 0.8125], "b", &base, &opts(0.0625));
        assert_eq!(c.standard_error, Some(0.0));
        assert_eq!(c.threshold, 0.0625);
        assert_eq!(c.mean_difference, Some(0.0625));
        assert!(!c.adopt, "equal to the threshold is not more than it");
        let c = paired_comparison("a", &[0.5626, 0.8126], "b", &base, &opts(0.0625));
        assert!(c.adopt);
    }

    #[test]
    fn one_seed_uses_delta_min_only_and_says_so() {
        let c = paired_comparison("decay", &[0.9], "no decay", &[0.85], &opts(0.01));
        assert_eq!(c.standard_error, None);
        assert_eq!(c.threshold, 0.01);
        assert!(c.adopt);
        assert_eq!(c.confidence, Confidence::Weak);
        assert!(c.thoughts.contains("single seed"), "{}", c.thoughts);
    }

    #[test]
    fn worse_failed_empty_and_unpaired_candidates() {
        let c = paired_comparison("adam", &[0.7, 0.71], "sgd", &[0.8, 0.8], &opts(0.002));
        assert!(!c.adopt && c.clearly_worse);
        assert!(c.thoughts.contains("clearly worse"));
        let c = paired_comparison("adam", &[0.99, f64::NAN], "sgd", &[0.8, 0.8], &opts(0.002));
        assert!(!c.adopt && c.candidate_failures == 1);
        assert!(c.thoughts.contains("diverged"), "{}", c.thoughts);
        let c = paired_comparison("adam", &[], "sgd", &[], &opts(0.002));
        assert_eq!(c.confidence, Confidence::Undetermined);
        assert!(!c.adopt);
        let c = paired_comparison(
            "adam",
            &[0.9, 0.9, 0.9],
            "sgd",
            &[0.8, f64::NAN],
            &opts(0.002),
        );
        assert_eq!((c.n_pairs, c.dropped_pairs), (1, 2));
        assert!(c.thoughts.contains("could not be paired"), "{}", c.thoughts);
        serde_json::from_str::<PairedComparison>(&serde_json::to_string(&c).unwrap()).unwrap();
    }

    fn curves(x: &[f64], rows: &[&[f64]]) -> SeedCurves {
        SeedCurves::new(x.to_vec(), rows.iter().map(|r| r.to_vec()).collect())
    }

    #[test]
    fn wins_on_speed_with_at_least_20_percent_fewer_epochs() {
        let x: Vec<f64> = (1..=10).map(|e| e as f64).collect();
        // (Dyadic numbers, so the arithmetic is exact.) Baseline reaches its
        // final 0.625 at epoch 10.
        let base_row: Vec<f64> = (1..=10).map(|e| 0.0625 * e as f64).collect();
        let base = curves(&x, &[&base_row, &base_row]);
        // Candidate reaches 0.625 at epoch 8 (20% fewer): wins.
        let fast: Vec<f64> = (1..=10).map(|e| (0.078125 * e as f64).min(0.625)).collect();
        let cand = curves(&x, &[&fast, &fast]);
        let s = speed_comparison("cyclical", &cand, "decay", &base, &opts(0.002));
        assert_eq!(s.baseline_epochs, Some(10.0));
        assert_eq!(s.candidate_epochs, Some(8.0));
        assert!(s.wins, "{}", s.thoughts);
        // Epoch 9 (10% fewer) is not clearly faster.
        let slow: Vec<f64> = (1..=10)
            .map(|e| (0.0703125 * e as f64).min(0.625))
            .collect();
        let cand = curves(&x, &[&slow, &slow]);
        let s = speed_comparison("cyclical", &cand, "decay", &base, &opts(0.002));
        assert_eq!(s.candidate_epochs, Some(9.0));
        assert!(!s.wins);

        // The rule holds on the mean curve: one fast and one slow seed
        // whose mean reaches 0.625 only at epoch 9.
        let cand = curves(&x, &[&fast, &slow]);
        let s = speed_comparison("cyclical", &cand, "decay", &base, &opts(0.002));
        assert_eq!(s.candidate_epochs, Some(9.0));
        assert!(!s.wins);

        // Same final figure and faster: helps, by speed.
        let cand = curves(&x, &[&fast, &fast]);
        let r = compare_runs("cyclical", &cand, "decay", &base, &opts(0.002));
        assert!(!r.final_metric.adopt && r.speed.wins && r.helps);
        assert!(r.thoughts.contains("training faster"), "{}", r.thoughts);
    }

    #[test]
    fn fast_but_clearly_worse_does_not_help() {
        let x: Vec<f64> = (1..=10).map(|e| e as f64).collect();
        let base_row: Vec<f64> = (1..=10).map(|e| 0.06 * e as f64).collect();
        let base = curves(&x, &[&base_row, &base_row]);
        // Reaches 0.6 by epoch 4, then collapses to 0.3 at the end.
        let c: Vec<f64> = [0.2, 0.4, 0.55, 0.65, 0.6, 0.5, 0.4, 0.35, 0.3, 0.3].to_vec();
        let r = compare_runs(
            "cyclical",
            &curves(&x, &[&c, &c]),
            "decay",
            &base,
            &opts(0.002),
        );
        assert!(r.speed.wins && r.final_metric.clearly_worse && !r.helps);
        assert!(r.thoughts.contains("ends clearly worse"), "{}", r.thoughts);
    }

    #[test]
    fn speed_comparison_survives_degenerate_curves() {
        let empty = SeedCurves::default();
        let s = speed_comparison("a", &empty, "b", &empty, &opts(0.0));
        assert!(!s.wins && s.target.is_none());
        let x = [1.0, 2.0];
        let b = curves(&x, &[&[0.5, f64::NAN]]);
        let s = speed_comparison("a", &b, "b", &b, &opts(0.0));
        assert!(!s.wins && s.target.is_none());
        let b = curves(&[0.0], &[&[0.5]]);
        let s = speed_comparison("a", &b, "b", &b, &opts(0.0));
        assert!(!s.wins);
        let r = compare_runs("a", &empty, "b", &empty, &opts(0.0));
        assert!(!r.helps && r.confidence == Confidence::Undetermined);
        serde_json::from_str::<RunComparison>(&serde_json::to_string(&r).unwrap()).unwrap();
    }
}
