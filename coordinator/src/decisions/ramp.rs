//! The analysis shared by the LR ramp (step 2), the momentum ramp (step 3)
//! and the variants' own LR ramps (step 6): where the heldout metric rises
//! steadily, where it falls off the cliff, and where the rise is steepest.
//!
//! # The rule, precisely
//!
//! Input: the ramped value `x[i]` used during epoch `i` and each seed's
//! heldout metric measured at the end of epoch `i` (higher is better).
//!
//! 1. **Divergence.** A seed has fallen from the first epoch whose metric
//!    (or loss, when losses are given) is non-finite, or from its reported
//!    divergence epoch, whichever comes first; a seed shorter than `x` has
//!    fallen where it stops. Only the epochs before the first fall of any
//!    seed are *usable* (a mean over the survivors would be biased).
//! 2. **Mean and noise.** `m[i]` is the mean over seeds. The noise `σ` is
//!    the median over usable epochs of the between-seed sample standard
//!    deviation (robust to a few wild epochs). With one seed, σ comes from
//!    the curve's own roughness (see [`roughness_noise`]). σ is floored at
//!    `min_noise_rel` × the rise of `m` up to its highest point (highest
//!    mean − lowest mean at or before it), so identical seeds do not make
//!    every wiggle significant, and a crash far below (an R² of −10⁶
//!    after the cliff) does not inflate the floor.
//! 3. **Cliff.** The first epoch `c` whose mean falls more than
//!    `fall_k`·σ below the running best of the epochs before it; if none,
//!    the first fall of a seed (divergence) when there is one; otherwise
//!    there is no cliff in the ramp.
//! 4. **Steady region.** On the epochs before the cliff: `top` is the
//!    highest mean (at epoch `p`, first occurrence) and `floor` the lowest
//!    mean at or before `p`. The region starts at `lo`, the last epoch at
//!    or before `p` still within `region_k`·σ of the floor, and ends at
//!    `hi`, the first epoch after `lo` within `region_k`·σ of the top: in
//!    between, the metric is more than the noise above where it started and
//!    more than the noise below where it ends, i.e. it is rising. No region
//!    exists when `top − floor ≤ region_k`·σ.
//! 5. **Choice.** The rise from epoch `i−1` to `i` happened while training
//!    at `x[i]`, so it is credited to `x[i]`. On the mean smoothed with the
//!    kernel [1,2,1]/4 (only when at least 3 epochs precede the cliff), the
//!    slope of step `i` is the rise divided by the step's length on the
//!    axis (decades of x for [`Axis::Log`], units of x for
//!    [`Axis::Linear`]; if some step in the region has no log coordinate,
//!    per epoch instead). For a metric with a ceiling (accuracy, R²,
//!    Pearson r: 1) the rise is measured as the share of what was left to
//!    gain, the fall of `ln(1 − m)` ([`RiseScale::Shortfall`]; the gap is
//!    floored at [`SHORTFALL_FLOOR`]): a ramp starts from an untrained
//!    model, which gains the most accuracy in its first epochs at any
//!    workable rate, so in units of the metric the steepest rise sits at
//!    the start of the ramp whatever the landscape. Halving the error is the
//!    same progress at 50 % as at 90 %. A metric without a ceiling
//!    ([`MetricKind::Other`]) keeps its own units ([`RiseScale::Metric`]).
//!    The chosen value is `x[i]` for the steepest step
//!    with `lo < i ≤ hi`, except that when the region runs right up to the
//!    cliff (`hi = c − 1`) and has at least two steps, the last one is left
//!    out: a rise still under way when the cliff came is not a steady one,
//!    and its value is one step from falling off.
//! 6. **Confidence.** Undetermined without a region (fewer than 2 usable
//!    epochs, or no rise above the noise). Weak when the whole rise
//!    `top − floor` is below `weak_rise_ratio`·σ (the curve is mostly
//!    noise), or when the metric was still rising at the last epoch with
//!    no cliff (the ramp stopped too early to bound the region).
//!
//! [`roughness_noise`]: super::common::roughness_noise

use serde::{Deserialize, Serialize};

use super::common::{
    finite_range, fmt_num, median, roughness_noise, sample_std, seeds_phrase, smooth_121, Axis,
    Confidence, MetricKind,
};

