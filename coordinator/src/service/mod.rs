//! The gRPC services: thin adapters from wire messages to the scheduler.

pub mod jobs;
pub mod workers;
