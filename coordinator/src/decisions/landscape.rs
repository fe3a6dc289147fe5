//! Steps 1 and 7: the shape of a line search θ(a) = θ0 + a·d.
//!
//! # The measures, precisely
//!
//! Per point, the metric and loss are averaged over the seeds that are
//! finite there; points where none is finite are skipped; points are taken
//! in increasing a. The tolerances that separate shape from noise are
//! `tol_metric = max(rel_tolerance × range of the mean metric over
//! 0 ≤ a ≤ 1, median between-seed sd of the metric)`, and likewise
//! `tol_loss` for the loss (the range over the whole line when fewer than
//! two points lie in [0, 1]; the far ends of a line can reach huge losses
//! that would otherwise hide everything in between).
//!
//! * **Monotone between 0 and 1**: over the points with 0 ≤ a ≤ 1, the loss
//!   never rises by more than `tol_loss` from one point to the next (and,
//!   separately, the metric never falls by more than `tol_metric`).
//! * **Barrier**: with L(0) and L(1) (interpolated linearly if a = 0 or 1
//!   is not a point), over 0 ≤ a ≤ 1 the largest rise of the loss above
//!   the straight line `(1−a)·L(0) + a·L(1)` ("above the chord") and above
//!   `max(L(0), L(1))` ("above the endpoints"), both at least 0. There is a
//!   barrier when the latter exceeds `tol_loss`.
//! * **Local minima of the loss**: interior points (a flat bottom counts
//!   once) whose prominence — the smaller, over both sides, of the highest
//!   loss met before reaching lower ground or the end of the line, minus
//!   the minimum's loss — exceeds `tol_loss`. The ends of the range are not
//!   minima: 0 means the loss keeps falling towards an end.
//! * **Cliff**: the largest one-step change of the metric between
//!   neighbouring points (signed, in the direction of increasing a). It is
//!   called a sharp cliff when it is over 30% of the metric's range, over
//!   3× the median step, and over 2× the noise between seeds (a step
//!   within the seeds' spread is not a cliff).
//! * **Roughness**: total variation of the mean metric / its range (1 for a
//!   monotone curve, up to 2 for a single peak, more for a meandering
//!   one), and the number of slope sign changes counting only steps larger
//!   than `tol_metric`.
//! * **Peak**: the a where the mean metric is highest (and where the loss
//!   is lowest).
//! * **a = 1 check** (final line search): the value at a = 1 must equal the
//!   trained model's own figure: |metric gap| ≤ `a1_metric_tolerance` and
//!   |loss gap| ≤ `a1_loss_rel_tolerance` × |trained loss| (+1e-9). With
//!   one trained figure per seed, each seed's line is checked against its
//!   own figure and the worst gap counts; otherwise the means are compared.

use serde::{Deserialize, Serialize};

use super::common::{finite_range, fmt_num, median, sample_std, seeds_phrase, MetricKind};

/// Which line search this is (for the wording, and the a = 1 check).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LineSearchKind {
    /// Step 1: θ0 + a·d along a random or short-training direction.
    Initial,
    /// Step 7: θ0 + a·(θ_final − θ0).
    Final,
}

/// A line search's measurements.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct LineSearchInput {
    pub a: Vec<f64>,
    /// `metric[seed][point]`.
    pub metric: Vec<Vec<f64>>,
    /// `loss[seed][point]`; may be empty.
    #[serde(default)]
    pub loss: Vec<Vec<f64>>,
}

/// The trained model's own heldout figures (for the a = 1 check).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct TrainedFigure {
    pub metric: Option<f64>,
    pub loss: Option<f64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LineSearchOptions {
    pub kind: LineSearchKind,
    /// Steps smaller than this fraction of the range are shape noise.
    pub rel_tolerance: f64,
    /// Allowed |metric(a=1) − trained metric|.
    pub a1_metric_tolerance: f64,
    /// Allowed |loss(a=1) − trained loss| / |trained loss|.
    pub a1_loss_rel_tolerance: f64,
    pub metric: MetricKind,
}

