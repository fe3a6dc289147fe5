//! Types shared by every Ridgeline crate.
//!
//! * [`spec`]: what one training run is made of (data, model, optimizer,
//!   schedule), as serde structs that are sections of a job file, each with a
//!   validating `validate()` that names the offending field.
//! * [`proto`]: the generated gRPC code (`proto/ridgeline/v1`), and
//!   [`wire`]: conversions between wire messages and these types.
//! * [`auth`]: bearer tokens on the client side (clients and workers), and
//!   [`tls`]: TLS settings of a connection to the coordinator.
//! * [`ids`]: `JobId`, `TaskId`, `WorkerId`.
//! * [`job`]: a job file (`kind` + shared run settings + its section), and
//!   [`task`]: what one worker task is asked to do.
//! * [`procedure`]: the `[procedure]` section of a `procedure` job (the
//!   seven steps) and the names of its stages' curves.
//! * [`schedule`]: learning-rate and momentum schedules as small pure
//!   functions of the (fractional) epoch.
//! * [`claims`]: a worker's claims of the queued tasks it starts, carried
//!   by its next `Complete`.

pub mod auth;
pub mod claims;
pub mod cli_config;
pub mod ids;
pub mod job;
pub mod procedure;
pub mod proto;
pub mod report;
pub mod schedule;
pub mod spec;
pub mod task;
pub mod tls;
pub mod wire;

pub use ids::{JobId, TaskId, WorkerId};
pub use job::{JobKind, JobSpec};
pub use report::{DataSummary, EpochReport, LinePoint, Metrics, RunOutcome};
pub use schedule::{LrSchedule, MomentumSchedule, ScheduleSpec};
pub use spec::{
    DataSpec, DatasetSource, MetricKind, ModelSpec, OptimizerSpec, RunSpec, SpecError, Task,
};
