//! State changes shared by job- and worker-facing operations, and the
//! status summary of a job.

use std::collections::BTreeMap;

use ridgeline_common::proto::v1 as pb;
use rusqlite::{params, OptionalExtension, Transaction};

use super::{job_change, job_state_pb, task_event, task_state_pb, Published};
use crate::error::Result;
use crate::store::{self, JobRow, TaskRow, TASK_COLS};

pub(super) fn clip(s: &str, n: usize) -> String {
    s.chars().take(n).collect()
}

pub(super) fn live_tasks(tx: &Transaction, job_id: &str) -> Result<Vec<TaskRow>> {
    let mut st = tx.prepare_cached(&format!(
        "SELECT {TASK_COLS} FROM tasks WHERE job_id = ?1 AND state IN ('pending', 'leased') ORDER BY ordinal"
    ))?;
    let rows = st
        .query_map([job_id], store::task_row)?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(rows)
}

/// The chunks after `t` in its run (following the `after` links).
pub(super) fn later_chunks(tx: &Transaction, t: &TaskRow) -> Result<Vec<TaskRow>> {
    let mut out = vec![];
    let mut cur = t.id.clone();
    loop {
        let next = store::one(
            tx,
            &format!("SELECT {TASK_COLS} FROM tasks WHERE after = ?1"),
            [&cur],
            store::task_row,
        )
        .optional()?;
        match next {
            Some(n) => {
                cur = n.id.clone();
                out.push(n);
            }
            None => return Ok(out),
        }
    }
}

pub(super) fn requeue_or_fail(
    tx: &Transaction,
    t: &TaskRow,
    message: &str,
    kind: Setback,
    now: i64,
    published: &mut Vec<Published>,
) -> Result<()> {
    let max: u32 = store::one(
        tx,
        "SELECT max_attempts FROM jobs WHERE id = ?1",
        [&t.job_id],
        |r| r.get(0),
    )?;
    let failures: u32 = store::one(
        tx,
        "SELECT failures FROM tasks WHERE id = ?1",
        [&t.id],
        |r| r.get(0),
    )?;
    let failures = failures + u32::from(kind != Setback::HandedBack);
    if kind != Setback::Fatal && failures < max {
        // The abandoned attempt's measurements go: the next attempt measures
        // the same points again, and a curve never mixes attempts.
        store::exec(tx, "DELETE FROM measurements WHERE task_id = ?1", [&t.id])?;
        store::exec(tx,
            "UPDATE tasks SET state = 'pending', attempt = attempt + 1, failures = ?3, worker_id = '',
                              lease_until = 0, error = ?2, ready_ms = ?4, leased_ms = 0
             WHERE id = ?1",
            params![t.id, message, failures, now],
        )?;
        let what = if kind == Setback::HandedBack {
            "handed back"
        } else {
            "retrying"
        };
        let ev = store::append_event(
            tx,
            &t.job_id,
            now,
            task_event(t, "pending", &format!("{what}: {message}")),
        )?;
        published.push(Published {
            job_id: t.job_id.clone(),
            event: ev,
        });
        tracing::warn!(job_id = %t.job_id, task_id = %t.id, attempt = t.attempt, %message, "task re-queued");
        return Ok(());
    }
    store::exec(
        tx,
        "UPDATE tasks SET state = 'failed', failures = ?3, error = ?2 WHERE id = ?1",
        params![t.id, message, failures],
    )?;
    let ev = store::append_event(tx, &t.job_id, now, task_event(t, "failed", message))?;
    published.push(Published {
        job_id: t.job_id.clone(),
        event: ev,
    });
    let reason = if kind == Setback::Fatal {
        format!("task {} ({}) failed: {message}", t.id, t.label)
    } else {
        format!(
            "task {} ({}) failed {failures} times; last: {message}",
            t.id, t.label
        )
    };
    cancel_rest(tx, &t.job_id, "the job failed", now, published)?;
    tracing::error!(job_id = %t.job_id, task_id = %t.id, %reason, "job failed");
    finish_job(tx, &t.job_id, "failed", &reason, now, published)
}

/// Why a leased task goes back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Setback {
    /// A failure that another attempt may not have (lease expired, out of
    /// memory, a file missing on that machine): counted, then retried.
    Retryable,
    /// Retrying cannot help: the job fails now.
    Fatal,
    /// The worker gave the task back while shutting down: not counted.
    HandedBack,
}

/// Cancels every pending or leased task of a job, with an event each.
pub(super) fn cancel_rest(
    tx: &Transaction,
    job_id: &str,
    why: &str,
    now: i64,
    published: &mut Vec<Published>,
) -> Result<()> {
    for other in live_tasks(tx, job_id)? {
        store::exec(
            tx,
            "UPDATE tasks SET state = 'cancelled', error = ?2 WHERE id = ?1",
            params![other.id, why],
        )?;
        let ev = store::append_event(tx, job_id, now, task_event(&other, "cancelled", why))?;
        published.push(Published {
            job_id: job_id.to_string(),
            event: ev,
        });
    }
    Ok(())
}

pub(super) fn finish_job(
    tx: &Transaction,
    job_id: &str,
    state: &str,
    message: &str,
    now: i64,
    published: &mut Vec<Published>,
) -> Result<()> {
    store::exec(
        tx,
        "UPDATE jobs SET state = ?2, error = ?3, finished_ms = ?4 WHERE id = ?1",
        params![job_id, state, message, now],
    )?;
    let ev = store::append_event(tx, job_id, now, job_change(state, message))?;
    published.push(Published {
        job_id: job_id.to_string(),
        event: ev,
    });
    tracing::info!(%job_id, %state, "job finished");
    Ok(())
}

/// A job's status from its rows; `with_tasks` includes the task list.
pub fn status_of(job: &JobRow, tasks: &[TaskRow], with_tasks: bool) -> pb::JobStatus {
    let mut stages: BTreeMap<(i64, String), pb::StageProgress> = BTreeMap::new();
    let mut order: BTreeMap<String, i64> = BTreeMap::new();
    for t in tasks {
        let first = *order.entry(t.stage.clone()).or_insert(t.ordinal);
        let s = stages
            .entry((first, t.stage.clone()))
            .or_insert_with(|| pb::StageProgress {
                stage: t.stage.clone(),
                ..Default::default()
            });
        s.total += 1;
        match t.state.as_str() {
            "done" => s.done += 1,
            "leased" => s.running += 1,
            "failed" => s.failed += 1,
            "cancelled" => s.cancelled += 1,
            _ => {}
        }
    }
    pb::JobStatus {
        job_id: job.id.clone(),
        name: job.name.clone(),
        kind: job.kind.clone(),
        state: job_state_pb(&job.state) as i32,
        error: job.error.clone(),
        created_unix_ms: job.created_ms,
        finished_unix_ms: job.finished_ms,
        stages: stages.into_values().collect(),
        tasks: if with_tasks {
            tasks
                .iter()
                .map(|t| pb::TaskStatus {
                    task_id: t.id.clone(),
                    stage: t.stage.clone(),
                    label: t.label.clone(),
                    state: task_state_pb(&t.state) as i32,
                    attempt: t.attempt,
                    worker_id: t.worker_id.clone(),
                    error: t.error.clone(),
                    ready_unix_ms: t.ready_ms,
                    leased_unix_ms: t.leased_ms,
                    done_unix_ms: t.done_ms,
                    engine_ms: t.engine_ms,
                    started_unix_ms: t.started_ms,
                })
                .collect()
        } else {
            vec![]
        },
        epochs_trained: job.epochs_trained,
    }
}