impl LineSearchOptions {
    pub fn new(kind: LineSearchKind, metric: MetricKind) -> Self {
        Self {
            kind,
            rel_tolerance: 0.01,
            a1_metric_tolerance: 0.005,
            a1_loss_rel_tolerance: 0.02,
            metric,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct LinePoint {
    pub a: f64,
    pub value: f64,
}

/// A step between neighbouring points.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct LineStep {
    pub from_a: f64,
    pub to_a: f64,
    /// value(to_a) − value(from_a).
    pub change: f64,
    /// Over 30% of the range and over 3× the median step.
    pub sharp: bool,
}

/// The a = 1 check against the trained model's own figure.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AtOneCheck {
    pub metric_line: Option<f64>,
    pub metric_trained: Option<f64>,
    /// Worst |line − trained| for the metric.
    pub metric_gap: Option<f64>,
    pub loss_line: Option<f64>,
    pub loss_trained: Option<f64>,
    /// Worst |line − trained| / |trained| for the loss.
    pub loss_rel_gap: Option<f64>,
    /// a = 1 is not a point of the line search; the value is interpolated.
    pub interpolated: bool,
    /// `None` when there was nothing to compare.
    pub agrees: Option<bool>,
}

/// The shape of a line search, with its Thoughts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LineSearchShape {
    pub kind: LineSearchKind,
    pub n_points: usize,
    pub n_seeds: usize,
    pub metric_peak: Option<LinePoint>,
    pub loss_min: Option<LinePoint>,
    pub loss_monotone_0_1: Option<bool>,
    pub metric_monotone_0_1: Option<bool>,
    pub barrier_above_chord: Option<f64>,
    pub barrier_above_endpoints: Option<f64>,
    /// Where the loss is highest above the chord.
    pub barrier_at: Option<f64>,
    pub has_barrier: bool,
    pub loss_local_minima: usize,
    pub loss_minima_at: Vec<f64>,
    pub cliff: Option<LineStep>,
    pub roughness: Option<f64>,
    pub slope_sign_changes: usize,
    pub metric_tolerance: f64,
    pub loss_tolerance: f64,
    pub at_one: Option<AtOneCheck>,
    pub thoughts: String,
}

/// Finite `(a, mean)` points, sorted by a, and the median between-seed sd.
fn mean_series(a: &[f64], rows: &[Vec<f64>]) -> (Vec<(f64, f64)>, f64) {
    let mut pts = vec![];
    let mut sds = vec![];
    for (i, &ai) in a.iter().enumerate() {
        if !ai.is_finite() {
            continue;
        }
        let col: Vec<f64> = rows
            .iter()
            .map(|r| r.get(i).copied().unwrap_or(f64::NAN))
            .filter(|v| v.is_finite())
            .collect();
        if col.is_empty() {
            continue;
        }
        pts.push((ai, col.iter().sum::<f64>() / col.len() as f64));
        if let Some(s) = sample_std(&col) {
            sds.push(s);
        }
    }
    pts.sort_by(|p, q| p.0.total_cmp(&q.0));
    (pts, median(&sds).unwrap_or(0.0))
}

/// Linear interpolation at `at` (exact if a point is there); the flag says
/// whether it was interpolated. `None` outside the covered range.
fn value_at(pts: &[(f64, f64)], at: f64) -> Option<(f64, bool)> {
    const EPS: f64 = 1e-9;
    if let Some(p) = pts.iter().find(|p| (p.0 - at).abs() <= EPS) {
        return Some((p.1, false));
    }
    pts.windows(2)
        .find(|w| w[0].0 < at && at < w[1].0)
        .map(|w| {
            let t = (at - w[0].0) / (w[1].0 - w[0].0);
            (w[0].1 + t * (w[1].1 - w[0].1), true)
        })
}