/// A ramp's measurements: per epoch the ramped value, per seed and epoch
/// the heldout metric (and optionally the heldout loss and the epoch at
/// which the seed diverged).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RampInput {
    /// The ramped value (LR or momentum) used during each epoch.
    pub x: Vec<f64>,
    /// `metric[seed][epoch]`, measured at the end of the epoch.
    pub metric: Vec<Vec<f64>>,
    /// `loss[seed][epoch]` (heldout); may be empty.
    #[serde(default)]
    pub loss: Vec<Vec<f64>>,
    /// Per seed, the epoch index at which it diverged (that epoch and all
    /// after it count as fallen); may be empty or shorter than `metric`.
    #[serde(default)]
    pub diverged_at: Vec<Option<usize>>,
}

/// The constants of the rule (see the module docs).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RampOptions {
    pub axis: Axis,
    /// A fall of more than `fall_k`·σ below the running best is the cliff.
    pub fall_k: f64,
    /// Within `region_k`·σ of the floor / top bounds the steady region.
    pub region_k: f64,
    /// A total rise below `weak_rise_ratio`·σ makes the choice weak.
    pub weak_rise_ratio: f64,
    /// σ is at least this fraction of the mean's rise up to its maximum.
    pub min_noise_rel: f64,
    /// How a rise is measured when looking for the steepest (rule 5).
    pub scale: RiseScale,
    /// For the wording of the Thoughts.
    pub metric: MetricKind,
}

/// How rule 5 measures a rise.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RiseScale {
    /// In units of the metric.
    #[default]
    Metric,
    /// As the fall of `ln(1 − m)`: the share of the gap to a perfect 1
    /// that a step closed.
    Shortfall,
}

/// A metric within this of its ceiling counts as this far from it, so a
/// perfect epoch does not make its step infinitely steep.
pub const SHORTFALL_FLOOR: f64 = 1e-3;

impl RiseScale {
    /// The scale for a metric: [`RiseScale::Shortfall`] when it has a
    /// ceiling.
    pub fn for_metric(metric: MetricKind) -> Self {
        if metric.ceiling().is_some() {
            Self::Shortfall
        } else {
            Self::Metric
        }
    }

    fn apply(self, m: f64) -> f64 {
        match self {
            Self::Metric => m,
            Self::Shortfall => -(1.0 - m).max(SHORTFALL_FLOOR).ln(),
        }
    }
}

impl RampOptions {
    /// An exponential LR ramp (log axis).
    pub fn lr(metric: MetricKind) -> Self {
        Self {
            axis: Axis::Log,
            fall_k: 2.0,
            region_k: 1.0,
            weak_rise_ratio: 3.0,
            min_noise_rel: 0.01,
            scale: RiseScale::for_metric(metric),
            metric,
        }
    }

    /// A linear momentum ramp.
    pub fn momentum(metric: MetricKind) -> Self {
        Self {
            axis: Axis::Linear,
            ..Self::lr(metric)
        }
    }
}

impl Default for RampOptions {
    fn default() -> Self {
        Self::lr(MetricKind::Other)
    }
}

/// One epoch of the ramp: its index, ramped value and mean metric.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct RampPoint {
    pub index: usize,
    pub x: f64,
    pub value: f64,
}

/// What ended the steady part of the ramp.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CliffKind {
    /// The mean fell clearly below its running best.
    Fall,
    /// A seed's loss or metric became NaN/inf (or it was reported diverged).
    Divergence,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct RampCliff {
    pub index: usize,
    /// The ramped value during the epoch of the fall.
    pub x: f64,
    pub kind: CliffKind,
    /// How far below the running best the mean fell (for [`CliffKind::Fall`]).
    pub drop: Option<f64>,
}

/// Where the noise estimate came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NoiseSource {
    /// Median between-seed standard deviation.
    BetweenSeeds,
    /// One seed: the curve's own roughness.
    CurveRoughness,
    /// The floor (`min_noise_rel` × rise) was larger than the estimate.
    Floor,
    /// No usable epochs.
    None,
}

/// The steady region's bounds (epochs `lo` and `hi`).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct RampRegion {
    pub lo: RampPoint,
    pub hi: RampPoint,
}

