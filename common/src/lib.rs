//! Types shared by every Ridgeline crate.
//!
//! * [`spec`]: what one training run is made of (data, model, optimizer,
//!   schedule), as serde structs that are sections of a job file, each with a
//!   validating `validate()` that names the offending field.
//! * [`schedule`]: learning-rate and momentum schedules as small pure
//!   functions of the (fractional) epoch.

pub mod report;
pub mod schedule;
pub mod spec;

pub use report::{EpochReport, LinePoint, Metrics, RunOutcome};
pub use schedule::{LrSchedule, MomentumSchedule, ScheduleSpec};
pub use spec::{
    DataSpec, DatasetSource, MetricKind, ModelSpec, OptimizerSpec, RunSpec, SpecError, Task,
};
