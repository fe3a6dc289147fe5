//! The scheduler: the one owner of job and task state. Every change goes
//! through a method here, runs as one change of the store's group commit
//! (its own savepoint in a batch committed with one fsync), and is answered
//! and published to watchers only after it is committed.
//!
//! Task lifecycle (attempt numbers start at 1):
//!
//! ```text
//!            lease                 complete
//! pending ─────────► leased ───────────────────► done
//!    ▲                 │  fail (retryable) or lease expired,
//!    └─────────────────┘  attempt + 1 (while failures < max_attempts;
//!                         a worker's shutdown hand-back is not a failure)
//!                      │
//!                      └──► failed   (attempts used up, or not retryable:
//!                                     the job fails with the reason)
//! pending/leased ──► cancelled       (job cancelled, or an earlier chunk of
//!                                     the run diverged)
//! ```
//!
//! A report, completion or failure is accepted only from the worker holding
//! the task's current attempt; anything else is refused and never counted.
//! Resent reports (same attempt and seq) are acknowledged but stored once.
//!
//! * this file: the state owner, and the job-facing operations (submit,
//!   status, cancel, results);
//! * [`leases`]: the worker-facing operations (register, lease/heartbeat,
//!   report, complete, fail, expiry);
//! * [`ahead`]: when a worker may hold tasks queued beyond its slots, and
//!   who runs a queued task that an idle worker takes back;
//! * [`transitions`]: the state changes both share (re-queue or fail,
//!   cancel the rest, finish a job) and the status summary.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use crate::artifacts::ArtifactStore;
use crate::metrics::{Metrics, Snapshot};
use ridgeline_common::job::{JobFormat, JobSpec};
use ridgeline_common::proto::v1 as pb;
use ridgeline_common::spec::DataRoots;
use ridgeline_common::JobId;
use rusqlite::{params, Connection, OptionalExtension, Transaction};
use tokio::sync::broadcast;

use crate::error::{CoordError, Result};
use crate::planner;
use crate::store::commit::GroupCommit;
use crate::store::{self, JobRow, Store, TaskRow};

mod ahead;
mod leases;
mod procedure;
mod transitions;

pub use transitions::status_of;
use transitions::{cancel_rest, finish_job};

/// Timing of leases and heartbeats.
#[derive(Debug, Clone, Copy)]
pub struct SchedulerConfig {
    /// A leased task whose worker has not been heard of for this long is
    /// handed to another worker.
    pub lease_ttl: Duration,
    /// How often workers call Lease (the heartbeat).
    pub heartbeat_interval: Duration,
    /// A worker whose last this many task attempts all failed (with no
    /// completed task in between) gets no new tasks for `quarantine_for`:
    /// a machine with a broken GPU or a missing data mount must not burn
    /// the queue's attempts.
    pub quarantine_after: u32,
    pub quarantine_for: Duration,
}

impl Default for SchedulerConfig {
    fn default() -> Self {
        Self {
            lease_ttl: Duration::from_secs(30),
            heartbeat_interval: Duration::from_secs(3),
            quarantine_after: 3,
            quarantine_for: Duration::from_secs(600),
        }
    }
}

/// The most tasks one job may have (a bound on what one submit can make
/// the coordinator store and scan).
pub const MAX_TASKS_PER_JOB: usize = 20_000;

/// A committed event of a job, as published to watchers.
#[derive(Debug, Clone)]
pub struct Published {
    pub job_id: String,
    pub event: pb::JobEvent,
}

