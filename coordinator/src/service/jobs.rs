//! `JobService`: what researchers and their tools call.

use std::pin::Pin;
use std::sync::Arc;

use futures::Stream;
use ridgeline_common::job::JobFormat;
use ridgeline_common::proto::v1 as pb;
use ridgeline_common::proto::v1::job_service_server::JobService;
use tokio::sync::{broadcast, mpsc, Semaphore};
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};

use super::blocking;
use crate::auth::{self, Tokens};
use crate::scheduler::{is_terminal, Scheduler};

pub struct JobApi {
    pub scheduler: Arc<Scheduler>,
    /// Ends open watch streams when the server shuts down (otherwise a
    /// graceful shutdown would wait for every watched job to finish).
    pub shutdown: CancellationToken,
    pub tokens: Arc<Tokens>,
    /// Open watch streams (`watchers_limit` permits): each holds a
    /// subscription to every job's events and a task.
    pub watchers: Arc<Semaphore>,
    pub watchers_limit: usize,
}

type EventStream = Pin<Box<dyn Stream<Item = Result<pb::JobEvent, Status>> + Send>>;

#[tonic::async_trait]
impl JobService for JobApi {
    async fn submit_job(
        &self,
        req: Request<pb::SubmitJobRequest>,
    ) -> Result<Response<pb::SubmitJobResponse>, Status> {
        self.tokens.check(&req, auth::CLIENT, "SubmitJob")?;
        let req = req.into_inner();
        let format = match pb::JobFormat::try_from(req.format) {
            Ok(pb::JobFormat::Json) => JobFormat::Json,
            Ok(pb::JobFormat::Toml | pb::JobFormat::Unspecified) => JobFormat::Toml,
            Err(_) => {
                return Err(Status::invalid_argument(format!(
                    "`format`: {} is not a job format",
                    req.format
                )))
            }
        };
        let s = self.scheduler.clone();
        let planned = {
            let s = s.clone();
            blocking(move || s.plan_job(&req.text, format)).await?
        };
        let id = s.submit(planned).await?;
        Ok(Response::new(pb::SubmitJobResponse {
            job_id: id.to_string(),
        }))
    }

    async fn get_job(
        &self,
        req: Request<pb::GetJobRequest>,
    ) -> Result<Response<pb::JobStatus>, Status> {
        self.tokens.check(&req, auth::CLIENT, "GetJob")?;
        Ok(Response::new(
            self.scheduler.job_status(&req.into_inner().job_id)?,
        ))
    }

    async fn list_jobs(
        &self,
        req: Request<pb::ListJobsRequest>,
    ) -> Result<Response<pb::ListJobsResponse>, Status> {
        self.tokens.check(&req, auth::CLIENT, "ListJobs")?;
        let s = self.scheduler.clone();
        Ok(Response::new(pb::ListJobsResponse {
            jobs: blocking(move || s.list_jobs()).await?,
        }))
    }

    type WatchJobStream = EventStream;

