//! One task attempt from assignment to its last word to the coordinator:
//! fetch what it needs, run the engine on a blocking thread, upload the
//! checkpoint, wait until every measurement was acknowledged, then
//! `Complete` — or `Fail`, or nothing at all when the attempt is no longer
//! ours.

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::time::Duration;

use ridgeline_common::claims::Ride;
use ridgeline_common::proto::v1 as pb;
use ridgeline_common::task::{DirectionSpec, TaskSpec};
use ridgeline_common::RunOutcome;
use tokio::time::Instant;
use tracing::Instrument;

use super::artifacts::{self, TransferError};
use super::reporter::{Held, Reporter, ReporterEnd};
use super::rpc::{self, Backoff, Refusal};
use super::work::{self, Searched, Trained};
use super::{Freed, Shared};

/// The message of the `Fail` sent for each task abandoned at shutdown.
pub(crate) const SHUTDOWN_MESSAGE: &str = "worker shutting down";

/// How long a `Fail` may take once the worker is past its shutdown grace:
/// the coordinator hears about abandoned tasks at once when it can, and a
/// coordinator that is away will let their leases expire instead.
pub(crate) const FAIL_GRACE: Duration = Duration::from_secs(5);

/// Why a task was asked to stop. The first reason wins.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum StopReason {
    /// The coordinator said so (job cancelled, or the lease is gone).
    Coordinator = 1,
    /// A report was refused because the attempt is no longer ours.
    LeaseLost = 2,
    /// A report was refused for good; the attempt is failed.
    Refused = 3,
    /// The worker is shutting down and its grace is over.
    Shutdown = 4,
    /// The attempt is over and everything owed was said (set last, so a
    /// late stop from the coordinator is recognised as moot).
    Finished = 5,
}

/// The cancel flag of one task attempt, shared by the lease loop, the
/// reporter and the engine's thread (which reads it before every step).
#[derive(Debug, Default)]
pub struct TaskControl {
    reason: AtomicU8,
}

impl TaskControl {
    pub fn new() -> Self {
        Self::default()
    }

    /// Asks the task to stop; a reason given earlier is kept.
    pub fn stop(&self, why: StopReason) {
        let _ = self
            .reason
            .compare_exchange(0, why as u8, Ordering::AcqRel, Ordering::Acquire);
    }

    pub fn is_stopped(&self) -> bool {
        self.reason.load(Ordering::Acquire) != 0
    }

    pub fn reason(&self) -> Option<StopReason> {
        match self.reason.load(Ordering::Acquire) {
            1 => Some(StopReason::Coordinator),
            2 => Some(StopReason::LeaseLost),
            3 => Some(StopReason::Refused),
            4 => Some(StopReason::Shutdown),
            5 => Some(StopReason::Finished),
            _ => None,
        }
    }
}

/// How an attempt ended, and so what is still owed to the coordinator.
#[derive(Debug)]
enum Ending {
    /// `Complete` was acknowledged, with the tasks it leased for this
    /// worker's next turn.
    Completed(Vec<pb::TaskAssignment>),
    /// Stopped by the coordinator, or the attempt is no longer ours: nothing
    /// more may be said about it.
    Stopped,
    /// A `Fail` is owed.
    Failed { message: String, retryable: bool },
    /// The worker is shutting down: a retryable `Fail` is owed so the
    /// coordinator re-queues the task at once.
    Shutdown,
}

/// What the engine's thread hands back.
enum Output {
    /// With its checkpoint, if it made one, and the checkpoint's hash
    /// (computed when it was put in the local cache, and not again for the
    /// upload).
    Trained(Trained, Option<(Arc<Vec<u8>>, Option<String>)>),
    Searched(Searched),
}

/// The span every log line of a task attempt carries: its ids, and the id
/// of the worker it was leased to (the worker's own span, its parent, has
/// the current one should the coordinator hand out a new id meanwhile).
fn task_span(shared: &Shared, assignment: &pb::TaskAssignment) -> tracing::Span {
    let worker_id = shared.worker_id.borrow().clone();
    tracing::info_span!(
        "task",
        job_id = %assignment.job_id,
        task_id = %assignment.task_id,
        attempt = assignment.attempt,
        worker_id = %worker_id
    )
}

