//! The artifact store: files named by the SHA-256 of their content under
//! `<data-dir>/artifacts/`. A name is only ever a 64-digit hex digest, so no
//! request can reach a file outside that directory.
//!
//! A file is only ever in place complete and verified: an upload is hashed
//! as it arrives, written and synced under a temporary name, renamed, and
//! the rename synced, before it is answered. So the file itself is the
//! record that an artifact was uploaded: the transaction that first refers
//! to it (a chunk's Complete, a job's submit) checks that it is there and
//! records it in the database, and an upload costs no commit of its own.

use std::io::Write;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;

use crate::error::{CoordError, Result};

/// Uploads of up to this many bytes are received in memory and written,
/// synced and moved into place in one step on a blocking thread (a
/// checkpoint's upload used to take six hops between threads). Larger ones
/// go to their temporary file as they arrive. At most `max_uploads` are
/// received at once, so this bounds the memory they hold.
const IN_MEMORY: u64 = 16 << 20;

pub struct ArtifactStore {
    dir: PathBuf,
    /// Uploads announced as at most this many bytes are held in memory.
    in_memory: u64,
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
        Ok(ArtifactStore {
            dir,
            in_memory: IN_MEMORY,
        })
    }

    pub fn path(&self, hash: &str) -> Result<PathBuf> {
        Ok(self.dir.join(format!("{}.safetensors", check_hash(hash)?)))
    }

    /// The size of the artifact `hash` if it is in place (complete and
    /// verified: nothing else is ever there). One `stat`.
    pub fn size(&self, hash: &str) -> Result<Option<u64>> {
        let path = self.path(hash)?;
        match std::fs::metadata(&path) {
            Ok(m) => Ok(Some(m.len())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(CoordError::Storage(format!("{}: {e}", path.display()))),
        }
    }

    /// A writer for an upload announced as `hash` of `size` bytes.
    pub async fn begin(&self, hash: &str, size: u64) -> Result<Upload> {
        let hash = check_hash(hash)?;
        let tmp = self
            .dir
            .join(format!(".{hash}.{}.part", uuid::Uuid::new_v4()));
        let body = if size <= self.in_memory {
            Body::Memory(Vec::with_capacity(size as usize))
        } else {
            let file = tokio::fs::File::create(&tmp)
                .await
                .map_err(|e| CoordError::Storage(format!("cannot write {}: {e}", tmp.display())))?;
            Body::File(file)
        };
        Ok(Upload {
            hash,
            size,
            written: 0,
            hasher: Sha256::new(),
            body,
            tmp,
            dest: self.dir.clone(),
        })
    }
}

/// An upload in progress: hashed as it comes, held in memory or written to
/// a temporary file, moved into place only when complete and verified.
pub struct Upload {
    hash: String,
    size: u64,
    written: u64,
    hasher: Sha256,
    body: Body,
    tmp: PathBuf,
    dest: PathBuf,
}

