//! Worker-facing operations: registration, leases and heartbeats, reports,
//! completions, failures, and lease expiry.

use std::sync::atomic::Ordering;
use std::time::Duration;

use prost::Message;
use ridgeline_common::proto::v1 as pb;
use ridgeline_common::proto::PROTOCOL_VERSION;
use ridgeline_common::task::{TaskKind, TaskShape, TaskSpec};
use ridgeline_common::wire;
use ridgeline_common::{TaskId, WorkerId};
use rusqlite::{params, Connection, OptionalExtension, Transaction};

use super::ahead::{LeaseAhead, StartAnswer};
use super::transitions::{clip, finish_job, later_chunks, requeue_or_fail, Setback};
use super::{job_change, now_ms, task_event, Published, Scheduler, SchedulerConfig};
use crate::error::{CoordError, Result};
use crate::store::{self, TaskRow, TASK_COLS};

/// The most task slots a worker may register (and so hold at once).
const MAX_SLOTS: u32 = 1024;

impl Scheduler {
    pub async fn register(&self, req: pb::RegisterRequest) -> Result<pb::RegisterResponse> {
        if req.protocol_version != PROTOCOL_VERSION {
            return Err(CoordError::FailedPrecondition(format!(
                "this coordinator speaks protocol version {PROTOCOL_VERSION}; the worker speaks {}: upgrade the \
                 older of the two",
                req.protocol_version
            )));
        }
        if req.slots == 0 || req.slots > MAX_SLOTS {
            return Err(CoordError::InvalidArgument(format!(
                "`slots`: must be between 1 and {MAX_SLOTS}"
            )));
        }
        if req.lease_ahead > req.slots {
            return Err(CoordError::InvalidArgument(format!(
                "`lease_ahead`: {}, more than the worker's {} slot(s)",
                req.lease_ahead, req.slots
            )));
        }
        let cuda = req
            .device
            .strip_prefix("cuda:")
            .is_some_and(|n| n.parse::<u32>().is_ok());
        if !(req.device == "cpu" || cuda) {
            return Err(CoordError::InvalidArgument(format!(
                "`device`: `{}` is not cpu or cuda:N",
                clip(&req.device, 80)
            )));
        }
        let now = now_ms();
        // A worker coming back after a cut keeps its id, so the leases it
        // still holds stay valid.
        let previous = WorkerId::parse("previous_worker_id", &req.previous_worker_id).ok();
        let name = clip(&req.name, 200);
        let (device, slots, memory) = (req.device.clone(), req.slots, req.memory_bytes as i64);
        let ahead = req.lease_ahead;
        let id = self.write(move |tx, _| {
            let known = match previous {
                Some(p) => store::one(tx, "SELECT id FROM workers WHERE id = ?1", [p.to_string()], |r| r.get::<_, String>(0))
                    .optional()?,
                None => None,
            };
            let id = known.unwrap_or_else(|| WorkerId::new().to_string());
            store::exec(tx,
                "INSERT INTO workers(id, name, device, slots, memory, registered_ms, last_seen_ms, ahead)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?6, ?7)
                 ON CONFLICT(id) DO UPDATE SET name = ?2, device = ?3, slots = ?4, memory = ?5, last_seen_ms = ?6,
                                               ahead = ?7",
                params![id, name, device, slots, memory, now, ahead],
            )?;
            Ok(id)
        })
        .await?;
        tracing::info!(worker_id = %id, name = %req.name, device = %req.device, slots = req.slots, lease_ahead = req.lease_ahead, "worker registered");
        Ok(pb::RegisterResponse {
            worker_id: id,
            heartbeat_interval_ms: self.config.heartbeat_interval.as_millis() as u32,
            lease_ttl_ms: self.config.lease_ttl.as_millis() as u32,
        })
    }

    /// The heartbeat: renews the worker's leases, tells it what to stop, and
    /// hands it up to `free_slots` runnable tasks. With nothing to hand out
    /// and `wait_ms` given, waits (at most a heartbeat interval) for a
    /// commit that may have made a task ready, and tries again: an idle
    /// worker gets a newly released stage's tasks at once, not at its next
    /// heartbeat.
    pub async fn lease(&self, req: pb::LeaseRequest) -> Result<pb::LeaseResponse> {
        let wait = Duration::from_millis(req.wait_ms.into()).min(self.config.heartbeat_interval);
        let deadline = tokio::time::Instant::now() + wait;
        // Tasks leased to this worker after its list was sent are not
        // missing from it (see `unknown_to_worker`), however long we wait.
        let arrived = now_ms();
        loop {
            // Registered before looking, so that a commit in between is
            // not missed.
            let ready = self.work_ready.notified();
            tokio::pin!(ready);
            ready.as_mut().enable();
            let answer = self.lease_now(req.clone(), arrived).await?;
            if !answer.tasks.is_empty()
                || !answer.stop.is_empty()
                || req.free_slots == 0
                || tokio::time::timeout_at(deadline, ready).await.is_err()
            {
                return Ok(answer);
            }
        }
    }

    /// One look at the queue (see [`Scheduler::lease`]) for a request that
    /// arrived at `arrived`.
    async fn lease_now(&self, req: pb::LeaseRequest, arrived: i64) -> Result<pb::LeaseResponse> {
        let _timer = self.metrics().lease_timer();
        let worker = WorkerId::parse("worker_id", &req.worker_id)
            .map_err(|e| CoordError::InvalidArgument(e.to_string()))?;
        let worker = worker.to_string();
        if req.running.len() > MAX_SLOTS as usize {
            return Err(CoordError::InvalidArgument(format!(
                "`running`: {} tasks, more than a worker can hold ({MAX_SLOTS})",
                req.running.len()
            )));
        }
        // A heartbeat that asks for nothing needs no commit of its own.
        if req.free_slots == 0 {
            if let Some(answer) = self.renew_only(&req, &worker, arrived)? {
                self.metrics().heartbeat(false);
                return Ok(answer);
            }
        }
        self.metrics().heartbeat(true);
        let ttl = self.config.lease_ttl.as_millis() as i64;
        let ahead = self.ahead.clone();
        self.write(move |tx, published| {
            // The time of the change, taken in commit order (a Lease
            // queued behind the Complete that made its task ready is
            // never dated before it).
            let now = now_ms();
            // Never more than the slots (and queue) it registered, whatever
            // it asks; and nothing new while quarantined (its leases are
            // still renewed).
            let caller = Caller::seen(tx, &worker, now)?;
            // What it holds: its list, or what the store says when a
            // Complete leased it more since the list was sent.
            let held = (req.running.len() as u32).max(leased_to(tx, &worker)?);
            let room = caller.room(req.free_slots, held);
            let mut stop = vec![];
            for r in &req.running {
                if holds(tx, &worker, r)? {
                    store::exec(
                        tx,
                        "UPDATE tasks SET lease_until = ?2 WHERE id = ?1",
                        params![r.task_id, now + ttl],
                    )?;
                } else {
                    stop.push(r.task_id.clone());
                }
            }
            // Tasks it holds without knowing (the answer that leased them
            // was lost) are sent again rather than left to expire.
            let mut tasks = unknown_to_worker(
                tx,
                &worker,
                &req.running,
                arrived - UNLISTED_GRACE_MS,
                now,
                ttl,
                &ahead,
            )?;
            let (leased, waits) = pick_tasks(
                tx,
                published,
                &worker,
                &caller.device,
                room,
                None,
                &ahead,
                now,
                ttl,
            )?;
            tasks.extend(leased);
            Ok((pb::LeaseResponse { tasks, stop }, waits))
        })
        .await
        .map(|(answer, waits)| {
            for ms in waits {
                self.metrics().task_waited(ms);
            }
            answer
        })
    }

