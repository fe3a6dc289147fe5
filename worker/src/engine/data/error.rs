use std::path::{Path, PathBuf};

/// Why a dataset could not be loaded. File errors always name the file.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The file exists but its content is wrong: truncated, mis-shaped,
    /// non-numeric, labels out of range…
    #[error("{}: {message}", path.display())]
    Format { path: PathBuf, message: String },
    /// The examples loaded but cannot be used as asked.
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Tensor(#[from] candle_core::Error),
}

impl DataError {
    pub fn io(path: &Path, source: std::io::Error) -> Self {
        DataError::Io {
            path: path.to_path_buf(),
            source,
        }
    }

    pub fn format(path: &Path, message: impl Into<String>) -> Self {
        DataError::Format {
            path: path.to_path_buf(),
            message: message.into(),
        }
    }
}
