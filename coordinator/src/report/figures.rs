//! From a job's results to figures: the curves of one group (mean ± std
//! over seeds, heldout and training), on the axis each step is read
//! against, with the marks its decision calls for (chosen value, steady
//! region, cliff, M, the line search's peak…).
//!
//! Decisions are read from their JSON as `serde_json::Value`, field by
//! field: a missing or malformed field leaves its mark out, nothing fails.

use std::collections::BTreeMap;

use ridgeline_common::proto::v1 as pb;
use serde_json::Value;

use super::svg::{self, Mark, MarkShape, Plot, Scale, Series, Span, Stroke, VLine};
use crate::analysis::group_of;

/// What a figure's x axis shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum XAxis {
    /// Epochs (training runs).
    Epoch,
    /// The learning rate of each epoch (ramps), log scale.
    Lr,
    /// The momentum of each epoch (momentum ramp).
    Momentum,
    /// The position a along a line search.
    A,
}

impl XAxis {
    pub fn label(self) -> &'static str {
        match self {
            XAxis::Epoch => "epoch",
            XAxis::Lr => "learning rate (log scale)",
            XAxis::Momentum => "momentum μ",
            XAxis::A => "a (θ = θ0 + a·d)",
        }
    }

    pub fn scale(self) -> Scale {
        match self {
            XAxis::Lr => Scale::Log,
            _ => Scale::Linear,
        }
    }

    /// The x of a measurement on this axis.
    fn of(self, x: f64, lr: f64, momentum: f64) -> f64 {
        match self {
            XAxis::Epoch | XAxis::A => x,
            XAxis::Lr => lr,
            XAxis::Momentum => momentum,
        }
    }
}

/// One aggregate point with the LR and momentum it was measured at.
#[derive(Debug, Clone, Copy)]
pub struct Row {
    pub x: f64,
    pub lr: f64,
    pub momentum: f64,
    pub held_mean: f64,
    pub held_std: f64,
    pub train_mean: f64,
    pub train_std: f64,
    pub n: u32,
}

/// A group's aggregate rows and its curves (one per seed).
#[derive(Debug, Clone)]
pub struct GroupData<'a> {
    pub group: String,
    pub rows: Vec<Row>,
    pub curves: Vec<&'a pb::Curve>,
}

impl GroupData<'_> {
    /// The most seeds measured at any point.
    pub fn seeds(&self) -> u32 {
        self.rows.iter().map(|r| r.n).max().unwrap_or(0)
    }

    /// Whether there is anything finite to plot.
    pub fn has_data(&self) -> bool {
        self.rows
            .iter()
            .any(|r| r.held_mean.is_finite() || r.train_mean.is_finite())
    }
}

/// Orders f64 keys by their bits (x values are identical across seeds).
fn key(x: f64) -> u64 {
    x.to_bits()
}

/// The names of a job's groups, in the order of its aggregates (then any
/// group that only has curves).
pub fn group_names(r: &pb::JobResults) -> Vec<String> {
    let mut names: Vec<String> = r.aggregates.iter().map(|a| a.group.clone()).collect();
    for c in &r.curves {
        let g = group_of(&c.curve);
        if !names.contains(&g) {
            names.push(g);
        }
    }
    names
}