    /// The heartbeat of a worker that asks for no task (no free slot or
    /// queue place) and holds none without knowing: nothing to hand out,
    /// so nothing to commit before answering. What to stop is read from
    /// the last commit; the renewals of its leases and the time it was seen
    /// are deferred to ride with the next batch of changes, run first in it
    /// (a renewal need not be durable: after a restart every lease gets a
    /// full TTL). `None`: the heartbeat needs the writer (a task it holds
    /// without knowing, to send again).
    fn renew_only(
        &self,
        req: &pb::LeaseRequest,
        worker: &str,
        arrived: i64,
    ) -> Result<Option<pb::LeaseResponse>> {
        let now = now_ms();
        let ttl = self.config.lease_ttl.as_millis() as i64;
        let (stop, renew) = {
            let conn = self.read();
            // What it holds, in one read (by the leased-by-worker index):
            // each listed attempt is renewed or stopped, and one it holds
            // without listing it needs the writer.
            let mut st = conn.prepare_cached(
                "SELECT id, attempt, leased_ms FROM tasks WHERE worker_id = ?1 AND state = 'leased'",
            )?;
            let held = st
                .query_map([worker], |r| {
                    Ok((
                        r.get::<_, String>(0)?,
                        r.get::<_, u32>(1)?,
                        r.get::<_, i64>(2)?,
                    ))
                })?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            let before = arrived - UNLISTED_GRACE_MS;
            if held.iter().any(|(id, _, leased)| {
                *leased < before && !req.running.iter().any(|r| &r.task_id == id)
            }) {
                return Ok(None);
            }
            if held.is_empty() {
                // Registered? (Asking for nothing, it has no room whatever
                // it holds.)
                Caller::look_up(&conn, worker, now)?;
            }
            let mut stop = vec![];
            let mut renew = vec![];
            for r in &req.running {
                if held
                    .iter()
                    .any(|(id, attempt, _)| id == &r.task_id && *attempt == r.attempt)
                {
                    renew.push((r.task_id.clone(), r.attempt));
                } else {
                    stop.push(r.task_id.clone());
                }
            }
            (stop, renew)
        };
        let worker = worker.to_string();
        let by = std::time::Instant::now() + (self.config.lease_ttl / 20).min(RENEWAL_DELAY_MAX);
        self.writer.defer(by, move |tx| {
            store::exec(
                tx,
                "UPDATE workers SET last_seen_ms = MAX(last_seen_ms, ?2) WHERE id = ?1",
                params![worker, now],
            )?;
            for (task, attempt) in renew {
                // Only the attempt it held, and never shortened: by now it
                // may be done, re-queued, or renewed later.
                store::exec(
                    tx,
                    "UPDATE tasks SET lease_until = MAX(lease_until, ?4)
                     WHERE id = ?1 AND attempt = ?2 AND worker_id = ?3 AND state = 'leased'",
                    params![task, attempt, worker, now + ttl],
                )?;
            }
            Ok(())
        })?;
        Ok(Some(pb::LeaseResponse {
            tasks: vec![],
            stop,
        }))
    }

    /// The task row if `worker` holds its `attempt`; otherwise the refusal.
    fn current_lease(
        tx: &Transaction,
        task_id: &str,
        attempt: u32,
        worker: &str,
    ) -> Result<TaskRow> {
        let id = TaskId::parse("task_id", task_id)
            .map_err(|e| CoordError::InvalidArgument(e.to_string()))?;
        let t = store::get_task(tx, &id.to_string())?;
        Self::held_by(t, &id.to_string(), attempt, worker)
    }

    /// `t`, the row of the task `id` (`None`: there is none), if `worker`
    /// holds its `attempt`; otherwise the refusal.
    fn held_by(t: Option<TaskRow>, id: &str, attempt: u32, worker: &str) -> Result<TaskRow> {
        let t = t.ok_or_else(|| CoordError::NotFound(format!("no task {id}")))?;
        if t.state != "leased" || t.attempt != attempt || t.worker_id != worker {
            return Err(CoordError::FailedPrecondition(format!(
                "task {id} attempt {attempt} is not leased to worker {} (the task is {} at attempt {}): \
                 report refused",
                clip(worker, 80),
                t.state,
                t.attempt
            )));
        }
        Ok(t)
    }

    /// Stores one report of measurements (idempotent by seq).
    pub async fn report(&self, req: pb::ReportRequest) -> Result<pb::ReportResponse> {
        check_report(&req, "")?;
        let now = now_ms();
        let ttl = self.config.lease_ttl.as_millis() as i64;
        self.write(move |tx, published| store_report(tx, published, &req, now, ttl))
            .await
            .inspect(|r| {
                if r.stored {
                    self.metrics().report_stored();
                }
            })
    }

