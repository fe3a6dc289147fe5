-- Ridgeline coordinator state. One SQLite file in --data-dir, WAL journal,
-- synchronous=FULL: a change is on disk before the RPC that made it returns.

CREATE TABLE IF NOT EXISTS meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);

CREATE TABLE IF NOT EXISTS jobs (
    id             TEXT PRIMARY KEY,
    name           TEXT NOT NULL,
    kind           TEXT NOT NULL,
    spec           TEXT NOT NULL,          -- JobSpec as JSON
    state          TEXT NOT NULL,          -- queued | running | succeeded | failed | cancelled
    error          TEXT NOT NULL DEFAULT '',
    device         TEXT NOT NULL,          -- any | cpu | cuda
    max_attempts   INTEGER NOT NULL,
    created_ms     INTEGER NOT NULL,
    finished_ms    INTEGER NOT NULL DEFAULT 0,
    next_seq       INTEGER NOT NULL DEFAULT 1,  -- next event number
    epochs_trained INTEGER NOT NULL DEFAULT 0,
    engine_ms      INTEGER NOT NULL DEFAULT 0   -- workers' engine time, all completed attempts
);

-- The active jobs, for Lease (finished ones pile up over months).
CREATE INDEX IF NOT EXISTS jobs_by_state ON jobs(state, created_ms);

CREATE TABLE IF NOT EXISTS tasks (
    id          TEXT PRIMARY KEY,
    job_id      TEXT NOT NULL REFERENCES jobs(id),
    ordinal     INTEGER NOT NULL,          -- order within the job
    stage       TEXT NOT NULL,
    label       TEXT NOT NULL,
    curve       TEXT NOT NULL,
    after       TEXT,                      -- task that must be done first (previous chunk)
    last_chunk  INTEGER NOT NULL,          -- 1: ends its run
    spec        TEXT NOT NULL,             -- TaskSpec as JSON
    state       TEXT NOT NULL,             -- pending | leased | done | failed | cancelled
    attempt     INTEGER NOT NULL DEFAULT 1, -- fencing token: +1 at every re-queue
    failures    INTEGER NOT NULL DEFAULT 0, -- counted against max_attempts (not hand-backs)
    worker_id   TEXT NOT NULL DEFAULT '',
    lease_until INTEGER NOT NULL DEFAULT 0,
    checkpoint  TEXT NOT NULL DEFAULT '',  -- output artifact hash
    error       TEXT NOT NULL DEFAULT '',
    ready_ms    INTEGER NOT NULL DEFAULT 0, -- could first run (stored, previous chunk done, re-queued)
    leased_ms   INTEGER NOT NULL DEFAULT 0, -- current attempt leased
    done_ms     INTEGER NOT NULL DEFAULT 0,
    engine_ms   INTEGER NOT NULL DEFAULT 0, -- the completing attempt's engine time (worker-measured)
    started_ms  INTEGER NOT NULL DEFAULT 0  -- when the completing attempt started on its worker
);
CREATE INDEX IF NOT EXISTS tasks_by_job ON tasks(job_id, ordinal);
CREATE INDEX IF NOT EXISTS tasks_by_state ON tasks(state);
-- A job's open tasks in order (Lease's pick, Complete's "anything left?").
CREATE INDEX IF NOT EXISTS tasks_by_job_state ON tasks(job_id, state, ordinal);
-- A run's next chunk (Complete marks it ready).
CREATE INDEX IF NOT EXISTS tasks_by_after ON tasks(after);
-- What a worker holds (Complete's next lease caps it at the worker's slots).
CREATE INDEX IF NOT EXISTS tasks_leased_by_worker ON tasks(worker_id) WHERE state = 'leased';

-- The job's event log, as WatchJob streams it (prost-encoded JobEvent).
CREATE TABLE IF NOT EXISTS events (
    job_id  TEXT NOT NULL,
    seq     INTEGER NOT NULL,
    payload BLOB NOT NULL,
    PRIMARY KEY (job_id, seq)
);

-- Reports already stored, so a resent report is acknowledged, not counted.
CREATE TABLE IF NOT EXISTS reports (
    task_id TEXT NOT NULL,
    attempt INTEGER NOT NULL,
    seq     INTEGER NOT NULL,
    PRIMARY KEY (task_id, attempt, seq)
);

-- One row per measurement of a curve (epoch report by step, line point by
-- index, run end): a retried chunk overwrites, never duplicates.
CREATE TABLE IF NOT EXISTS measurements (
    job_id  TEXT NOT NULL,
    curve   TEXT NOT NULL,
    kind    TEXT NOT NULL,                 -- epoch | point | end
    key     INTEGER NOT NULL,
    payload BLOB NOT NULL,                 -- prost-encoded Progress
    task_id TEXT NOT NULL,                 -- the attempt that measured it: an
    attempt INTEGER NOT NULL,              -- abandoned attempt's rows are removed
    PRIMARY KEY (job_id, curve, kind, key)
);
CREATE INDEX IF NOT EXISTS measurements_by_task ON measurements(task_id);

CREATE TABLE IF NOT EXISTS workers (
    id           TEXT PRIMARY KEY,
    name         TEXT NOT NULL,
    device       TEXT NOT NULL,
    slots        INTEGER NOT NULL,
    memory       INTEGER NOT NULL,
    registered_ms INTEGER NOT NULL,
    last_seen_ms INTEGER NOT NULL,
    tasks_done   INTEGER NOT NULL DEFAULT 0,
    -- Failed attempts since its last completed task; at
    -- SchedulerConfig::quarantine_after the worker is quarantined.
    failures_in_row   INTEGER NOT NULL DEFAULT 0,
    quarantined_until INTEGER NOT NULL DEFAULT 0,
    quarantine_reason TEXT NOT NULL DEFAULT '',
    -- Tasks it may hold queued beyond its slots (RegisterRequest.lease_ahead).
    ahead             INTEGER NOT NULL DEFAULT 0
);

CREATE TABLE IF NOT EXISTS artifacts (
    hash       TEXT PRIMARY KEY,
    size       INTEGER NOT NULL,
    created_ms INTEGER NOT NULL
);

-- A procedure job's decisions, in the order they were made. `choice` is
-- what the stage DAG needs from it (JSON); `payload` the prost-encoded
-- Decision people read.
CREATE TABLE IF NOT EXISTS decisions (
    job_id  TEXT NOT NULL,
    seq     INTEGER NOT NULL,
    step    TEXT NOT NULL,
    choice  TEXT NOT NULL,
    payload BLOB NOT NULL,
    PRIMARY KEY (job_id, step)
);
