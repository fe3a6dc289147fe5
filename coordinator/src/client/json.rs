//! The JSON export: a serde mirror of the wire `JobResults` (the generated
//! prost types do not implement serde).
//!
//! ```json
//! {
//!   "job_id": "…", "kind": "grid", "metric": "accuracy",
//!   "curves": [
//!     { "curve": "lr=0.1,momentum=0.9,seed=0",
//!       "points": [ { "x": 1.0, "lr": 0.1, "momentum": 0.9,
//!                     "train": { "loss": 0.4, "metric": 0.88, "accuracy": 0.88 },
//!                     "heldout": { "loss": 0.5, "metric": 0.86, "accuracy": 0.86 } } ],
//!       "end": { "kind": "completed", "epoch": 6, "step": 0, "reason": "" } } ],
//!   "aggregates": [
//!     { "group": "lr=0.1,momentum=0.9", "x": [0.0, 1.0],
//!       "heldout_mean": […], "heldout_std": […], "train_mean": […], "train_std": […], "n": [3, 3] } ]
//! }
//! ```
//!
//! JSON has no NaN or infinity: such values (a diverged run's loss) are
//! written as `null`. Metrics that do not apply to the task (`r2` of a
//! classifier) are left out.

use ridgeline_common::proto::v1 as pb;
use serde::Serialize;

/// A job's results: every curve (one per run) and the aggregates over
/// seeds (one per configuration).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ResultsJson {
    pub job_id: String,
    pub kind: String,
    /// `accuracy`, `r2` or `pearson` (`default`: the task's default).
    pub metric: String,
    pub curves: Vec<CurveJson>,
    pub aggregates: Vec<AggregateJson>,
}

/// One run's measurements, sorted by `x`, and how the run ended (`null`
/// while it is still going).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CurveJson {
    pub curve: String,
    pub points: Vec<PointJson>,
    pub end: Option<RunEndJson>,
}

/// One measurement: `x` is the epoch (fractional when reporting every k
/// batches) or, for a line search, the position a.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PointJson {
    pub x: f64,
    pub lr: f64,
    pub momentum: f64,
    pub train: Option<MetricsJson>,
    pub heldout: Option<MetricsJson>,
}

/// Loss and metrics on one split; `metric` is the job's decision metric.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MetricsJson {
    pub loss: f64,
    pub metric: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub accuracy: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub r2: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pearson: Option<f64>,
}

/// How a run ended: `kind` is `completed`, `diverged`, `stopped` or
/// `unknown`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RunEndJson {
    pub kind: String,
    pub epoch: u32,
    pub step: u64,
    pub reason: String,
}

/// Mean and sample standard deviation over seeds of one configuration, per
/// `x`; `n` is the number of seeds at each `x`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AggregateJson {
    pub group: String,
    pub x: Vec<f64>,
    pub heldout_mean: Vec<f64>,
    pub heldout_std: Vec<f64>,
    pub train_mean: Vec<f64>,
    pub train_std: Vec<f64>,
    pub n: Vec<u32>,
}

impl From<&pb::Metrics> for MetricsJson {
    fn from(m: &pb::Metrics) -> Self {
        Self {
            loss: m.loss,
            metric: m.metric,
            accuracy: m.accuracy,
            r2: m.r2,
            pearson: m.pearson,
        }
    }
}

impl From<&pb::RunEnd> for RunEndJson {
    fn from(e: &pb::RunEnd) -> Self {
        let kind = match pb::run_end::Kind::try_from(e.kind) {
            Ok(pb::run_end::Kind::Completed) => "completed",
            Ok(pb::run_end::Kind::Diverged) => "diverged",
            Ok(pb::run_end::Kind::Stopped) => "stopped",
            Ok(pb::run_end::Kind::Unspecified) | Err(_) => "unknown",
        };
        Self {
            kind: kind.into(),
            epoch: e.epoch,
            step: e.step,
            reason: e.reason.clone(),
        }
    }
}

impl From<&pb::JobResults> for ResultsJson {
    fn from(r: &pb::JobResults) -> Self {
        Self {
            job_id: r.job_id.clone(),
            kind: r.kind.clone(),
            metric: r.metric.clone(),
            curves: r
                .curves
                .iter()
                .map(|c| CurveJson {
                    curve: c.curve.clone(),
                    points: c
                        .points
                        .iter()
                        .map(|p| PointJson {
                            x: p.x,
                            lr: p.lr,
                            momentum: p.momentum,
                            train: p.train.as_ref().map(MetricsJson::from),
                            heldout: p.heldout.as_ref().map(MetricsJson::from),
                        })
                        .collect(),
                    end: c.end.as_ref().map(RunEndJson::from),
                })
                .collect(),
            aggregates: r
                .aggregates
                .iter()
                .map(|a| AggregateJson {
                    group: a.group.clone(),
                    x: a.x.clone(),
                    heldout_mean: a.heldout_mean.clone(),
                    heldout_std: a.heldout_std.clone(),
                    train_mean: a.train_mean.clone(),
                    train_std: a.train_std.clone(),
                    n: a.n.clone(),
                })
                .collect(),
        }
    }
}

/// The whole of `r` as pretty-printed JSON, ending with a newline.
pub fn results_to_json(r: &pb::JobResults) -> serde_json::Result<String> {
    let mut s = serde_json::to_string_pretty(&ResultsJson::from(r))?;
    s.push('\n');
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn results_mirror_to_json_with_nan_as_null() {
        let r = pb::JobResults {
            job_id: "j1".into(),
            kind: "lr_ramp".into(),
            metric: "accuracy".into(),
            curves: vec![pb::Curve {
                curve: "seed=0".into(),
                points: vec![pb::CurvePoint {
                    x: 2.0,
                    lr: 0.5,
                    momentum: 0.0,
                    train: Some(pb::Metrics {
                        loss: f64::NAN,
                        metric: 0.1,
                        accuracy: Some(0.1),
                        r2: None,
                        pearson: None,
                        majority_fraction: None,
                    }),
                    heldout: None,
                }],
                end: Some(pb::RunEnd {
                    kind: pb::run_end::Kind::Diverged as i32,
                    epoch: 2,
                    step: 40,
                    reason: "loss is NaN".into(),
                }),
            }],
            aggregates: vec![pb::Aggregate {
                group: "all".into(),
                x: vec![2.0],
                heldout_mean: vec![0.1],
                heldout_std: vec![0.0],
                train_mean: vec![0.1],
                train_std: vec![0.0],
                n: vec![1],
            }],
            ..Default::default()
        };
        let text = results_to_json(&r).expect("serializes");
        let v: serde_json::Value = serde_json::from_str(&text).expect("valid JSON");
        assert_eq!(v["job_id"], "j1");
        assert_eq!(v["metric"], "accuracy");
        let p = &v["curves"][0]["points"][0];
        assert!(p["train"]["loss"].is_null(), "{text}");
        assert_eq!(p["train"]["accuracy"], 0.1);
        assert!(p["train"].get("r2").is_none(), "{text}");
        assert!(p["heldout"].is_null());
        assert_eq!(v["curves"][0]["end"]["kind"], "diverged");
        assert_eq!(v["curves"][0]["end"]["reason"], "loss is NaN");
        assert_eq!(v["aggregates"][0]["n"][0], 1);
        assert!(text.ends_with("}\n"));
    }
}