    /// Stores a task attempt as done; then, with `next_slots`, leases the
    /// worker its next tasks in the same transaction.
    pub async fn complete(&self, req: pb::CompleteRequest) -> Result<pb::CompleteResponse> {
        let end = req
            .end
            .clone()
            .ok_or_else(|| CoordError::InvalidArgument("`end`: is missing".into()))?;
        let outcome = ridgeline_common::RunOutcome::try_from(end.clone())
            .map_err(|e| CoordError::InvalidArgument(e.to_string()))?;
        if let Some(r) = &req.last_report {
            if r.worker_id != req.worker_id || r.task_id != req.task_id || r.attempt != req.attempt
            {
                return Err(CoordError::InvalidArgument(
                    "`last_report`: its worker_id, task_id and attempt must be the Complete's"
                        .into(),
                ));
            }
            check_report(r, "last_report.")?;
        }
        if req.next_slots > MAX_SLOTS {
            return Err(CoordError::InvalidArgument(format!(
                "`next_slots`: {}, more than a worker can hold ({MAX_SLOTS})",
                req.next_slots
            )));
        }
        let task_id = TaskId::parse("task_id", &req.task_id)
            .map_err(|e| CoordError::InvalidArgument(e.to_string()))?
            .to_string();
        if req.queued_starts.len() > MAX_SLOTS as usize {
            return Err(CoordError::InvalidArgument(format!(
                "`queued_starts`: {} tasks, more than a worker can hold ({MAX_SLOTS})",
                req.queued_starts.len()
            )));
        }
        let mut claims = Vec::with_capacity(req.queued_starts.len());
        for (i, r) in req.queued_starts.iter().enumerate() {
            let id = TaskId::parse("queued_starts.task_id", &r.task_id)
                .map_err(|e| CoordError::InvalidArgument(format!("{e} (entry {i})")))?;
            claims.push((id.to_string(), r.attempt));
        }
        // The queued tasks it started are settled first, from memory, as
        // StartQueued would: they do not wait for this completion's commit.
        let queued_starts = if claims.is_empty() {
            vec![]
        } else {
            let worker = WorkerId::parse("worker_id", &req.worker_id)
                .map_err(|e| CoordError::InvalidArgument(e.to_string()))?
                .to_string();
            claims
                .iter()
                .map(
                    |(task, attempt)| match self.claim_queued(&worker, task, *attempt, true) {
                        // Refused as StartQueued would be, without refusing
                        // the completion.
                        Err(CoordError::NotFound(reason)) => Ok(pb::StartQueuedResponse {
                            start: false,
                            reason,
                        }),
                        answer => answer,
                    },
                )
                .collect::<Result<Vec<_>>>()?
        };
        // The checkpoint it hands on must be in place (uploaded before this
        // call; a file is only there complete and verified). One `stat`,
        // before the writer; the row recording it goes in this commit.
        let checkpoint = if req.checkpoint_hash.is_empty() {
            None
        } else {
            let hash = crate::artifacts::check_hash(&req.checkpoint_hash).map_err(|_| {
                CoordError::InvalidArgument(format!(
                    "`checkpoint_hash`: `{}` is not a SHA-256 hex digest",
                    clip(&req.checkpoint_hash, 80)
                ))
            })?;
            let size = self.artifacts.size(&hash)?.ok_or_else(|| {
                CoordError::InvalidArgument(format!(
                    "`checkpoint_hash`: artifact {hash} was not uploaded"
                ))
            })?;
            Some((hash, size))
        };
        let ttl = self.config.lease_ttl.as_millis() as i64;
        let (ahead, released) = (self.ahead.clone(), self.released.clone());
        self.write(move |tx, published| {
            let now = now_ms();
            // The task's row is read, and its spec's shape parsed, once.
            let found = store::get_task(tx, &task_id)?;
            // A resent completion of an attempt already done is acknowledged.
            if let Some(t) = &found {
                if t.state == "done" && t.attempt == req.attempt && t.worker_id == req.worker_id {
                    return Ok((vec![], vec![], false));
                }
            }
            let t = Self::held_by(found, &task_id, req.attempt, &req.worker_id)?;
            let shape = parse_shape(&t)?;
            // Its last measurements first, as their Report would store them
            // (its lease is not renewed: it ends here).
            let reported = match &req.last_report {
                Some(r) => store_measurements(tx, published, &t, &shape, r, now)?,
                None => false,
            };
            // The worker's figure, but never more than the attempt has been
            // leased (it is added to the job's cost).
            let engine_ms = (req.engine_ms.min(i64::MAX as u64) as i64).min((now - t.leased_ms).max(0));
            if let ridgeline_common::RunOutcome::Stopped { .. } = outcome {
                return Err(CoordError::InvalidArgument(
                    "`end.kind`: a stopped task is not complete; send Fail (or nothing) instead".into(),
                ));
            }
            let diverged = matches!(outcome, ridgeline_common::RunOutcome::Diverged { .. });
            if shape.kind == TaskKind::Train && req.checkpoint_hash.is_empty() && !t.last_chunk && !diverged {
                return Err(CoordError::InvalidArgument(
                    "`checkpoint_hash`: a training chunk that is not the last must hand on a checkpoint".into(),
                ));
            }
            if let Some((hash, size)) = &checkpoint {
                store::record_artifact(tx, hash, *size, now)?;
            }
            // Started when the worker took it out of its queue: never before
            // its lease, never after now.
            let queued_ms = req.queued_ms.min(i64::MAX as u64) as i64;
            let started_ms = t.leased_ms.saturating_add(queued_ms).min(now);
            store::exec(tx,
                "UPDATE tasks SET state = 'done', checkpoint = ?2, error = '', done_ms = ?3, engine_ms = ?4, started_ms = ?5
                 WHERE id = ?1",
                params![t.id, checkpoint.as_ref().map_or("", |(h, _)| h.as_str()), now, engine_ms, started_ms],
            )?;
            // The run's next chunk can start now: Leases waiting for work
            // are woken once this is committed.
            let released_chunk = store::exec(tx, "UPDATE tasks SET ready_ms = ?2 WHERE after = ?1", params![t.id, now])? > 0;
            if released_chunk {
                released.store(true, Ordering::Relaxed);
            }
            store::exec(tx,
                "UPDATE jobs SET epochs_trained = epochs_trained + ?2, engine_ms = engine_ms + ?3 WHERE id = ?1",
                params![t.job_id, req.epochs_trained as i64, engine_ms],
            )?;
            // Seen now, as well (for the next lease below).
            store::exec(tx,
                "UPDATE workers SET tasks_done = tasks_done + 1, failures_in_row = 0, last_seen_ms = ?2 WHERE id = ?1",
                params![req.worker_id, now],
            )?;
            let ev = store::append_event(tx, &t.job_id, now, task_event(&t, "done", ""))?;
            published.push(Published {
                job_id: t.job_id.clone(),
                event: ev,
            });
            if t.last_chunk || diverged {
                let item = pb::Progress {
                    curve: t.curve.clone(),
                    kind: Some(pb::progress::Kind::End(end)),
                    task_id: t.id.clone(),
                    attempt: t.attempt,
                };
                if shape.kind == TaskKind::Train {
                    store::exec(tx,
                        "INSERT OR REPLACE INTO measurements(job_id, curve, kind, key, payload, task_id, attempt)
                         VALUES (?1, ?2, 'end', 0, ?3, ?4, ?5)",
                        params![t.job_id, t.curve, item.encode_to_vec(), t.id, t.attempt],
                    )?;
                    let ev = store::append_event(tx, &t.job_id, now, pb::job_event::Kind::Progress(item))?;
                    published.push(Published {
                        job_id: t.job_id.clone(),
                        event: ev,
                    });
                }
            }
            if diverged {
                // The rest of this run has nothing to continue from.
                let rest = later_chunks(tx, &t)?;
                for r in rest {
                    store::exec(tx, "UPDATE tasks SET state = 'cancelled', error = 'the run diverged earlier' WHERE id = ?1", [&r.id])?;
                    let ev = store::append_event(tx, &t.job_id, now, task_event(&r, "cancelled", "the run diverged earlier"))?;
                    published.push(Published {
                        job_id: t.job_id.clone(),
                        event: ev,
                    });
                }
            }
            tracing::info!(job_id = %t.job_id, task_id = %t.id, worker_id = %req.worker_id, attempt = t.attempt, "task done");
            // A procedure job decides and plans its next stages; any other
            // job is done when its last task is.
            if !super::procedure::advance(tx, &t.job_id, &t.stage, now, published)? {
                // EXISTS stops at the first open task (a COUNT read every
                // pending task of the job on every completion).
                let open: bool = store::one(
                    tx,
                    "SELECT EXISTS (SELECT 1 FROM tasks WHERE job_id = ?1 AND state IN ('pending', 'leased'))",
                    [&t.job_id],
                    |r| r.get(0),
                )?;
                if !open {
                    finish_job(tx, &t.job_id, "succeeded", "", now, published)?;
                }
            }
            if req.next_slots == 0 {
                return Ok((vec![], vec![], reported));
            }
            // The next lease. The worker's slots (and queue) minus what the
            // store says it holds (not a list from the worker: this call
            // carries none).
            let caller = Caller::look_up(tx, &req.worker_id, now)?;
            let room = caller.room(req.next_slots, leased_to(tx, &req.worker_id)?);
            // The chunk it released goes first to this worker, which holds
            // its checkpoint (the worker's cache: nothing to download).
            let follow = released_chunk.then_some(t.id.as_str());
            let (tasks, waits) = pick_tasks(tx, published, &req.worker_id, &caller.device, room, follow, &ahead, now, ttl)?;
            Ok((tasks, waits, reported))
        })
        .await
        .map(|(tasks, waits, reported)| {
            if reported {
                self.metrics().report_stored();
            }
            for ms in waits {
                self.metrics().task_waited(ms);
            }
            pb::CompleteResponse {
                tasks,
                queued_starts,
            }
        })
    }