/// Where an upload's bytes wait until it is complete.
enum Body {
    /// Announced as at most [`IN_MEMORY`] bytes.
    Memory(Vec<u8>),
    /// Larger: its temporary file, written as the chunks arrive.
    File(tokio::fs::File),
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
        match &mut self.body {
            Body::Memory(bytes) => {
                bytes.extend_from_slice(data);
                Ok(())
            }
            Body::File(file) => file
                .write_all(data)
                .await
                .map_err(|e| CoordError::Storage(format!("{}: {e}", self.tmp.display()))),
        }
    }

    /// Verifies the upload and moves its file into place, durably; returns
    /// its size. Nothing of an upload that fails here is left behind.
    pub async fn finish(mut self) -> Result<u64> {
        if self.written != self.size {
            return Err(CoordError::InvalidArgument(format!(
                "`size`: the upload of {} announced {} bytes and sent {}",
                self.hash, self.size, self.written
            )));
        }
        let got = hex::encode(self.hasher.finalize_reset());
        if got != self.hash {
            return Err(CoordError::InvalidArgument(format!(
                "`hash`: the upload announced {} but its content hashes to {got}",
                self.hash
            )));
        }
        let body = match std::mem::replace(&mut self.body, Body::Memory(vec![])) {
            Body::Memory(bytes) => Written::Memory(bytes),
            Body::File(file) => Written::File(file.into_std().await),
        };
        let (tmp, dir) = (self.tmp.clone(), self.dest.clone());
        let dest = self.dest.join(format!("{}.safetensors", self.hash));
        // One step on a blocking thread: write (if held in memory), sync,
        // rename, and sync the rename (a crash must not leave a referenced
        // artifact missing).
        tokio::task::spawn_blocking(move || -> Result<()> {
            let at = |p: &Path| {
                let p = p.display().to_string();
                move |e: std::io::Error| CoordError::Storage(format!("{p}: {e}"))
            };
            let file = match body {
                Written::Memory(bytes) => {
                    let mut file = std::fs::File::create(&tmp).map_err(at(&tmp))?;
                    file.write_all(&bytes).map_err(at(&tmp))?;
                    file
                }
                Written::File(file) => file,
            };
            file.sync_all().map_err(at(&tmp))?;
            std::fs::rename(&tmp, &dest).map_err(at(&dest))?;
            std::fs::File::open(&dir)
                .and_then(|d| d.sync_all())
                .map_err(at(&dir))
        })
        .await
        .map_err(|e| CoordError::Storage(format!("storing artifact {}: {e}", self.hash)))??;
        Ok(self.written)
    }
}

/// An upload's bytes, complete and verified, on their way into place.
enum Written {
    Memory(Vec<u8>),
    File(std::fs::File),
}

impl Drop for Upload {
    fn drop(&mut self) {
        // An upload abandoned half-way leaves nothing behind (after a
        // successful rename there is nothing here to remove).
        let _ = std::fs::remove_file(&self.tmp);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn leftovers(dir: &Path) -> Vec<String> {
        std::fs::read_dir(dir.join("artifacts"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".part"))
            .collect()
    }

    /// Uploads `bytes` in chunks of 3 bytes, announced as `hash`.
    async fn upload(store: &ArtifactStore, hash: &str, bytes: &[u8]) -> Result<u64> {
        let mut up = store.begin(hash, bytes.len() as u64).await?;
        for chunk in bytes.chunks(3) {
            up.write(chunk).await?;
        }
        up.finish().await
    }

    #[tokio::test]
    async fn uploads_in_memory_and_through_a_file_land_whole_or_not_at_all() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = ArtifactStore::open(dir.path()).unwrap();
        store.in_memory = 16;
        for bytes in [b"small".to_vec(), b"larger than sixteen bytes".to_vec()] {
            let hash = hex::encode(Sha256::digest(&bytes));
            assert_eq!(store.size(&hash).unwrap(), None);
            assert_eq!(
                upload(&store, &hash, &bytes).await.unwrap(),
                bytes.len() as u64
            );
            assert_eq!(store.size(&hash).unwrap(), Some(bytes.len() as u64));
            assert_eq!(std::fs::read(store.path(&hash).unwrap()).unwrap(), bytes);

            // Content that does not match its announced hash is refused,
            // and nothing of it stays.
            let other = hex::encode(Sha256::digest(b"something else"));
            let err = upload(&store, &other, &bytes)
                .await
                .unwrap_err()
                .to_string();
            assert!(err.contains("hashes to"), "{err}");
            assert_eq!(store.size(&other).unwrap(), None);

            // So is one that sends more or fewer bytes than it announced.
            let mut up = store.begin(&other, 4).await.unwrap();
            let err = up.write(&bytes).await.unwrap_err().to_string();
            assert!(err.contains("more than the 4 bytes"), "{err}");
            drop(up);
            let mut up = store.begin(&other, bytes.len() as u64 + 1).await.unwrap();
            up.write(&bytes).await.unwrap();
            let err = up.finish().await.unwrap_err().to_string();
            assert!(err.contains("announced"), "{err}");
            assert_eq!(store.size(&other).unwrap(), None);
            assert_eq!(leftovers(dir.path()), Vec::<String>::new());
        }
        assert!(store.size("../../etc/passwd").is_err());
    }
}
