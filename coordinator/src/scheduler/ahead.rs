//! Leases ahead: a worker may hold a few tasks beyond its slots, queued, and
//! start one the moment a slot frees, so that nothing waits for a round
//! trip to the coordinator between one task and the next.
//!
//! A queued task must not keep an idle worker waiting, so one is handed
//! out only from a job with ready tasks to spare: more than the idle slots
//! of all live workers (slots with no task leased for them), so that every
//! idle slot can still get one. Below that, workers get tasks for their
//! free slots only, and their queues drain.
//!
//! A worker that falls idle *later*, with nothing ready, while another
//! holds a task queued behind a long one, takes that task back
//! (`leases::take_back_queued`), as long as its holder has not started it.
//! Who wins is settled here, in memory ([`Queued`]): the holder asks before
//! it starts a queued task (`StartQueued`, answered without a commit), and
//! the take-back marks the task taken, both under one lock, so exactly one
//! of the two runs it. The store then records the take-back as a hand-back
//! (attempt + 1), and the holder's next heartbeat is told to drop the old
//! attempt if it has not heard already.
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

/// Above this many remembered queued tasks, those older than a lease's
/// lifetime (long since started, expired or handed back) are forgotten.
const QUEUED_SWEEP_AT: usize = 4096;

/// A job's ready tasks are counted up to the idle slots plus this many.
const COUNT_BEYOND: u64 = 1024;

#[derive(Default)]
pub(super) struct LeaseAhead {
    inner: Mutex<Inner>,
    /// Tasks leased ahead and not known to be started.
    queued: Mutex<Queued>,
}

/// Tasks leased into a worker's queue, by task id, until their worker
/// starts them or they are taken back. Only in memory: after a restart
/// nothing is taken back until new tasks are queued, and a worker asking
/// to start a task not remembered here is answered from the store.
#[derive(Default)]
struct Queued {
    tasks: HashMap<String, QueuedTask>,
    /// Order of insertion, for the oldest first.
    next: u64,
}

struct QueuedTask {
    worker: String,
    attempt: u32,
    order: u64,
    at: i64,
    taken: bool,
}

/// May a worker start a task it held queued?
#[derive(Debug, PartialEq, Eq)]
pub(super) enum StartAnswer {
    /// Yes: it can no longer be taken back.
    Start,
    /// No: it was taken back for another worker.
    TakenBack,
    /// Not remembered here (e.g. leased before a restart): ask the store.
    Unknown,
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
        // The count keeps the time it was measured: what is leased until
        // then only lowers it, so it must be measured again (else, under a
        // steady load, it is never measured again and runs down to zero).
        let (measured, ready) = match inner.ready.get(job) {
            Some(&(at, n)) if fresh(at) => (at, n),
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
                (now, n.max(0) as u64)
            }
        };
        let room = (ready.saturating_sub(idle) as usize).min(want);
        inner
            .ready
            .insert(job.to_string(), (measured, ready - room as u64));
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

impl LeaseAhead {
    fn queued(&self) -> std::sync::MutexGuard<'_, Queued> {
        self.queued.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// `task`'s `attempt` was leased into `worker`'s queue at `now`.
    pub(super) fn queued_to(&self, task: &str, worker: &str, attempt: u32, now: i64, ttl: i64) {
        let mut q = self.queued();
        if q.tasks.len() >= QUEUED_SWEEP_AT {
            q.tasks.retain(|_, t| now - t.at < ttl);
        }
        q.next += 1;
        let order = q.next;
        q.tasks.insert(
            task.to_string(),
            QueuedTask {
                worker: worker.to_string(),
                attempt,
                order,
                at: now,
                taken: false,
            },
        );
    }

    /// `worker` is about to start `task`'s `attempt`, which it held queued:
    /// settles it against a take-back (whichever comes first wins).
    pub(super) fn start(&self, task: &str, worker: &str, attempt: u32) -> StartAnswer {
        let mut q = self.queued();
        match q.tasks.get(task) {
            Some(t) if t.worker == worker && t.attempt == attempt => {
                if t.taken {
                    StartAnswer::TakenBack
                } else {
                    q.tasks.remove(task);
                    StartAnswer::Start
                }
            }
            _ => StartAnswer::Unknown,
        }
    }

    /// Up to `n` tasks queued on workers other than `worker` and not
    /// started, the oldest first: (task, holder, attempt).
    pub(super) fn takeable(&self, worker: &str, n: usize) -> Vec<(String, String, u32)> {
        let q = self.queued();
        let mut found: Vec<_> = q
            .tasks
            .iter()
            .filter(|(_, t)| !t.taken && t.worker != worker)
            .map(|(id, t)| (t.order, id.clone(), t.worker.clone(), t.attempt))
            .collect();
        found.sort_unstable();
        found
            .into_iter()
            .take(n)
            .map(|(_, id, w, a)| (id, w, a))
            .collect()
    }