    pub async fn fail(&self, req: pb::FailRequest) -> Result<()> {
        let now = now_ms();
        let config = self.config;
        self.write(move |tx, published| {
            let t = Self::current_lease(tx, &req.task_id, req.attempt, &req.worker_id)?;
            let message = clip(&req.message, 2000);
            let kind = if req.handed_back {
                Setback::HandedBack
            } else if req.retryable {
                Setback::Retryable
            } else {
                Setback::Fatal
            };
            requeue_or_fail(tx, &t, &message, kind, now, published)?;
            if kind != Setback::HandedBack {
                count_failure(&config, tx, &req.worker_id, &message, now)?;
            }
            Ok(())
        })
        .await
    }

    /// A worker about to start a task it held queued asks whether it still
    /// may: settled in memory against a take-back ([`LeaseAhead::start`]),
    /// without a commit; a task not remembered there (leased before a
    /// restart) is the worker's if the store says it holds that attempt.
    pub async fn start_queued(
        &self,
        req: pb::StartQueuedRequest,
    ) -> Result<pb::StartQueuedResponse> {
        let worker = WorkerId::parse("worker_id", &req.worker_id)
            .map_err(|e| CoordError::InvalidArgument(e.to_string()))?
            .to_string();
        let task = TaskId::parse("task_id", &req.task_id)
            .map_err(|e| CoordError::InvalidArgument(e.to_string()))?
            .to_string();
        self.claim_queued(&worker, &task, req.attempt, false)
    }

    /// Settles `worker`'s start of `task`'s `attempt`, which it held queued
    /// (StartQueued, and Complete's `queued_starts`): from memory, else
    /// from the store. `carried`: by a Complete (for the metrics).
    fn claim_queued(
        &self,
        worker: &str,
        task: &str,
        attempt: u32,
        carried: bool,
    ) -> Result<pb::StartQueuedResponse> {
        let refused = |reason: String| pb::StartQueuedResponse {
            start: false,
            reason,
        };
        let answer = match self.ahead.start(task, worker, attempt) {
            StartAnswer::Start => pb::StartQueuedResponse {
                start: true,
                reason: String::new(),
            },
            StartAnswer::TakenBack => {
                refused(format!("task {task} attempt {attempt} was taken back for an idle worker"))
            }
            StartAnswer::Unknown => match store::get_task(&self.read(), task)? {
                Some(t) if t.state == "leased" && t.worker_id == worker && t.attempt == attempt => {
                    pb::StartQueuedResponse {
                        start: true,
                        reason: String::new(),
                    }
                }
                Some(t) => refused(format!(
                    "task {task} attempt {attempt} is not leased to this worker (the task is {} at attempt {})",
                    t.state, t.attempt
                )),
                None => return Err(CoordError::NotFound(format!("no task {task}"))),
            },
        };
        self.metrics().queued_start(answer.start, carried);
        Ok(answer)
    }

    /// After a restart: gives every lease a full TTL from now, so workers
    /// that kept running while the coordinator was down can heartbeat and
    /// carry on instead of losing their task to the first sweep.
    pub async fn recover(&self) -> Result<usize> {
        let until = now_ms() + self.config.lease_ttl.as_millis() as i64;
        let n = self
            .write(move |tx, _| {
                store::exec(
                    tx,
                    "UPDATE tasks SET lease_until = MAX(lease_until, ?1) WHERE state = 'leased'",
                    [until],
                )
            })
            .await?;
        if n > 0 {
            tracing::info!(leases = n, "leases held over from before the restart");
        }
        Ok(n)
    }

