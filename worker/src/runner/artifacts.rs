//! Artifacts (checkpoints, trained weights) moved by content hash: a local
//! cache on disk, downloads from the coordinator verified before use, and
//! uploads in 1 MiB chunks.
//!
//! The local cache is what lets consecutive chunks of a run on the same
//! worker skip the download: a checkpoint this worker uploaded is stored
//! here first, under the hash the next chunk will ask for.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use ridgeline_common::proto::v1 as pb;

use super::rpc::{self, Backoff, Client, Refusal};
use super::task::TaskControl;
use crate::engine::artifact;
use crate::engine::error::EngineError;

/// Size of one upload chunk (the coordinator sends downloads in the same
/// size).
pub(crate) const CHUNK: usize = 1 << 20;

/// How often a download whose bytes do not match their hash is tried again
/// before the task fails (a corrupt copy on the coordinator will not heal).
const CORRUPT_DOWNLOADS: usize = 3;

/// The most checkpoints, and bytes, the cache keeps in memory as well
/// (each slot's last few: the next chunk of a run usually runs on the
/// worker that made its checkpoint, right after).
const KEPT: usize = 8;
const KEPT_BYTES: usize = 256 << 20;

/// Checkpoints kept in memory, by hash.
type Kept = VecDeque<(String, Arc<Vec<u8>>)>;

/// Artifacts on local disk, as `<dir>/<hash>.safetensors`, and the
/// checkpoints this worker made last, in memory.
#[derive(Debug, Clone)]
pub struct ArtifactCache {
    dir: PathBuf,
    /// Newest last. Bytes this worker made and hashed itself: handed to
    /// the next chunk without reading and hashing its file again.
    kept: Arc<Mutex<Kept>>,
    kept_bytes: usize,
}

