//! Ridgeline's coordinator. A job flows through it in this order:
//!
//! ```text
//! SubmitJob ─► planner (job → tasks) ─► store ─► scheduler (queue, leases)
//!    ─► WorkerService (gRPC) ─► reports ─► store ─► analysis (curves) ─► JobService
//! ```
//!
//! * [`planner`]: a validated job → its tasks (chunks of runs, blocks of
//!   line-search points).
//! * [`scheduler`]: the single owner of job and task state: leases, heartbeats,
//!   expiry, retries, cancellation, and the job event log.
//! * [`store`]: the embedded SQLite database.
//! * [`analysis`]: curves and their mean/spread over seeds.
//! * [`service`]: the gRPC services; [`server`]: serving them.
//! * [`artifacts`]: checkpoints and weights by content hash.
//! * [`client`]: the CLI's client commands.
//! * [`auth`]: bearer tokens and roles; [`tls`]: TLS and mutual TLS.

pub mod analysis;
pub mod artifacts;
pub mod auth;
pub mod client;
pub mod dashboard;
pub mod decisions;
pub mod error;
pub mod interop;
pub mod metrics;
pub mod planner;
pub mod report;
pub mod scheduler;
pub mod server;
pub mod service;
pub mod store;
pub mod tls;

pub use error::{CoordError, Result};
pub use server::{serve, ServerConfig};