    /// Hands back the tasks whose lease ran out. Returns how many.
    pub async fn expire_leases(&self) -> Result<usize> {
        let now = now_ms();
        self.write(move |tx, published| {
            let mut st = tx.prepare_cached(&format!(
                "SELECT {TASK_COLS} FROM tasks WHERE state = 'leased' AND lease_until < ?1"
            ))?;
            let expired = st.query_map([now], store::task_row)?.collect::<rusqlite::Result<Vec<_>>>()?;
            for t in &expired {
                tracing::warn!(job_id = %t.job_id, task_id = %t.id, worker_id = %t.worker_id, attempt = t.attempt, "lease expired");
                let msg = format!("lease expired on worker {} (no heartbeat)", t.worker_id);
                requeue_or_fail(tx, t, &msg, Setback::Retryable, now, published)?;
            }
            Ok(expired.len())
        })
        .await
        .inspect(|n| self.metrics().leases_expired(*n))
    }

    pub fn workers(&self) -> Result<Vec<pb::WorkerInfo>> {
        let conn = self.read();
        let now = now_ms();
        let lost_after = (self.config.lease_ttl.as_millis() as i64).max(1);
        // Tasks held per worker, in one pass over the leased tasks (through
        // the state index), not one scan of every task per worker.
        let running: std::collections::HashMap<String, i64> = conn
            .prepare_cached(
                "SELECT worker_id, COUNT(*) FROM tasks WHERE state = 'leased' GROUP BY worker_id",
            )?
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
            .collect::<rusqlite::Result<_>>()?;
        let mut out = vec![];
        for w in store::all_workers(&conn)? {
            let running = running.get(&w.id).copied().unwrap_or(0);
            out.push(pb::WorkerInfo {
                worker_id: w.id,
                name: w.name,
                device: w.device,
                slots: w.slots,
                memory_bytes: w.memory,
                state: if w.quarantined_until > now {
                    "quarantined"
                } else if now - w.last_seen_ms > lost_after {
                    "lost"
                } else {
                    "active"
                }
                .into(),
                quarantine_reason: if w.quarantined_until > now {
                    w.quarantine_reason
                } else {
                    String::new()
                },
                quarantined_until_unix_ms: if w.quarantined_until > now {
                    w.quarantined_until
                } else {
                    0
                },
                last_seen_unix_ms: w.last_seen_ms,
                running: running as u32,
                tasks_done: w.tasks_done,
            });
        }
        Ok(out)
    }
}

/// The spec of a training chunk that continues from `after`: the stored one
/// with the checkpoint `after` handed on. `Ok(Err(why))` when there is
/// nothing to continue from.
fn continued(
    tx: &Transaction,
    task_id: &str,
    spec_json: &str,
    after: &str,
) -> Result<std::result::Result<String, String>> {
    let Ok(TaskSpec::Train(mut train)) = TaskSpec::from_json(spec_json) else {
        return Ok(Err(format!(
            "the stored spec of task {task_id} is not a training chunk that can follow {after}"
        )));
    };
    let ckpt: String = store::one(
        tx,
        "SELECT checkpoint FROM tasks WHERE id = ?1",
        [after],
        |r| r.get(0),
    )?;
    if ckpt.is_empty() {
        return Ok(Err(format!(
            "the previous chunk ({after}) left no checkpoint to continue from"
        )));
    }
    train.checkpoint = Some(ckpt);
    Ok(Ok(TaskSpec::Train(train).to_json()))
}

/// One more failed attempt on `worker`; quarantines it when its last
/// `quarantine_after` attempts all failed.
fn count_failure(
    config: &SchedulerConfig,
    tx: &Transaction,
    worker: &str,
    message: &str,
    now: i64,
) -> Result<()> {
    let after = config.quarantine_after;
    store::exec(
        tx,
        "UPDATE workers SET failures_in_row = failures_in_row + 1 WHERE id = ?1",
        [worker],
    )?;
    let in_row: u32 = store::one(
        tx,
        "SELECT failures_in_row FROM workers WHERE id = ?1",
        [worker],
        |r| r.get(0),
    )?;
    if after > 0 && in_row >= after {
        let until = now + config.quarantine_for.as_millis() as i64;
        let reason = format!(
            "its last {in_row} task attempts failed; last: {}",
            clip(message, 300)
        );
        store::exec(tx,
            "UPDATE workers SET quarantined_until = ?2, quarantine_reason = ?3, failures_in_row = 0 WHERE id = ?1",
            params![worker, until, reason],
        )?;
        tracing::warn!(worker_id = %worker, %reason, "worker quarantined");
    }
    Ok(())
}

/// Refuses a measurement that the task cannot have made: an epoch of a
/// line search, a point of a training chunk, an epoch outside the chunk, a
/// point the task was not given. (Stored by its step or index, it would
/// replace a measurement of another task of the run.)
fn check_fits(t: &TaskShape, i: usize, item: &pb::Progress) -> Result<()> {
    use pb::progress::Kind;
    let refuse = |field: &str, message: String| {
        Err(CoordError::InvalidArgument(format!(
            "`items[{i}].{field}`: {message}"
        )))
    };
    match (t.kind, &item.kind) {
        (TaskKind::LineSearch, Some(Kind::Epoch(_))) => refuse(
            "epoch",
            "a line-search task measures points, not epochs".into(),
        ),
        (TaskKind::Train, Some(Kind::Point(_))) => refuse(
            "point",
            "a training task measures epochs, not line-search points".into(),
        ),
        (TaskKind::Train, Some(Kind::Epoch(e)))
            if !(t.from_epoch..=t.to_epoch).contains(&(e.epoch as usize)) =>
        {
            refuse(
                "epoch.epoch",
                format!(
                    "{} is outside this chunk's epochs {}-{}",
                    e.epoch, t.from_epoch, t.to_epoch
                ),
            )
        }
        (TaskKind::LineSearch, Some(Kind::Point(p)))
            if !t.points.iter().any(|&(index, _)| index == p.index) =>
        {
            refuse(
                "point.index",
                format!("{} is not one of this task's points", p.index),
            )
        }
        _ => Ok(()),
    }
}

/// How many tasks the store says `worker` holds (running or queued).
fn leased_to(c: &Connection, worker: &str) -> Result<u32> {
    Ok(store::one(
        c,
        "SELECT COUNT(*) FROM tasks WHERE worker_id = ?1 AND state = 'leased'",
        [worker],
        |r| r.get(0),
    )?)
}

/// A worker that has just called (Lease, or Complete with a next lease).
struct Caller {
    device: String,
    slots: u32,
    /// Tasks it may hold queued beyond its slots.
    ahead: u32,
    quarantined: bool,
}