/// Indices of the interior minima of `v` whose prominence exceeds `tol`.
fn prominent_minima(v: &[f64], tol: f64) -> Vec<usize> {
    let n = v.len();
    let mut out = vec![];
    let mut i = 1;
    while i + 1 < n {
        if v[i] >= v[i - 1] {
            i += 1;
            continue;
        }
        let mut j = i;
        while j + 1 < n && v[j + 1] == v[i] {
            j += 1;
        }
        if j + 1 < n && v[j + 1] > v[i] {
            let left = v[..i]
                .iter()
                .rev()
                .take_while(|&&u| u >= v[i])
                .fold(v[i], |m, &u| m.max(u));
            let right = v[j + 1..]
                .iter()
                .take_while(|&&u| u >= v[i])
                .fold(v[i], |m, &u| m.max(u));
            if left.min(right) - v[i] > tol {
                out.push(i);
            }
        }
        i = j + 1;
    }
    out
}

fn argmax(pts: &[(f64, f64)]) -> Option<LinePoint> {
    pts.iter()
        .fold(None, |b: Option<(f64, f64)>, &p| match b {
            Some(q) if q.1 >= p.1 => b,
            _ => Some(p),
        })
        .map(|(a, value)| LinePoint { a, value })
}

/// Measures a line search's shape (see the module docs). `trained` holds
/// the trained model's own figures (one per seed, or one for the mean; may
/// be empty), for the a = 1 check.
pub fn line_search_shape(
    input: &LineSearchInput,
    trained: &[TrainedFigure],
    opts: &LineSearchOptions,
) -> LineSearchShape {
    let (m, m_sd) = mean_series(&input.a, &input.metric);
    let (l, l_sd) = mean_series(&input.a, &input.loss);
    let mv: Vec<f64> = m.iter().map(|p| p.1).collect();
    let lv: Vec<f64> = l.iter().map(|p| p.1).collect();
    let in01 = |a: f64| (-1e-9..=1.0 + 1e-9).contains(&a);
    let l01: Vec<(f64, f64)> = l.iter().copied().filter(|p| in01(p.0)).collect();
    let m01: Vec<(f64, f64)> = m.iter().copied().filter(|p| in01(p.0)).collect();
    let range01 = |pts01: &[(f64, f64)], all: &[f64]| {
        if pts01.len() >= 2 {
            finite_range(&pts01.iter().map(|p| p.1).collect::<Vec<_>>())
        } else {
            finite_range(all)
        }
    };
    let tol_m = (opts.rel_tolerance * range01(&m01, &mv)).max(m_sd);
    let tol_l = (opts.rel_tolerance * range01(&l01, &lv)).max(l_sd);

    let mut s = LineSearchShape {
        kind: opts.kind,
        n_points: input.a.len(),
        n_seeds: input.metric.len().max(input.loss.len()),
        metric_peak: argmax(&m),
        loss_min: argmax(&l.iter().map(|&(a, v)| (a, -v)).collect::<Vec<_>>()).map(|p| LinePoint {
            a: p.a,
            value: -p.value,
        }),
        loss_monotone_0_1: None,
        metric_monotone_0_1: None,
        barrier_above_chord: None,
        barrier_above_endpoints: None,
        barrier_at: None,
        has_barrier: false,
        loss_local_minima: 0,
        loss_minima_at: vec![],
        cliff: None,
        roughness: None,
        slope_sign_changes: 0,
        metric_tolerance: tol_m,
        loss_tolerance: tol_l,
        at_one: None,
        thoughts: String::new(),
    };

    // Monotone between 0 and 1, and the barrier.
    if l01.len() >= 2 {
        s.loss_monotone_0_1 = Some(l01.windows(2).all(|w| w[1].1 - w[0].1 <= tol_l));
    }
    if m01.len() >= 2 {
        s.metric_monotone_0_1 = Some(m01.windows(2).all(|w| w[1].1 - w[0].1 >= -tol_m));
    }
    if let (Some((l0, _)), Some((l1, _))) = (value_at(&l, 0.0), value_at(&l, 1.0)) {
        let mut chord: Option<(f64, f64)> = None;
        let mut ends = 0.0f64;
        for &(a, v) in &l01 {
            let above = v - ((1.0 - a) * l0 + a * l1);
            if chord.is_none_or(|c| above > c.1) {
                chord = Some((a, above));
            }
            ends = ends.max(v - l0.max(l1));
        }
        if let Some((a, c)) = chord {
            s.barrier_above_chord = Some(c.max(0.0));
            s.barrier_at = Some(a);
            s.barrier_above_endpoints = Some(ends);
            s.has_barrier = ends > tol_l;
        }
    }

    // Minima of the loss.
    let mins = prominent_minima(&lv, tol_l);
    s.loss_local_minima = mins.len();
    s.loss_minima_at = mins.iter().map(|&i| l[i].0).collect();

    // Cliff and roughness of the metric.
    let range = finite_range(&mv);
    let steps: Vec<LineStep> = m
        .windows(2)
        .map(|w| LineStep {
            from_a: w[0].0,
            to_a: w[1].0,
            change: w[1].1 - w[0].1,
            sharp: false,
        })
        .collect();
    let med_step = median(&steps.iter().map(|s| s.change.abs()).collect::<Vec<_>>()).unwrap_or(0.0);
    s.cliff = steps
        .iter()
        .copied()
        .fold(None, |b: Option<LineStep>, st| match b {
            Some(q) if q.change.abs() >= st.change.abs() => b,
            _ => Some(st),
        })
        .map(|mut c| {
            c.sharp = range > 0.0
                && c.change.abs() > 0.3 * range
                && c.change.abs() > 3.0 * med_step
                && c.change.abs() > 2.0 * m_sd;
            c
        });
    if range > 0.0 && !steps.is_empty() {
        s.roughness = Some(steps.iter().map(|s| s.change.abs()).sum::<f64>() / range);
    }
    let signs: Vec<bool> = steps
        .iter()
        .filter(|s| s.change.abs() > tol_m)
        .map(|s| s.change > 0.0)
        .collect();
    s.slope_sign_changes = signs.windows(2).filter(|w| w[0] != w[1]).count();

    // The a = 1 check.
    if !trained.is_empty() {
        s.at_one = Some(check_at_one(input, trained, &m, &l, opts));
    }

    s.thoughts = thoughts(&s, opts);
    s
}

