//! The coordinator's errors, and the one place they become gRPC statuses.

use tonic::Status;

#[derive(Debug, thiserror::Error)]
pub enum CoordError {
    /// A request or job file that cannot be accepted; the message names the
    /// field.
    #[error("{0}")]
    InvalidArgument(String),
    #[error("{0}")]
    NotFound(String),
    /// A report or completion for a lease that is no longer current, or a
    /// worker speaking another protocol version.
    #[error("{0}")]
    FailedPrecondition(String),
    /// The data directory cannot be written (disk full, read-only…): nothing
    /// was changed.
    #[error("storage: {0}")]
    Storage(String),
    #[error("storage: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("artifact: {0}")]
    Artifact(String),
    /// A bug in the coordinator (nothing was changed).
    #[error("internal: {0}")]
    Internal(String),
}

pub type Result<T, E = CoordError> = std::result::Result<T, E>;

impl From<CoordError> for Status {
    fn from(e: CoordError) -> Status {
        match e {
            CoordError::InvalidArgument(m) => Status::invalid_argument(m),
            CoordError::NotFound(m) => Status::not_found(m),
            CoordError::FailedPrecondition(m) => Status::failed_precondition(m),
            CoordError::Artifact(m) => Status::data_loss(m),
            CoordError::Internal(m) => {
                tracing::error!(error = %m, "internal error");
                Status::internal(m)
            }
            CoordError::Sqlite(rusqlite::Error::SqliteFailure(f, _))
                if f.code == rusqlite::ErrorCode::DiskFull =>
            {
                tracing::error!("the coordinator's disk is full");
                Status::resource_exhausted(
                    "the coordinator's disk is full: nothing was changed; free space and retry",
                )
            }
            CoordError::Sqlite(rusqlite::Error::SqliteFailure(f, _))
                if f.code == rusqlite::ErrorCode::ReadOnly =>
            {
                tracing::error!("the coordinator's data directory is read-only");
                Status::unavailable(
                    "the coordinator's data directory is read-only: nothing was changed",
                )
            }
            e @ (CoordError::Storage(_) | CoordError::Sqlite(_)) => {
                tracing::error!(error = %e, "store failure");
                Status::unavailable(format!("the coordinator cannot store this change: {e}"))
            }
        }
    }
}