pub struct Scheduler {
    /// The store is the state. Every change goes to its one writer thread,
    /// which commits whatever is queued as one transaction.
    writer: GroupCommit<Published>,
    /// Reads (status, results, watch catch-up) on their own connection.
    reader: Mutex<Connection>,
    events: broadcast::Sender<Published>,
    config: SchedulerConfig,
    /// Where a job's data files may be (`serve --data-root`).
    data_roots: DataRoots,
    /// Uploaded datasets and checkpoints: a job or a chunk may refer only
    /// to one that is in place.
    artifacts: Arc<ArtifactStore>,
    metrics: Arc<Metrics>,
    /// Woken after a committed batch of changes that may have made a task
    /// ready: Leases waiting for work look again (see `lease`).
    work_ready: Arc<tokio::sync::Notify>,
    /// Set by a change that made a task ready without an event of its own
    /// (a chunk whose predecessor is done); read and cleared when its batch
    /// is committed.
    released: Arc<AtomicBool>,
    /// When a worker may hold tasks beyond its slots (used by the writer).
    ahead: Arc<ahead::LeaseAhead>,
}

/// A job file parsed, checked and planned: what [`Scheduler::submit`]
/// stores (the parsing and planning run before, off the async threads).
pub struct PlannedJob {
    spec: JobSpec,
    tasks: Vec<planner::PlannedTask>,
    /// The uploaded data files it uses (hash, size), recorded with it.
    artifacts: Vec<(String, u64)>,
}

pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

fn job_state_pb(s: &str) -> pb::JobState {
    match s {
        "queued" => pb::JobState::Queued,
        "running" => pb::JobState::Running,
        "succeeded" => pb::JobState::Succeeded,
        "failed" => pb::JobState::Failed,
        "cancelled" => pb::JobState::Cancelled,
        _ => pb::JobState::Unspecified,
    }
}

fn task_state_pb(s: &str) -> pb::TaskState {
    match s {
        "pending" => pb::TaskState::Pending,
        "leased" => pb::TaskState::Leased,
        "done" => pb::TaskState::Done,
        "failed" => pb::TaskState::Failed,
        "cancelled" => pb::TaskState::Cancelled,
        _ => pb::TaskState::Unspecified,
    }
}

pub fn is_terminal(job_state: &str) -> bool {
    matches!(job_state, "succeeded" | "failed" | "cancelled")
}

fn task_event(t: &TaskRow, state: &str, message: &str) -> pb::job_event::Kind {
    pb::job_event::Kind::Task(pb::TaskEvent {
        task_id: t.id.clone(),
        state: task_state_pb(state) as i32,
        attempt: t.attempt,
        worker_id: t.worker_id.clone(),
        message: message.to_string(),
    })
}

/// Whether a committed event may have made a task ready to lease: a job
/// submitted, a task planned or re-queued.
fn readies_work(e: &pb::JobEvent) -> bool {
    match &e.kind {
        Some(pb::job_event::Kind::Task(t)) => t.state == pb::TaskState::Pending as i32,
        Some(pb::job_event::Kind::Job(j)) => j.state == pb::JobState::Queued as i32,
        _ => false,
    }
}

fn job_change(state: &str, message: &str) -> pb::job_event::Kind {
    pb::job_event::Kind::Job(pb::JobStateChange {
        state: job_state_pb(state) as i32,
        message: message.to_string(),
    })
}