/// Runs one task attempt to its end. Never panics on what it was sent;
/// everything that goes wrong becomes a `Fail`. Returns the tasks that
/// `Complete` leased for the slot this one frees (for the lease loop to
/// start).
pub(crate) async fn run(
    shared: Arc<Shared>,
    assignment: pb::TaskAssignment,
    control: Arc<TaskControl>,
    queued: Duration,
    claim: Option<Ride>,
) -> Vec<pb::TaskAssignment> {
    let span = task_span(&shared, &assignment);
    async move {
        let started = Instant::now();
        shared.metrics.task_started();
        if !queued.is_zero() {
            tracing::info!(?queued, "started a task leased ahead");
        }
        let ending = tokio::select! {
            biased;
            () = shared.hard_stop.cancelled() => Ending::Shutdown,
            ending = execute(&shared, &assignment, &control, queued, claim) => ending,
        };
        let ending = match ending {
            Ending::Stopped if control.reason() == Some(StopReason::Shutdown) => Ending::Shutdown,
            e => e,
        };
        let elapsed = started.elapsed();
        shared.metrics.task_finished(match &ending {
            Ending::Completed(_) => "completed",
            Ending::Stopped => "stopped",
            Ending::Failed { .. } => "failed",
            Ending::Shutdown => "shutdown",
        });
        let mut next = vec![];
        match ending {
            Ending::Completed(tasks) => {
                tracing::info!(?elapsed, next = tasks.len(), "task completed");
                next = tasks;
            }
            Ending::Stopped => tracing::info!(?elapsed, reason = ?control.reason(), "task stopped"),
            Ending::Failed { message, retryable } => {
                tracing::warn!(?elapsed, %message, retryable, "task failed");
                fail(
                    &shared,
                    &assignment,
                    &control,
                    &message,
                    FailKind::failure(retryable),
                )
                .await;
            }
            Ending::Shutdown => {
                control.stop(StopReason::Shutdown);
                // A task the coordinator had already stopped is owed nothing.
                if control.reason() == Some(StopReason::Shutdown) {
                    tracing::warn!(?elapsed, "task abandoned: the worker is shutting down");
                    fail(
                        &shared,
                        &assignment,
                        &control,
                        SHUTDOWN_MESSAGE,
                        FailKind::HandBack,
                    )
                    .await;
                } else {
                    tracing::info!(?elapsed, reason = ?control.reason(), "task stopped");
                }
            }
        }
        control.stop(StopReason::Finished);
        next
    }
    .instrument(span)
    .await
}

/// Hands a task straight back (assigned while shutting down).
pub(crate) async fn refuse(
    shared: Arc<Shared>,
    assignment: pb::TaskAssignment,
    control: Arc<TaskControl>,
) -> Vec<pb::TaskAssignment> {
    let span = task_span(&shared, &assignment);
    async move {
        tracing::info!("handing back a task assigned during shutdown");
        fail(
            &shared,
            &assignment,
            &control,
            SHUTDOWN_MESSAGE,
            FailKind::HandBack,
        )
        .await;
        vec![]
    }
    .instrument(span)
    .await
}

/// How many times a StartQueued that got no answer is tried.
const START_TRIES: u32 = 3;

/// How long a finishing task's Complete waits for the lease loop to start
/// the queued task that takes its slot (normally microseconds), so that it
/// carries that task's claim.
const STARTED_WAIT: Duration = Duration::from_millis(20);

