//! Group commit: one writer thread owns the database's write connection.
//! Every change is a closure sent to it; the thread takes all the changes
//! queued while its previous commit was being flushed and commits them as
//! one transaction, with one fsync, each change in its own savepoint.
//!
//! Durability is unchanged: a caller is answered only after the commit that
//! holds its change is on disk (`synchronous = FULL`). What changes is the
//! cost: under load the fsync, the transaction's setup and the page writes
//! are shared by the whole batch, and a waiting call holds no thread (the
//! answer comes over a oneshot channel that an async caller awaits).
//!
//! A change that need not be durable (a heartbeat's lease renewals: after a
//! restart every lease gets a full TTL anyway) can be *deferred*: its caller
//! is answered at once, and the change rides with the next batch, run first
//! in it. With no batch to ride with, it waits until its deadline and is
//! committed with the other deferred ones: a heartbeat costs no commit of
//! its own, and the changes after it see its renewals.
//!
//! The writer does not copy the write-ahead log back into the database
//! itself: [`super::wal`] does, from a thread of its own.
//!
//! A change that fails (a refused report, a job that is not found) is rolled
//! back to its savepoint and answered with its error; the rest of the batch
//! goes on. If the transaction itself fails (disk full, I/O error, a failure
//! that made SQLite roll the whole transaction back) or cannot commit,
//! nothing of the batch was stored and every change in it is answered with
//! that error.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::Instant;

use rusqlite::{Connection, Transaction};
use tokio::sync::oneshot;

use super::wal::Checkpointer;
use crate::error::{CoordError, Result};

/// The most changes committed together (a bound on one transaction's size
/// and on how long the first of them waits for the last). Smaller batches
/// answer the first of a thousand simultaneous calls sooner but commit more
/// often: at 64, each worker's first Lease in `--ray` came ~0.2 points
/// sooner and its last Complete as much later (bench/RESULTS.md, "After
/// step 8"), so 512 stays.
const MAX_BATCH: usize = 512;

/// The most deferred changes held before they are committed, whatever
/// their deadlines.
const MAX_DEFERRED: usize = 4096;

/// One change: runs inside the batch's transaction, appends the effects to
/// publish once it is committed, and returns the caller's answer.
pub type Change<E, T> = Box<dyn FnOnce(&Transaction, &mut Vec<E>) -> Result<T> + Send>;

/// The writer thread's handle. Dropping it lets the thread finish the
/// changes already sent, then stop.
pub struct GroupCommit<E> {
    queue: Option<mpsc::Sender<Message<E>>>,
    thread: Option<JoinHandle<()>>,
}

/// What the writer thread is sent.
enum Message<E> {
    /// A change whose caller waits for its commit.
    Change(Box<dyn Pending<E>>),
    /// A change nobody waits for, to commit by its deadline.
    Deferred(Deferred),
}

/// A deferred change: nobody waits for its answer or its effects.
type DeferredChange = Box<dyn FnOnce(&Transaction) -> Result<()> + Send>;

/// A change that need not be durable, nor committed at once.
struct Deferred {
    change: DeferredChange,
    /// Committed no later than this (give or take a batch's time).
    by: Instant,
}

/// How a batch went, as each change in it is told.
enum Batch<'a> {
    Committed,
    Failed(&'a CoordError),
}

/// A change waiting in the queue, its answer type erased.
trait Pending<E>: Send {
    /// Runs the change; `false` if it failed (its savepoint is rolled back).
    fn run(&mut self, tx: &Transaction) -> bool;
    /// The failure to report to the whole batch, when this change's failure
    /// ended the transaction.
    fn error(&self) -> Option<CoordError>;
    /// The effects of a change that succeeded.
    fn take_effects(&mut self) -> Vec<E>;
    fn answer(self: Box<Self>, batch: Batch);
}

struct Call<E, T> {
    change: Option<Change<E, T>>,
    outcome: Option<Result<T>>,
    effects: Vec<E>,
    reply: oneshot::Sender<Result<T>>,
    /// The caller's span, entered while its change runs here: the
    /// change's log lines carry the call's fields (job, task, worker).
    span: tracing::Span,
}

