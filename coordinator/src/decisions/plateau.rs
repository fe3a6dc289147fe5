//! Step 4: M, the epoch where heldout performance plateaus or falls, from a
//! training run to convergence; it sets the power decay
//! `lr_e = lr · a^e` with `a = (2/3)^(1/M)`, and the cyclical schedule's
//! half-period.
//!
//! # The rule, precisely
//!
//! 1. The mean curve is the mean over seeds at each epoch; epochs from the
//!    first one where any seed is non-finite on are dropped (the run
//!    diverged there), as are those from a non-finite x on.
//! 2. It is smoothed with a centered moving average of `window` epochs
//!    (default 3; shrunk at the ends).
//! 3. `best` is the highest smoothed value. δ is `delta` if given, else
//!    `rel_delta` (1%) of the improvement `best − smoothed[0]`; either way
//!    at least the noise of the mean (median between-seed sd / √seeds).
//! 4. **M is the first epoch whose smoothed value is within δ of `best`.**
//!    A curve that rises and then falls thus gets an M at (or just
//!    before) its peak: the "falls" case of the blog is the same rule.
//! 5. Reported with it: the plateau value (the smoothed value at M), the
//!    best and its epoch, whether the curve falls after its best by more
//!    than δ (overfitting), and whether it was still rising at the end
//!    (the smoothed value rose by more than δ over the last quarter of the
//!    run: not converged, train longer; weak).
//! 6. `m` is M as a whole number of epochs (⌈M⌉, at least 1), and
//!    `decay_factor` = (2/3)^(1/m).

use serde::{Deserialize, Serialize};

use super::common::{
    fmt_num, median, moving_average, sample_std, seeds_phrase, Confidence, MetricKind, SeedCurves,
};

/// The constants of the rule.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PlateauOptions {
    /// δ in metric units (overrides `rel_delta`).
    pub delta: Option<f64>,
    /// δ as a fraction of the improvement over the run.
    pub rel_delta: f64,
    /// Moving-average window in epochs.
    pub window: usize,
    /// For the wording of the Thoughts.
    pub metric: MetricKind,
}

impl Default for PlateauOptions {
    fn default() -> Self {
        Self {
            delta: None,
            rel_delta: 0.01,
            window: 3,
            metric: MetricKind::Other,
        }
    }
}

/// M with its numbers and Thoughts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PlateauDecision {
    /// M in whole epochs (⌈M⌉, at least 1).
    pub m: Option<u32>,
    /// The x (epoch) at which the rule fired.
    pub m_epoch: Option<f64>,
    /// (2/3)^(1/m): the per-epoch factor of the power decay.
    pub decay_factor: Option<f64>,
    /// The smoothed mean at M.
    pub plateau_value: Option<f64>,
    pub best: Option<f64>,
    pub best_epoch: Option<f64>,
    pub delta: Option<f64>,
    pub falls_after_best: bool,
    pub still_rising_at_end: bool,
    /// Epochs used (before any divergence).
    pub usable_points: usize,
    pub confidence: Confidence,
    pub reasons: Vec<String>,
    pub thoughts: String,
}

