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
//! A change that fails (a refused report, a job that is not found) is rolled
//! back to its savepoint and answered with its error; the rest of the batch
//! goes on. If the transaction itself fails (disk full, I/O error, a failure
//! that made SQLite roll the whole transaction back) or cannot commit,
//! nothing of the batch was stored and every change in it is answered with
//! that error.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::thread::JoinHandle;

use rusqlite::{Connection, Transaction};
use tokio::sync::{mpsc, oneshot};

use crate::error::{CoordError, Result};

/// The most changes committed together (a bound on one transaction's size
/// and on how long the first of them waits for the last).
const MAX_BATCH: usize = 512;

/// One change: runs inside the batch's transaction, appends the effects to
/// publish once it is committed, and returns the caller's answer.
pub type Change<E, T> = Box<dyn FnOnce(&Transaction, &mut Vec<E>) -> Result<T> + Send>;

/// The writer thread's handle. Dropping it lets the thread finish the
/// changes already sent, then stop.
pub struct GroupCommit<E> {
    queue: Option<mpsc::UnboundedSender<Box<dyn Pending<E>>>>,
    thread: Option<JoinHandle<()>>,
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
        let (queue, rx) = mpsc::unbounded_channel();
        let thread = std::thread::Builder::new()
            .name("ridgeline-store-writer".into())
            .spawn(move || writer(conn, rx, publish))
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
        let queue = self
            .queue
            .as_ref()
            .ok_or_else(|| CoordError::Internal("the store's writer has stopped".into()))?;
        queue
            .send(Box::new(call))
            .map_err(|_| CoordError::Internal("the store's writer has stopped".into()))?;
        answer
            .await
            .map_err(|_| CoordError::Internal("the store's writer has stopped".into()))?
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
    mut rx: mpsc::UnboundedReceiver<Box<dyn Pending<E>>>,
    mut publish: impl FnMut(Vec<E>),
) {
    while let Some(first) = rx.blocking_recv() {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(next) => batch.push(next),
                Err(_) => break,
            }
        }
        match commit(&mut conn, &mut batch) {
            Ok(()) => {
                let effects = batch.iter_mut().flat_map(|c| c.take_effects()).collect();
                publish(effects);
                for c in batch {
                    c.answer(Batch::Committed);
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, changes = batch.len(), "a batch of changes was not stored");
                for c in batch {
                    c.answer(Batch::Failed(&e));
                }
            }
        }
    }
}

/// Runs the batch in one transaction, each change in its own savepoint.
fn commit<E>(conn: &mut Connection, batch: &mut [Box<dyn Pending<E>>]) -> Result<()> {
    let tx = conn.transaction()?;
    // Kept prepared: these run twice per change.
    let sql = |tx: &Transaction, sql: &str| -> Result<()> {
        tx.prepare_cached(sql)?.execute([])?;
        Ok(())
    };
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