/// Learns whether a task leased ahead is still this worker's, i.e. was
/// not taken back for another worker: from the `Complete` that carried its
/// claim, else by asking `StartQueued`. `None`: it is (or the coordinator
/// could not be asked: then, should it have been taken back, its reports
/// are refused and it stops). Else the task is stopped, and this is how it
/// ends.
async fn confirm_start(
    shared: &Arc<Shared>,
    assignment: &pb::TaskAssignment,
    control: &Arc<TaskControl>,
    claim: Option<Ride>,
) -> Option<Ending> {
    let taken_back = |answer: pb::StartQueuedResponse| {
        tracing::info!(reason = %answer.reason, "a queued task was taken back: dropped unstarted");
        control.stop(StopReason::LeaseLost);
        Some(Ending::Stopped)
    };
    if let Some(claim) = claim {
        match claim.answer().await {
            Some(answer) if answer.start => return None,
            Some(answer) => return taken_back(answer),
            None => {}
        }
    }
    let mut backoff = Backoff::new();
    let mut tries = 0;
    loop {
        tries += 1;
        let request = pb::StartQueuedRequest {
            worker_id: shared.worker_id.borrow().clone(),
            task_id: assignment.task_id.clone(),
            attempt: assignment.attempt,
        };
        let status = match rpc::call(
            rpc::RPC_TIMEOUT,
            shared.client.clone().start_queued(request),
        )
        .await
        {
            Ok(answer) if answer.start => return None,
            Ok(answer) => return taken_back(answer),
            Err(status) => status,
        };
        match rpc::classify(&status) {
            Refusal::NotFound => {
                tracing::warn!(error = %rpc::describe(&status), "a queued task is unknown to the coordinator: dropped unstarted");
                control.stop(StopReason::LeaseLost);
                return Some(Ending::Stopped);
            }
            _ if control.is_stopped() => return Some(Ending::Stopped),
            Refusal::Transient if tries < START_TRIES => {
                tokio::time::sleep(backoff.next_delay()).await;
            }
            _ => {
                tracing::warn!(error = %rpc::describe(&status), "could not confirm the start of a queued task; starting it");
                return None;
            }
        }
    }
}

