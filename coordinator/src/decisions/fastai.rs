//! What fastai's learning-rate finder would suggest on the same ramp, as a
//! second opinion on [`super::lr::choose_lr`].
//!
//! The three rules are ports of fastai's `steep`, `valley` and `minimum`
//! suggestion functions (fastai ≥ 2.4, `fastai/callback/schedule.py`):
//!
//! * **steep**: the LR at the start of the segment where the smoothed loss
//!   falls fastest per unit of ln(LR): `argmin_j (L[j+1] − L[j]) /
//!   (ln lr[j+1] − ln lr[j])`, suggestion `lr[j]`.
//! * **valley**: the longest decreasing subsequence of the smoothed loss
//!   (O(n²) dynamic programme `lds`); with `end` where it is longest and
//!   `start = end − lds[end]` (fastai's own off-by-one), the suggestion is
//!   the LR at index `start + ⌊(end − start)/3⌋ + ⌊(end − start)/6⌋`,
//!   i.e. about half way down the valley as the code computes it (it is
//!   often described as "2/3 of the way"; we follow the code so that the
//!   numbers match fastai's). Where fastai would index −1 (a valley
//!   starting at the first point of a very short curve) we take index 0.
//! * **minimum/10**: the LR at the smoothed loss's minimum, divided by 10.
//!
//! fastai records ~100 per-batch training losses, smooths them with a
//! debiased exponential moving average (β = 0.98), stops when the smoothed
//! loss exceeds 4× its best (`stop_div`) and drops the first `num_it/10`
//! and the last 5 points. Our ramps record one heldout loss per epoch
//! (tens of points), so [`fastai_suggestions`] scales these to the ramp's
//! length `n`: β = 0.98^(100/n) (the same smoothing per fraction of the
//! ramp), drop the first ⌊n/10⌋ and the last round(n/20) points (kept
//! whole when fewer than 2 points would remain), and apply `stop_div` as
//! fastai does. Losses must be finite (pass the epochs before divergence).

use serde::{Deserialize, Serialize};

/// fastai's three suggestions on one loss curve.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FastaiSuggestions {
    pub steep: Option<f64>,
    pub valley: Option<f64>,
    pub minimum_div_10: Option<f64>,
    /// Points left after stop_div and trimming.
    pub points_used: usize,
    /// The smoothing factor used.
    pub smoothing_beta: f64,
}

impl FastaiSuggestions {
    /// The suggestions that exist.
    pub fn values(&self) -> Vec<f64> {
        [self.steep, self.valley, self.minimum_div_10]
            .into_iter()
            .flatten()
            .collect()
    }
}

/// fastai's debiased exponential moving average:
/// `avg ← β·avg + (1−β)·loss`, smoothed = `avg / (1 − β^(k+1))`.
pub fn fastai_smooth(losses: &[f64], beta: f64) -> Vec<f64> {
    let mut avg = 0.0;
    let mut pow = 1.0;
    losses
        .iter()
        .map(|&l| {
            avg = beta * avg + (1.0 - beta) * l;
            pow *= beta;
            let debias = 1.0 - pow;
            if debias > 0.0 {
                avg / debias
            } else {
                l
            }
        })
        .collect()
}

/// fastai's `steep` rule: the index `j` of the steepest descent per ln(LR)
/// between points `j` and `j+1` (segments with a non-positive LR skipped).
pub fn fastai_steep_index(lrs: &[f64], losses: &[f64]) -> Option<usize> {
    let n = lrs.len().min(losses.len());
    let mut best: Option<(usize, f64)> = None;
    for j in 0..n.saturating_sub(1) {
        if lrs[j] <= 0.0 || lrs[j + 1] <= 0.0 {
            continue;
        }
        let dl = lrs[j + 1].ln() - lrs[j].ln();
        if dl == 0.0 {
            continue;
        }
        let g = (losses[j + 1] - losses[j]) / dl;
        if g.is_finite() && best.is_none_or(|(_, b)| g < b) {
            best = Some((j, g));
        }
    }
    best.map(|b| b.0)
}

/// fastai's `valley` rule (see the module docs); `None` for an empty curve.
pub fn fastai_valley_index(losses: &[f64]) -> Option<usize> {
    let n = losses.len();
    if n == 0 {
        return None;
    }
    let mut lds = vec![1usize; n];
    let (mut max_start, mut max_end): (isize, usize) = (0, 0);
    for i in 1..n {
        for j in 0..i {
            if losses[i] < losses[j] && lds[i] < lds[j] + 1 {
                lds[i] = lds[j] + 1;
            }
            if lds[max_end] < lds[i] {
                max_end = i;
                max_start = max_end as isize - lds[max_end] as isize;
            }
        }
    }
    let sections = (max_end as isize - max_start) as f64 / 3.0;
    let idx = max_start + sections as isize + (sections / 2.0) as isize;
    Some(idx.clamp(0, n as isize - 1) as usize)
}

/// fastai's `minimum` rule: the index of the lowest loss (first one).
pub fn fastai_minimum_index(losses: &[f64]) -> Option<usize> {
    losses
        .iter()
        .enumerate()
        .filter(|(_, l)| l.is_finite())
        .fold(None, |b: Option<(usize, f64)>, (i, &l)| match b {
            Some((_, bl)) if bl <= l => b,
            _ => Some((i, l)),
        })
        .map(|b| b.0)
}