    async fn watch_job(
        &self,
        req: Request<pb::WatchJobRequest>,
    ) -> Result<Response<EventStream>, Status> {
        self.tokens.check(&req, auth::CLIENT, "WatchJob")?;
        let slot = self.watchers.clone().try_acquire_owned().map_err(|_| {
            Status::resource_exhausted(format!(
                "{} watch streams are open, the most this coordinator serves at once; close one or retry later",
                self.watchers_limit
            ))
        })?;
        let job_id = req.into_inner().job_id;
        // Subscribe before reading the log, so nothing falls in between.
        let mut live = self.scheduler.subscribe();
        let s = self.scheduler.clone();
        let snapshot = blocking(move || s.job_status(&job_id)).await?;
        let shutdown = self.shutdown.clone();
        let job_id = snapshot.job_id.clone();
        let (tx, rx) = mpsc::channel(256);
        let sched = self.scheduler.clone();
        tokio::spawn(async move {
            // Held for as long as the stream is served.
            let _slot = slot;
            let first = pb::JobEvent {
                seq: 0,
                unix_ms: crate::scheduler::now_ms(),
                kind: Some(pb::job_event::Kind::Snapshot(snapshot)),
            };
            if tx.send(Ok(first)).await.is_err() {
                return;
            }
            let mut last = 0u64;
            let Some(mut ended) = catch_up(&sched, &job_id, &mut last, &tx).await else {
                return;
            };
            while !ended {
                let received = tokio::select! {
                    r = live.recv() => r,
                    // The watcher went away: stop at once, not at the next
                    // event of this job (which may never come).
                    _ = tx.closed() => return,
                    _ = shutdown.cancelled() => {
                        let _ = tx.send(Err(Status::unavailable("the coordinator is shutting down; watch again"))).await;
                        return;
                    }
                };
                match received {
                    Ok(p) if p.job_id != job_id => {}
                    // Already sent.
                    Ok(p) if p.event.seq <= last => {}
                    Ok(p) if p.event.seq == last + 1 => {
                        last = p.event.seq;
                        ended = matches!(&p.event.kind, Some(pb::job_event::Kind::Job(j))
                            if is_terminal_pb(j.state));
                        if tx.send(Ok(p.event)).await.is_err() {
                            return;
                        }
                    }
                    // A gap (published out of order) or missed events
                    // (lagged): fill in from the stored log.
                    Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {
                        match catch_up(&sched, &job_id, &mut last, &tx).await {
                            Some(e) => ended = e,
                            None => return,
                        }
                    }
                    Err(broadcast::error::RecvError::Closed) => return,
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn cancel_job(
        &self,
        req: Request<pb::CancelJobRequest>,
    ) -> Result<Response<pb::CancelJobResponse>, Status> {
        self.tokens.check(&req, auth::CLIENT, "CancelJob")?;
        let s = self.scheduler.clone();
        let id = req.into_inner().job_id;
        let state = s.cancel(&id).await?;
        Ok(Response::new(pb::CancelJobResponse {
            state: state as i32,
        }))
    }

    async fn list_workers(
        &self,
        req: Request<pb::ListWorkersRequest>,
    ) -> Result<Response<pb::ListWorkersResponse>, Status> {
        self.tokens.check(&req, auth::CLIENT, "ListWorkers")?;
        let s = self.scheduler.clone();
        Ok(Response::new(pb::ListWorkersResponse {
            workers: blocking(move || s.workers()).await?,
        }))
    }

    async fn get_results(
        &self,
        req: Request<pb::GetResultsRequest>,
    ) -> Result<Response<pb::JobResults>, Status> {
        self.tokens.check(&req, auth::CLIENT, "GetResults")?;
        let s = self.scheduler.clone();
        let id = req.into_inner().job_id;
        Ok(Response::new(blocking(move || s.results(&id)).await?))
    }
}

/// Sends the stored events after `last` and advances it. Returns whether
/// the job has ended, or `None` when the stream is over (watcher gone or
/// error sent).
async fn catch_up(
    sched: &Arc<Scheduler>,
    job_id: &str,
    last: &mut u64,
    tx: &mpsc::Sender<Result<pb::JobEvent, Status>>,
) -> Option<bool> {
    let (s, id, after) = (sched.clone(), job_id.to_string(), *last);
    let (events, ended) = match blocking(move || s.events_after(&id, after)).await {
        Ok(x) => x,
        Err(e) => {
            let _ = tx.send(Err(e)).await;
            return None;
        }
    };
    for e in events {
        *last = e.seq;
        tx.send(Ok(e)).await.ok()?;
    }
    Some(ended)
}

fn is_terminal_pb(state: i32) -> bool {
    let s = match pb::JobState::try_from(state) {
        Ok(pb::JobState::Succeeded) => "succeeded",
        Ok(pb::JobState::Failed) => "failed",
        Ok(pb::JobState::Cancelled) => "cancelled",
        _ => "",
    };
    is_terminal(s)
}