/// The numbers the rule produced (see the module docs for each step).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RampAnalysis {
    pub axis: Axis,
    pub n_points: usize,
    pub n_seeds: usize,
    /// The last (largest) value the ramp tried.
    pub max_x: Option<f64>,
    /// Per seed, the first fallen epoch (`None`: it never fell).
    pub divergence: Vec<Option<usize>>,
    /// Epochs before the first fall of any seed.
    pub usable_points: usize,
    pub noise: Option<f64>,
    pub noise_source: NoiseSource,
    /// The first epoch.
    pub start: Option<RampPoint>,
    /// The lowest mean at or before the peak.
    pub floor: Option<RampPoint>,
    /// The highest mean before the cliff.
    pub peak: Option<RampPoint>,
    /// `peak − floor`.
    pub total_rise: Option<f64>,
    pub cliff: Option<RampCliff>,
    pub region: Option<RampRegion>,
    pub chosen: Option<RampPoint>,
    /// The chosen step's rise per unit of the axis (per decade on a log axis).
    pub steepest_slope: Option<f64>,
    /// The slope was measured per epoch (some x had no log coordinate).
    pub slope_per_epoch: bool,
    /// What the slope's rise is measured in.
    #[serde(default)]
    pub rise_scale: RiseScale,
    /// On the [`RiseScale::Shortfall`] scale: the share of the gap to 1
    /// that the chosen step closed (on the smoothed mean).
    #[serde(default)]
    pub chosen_closed: Option<f64>,
    /// The region ran right up to the cliff, and its last epoch was left
    /// out of the choice (rule 5).
    pub edge_excluded: bool,
    /// No cliff, and the top was first reached at the last usable epoch.
    pub still_rising_at_end: bool,
    pub confidence: Confidence,
    /// Why the result is weak or undetermined (empty when clear).
    pub reasons: Vec<String>,
}