/// Finds M on a training curve (x = epoch, per-seed heldout metric).
pub fn plateau_epoch(curve: &SeedCurves, opts: &PlateauOptions) -> PlateauDecision {
    let label = opts.metric.label();
    let mean = curve.strict_mean();
    let usable = (0..mean.len())
        .find(|&i| !mean[i].is_finite() || !curve.x[i].is_finite())
        .unwrap_or(mean.len());
    let mut d = PlateauDecision {
        m: None,
        m_epoch: None,
        decay_factor: None,
        plateau_value: None,
        best: None,
        best_epoch: None,
        delta: None,
        falls_after_best: false,
        still_rising_at_end: false,
        usable_points: usable,
        confidence: Confidence::Undetermined,
        reasons: vec![],
        thoughts: String::new(),
    };
    if usable == 0 {
        d.reasons
            .push("no epoch has a finite value for every seed".into());
        d.thoughts = format!(
            "The training run has no usable {label} (empty, or a seed diverged in the first epoch), so I cannot find where it plateaus; M stays undetermined."
        );
        return d;
    }
    let m = &mean[..usable];
    let x = &curve.x[..usable];
    let s = moving_average(m, opts.window);
    let b = s
        .iter()
        .enumerate()
        .fold(0, |bi, (i, &v)| if v > s[bi] { i } else { bi });
    let best = s[b];
    let sds: Vec<f64> = (0..usable)
        .filter_map(|i| sample_std(&curve.column(i)))
        .collect();
    let noise = median(&sds).unwrap_or(0.0) / (curve.n_seeds().max(1) as f64).sqrt();
    let rise = best - s[0];
    let delta = opts.delta.unwrap_or(opts.rel_delta * rise).max(noise);
    let i_m = (0..usable).find(|&i| s[i] >= best - delta).unwrap_or(b);
    let m_epoch = x[i_m];
    let m_whole = (m_epoch - 1e-9).ceil().max(1.0) as u32;
    let last = usable - 1;
    let q = (usable * 3) / 4;
    d.m = Some(m_whole);
    d.m_epoch = Some(m_epoch);
    d.decay_factor = Some((2.0f64 / 3.0).powf(1.0 / m_whole as f64));
    d.plateau_value = Some(s[i_m]);
    d.best = Some(best);
    d.best_epoch = Some(x[b]);
    d.delta = Some(delta);
    d.falls_after_best = s[last] < best - delta;
    d.still_rising_at_end = usable >= 4 && s[last] - s[q.min(last)] > delta && b == last;

    if usable < 3 {
        d.reasons.push(format!("only {usable} epoch(s) to look at"));
    }
    if rise <= delta {
        d.reasons
            .push(format!("the {label} never improved by more than δ"));
    }
    if d.still_rising_at_end {
        d.reasons
            .push("still rising at the end of the run: it has not converged".into());
    }
    d.confidence = if d.reasons.is_empty() {
        Confidence::Clear
    } else {
        Confidence::Weak
    };

    let mut t = vec![format!(
        "Training to convergence over {}, the smoothed mean {label} (moving average of {} epochs) reached its best, {}, at epoch {}.",
        seeds_phrase(curve.n_seeds()),
        opts.window.max(1),
        fmt_num(best),
        fmt_num(x[b])
    )];
    t.push(format!(
        "It first came within δ = {} of that at epoch {}, so M = {} (the power decay's factor is then (2/3)^(1/{}) = {}).",
        fmt_num(delta),
        fmt_num(m_epoch),
        m_whole,
        m_whole,
        fmt_num(d.decay_factor.unwrap_or(f64::NAN))
    ));
    if d.falls_after_best {
        t.push(format!(
            "After its best it fell to {} by the last epoch, so heldout performance falls off rather than just plateaus (overfitting, or a learning rate too large to settle).",
            fmt_num(s[last])
        ));
    }
    if usable < mean.len() {
        t.push(format!(
            "A seed diverged at epoch {}, so I only used the epochs before it.",
            fmt_num(curve.x[usable])
        ));
    }
    t.push(match d.confidence {
        Confidence::Clear => "The plateau is clear.".to_string(),
        _ => format!("Treat M as weak: {}.", d.reasons.join("; ")),
    });
    d.thoughts = t.join(" ");
    d
}

#[cfg(test)]
mod tests {
    use super::*;

    fn curves(x: Vec<f64>, rows: Vec<Vec<f64>>) -> SeedCurves {
        SeedCurves::new(x, rows)
    }

    /// Epochs 1..=30: 0.9 − 0.8·exp(−e/3), seeds offset ±0.002.
    fn saturating() -> SeedCurves {
        let x: Vec<f64> = (1..=30).map(|e| e as f64).collect();
        let rows = [-0.002, 0.0, 0.002]
            .iter()
            .map(|o| x.iter().map(|e| 0.9 - 0.8 * (-e / 3.0).exp() + o).collect())
            .collect();
        curves(x, rows)
    }