async fn execute(
    shared: &Arc<Shared>,
    assignment: &pb::TaskAssignment,
    control: &Arc<TaskControl>,
    queued: Duration,
    claim: Option<Ride>,
) -> Ending {
    // A task leased ahead claims its start (the claim rides with the
    // Complete of the task that freed its slot, or goes as StartQueued) and
    // does not wait for the answer: it is needed only before the upload and
    // Complete. A refusal stops the task at its next step, so a task taken
    // back costs this worker a round trip of work, never a whole chunk; and
    // whatever it reported meanwhile is refused, or deleted by the take-back
    // (which the coordinator commits after it answered).
    let confirmed = assignment.queued.then(|| {
        let (shared, assignment, control) = (shared.clone(), assignment.clone(), control.clone());
        tokio::spawn(async move { confirm_start(&shared, &assignment, &control, claim).await })
    });
    let mut spec = match TaskSpec::from_json(&assignment.spec_json) {
        Ok(s) => s,
        Err(e) => {
            return Ending::Failed {
                message: format!("the task spec cannot be read by this worker: {e}"),
                retryable: false,
            }
        }
    };
    let needed = match &spec {
        TaskSpec::Train(t) => {
            tracing::info!(curve = %t.curve, from_epoch = t.from_epoch, to_epoch = t.to_epoch, "training chunk started");
            t.checkpoint.clone()
        }
        TaskSpec::LineSearch(t) => {
            tracing::info!(curve = %t.curve, points = t.points.len(), "line search started");
            match &t.direction {
                DirectionSpec::Toward { weights } => Some(weights.clone()),
                _ => None,
            }
        }
    };
    // Data files uploaded to the coordinator (`artifact:<sha256>`): fetch
    // them (or find them in the cache, verified) and read the cached copy.
    let data = match &mut spec {
        TaskSpec::Train(t) => &mut t.run.data,
        TaskSpec::LineSearch(t) => &mut t.run.data,
    };
    for file in data.source.files_mut() {
        let Some(hash) = ridgeline_common::spec::artifact_hash(file).map(str::to_string) else {
            // A path: only inside this worker's data roots.
            if let Err(message) = shared.data_roots.check(file) {
                return Ending::Failed {
                    message: format!("data file: {message}"),
                    retryable: false,
                };
            }
            continue;
        };
        match artifacts::obtain(&shared.client, &shared.artifacts, &hash, control).await {
            Ok(_) => {
                let cached = shared.artifacts.file(&hash);
                if !cached.exists() {
                    return Ending::Failed {
                        message: format!(
                            "data file {hash} could not be kept in {}",
                            cached.display()
                        ),
                        retryable: true,
                    };
                }
                *file = cached;
            }
            Err(TransferError::Stopped) => return Ending::Stopped,
            Err(TransferError::Failed(message)) => {
                return Ending::Failed {
                    message: format!("data file: {message}"),
                    retryable: true,
                }
            }
        }
    }
    let reporter = Reporter::spawn(
        shared.client.clone(),
        shared.worker_id.clone(),
        assignment.task_id.clone(),
        assignment.attempt,
        control.clone(),
    );

    let artifact = match needed {
        Some(hash) => {
            match artifacts::obtain(&shared.client, &shared.artifacts, &hash, control).await {
                Ok(bytes) => Some((hash, bytes)),
                Err(TransferError::Stopped) => return Ending::Stopped,
                Err(TransferError::Failed(message)) => {
                    return Ending::Failed {
                        message,
                        retryable: true,
                    }
                }
            }
        }
        None => None,
    };

    // Engine time (the job's compute cost): what runs on the blocking
    // thread, from reading the dataset to the last evaluation.
    let engine_started = std::time::Instant::now();
    let joined = {
        let engine = shared.engine.clone();
        let pools = shared.pools.clone();
        let cache = shared.artifacts.clone();
        let ctl = control.clone();
        let progress = reporter.sender();
        let span = tracing::Span::current();
        // On the task's own thread pool (see `SlotPools`).
        tokio::task::spawn_blocking(move || pools.install(move || {
            let _entered = span.enter();
            let artifact = artifact.as_ref().map(|(h, b)| (h.as_str(), b.as_slice()));
            match spec {
                TaskSpec::Train(t) => {
                    let mut out = work::train(&engine, &t, artifact, &ctl, &progress)?;
                    // The next chunk of this run, if it lands here, then
                    // needs no download, nor to read and hash its file.
                    let checkpoint = out.checkpoint.take().map(|bytes| {
                        let bytes = Arc::new(bytes);
                        match cache.keep(bytes.clone()) {
                            Ok(hash) => (bytes, Some(hash)),
                            Err(e) => {
                                tracing::warn!(error = %e, "cannot keep the checkpoint in the local cache");
                                (bytes, None)
                            }
                        }
                    });
                    Ok(Output::Trained(out, checkpoint))
                }
                TaskSpec::LineSearch(t) => {
                    work::line_search(&engine, &t, artifact, &ctl, &progress).map(Output::Searched)
                }
            }
        }))
        .await
    };
    // Rounded up: a task whose engine ran reports at least 1 ms (a small
    // chunk on a fast machine takes less, and truncating made it 0).
    let engine_ms = engine_started.elapsed().as_micros().div_ceil(1000) as u64;
    // What is left (the upload, the last reports, Complete) needs no slot:
    // a queued task may start now, and its claim ride with this Complete.
    let (started, queued_started) = tokio::sync::oneshot::channel();
    if let Some(id) = tokio::task::try_id() {
        let _ = shared.freed.send(Freed { id, started });
    }
    if let Some(confirmed) = confirmed {
        match confirmed.await {
            Ok(None) => {}
            Ok(Some(ending)) => return ending,
            Err(e) => {
                return Ending::Failed {
                    message: format!("confirming the start of a queued task: {e}"),
                    retryable: true,
                }
            }
        }
    }
    // Whatever the engine says, an attempt that was stopped is owed nothing
    // more (or, at shutdown, the hand-back `run` sends).
    if control.is_stopped() {
        return Ending::Stopped;
    }
    let output = match joined {
        Ok(Ok(output)) => output,
        Ok(Err(e)) => {
            return Ending::Failed {
                retryable: work::is_retryable(&e),
                message: e.to_string(),
            }
        }
        Err(e) => {
            return Ending::Failed {
                message: format!("the task panicked: {}", panic_message(e)),
                retryable: true,
            }
        }
    };

    let (end, checkpoint, epochs_trained) = match output {
        Output::Trained(t, checkpoint) => {
            if matches!(t.outcome, RunOutcome::Stopped { .. }) {
                return Ending::Stopped;
            }
            tracing::info!(outcome = ?t.outcome, epochs_trained = t.epochs_trained, "training chunk done");
            shared.metrics.trained(t.epochs_trained, t.train_rows);
            ((&t.outcome).into(), checkpoint, t.epochs_trained)
        }
        Output::Searched(s) => {
            if s.stopped {
                return Ending::Stopped;
            }
            tracing::info!(points = s.points, "line search done");
            shared.metrics.searched(s.points);
            let end: pb::RunEnd = (&RunOutcome::Completed { epoch: 0 }).into();
            (end, None, s.epochs_trained)
        }
    };

    // Complete only once every measurement is stored (the coordinator
    // treats a completed task's curve as whole) and the checkpoint is
    // uploaded; the two go at the same time.
    let upload = async {
        match checkpoint {
            Some((bytes, hash)) => artifacts::upload(&shared.client, bytes, hash, control)
                .await
                .map(Some),
            None => Ok(None),
        }
    };
    let ((flushed, held), uploaded) = tokio::join!(reporter.finish_holding_last(), upload);
    match flushed {
        ReporterEnd::Flushed => {}
        ReporterEnd::LeaseLost(_) => return Ending::Stopped,
        ReporterEnd::Refused(message) => {
            return Ending::Failed {
                message,
                retryable: false,
            }
        }
    }
    let checkpoint_hash = match uploaded {
        Ok(hash) => hash.unwrap_or_default(),
        Err(TransferError::Stopped) => return Ending::Stopped,
        Err(TransferError::Failed(message)) => {
            return Ending::Failed {
                message,
                retryable: true,
            }
        }
    };
    if control.is_stopped() {
        return Ending::Stopped;
    }
    // The queued task that took this slot has claimed its start by now
    // (the lease loop says so at once, unless it is in a call: then the
    // claim goes on its own).
    let _ = tokio::time::timeout(STARTED_WAIT, queued_started).await;
    let request = pb::CompleteRequest {
        worker_id: String::new(),
        task_id: assignment.task_id.clone(),
        attempt: assignment.attempt,
        end: Some(end),
        checkpoint_hash,
        epochs_trained,
        engine_ms,
        // The slot this task frees (and any free place in the queue) takes
        // its next task in the same call, unless the worker is shutting
        // down. The coordinator subtracts what the worker holds.
        next_slots: if shared.accepting.load(Ordering::Relaxed) {
            shared.capacity
        } else {
            0
        },
        queued_ms: queued.as_millis().min(u128::from(u64::MAX)) as u64,
        // The batch of measurements still waiting goes in the same call.
        last_report: held.map(|Held { seq, items }| pb::ReportRequest {
            worker_id: String::new(),
            task_id: assignment.task_id.clone(),
            attempt: assignment.attempt,
            seq,
            items,
        }),
        queued_starts: vec![],
    };
    complete(shared, request, control).await
}

