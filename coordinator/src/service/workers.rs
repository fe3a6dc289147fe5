//! `WorkerService`: what workers call. Every mutating call is answered only
//! after its change is committed to the store.

use std::pin::Pin;
use std::sync::Arc;

use futures::{Stream, StreamExt};
use ridgeline_common::proto::v1 as pb;
use ridgeline_common::proto::v1::worker_service_server::WorkerService;
use tokio::io::AsyncReadExt;
use tokio::sync::{mpsc, Semaphore};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Code, Request, Response, Status, Streaming};
use tracing::Instrument;

use crate::artifacts::{check_hash, ArtifactStore};
use crate::auth::{self, Tokens};
use crate::scheduler::Scheduler;

/// Chunk size of artifact downloads.
const CHUNK: usize = 1 << 20;

pub struct WorkerApi {
    pub scheduler: Arc<Scheduler>,
    pub artifacts: Arc<ArtifactStore>,
    /// Largest artifact accepted by UploadArtifact.
    pub max_artifact_bytes: u64,
    pub tokens: Arc<Tokens>,
    /// Uploads in progress at once (`uploads_limit` permits).
    pub uploads: Arc<Semaphore>,
    pub uploads_limit: usize,
}

type ChunkStream = Pin<Box<dyn Stream<Item = Result<pb::ArtifactChunk, Status>> + Send>>;

/// An id from the wire as a log field: as sent when it looks like an id,
/// else escaped and cut short (nothing has checked it yet).
fn wire_id(s: &str) -> String {
    if s.len() <= 64 && s.chars().all(|c| c.is_ascii_graphic()) {
        s.to_string()
    } else {
        let cut: String = s.chars().take(64).collect();
        format!("{cut:?}…")
    }
}

/// Runs a scheduler call inside `span` (whose fields name the worker and
/// the task; the store's writer enters it too while it runs the change), so
/// that the scheduler's log lines carry them; a refused call is logged
/// there as well.
async fn in_span<T>(
    span: tracing::Span,
    call: impl std::future::Future<Output = crate::error::Result<T>>,
) -> Result<T, Status> {
    let result: Result<T, Status> = call.instrument(span.clone()).await.map_err(Status::from);
    if let Err(status) = &result {
        span.in_scope(|| match status.code() {
            Code::Internal | Code::Unknown | Code::DataLoss => {
                tracing::error!(code = ?status.code(), error = %status.message(), "call failed")
            }
            Code::ResourceExhausted | Code::Unavailable => {
                tracing::warn!(code = ?status.code(), error = %status.message(), "call refused")
            }
            _ => tracing::info!(code = ?status.code(), error = %status.message(), "call refused"),
        });
    }
    result
}

#[tonic::async_trait]
impl WorkerService for WorkerApi {
    async fn register(
        &self,
        req: Request<pb::RegisterRequest>,
    ) -> Result<Response<pb::RegisterResponse>, Status> {
        self.tokens.check(&req, auth::WORKER, "Register")?;
        let req = req.into_inner();
        Ok(Response::new(self.scheduler.register(req).await?))
    }

    async fn lease(
        &self,
        req: Request<pb::LeaseRequest>,
    ) -> Result<Response<pb::LeaseResponse>, Status> {
        self.tokens.check(&req, auth::WORKER, "Lease")?;
        let req = req.into_inner();
        let span = tracing::info_span!(
            "rpc",
            method = "Lease",
            worker_id = %wire_id(&req.worker_id),
            free_slots = req.free_slots,
            running = req.running.len()
        );
        let answer = in_span(span.clone(), self.scheduler.lease(req)).await?;
        span.in_scope(|| tracing::debug!(leased = answer.tasks.len(), "lease answered"));
        Ok(Response::new(answer))
    }

    async fn report(
        &self,
        req: Request<pb::ReportRequest>,
    ) -> Result<Response<pb::ReportResponse>, Status> {
        self.tokens.check(&req, auth::WORKER, "Report")?;
        let req = req.into_inner();
        let span = tracing::info_span!(
            "rpc",
            method = "Report",
            worker_id = %wire_id(&req.worker_id),
            task_id = %wire_id(&req.task_id),
            attempt = req.attempt,
            seq = req.seq
        );
        let items = req.items.len();
        let answer = in_span(span.clone(), self.scheduler.report(req)).await?;
        span.in_scope(|| tracing::debug!(items, stored = answer.stored, "report answered"));
        Ok(Response::new(answer))
    }

    async fn complete(
        &self,
        req: Request<pb::CompleteRequest>,
    ) -> Result<Response<pb::CompleteResponse>, Status> {
        self.tokens.check(&req, auth::WORKER, "Complete")?;
        let req = req.into_inner();
        let span = tracing::info_span!(
            "rpc",
            method = "Complete",
            worker_id = %wire_id(&req.worker_id),
            task_id = %wire_id(&req.task_id),
            attempt = req.attempt
        );
        let answer = in_span(span.clone(), self.scheduler.complete(req)).await?;
        span.in_scope(|| tracing::debug!(leased = answer.tasks.len(), "complete answered"));
        Ok(Response::new(answer))
    }