/// The rows of `group`: its aggregate, or (when the coordinator sent
/// none) means computed here from its curves. `None` when the job has no
/// such group.
pub fn group_data<'a>(r: &'a pb::JobResults, group: &str) -> Option<GroupData<'a>> {
    let curves: Vec<&pb::Curve> = r
        .curves
        .iter()
        .filter(|c| group_of(&c.curve) == group)
        .collect();
    // LR and momentum per x, from the first curve that measured it.
    let mut hyper: BTreeMap<u64, (f64, f64)> = BTreeMap::new();
    for c in &curves {
        for p in &c.points {
            hyper.entry(key(p.x)).or_insert((p.lr, p.momentum));
        }
    }
    let nan = f64::NAN;
    let at = |v: &[f64], i: usize| v.get(i).copied().unwrap_or(nan);
    if let Some(a) = r.aggregates.iter().find(|a| a.group == group) {
        let rows =
            a.x.iter()
                .enumerate()
                .map(|(i, &x)| {
                    let (lr, momentum) = hyper.get(&key(x)).copied().unwrap_or((nan, nan));
                    Row {
                        x,
                        lr,
                        momentum,
                        held_mean: at(&a.heldout_mean, i),
                        held_std: at(&a.heldout_std, i),
                        train_mean: at(&a.train_mean, i),
                        train_std: at(&a.train_std, i),
                        n: a.n.get(i).copied().unwrap_or(0),
                    }
                })
                .collect();
        return Some(GroupData {
            group: group.to_string(),
            rows,
            curves,
        });
    }
    if curves.is_empty() {
        return None;
    }
    let mut at_x: BTreeMap<u64, (f64, Vec<f64>, Vec<f64>)> = BTreeMap::new();
    for c in &curves {
        for p in &c.points {
            let e = at_x.entry(key(p.x)).or_insert((p.x, vec![], vec![]));
            if let Some(h) = &p.heldout {
                e.1.push(h.metric);
            }
            if let Some(t) = &p.train {
                e.2.push(t.metric);
            }
        }
    }
    let mut rows: Vec<Row> = at_x
        .into_iter()
        .map(|(k, (x, held, train))| {
            let (hm, hs) = crate::analysis::mean_std(&held);
            let (tm, ts) = crate::analysis::mean_std(&train);
            let (lr, momentum) = hyper.get(&k).copied().unwrap_or((nan, nan));
            Row {
                x,
                lr,
                momentum,
                held_mean: hm,
                held_std: hs,
                train_mean: tm,
                train_std: ts,
                n: held.len() as u32,
            }
        })
        .collect();
    rows.sort_by(|a, b| a.x.total_cmp(&b.x));
    Some(GroupData {
        group: group.to_string(),
        rows,
        curves,
    })
}

/// The metric's name for an axis: `accuracy`, `R²`, `Pearson r`.
pub fn metric_name(metric: &str) -> String {
    match metric.to_ascii_lowercase().as_str() {
        "accuracy" | "" | "default" => "accuracy".into(),
        "r2" => "R²".into(),
        "pearson" => "Pearson r".into(),
        other => other.to_string(),
    }
}

/// Adds a group's mean heldout line with its ±1 std band, the training
/// mean dashed and lighter, and a × where a seed diverged.
pub fn add_group(plot: &mut Plot, g: &GroupData, axis: XAxis, label: &str, color: &str) {
    let with = |what: &str| {
        if label.is_empty() {
            what.to_string()
        } else {
            format!("{label} · {what}")
        }
    };
    let markers = g.rows.len() <= 15;
    let held: Vec<(f64, f64)> = g
        .rows
        .iter()
        .map(|r| (axis.of(r.x, r.lr, r.momentum), r.held_mean))
        .collect();
    let band: Vec<(f64, f64, f64)> = g
        .rows
        .iter()
        .filter(|r| r.n >= 2)
        .map(|r| {
            let sd = if r.held_std.is_finite() {
                r.held_std
            } else {
                f64::NAN
            };
            (
                axis.of(r.x, r.lr, r.momentum),
                r.held_mean - sd,
                r.held_mean + sd,
            )
        })
        .collect();
    let mut h = Series::line(with("heldout"), color, held);
    h.band = band;
    h.markers = markers;
    plot.series.push(h);
    if g.rows.iter().any(|r| r.train_mean.is_finite()) {
        let train: Vec<(f64, f64)> = g
            .rows
            .iter()
            .map(|r| (axis.of(r.x, r.lr, r.momentum), r.train_mean))
            .collect();
        let mut t = Series::line(with("train"), color, train);
        t.stroke = Stroke::Dashed;
        t.opacity = 0.55;
        t.width = 1.4;
        plot.series.push(t);
    }
    for m in divergence_marks(g, axis) {
        plot.marks.push(m);
    }
}