impl ArtifactCache {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self {
            dir: dir.into(),
            kept: Arc::default(),
            kept_bytes: KEPT_BYTES,
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The verified bytes of `hash` if they are cached: kept in memory (see
    /// [`ArtifactCache::keep`]), else read from disk and checked. A copy on
    /// disk whose content no longer matches its name is deleted (so the
    /// next download can replace it) and reported as missing.
    pub fn get(&self, hash: &str) -> Result<Option<Arc<Vec<u8>>>, EngineError> {
        check_hash(hash)?;
        let hash = hash.to_ascii_lowercase();
        if let Some((_, bytes)) = self.kept().iter().find(|(h, _)| *h == hash) {
            return Ok(Some(bytes.clone()));
        }
        match artifact::fetch(&self.dir, &hash) {
            Ok(bytes) => Ok(Some(Arc::new(bytes))),
            Err(EngineError::Io { source, .. })
                if source.kind() == std::io::ErrorKind::NotFound =>
            {
                Ok(None)
            }
            Err(EngineError::Artifact(message)) => {
                tracing::warn!(%hash, %message, "deleting a corrupt cached artifact");
                let path = self.path(&hash);
                if let Err(e) = std::fs::remove_file(&path) {
                    tracing::warn!(path = %path.display(), error = %e, "cannot delete a corrupt artifact");
                }
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }

    /// Stores `bytes` under their hash (atomically) and returns the hash.
    pub fn put(&self, bytes: &[u8]) -> Result<String, EngineError> {
        artifact::store(&self.dir, bytes)
    }

    /// Stores a checkpoint this worker made, and keeps it in memory for
    /// the run's next chunk (the oldest kept ones make room); returns its
    /// hash.
    pub fn keep(&self, bytes: Arc<Vec<u8>>) -> Result<String, EngineError> {
        let hash = self.put(&bytes)?;
        let mut kept = self.kept();
        if !kept.iter().any(|(h, _)| *h == hash) {
            kept.push_back((hash.clone(), bytes));
        }
        while kept.len() > KEPT
            || kept.iter().map(|(_, b)| b.len()).sum::<usize>() > self.kept_bytes
        {
            kept.pop_front();
        }
        Ok(hash)
    }

    fn kept(&self) -> MutexGuard<'_, Kept> {
        // Only ever pushed to and popped: nothing is half-done by a panic.
        self.kept.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Where the artifact `hash` is (or would be) kept.
    pub fn file(&self, hash: &str) -> PathBuf {
        self.path(hash)
    }

    fn path(&self, hash: &str) -> PathBuf {
        self.dir
            .join(format!("{}.safetensors", hash.to_ascii_lowercase()))
    }
}

/// Refuses anything but a SHA-256 hex digest, so a hash from the wire can
/// never name a path outside the cache.
pub fn check_hash(hash: &str) -> Result<(), EngineError> {
    if hash.len() == 64 && hash.bytes().all(|b| b.is_ascii_hexdigit()) {
        Ok(())
    } else {
        Err(EngineError::Artifact(format!(
            "`{}` is not a SHA-256 hex digest",
            hash.chars().take(80).collect::<String>()
        )))
    }
}

/// Checks that `bytes` are the artifact `hash`.
pub fn verify(hash: &str, bytes: &[u8]) -> Result<(), EngineError> {
    check_hash(hash)?;
    let got = artifact::content_hash(bytes);
    if got.eq_ignore_ascii_case(hash) {
        Ok(())
    } else {
        Err(EngineError::Artifact(format!(
            "artifact {hash} arrived as {} bytes that hash to {got}",
            bytes.len()
        )))
    }
}

/// Why an artifact could not be moved.
#[derive(Debug)]
pub(crate) enum TransferError {
    /// The task was stopped while waiting for the coordinator.
    Stopped,
    /// Retrying here cannot help; the message says why.
    Failed(String),
}

/// The artifact `hash`, verified: from the local cache, else downloaded
/// (checked against `hash`, then cached). Transport failures are retried with backoff until the task is
/// stopped, so a coordinator restart only delays the task.
pub(crate) async fn obtain(
    client: &Client,
    cache: &ArtifactCache,
    hash: &str,
    control: &TaskControl,
) -> Result<Arc<Vec<u8>>, TransferError> {
    check_hash(hash).map_err(|e| TransferError::Failed(e.to_string()))?;
    let local = {
        let (cache, hash) = (cache.clone(), hash.to_string());
        tokio::task::spawn_blocking(move || cache.get(&hash)).await
    };
    match local {
        Ok(Ok(Some(bytes))) => {
            tracing::debug!(%hash, bytes = bytes.len(), "artifact found in the local cache");
            return Ok(bytes);
        }
        Ok(Ok(None)) => {}
        // An unreadable cache is not fatal: the coordinator has the bytes.
        Ok(Err(e)) => tracing::warn!(%hash, error = %e, "cannot read the artifact cache"),
        Err(e) => tracing::warn!(%hash, error = %e, "cache lookup did not finish"),
    }
    let mut backoff = Backoff::new();
    let mut corrupt = 0;
    loop {
        if control.is_stopped() {
            return Err(TransferError::Stopped);
        }
        match download_once(client.clone(), hash).await {
            Ok(bytes) => match verify(hash, &bytes) {
                Ok(()) => {
                    tracing::debug!(%hash, bytes = bytes.len(), "artifact downloaded");
                    let cache = cache.clone();
                    let stored = tokio::task::spawn_blocking(move || {
                        let r = cache.put(&bytes);
                        (Arc::new(bytes), r)
                    })
                    .await;
                    return match stored {
                        Ok((bytes, Ok(_))) => Ok(bytes),
                        Ok((bytes, Err(e))) => {
                            tracing::warn!(%hash, error = %e, "cannot cache the downloaded artifact");
                            Ok(bytes)
                        }
                        Err(e) => Err(TransferError::Failed(format!(
                            "storing artifact {hash} did not finish: {e}"
                        ))),
                    };
                }
                Err(e) => {
                    corrupt += 1;
                    tracing::warn!(%hash, error = %e, attempt = corrupt, "downloaded artifact is corrupt");
                    if corrupt >= CORRUPT_DOWNLOADS {
                        return Err(TransferError::Failed(format!(
                            "{e} ({corrupt} downloads in a row)"
                        )));
                    }
                }
            },
            Err(status) => match rpc::classify(&status) {
                Refusal::Transient => {
                    tracing::warn!(%hash, error = %rpc::describe(&status), "artifact download failed; retrying");
                }
                Refusal::NotFound => {
                    return Err(TransferError::Failed(format!(
                        "the coordinator has no artifact {hash}"
                    )))
                }
                _ => {
                    return Err(TransferError::Failed(format!(
                        "downloading artifact {hash}: {}",
                        rpc::describe(&status)
                    )))
                }
            },
        }
        tokio::time::sleep(backoff.next_delay()).await;
    }
}

/// One download; each chunk must arrive within [`rpc::RPC_TIMEOUT`].
async fn download_once(mut client: Client, hash: &str) -> Result<Vec<u8>, tonic::Status> {
    let mut stream = rpc::call(
        rpc::RPC_TIMEOUT,
        client.download_artifact(pb::DownloadArtifactRequest {
            hash: hash.to_string(),
        }),
    )
    .await?;
    let mut bytes = Vec::new();
    let mut announced = None;
    loop {
        let next = tokio::time::timeout(rpc::RPC_TIMEOUT, stream.message())
            .await
            .map_err(|_| {
                tonic::Status::deadline_exceeded(format!(
                    "artifact {hash}: no chunk within {:?}",
                    rpc::RPC_TIMEOUT
                ))
            })??;
        let Some(chunk) = next else { break };
        if announced.is_none() {
            announced = Some(chunk.size);
            // Reserve what was announced, within reason: the size is only a
            // hint from the wire.
            bytes.reserve(chunk.size.min(1 << 30) as usize);
        }
        bytes.extend_from_slice(&chunk.data);
        if let Some(size) = announced.filter(|&s| s > 0 && bytes.len() as u64 > s) {
            return Err(tonic::Status::data_loss(format!(
                "artifact {hash}: more bytes than the {size} announced"
            )));
        }
    }
    Ok(bytes)
}

/// Uploads `bytes` and returns their hash once the coordinator has stored
/// them. Transport failures are retried (the whole upload: the coordinator
/// keeps nothing of a broken one) until the task is stopped. `hash`, if
/// given, is the bytes' hash already computed (else it is computed here).
pub(crate) async fn upload(
    client: &Client,
    bytes: Arc<Vec<u8>>,
    hash: Option<String>,
    control: &TaskControl,
) -> Result<String, TransferError> {
    let hash = match hash {
        Some(h) => h,
        None => artifact::content_hash(&bytes),
    };
    let mut backoff = Backoff::new();
    loop {
        if control.is_stopped() {
            return Err(TransferError::Stopped);
        }
        match upload_once(client.clone(), bytes.clone(), &hash).await {
            Ok(stored) if stored.eq_ignore_ascii_case(&hash) => {
                tracing::debug!(%hash, bytes = bytes.len(), "artifact uploaded");
                return Ok(hash);
            }
            Ok(stored) => {
                return Err(TransferError::Failed(format!(
                    "the coordinator stored artifact {hash} as {stored}"
                )))
            }
            Err(status) if rpc::classify(&status) == Refusal::Transient => {
                tracing::warn!(%hash, error = %rpc::describe(&status), "artifact upload failed; retrying");
            }
            Err(status) => {
                return Err(TransferError::Failed(format!(
                    "uploading artifact {hash} ({} bytes): {}",
                    bytes.len(),
                    rpc::describe(&status)
                )))
            }
        }
        tokio::time::sleep(backoff.next_delay()).await;
    }
}

/// The chunks of one upload: the first carries the hash and total size
/// (and is sent even for an empty artifact).
pub(crate) fn chunks(
    bytes: Arc<Vec<u8>>,
    hash: String,
) -> impl Iterator<Item = pb::ArtifactChunk> + Send + 'static {
    let n = bytes.len().div_ceil(CHUNK).max(1);
    let size = bytes.len() as u64;
    (0..n).map(move |i| {
        let lo = (i * CHUNK).min(bytes.len());
        let hi = (lo + CHUNK).min(bytes.len());
        pb::ArtifactChunk {
            hash: if i == 0 { hash.clone() } else { String::new() },
            size: if i == 0 { size } else { 0 },
            data: bytes[lo..hi].to_vec(),
        }
    })
}

async fn upload_once(
    mut client: Client,
    bytes: Arc<Vec<u8>>,
    hash: &str,
) -> Result<String, tonic::Status> {
    // A generous deadline: one minute plus a second per MiB.
    let limit = Duration::from_secs(60 + (bytes.len() / CHUNK) as u64);
    let stream = futures::stream::iter(chunks(bytes, hash.to_string()));
    rpc::call(limit, client.upload_artifact(stream))
        .await
        .map(|r| r.hash)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cache_stores_verifies_and_drops_corrupt_copies() {
        let dir = tempfile::tempdir().unwrap();
        let cache = ArtifactCache::new(dir.path().join("nested"));
        let bytes = b"not really safetensors, but bytes all the same".to_vec();
        let hash = artifact::content_hash(&bytes);

        assert!(cache.get(&hash).unwrap().is_none(), "empty cache");
        assert_eq!(cache.put(&bytes).unwrap(), hash);
        assert_eq!(cache.get(&hash).unwrap().as_deref(), Some(&bytes));
        assert_eq!(
            cache.get(&hash.to_ascii_uppercase()).unwrap().as_deref(),
            Some(&bytes),
            "hashes are case-insensitive"
        );

        // A copy altered on disk is not used, and is removed so that the
        // next download can be stored in its place.
        let path = cache.dir().join(format!("{hash}.safetensors"));
        std::fs::write(&path, b"tampered").unwrap();
        assert!(cache.get(&hash).unwrap().is_none());
        assert!(!path.exists());
        assert_eq!(cache.put(&bytes).unwrap(), hash);
        assert!(cache.get(&hash).unwrap().is_some());

        let err = cache.get("../../etc/passwd").unwrap_err().to_string();
        assert!(err.contains("not a SHA-256"), "{err}");
    }

    #[test]
    fn a_kept_checkpoint_is_handed_on_from_memory_and_the_oldest_make_room() {
        let dir = tempfile::tempdir().unwrap();
        let mut cache = ArtifactCache::new(dir.path());
        cache.kept_bytes = 1000;
        let made: Vec<Vec<u8>> = (0..=KEPT)
            .map(|i| format!("checkpoint {i}").into_bytes())
            .collect();
        let hashes: Vec<String> = made
            .iter()
            .map(|b| cache.keep(Arc::new(b.clone())).unwrap())
            .collect();
        for (bytes, hash) in made.iter().zip(&hashes) {
            assert_eq!(*hash, artifact::content_hash(bytes));
            // On disk too, for a restarted worker.
            assert_eq!(std::fs::read(cache.file(hash)).unwrap(), *bytes);
        }
        // With the files gone, the newest KEPT are still there, in memory
        // (the same bytes, not read again); the oldest is not.
        for hash in &hashes {
            std::fs::remove_file(cache.file(hash)).unwrap();
        }
        assert!(
            cache.get(&hashes[0]).unwrap().is_none(),
            "the oldest made room"
        );
        for (bytes, hash) in made.iter().zip(&hashes).skip(1) {
            assert_eq!(cache.get(hash).unwrap().as_deref(), Some(bytes));
        }
        // Keeping one again does not hold it twice.
        cache.keep(Arc::new(made[KEPT].clone())).unwrap();
        assert_eq!(cache.kept().len(), KEPT);

        // Nor more bytes than its budget: one that large leaves only itself.
        let big = Arc::new(vec![7u8; 1000]);
        let big_hash = cache.keep(big.clone()).unwrap();
        assert_eq!(cache.kept().len(), 1);
        assert!(Arc::ptr_eq(&cache.get(&big_hash).unwrap().unwrap(), &big));
    }

    #[test]
    fn verify_names_the_mismatch() {
        let bytes = b"abc";
        let hash = artifact::content_hash(bytes);
        verify(&hash, bytes).unwrap();
        let err = verify(&hash, b"abd").unwrap_err().to_string();
        assert!(err.contains(&hash) && err.contains("3 bytes"), "{err}");
        assert!(verify("zz", bytes).is_err());
    }

    #[test]
    fn uploads_are_cut_in_chunks_and_only_the_first_names_the_artifact() {
        let bytes: Vec<u8> = (0..(2 * CHUNK + 10)).map(|i| i as u8).collect();
        let all: Vec<_> = chunks(Arc::new(bytes.clone()), "h".into()).collect();
        assert_eq!(all.len(), 3);
        assert_eq!(
            (all[0].hash.as_str(), all[0].size),
            ("h", bytes.len() as u64)
        );
        assert!(all[1..].iter().all(|c| c.hash.is_empty() && c.size == 0));
        let joined: Vec<u8> = all.iter().flat_map(|c| c.data.clone()).collect();
        assert_eq!(joined, bytes);

        let empty: Vec<_> = chunks(Arc::new(Vec::new()), "e".into()).collect();
        assert_eq!(empty.len(), 1);
        assert_eq!((empty[0].hash.as_str(), empty[0].size), ("e", 0));
    }
}