/// Where a worker's next tasks may go: its free slots, and places in its
/// queue (granted only from a job with tasks to spare, see [`ahead`]).
///
/// [`ahead`]: super::ahead
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Room {
    slots: usize,
    queue: usize,
}

impl Caller {
    /// Looks the worker up and marks it seen at `now`.
    fn seen(tx: &Transaction, worker: &str, now: i64) -> Result<Caller> {
        let caller = Caller::look_up(tx, worker, now)?;
        store::exec(
            tx,
            "UPDATE workers SET last_seen_ms = ?2 WHERE id = ?1",
            params![worker, now],
        )?;
        Ok(caller)
    }

    /// Looks the worker up (at `now`, for its quarantine).
    fn look_up(c: &Connection, worker: &str, now: i64) -> Result<Caller> {
        let (device, slots, ahead, quarantined_until): (String, u32, u32, i64) = store::one(
            c,
            "SELECT device, slots, ahead, quarantined_until FROM workers WHERE id = ?1",
            [worker],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
        )
        .optional()?
        .ok_or_else(|| {
            CoordError::NotFound(format!(
                "worker {} is not registered: register again",
                clip(worker, 80)
            ))
        })?;
        Ok(Caller {
            device,
            slots,
            ahead,
            quarantined: quarantined_until > now,
        })
    }

    /// How many new tasks it may take: what it `asked` for, never more than
    /// its registered slots and queue minus the `held` ones (running or
    /// queued), the slots first; none while quarantined.
    fn room(&self, asked: u32, held: u32) -> Room {
        if self.quarantined {
            return Room { slots: 0, queue: 0 };
        }
        let slots = asked.min(self.slots.saturating_sub(held));
        let queue = (asked - slots).min((self.slots + self.ahead).saturating_sub(held + slots));
        Room {
            slots: slots as usize,
            queue: queue as usize,
        }
    }
}

/// Leases runnable tasks to `worker` (of `device`): up to `room.slots` for
/// its free slots, then up to `room.queue` for its queue, these only from
/// jobs with tasks to spare ([`LeaseAhead`]). The oldest active job first,
/// each job's tasks in order; but the chunk that continues `follow` (a
/// task this worker has just completed, whose checkpoint it holds) before
/// any other of its job, wherever it first fits. Returns the assignments
/// and how long each waited in the queue (ms). Shared by Lease and by
/// Complete's next lease.
#[allow(clippy::too_many_arguments)]
fn pick_tasks(
    tx: &Transaction,
    published: &mut Vec<Published>,
    worker: &str,
    device: &str,
    room: Room,
    mut follow: Option<&str>,
    ahead: &LeaseAhead,
    now: i64,
    ttl: i64,
) -> Result<(Vec<pb::TaskAssignment>, Vec<i64>)> {
    let mut tasks = vec![];
    let mut waits = vec![];
    if room.slots + room.queue == 0 {
        return Ok((tasks, waits));
    }
    // Oldest job first, each job's tasks in order: the (few)
    // active jobs in order, then each one's runnable tasks by
    // the (job_id, state, ordinal) index, stopping as soon as
    // the free slots are filled. The cost does not grow with
    // the queue (one sorted scan of every pending task did).
    // (The worker's kind is worked out here: a `LIKE ?` in the
    // query made SQLite prepare it again on every call.)
    let kind = if device.starts_with("cuda") {
        "cuda"
    } else {
        "cpu"
    };
    let mut jobs_st = tx.prepare_cached(
        "SELECT id, state FROM jobs WHERE state IN ('queued', 'running') AND device IN ('any', ?1)
         ORDER BY created_ms, rowid",
    )?;
    let mut active = vec![];
    // Jobs none of whose tasks is leased yet: the first lease starts them.
    let mut unstarted = std::collections::HashSet::new();
    for row in jobs_st.query_map([kind], |r| {
        Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?))
    })? {
        let (id, state) = row?;
        if state == "queued" {
            unstarted.insert(id.clone());
        }
        active.push(id);
    }
    // The slots first; then the queue, whose picks must see the first
    // ones leased.
    for (want, queued) in [(room.slots, false), (room.queue, true)] {
        let mut picked = vec![];
        for job in &active {
            let mut left = want - picked.len();
            if left == 0 {
                break;
            }
            if queued {
                left = ahead.queue_room(tx, job, left, now, ttl)?;
                if left == 0 {
                    continue;
                }
            }
            // The continued chunk first (it is ready: `follow` is done).
            let mut found = match follow {
                Some(prev) => {
                    let mut st = tx.prepare_cached(&format!(
                        "SELECT {TASK_COLS} FROM tasks t
                         WHERE t.after = ?1 AND t.job_id = ?2 AND t.state = 'pending' LIMIT 1"
                    ))?;
                    let next = st
                        .query_map(params![prev, job], store::task_row)?
                        .collect::<rusqlite::Result<Vec<_>>>()?;
                    next
                }
                None => vec![],
            };
            if !found.is_empty() {
                follow = None;
            }
            if found.len() < left {
                let mut st = tx.prepare_cached(&format!(
                    "SELECT {TASK_COLS} FROM tasks t
                     WHERE t.job_id = ?1 AND t.state = 'pending'
                       AND (t.after IS NULL OR (SELECT p.state FROM tasks p WHERE p.id = t.after) = 'done')
                     ORDER BY t.ordinal LIMIT ?2"
                ))?;
                let (first, more) = (found.first().map(|t| t.id.clone()), left - found.len());
                let rest = st
                    .query_map(params![job, left as i64], store::task_row)?
                    .collect::<rusqlite::Result<Vec<_>>>()?;
                found.extend(
                    rest.into_iter()
                        .filter(|t| Some(&t.id) != first.as_ref())
                        .take(more),
                );
            }
            if !queued {
                ahead.taken(job, found.len());
            }
            picked.extend(found);
        }
        // Idle slots and nothing ready: a task another worker holds queued
        // must not wait there behind a running one.
        if !queued && picked.len() < want {
            let n = want - picked.len();
            picked.extend(take_back_queued(
                tx, published, worker, &active, ahead, n, now,
            )?);
        }
        for t in picked {
            let starts_job = unstarted.remove(&t.job_id);
            if let Some((assignment, waited)) =
                lease_one(tx, published, t, worker, queued, starts_job, now, ttl)?
            {
                if queued {
                    ahead.queued_to(&assignment.task_id, worker, assignment.attempt, now, ttl);
                }
                tasks.push(assignment);
                waits.extend(waited);
            }
        }
    }
    Ok((tasks, waits))
}

