//! Leases ahead: a worker may hold a few tasks beyond its slots, queued, and
//! start one the moment a slot frees, so that nothing waits for a round
//! trip to the coordinator between one task and the next.
//!
//! A queued task must not keep an idle worker waiting, so one is handed
//! out only from a job with ready tasks to spare: more than the idle slots
//! of all live workers (slots with no task leased for them), so that every
//! idle slot can still get one. Below that, workers get tasks for their
//! free slots only, and their queues drain. (A worker that falls idle
//! *later*, while another's queued task waits behind a long one, is not
//! helped: queued tasks are not taken back. Hence off by default.)
//!
//! Both figures behind that rule (the idle slots, and a job's ready tasks)
//! cost a scan, so each is measured at most every [`REFRESH_MS`] and kept
//! up to date in between by counting what is leased: a busy coordinator
//! answers hundreds of completions in that time. Only the writer thread
//! uses this (from inside its transactions), so the lock is never
//! contended.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};

use rusqlite::{params, Transaction};

use crate::error::Result;
use crate::store;

/// How long a measured idle capacity or a job's ready count is reused (ms).
pub(super) const REFRESH_MS: i64 = 100;

/// A job's ready tasks are counted up to the idle slots plus this many.
const COUNT_BEYOND: u64 = 1024;

#[derive(Default)]
pub(super) struct LeaseAhead {
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    /// (measured at, idle slots of live workers).
    idle: Option<(i64, u64)>,
    /// Per job: (counted at, ready tasks then, less those leased since).
    ready: HashMap<String, (i64, u64)>,
}

impl LeaseAhead {
    /// How many of `want` queue places `job` can fill at `now`: its ready
    /// tasks beyond the idle slots of the workers seen within `live_ms`.
    /// Counts them as taken.
    pub(super) fn queue_room(
        &self,
        tx: &Transaction,
        job: &str,
        want: usize,
        now: i64,
        live_ms: i64,
    ) -> Result<usize> {
        let mut inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        let fresh = |at: i64| now >= at && now - at < REFRESH_MS;
        let idle = match inner.idle {
            Some((at, c)) if fresh(at) => c,
            _ => {
                // Slots of live workers with no task leased for them (a
                // queued task fills none: it waits for a running one).
                let c: i64 = store::one(
                    tx,
                    "SELECT COALESCE(SUM(MAX(0, w.slots - (
                         SELECT COUNT(*) FROM tasks t WHERE t.worker_id = w.id AND t.state = 'leased'))), 0)
                     FROM workers w WHERE w.last_seen_ms >= ?1 AND w.quarantined_until <= ?2",
                    params![now - live_ms, now],
                    |r| r.get(0),
                )?;
                let c = c.max(0) as u64;
                inner.idle = Some((now, c));
                // Counts of jobs not asked about lately go with it.
                inner.ready.retain(|_, (at, _)| fresh(*at));
                c
            }
        };
        let ready = match inner.ready.get(job) {
            Some(&(at, n)) if fresh(at) => n,
            _ => {
                // Counting stops a little beyond what could matter: the
                // cost is bounded by the cluster, not by the job.
                let n: i64 = store::one(
                    tx,
                    "SELECT COUNT(*) FROM (
                         SELECT 1 FROM tasks t
                         WHERE t.job_id = ?1 AND t.state = 'pending'
                           AND (t.after IS NULL OR (SELECT p.state FROM tasks p WHERE p.id = t.after) = 'done')
                         LIMIT ?2)",
                    params![job, (idle + COUNT_BEYOND) as i64],
                    |r| r.get(0),
                )?;
                n.max(0) as u64
            }
        };
        let room = (ready.saturating_sub(idle) as usize).min(want);
        inner
            .ready
            .insert(job.to_string(), (now, ready - room as u64));
        Ok(room)
    }

    /// `n` ready tasks of `job` were leased for free slots: as many fewer
    /// ready tasks, and idle slots.
    pub(super) fn taken(&self, job: &str, n: usize) {
        let mut inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some((_, ready)) = inner.ready.get_mut(job) {
            *ready = ready.saturating_sub(n as u64);
        }
        if let Some((_, idle)) = &mut inner.idle {
            *idle = idle.saturating_sub(n as u64);
        }
    }
}
