//! Conversions between wire messages and domain types. A missing or bad
//! field becomes a [`WireError`] naming it (mapped to `INVALID_ARGUMENT` by
//! the services), never a panic.

use crate::proto::v1 as pb;
use crate::{DataSummary, EpochReport, LinePoint, Metrics, RunOutcome};

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("`{field}`: {message}")]
pub struct WireError {
    pub field: String,
    pub message: String,
}

impl WireError {
    pub fn missing(field: &str) -> Self {
        Self {
            field: field.to_string(),
            message: "is missing".into(),
        }
    }
}

impl From<Metrics> for pb::Metrics {
    fn from(m: Metrics) -> Self {
        pb::Metrics {
            loss: m.loss,
            metric: m.metric,
            accuracy: m.accuracy,
            r2: m.r2,
            pearson: m.pearson,
            majority_fraction: m.majority_fraction,
        }
    }
}

impl From<pb::Metrics> for Metrics {
    fn from(m: pb::Metrics) -> Self {
        Metrics {
            loss: m.loss,
            metric: m.metric,
            accuracy: m.accuracy,
            r2: m.r2,
            pearson: m.pearson,
            majority_fraction: m.majority_fraction,
        }
    }
}

impl From<DataSummary> for pb::DataSummary {
    fn from(d: DataSummary) -> Self {
        pb::DataSummary {
            classes: d.classes,
            train_rows: d.train_rows,
            heldout_rows: d.heldout_rows,
            heldout_in_train: d.heldout_in_train,
        }
    }
}

impl From<pb::DataSummary> for DataSummary {
    fn from(d: pb::DataSummary) -> Self {
        DataSummary {
            classes: d.classes,
            train_rows: d.train_rows,
            heldout_rows: d.heldout_rows,
            heldout_in_train: d.heldout_in_train,
        }
    }
}

fn metrics(m: Option<pb::Metrics>, field: &str) -> Result<Metrics, WireError> {
    m.map(Metrics::from)
        .ok_or_else(|| WireError::missing(field))
}

impl From<EpochReport> for pb::EpochReport {
    fn from(r: EpochReport) -> Self {
        pb::EpochReport {
            epoch: r.epoch as u32,
            step: r.step,
            progress: r.progress,
            lr: r.lr,
            momentum: r.momentum,
            batch_loss: r.batch_loss,
            train: Some(r.train.into()),
            heldout: Some(r.heldout.into()),
        }
    }
}

impl TryFrom<pb::EpochReport> for EpochReport {
    type Error = WireError;
    fn try_from(r: pb::EpochReport) -> Result<Self, WireError> {
        Ok(EpochReport {
            epoch: r.epoch as usize,
            step: r.step,
            progress: r.progress,
            lr: r.lr,
            momentum: r.momentum,
            batch_loss: r.batch_loss,
            train: metrics(r.train, "epoch.train")?,
            heldout: metrics(r.heldout, "epoch.heldout")?,
        })
    }
}

/// A line point with its index in the job's list of a values.
pub fn line_point_to_wire(index: u32, p: &LinePoint) -> pb::LinePoint {
    pb::LinePoint {
        index,
        alpha: p.alpha,
        train: Some(p.train.into()),
        heldout: Some(p.heldout.into()),
    }
}

pub fn line_point_from_wire(p: pb::LinePoint) -> Result<(u32, LinePoint), WireError> {
    Ok((
        p.index,
        LinePoint {
            alpha: p.alpha,
            train: metrics(p.train, "point.train")?,
            heldout: metrics(p.heldout, "point.heldout")?,
        },
    ))
}

impl From<&RunOutcome> for pb::RunEnd {
    fn from(o: &RunOutcome) -> Self {
        use pb::run_end::Kind;
        match o {
            RunOutcome::Completed { epoch } => pb::RunEnd {
                kind: Kind::Completed as i32,
                epoch: *epoch as u32,
                step: 0,
                reason: String::new(),
            },
            RunOutcome::Diverged {
                epoch,
                step,
                reason,
            } => pb::RunEnd {
                kind: Kind::Diverged as i32,
                epoch: *epoch as u32,
                step: *step,
                reason: reason.clone(),
            },
            RunOutcome::Stopped { epoch } => pb::RunEnd {
                kind: Kind::Stopped as i32,
                epoch: *epoch as u32,
                step: 0,
                reason: String::new(),
            },
        }
    }
}

impl TryFrom<pb::RunEnd> for RunOutcome {
    type Error = WireError;
    fn try_from(e: pb::RunEnd) -> Result<Self, WireError> {
        use pb::run_end::Kind;
        let epoch = e.epoch as usize;
        match Kind::try_from(e.kind) {
            Ok(Kind::Completed) => Ok(RunOutcome::Completed { epoch }),
            Ok(Kind::Diverged) => Ok(RunOutcome::Diverged {
                epoch,
                step: e.step,
                reason: e.reason,
            }),
            Ok(Kind::Stopped) => Ok(RunOutcome::Stopped { epoch }),
            _ => Err(WireError {
                field: "end.kind".into(),
                message: format!("{} is not a run end kind", e.kind),
            }),
        }
    }
}

/// Checks one measurement a worker reports: its kind is set and every
/// message that kind needs is there; the error names the missing field
/// (`kind`, `epoch.heldout`, `end.kind`…). Non-finite numbers are not
/// refused: a NaN or infinite metric is how a diverged run or a line-search
/// point past the cliff reads, and the analysis treats it as divergence.
pub fn check_progress(p: &pb::Progress) -> Result<(), WireError> {
    use pb::progress::Kind;
    match &p.kind {
        Some(Kind::Epoch(e)) => EpochReport::try_from(*e).map(drop),
        Some(Kind::Point(pt)) => line_point_from_wire(*pt).map(drop),
        Some(Kind::End(e)) => RunOutcome::try_from(e.clone()).map(drop),
        Some(Kind::Data(_)) => Ok(()),
        None => Err(WireError::missing("kind")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reports_survive_the_wire_and_missing_fields_are_named() {
        let m = Metrics {
            loss: 0.5,
            metric: 0.9,
            accuracy: Some(0.9),
            r2: None,
            pearson: None,
            majority_fraction: Some(0.3),
        };
        let r = EpochReport {
            epoch: 3,
            step: 30,
            progress: 3.0,
            lr: 0.1,
            momentum: 0.9,
            batch_loss: Some(0.4),
            train: m,
            heldout: m,
        };
        let w: pb::EpochReport = r.into();
        assert_eq!(EpochReport::try_from(w).unwrap(), r);
        let mut bad = w;
        bad.heldout = None;
        assert_eq!(
            EpochReport::try_from(bad).unwrap_err().field,
            "epoch.heldout"
        );
        let e = RunOutcome::try_from(pb::RunEnd {
            kind: 42,
            ..Default::default()
        })
        .unwrap_err();
        assert_eq!(e.field, "end.kind");
        let item = |kind| pb::Progress {
            kind,
            ..Default::default()
        };
        assert_eq!(check_progress(&item(None)).unwrap_err().field, "kind");
        assert_eq!(
            check_progress(&item(Some(pb::progress::Kind::Point(
                pb::LinePoint::default()
            ))))
            .unwrap_err()
            .field,
            "point.train"
        );
        let nan = pb::Metrics {
            loss: f64::NAN,
            metric: f64::INFINITY,
            ..Default::default()
        };
        let diverged = pb::EpochReport {
            train: Some(nan),
            heldout: Some(nan),
            ..w
        };
        assert!(check_progress(&item(Some(pb::progress::Kind::Epoch(diverged)))).is_ok());
    }
}