/// Takes back up to `n` tasks that other workers hold queued and have not
/// started (the oldest first; of the `active` jobs, which `worker`'s device
/// can run), for `worker`, which has idle slots and nothing ready. Each is
/// marked taken in memory first (from then on its holder's StartQueued is
/// refused), then handed back in the store (attempt + 1, not a failure) and
/// returned, to lease at once.
fn take_back_queued(
    tx: &Transaction,
    published: &mut Vec<Published>,
    worker: &str,
    active: &[String],
    ahead: &LeaseAhead,
    n: usize,
    now: i64,
) -> Result<Vec<TaskRow>> {
    let mut out = vec![];
    // A few more than needed: some may be stale, or of jobs this device
    // cannot run.
    for (id, holder, attempt) in ahead.takeable(worker, n * 4) {
        if out.len() == n {
            break;
        }
        let Some(t) = store::get_task(tx, &id)? else {
            ahead.forget(&id);
            continue;
        };
        if t.state != "leased" || t.worker_id != holder || t.attempt != attempt {
            // Completed, expired or handed back since: not queued any more.
            ahead.forget(&id);
            continue;
        }
        if !active.contains(&t.job_id) || !ahead.take(&id, attempt) {
            continue;
        }
        let message = format!(
            "taken back, not started, from the queue of worker {holder} for idle worker {}",
            clip(worker, 80)
        );
        tracing::info!(task_id = %id, attempt, from = %holder, to = %worker, "queued task taken back");
        requeue_or_fail(tx, &t, &message, Setback::HandedBack, now, published)?;
        match store::get_task(tx, &id)? {
            Some(fresh) if fresh.state == "pending" => out.push(fresh),
            _ => {}
        }
    }
    Ok(out)
}

/// How long before a heartbeat arrived a task must have been leased to its
/// worker to count as unknown to it when the heartbeat does not list it
/// (ms): longer than a heartbeat takes from being written to arriving, so
/// that a task whose answer was on its way as the list was written is not
/// taken for lost.
const UNLISTED_GRACE_MS: i64 = 2_000;

/// The longest a heartbeat's deferred renewals wait for a batch to ride
/// with (a twentieth of the lease TTL when that is shorter).
const RENEWAL_DELAY_MAX: Duration = Duration::from_millis(250);

/// Whether `worker` holds the task attempt it lists as `r`.
fn holds(c: &Connection, worker: &str, r: &pb::RunningTask) -> Result<bool> {
    let current = store::one(
        c,
        "SELECT attempt, state, worker_id FROM tasks WHERE id = ?1",
        [&r.task_id],
        |row| {
            Ok((
                row.get::<_, u32>(0)?,
                row.get::<_, String>(1)?,
                row.get::<_, String>(2)?,
            ))
        },
    )
    .optional()?;
    Ok(matches!(current, Some((attempt, state, w))
        if attempt == r.attempt && state == "leased" && w == worker))
}

/// The ids of the tasks leased to `worker` before `before` that its
/// heartbeat does not list (`running`). The ids only: normally every one is
/// listed, and the rows (with their specs) are not needed.
fn unlisted(
    c: &Connection,
    worker: &str,
    running: &[pb::RunningTask],
    before: i64,
) -> Result<Vec<String>> {
    let mut st = c.prepare_cached(
        "SELECT id FROM tasks WHERE worker_id = ?1 AND state = 'leased' AND leased_ms < ?2",
    )?;
    let ids = st
        .query_map(params![worker, before], |r| r.get::<_, String>(0))?
        .filter(|id| !matches!(id, Ok(id) if running.iter().any(|r| &r.task_id == id)))
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(ids)
}

/// Tasks leased to `worker` before `before` that its heartbeat does not
/// list (`running`): the answer that leased them (a Complete's or a
/// Lease's) never reached it, and they would wait for their lease to
/// expire. Each is assigned again (same attempt, lease renewed), and is no
/// longer one that can be taken back (it is not claimed first).
#[allow(clippy::too_many_arguments)]
fn unknown_to_worker(
    tx: &Transaction,
    worker: &str,
    running: &[pb::RunningTask],
    before: i64,
    now: i64,
    ttl: i64,
    ahead: &LeaseAhead,
) -> Result<Vec<pb::TaskAssignment>> {
    let mut out = vec![];
    for id in unlisted(tx, worker, running, before)? {
        let Some(mut t) = store::get_task(tx, &id)? else {
            continue;
        };
        let spec_json = match spec_to_send(tx, &mut t)? {
            Ok(json) => json,
            // Its lease runs out as it would have.
            Err(_) => continue,
        };
        ahead.forget(&t.id);
        store::exec(
            tx,
            "UPDATE tasks SET lease_until = ?2 WHERE id = ?1",
            params![t.id, now + ttl],
        )?;
        tracing::info!(job_id = %t.job_id, task_id = %t.id, worker_id = %worker, attempt = t.attempt, "task sent again: its worker did not list it");
        out.push(pb::TaskAssignment {
            task_id: t.id,
            attempt: t.attempt,
            job_id: t.job_id,
            spec_json,
            queued: false,
        });
    }
    Ok(out)
}

/// The spec a worker is sent for `t`: the stored one, or, for a chunk that
/// continues its predecessor, with that one's checkpoint (`Err`: there is
/// none, which Complete's checks rule out).
fn spec_to_send(tx: &Transaction, t: &mut TaskRow) -> Result<std::result::Result<String, String>> {
    let spec_json = std::mem::take(&mut t.spec);
    match &t.after {
        Some(after) => continued(tx, &t.id, &spec_json, after),
        None => Ok(Ok(spec_json)),
    }
}