/// Sends `Complete`, resending through coordinator outages (a resent
/// completion of an attempt already done is acknowledged).
async fn complete(
    shared: &Shared,
    mut request: pb::CompleteRequest,
    control: &TaskControl,
) -> Ending {
    // The queued tasks started meanwhile ask whether they are still ours
    // in the same call (their claims go unanswered, to ask StartQueued, if
    // it brings no answer).
    let carried = shared.claims.take();
    request.queued_starts = carried.requests();
    let mut backoff = Backoff::new();
    loop {
        let mut request = request.clone();
        request.worker_id = shared.worker_id.borrow().clone();
        if let Some(r) = &mut request.last_report {
            r.worker_id = request.worker_id.clone();
        }
        match rpc::call(rpc::RPC_TIMEOUT, shared.client.clone().complete(request)).await {
            Ok(answer) => {
                carried.answer(answer.queued_starts);
                return Ending::Completed(answer.tasks);
            }
            Err(status) => match rpc::classify(&status) {
                Refusal::Transient => {
                    tracing::warn!(error = %rpc::describe(&status), "completion not delivered; resending");
                }
                Refusal::Precondition | Refusal::NotFound => {
                    tracing::warn!(error = %rpc::describe(&status), "completion refused: the attempt is no longer ours");
                    control.stop(StopReason::LeaseLost);
                    return Ending::Stopped;
                }
                Refusal::Permanent => {
                    return Ending::Failed {
                        message: format!(
                            "the coordinator refused the completion: {}",
                            rpc::describe(&status)
                        ),
                        retryable: true,
                    }
                }
            },
        }
        if control.is_stopped() {
            return Ending::Stopped;
        }
        tokio::time::sleep(backoff.next_delay()).await;
    }
}

