//! The gRPC services: thin adapters from wire messages to the scheduler.

pub mod jobs;
pub mod workers;

use tonic::Status;

/// Runs a scheduler call off the async threads: it takes the store lock,
/// may read many rows, and commits with an fsync.
pub(crate) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> crate::error::Result<T> + Send + 'static,
) -> Result<T, Status> {
    Ok(tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Status::internal(e.to_string()))??)
}