fn check_at_one(
    input: &LineSearchInput,
    trained: &[TrainedFigure],
    m: &[(f64, f64)],
    l: &[(f64, f64)],
    opts: &LineSearchOptions,
) -> AtOneCheck {
    let per_seed = trained.len() > 1 && trained.len() == input.metric.len();
    let series = |rows: &[Vec<f64>], s: usize| -> Vec<(f64, f64)> {
        let mut p: Vec<(f64, f64)> = input
            .a
            .iter()
            .zip(rows.get(s).map(|r| r.as_slice()).unwrap_or(&[]))
            .filter(|(a, v)| a.is_finite() && v.is_finite())
            .map(|(&a, &v)| (a, v))
            .collect();
        p.sort_by(|x, y| x.0.total_cmp(&y.0));
        p
    };
    let mut interpolated = false;
    let mut metric_gap: Option<f64> = None;
    let mut loss_gap: Option<f64> = None;
    let mut missing = false;
    let mut compare =
        |line: Option<(f64, bool)>, want: Option<f64>, gap: &mut Option<f64>, rel: bool| {
            if let Some(w) = want {
                match line {
                    Some((v, interp)) => {
                        interpolated |= interp;
                        let g = if rel {
                            (v - w).abs() / w.abs().max(1e-12)
                        } else {
                            (v - w).abs()
                        };
                        *gap = Some(gap.map_or(g, |x: f64| x.max(g)));
                    }
                    None => missing = true,
                }
            }
        };
    if per_seed {
        for (s, t) in trained.iter().enumerate() {
            compare(
                value_at(&series(&input.metric, s), 1.0),
                t.metric,
                &mut metric_gap,
                false,
            );
            compare(
                value_at(&series(&input.loss, s), 1.0),
                t.loss,
                &mut loss_gap,
                true,
            );
        }
    }
    let mean_of = |f: fn(&TrainedFigure) -> Option<f64>| -> Option<f64> {
        let v: Vec<f64> = trained.iter().filter_map(f).collect();
        super::common::mean(&v)
    };
    let metric_trained = mean_of(|t| t.metric);
    let loss_trained = mean_of(|t| t.loss);
    let metric_line = value_at(m, 1.0);
    let loss_line = value_at(l, 1.0);
    if !per_seed {
        compare(metric_line, metric_trained, &mut metric_gap, false);
        compare(loss_line, loss_trained, &mut loss_gap, true);
    }
    let nothing = metric_gap.is_none() && loss_gap.is_none();
    let agrees = if nothing {
        None
    } else {
        Some(
            !missing
                && metric_gap.is_none_or(|g| g <= opts.a1_metric_tolerance)
                && loss_gap.is_none_or(|g| g <= opts.a1_loss_rel_tolerance + 1e-9),
        )
    };
    AtOneCheck {
        metric_line: metric_line.map(|v| v.0),
        metric_trained,
        metric_gap,
        loss_line: loss_line.map(|v| v.0),
        loss_trained,
        loss_rel_gap: loss_gap,
        interpolated,
        agrees,
    }
}