/// What a `Fail` tells the coordinator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FailKind {
    /// Another attempt may succeed (counted against the job's attempts).
    Retryable,
    /// Retrying cannot help: the job fails.
    Fatal,
    /// Not a failure: the worker is shutting down and gives the task back.
    HandBack,
}

impl FailKind {
    fn failure(retryable: bool) -> Self {
        if retryable {
            FailKind::Retryable
        } else {
            FailKind::Fatal
        }
    }
}

/// Sends `Fail`. Resent through coordinator outages until delivered, until
/// the attempt is known to be no longer ours, or — once the worker is past
/// its shutdown grace — for at most [`FAIL_GRACE`].
async fn fail(
    shared: &Shared,
    assignment: &pb::TaskAssignment,
    control: &TaskControl,
    message: &str,
    kind: FailKind,
) {
    let retryable = kind != FailKind::Fatal;
    let mut backoff = Backoff::new();
    let mut deadline: Option<Instant> = None;
    loop {
        if deadline.is_none() && shared.hard_stop.is_cancelled() {
            deadline = Some(Instant::now() + FAIL_GRACE);
        }
        let limit = deadline.map_or(rpc::RPC_TIMEOUT, |d| {
            d.saturating_duration_since(Instant::now())
                .min(rpc::RPC_TIMEOUT)
        });
        let request = pb::FailRequest {
            worker_id: shared.worker_id.borrow().clone(),
            task_id: assignment.task_id.clone(),
            attempt: assignment.attempt,
            message: message.to_string(),
            retryable,
            // The shutdown hand-back is not a failure of the task.
            handed_back: kind == FailKind::HandBack,
        };
        match rpc::call(limit, shared.client.clone().fail(request)).await {
            Ok(_) => {
                tracing::info!(retryable, "failure reported");
                return;
            }
            Err(status) if rpc::classify(&status) == Refusal::Transient => {
                if deadline.is_some_and(|d| Instant::now() >= d) {
                    tracing::warn!(error = %rpc::describe(&status), "cannot report the failure; the lease will expire instead");
                    return;
                }
                tracing::warn!(error = %rpc::describe(&status), "failure not delivered; resending");
            }
            Err(status) => {
                tracing::warn!(error = %rpc::describe(&status), "the coordinator refused the failure report");
                return;
            }
        }
        if matches!(
            control.reason(),
            Some(StopReason::Coordinator | StopReason::LeaseLost)
        ) {
            return;
        }
        let delay = backoff.next_delay();
        match deadline {
            Some(d) => tokio::time::sleep_until((Instant::now() + delay).min(d)).await,
            None => {
                tokio::select! {
                    () = tokio::time::sleep(delay) => {}
                    () = shared.hard_stop.cancelled() => {}
                }
            }
        }
    }
}

/// The message of a panic, for the `Fail` that reports it.
fn panic_message(e: tokio::task::JoinError) -> String {
    if !e.is_panic() {
        return e.to_string();
    }
    let payload = e.into_panic();
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "(a panic without a message)".to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_stop_reason_wins() {
        let c = TaskControl::new();
        assert!(!c.is_stopped());
        assert_eq!(c.reason(), None);
        c.stop(StopReason::Coordinator);
        c.stop(StopReason::Shutdown);
        assert!(c.is_stopped());
        assert_eq!(c.reason(), Some(StopReason::Coordinator));
    }

    #[test]
    fn panics_become_messages() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let e = rt
            .block_on(async {
                tokio::task::spawn_blocking(|| -> () { panic!("tensor shapes disagree: {}", 42) })
                    .await
            })
            .unwrap_err();
        assert_eq!(panic_message(e), "tensor shapes disagree: 42");
    }
}