    #[test]
    fn plateau_of_a_saturating_curve() {
        let c = saturating();
        let d = plateau_epoch(
            &c,
            &PlateauOptions {
                delta: Some(0.01),
                metric: MetricKind::Accuracy,
                ..Default::default()
            },
        );
        // Smoothed best ≈ 0.9 at the end; 0.9 − 0.8·exp(−e/3) ≥ 0.89 − ε
        // first at e = 14 (0.8·exp(−14/3) = 0.0075; at e = 13, 0.0105, and
        // the 3-epoch average pulls a little lower).
        assert_eq!(d.m, Some(14), "{}", d.thoughts);
        assert_eq!(d.m_epoch, Some(14.0));
        assert!((d.decay_factor.unwrap() - (2.0f64 / 3.0).powf(1.0 / 14.0)).abs() < 1e-12);
        assert!(!d.falls_after_best);
        assert_eq!(d.confidence, Confidence::Clear, "{:?}", d.reasons);
        assert!(d.thoughts.contains("M = 14"), "{}", d.thoughts);
        serde_json::from_str::<PlateauDecision>(&serde_json::to_string(&d).unwrap()).unwrap();
    }

    #[test]
    fn plateau_at_a_known_epoch_then_a_fall() {
        // Rises linearly to 0.8 at epoch 10, flat at 0.8 until 15, then
        // falls (overfitting).
        let x: Vec<f64> = (1..=25).map(|e| e as f64).collect();
        let row: Vec<f64> = x
            .iter()
            .map(|&e| {
                if e <= 10.0 {
                    0.08 * e
                } else if e <= 15.0 {
                    0.8
                } else {
                    0.8 - 0.03 * (e - 15.0)
                }
            })
            .collect();
        let d = plateau_epoch(
            &curves(x, vec![row.clone(), row]),
            &PlateauOptions {
                delta: Some(0.005),
                ..Default::default()
            },
        );
        // The moving average is 0.8 from epoch 11 to 15 and 0.7733 at 10.
        assert_eq!(d.m, Some(11));
        assert!((d.best.unwrap() - 0.8).abs() < 1e-12);
        assert!(d.falls_after_best);
        assert!(d.thoughts.contains("falls off"), "{}", d.thoughts);
    }

    #[test]
    fn default_delta_is_relative_to_the_improvement() {
        let d = plateau_epoch(&saturating(), &PlateauOptions::default());
        // δ = 1% of the smoothed rise (0.408 → 0.9, so ≈ 0.0049 here): M
        // comes later than with δ = 0.01 (epoch 16 rather than 14).
        let delta = d.delta.unwrap();
        assert!(delta > 0.004 && delta < 0.006, "{delta}");
        assert_eq!(d.m, Some(16));
    }

    #[test]
    fn still_rising_is_weak_and_degenerate_curves_do_not_panic() {
        let x: Vec<f64> = (1..=10).map(|e| e as f64).collect();
        let row: Vec<f64> = x.iter().map(|e| 0.05 * e).collect();
        let d = plateau_epoch(&curves(x, vec![row]), &PlateauOptions::default());
        assert!(d.still_rising_at_end);
        assert_eq!(d.confidence, Confidence::Weak);
        assert!(d.thoughts.contains("not converged"), "{}", d.thoughts);

        let d = plateau_epoch(&SeedCurves::default(), &PlateauOptions::default());
        assert_eq!(d.m, None);
        assert_eq!(d.confidence, Confidence::Undetermined);
        let d = plateau_epoch(
            &curves(vec![0.0], vec![vec![0.3]]),
            &PlateauOptions::default(),
        );
        assert_eq!(d.m, Some(1));
        assert_eq!(d.confidence, Confidence::Weak);
        let d = plateau_epoch(
            &curves(vec![1.0, 2.0, 3.0], vec![vec![0.3, 0.5, f64::NAN]]),
            &PlateauOptions::default(),
        );
        assert_eq!(d.usable_points, 2);
        assert!(d.thoughts.contains("diverged"), "{}", d.thoughts);
        serde_json::from_str::<PlateauDecision>(&serde_json::to_string(&d).unwrap()).unwrap();
    }
}