/// Leases one picked task to `worker`; `None` when its job failed instead
/// (a chunk with nothing to continue from). Also returns how long it
/// waited in the queue, when known. `starts_job`: its job is queued (this
/// is its first lease) and now runs.
#[allow(clippy::too_many_arguments)]
fn lease_one(
    tx: &Transaction,
    published: &mut Vec<Published>,
    mut t: TaskRow,
    worker: &str,
    queued: bool,
    starts_job: bool,
    now: i64,
    ttl: i64,
) -> Result<Option<(pb::TaskAssignment, Option<i64>)>> {
    let spec_json = match spec_to_send(tx, &mut t)? {
        Ok(json) => json,
        Err(msg) => {
            // Cannot happen through Complete's checks; if the store says
            // so anyway, fail this job rather than every Lease call.
            requeue_or_fail(tx, &t, &msg, Setback::Fatal, now, published)?;
            return Ok(None);
        }
    };
    store::exec(tx,
        "UPDATE tasks SET state = 'leased', worker_id = ?2, lease_until = ?3, leased_ms = ?4 WHERE id = ?1",
        params![t.id, worker, now + ttl, now],
    )?;
    // How long it waited in the queue (ready → leased).
    let waited = (t.ready_ms > 0).then(|| (now - t.ready_ms).max(0));
    t.worker_id = worker.to_string();
    if starts_job {
        store::exec(
            tx,
            "UPDATE jobs SET state = 'running' WHERE id = ?1",
            [&t.job_id],
        )?;
        let ev = store::append_event(
            tx,
            &t.job_id,
            now,
            job_change("running", "first task leased"),
        )?;
        published.push(Published {
            job_id: t.job_id.clone(),
            event: ev,
        });
    }
    let ev = store::append_event(tx, &t.job_id, now, task_event(&t, "leased", ""))?;
    published.push(Published {
        job_id: t.job_id.clone(),
        event: ev,
    });
    tracing::info!(job_id = %t.job_id, task_id = %t.id, worker_id = %worker, attempt = t.attempt, queued, "task leased");
    Ok(Some((
        pb::TaskAssignment {
            task_id: t.id.clone(),
            attempt: t.attempt,
            job_id: t.job_id.clone(),
            spec_json,
            queued,
        },
        waited,
    )))
}

/// The checks a report passes before it is queued for the writer (`field`:
/// where it sits in the request, e.g. "last_report.").
fn check_report(req: &pb::ReportRequest, field: &str) -> Result<()> {
    if req.items.len() > 10_000 {
        return Err(CoordError::InvalidArgument(format!(
            "`{field}items`: more than 10000 in one report"
        )));
    }
    for (i, item) in req.items.iter().enumerate() {
        wire::check_progress(item).map_err(|e| {
            CoordError::InvalidArgument(format!("`{field}items[{i}].{}`: {}", e.field, e.message))
        })?;
    }
    Ok(())
}

/// Stores one report in the writer's transaction (Report, and Complete's
/// `last_report`).
fn store_report(
    tx: &Transaction,
    published: &mut Vec<Published>,
    req: &pb::ReportRequest,
    now: i64,
    ttl: i64,
) -> Result<pb::ReportResponse> {
    let t = Scheduler::current_lease(tx, &req.task_id, req.attempt, &req.worker_id)?;
    let shape = parse_shape(&t)?;
    let stored = store_measurements(tx, published, &t, &shape, req, now)?;
    // A report is a sign of life: the lease is renewed.
    store::exec(
        tx,
        "UPDATE tasks SET lease_until = ?2 WHERE id = ?1",
        params![t.id, now + ttl],
    )?;
    let job_state: String = store::one(
        tx,
        "SELECT state FROM jobs WHERE id = ?1",
        [&t.job_id],
        |r| r.get(0),
    )?;
    Ok(pb::ReportResponse {
        stored,
        stop: job_state == "cancelled",
    })
}

/// The shape of `t`'s spec, as stored (what its measurements must fit).
fn parse_shape(t: &TaskRow) -> Result<TaskShape> {
    TaskShape::from_json(&t.spec).map_err(|e| CoordError::Storage(format!("task {}: {e}", t.id)))
}

/// Stores the measurements of `req`, a report of the task `t` (whose
/// `shape` they must fit), unless a report of the same seq was stored
/// before. Returns whether they were stored.
fn store_measurements(
    tx: &Transaction,
    published: &mut Vec<Published>,
    t: &TaskRow,
    shape: &TaskShape,
    req: &pb::ReportRequest,
    now: i64,
) -> Result<bool> {
    for (i, item) in req.items.iter().enumerate() {
        check_fits(shape, i, item)?;
    }
    let fresh = store::exec(
        tx,
        "INSERT OR IGNORE INTO reports(task_id, attempt, seq) VALUES (?1, ?2, ?3)",
        params![t.id, req.attempt, req.seq as i64],
    )? == 1;
    if fresh {
        for item in &req.items {
            let mut item = item.clone();
            // Measurements belong to the task's curve and attempt,
            // whatever the worker wrote.
            item.curve = t.curve.clone();
            item.task_id = t.id.clone();
            item.attempt = t.attempt;
            let (kind, key) = match &item.kind {
                Some(pb::progress::Kind::Epoch(e)) => ("epoch", e.step as i64),
                Some(pb::progress::Kind::Point(p)) => ("point", p.index as i64),
                Some(pb::progress::Kind::End(_)) => ("end", 0),
                Some(pb::progress::Kind::Data(_)) => ("data", 0),
                None => {
                    return Err(CoordError::InvalidArgument(
                        "`items.kind`: is missing".into(),
                    ))
                }
            };
            store::exec(tx,
                "INSERT OR REPLACE INTO measurements(job_id, curve, kind, key, payload, task_id, attempt)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                params![t.job_id, t.curve, kind, key, item.encode_to_vec(), t.id, t.attempt],
            )?;
            let ev = store::append_event(tx, &t.job_id, now, pb::job_event::Kind::Progress(item))?;
            published.push(Published {
                job_id: t.job_id.clone(),
                event: ev,
            });
        }
    }
    Ok(fresh)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn caller(slots: u32, ahead: u32, quarantined: bool) -> Caller {
        Caller {
            device: "cpu".into(),
            slots,
            ahead,
            quarantined,
        }
    }

    fn room(slots: usize, queue: usize) -> Room {
        Room { slots, queue }
    }

    #[test]
    fn a_worker_s_room_is_its_free_slots_then_its_free_queue_places() {
        // No queue: free slots only, whatever it asks.
        assert_eq!(caller(2, 0, false).room(5, 0), room(2, 0));
        assert_eq!(caller(2, 0, false).room(5, 1), room(1, 0));
        assert_eq!(caller(2, 0, false).room(5, 3), room(0, 0));
        // A queue of 1 behind 2 slots: slots first, then the queue.
        assert_eq!(caller(2, 1, false).room(5, 0), room(2, 1));
        assert_eq!(caller(2, 1, false).room(1, 0), room(1, 0));
        assert_eq!(caller(2, 1, false).room(5, 2), room(0, 1));
        assert_eq!(caller(2, 1, false).room(5, 3), room(0, 0));
        // Holding more than it may (a stale list): nothing, no underflow.
        assert_eq!(caller(1, 1, false).room(5, 7), room(0, 0));
        // Quarantined: nothing at all.
        assert_eq!(caller(2, 1, true).room(5, 0), room(0, 0));
    }
}
