//! WAL checkpoints on a thread of their own.
//!
//! SQLite copies the write-ahead log back into the database (a checkpoint)
//! in the connection that commits, once the log holds 1,000 pages: in the
//! store's writer thread, with an fsync of the log and of the database,
//! while every call queued for the next batch waits. Profiled under load,
//! that was 4-5 % of the writer's time, and on a slow disk it is a stall
//! of every caller at once.
//!
//! Here the writer's automatic checkpoint is off, and a second connection
//! checkpoints from this thread: after the writer has committed, at most
//! every [`EVERY`]. PASSIVE mode never waits for the writer or the readers
//! (it copies what no reader still needs, and the next checkpoint copies
//! the rest), so the log stays small without the writer doing it.
//! Durability does not change: a commit is durable once its log frames are
//! synced, whoever copies them later.

use std::path::Path;
use std::sync::mpsc::{self, SyncSender, TryRecvError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rusqlite::Connection;

use crate::error::{CoordError, Result};

/// The least time between two checkpoints.
pub const EVERY: Duration = Duration::from_millis(250);

/// The checkpointing thread's handle: [`Checkpointer::committed`] after
/// each commit. Dropping it stops the thread (the last connection to close
/// checkpoints what is left).
pub struct Checkpointer {
    nudge: Option<SyncSender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Checkpointer {
    /// Turns `writer`'s automatic checkpoints off and starts checkpointing
    /// its database from a connection of its own. `None` for a database
    /// without a file (in memory), which keeps SQLite's own checkpoints.
    pub fn start(writer: &Connection) -> Result<Option<Checkpointer>> {
        let Some(path) = writer.path().filter(|p| !p.is_empty()) else {
            return Ok(None);
        };
        let conn = Connection::open(Path::new(path))
            .map_err(|e| CoordError::Storage(format!("{path}: {e}")))?;
        conn.busy_timeout(Duration::from_secs(5))?;
        writer.pragma_update(None, "wal_autocheckpoint", 0)?;
        let (nudge, rx) = mpsc::sync_channel(1);
        let thread = std::thread::Builder::new()
            .name("ridgeline-store-checkpoints".into())
            .spawn(move || checkpoints(conn, rx))
            .map_err(|e| CoordError::Internal(format!("cannot start the checkpoints: {e}")))?;
        Ok(Some(Checkpointer {
            nudge: Some(nudge),
            thread: Some(thread),
        }))
    }

    /// The writer has committed: a checkpoint is due (at once if none ran
    /// in the last [`EVERY`]). Never waits.
    pub fn committed(&self) {
        if let Some(nudge) = &self.nudge {
            // Full: a checkpoint is already due and will see this commit.
            let _ = nudge.try_send(());
        }
    }
}

fn checkpoints(conn: Connection, nudges: mpsc::Receiver<()>) {
    let mut last: Option<Instant> = None;
    while nudges.recv().is_ok() {
        if let Some(wait) = last.map(|t| EVERY.saturating_sub(t.elapsed())) {
            std::thread::sleep(wait);
        }
        // Commits during the wait are covered by this checkpoint.
        match nudges.try_recv() {
            Ok(()) | Err(TryRecvError::Empty) => {}
            Err(TryRecvError::Disconnected) => break,
        }
        last = Some(Instant::now());
        let done = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| {
            Ok((r.get::<_, i64>(1)?, r.get::<_, i64>(2)?))
        });
        match done {
            Ok((log, copied)) => {
                tracing::trace!(log, copied, "WAL checkpoint");
            }
            Err(e) => {
                tracing::warn!(error = %e, "a WAL checkpoint failed; the next commit retries")
            }
        }
    }
}

impl Drop for Checkpointer {
    fn drop(&mut self) {
        drop(self.nudge.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn size(path: &Path) -> u64 {
        std::fs::metadata(path).map(|m| m.len()).unwrap_or(0)
    }

    /// The writer no longer copies its log into the database; the
    /// checkpointer does, soon after the commits, while the writer's
    /// connection stays open.
    #[test]
    fn commits_reach_the_database_file_without_the_writer_checkpointing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.db");
        let mut writer = Connection::open(&path).unwrap();
        writer.pragma_update(None, "journal_mode", "WAL").unwrap();
        writer
            .execute_batch("CREATE TABLE t (k INTEGER PRIMARY KEY, v BLOB NOT NULL)")
            .unwrap();
        // What the database file holds before the checkpointer exists.
        writer
            .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
            .unwrap();
        let before = size(&path);
        let checkpointer = Checkpointer::start(&writer).unwrap().expect("a file");
        let auto: i64 = writer
            .pragma_query_value(None, "wal_autocheckpoint", |r| r.get(0))
            .unwrap();
        assert_eq!(auto, 0, "the writer checkpoints nothing itself");
        // 2,000 pages' worth of commits: SQLite's own threshold (1,000
        // pages) would have checkpointed in the writer.
        for k in 0..250i64 {
            let tx = writer.transaction().unwrap();
            tx.execute("INSERT INTO t(k, v) VALUES (?1, zeroblob(32768))", [k])
                .unwrap();
            tx.commit().unwrap();
            checkpointer.committed();
        }
        let start = Instant::now();
        while size(&path) < before + 250 * 32768 {
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "the database file stayed at {} bytes (from {before})",
                size(&path)
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        drop(checkpointer);
        // The writer goes on as before.
        writer
            .execute("INSERT INTO t(k, v) VALUES (1000, x'00')", [])
            .unwrap();
    }

    #[test]
    fn a_database_in_memory_keeps_sqlite_s_own_checkpoints() {
        let conn = Connection::open_in_memory().unwrap();
        assert!(Checkpointer::start(&conn).unwrap().is_none());
    }
}
