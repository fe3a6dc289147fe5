//! The artifact store: files named by the SHA-256 of their content under
//! `<data-dir>/artifacts/`. A name is only ever a 64-digit hex digest, so no
//! request can reach a file outside that directory.

use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;

use crate::error::{CoordError, Result};

pub struct ArtifactStore {
    dir: PathBuf,
}

/// Checks that `hash` is a SHA-256 hex digest and returns it lower-cased.
pub fn check_hash(hash: &str) -> Result<String> {
    if hash.len() == 64 && hash.bytes().all(|b| b.is_ascii_hexdigit()) {
        Ok(hash.to_ascii_lowercase())
    } else {
        Err(CoordError::InvalidArgument(format!(
            "`hash`: `{}` is not a SHA-256 hex digest",
            hash.chars().take(80).collect::<String>()
        )))
    }
}

impl ArtifactStore {
    pub fn open(data_dir: &Path) -> Result<ArtifactStore> {
        let dir = data_dir.join("artifacts");
        std::fs::create_dir_all(&dir)
            .map_err(|e| CoordError::Storage(format!("cannot create {}: {e}", dir.display())))?;
        Ok(ArtifactStore { dir })
    }

    pub fn path(&self, hash: &str) -> Result<PathBuf> {
        Ok(self.dir.join(format!("{}.safetensors", check_hash(hash)?)))
    }

    /// A writer for an upload announced as `hash` of `size` bytes.
    pub async fn begin(&self, hash: &str, size: u64) -> Result<Upload> {
        let hash = check_hash(hash)?;
        let tmp = self
            .dir
            .join(format!(".{hash}.{}.part", uuid::Uuid::new_v4()));
        let file = tokio::fs::File::create(&tmp)
            .await
            .map_err(|e| CoordError::Storage(format!("cannot write {}: {e}", tmp.display())))?;
        Ok(Upload {
            hash,
            size,
            written: 0,
            hasher: Sha256::new(),
            file,
            tmp,
            dest: self.dir.clone(),
        })
    }
}

/// An upload in progress: written to a temporary file, hashed as it comes,
/// renamed into place only when complete and verified.
pub struct Upload {
    hash: String,
    size: u64,
    written: u64,
    hasher: Sha256,
    file: tokio::fs::File,
    tmp: PathBuf,
    dest: PathBuf,
}

impl Upload {
    pub async fn write(&mut self, data: &[u8]) -> Result<()> {
        self.written += data.len() as u64;
        if self.written > self.size {
            return Err(CoordError::InvalidArgument(format!(
                "`size`: the upload of {} sent more than the {} bytes it announced",
                self.hash, self.size
            )));
        }
        self.hasher.update(data);
        self.file
            .write_all(data)
            .await
            .map_err(|e| CoordError::Storage(format!("{}: {e}", self.tmp.display())))
    }

    /// Verifies and moves the file into place; returns its size.
    pub async fn finish(mut self) -> Result<u64> {
        self.file
            .sync_all()
            .await
            .map_err(|e| CoordError::Storage(format!("{}: {e}", self.tmp.display())))?;
        let got = hex::encode(self.hasher.finalize_reset());
        if self.written != self.size {
            return Err(CoordError::InvalidArgument(format!(
                "`size`: the upload of {} announced {} bytes and sent {}",
                self.hash, self.size, self.written
            )));
        }
        if got != self.hash {
            return Err(CoordError::InvalidArgument(format!(
                "`hash`: the upload announced {} but its content hashes to {got}",
                self.hash
            )));
        }
        let dest = self.dest.join(format!("{}.safetensors", self.hash));
        tokio::fs::rename(&self.tmp, &dest)
            .await
            .map_err(|e| CoordError::Storage(format!("{}: {e}", dest.display())))?;
        // The rename itself must be durable before the store records the
        // artifact (a crash must not leave a recorded checkpoint missing).
        let dir = self.dest.clone();
        tokio::task::spawn_blocking(move || std::fs::File::open(&dir).and_then(|d| d.sync_all()))
            .await
            .map_err(|e| CoordError::Storage(e.to_string()))?
            .map_err(|e| CoordError::Storage(format!("{}: {e}", self.dest.display())))?;
        Ok(self.written)
    }
}

impl Drop for Upload {
    fn drop(&mut self) {
        // An upload abandoned half-way leaves nothing behind.
        let _ = std::fs::remove_file(&self.tmp);
    }
}