/// A × at the last finite heldout value of every seed that diverged (its
/// run ended "diverged", or it measured a non-finite loss or metric).
pub fn divergence_marks(g: &GroupData, axis: XAxis) -> Vec<Mark> {
    let mut out = vec![];
    for c in &g.curves {
        let ended_diverged = c
            .end
            .as_ref()
            .is_some_and(|e| e.kind == pb::run_end::Kind::Diverged as i32);
        let bad = |m: &Option<pb::Metrics>| {
            m.as_ref()
                .is_some_and(|m| !m.loss.is_finite() || !m.metric.is_finite())
        };
        let first_bad = c
            .points
            .iter()
            .position(|p| bad(&p.heldout) || bad(&p.train));
        if !ended_diverged && first_bad.is_none() {
            continue;
        }
        let upto = first_bad.unwrap_or(c.points.len());
        let last = c.points[..upto].iter().rev().find_map(|p| {
            let y = p.heldout.as_ref()?.metric;
            let x = axis.of(p.x, p.lr, p.momentum);
            (y.is_finite() && x.is_finite()).then_some((x, y))
        });
        // Nothing finite before the divergence: mark it at the first bad
        // point's x, on the group's lowest mean.
        let at = last.or_else(|| {
            let p = c.points.get(upto)?;
            let x = axis.of(p.x, p.lr, p.momentum);
            let y = g
                .rows
                .iter()
                .map(|r| r.held_mean)
                .filter(|v| v.is_finite())
                .fold(f64::INFINITY, f64::min);
            (x.is_finite() && y.is_finite()).then_some((x, y))
        });
        if let Some((x, y)) = at {
            out.push(Mark {
                x,
                y,
                label: "seed diverged".into(),
                color: svg::DANGER.into(),
                shape: MarkShape::Cross,
            });
        }
    }
    out
}

/// A number inside a decision's JSON, by JSON pointer (`/region/lo`).
pub fn num(v: &Value, pointer: &str) -> Option<f64> {
    v.pointer(pointer)
        .and_then(Value::as_f64)
        .filter(|x| x.is_finite())
}

/// The JSON of a decision (`None` if it is not valid JSON).
pub fn decision_json(d: &pb::Decision) -> Option<Value> {
    serde_json::from_str(&d.json).ok()
}

fn vline(x: f64, label: String, color: &str, stroke: Stroke) -> VLine {
    VLine {
        x,
        label,
        color: color.into(),
        stroke,
    }
}

/// Marks of a ramp decision: the steady region, the chosen value (JSON
/// field `value`, shown as `symbol`) and the cliff (field `cliff`).
fn ramp_marks(plot: &mut Plot, d: &Value, value: &str, cliff: &str, symbol: &str) {
    if let (Some(lo), Some(hi)) = (num(d, "/region/lo"), num(d, "/region/hi")) {
        plot.spans.push(Span {
            lo,
            hi,
            label: format!(
                "steady region {}–{}",
                svg::fmt_value(lo),
                svg::fmt_value(hi)
            ),
            color: svg::STEADY.into(),
        });
    }
    if let Some(x) = num(d, &format!("/{value}")) {
        plot.vlines.push(vline(
            x,
            format!("chosen {symbol} = {}", svg::fmt_value(x)),
            svg::CHOSEN,
            Stroke::Solid,
        ));
    }
    if let Some(c) = num(d, &format!("/{cliff}")) {
        plot.vlines.push(vline(
            c,
            format!("cliff at {symbol} = {}", svg::fmt_value(c)),
            svg::DANGER,
            Stroke::Dashed,
        ));
    }
}

/// Marks of an LR decision (`LrDecision`): the steady region, the chosen
/// LR, the cliff, and fastai's suggestions.
pub fn lr_marks(plot: &mut Plot, d: &Value) {
    ramp_marks(plot, d, "lr", "cliff_lr", "lr");
    for (field, name, color) in [
        ("steep", "fastai steep", "#9467bd"),
        ("valley", "fastai valley", "#8c564b"),
        ("minimum_div_10", "fastai min/10", "#e377c2"),
    ] {
        if let Some(x) = num(d, &format!("/fastai/{field}")) {
            plot.vlines.push(vline(
                x,
                format!("{name} = {}", svg::fmt_value(x)),
                color,
                Stroke::Dotted,
            ));
        }
    }
}

/// Marks of a momentum decision (`MomentumDecision`).
pub fn momentum_marks(plot: &mut Plot, d: &Value) {
    ramp_marks(plot, d, "momentum", "cliff_momentum", "μ");
}

/// The mark of a plateau decision (`PlateauDecision`): M.
pub fn plateau_marks(plot: &mut Plot, d: &Value) {
    let m = num(d, "/m");
    let at = num(d, "/m_epoch").or(m);
    if let Some(x) = at {
        let label = match m {
            Some(m) => format!("M = {} (plateau)", svg::fmt_value(m)),
            None => format!("plateau at epoch {}", svg::fmt_value(x)),
        };
        plot.vlines
            .push(vline(x, label, svg::CHOSEN, Stroke::Dashed));
    }
}

