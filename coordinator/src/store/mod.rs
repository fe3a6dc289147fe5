//! The store: the coordinator's state in one SQLite database in the data
//! directory (rusqlite, bundled SQLite — nothing to install).
//!
//! Why SQLite rather than redb: the state is relational (jobs → tasks →
//! events, leases joined with jobs when picking work), the scheduler's
//! choices are one indexed query, and a researcher can open the file with
//! the `sqlite3` shell to see what happened. WAL mode with `synchronous =
//! FULL` makes every committed transaction durable before the RPC that made
//! it is answered.
//!
//! Every state change goes through [`commit::GroupCommit`]: one writer
//! thread owns the write connection and commits the changes queued while
//! it was flushing as one transaction (one fsync for the batch, each change
//! in its own savepoint), so there is one writer and no interleaving to
//! reason about. Reads use their own connection ([`Store::reader`]): in WAL
//! mode they see the last commit and never wait for the writer. A third
//! connection copies the log back into the database ([`wal`]), so the
//! writer does not.

use std::path::{Path, PathBuf};

use prost::Message;
use ridgeline_common::proto::v1 as pb;
use rusqlite::{params, Connection, OptionalExtension, Transaction};

use crate::error::{CoordError, Result};

pub mod commit;
pub mod wal;

const SCHEMA: &str = include_str!("schema.sql");
const SCHEMA_VERSION: &str = "1";

/// SQLite's own message for a data directory it cannot write is "unable
/// to open database file": say what is wrong instead, before touching
/// anything in it.
fn check_writable(dir: &Path) -> Result<()> {
    let probe = dir.join(format!(".write-test-{}", std::process::id()));
    match std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(&probe)
    {
        Ok(_) => {
            let _ = std::fs::remove_file(&probe);
            Ok(())
        }
        Err(e) => Err(CoordError::Storage(format!(
            "the data directory {} cannot be written ({e}): the coordinator keeps its database \
             there; make it writable (or free space) or choose another --data-dir. Nothing in it \
             was changed",
            dir.display()
        ))),
    }
}

pub struct Store {
    conn: Connection,
    path: PathBuf,
}

/// A job row.
#[derive(Debug, Clone)]
pub struct JobRow {
    pub id: String,
    pub name: String,
    pub kind: String,
    pub spec: String,
    pub state: String,
    pub error: String,
    pub device: String,
    pub max_attempts: u32,
    pub created_ms: i64,
    pub finished_ms: i64,
    pub epochs_trained: u64,
    pub engine_ms: u64,
}

/// A task row.
#[derive(Debug, Clone)]
pub struct TaskRow {
    pub id: String,
    pub job_id: String,
    pub ordinal: i64,
    pub stage: String,
    pub label: String,
    pub curve: String,
    pub after: Option<String>,
    pub last_chunk: bool,
    pub spec: String,
    pub state: String,
    pub attempt: u32,
    pub worker_id: String,
    pub lease_until: i64,
    pub checkpoint: String,
    pub error: String,
    pub ready_ms: i64,
    pub leased_ms: i64,
    pub done_ms: i64,
    pub engine_ms: u64,
    /// When the completing attempt started on its worker (0 until done).
    pub started_ms: i64,
}

/// A worker row.
#[derive(Debug, Clone)]
pub struct WorkerRow {
    pub id: String,
    pub name: String,
    pub device: String,
    pub slots: u32,
    pub memory: u64,
    pub last_seen_ms: i64,
    pub tasks_done: u64,
    pub quarantined_until: i64,
    pub quarantine_reason: String,
}

pub const JOB_COLS: &str =
    "id, name, kind, spec, state, error, device, max_attempts, created_ms, finished_ms, epochs_trained, engine_ms";
pub const TASK_COLS: &str =
    "id, job_id, ordinal, stage, label, curve, after, last_chunk, spec, state, attempt, \
                             worker_id, lease_until, checkpoint, error, ready_ms, leased_ms, done_ms, engine_ms, started_ms";