impl Scheduler {
    /// Starts the store's writer thread (it stops when the scheduler is
    /// dropped, after committing what was already sent).
    pub fn new(
        store: Store,
        artifacts: Arc<ArtifactStore>,
        config: SchedulerConfig,
    ) -> Result<Scheduler> {
        let (events, _) = broadcast::channel(4096);
        let metrics = Arc::new(Metrics::new());
        let reader = store.reader()?;
        let work_ready = Arc::new(tokio::sync::Notify::new());
        let released = Arc::new(AtomicBool::new(false));
        let writer = {
            let events = events.clone();
            let metrics = metrics.clone();
            let (work_ready, released) = (work_ready.clone(), released.clone());
            GroupCommit::start(store.into_connection(), move |published: Vec<Published>| {
                // Only a batch that may have made a task ready wakes the
                // waiting Leases: a submit, a stage planned, a re-queue
                // (each with its event), a chunk released (flagged). Waking
                // them on every commit made each idle worker run a Lease
                // per batch while the others finished a stage.
                let readied = released.swap(false, Ordering::Relaxed)
                    | published.iter().any(|p| readies_work(&p.event));
                if readied {
                    work_ready.notify_waiters();
                }
                metrics.committed(published.iter().map(|p| &p.event));
                for p in published {
                    // No receiver is fine: nobody is watching.
                    let _ = events.send(p);
                }
            })?
        };
        Ok(Scheduler {
            writer,
            reader: Mutex::new(reader),
            events,
            config,
            data_roots: DataRoots::any(),
            artifacts,
            metrics,
            work_ready,
            released,
            ahead: Arc::default(),
        })
    }

    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// Workers, tasks and jobs by state, for the metrics' gauges.
    pub fn snapshot(&self) -> Result<Snapshot> {
        const TASKS: [&str; 5] = ["pending", "leased", "done", "failed", "cancelled"];
        const JOBS: [&str; 5] = ["queued", "running", "succeeded", "failed", "cancelled"];
        const WORKERS: [&str; 3] = ["active", "lost", "quarantined"];
        let count = |table: &str, states: [&'static str; 5]| -> Result<Vec<(&'static str, i64)>> {
            let conn = self.read();
            let mut st = conn.prepare_cached(&format!(
                "SELECT state, COUNT(*) FROM {table} GROUP BY state"
            ))?;
            let rows = st
                .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))?
                .collect::<std::result::Result<Vec<_>, _>>()?;
            Ok(states
                .iter()
                .map(|s| (*s, rows.iter().find(|(n, _)| n == s).map_or(0, |(_, c)| *c)))
                .collect())
        };
        let workers = self.workers()?;
        Ok(Snapshot {
            workers: WORKERS
                .iter()
                .map(|s| (*s, workers.iter().filter(|w| w.state == *s).count() as i64))
                .collect(),
            tasks: count("tasks", TASKS)?,
            jobs: count("jobs", JOBS)?,
        })
    }

    /// Accept only data files under `roots` (checked before anything else
    /// is asked about a path: a job cannot probe the head node's files).
    pub fn with_data_roots(mut self, roots: DataRoots) -> Scheduler {
        self.data_roots = roots;
        self
    }

    pub fn config(&self) -> SchedulerConfig {
        self.config
    }

    /// The read connection (reads are short; a panic while holding it
    /// leaves nothing half-done: it never writes).
    fn read(&self) -> MutexGuard<'_, Connection> {
        self.reader.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Runs a change on the store's writer; answers once it is committed,
    /// after the events it appended are published.
    async fn write<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Transaction, &mut Vec<Published>) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        self.writer.run(Box::new(f)).await
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Published> {
        self.events.subscribe()
    }

    // ------------------------------------------------------------ jobs

    /// Parses, checks and plans a job file (CPU and file checks: call it
    /// off the async threads), for [`Scheduler::submit`].
    pub fn plan_job(&self, text: &str, format: JobFormat) -> Result<PlannedJob> {
        if text.len() > 1 << 20 {
            return Err(CoordError::InvalidArgument(
                "`text`: the job file is larger than 1 MiB".into(),
            ));
        }
        let spec =
            JobSpec::parse(text, format).map_err(|e| CoordError::InvalidArgument(e.to_string()))?;
        let mut artifacts = vec![];
        for f in spec.data.source.files() {
            if let Some(hash) = ridgeline_common::spec::artifact_hash(f) {
                let hash = crate::artifacts::check_hash(hash).map_err(|_| {
                    CoordError::InvalidArgument(format!(
                        "`data.source`: `{}` is not artifact:<sha256>",
                        f.display()
                    ))
                })?;
                let Some(size) = self.artifacts.size(&hash)? else {
                    return Err(CoordError::InvalidArgument(format!(
                        "`data.source`: artifact {hash} was never uploaded (use `coordinator upload FILE`)"
                    )));
                };
                artifacts.push((hash, size));
            } else if let Err(e) = self.data_roots.check(f) {
                return Err(CoordError::InvalidArgument(format!("`data.source`: {e}")));
            } else if !f.exists() {
                return Err(CoordError::InvalidArgument(format!(
                    "`data.source`: {} does not exist on the coordinator (file datasets must be on a path every \
                     machine can read, or uploaded with `coordinator upload FILE`)",
                    f.display()
                )));
            }
        }
        let tasks = planner::plan(&spec);
        if tasks.len() > MAX_TASKS_PER_JOB {
            return Err(CoordError::InvalidArgument(format!(
                "the job would make {} tasks, more than the {MAX_TASKS_PER_JOB} allowed: raise `chunk_epochs` \
                 (or `line_search.points_per_task`), or split the job",
                tasks.len()
            )));
        }
        if tasks.is_empty() {
            return Err(CoordError::InvalidArgument(
                "the job has nothing to run".into(),
            ));
        }
        Ok(PlannedJob {
            spec,
            tasks,
            artifacts,
        })
    }

    /// Stores a planned job with all its tasks, atomically.
    pub async fn submit(&self, job: PlannedJob) -> Result<JobId> {
        let PlannedJob {
            spec,
            tasks,
            artifacts,
        } = job;
        let id = JobId::new();
        let now = now_ms();
        let spec_json = serde_json::to_string(&spec)
            .map_err(|e| CoordError::InvalidArgument(format!("job: {e}")))?;
        let (name, kind, device, max_attempts) = (
            spec.display_name(),
            spec.kind.as_str(),
            spec.device.as_str(),
            spec.max_attempts,
        );
        let n_tasks = tasks.len();
        self.write(move |tx, published| {
            store::exec(
                tx,
                "INSERT INTO jobs(id, name, kind, spec, state, device, max_attempts, created_ms)
                 VALUES (?1, ?2, ?3, ?4, 'queued', ?5, ?6, ?7)",
                params![
                    id.to_string(),
                    name,
                    kind,
                    spec_json,
                    device,
                    max_attempts,
                    now
                ],
            )?;
            insert_tasks(tx, &id.to_string(), 0, &tasks, now)?;
            for (hash, size) in &artifacts {
                store::record_artifact(tx, hash, *size, now)?;
            }
            let ev =
                store::append_event(tx, &id.to_string(), now, job_change("queued", "submitted"))?;
            published.push(Published {
                job_id: id.to_string(),
                event: ev,
            });
            Ok(())
        })
        .await?;
        tracing::info!(job_id = %id, kind, tasks = n_tasks, "job submitted");
        Ok(id)
    }

    /// A job's decisions (procedure jobs), in the order they were made.
    pub fn decisions(&self, job_id: &str) -> Result<Vec<pb::Decision>> {
        let job = self.require_job(job_id)?;
        Ok(store::job_decisions(&self.read(), &job.id)?
            .into_iter()
            .map(|d| d.decision)
            .collect())
    }

    fn require_job(&self, job_id: &str) -> Result<JobRow> {
        let id = JobId::parse("job_id", job_id)
            .map_err(|e| CoordError::InvalidArgument(e.to_string()))?;
        store::get_job(&self.read(), &id.to_string())?
            .ok_or_else(|| CoordError::NotFound(format!("no job {id}")))
    }

    /// The job's state with per-stage and per-task progress.
    pub fn job_status(&self, job_id: &str) -> Result<pb::JobStatus> {
        let job = self.require_job(job_id)?;
        let tasks = store::job_tasks(&self.read(), &job.id)?;
        Ok(status_of(&job, &tasks, true))
    }

    pub fn list_jobs(&self) -> Result<Vec<pb::JobStatus>> {
        let conn = self.read();
        let mut out = vec![];
        for job in store::all_jobs(&conn)? {
            let tasks = store::job_tasks(&conn, &job.id)?;
            out.push(status_of(&job, &tasks, false));
        }
        Ok(out)
    }

    /// Stored events of a job after `seq`, and whether the job has ended.
    pub fn events_after(&self, job_id: &str, seq: u64) -> Result<(Vec<pb::JobEvent>, bool)> {
        let conn = self.read();
        let job = store::get_job(&conn, job_id)?
            .ok_or_else(|| CoordError::NotFound(format!("no job {job_id}")))?;
        Ok((
            store::events_after(&conn, job_id, seq)?,
            is_terminal(&job.state),
        ))
    }

    pub async fn cancel(&self, job_id: &str) -> Result<pb::JobState> {
        let id = JobId::parse("job_id", job_id)
            .map_err(|e| CoordError::InvalidArgument(e.to_string()))?
            .to_string();
        let now = now_ms();
        let job = id.clone();
        let state = self
            .write(move |tx, published| {
                let state: String =
                    store::one(tx, "SELECT state FROM jobs WHERE id = ?1", [&job], |r| {
                        r.get(0)
                    })
                    .optional()?
                    .ok_or_else(|| CoordError::NotFound(format!("no job {job}")))?;
                if is_terminal(&state) {
                    return Ok(state);
                }
                cancel_rest(tx, &job, "job cancelled", now, published)?;
                finish_job(
                    tx,
                    &job,
                    "cancelled",
                    "cancelled by the user",
                    now,
                    published,
                )?;
                Ok("cancelled".to_string())
            })
            .await?;
        tracing::info!(job_id = %id, %state, "cancel");
        Ok(job_state_pb(&state))
    }

    /// Every measurement of the job, one per (curve, step / point / end).
    pub fn measurements(&self, job_id: &str) -> Result<(JobRow, Vec<pb::Progress>)> {
        let job = self.require_job(job_id)?;
        let m = store::job_measurements(&self.read(), &job.id)?;
        Ok((job, m))
    }

    /// A job's curves (mean and spread over seeds), decisions and cost, as
    /// GetResults answers them and the dashboard shows them.
    pub fn results(&self, job_id: &str) -> Result<pb::JobResults> {
        let (job, measurements) = self.measurements(job_id)?;
        let decisions = self.decisions(job_id)?;
        let mut results = crate::analysis::results(&job.id, &job.kind, "", measurements);
        // The metric the curves report: the job's choice, else its task's
        // default (accuracy for classification, R² for regression).
        results.metric = match serde_json::from_str::<JobSpec>(&job.spec) {
            Ok(spec) => match crate::analysis::steps::metric_of(&spec, &results) {
                crate::decisions::MetricKind::Accuracy => "accuracy",
                crate::decisions::MetricKind::Pearson => "pearson",
                _ if results.curves.is_empty() => "default",
                _ => "r2",
            },
            Err(_) => "default",
        }
        .to_string();
        results.decisions = decisions;
        results.epochs_trained = job.epochs_trained;
        results.engine_seconds = job.engine_ms as f64 / 1e3;
        results.name = job.name;
        Ok(results)
    }
}

/// Stores planned tasks of a job, numbered from `first_ordinal`; those
/// that follow no other task are ready from `now`.
fn insert_tasks(
    tx: &Transaction,
    job_id: &str,
    first_ordinal: i64,
    tasks: &[planner::PlannedTask],
    now: i64,
) -> Result<()> {
    let mut st = tx.prepare_cached(
        "INSERT INTO tasks(id, job_id, ordinal, stage, label, curve, after, last_chunk, spec, state, ready_ms)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, 'pending', CASE WHEN ?7 IS NULL THEN ?10 ELSE 0 END)",
    )?;
    for (i, t) in tasks.iter().enumerate() {
        st.execute(params![
            t.id.to_string(),
            job_id,
            first_ordinal + i as i64,
            t.stage,
            t.label,
            t.curve,
            t.after.map(|a| a.to_string()),
            t.last_chunk as i64,
            t.spec.to_json(),
            now,
        ])?;
    }
    Ok(())
}