/// Marks of a line search's shape (`LineSearchShape`): a = 0 (and a = 1
/// for the final one), the peak, the largest drop, a loss barrier, and
/// the trained model's own figure.
pub fn line_search_marks(plot: &mut Plot, d: Option<&Value>, fin: bool) {
    plot.vlines
        .push(vline(0.0, "a = 0 (θ0)".into(), "#7f7f7f", Stroke::Dotted));
    if fin {
        plot.vlines.push(vline(
            1.0,
            "a = 1 (trained)".into(),
            "#444444",
            Stroke::Dotted,
        ));
    }
    let Some(d) = d else { return };
    if let (Some(from), Some(to)) = (num(d, "/cliff/from_a"), num(d, "/cliff/to_a")) {
        let change = num(d, "/cliff/change").unwrap_or(f64::NAN);
        plot.spans.push(Span {
            lo: from.min(to),
            hi: from.max(to),
            label: if change.is_finite() {
                format!("largest drop ({})", svg::fmt_value(change))
            } else {
                "largest drop".into()
            },
            color: svg::DANGER.into(),
        });
    }
    if d.get("has_barrier").and_then(Value::as_bool) == Some(true) {
        if let Some(b) = num(d, "/barrier_at") {
            plot.vlines.push(vline(
                b,
                format!("loss barrier at a = {}", svg::fmt_value(b)),
                "#ff7f0e",
                Stroke::Dashed,
            ));
        }
    }
    if let (Some(a), Some(v)) = (num(d, "/metric_peak/a"), num(d, "/metric_peak/value")) {
        plot.marks.push(Mark {
            x: a,
            y: v,
            label: format!("peak at a = {}", svg::fmt_value(a)),
            color: "#222222".into(),
            shape: MarkShape::Dot,
        });
    }
    if fin {
        if let Some(t) = num(d, "/at_one/metric_trained") {
            plot.marks.push(Mark {
                x: 1.0,
                y: t,
                label: "trained model's own figure".into(),
                color: "#9467bd".into(),
                shape: MarkShape::Diamond,
            });
        }
    }
}

/// A plot with the axes named for `axis` and the job's metric.
pub fn new_plot(title: String, axis: XAxis, metric: &str) -> Plot {
    Plot {
        title,
        xlabel: axis.label().into(),
        ylabel: metric_name(metric),
        xscale: axis.scale(),
        ..Default::default()
    }
}

/// The caption under a figure: what the lines and bands are.
pub fn caption(groups: &[&GroupData]) -> String {
    let seeds = groups.iter().map(|g| g.seeds()).max().unwrap_or(0);
    let over = match seeds {
        0 => "No measurements yet.".to_string(),
        1 => "One seed.".to_string(),
        s => format!("Mean over {s} seeds, band ±1 std."),
    };
    format!("{over} Heldout solid, training subset dashed.")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn point(x: f64, lr: f64, held: f64) -> pb::CurvePoint {
        pb::CurvePoint {
            x,
            lr,
            momentum: 0.0,
            train: None,
            heldout: Some(pb::Metrics {
                loss: 1.0,
                metric: held,
                ..Default::default()
            }),
        }
    }

    #[test]
    fn rows_take_lr_from_the_curves_and_fall_back_to_curve_means() {
        let r = pb::JobResults {
            curves: vec![
                pb::Curve {
                    curve: "lr_ramp,seed=0".into(),
                    points: vec![point(1.0, 0.01, 0.2), point(2.0, 0.1, 0.4)],
                    end: None,
                },
                pb::Curve {
                    curve: "lr_ramp,seed=1".into(),
                    points: vec![point(1.0, 0.01, 0.4), point(2.0, 0.1, f64::NAN)],
                    end: None,
                },
            ],
            ..Default::default()
        };
        // No aggregates: means from the curves.
        let g = group_data(&r, "lr_ramp").expect("group");
        assert_eq!(g.rows.len(), 2);
        assert!((g.rows[0].held_mean - 0.3).abs() < 1e-12);
        assert_eq!(g.rows[1].lr, 0.1);
        assert!(g.rows[1].held_mean.is_nan());
        assert_eq!(g.seeds(), 2);
        assert!(group_data(&r, "momentum_ramp").is_none());
        // The seed with a NaN is marked as diverged at its last finite point.
        let marks = divergence_marks(&g, XAxis::Lr);
        assert_eq!(marks.len(), 1);
        assert_eq!((marks[0].x, marks[0].y), (0.01, 0.4));
    }
}