/// The three suggestions on a ramp of `ramp_len` epochs whose first
/// `lrs.len()` epochs have finite `losses` (see the module docs for the
/// scaling). `None` when fewer than 2 finite points are given.
pub fn fastai_suggestions(
    lrs: &[f64],
    losses: &[f64],
    ramp_len: usize,
) -> Option<FastaiSuggestions> {
    let n = lrs.len().min(losses.len());
    let k = (0..n)
        .find(|&i| !lrs[i].is_finite() || !losses[i].is_finite())
        .unwrap_or(n);
    if k < 2 {
        return None;
    }
    let ramp_len = ramp_len.max(k);
    let beta = 0.98f64.powf(100.0 / ramp_len as f64);
    let sm = fastai_smooth(&losses[..k], beta);
    // stop_div: stop when the smoothed loss exceeds 4x its best.
    let mut best = sm[0];
    let mut stop = k;
    for (i, &v) in sm.iter().enumerate().skip(1) {
        if v > 4.0 * best {
            stop = i;
            break;
        }
        best = best.min(v);
    }
    let skip_start = ramp_len / 10;
    let skip_end = (ramp_len as f64 / 20.0).round() as usize;
    let (a, b) = if stop >= skip_start + skip_end + 2 {
        (skip_start, stop - skip_end)
    } else {
        (0, stop)
    };
    let (lrs, sm) = (&lrs[a..b], &sm[a..b]);
    Some(FastaiSuggestions {
        steep: fastai_steep_index(lrs, sm).map(|j| lrs[j]),
        valley: fastai_valley_index(sm).map(|j| lrs[j]),
        minimum_div_10: fastai_minimum_index(sm).map(|j| lrs[j] / 10.0),
        points_used: b - a,
        smoothing_beta: beta,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A textbook LR-finder loss: flat while the LR is tiny, a long
    /// descent, a minimum, then an explosion.
    fn textbook() -> (Vec<f64>, Vec<f64>) {
        let lrs: Vec<f64> = (0..30).map(|i| 1e-6 * 10f64.powf(i as f64 / 4.0)).collect();
        let losses = vec![
            2.30, 2.30, 2.31, 2.30, 2.30, 2.29, 2.28, 2.25, 2.20, 2.10, // flat
            1.95, 1.75, 1.50, 1.20, 1.00, 0.80, 0.65, 0.55, 0.48, 0.45, // valley
            0.44, 0.46, 0.55, 0.80, 1.40, 2.50, 5.00, 9.00, 20.0, 50.0, // explosion
        ];
        (lrs, losses)
    }

    #[test]
    fn valley_matches_fastai_code_on_a_textbook_curve() {
        let (_, losses) = textbook();
        // The longest strictly decreasing subsequence ends at the minimum
        // (i = 20): 2.31 (i=2) → 2.30 (3) → 2.29 (5) → ... → 0.44 (20),
        // 18 points. fastai's start is 20 − 18 = 2, sections = 18/3 = 6,
        // idx = 2 + 6 + 3 = 11 (checked against fastai's Python code).
        assert_eq!(fastai_valley_index(&losses), Some(11));
        // A strictly decreasing curve of 10 points: lds = 10 at i = 9,
        // start = −1, idx = −1 + 3 + 1 = 3 (as fastai computes it).
        let dec: Vec<f64> = (0..10).map(|i| 10.0 - i as f64).collect();
        assert_eq!(fastai_valley_index(&dec), Some(3));
        // Degenerate curves do not panic; where fastai's index is −1 (and
        // Python would wrap to the last point) we take the first.
        assert_eq!(fastai_valley_index(&[]), None);
        assert_eq!(fastai_valley_index(&[1.0]), Some(0));
        assert_eq!(fastai_valley_index(&[2.0, 1.0]), Some(0));
    }

    #[test]
    fn steep_and_minimum_on_a_textbook_curve() {
        let (lrs, losses) = textbook();
        // Steepest fall per ln(LR) is 1.50 → 1.20 (j = 12).
        assert_eq!(fastai_steep_index(&lrs, &losses), Some(12));
        assert_eq!(fastai_minimum_index(&losses), Some(20));
        assert_eq!(fastai_steep_index(&[0.0, 1.0], &[1.0, 0.0]), None);
        assert_eq!(fastai_minimum_index(&[f64::NAN]), None);
    }

    #[test]
    fn smoothing_is_debiased() {
        let s = fastai_smooth(&[2.0, 2.0, 2.0], 0.98);
        assert!(s.iter().all(|v| (v - 2.0).abs() < 1e-12));
        assert_eq!(fastai_smooth(&[1.0], 1.0), vec![1.0]);
    }

    #[test]
    fn suggestions_on_a_ramp_bracket_the_descent() {
        let (lrs, losses) = textbook();
        let s = fastai_suggestions(&lrs, &losses, lrs.len()).unwrap();
        // The smoothing lags, so each rule lands around the descent
        // (indices 9..20, lr 1.8e-4 .. 1e-1).
        for v in s.values() {
            assert!((1e-4..=1e-1).contains(&v), "{s:?}");
        }
        assert!(s.points_used >= 20 && s.points_used <= 28, "{s:?}");
        assert!(s.smoothing_beta < 0.98);
        assert!(fastai_suggestions(&lrs[..1], &losses[..1], 30).is_none());
        assert!(fastai_suggestions(&[], &[], 0).is_none());
        // Non-finite losses cut the curve.
        let mut l = losses.clone();
        l[2] = f64::NAN;
        let s = fastai_suggestions(&lrs, &l, 30).unwrap();
        assert_eq!(s.points_used, 2);
    }
}