fn thoughts(s: &LineSearchShape, opts: &LineSearchOptions) -> String {
    let label = opts.metric.label();
    let mut t = vec![];
    let what = match s.kind {
        LineSearchKind::Initial => "Along the initial line θ0 + a·d",
        LineSearchKind::Final => {
            "Along the straight line from the initial weights (a = 0) to the trained ones (a = 1)"
        }
    };
    let Some(peak) = s.metric_peak else {
        return format!(
            "{what} there is no finite {label} to look at ({} points, {}), so I cannot describe the landscape.",
            s.n_points,
            seeds_phrase(s.n_seeds)
        );
    };
    t.push(format!(
        "{what} ({} points, {}), the {label} peaks at a = {} ({}).",
        s.n_points,
        seeds_phrase(s.n_seeds),
        fmt_num(peak.a),
        fmt_num(peak.value)
    ));
    let shape = match (s.roughness, s.slope_sign_changes) {
        (None, _) => "flat".to_string(),
        (Some(r), c) if r <= 1.2 && c == 0 => "smooth and monotone".to_string(),
        (Some(_), c) if c <= 1 => "smooth, with a single turn".to_string(),
        (Some(_), c) if c <= 3 => format!("meandering, with {c} changes of direction"),
        (Some(_), c) => format!("rough, with {c} changes of direction"),
    };
    t.push(match s.roughness {
        Some(r) => format!(
            "The landscape looks {shape}; its roughness (total variation over range, 1 for a monotone curve) is {}.",
            fmt_num(r)
        ),
        None => format!("The landscape looks {shape}."),
    });
    if let Some(c) = s.cliff {
        if c.sharp {
            t.push(format!(
                "There is a sharp cliff: the {label} changes by {} in one step between a = {} and {}{}.",
                fmt_num(c.change),
                fmt_num(c.from_a),
                fmt_num(c.to_a),
                if s.kind == LineSearchKind::Initial {
                    ", so a large learning rate may mean falling off it"
                } else {
                    ""
                }
            ));
        } else {
            t.push(format!(
                "Its largest one-step change is {} (between a = {} and {}), no sharp cliff.",
                fmt_num(c.change),
                fmt_num(c.from_a),
                fmt_num(c.to_a)
            ));
        }
    }
    if s.kind == LineSearchKind::Final {
        match s.loss_monotone_0_1 {
            Some(true) => t.push("The heldout loss falls monotonically from a = 0 to a = 1: training found its way straight down.".into()),
            Some(false) => t.push("The heldout loss does not fall monotonically between a = 0 and a = 1.".into()),
            None => {}
        }
        if s.has_barrier {
            t.push(format!(
                "There is a barrier: the loss rises {} above the endpoints (highest at a = {}), so training went around or over a ridge rather than straight down.",
                fmt_num(s.barrier_above_endpoints.unwrap_or(f64::NAN)),
                fmt_num(s.barrier_at.unwrap_or(f64::NAN))
            ));
        } else if let Some(c) = s.barrier_above_chord {
            t.push(format!(
                "No barrier between the endpoints (the loss rises at most {} above the straight line between them).",
                fmt_num(c)
            ));
        }
    }
    match s.loss_local_minima {
        0 if s.loss_min.is_some() => t.push(
            "The loss has no interior local minimum on this range (it keeps falling towards an end).".into(),
        ),
        0 => {}
        1 => t.push(format!(
            "The loss has a single local minimum along the line (a = {}).",
            fmt_num(s.loss_minima_at[0])
        )),
        k => t.push(format!(
            "The loss has {k} local minima along the line (a = {}): this is not a single bowl.",
            s.loss_minima_at.iter().map(|a| fmt_num(*a)).collect::<Vec<_>>().join(", ")
        )),
    }
    if let Some(c) = &s.at_one {
        let line = c.metric_line.or(c.loss_line);
        let own = c.metric_trained.or(c.loss_trained);
        match c.agrees {
            Some(true) => t.push(format!(
                "At a = 1 the line search gives {}, matching the trained model's own {}, as it should.",
                fmt_num(line.unwrap_or(f64::NAN)),
                fmt_num(own.unwrap_or(f64::NAN))
            )),
            Some(false) => t.push(format!(
                "Red flag: at a = 1 the line search gives {} but the trained model reported {}; they should be the same weights on the same data, so something differs (weights, data, or evaluation mode).",
                fmt_num(line.unwrap_or(f64::NAN)),
                fmt_num(own.unwrap_or(f64::NAN))
            )),
            None => t.push("I could not check a = 1 against the trained model's figure (a = 1 is not covered).".into()),
        }
    }
    t.join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grid(lo: f64, hi: f64, k: usize) -> Vec<f64> {
        (0..k)
            .map(|i| lo + (hi - lo) * i as f64 / (k - 1) as f64)
            .collect()
    }

    fn opts(kind: LineSearchKind) -> LineSearchOptions {
        LineSearchOptions::new(kind, MetricKind::Accuracy)
    }

    /// A final line search with a barrier: loss (1−a)·2 + a·0.5 plus a bump
    /// of height 1 centred at a = 0.5, then rising again beyond a = 1.
    fn barrier_line() -> LineSearchInput {
        let a = grid(-0.5, 1.5, 41);
        let loss: Vec<f64> = a
            .iter()
            .map(|&a| {
                let base = if a <= 1.0 {
                    2.0 - 1.5 * a
                } else {
                    0.5 + 2.0 * (a - 1.0)
                };
                let base = if a < 0.0 { 2.0 - 0.5 * a } else { base };
                base + (-(a - 0.5) * (a - 0.5) / 0.01).exp()
            })
            .collect();
        let metric: Vec<f64> = loss.iter().map(|l| 1.0 - l / 4.0).collect();
        LineSearchInput {
            a,
            metric: vec![metric],
            loss: vec![loss],
        }
    }

    #[test]
    fn final_line_search_with_a_barrier() {
        let s = line_search_shape(
            &barrier_line(),
            &[TrainedFigure {
                metric: Some(1.0 - 0.5 / 4.0),
                loss: Some(0.5),
            }],
            &opts(LineSearchKind::Final),
        );
        assert_eq!(s.loss_monotone_0_1, Some(false));
        assert!(s.has_barrier);
        // The bump (height 1) sits on the chord at a = 0.5 (1.25): the loss
        // there is 2.25, 1 above the chord and 0.25 above L(0) = 2.
        assert!((s.barrier_above_chord.unwrap() - 1.0).abs() < 1e-9);
        assert!((s.barrier_above_endpoints.unwrap() - 0.25).abs() < 1e-9);
        assert_eq!(s.barrier_at, Some(0.5));
        // Two minima: before the bump (a = 0.3, where the bump starts to
        // show) and at a = 1.
        assert_eq!(s.loss_local_minima, 2, "{:?}", s.loss_minima_at);
        assert!((s.loss_minima_at[1] - 1.0).abs() < 1e-9);
        assert_eq!(s.at_one.as_ref().unwrap().agrees, Some(true));
        assert!(s.thoughts.contains("barrier"), "{}", s.thoughts);
        assert!(s.thoughts.contains("2 local minima"), "{}", s.thoughts);
        assert!(s.thoughts.contains("matching"), "{}", s.thoughts);
        let back: LineSearchShape =
            serde_json::from_str(&serde_json::to_string(&s).unwrap()).unwrap();
        assert_eq!((back.thoughts, back.loss_local_minima), (s.thoughts, 2));
    }

    #[test]
    fn monotone_bowl_has_no_barrier_and_one_minimum() {
        let a = grid(-0.5, 1.5, 21);
        let loss: Vec<f64> = a.iter().map(|a| (a - 1.0) * (a - 1.0) + 0.1).collect();
        let metric: Vec<f64> = loss.iter().map(|l| 1.0 - l / 3.0).collect();
        let input = LineSearchInput {
            a,
            metric: vec![metric.clone(), metric],
            loss: vec![loss.clone(), loss],
        };
        let s = line_search_shape(&input, &[], &opts(LineSearchKind::Final));
        assert_eq!(s.loss_monotone_0_1, Some(true));
        assert_eq!(s.metric_monotone_0_1, Some(true));
        assert!(!s.has_barrier);
        assert_eq!(s.barrier_above_endpoints, Some(0.0));
        assert_eq!(s.loss_local_minima, 1);
        assert!((s.metric_peak.unwrap().a - 1.0).abs() < 1e-9);
        assert!(s.at_one.is_none());
        assert!(s.thoughts.contains("falls monotonically"), "{}", s.thoughts);
    }

    #[test]
    fn a_equal_one_disagreeing_with_the_trained_model() {
        let input = barrier_line();
        let t = [TrainedFigure {
            metric: Some(0.95),
            loss: None,
        }];
        let s = line_search_shape(&input, &t, &opts(LineSearchKind::Final));
        let c = s.at_one.as_ref().unwrap();
        assert_eq!(c.agrees, Some(false));
        assert!((c.metric_gap.unwrap() - (0.95 - 0.875)).abs() < 1e-9);
        assert!(s.thoughts.contains("Red flag"), "{}", s.thoughts);
        // Per-seed figures are checked seed by seed.
        let two = LineSearchInput {
            a: vec![0.0, 1.0],
            metric: vec![vec![0.1, 0.8], vec![0.1, 0.9]],
            loss: vec![],
        };
        let t = [
            TrainedFigure {
                metric: Some(0.8),
                loss: None,
            },
            TrainedFigure {
                metric: Some(0.9),
                loss: None,
            },
        ];
        let s = line_search_shape(&two, &t, &opts(LineSearchKind::Final));
        assert_eq!(s.at_one.as_ref().unwrap().agrees, Some(true));
        let t = [t[1], t[0]];
        let s = line_search_shape(&two, &t, &opts(LineSearchKind::Final));
        assert_eq!(s.at_one.as_ref().unwrap().agrees, Some(false));
        // a = 1 not covered: nothing to compare, no false alarm.
        let short = LineSearchInput {
            a: vec![-0.5, 0.0, 0.5],
            metric: vec![vec![0.1, 0.2, 0.3]],
            loss: vec![],
        };
        let s = line_search_shape(&short, &t[..1], &opts(LineSearchKind::Final));
        assert_eq!(s.at_one.as_ref().unwrap().agrees, None);
        assert!(s.thoughts.contains("not covered"), "{}", s.thoughts);
        let s = line_search_shape(
            &short,
            &[TrainedFigure::default()],
            &opts(LineSearchKind::Final),
        );
        assert_eq!(s.at_one.as_ref().unwrap().agrees, None);
    }

    #[test]
    fn a_step_within_the_seeds_noise_is_no_cliff() {
        // An untrained network at chance all along the line: the means
        // wobble by a few thousandths, the seeds differ by a hundredth.
        let a = grid(-1.0, 1.0, 21);
        let seed = |off: f64| -> Vec<f64> {
            a.iter()
                .enumerate()
                .map(|(i, _)| 0.1 + off + if i == 12 { -0.006 } else { 0.0 })
                .collect()
        };
        let input = LineSearchInput {
            a: a.clone(),
            metric: vec![seed(0.012), seed(0.0), seed(-0.012)],
            loss: vec![],
        };
        let s = line_search_shape(&input, &[], &opts(LineSearchKind::Initial));
        let c = s.cliff.unwrap();
        assert!(c.change.abs() > 0.005);
        assert!(!c.sharp, "a drop of 0.006 against seeds 0.012 apart: {c:?}");
        assert!(s.thoughts.contains("no sharp cliff"), "{}", s.thoughts);
    }

    #[test]
    fn initial_line_search_with_a_ridge_and_a_cliff() {
        // Meandering slope up to a sharp ridge at a = 0.4, then a cliff.
        let a = grid(-1.0, 1.0, 41);
        let metric: Vec<f64> = a
            .iter()
            .map(|&a| {
                if a <= 0.4 + 1e-9 {
                    0.3 + 0.3 * (a + 1.0) / 1.4 + 0.05 * (12.0 * a).sin()
                } else {
                    0.12
                }
            })
            .collect();
        let input = LineSearchInput {
            a,
            metric: vec![metric],
            loss: vec![],
        };
        let s = line_search_shape(&input, &[], &opts(LineSearchKind::Initial));
        let c = s.cliff.unwrap();
        assert!(c.sharp, "{c:?}");
        assert!((c.from_a - 0.4).abs() < 1e-9 && (c.to_a - 0.45).abs() < 1e-9);
        assert!(c.change < -0.4);
        assert!(s.slope_sign_changes >= 2, "{}", s.slope_sign_changes);
        assert!(s.roughness.unwrap() > 1.5);
        assert!(s.thoughts.contains("sharp cliff"), "{}", s.thoughts);
        assert!(s.thoughts.contains("falling off"), "{}", s.thoughts);
        assert!(s.loss_monotone_0_1.is_none() && s.at_one.is_none());
    }

    #[test]
    fn degenerate_line_searches_do_not_panic() {
        let o = opts(LineSearchKind::Final);
        for input in [
            LineSearchInput::default(),
            LineSearchInput {
                a: vec![1.0],
                metric: vec![vec![0.5]],
                loss: vec![vec![1.0]],
            },
            LineSearchInput {
                a: vec![0.0, 1.0, f64::NAN],
                metric: vec![vec![f64::NAN, f64::INFINITY]],
                loss: vec![vec![1.0, f64::NAN, 2.0]],
            },
            LineSearchInput {
                a: vec![0.0, 0.5, 1.0],
                metric: vec![vec![0.5, 0.5, 0.5]],
                loss: vec![],
            },
        ] {
            let s = line_search_shape(&input, &[TrainedFigure::default()], &o);
            assert!(!s.thoughts.is_empty());
            serde_json::from_str::<LineSearchShape>(&serde_json::to_string(&s).unwrap()).unwrap();
        }
    }

    #[test]
    fn prominence_ignores_small_wiggles() {
        let v = [3.0, 2.0, 2.05, 1.9, 1.0, 2.0, 3.0];
        assert_eq!(prominent_minima(&v, 0.1), vec![4]);
        assert_eq!(prominent_minima(&v, 0.01), vec![1, 4]);
        assert_eq!(prominent_minima(&[1.0, 1.0, 1.0], 0.0), Vec::<usize>::new());
        assert_eq!(prominent_minima(&[2.0, 1.0, 1.0, 2.0], 0.5), vec![1]);
    }
}