pub fn job_row(r: &rusqlite::Row) -> rusqlite::Result<JobRow> {
    Ok(JobRow {
        id: r.get(0)?,
        name: r.get(1)?,
        kind: r.get(2)?,
        spec: r.get(3)?,
        state: r.get(4)?,
        error: r.get(5)?,
        device: r.get(6)?,
        max_attempts: r.get(7)?,
        created_ms: r.get(8)?,
        finished_ms: r.get(9)?,
        epochs_trained: r.get::<_, i64>(10)? as u64,
        engine_ms: r.get::<_, i64>(11)? as u64,
    })
}

pub fn task_row(r: &rusqlite::Row) -> rusqlite::Result<TaskRow> {
    Ok(TaskRow {
        id: r.get(0)?,
        job_id: r.get(1)?,
        ordinal: r.get(2)?,
        stage: r.get(3)?,
        label: r.get(4)?,
        curve: r.get(5)?,
        after: r.get(6)?,
        last_chunk: r.get::<_, i64>(7)? != 0,
        spec: r.get(8)?,
        state: r.get(9)?,
        attempt: r.get(10)?,
        worker_id: r.get(11)?,
        lease_until: r.get(12)?,
        checkpoint: r.get(13)?,
        error: r.get(14)?,
        ready_ms: r.get(15)?,
        leased_ms: r.get(16)?,
        done_ms: r.get(17)?,
        engine_ms: r.get::<_, i64>(18)? as u64,
        started_ms: r.get(19)?,
    })
}

/// Turns off SQLite's memory statistics. With them on (the default), every
/// allocation SQLite makes takes a process-wide mutex: profiled under load,
/// mutex lock and unlock were ~9 % of the store writer's time. The
/// coordinator reads none of those statistics.
///
/// Call it once at the start of the process, before any thread uses
/// SQLite (`sqlite3_config` is not thread-safe); `coordinator serve` does.
/// Once SQLite is initialised it refuses (`SQLITE_MISUSE`) and changes
/// nothing, which this reports as `false`.
pub fn configure_sqlite() -> bool {
    // SAFETY: this option takes one int; the caller runs it before any
    // other thread can be inside SQLite (see above).
    let rc = unsafe {
        rusqlite::ffi::sqlite3_config(
            rusqlite::ffi::SQLITE_CONFIG_MEMSTATUS,
            0 as std::os::raw::c_int,
        )
    };
    rc == rusqlite::ffi::SQLITE_OK
}