    /// Marks `task`'s `attempt` taken back, if it is still queued and not
    /// started: from now on its holder's `start` is refused.
    pub(super) fn take(&self, task: &str, attempt: u32) -> bool {
        let mut q = self.queued();
        match q.tasks.get_mut(task) {
            Some(t) if t.attempt == attempt && !t.taken => {
                t.taken = true;
                true
            }
            _ => false,
        }
    }

    /// Forgets `task` (no longer queued anywhere, as the store says).
    pub(super) fn forget(&self, task: &str) {
        self.queued().tasks.remove(task);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_queued_task_is_either_started_by_its_holder_or_taken_back_never_both() {
        let ahead = LeaseAhead::default();
        ahead.queued_to("t1", "a", 1, 0, 60_000);
        ahead.queued_to("t2", "a", 1, 0, 60_000);
        ahead.queued_to("t3", "b", 4, 0, 60_000);
        // The oldest first, never the asker's own.
        assert_eq!(
            ahead.takeable("b", 5),
            vec![("t1".into(), "a".into(), 1), ("t2".into(), "a".into(), 1)]
        );
        assert_eq!(ahead.takeable("c", 1), vec![("t1".into(), "a".into(), 1)]);

        // Started first: no longer takeable.
        assert_eq!(ahead.start("t1", "a", 1), StartAnswer::Start);
        assert!(!ahead.take("t1", 1));
        // Taken first: the holder's start is refused, again and again.
        assert!(ahead.take("t2", 1));
        assert!(!ahead.take("t2", 1), "taken once");
        assert_eq!(ahead.start("t2", "a", 1), StartAnswer::TakenBack);
        assert_eq!(ahead.start("t2", "a", 1), StartAnswer::TakenBack);
        assert_eq!(ahead.takeable("c", 5), vec![("t3".into(), "b".into(), 4)]);
        // Another worker's or attempt's start is not this entry's business.
        assert_eq!(ahead.start("t3", "a", 4), StartAnswer::Unknown);
        assert_eq!(ahead.start("t3", "b", 3), StartAnswer::Unknown);
        assert!(!ahead.take("t3", 3));
        // Not remembered: the store decides.
        assert_eq!(ahead.start("t9", "a", 1), StartAnswer::Unknown);
        ahead.forget("t3");
        assert!(ahead.takeable("c", 5).is_empty());
    }

    /// A job's ready count is measured again every REFRESH_MS under a
    /// steady stream of calls: the calls lower it, they do not make it
    /// fresh (a count kept fresh that way ran down to zero, and a steady
    /// load got no queue places at all).
    #[test]
    fn a_job_s_ready_count_is_measured_again_however_often_it_is_asked() {
        let dir = tempfile::tempdir().unwrap();
        let mut conn = store::Store::open(dir.path()).unwrap().into_connection();
        let tx = conn.transaction().unwrap();
        tx.execute(
            "INSERT INTO jobs(id, name, kind, spec, state, device, max_attempts, created_ms)
             VALUES ('j', 'j', 'line_search', '{}', 'running', 'any', 3, 0)",
            [],
        )
        .unwrap();
        let pending = |from: usize, to: usize| {
            for i in from..to {
                tx.execute(
                    "INSERT INTO tasks(id, job_id, ordinal, stage, label, curve, last_chunk, spec, state)
                     VALUES (?1, 'j', ?2, 's', 'l', 'c', 1, '{}', 'pending')",
                    params![format!("t{i}"), i as i64],
                )
                .unwrap();
            }
        };
        let ahead = LeaseAhead::default();
        // Nothing ready when first asked; then tasks become ready while
        // the job is asked about every 60 ms.
        assert_eq!(ahead.queue_room(&tx, "j", 1, 0, 60_000).unwrap(), 0);
        pending(0, 5);
        let granted: Vec<usize> = [60, 120, 180, 240, 300]
            .iter()
            .map(|&now| ahead.queue_room(&tx, "j", 1, now, 60_000).unwrap())
            .collect();
        assert_eq!(granted, [0, 1, 1, 1, 1], "measured again at 120 ms");
        // Granted places count against the figure measured (at 240 ms: 5
        // ready, 2 granted since) until it is measured again.
        pending(5, 6);
        assert_eq!(ahead.queue_room(&tx, "j", 9, 310, 60_000).unwrap(), 3);
        assert_eq!(ahead.queue_room(&tx, "j", 9, 330, 60_000).unwrap(), 0);
        assert_eq!(ahead.queue_room(&tx, "j", 9, 340, 60_000).unwrap(), 6);
    }

    #[test]
    fn old_queued_tasks_are_forgotten_once_there_are_many() {
        let ahead = LeaseAhead::default();
        for i in 0..QUEUED_SWEEP_AT {
            ahead.queued_to(&format!("old{i}"), "a", 1, 0, 1000);
        }
        ahead.queued_to("new", "a", 1, 5000, 1000);
        assert_eq!(ahead.takeable("b", 10), vec![("new".into(), "a".into(), 1)]);
    }
}