/// Runs the rule of the module docs on a ramp.
pub fn analyze_ramp(input: &RampInput, opts: &RampOptions) -> RampAnalysis {
    let n = input.x.len();
    let n_seeds = input.metric.len();

    // 1. Divergence per seed.
    let divergence: Vec<Option<usize>> = input
        .metric
        .iter()
        .enumerate()
        .map(|(s, m)| {
            let mut d = n;
            if let Some(Some(e)) = input.diverged_at.get(s) {
                d = d.min(*e);
            }
            let loss = input.loss.get(s);
            if let Some(i) = (0..d).find(|&i| {
                let mv = m.get(i).copied().unwrap_or(f64::NAN);
                let lv = loss.and_then(|l| l.get(i)).copied().unwrap_or(0.0);
                !mv.is_finite() || !lv.is_finite()
            }) {
                d = i;
            }
            (d < n).then_some(d)
        })
        .collect();
    let first_div = divergence.iter().flatten().min().copied();
    let mut usable = if n_seeds == 0 {
        0
    } else {
        first_div.unwrap_or(n)
    };
    if let Some(i) = input.x.iter().position(|v| !v.is_finite()) {
        usable = usable.min(i);
    }

    let mut a = RampAnalysis {
        axis: opts.axis,
        n_points: n,
        n_seeds,
        max_x: input.x.iter().rev().copied().find(|v| v.is_finite()),
        divergence,
        usable_points: usable,
        noise: None,
        noise_source: NoiseSource::None,
        start: None,
        floor: None,
        peak: None,
        total_rise: None,
        cliff: None,
        region: None,
        chosen: None,
        steepest_slope: None,
        slope_per_epoch: false,
        rise_scale: opts.scale,
        chosen_closed: None,
        edge_excluded: false,
        still_rising_at_end: false,
        confidence: Confidence::Undetermined,
        reasons: vec![],
    };
    let divergence_cliff = || {
        (first_div == Some(usable) && usable < n && input.x[usable].is_finite()).then(|| {
            RampCliff {
                index: usable,
                x: input.x[usable],
                kind: CliffKind::Divergence,
                drop: None,
            }
        })
    };

    if n == 0 || n_seeds == 0 {
        a.reasons.push("the ramp has no measurements".into());
        return a;
    }
    if usable == 0 {
        a.cliff = divergence_cliff();
        a.reasons.push(if first_div == Some(0) {
            "every usable epoch is gone: a seed diverged in the very first epoch".into()
        } else {
            "the first epoch has no finite value".into()
        });
        return a;
    }

    // 2. Mean and noise over the usable epochs.
    let cols: Vec<Vec<f64>> = (0..usable)
        .map(|i| input.metric.iter().map(|m| m[i]).collect())
        .collect();
    let mean: Vec<f64> = cols
        .iter()
        .map(|c| c.iter().sum::<f64>() / c.len() as f64)
        .collect();
    let point = |i: usize| RampPoint {
        index: i,
        x: input.x[i],
        value: mean[i],
    };
    a.start = Some(point(0));
    let raw_noise = if n_seeds >= 2 {
        let sds: Vec<f64> = cols.iter().filter_map(|c| sample_std(c)).collect();
        median(&sds)
    } else {
        roughness_noise(&mean)
    };
    let top_i = mean
        .iter()
        .enumerate()
        .fold(0, |bi, (i, &v)| if v > mean[bi] { i } else { bi });
    let floor_noise = (opts.min_noise_rel * finite_range(&mean[..=top_i])).max(1e-12);
    let (noise, source) = match raw_noise {
        Some(r) if r >= floor_noise => (
            r,
            if n_seeds >= 2 {
                NoiseSource::BetweenSeeds
            } else {
                NoiseSource::CurveRoughness
            },
        ),
        _ => (floor_noise, NoiseSource::Floor),
    };
    a.noise = Some(noise);
    a.noise_source = source;

    // 3. Cliff.
    let mut best = mean[0];
    let mut fall = None;
    for (i, &m) in mean.iter().enumerate().skip(1) {
        if m < best - opts.fall_k * noise {
            fall = Some((i, best - m));
            break;
        }
        best = best.max(m);
    }
    a.cliff = match fall {
        Some((i, drop)) => Some(RampCliff {
            index: i,
            x: input.x[i],
            kind: CliffKind::Fall,
            drop: Some(drop),
        }),
        None => divergence_cliff(),
    };
    let c = fall.map(|f| f.0).unwrap_or(usable);

    // 4. Peak, floor, region.
    let pre = &mean[..c];
    let p = pre
        .iter()
        .enumerate()
        .fold(0, |bi, (i, &v)| if v > pre[bi] { i } else { bi });
    let f = pre[..=p]
        .iter()
        .enumerate()
        .fold(0, |bi, (i, &v)| if v < pre[bi] { i } else { bi });
    let (top, bottom) = (pre[p], pre[f]);
    a.peak = Some(point(p));
    a.floor = Some(point(f));
    a.total_rise = Some(top - bottom);
    if c < 2 {
        a.reasons
            .push("only one epoch precedes the cliff, so there is no rise to look at".into());
        return a;
    }
    let k = opts.region_k * noise;
    if top - bottom <= k {
        a.reasons.push(format!(
            "the {} never rose by more than the noise ({})",
            opts.metric.label(),
            fmt_num(noise)
        ));
        return a;
    }
    let lo = (f..=p).rev().find(|&i| pre[i] <= bottom + k).unwrap_or(f);
    let hi = (lo + 1..=p).find(|&i| pre[i] >= top - k).unwrap_or(p);
    a.region = Some(RampRegion {
        lo: point(lo),
        hi: point(hi),
    });

    // 5. Steepest step inside the region.
    let sm = if c >= 3 {
        smooth_121(pre)
    } else {
        pre.to_vec()
    };
    let coords: Option<Vec<f64>> = (lo..=hi).map(|i| opts.axis.coord(input.x[i])).collect();
    a.slope_per_epoch = coords.is_none();
    // A rise still under way at the last epoch before the cliff is not a
    // steady rise: that LR is one step from falling off.
    let last = if a.cliff.is_some() && hi + 1 == c && hi >= lo + 2 {
        a.edge_excluded = true;
        hi - 1
    } else {
        hi
    };
    let mut chosen = lo + 1;
    let mut steepest = f64::NEG_INFINITY;
    for i in lo + 1..=last {
        let du = match &coords {
            Some(u) => u[i - lo] - u[i - 1 - lo],
            None => 1.0,
        };
        if du <= 0.0 {
            continue;
        }
        let slope = (opts.scale.apply(sm[i]) - opts.scale.apply(sm[i - 1])) / du;
        if slope > steepest {
            steepest = slope;
            chosen = i;
        }
    }
    a.chosen = Some(point(chosen));
    a.steepest_slope = steepest.is_finite().then_some(steepest);
    if opts.scale == RiseScale::Shortfall && chosen >= 1 {
        let gap = |m: f64| (1.0 - m).max(SHORTFALL_FLOOR);
        a.chosen_closed = Some(1.0 - gap(sm[chosen]) / gap(sm[chosen - 1]));
    }
    a.still_rising_at_end = a.cliff.is_none() && hi + 1 == c && c == n;

    // 6. Confidence.
    a.confidence = Confidence::Clear;
    if top - bottom < opts.weak_rise_ratio * noise {
        a.reasons.push(format!(
            "the whole rise ({}) is less than {} times the noise ({}): the curve is mostly noise",
            fmt_num(top - bottom),
            fmt_num(opts.weak_rise_ratio),
            fmt_num(noise)
        ));
    }
    if a.still_rising_at_end {
        a.reasons.push(
            "the metric was still rising at the end of the ramp, so the ramp did not reach the cliff"
                .into(),
        );
    }
    if !a.reasons.is_empty() {
        a.confidence = Confidence::Weak;
    }
    a
}