impl Store {
    /// Opens (or creates) the database `ridgeline.db` in `dir`.
    pub fn open(dir: &Path) -> Result<Store> {
        std::fs::create_dir_all(dir)
            .map_err(|e| CoordError::Storage(format!("cannot create {}: {e}", dir.display())))?;
        check_writable(dir)?;
        let path = dir.join("ridgeline.db");
        let conn = Connection::open(&path)
            .map_err(|e| CoordError::Storage(format!("{}: {e}", path.display())))?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        // 64 MiB of page cache (the default is 2 MiB): the scheduler's
        // queries then read the queue from memory, not through the kernel.
        conn.pragma_update(None, "cache_size", -65_536)?;
        tune(&conn)?;
        conn.execute_batch(SCHEMA)?;
        migrate(&conn)?;
        let version: Option<String> = conn
            .query_row(
                "SELECT value FROM meta WHERE key = 'schema_version'",
                [],
                |r| r.get(0),
            )
            .optional()?;
        match version.as_deref() {
            None => {
                conn.execute(
                    "INSERT INTO meta(key, value) VALUES ('schema_version', ?1)",
                    [SCHEMA_VERSION],
                )?;
            }
            Some(SCHEMA_VERSION) => {}
            Some(v) => {
                return Err(CoordError::Storage(format!(
                    "{} has schema version {v}; this coordinator reads version {SCHEMA_VERSION}",
                    path.display()
                )))
            }
        }
        Ok(Store { conn, path })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// A second connection to the same database, for reads only: it sees
    /// every committed change and never blocks the writer (WAL).
    pub fn reader(&self) -> Result<Connection> {
        let conn = Connection::open(&self.path)
            .map_err(|e| CoordError::Storage(format!("{}: {e}", self.path.display())))?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        conn.pragma_update(None, "query_only", "ON")?;
        conn.pragma_update(None, "cache_size", -65_536)?;
        tune(&conn)?;
        Ok(conn)
    }

    /// Read access on the write connection (before the writer starts).
    pub fn read(&self) -> &Connection {
        &self.conn
    }

    /// The write connection, for the writer thread ([`commit::GroupCommit`]).
    pub fn into_connection(self) -> Connection {
        self.conn
    }
}

/// Columns added after a database was first created (`CREATE TABLE IF NOT
/// EXISTS` leaves an existing table as it was).
fn migrate(conn: &Connection) -> Result<()> {
    let added = [
        ("workers", "failures_in_row", "INTEGER NOT NULL DEFAULT 0"),
        ("workers", "quarantined_until", "INTEGER NOT NULL DEFAULT 0"),
        ("workers", "quarantine_reason", "TEXT NOT NULL DEFAULT ''"),
        ("jobs", "engine_ms", "INTEGER NOT NULL DEFAULT 0"),
        ("tasks", "ready_ms", "INTEGER NOT NULL DEFAULT 0"),
        ("tasks", "leased_ms", "INTEGER NOT NULL DEFAULT 0"),
        ("tasks", "done_ms", "INTEGER NOT NULL DEFAULT 0"),
        ("tasks", "engine_ms", "INTEGER NOT NULL DEFAULT 0"),
        ("tasks", "started_ms", "INTEGER NOT NULL DEFAULT 0"),
        ("workers", "ahead", "INTEGER NOT NULL DEFAULT 0"),
    ];
    for (table, column, decl) in added {
        let mut st = conn.prepare(&format!(
            "SELECT 1 FROM pragma_table_info('{table}') WHERE name = ?1"
        ))?;
        if !st.exists([column])? {
            conn.execute_batch(&format!("ALTER TABLE {table} ADD COLUMN {column} {decl}"))?;
        }
    }
    Ok(())
}

/// Runs a statement through the connection's statement cache (parsing the
/// SQL again on every call was a fifth of the writer's time under load).
pub fn exec<P: rusqlite::Params>(c: &Connection, sql: &str, params: P) -> Result<usize> {
    Ok(c.prepare_cached(sql)?.execute(params)?)
}

/// The first row of a query, through the statement cache (`.optional()`
/// applies as to `query_row`).
pub fn one<T, P: rusqlite::Params>(
    c: &Connection,
    sql: &str,
    params: P,
    f: impl FnOnce(&rusqlite::Row<'_>) -> rusqlite::Result<T>,
) -> rusqlite::Result<T> {
    c.prepare_cached(sql)?.query_row(params, f)
}

/// Statements kept prepared per connection (every statement the scheduler
/// runs fits, so none is parsed twice).
const STATEMENT_CACHE: usize = 256;

pub fn get_job(c: &Connection, id: &str) -> Result<Option<JobRow>> {
    Ok(one(
        c,
        &format!("SELECT {JOB_COLS} FROM jobs WHERE id = ?1"),
        [id],
        job_row,
    )
    .optional()?)
}

pub fn get_task(c: &Connection, id: &str) -> Result<Option<TaskRow>> {
    Ok(one(
        c,
        &format!("SELECT {TASK_COLS} FROM tasks WHERE id = ?1"),
        [id],
        task_row,
    )
    .optional()?)
}

pub fn job_tasks(c: &Connection, job_id: &str) -> Result<Vec<TaskRow>> {
    let mut st = c.prepare_cached(&format!(
        "SELECT {TASK_COLS} FROM tasks WHERE job_id = ?1 ORDER BY ordinal"
    ))?;
    let rows = st
        .query_map([job_id], task_row)?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(rows)
}

pub fn all_jobs(c: &Connection) -> Result<Vec<JobRow>> {
    let mut st = c.prepare_cached(&format!(
        "SELECT {JOB_COLS} FROM jobs ORDER BY created_ms, rowid"
    ))?;
    let rows = st
        .query_map([], job_row)?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(rows)
}

/// Records an artifact a job or a task refers to (its file is in place:
/// see [`crate::artifacts`]); once is enough.
pub fn record_artifact(tx: &Transaction, hash: &str, size: u64, now_ms: i64) -> Result<()> {
    exec(
        tx,
        "INSERT OR IGNORE INTO artifacts(hash, size, created_ms) VALUES (?1, ?2, ?3)",
        params![hash, size.min(i64::MAX as u64) as i64, now_ms],
    )?;
    Ok(())
}

/// Appends an event to the job's log and returns it with its number.
pub fn append_event(
    tx: &Transaction,
    job_id: &str,
    now_ms: i64,
    kind: pb::job_event::Kind,
) -> Result<pb::JobEvent> {
    // One statement takes the number and moves the counter on.
    let seq: i64 = one(
        tx,
        "UPDATE jobs SET next_seq = next_seq + 1 WHERE id = ?1 RETURNING next_seq - 1",
        [job_id],
        |r| r.get(0),
    )?;
    let ev = pb::JobEvent {
        seq: seq as u64,
        unix_ms: now_ms,
        kind: Some(kind),
    };
    exec(
        tx,
        "INSERT INTO events(job_id, seq, payload) VALUES (?1, ?2, ?3)",
        params![job_id, seq, ev.encode_to_vec()],
    )?;
    Ok(ev)
}

/// Events of a job with `seq > after`, in order.
pub fn events_after(c: &Connection, job_id: &str, after: u64) -> Result<Vec<pb::JobEvent>> {
    let mut st =
        c.prepare_cached("SELECT payload FROM events WHERE job_id = ?1 AND seq > ?2 ORDER BY seq")?;
    let rows = st.query_map(params![job_id, after as i64], |r| r.get::<_, Vec<u8>>(0))?;
    let mut out = vec![];
    for bytes in rows {
        let bytes = bytes?;
        out.push(
            pb::JobEvent::decode(bytes.as_slice()).map_err(|e| {
                CoordError::Storage(format!("event of job {job_id} is corrupt: {e}"))
            })?,
        );
    }
    Ok(out)
}

pub fn all_workers(c: &Connection) -> Result<Vec<WorkerRow>> {
    let mut st = c.prepare_cached(
        "SELECT id, name, device, slots, memory, last_seen_ms, tasks_done, quarantined_until, quarantine_reason
         FROM workers ORDER BY registered_ms, id",
    )?;
    let rows = st
        .query_map([], |r| {
            Ok(WorkerRow {
                id: r.get(0)?,
                name: r.get(1)?,
                device: r.get(2)?,
                slots: r.get(3)?,
                memory: r.get::<_, i64>(4)? as u64,
                last_seen_ms: r.get(5)?,
                tasks_done: r.get::<_, i64>(6)? as u64,
                quarantined_until: r.get(7)?,
                quarantine_reason: r.get(8)?,
            })
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(rows)
}

/// Every measurement of a job, ordered by curve, kind and key.
pub fn job_measurements(c: &Connection, job_id: &str) -> Result<Vec<pb::Progress>> {
    let mut st = c.prepare_cached(
        "SELECT payload FROM measurements WHERE job_id = ?1 ORDER BY curve, kind, key",
    )?;
    let rows = st.query_map([job_id], |r| r.get::<_, Vec<u8>>(0))?;
    let mut out = vec![];
    for b in rows {
        let b = b?;
        out.push(pb::Progress::decode(b.as_slice()).map_err(|e| {
            CoordError::Storage(format!("measurement of job {job_id} is corrupt: {e}"))
        })?);
    }
    Ok(out)
}

/// A stored decision: its step, what the DAG needs from it (JSON), and the
/// decision itself.
#[derive(Debug, Clone)]
pub struct DecisionRow {
    pub step: String,
    pub choice: String,
    pub decision: pb::Decision,
}

/// A job's decisions in the order they were made.
pub fn job_decisions(c: &Connection, job_id: &str) -> Result<Vec<DecisionRow>> {
    let mut st = c.prepare_cached(
        "SELECT step, choice, payload FROM decisions WHERE job_id = ?1 ORDER BY seq",
    )?;
    let rows = st.query_map([job_id], |r| {
        Ok((
            r.get::<_, String>(0)?,
            r.get::<_, String>(1)?,
            r.get::<_, Vec<u8>>(2)?,
        ))
    })?;
    let mut out = vec![];
    for row in rows {
        let (step, choice, payload) = row?;
        let decision = pb::Decision::decode(payload.as_slice()).map_err(|e| {
            CoordError::Storage(format!("decision {step} of job {job_id} is corrupt: {e}"))
        })?;
        out.push(DecisionRow {
            step,
            choice,
            decision,
        });
    }
    Ok(out)
}

/// Stores a decision after the job's others.
pub fn insert_decision(
    tx: &Transaction,
    job_id: &str,
    step: &str,
    choice: &str,
    decision: &pb::Decision,
) -> Result<()> {
    exec(tx,
        "INSERT INTO decisions(job_id, seq, step, choice, payload)
         VALUES (?1, (SELECT COALESCE(MAX(seq), 0) + 1 FROM decisions WHERE job_id = ?1), ?2, ?3, ?4)",
        params![job_id, step, choice, decision.encode_to_vec()],
    )?;
    Ok(())
}

/// Settings of both connections that cost nothing in durability.
///
/// * Statements stay prepared (the statement cache), and stay valid: with
///   the query planner stability guarantee (QPSG) a plan does not depend
///   on the values bound to it. Without it SQLite re-prepares a statement
///   whenever a value it looked at changes (a `LIMIT ?`, a partial index
///   checked against a parameter): 10 % of the writer's time under load.
/// * Savepoints journal the pages they change in memory, not in a
///   temporary file (`temp_store = MEMORY`): each change of a group commit
///   has its own savepoint, and their sub-journal writes were 18 % of the
///   writer's time. Only a rollback reads them; the database and its WAL
///   are written and synced as before.
fn tune(conn: &Connection) -> Result<()> {
    conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
    conn.set_db_config(
        rusqlite::config::DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG,
        true,
    )?;
    conn.pragma_update(None, "temp_store", "MEMORY")?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Both connections keep savepoint journals in memory and plans that do
    /// not depend on bound values (so cached statements are not prepared
    /// again); the database itself stays WAL with full syncs.
    #[test]
    fn connections_are_tuned_without_giving_up_durability() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let reader = store.reader().unwrap();
        for conn in [store.read(), &reader] {
            let temp: i64 = conn
                .pragma_query_value(None, "temp_store", |r| r.get(0))
                .unwrap();
            assert_eq!(temp, 2, "temp_store = MEMORY");
            assert!(conn
                .db_config(rusqlite::config::DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG)
                .unwrap());
        }
        let journal: String = store
            .read()
            .pragma_query_value(None, "journal_mode", |r| r.get(0))
            .unwrap();
        assert_eq!(journal, "wal");
        let sync: i64 = store
            .read()
            .pragma_query_value(None, "synchronous", |r| r.get(0))
            .unwrap();
        assert_eq!(sync, 2, "synchronous = FULL");
    }

    /// A data dir written by an older coordinator (its `workers` table
    /// without the quarantine columns) opens, gains them, and keeps its rows.
    #[test]
    fn an_older_database_gains_new_columns_and_keeps_its_rows() {
        let dir = tempfile::tempdir().unwrap();
        {
            let conn = Connection::open(dir.path().join("ridgeline.db")).unwrap();
            conn.execute_batch(
                "CREATE TABLE workers (
                    id TEXT PRIMARY KEY, name TEXT NOT NULL, device TEXT NOT NULL,
                    slots INTEGER NOT NULL, memory INTEGER NOT NULL,
                    registered_ms INTEGER NOT NULL, last_seen_ms INTEGER NOT NULL,
                    tasks_done INTEGER NOT NULL DEFAULT 0);
                 INSERT INTO workers VALUES ('w1', 'old', 'cpu', 2, 0, 1, 1, 7);",
            )
            .unwrap();
        }
        let store = Store::open(dir.path()).unwrap();
        let workers = all_workers(store.read()).unwrap();
        assert_eq!(workers.len(), 1);
        assert_eq!(workers[0].tasks_done, 7);
        assert_eq!(workers[0].quarantined_until, 0);
        drop(store);
        // Opening again changes nothing.
        let store = Store::open(dir.path()).unwrap();
        assert_eq!(all_workers(store.read()).unwrap()[0].name, "old");
    }
}
