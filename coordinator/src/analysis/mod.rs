//! Analysis: a job's curves from its stored measurements, and their mean
//! and spread over seeds; and, for a procedure job, its decisions
//! ([`steps`]).

pub mod steps;

use std::collections::BTreeMap;

use ridgeline_common::proto::v1 as pb;

/// The configuration a curve belongs to: its name without the seed
/// (`"lr=0.1,momentum=0.9,seed=2"` → `"lr=0.1,momentum=0.9"`; a job with
/// one configuration has the group `"all"`).
pub fn group_of(curve: &str) -> String {
    let parts: Vec<&str> = curve
        .split(',')
        .filter(|p| !p.starts_with("seed="))
        .collect();
    if parts.is_empty() {
        "all".to_string()
    } else {
        parts.join(",")
    }
}

/// Builds the curves (points sorted by x) and the per-group aggregates.
pub fn results(
    job_id: &str,
    kind: &str,
    metric: &str,
    measurements: Vec<pb::Progress>,
) -> pb::JobResults {
    let mut curves: BTreeMap<String, pb::Curve> = BTreeMap::new();
    let mut data = None;
    for m in measurements {
        if let Some(pb::progress::Kind::Data(d)) = &m.kind {
            data.get_or_insert(*d);
            continue;
        }
        let c = curves.entry(m.curve.clone()).or_insert_with(|| pb::Curve {
            curve: m.curve.clone(),
            ..Default::default()
        });
        match m.kind {
            Some(pb::progress::Kind::Epoch(e)) => c.points.push(pb::CurvePoint {
                x: e.progress,
                lr: e.lr,
                momentum: e.momentum,
                train: e.train,
                heldout: e.heldout,
            }),
            Some(pb::progress::Kind::Point(p)) => c.points.push(pb::CurvePoint {
                x: p.alpha,
                lr: 0.0,
                momentum: 0.0,
                train: p.train,
                heldout: p.heldout,
            }),
            Some(pb::progress::Kind::End(e)) => c.end = Some(e),
            Some(pb::progress::Kind::Data(_)) | None => {}
        }
    }
    for c in curves.values_mut() {
        c.points.sort_by(|a, b| a.x.total_cmp(&b.x));
    }
    let mut groups: BTreeMap<String, Vec<&pb::Curve>> = BTreeMap::new();
    for c in curves.values() {
        groups.entry(group_of(&c.curve)).or_default().push(c);
    }
    let aggregates = groups
        .into_iter()
        .map(|(g, cs)| aggregate(g, &cs))
        .collect();
    pb::JobResults {
        job_id: job_id.to_string(),
        kind: kind.to_string(),
        metric: metric.to_string(),
        curves: curves.into_values().collect(),
        aggregates,
        data,
        ..Default::default()
    }
}

fn aggregate(group: String, curves: &[&pb::Curve]) -> pb::Aggregate {
    // x values are identical across seeds of one configuration (same
    // schedule, same a values); key them by their bits.
    let mut at: BTreeMap<u64, (f64, Vec<f64>, Vec<f64>)> = BTreeMap::new();
    for c in curves {
        for p in &c.points {
            let e = at.entry(ordered(p.x)).or_insert((p.x, vec![], vec![]));
            if let Some(h) = &p.heldout {
                e.1.push(h.metric);
            }
            if let Some(t) = &p.train {
                e.2.push(t.metric);
            }
        }
    }
    let mut a = pb::Aggregate {
        group,
        ..Default::default()
    };
    for (_, (x, held, train)) in at {
        let (hm, hs) = mean_std(&held);
        let (tm, ts) = mean_std(&train);
        a.x.push(x);
        a.heldout_mean.push(hm);
        a.heldout_std.push(hs);
        a.train_mean.push(tm);
        a.train_std.push(ts);
        a.n.push(held.len() as u32);
    }
    a
}

/// Maps f64 to u64 preserving order (for sorting keys).
fn ordered(x: f64) -> u64 {
    let b = x.to_bits();
    if b >> 63 == 1 {
        !b
    } else {
        b | (1 << 63)
    }
}

/// Mean and sample standard deviation (0 for one value).
pub fn mean_std(v: &[f64]) -> (f64, f64) {
    if v.is_empty() {
        return (f64::NAN, f64::NAN);
    }
    let n = v.len() as f64;
    let m = v.iter().sum::<f64>() / n;
    if v.len() < 2 {
        return (m, 0.0);
    }
    let var = v.iter().map(|x| (x - m) * (x - m)).sum::<f64>() / (n - 1.0);
    (m, var.sqrt())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn point(curve: &str, x: f64, held: f64) -> pb::Progress {
        pb::Progress {
            curve: curve.into(),
            kind: Some(pb::progress::Kind::Epoch(pb::EpochReport {
                progress: x,
                heldout: Some(pb::Metrics {
                    metric: held,
                    ..Default::default()
                }),
                train: Some(pb::Metrics::default()),
                ..Default::default()
            })),
            ..Default::default()
        }
    }

    #[test]
    fn curves_are_grouped_over_seeds() {
        assert_eq!(group_of("seed=3"), "all");
        assert_eq!(
            group_of("lr=0.1,momentum=0.9,seed=3"),
            "lr=0.1,momentum=0.9"
        );
        let r = results(
            "j",
            "lr_ramp",
            "accuracy",
            vec![
                point("seed=1", 1.0, 0.5),
                point("seed=1", 0.0, 0.1),
                point("seed=2", 0.0, 0.3),
                point("seed=2", 1.0, 0.7),
            ],
        );
        assert_eq!(r.curves.len(), 2);
        assert_eq!(r.curves[0].points[0].x, 0.0, "points sorted by x");
        let a = &r.aggregates[0];
        assert_eq!(a.x, vec![0.0, 1.0]);
        assert!((a.heldout_mean[1] - 0.6).abs() < 1e-12);
        assert!((a.heldout_std[0] - (0.02f64).sqrt()).abs() < 1e-12);
        assert_eq!(a.n, vec![2, 2]);
        assert!(
            ordered(-1.0) < ordered(-0.5)
                && ordered(-0.5) < ordered(0.0)
                && ordered(0.0) < ordered(2.0)
        );
    }
}