/// The shared part of the LR and momentum Thoughts: what the ramp showed.
/// `name` is e.g. "learning rate", `short` e.g. "lr".
pub(crate) fn describe(
    a: &RampAnalysis,
    opts: &RampOptions,
    name: &str,
    short: &str,
) -> Vec<String> {
    let label = opts.metric.label();
    let mut t = vec![];
    let seeds = seeds_phrase(a.n_seeds);
    if a.n_points == 0 || a.n_seeds == 0 {
        t.push(format!(
            "The {name} ramp has no measurements, so I cannot choose a {name}."
        ));
        return t;
    }
    let (Some(start), Some(peak), Some(noise)) = (a.start, a.peak, a.noise) else {
        t.push(match a.cliff {
            Some(c) => format!(
                "The {name} ramp ({seeds}) has no usable epoch: a seed diverged (NaN/inf) in the very first epoch, at {short} {}, so I cannot choose a {name}; something is wrong before the {name} even matters.",
                fmt_num(c.x)
            ),
            None => format!(
                "The {name} ramp ({seeds}) has no usable epoch (its first values are not finite numbers), so I cannot choose a {name}."
            ),
        });
        return t;
    };
    let noise_words = match a.noise_source {
        NoiseSource::BetweenSeeds => format!("the spread between seeds is about {}", fmt_num(noise)),
        NoiseSource::CurveRoughness => format!(
            "with a single seed I estimated the noise from the curve's own wiggles ({}), which is less reliable than a spread between seeds",
            fmt_num(noise)
        ),
        _ => format!(
            "the seeds barely differ, so I took 1% of the curve's range ({}) as the noise",
            fmt_num(noise)
        ),
    };
    t.push(if peak.index == start.index {
        format!(
            "Over {seeds}, the {label} started at {} (at {short} {}) and never beat that; {noise_words}.",
            fmt_num(start.value),
            fmt_num(start.x),
        )
    } else {
        format!(
            "Over {seeds}, the {label} went from {} at {short} {} to a best of {} at {short} {}; {noise_words}.",
            fmt_num(start.value),
            fmt_num(start.x),
            fmt_num(peak.value),
            fmt_num(peak.x),
        )
    });
    match a.cliff {
        Some(RampCliff {
            kind: CliffKind::Fall,
            x,
            drop,
            ..
        }) => t.push(format!(
            "At {short} {} it fell off the cliff, {} below its best so far.",
            fmt_num(x),
            fmt_num(drop.unwrap_or(f64::NAN))
        )),
        Some(RampCliff {
            kind: CliffKind::Divergence,
            x,
            ..
        }) => t.push(format!(
            "At {short} {} training diverged (the loss became NaN or infinite), which is the cliff.",
            fmt_num(x)
        )),
        None => t.push(format!(
            "It never fell clearly, so the ramp did not reach the cliff (the largest {name} tried was {}).",
            fmt_num(a.max_x.unwrap_or(f64::NAN))
        )),
    }
    if let (Some(r), Some(c)) = (a.region, a.chosen) {
        let per = match (a.axis, a.slope_per_epoch) {
            (_, true) => "per epoch".to_string(),
            (Axis::Log, false) => format!("per decade of {name}"),
            (Axis::Linear, false) => format!("per unit of {name}"),
        };
        match (a.rise_scale, a.chosen_closed) {
            (RiseScale::Shortfall, Some(closed)) => t.push(format!(
                "It rose steadily (by more than the noise) between {short} {} and {}; I chose {short} {}, where the rise was steepest for what was left to gain: in its epoch it closed {:.0}% of the gap to a perfect 1 (smoothed curve). I measure a rise against that gap because an untrained model gains the most in its first epochs at any workable {name}, so the raw rise would favour the start of the ramp.",
                fmt_num(r.lo.x),
                fmt_num(r.hi.x),
                fmt_num(c.x),
                100.0 * closed,
            )),
            _ => t.push(format!(
                "It rose steadily (by more than the noise) between {short} {} and {}; I chose {short} {}, where the rise was steepest ({} {per}).",
                fmt_num(r.lo.x),
                fmt_num(r.hi.x),
                fmt_num(c.x),
                fmt_num(a.steepest_slope.unwrap_or(f64::NAN)),
            )),
        }
        if a.edge_excluded {
            t.push(format!(
                "I did not take {short} {}, the last one before the cliff: it was still rising when the cliff came, one step from falling off.",
                fmt_num(r.hi.x)
            ));
        }
    } else if let Some(reason) = a.reasons.first() {
        t.push(format!("I cannot choose a {name}: {reason}."));
    }
    t
}