    async fn fail(
        &self,
        req: Request<pb::FailRequest>,
    ) -> Result<Response<pb::FailResponse>, Status> {
        self.tokens.check(&req, auth::WORKER, "Fail")?;
        let req = req.into_inner();
        let span = tracing::info_span!(
            "rpc",
            method = "Fail",
            worker_id = %wire_id(&req.worker_id),
            task_id = %wire_id(&req.task_id),
            attempt = req.attempt,
            retryable = req.retryable,
            handed_back = req.handed_back
        );
        in_span(span, self.scheduler.fail(req)).await?;
        Ok(Response::new(pb::FailResponse {}))
    }

    async fn start_queued(
        &self,
        req: Request<pb::StartQueuedRequest>,
    ) -> Result<Response<pb::StartQueuedResponse>, Status> {
        self.tokens.check(&req, auth::WORKER, "StartQueued")?;
        let req = req.into_inner();
        let span = tracing::info_span!(
            "rpc",
            method = "StartQueued",
            worker_id = %wire_id(&req.worker_id),
            task_id = %wire_id(&req.task_id),
            attempt = req.attempt
        );
        let answer = in_span(span.clone(), self.scheduler.start_queued(req)).await?;
        span.in_scope(|| tracing::debug!(start = answer.start, "start answered"));
        Ok(Response::new(answer))
    }

    type DownloadArtifactStream = ChunkStream;

    async fn download_artifact(
        &self,
        req: Request<pb::DownloadArtifactRequest>,
    ) -> Result<Response<ChunkStream>, Status> {
        self.tokens.check(&req, auth::ANY, "DownloadArtifact")?;
        let hash = check_hash(&req.into_inner().hash)?;
        let path = self.artifacts.path(&hash)?;
        let mut file = tokio::fs::File::open(&path)
            .await
            .map_err(|_| Status::not_found(format!("no artifact {hash}")))?;
        let size = file
            .metadata()
            .await
            .map_err(|e| Status::internal(e.to_string()))?
            .len();
        let (tx, rx) = mpsc::channel(4);
        tokio::spawn(async move {
            let mut first = true;
            loop {
                let mut buf = vec![0u8; CHUNK];
                let n = match file.read(&mut buf).await {
                    Ok(n) => n,
                    Err(e) => {
                        let _ = tx
                            .send(Err(Status::internal(format!(
                                "reading artifact {hash}: {e}"
                            ))))
                            .await;
                        return;
                    }
                };
                if n == 0 && !first {
                    return;
                }
                buf.truncate(n);
                let chunk = pb::ArtifactChunk {
                    hash: if first { hash.clone() } else { String::new() },
                    size: if first { size } else { 0 },
                    data: buf,
                };
                first = false;
                if tx.send(Ok(chunk)).await.is_err() || n == 0 {
                    return;
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn upload_artifact(
        &self,
        req: Request<Streaming<pb::ArtifactChunk>>,
    ) -> Result<Response<pb::UploadArtifactResponse>, Status> {
        self.tokens.check(&req, auth::ANY, "UploadArtifact")?;
        // Each upload holds a temporary file of up to max_artifact_bytes.
        let _slot = self.uploads.clone().try_acquire_owned().map_err(|_| {
            Status::resource_exhausted(format!(
                "{} uploads are in progress, the most this coordinator takes at once; retry shortly",
                self.uploads_limit
            ))
        })?;
        let mut stream = req.into_inner();
        let first = stream.next().await.ok_or_else(|| {
            Status::invalid_argument("`hash`: is missing (the upload sent no chunk)")
        })??;
        let hash = check_hash(&first.hash)?;
        if first.size > self.max_artifact_bytes {
            // Refused before a byte more is read. OUT_OF_RANGE, not
            // RESOURCE_EXHAUSTED: resending the same file cannot help.
            return Err(Status::out_of_range(format!(
                "`size`: an artifact of {} bytes is over the limit of {} bytes",
                first.size, self.max_artifact_bytes
            )));
        }
        // Already in place: nothing to store (and nothing to record: the
        // transaction that refers to it does, see `crate::artifacts`).
        if self.artifacts.size(&hash)?.is_some() {
            return Ok(Response::new(pb::UploadArtifactResponse { hash }));
        }
        let mut up = self.artifacts.begin(&hash, first.size).await?;
        up.write(&first.data).await?;
        while let Some(chunk) = stream.next().await {
            up.write(&chunk?.data).await?;
        }
        let size = up.finish().await?;
        tracing::debug!(%hash, size, "artifact stored");
        Ok(Response::new(pb::UploadArtifactResponse { hash }))
    }
}