impl<E: Send, T: Send> Pending<E> for Call<E, T> {
    fn run(&mut self, tx: &Transaction) -> bool {
        let Some(change) = self.change.take() else {
            return false;
        };
        let _entered = self.span.enter();
        let effects = &mut self.effects;
        let outcome = catch_unwind(AssertUnwindSafe(|| change(tx, effects))).unwrap_or_else(|p| {
            let what = p
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| p.downcast_ref::<String>().cloned())
                .unwrap_or_default();
            Err(CoordError::Internal(format!(
                "the change panicked (nothing of it was stored): {what}"
            )))
        });
        let ok = outcome.is_ok();
        if !ok {
            self.effects.clear();
        }
        self.outcome = Some(outcome);
        ok
    }

    fn error(&self) -> Option<CoordError> {
        match &self.outcome {
            Some(Err(e)) => Some(duplicate(e)),
            _ => None,
        }
    }

    fn take_effects(&mut self) -> Vec<E> {
        std::mem::take(&mut self.effects)
    }

    fn answer(self: Box<Self>, batch: Batch) {
        let answer = match (self.outcome, batch) {
            (Some(Err(e)), _) => Err(e),
            (_, Batch::Failed(e)) => Err(duplicate(e)),
            (Some(Ok(v)), Batch::Committed) => Ok(v),
            (None, Batch::Committed) => Err(CoordError::Internal("a change was never run".into())),
        };
        // The caller may have gone (its RPC was cancelled): nothing to do.
        let _ = self.reply.send(answer);
    }
}

/// The same error again, for each change of a failed batch (SQLite's
/// error code is kept: a full disk stays RESOURCE_EXHAUSTED).
fn duplicate(e: &CoordError) -> CoordError {
    match e {
        CoordError::InvalidArgument(m) => CoordError::InvalidArgument(m.clone()),
        CoordError::NotFound(m) => CoordError::NotFound(m.clone()),
        CoordError::FailedPrecondition(m) => CoordError::FailedPrecondition(m.clone()),
        CoordError::Storage(m) => CoordError::Storage(m.clone()),
        CoordError::Artifact(m) => CoordError::Artifact(m.clone()),
        CoordError::Internal(m) => CoordError::Internal(m.clone()),
        CoordError::Sqlite(rusqlite::Error::SqliteFailure(f, m)) => {
            CoordError::Sqlite(rusqlite::Error::SqliteFailure(*f, m.clone()))
        }
        CoordError::Sqlite(other) => CoordError::Storage(other.to_string()),
    }
}

impl<E: Send + 'static> GroupCommit<E> {
    /// Starts the writer thread on `conn`; `publish` gets the effects of
    /// each committed batch, in commit order, before any change in it is
    /// answered.
    pub fn start(
        conn: Connection,
        publish: impl FnMut(Vec<E>) + Send + 'static,
    ) -> Result<GroupCommit<E>> {
        let (queue, rx) = mpsc::channel();
        let checkpointer = Checkpointer::start(&conn)?;
        let thread = std::thread::Builder::new()
            .name("ridgeline-store-writer".into())
            .spawn(move || writer(conn, checkpointer, rx, publish))
            .map_err(|e| CoordError::Internal(format!("cannot start the store's writer: {e}")))?;
        Ok(GroupCommit {
            queue: Some(queue),
            thread: Some(thread),
        })
    }

    /// Queues `change` and waits until the batch holding it is committed.
    pub async fn run<T: Send + 'static>(&self, change: Change<E, T>) -> Result<T> {
        let (reply, answer) = oneshot::channel();
        let call = Call {
            change: Some(change),
            outcome: None,
            effects: vec![],
            reply,
            span: tracing::Span::current(),
        };
        self.send(Message::Change(Box::new(call)))?;
        answer
            .await
            .map_err(|_| CoordError::Internal("the store's writer has stopped".into()))?
    }

    /// Queues `change`, which need not be durable, to run first in the next
    /// batch, or alone no later than `by`; returns at once. Its failure is
    /// logged (nothing of it is stored); if the writer stops first it is
    /// committed before the writer ends.
    pub fn defer(
        &self,
        by: Instant,
        change: impl FnOnce(&Transaction) -> Result<()> + Send + 'static,
    ) -> Result<()> {
        self.send(Message::Deferred(Deferred {
            change: Box::new(change),
            by,
        }))
    }

    fn send(&self, message: Message<E>) -> Result<()> {
        let stopped = || CoordError::Internal("the store's writer has stopped".into());
        self.queue
            .as_ref()
            .ok_or_else(stopped)?
            .send(message)
            .map_err(|_| stopped())
    }
}

impl<E> Drop for GroupCommit<E> {
    fn drop(&mut self) {
        drop(self.queue.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn writer<E>(
    mut conn: Connection,
    checkpointer: Option<Checkpointer>,
    rx: mpsc::Receiver<Message<E>>,
    mut publish: impl FnMut(Vec<E>),
) {
    let mut deferred: Vec<Deferred> = vec![];
    loop {
        // The next message; while deferred changes wait, no later than the
        // first one's deadline.
        let due = deferred.iter().map(|d| d.by).min();
        let first = match due {
            None => rx.recv().ok(),
            Some(by) => match rx.recv_timeout(by.saturating_duration_since(Instant::now())) {
                Ok(m) => Some(m),
                Err(mpsc::RecvTimeoutError::Timeout) => None,
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
            },
        };
        if first.is_none() && due.is_none() {
            break;
        }
        let mut batch = vec![];
        let mut next = first;
        while let Some(m) = next {
            match m {
                Message::Change(c) => batch.push(c),
                Message::Deferred(d) => deferred.push(d),
            }
            if batch.len() >= MAX_BATCH || deferred.len() >= MAX_DEFERRED {
                break;
            }
            next = rx.try_recv().ok();
        }
        // Deferred changes alone wait for a batch to ride with, until the
        // first one is due.
        let now = Instant::now();
        if batch.is_empty() && deferred.len() < MAX_DEFERRED && deferred.iter().all(|d| d.by > now)
        {
            continue;
        }
        write(&mut conn, &mut deferred, batch, &mut publish);
        if let Some(c) = &checkpointer {
            c.committed();
        }
    }
    // Stopping: what was deferred is still committed.
    if !deferred.is_empty() {
        write(&mut conn, &mut deferred, vec![], &mut publish);
    }
}

/// Commits the deferred changes and the batch; publishes the batch's
/// effects, then answers its callers.
fn write<E>(
    conn: &mut Connection,
    deferred: &mut Vec<Deferred>,
    mut batch: Vec<Box<dyn Pending<E>>>,
    publish: &mut impl FnMut(Vec<E>),
) {
    let n_deferred = deferred.len();
    match commit(conn, std::mem::take(deferred), &mut batch) {
        Ok(()) if batch.is_empty() => {}
        Ok(()) => {
            let effects = batch.iter_mut().flat_map(|c| c.take_effects()).collect();
            publish(effects);
            for c in batch {
                c.answer(Batch::Committed);
            }
        }
        Err(e) => {
            tracing::warn!(error = %e, changes = batch.len(), deferred = n_deferred, "a batch of changes was not stored");
            for c in batch {
                c.answer(Batch::Failed(&e));
            }
        }
    }
}

/// Runs the deferred changes, then the batch, in one transaction, each
/// change in its own savepoint.
fn commit<E>(
    conn: &mut Connection,
    deferred: Vec<Deferred>,
    batch: &mut [Box<dyn Pending<E>>],
) -> Result<()> {
    let tx = conn.transaction()?;
    // Kept prepared: these run twice per change.
    let sql = |tx: &Transaction, sql: &str| -> Result<()> {
        tx.prepare_cached(sql)?.execute([])?;
        Ok(())
    };
    for d in deferred {
        sql(&tx, "SAVEPOINT change")?;
        let outcome = catch_unwind(AssertUnwindSafe(|| (d.change)(&tx)))
            .unwrap_or_else(|_| Err(CoordError::Internal("a deferred change panicked".into())));
        match outcome {
            Ok(()) => sql(&tx, "RELEASE change")?,
            Err(e) if tx.is_autocommit() => return Err(e),
            Err(e) => {
                tracing::warn!(error = %e, "a deferred change was not stored");
                sql(&tx, "ROLLBACK TO change")?;
                sql(&tx, "RELEASE change")?;
            }
        }
    }
    for change in batch.iter_mut() {
        sql(&tx, "SAVEPOINT change")?;
        if change.run(&tx) {
            sql(&tx, "RELEASE change")?;
        } else if tx.is_autocommit() {
            // SQLite rolled the whole transaction back (e.g. SQLITE_FULL):
            // the batch is lost; its error is everyone's.
            return Err(change
                .error()
                .unwrap_or_else(|| CoordError::Internal("a change ended the transaction".into())));
        } else {
            sql(&tx, "ROLLBACK TO change")?;
            sql(&tx, "RELEASE change")?;
        }
    }
    tx.commit()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn open() -> (
        tempfile::TempDir,
        GroupCommit<i64>,
        std::sync::mpsc::Receiver<Vec<i64>>,
    ) {
        let dir = tempfile::tempdir().unwrap();
        let conn = Connection::open(dir.path().join("t.db")).unwrap();
        conn.pragma_update(None, "journal_mode", "WAL").unwrap();
        conn.execute_batch("CREATE TABLE t (k INTEGER PRIMARY KEY, v INTEGER NOT NULL)")
            .unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let gc = GroupCommit::start(conn, move |effects| tx.send(effects).unwrap()).unwrap();
        (dir, gc, rx)
    }

    fn rows(dir: &tempfile::TempDir) -> Vec<(i64, i64)> {
        let conn = Connection::open(dir.path().join("t.db")).unwrap();
        let mut st = conn.prepare("SELECT k, v FROM t ORDER BY k").unwrap();
        st.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap()
            .collect::<rusqlite::Result<_>>()
            .unwrap()
    }

    /// The writer's commits reach the database file while it runs: with
    /// SQLite's own checkpoints off in the writer, [`super::super::wal`]
    /// copies its log back (fails if the writer stops nudging it).
    #[tokio::test]
    async fn the_writer_s_commits_are_checkpointed_while_it_runs() {
        let (dir, gc, _published) = open();
        let path = dir.path().join("t.db");
        let size = || std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
        let before = size();
        for k in 0..100i64 {
            gc.run(Box::new(move |tx, _| {
                tx.execute("INSERT INTO t(k, v) VALUES (?1, 0)", [k])?;
                tx.execute_batch(
                    "CREATE TABLE IF NOT EXISTS big (b BLOB);
                     INSERT INTO big VALUES (zeroblob(40000));",
                )?;
                Ok(())
            }))
            .await
            .unwrap();
        }
        let start = Instant::now();
        while size() < before + 100 * 40000 {
            assert!(
                start.elapsed() < std::time::Duration::from_secs(10),
                "the database file stayed at {} bytes",
                size()
            );
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        assert_eq!(rows(&dir).len(), 100);
    }

    /// Many changes at once: each is answered with its own result, a
    /// failing one changes nothing and publishes nothing, the others are
    /// all stored, and their effects are published before they are answered.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_failed_change_rolls_back_alone_and_the_batch_commits() {
        let (dir, gc, published) = open();
        let gc = std::sync::Arc::new(gc);
        let mut calls = vec![];
        for k in 0..200i64 {
            let gc = gc.clone();
            calls.push(tokio::spawn(async move {
                gc.run(Box::new(move |tx, effects| {
                    tx.execute("INSERT INTO t(k, v) VALUES (?1, ?2)", [k, k * 10])?;
                    effects.push(k);
                    if k % 7 == 3 {
                        // Fails after writing: its row must not stay.
                        return Err(CoordError::FailedPrecondition(format!("refused {k}")));
                    }
                    if k == 5 {
                        panic!("a bug in change 5");
                    }
                    Ok(k)
                }))
                .await
            }));
        }
        for (k, call) in calls.into_iter().enumerate() {
            let k = k as i64;
            match call.await.unwrap() {
                Ok(v) => assert_eq!(v, k),
                Err(CoordError::FailedPrecondition(m)) => {
                    assert_eq!(k % 7, 3);
                    assert_eq!(m, format!("refused {k}"));
                }
                Err(CoordError::Internal(m)) => {
                    assert_eq!(k, 5);
                    assert!(m.contains("a bug in change 5"), "{m}");
                }
                Err(e) => panic!("change {k}: {e}"),
            }
        }
        let want: Vec<i64> = (0..200).filter(|k| k % 7 != 3 && *k != 5).collect();
        let stored = rows(&dir);
        assert_eq!(
            stored,
            want.iter().map(|k| (*k, k * 10)).collect::<Vec<_>>()
        );
        let mut effects: Vec<i64> = published.try_iter().flatten().collect();
        effects.sort();
        assert_eq!(effects, want);
    }

    /// A deferred change rides with the next batch, run before its
    /// changes (which see what it wrote), long before its own deadline; a
    /// failing one stores nothing and does not fail the batch it rode with.
    #[tokio::test]
    async fn a_deferred_change_runs_first_in_the_next_batch() {
        let (dir, gc, _published) = open();
        let far = Instant::now() + std::time::Duration::from_secs(3600);
        gc.defer(far, |tx| {
            tx.execute("INSERT INTO t(k, v) VALUES (1, 10)", [])?;
            Ok(())
        })
        .unwrap();
        gc.defer(far, |tx| {
            tx.execute("INSERT INTO t(k, v) VALUES (2, 20)", [])?;
            Err(CoordError::Internal("refused".into()))
        })
        .unwrap();
        assert!(
            rows(&dir).is_empty(),
            "committed before its deadline, alone"
        );
        let seen: i64 = gc
            .run(Box::new(|tx, _| {
                let v: i64 = tx.query_row("SELECT v FROM t WHERE k = 1", [], |r| r.get(0))?;
                tx.execute("INSERT INTO t(k, v) VALUES (3, ?1)", [v + 1])?;
                Ok(v)
            }))
            .await
            .unwrap();
        assert_eq!(seen, 10);
        assert_eq!(rows(&dir), vec![(1, 10), (3, 11)]);
    }

    /// With no batch to ride with, deferred changes are committed together
    /// by the first one's deadline; and those still waiting when the writer
    /// stops are committed before it ends.
    #[tokio::test]
    async fn deferred_changes_alone_are_committed_by_their_deadline_or_at_the_stop() {
        let (dir, gc, published) = open();
        let soon = Instant::now() + std::time::Duration::from_millis(50);
        for k in 1..=3i64 {
            gc.defer(soon, move |tx| {
                tx.execute("INSERT INTO t(k, v) VALUES (?1, ?1)", [k])?;
                Ok(())
            })
            .unwrap();
        }
        let deadline = Instant::now() + std::time::Duration::from_secs(30);
        while rows(&dir).len() < 3 {
            assert!(
                Instant::now() < deadline,
                "never committed: {:?}",
                rows(&dir)
            );
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        assert_eq!(rows(&dir), vec![(1, 1), (2, 2), (3, 3)]);
        // Nothing was published for them: they have no callers.
        assert!(published.try_iter().all(|e| e.is_empty()));
        let far = Instant::now() + std::time::Duration::from_secs(3600);
        gc.defer(far, |tx| {
            tx.execute("INSERT INTO t(k, v) VALUES (4, 4)", [])?;
            Ok(())
        })
        .unwrap();
        drop(gc);
        assert_eq!(rows(&dir).last(), Some(&(4, 4)));
    }

    /// A failure that ends the transaction (here a change that commits it
    /// behind the writer's back is refused by SQLite; a full disk behaves
    /// the same) fails every change of its batch, and the writer carries on.
    #[tokio::test]
    async fn a_batch_that_cannot_commit_fails_every_change_and_the_next_one_works() {
        let (dir, gc, _published) = open();
        let err = gc
            .run(Box::new(|tx, _| {
                tx.execute("INSERT INTO t(k, v) VALUES (1, 1)", [])?;
                // Ends the transaction: what follows must see a failure,
                // and nothing of it may be stored.
                tx.execute_batch("ROLLBACK")?;
                Ok(())
            }))
            .await;
        assert!(err.is_err(), "{err:?}");
        assert!(rows(&dir).is_empty());
        gc.run(Box::new(|tx, _| {
            tx.execute("INSERT INTO t(k, v) VALUES (2, 2)", [])?;
            Ok(())
        }))
        .await
        .unwrap();
        assert_eq!(rows(&dir), vec![(2, 2)]);
    }
}
