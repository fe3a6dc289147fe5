//! Coordinator under load: a real `coordinator serve` process on a free
//! loopback port with a fresh data directory, N simulated workers over real
//! gRPC, and the figures of issue 6 ("Coordinator") printed beside their
//! goals.
//!
//!     cargo bench -p ridgeline-coordinator --bench load                      # 200 workers, 5,000 instant tasks; overhead 2,000 × 100 ms on 200 slots
//!     cargo bench -p ridgeline-coordinator --bench load -- --workers 1000
//!     cargo bench -p ridgeline-coordinator --bench load -- --ray --no-load   # overhead as the issue states it: 10,000 × 1 s on 1,000 slots
//!     cargo bench -p ridgeline-coordinator --bench load -- --scaling --no-load --no-overhead   # a line search on 1, 2, 4, 8 workers
//!     cargo bench -p ridgeline-coordinator --bench load -- --smoke           # CI: a few seconds, checks the figures are produced
//!
//! Two runs, each against its own fresh coordinator:
//!
//! * **load**: `--workers N` workers of `--slots S` slots share one HTTP/2
//!   channel per `--per-channel` (32) workers; `--tasks K` tasks (line-search
//!   tasks of one point each) that "run" instantly or for `--task-ms T`.
//!   A worker does what the real one does: Register, then Lease (the
//!   heartbeat) with its free slots and its running tasks; for each task one
//!   Complete that carries its report (one line-search point) and leases the
//!   next task; a Lease as soon as a slot is still free after a task (a
//!   long poll: the coordinator may hold it until a task is ready), else
//!   after the heartbeat interval. A task leased ahead claims its start in
//!   the next Complete. One WatchJob stream watches the first job.
//! * **overhead**: `--overhead-tasks K` tasks of `--overhead-ms T` ms on
//!   `--overhead-slots N` one-slot workers; wall time from the first lease to
//!   the last acknowledged Complete against the ideal K·T/N.
//!
//! * **scaling** (`--scaling`): one line search of `--scaling-points` P
//!   (64) points, one point per task, each costing `--scaling-ms` T (250)
//!   ms, on 1, 2, 4 and 8 one-slot workers: its wall time against the
//!   ideal ⌈P / N⌉ · T.
//!
//! As the real worker does, a task's Complete carries its last report and
//! asks for the worker's next task (`next_slots` 1), so in the steady state
//! a task costs one call and the Lease is only the heartbeat.
//! `--separate-calls` makes the simulated workers send Report, Complete and
//! Lease as three calls per task, as before.
//!
//! Other flags: `--heartbeat SECS` (the coordinator's `--heartbeat`,
//! default 3), `--data-in DIR` (where the temporary data directory goes,
//! e.g. /dev/shm to take the disk's fsync out of the figures), `--no-load`,
//! `--no-overhead`, `--ray` (overhead 10,000 × 1,000 ms on 1,000 slots).
//! The coordinator binary is the one cargo built with this bench
//! (`target/<profile>/coordinator`); its log goes to the temporary
//! directory, at `RUST_LOG` (default info, as in production).
//!
//! Durable results/s counts reports (a Report call, or one carried by a
//! Complete) and completions acknowledged, two per task either way (each is
//! answered only after its transaction is committed with an fsync). CPU and
//! memory come from /proc/<pid>/stat and /proc/<pid>/status of the child.
//! Exits non-zero if a call failed or a job did not succeed.

use std::collections::{HashMap, VecDeque};
use std::fmt::Write as _;
use std::io::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use futures::StreamExt;
use ridgeline_common::claims::{Claims, Ride};
use ridgeline_common::proto::v1 as pb;
use ridgeline_common::proto::v1::job_service_client::JobServiceClient;
use ridgeline_common::proto::v1::worker_service_client::WorkerServiceClient;
use ridgeline_common::task::TaskSpec;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tonic::transport::{Channel, Endpoint};

/// Tasks per submitted job (a job may hold 20,000; a line search 10,000
/// points per replicate).
const TASKS_PER_JOB: usize = 10_000;
/// The longest a simulated worker's Lease waits for work (the real
/// worker's `LONG_POLL_MAX`).
const LONG_POLL_MAX: Duration = Duration::from_secs(5);

#[derive(Debug, Clone)]
struct Args {
    workers: usize,
    slots: u32,
    tasks: usize,
    task_ms: u64,
    /// The load run's tasks last `task_ms` × (1 ± this), spread evenly
    /// (0: all alike).
    task_jitter: f64,
    per_channel: usize,
    heartbeat: f64,
    load: bool,
    overhead: Option<(usize, u64, usize)>,
    /// A line search's points and the cost of one, for the scaling table.
    scaling: Option<(usize, u64)>,
    data_in: Option<PathBuf>,
    smoke: bool,
    /// Report, Complete and Lease as three calls per task, as before
    /// Complete could carry the last report and lease the next task.
    separate_calls: bool,
    /// Tasks each simulated worker holds queued beyond its slots (the real
    /// worker's `--lease-ahead`, 1 by default; at most the slots).
    lease_ahead: u32,
}

const USAGE: &str = "usage: load [--smoke] [--workers N] [--slots S] [--tasks K] [--task-ms T] \
[--task-jitter F] [--per-channel C] [--heartbeat SECS] [--overhead-tasks K] [--overhead-ms T] [--overhead-slots N] \
[--ray] [--no-load] [--no-overhead] [--scaling] [--scaling-points P] [--scaling-ms T] [--data-in DIR] \
[--separate-calls] [--lease-ahead Q]";

fn parse_args() -> Result<Args> {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let smoke = argv.iter().any(|a| a == "--smoke");
    let mut a = if smoke {
        Args {
            workers: 20,
            slots: 1,
            tasks: 200,
            task_ms: 0,
            task_jitter: 0.0,
            per_channel: 8,
            heartbeat: 1.0,
            load: true,
            overhead: Some((100, 20, 20)),
            scaling: Some((8, 20)),
            data_in: None,
            smoke,
            separate_calls: false,
            lease_ahead: 1,
        }
    } else {
        Args {
            workers: 200,
            slots: 1,
            tasks: 5_000,
            task_ms: 0,
            task_jitter: 0.0,
            per_channel: 32,
            heartbeat: 3.0,
            load: true,
            overhead: Some((2_000, 100, 200)),
            scaling: None,
            data_in: None,
            smoke,
            separate_calls: false,
            lease_ahead: 1,
        }
    };
    let mut it = argv.into_iter();
    fn value<T: std::str::FromStr>(flag: &str, v: Option<String>) -> Result<T> {
        let v = v.ok_or_else(|| anyhow!("{flag} needs a value\n{USAGE}"))?;
        v.parse()
            .map_err(|_| anyhow!("{flag}: `{v}` is not a valid value\n{USAGE}"))
    }
    let mut overhead = a.overhead.unwrap_or((0, 0, 0));
    let mut no_overhead = false;
    let mut scaling = a.scaling.unwrap_or((64, 250));
    let mut with_scaling = a.scaling.is_some();
    while let Some(flag) = it.next() {
        match flag.as_str() {
            // `cargo bench` passes --bench to harness = false benches.
            "--bench" | "--smoke" => {}
            "--workers" => a.workers = value(&flag, it.next())?,
            "--slots" => a.slots = value(&flag, it.next())?,
            "--tasks" => a.tasks = value(&flag, it.next())?,
            "--task-ms" => a.task_ms = value(&flag, it.next())?,
            "--task-jitter" => a.task_jitter = value(&flag, it.next())?,
            "--per-channel" => a.per_channel = value(&flag, it.next())?,
            "--heartbeat" => a.heartbeat = value(&flag, it.next())?,
            "--overhead-tasks" => overhead.0 = value(&flag, it.next())?,
            "--overhead-ms" => overhead.1 = value(&flag, it.next())?,
            "--overhead-slots" => overhead.2 = value(&flag, it.next())?,
            "--ray" => overhead = (10_000, 1_000, 1_000),
            "--no-load" => a.load = false,
            "--separate-calls" => a.separate_calls = true,
            "--lease-ahead" => a.lease_ahead = value(&flag, it.next())?,
            "--no-overhead" => no_overhead = true,
            "--data-in" => a.data_in = Some(value(&flag, it.next())?),
            "--scaling" => with_scaling = true,
            "--scaling-points" => {
                scaling.0 = value(&flag, it.next())?;
                with_scaling = true;
            }
            "--scaling-ms" => {
                scaling.1 = value(&flag, it.next())?;
                with_scaling = true;
            }
            "-h" | "--help" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            other => bail!("unknown argument `{other}`\n{USAGE}"),
        }
    }
    a.overhead = (!no_overhead).then_some(overhead);
    a.scaling = with_scaling.then_some(scaling);
    if scaling.0 == 0 || scaling.1 == 0 {
        bail!("--scaling-points and --scaling-ms must be at least 1");
    }
    if a.workers == 0 || a.slots == 0 || a.tasks == 0 || a.per_channel == 0 {
        bail!("--workers, --slots, --tasks and --per-channel must be at least 1");
    }
    if let Some((k, t, n)) = a.overhead {
        if k == 0 || t == 0 || n == 0 {
            bail!("--overhead-tasks, --overhead-ms and --overhead-slots must be at least 1");
        }
    }
    if a.lease_ahead > a.slots {
        bail!("--lease-ahead must be at most --slots");
    }
    if a.separate_calls {
        // The old protocol had no queue.
        a.lease_ahead = 0;
    }
    if !(0.0..1.0).contains(&a.task_jitter) {
        bail!("--task-jitter must be at least 0 and below 1");
    }
    if a.heartbeat.is_nan() || a.heartbeat <= 0.0 {
        bail!("--heartbeat must be positive");
    }
    Ok(a)
}

// ------------------------------------------------------------ the process

/// The coordinator binary cargo built with this bench.
fn coordinator_binary() -> Result<PathBuf> {
    let built = PathBuf::from(env!("CARGO_BIN_EXE_coordinator"));
    if built.exists() {
        return Ok(built);
    }
    // Moved since it was built: target/<profile>/deps/load-… → target/<profile>/coordinator.
    let exe = std::env::current_exe()?;
    let beside = exe
        .parent()
        .and_then(Path::parent)
        .map(|p| p.join("coordinator"))
        .ok_or_else(|| anyhow!("no target directory above {}", exe.display()))?;
    if beside.exists() {
        Ok(beside)
    } else {
        bail!(
            "the coordinator binary is missing ({}): build it with `cargo build -p ridgeline-coordinator`",
            built.display()
        )
    }
}

fn free_addr() -> Result<SocketAddr> {
    let l = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(l.local_addr()?)
}

/// A `coordinator serve` child, killed when dropped.
struct Server {
    child: Child,
    url: String,
    http: SocketAddr,
    dir: tempfile::TempDir,
}

impl Server {
    async fn start(args: &Args) -> Result<Server> {
        let builder = {
            let mut b = tempfile::Builder::new();
            b.prefix("ridgeline-load-");
            b
        };
        let dir = match &args.data_in {
            Some(p) => builder.tempdir_in(p)?,
            None => builder.tempdir()?,
        };
        std::fs::create_dir_all(dir.path().join("data"))?;
        let grpc = free_addr()?;
        let http = free_addr()?;
        let log = std::fs::File::create(dir.path().join("coordinator.log"))?;
        let child = Command::new(coordinator_binary()?)
            .args(["serve", "--listen", &grpc.to_string()])
            .args(["--http-listen", &http.to_string()])
            .args(["--heartbeat", &args.heartbeat.to_string()])
            .arg("--data-dir")
            .arg(dir.path().join("data"))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .context("starting coordinator serve")?;
        let mut server = Server {
            child,
            url: format!("http://{grpc}"),
            http,
            dir,
        };
        for _ in 0..400 {
            if let Ok(mut c) = JobServiceClient::connect(server.url.clone()).await {
                if c.list_jobs(pb::ListJobsRequest {}).await.is_ok() {
                    return Ok(server);
                }
            }
            if let Some(status) = server.child.try_wait()? {
                bail!("coordinator exited ({status}):\n{}", server.log_tail());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        bail!(
            "coordinator did not answer on {}:\n{}",
            server.url,
            server.log_tail()
        )
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn log_tail(&self) -> String {
        let text =
            std::fs::read_to_string(self.dir.path().join("coordinator.log")).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }

    async fn channel(&self) -> Result<Channel> {
        Ok(Endpoint::from_shared(self.url.clone())?.connect().await?)
    }

    /// The Prometheus text of /metrics on the HTTP port.
    async fn metrics(&self) -> Result<String> {
        let mut s = tokio::net::TcpStream::connect(self.http).await?;
        s.write_all(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
            .await?;
        let mut buf = vec![];
        s.read_to_end(&mut buf).await?;
        let text = String::from_utf8_lossy(&buf).into_owned();
        let body = text
            .split_once("\r\n\r\n")
            .map(|(_, b)| b.to_string())
            .ok_or_else(|| anyhow!("no HTTP body from /metrics"))?;
        Ok(body)
    }

    /// Bytes of the SQLite files (database, WAL).
    fn db_bytes(&self) -> u64 {
        std::fs::read_dir(self.data_dir())
            .map(|d| {
                d.filter_map(|e| e.ok())
                    .filter(|e| e.file_name().to_string_lossy().starts_with("ridgeline.db"))
                    .filter_map(|e| e.metadata().ok())
                    .map(|m| m.len())
                    .sum()
            })
            .unwrap_or(0)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn clock_ticks() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100.0)
}

/// User and system CPU seconds of a process.
fn cpu_seconds(pid: u32, ticks: f64) -> (f64, f64) {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return (f64::NAN, f64::NAN);
    };
    // Fields after the command name (which may hold spaces): state is
    // field 3, utime 14, stime 15.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<&str> = rest.split_whitespace().collect();
    let get = |i: usize| {
        f.get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(f64::NAN)
    };
    (get(11) / ticks, get(12) / ticks)
}

/// A /proc/<pid>/status field (`VmRSS`, `VmHWM` in KiB; `Threads`).
fn status_field(pid: u32, key: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(&format!("{key}:")))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

/// Median time of a 4 KiB append + fdatasync in `dir` (what one SQLite WAL
/// commit under synchronous = FULL costs at least).
fn fsync_median(dir: &Path, n: usize) -> Result<Duration> {
    let path = dir.join("fsync-probe");
    let mut f = std::fs::File::create(&path)?;
    let page = [7u8; 4096];
    let mut times = Vec::with_capacity(n);
    for _ in 0..n {
        f.write_all(&page)?;
        let t = Instant::now();
        f.sync_data()?;
        times.push(t.elapsed());
    }
    drop(f);
    std::fs::remove_file(&path)?;
    times.sort();
    Ok(times[times.len() / 2])
}

/// "ext4 on /dev/vda": the mount holding `dir` (longest mount-point prefix).
fn filesystem_of(dir: &Path) -> String {
    let dir = std::fs::canonicalize(dir).unwrap_or_else(|_| dir.to_path_buf());
    let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap_or_default();
    mounts
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.len() >= 3 && dir.starts_with(f[1]))
                .then(|| (f[1].len(), format!("{} on {}", f[2], f[0])))
        })
        .max_by_key(|(len, _)| *len)
        .map_or_else(|| "?".to_string(), |(_, fs)| fs)
}

// ------------------------------------------------------------ jobs

/// A line search of `points` one-point tasks on a small synthetic tabular
/// problem (the tasks are never really run here).
fn job_text(points: usize, name: &str) -> String {
    format!(
        "kind = \"line_search\"\nname = \"{name}\"\nreplicates = 1\n\
         [data.source]\nkind = \"tabular\"\nn_train = 600\nn_heldout = 200\nseed = 5\n\
         [model]\nkind = \"mlp\"\nhidden = [32]\n\
         [line_search]\npoints = {points}\npoints_per_task = 1\n"
    )
}

async fn submit_jobs(
    jobs: &mut JobServiceClient<Channel>,
    tasks: usize,
    label: &str,
) -> Result<Vec<String>> {
    let mut ids = vec![];
    let mut left = tasks;
    while left > 0 {
        let n = left.min(TASKS_PER_JOB);
        let id = jobs
            .submit_job(pb::SubmitJobRequest {
                text: job_text(n, &format!("{label} {}", ids.len() + 1)),
                format: pb::JobFormat::Toml as i32,
            })
            .await
            .context("SubmitJob")?
            .into_inner()
            .job_id;
        ids.push(id);
        left -= n;
    }
    Ok(ids)
}

// ------------------------------------------------------------ workers

/// How long a run's tasks "run": `ms` × (1 ± `jitter`), see
/// [`Run::task_time`].
#[derive(Debug, Clone, Copy)]
struct TaskTime {
    ms: u64,
    jitter: f64,
}

impl TaskTime {
    fn fixed(ms: u64) -> TaskTime {
        TaskTime { ms, jitter: 0.0 }
    }
}

/// What all simulated workers of a run share.
struct Run {
    target: u64,
    task_ms: u64,
    /// Each task lasts `task_ms` × (1 ± jitter), by its id.
    jitter: f64,
    /// `--separate-calls`: Report, Complete and Lease as three calls.
    separate: bool,
    stop: CancellationToken,
    acked: AtomicU64,
    done: AtomicU64,
    errors: AtomicU64,
    /// Reports or completions refused because the attempt's lease had
    /// expired (the task was handed to another worker): the real worker
    /// drops the task, and so does this one.
    lost: AtomicU64,
    /// Queued tasks whose StartQueued was refused: taken back for a worker
    /// that fell idle (dropped unstarted, as the real worker does).
    taken_back: AtomicU64,
    first_error: Mutex<Option<String>>,
    end: Mutex<Option<Instant>>,
}

impl Run {
    /// How long the task `id` "runs": `task_ms`, spread by `jitter` evenly
    /// over ±jitter by a hash of its id (the same task, the same time).
    fn task_time(&self, id: &str) -> Duration {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        id.hash(&mut h);
        let u = (h.finish() >> 11) as f64 / (1u64 << 53) as f64 * 2.0 - 1.0;
        Duration::from_secs_f64(self.task_ms as f64 / 1e3 * (1.0 + self.jitter * u))
    }

    /// A refused Report/Complete: a lost lease, or an error.
    fn refused(&self, what: &str, e: tonic::Status) {
        if e.code() == tonic::Code::FailedPrecondition {
            self.lost.fetch_add(1, Ordering::Relaxed);
        } else {
            self.error(what, e);
        }
    }

    fn error(&self, what: &str, e: impl std::fmt::Display) {
        self.errors.fetch_add(1, Ordering::Relaxed);
        let mut first = self.first_error.lock().unwrap();
        first.get_or_insert_with(|| format!("{what}: {e}"));
    }
}

/// Client-observed latencies (µs) of one worker's calls.
#[derive(Default)]
struct Latencies {
    /// This worker's first Lease (every worker asks at once at the start).
    first_lease: Option<u32>,
    /// Its later Leases, and its Completes that leased the next task.
    lease: Vec<u32>,
    report: Vec<u32>,
    complete: Vec<u32>,
    /// When this worker's first task started, and when the work of its
    /// last acknowledged one ended (for the split of idle slot time).
    first_start: Option<Instant>,
    last_work_end: Option<Instant>,
}

fn micros(d: Duration) -> u32 {
    d.as_micros().min(u32::MAX as u128) as u32
}

fn metrics() -> pb::Metrics {
    pb::Metrics {
        loss: 0.5,
        metric: 0.9,
        accuracy: Some(0.9),
        r2: None,
        pearson: None,
        majority_fraction: Some(0.2),
    }
}

/// What one acknowledged task attempt measured, and the tasks its Complete
/// leased for the slot it freed.
struct TaskDone {
    /// When its work (the sleep) ended.
    work_end: Instant,
    /// `None` when the report rode with Complete.
    report_us: Option<u32>,
    complete_us: u32,
    next: Vec<pb::TaskAssignment>,
}

/// One task attempt: (sleep), then one Complete carrying the task's report
/// and asking for the next task (with `--separate-calls`: a Report, then a
/// Complete that asks for nothing).
#[allow(clippy::too_many_arguments)]
async fn run_task(
    run: Arc<Run>,
    mut client: WorkerServiceClient<Channel>,
    worker_id: String,
    a: pb::TaskAssignment,
    queued: Duration,
    next_slots: u32,
    freed: mpsc::UnboundedSender<(tokio::task::Id, oneshot::Sender<()>)>,
    claims: Arc<Claims>,
    claim: Option<Ride>,
) -> Option<TaskDone> {
    let points = match TaskSpec::from_json(&a.spec_json) {
        Ok(TaskSpec::LineSearch(ls)) => ls.points,
        Ok(_) => {
            run.error("task", "not a line-search task");
            return None;
        }
        Err(e) => {
            run.error("task spec", e);
            return None;
        }
    };
    // A task leased ahead learns whether it is still ours while it works,
    // as the real worker does (its claim rides with the next Complete, else
    // it asks StartQueued), and is dropped if it was taken back.
    let confirm = {
        let (queued, mut client) = (a.queued, client.clone());
        let request = pb::StartQueuedRequest {
            worker_id: worker_id.clone(),
            task_id: a.task_id.clone(),
            attempt: a.attempt,
        };
        async move {
            if !queued {
                return Ok(true);
            }
            if let Some(claim) = claim {
                if let Some(answer) = claim.answer().await {
                    return Ok(answer.start);
                }
            }
            client
                .start_queued(request)
                .await
                .map(|answer| answer.get_ref().start)
        }
    };
    let time = run.task_time(&a.task_id);
    let work = async {
        if run.task_ms > 0 {
            tokio::time::sleep(time).await;
        }
    };
    // A refusal stops the work at once (the real worker stops at its next
    // step); else the work goes on to its end.
    tokio::pin!(work);
    tokio::pin!(confirm);
    let confirmed = tokio::select! {
        c = &mut confirm => {
            if matches!(c, Ok(true)) {
                (&mut work).await;
            }
            c
        }
        // Done working: the answer is still needed before completing.
        () = &mut work => (&mut confirm).await,
    };
    match confirmed {
        Ok(true) => {}
        Ok(false) => {
            run.taken_back.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        Err(e) => {
            run.error("StartQueued", e);
            return None;
        }
    }
    let work_end = Instant::now();
    // Its slot is free for a queued task while it completes, whose claim
    // this Complete carries.
    let (started, queued_started) = oneshot::channel();
    let _ = freed.send((tokio::task::id(), started));
    let _ = tokio::time::timeout(Duration::from_millis(20), queued_started).await;
    let carried = claims.take();
    let items = points
        .iter()
        .map(|&(index, alpha)| pb::Progress {
            curve: String::new(),
            kind: Some(pb::progress::Kind::Point(pb::LinePoint {
                index,
                alpha,
                train: Some(metrics()),
                heldout: Some(metrics()),
            })),
            task_id: String::new(),
            attempt: 0,
        })
        .collect();
    let report = pb::ReportRequest {
        worker_id: worker_id.clone(),
        task_id: a.task_id.clone(),
        attempt: a.attempt,
        seq: 1,
        items,
    };
    // The real worker's last batch of measurements rides with Complete;
    // with `--separate-calls` it is a Report of its own, as before.
    let (report_us, last_report) = if run.separate {
        let t = Instant::now();
        let answer = client.report(report).await;
        let us = micros(t.elapsed());
        if let Err(e) = answer {
            run.refused("Report", e);
            return None;
        }
        run.acked.fetch_add(1, Ordering::Relaxed);
        (Some(us), None)
    } else {
        (None, Some(report))
    };
    let folded = last_report.is_some();
    let t = Instant::now();
    let complete = client
        .complete(pb::CompleteRequest {
            worker_id,
            task_id: a.task_id,
            attempt: a.attempt,
            end: Some(pb::RunEnd {
                kind: pb::run_end::Kind::Completed as i32,
                epoch: 0,
                step: 0,
                reason: String::new(),
            }),
            checkpoint_hash: String::new(),
            epochs_trained: 0,
            engine_ms: 0,
            next_slots: if run.separate { 0 } else { next_slots },
            queued_ms: queued.as_millis() as u64,
            queued_starts: carried.requests(),
            last_report,
        })
        .await;
    let complete_us = micros(t.elapsed());
    let next = match complete {
        Ok(answer) => {
            let answer = answer.into_inner();
            carried.answer(answer.queued_starts);
            answer.tasks
        }
        Err(e) => {
            run.refused("Complete", e);
            return None;
        }
    };
    if folded {
        run.acked.fetch_add(1, Ordering::Relaxed);
    }
    run.acked.fetch_add(1, Ordering::Relaxed);
    if run.done.fetch_add(1, Ordering::Relaxed) + 1 == run.target {
        *run.end.lock().unwrap() = Some(Instant::now());
        run.stop.cancel();
    }
    Some(TaskDone {
        work_end,
        report_us,
        complete_us,
        next,
    })
}

/// A number in [0, 1) from the xorshift generator `state` (never 0).
fn unit(state: &mut u64) -> f64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    (*state >> 11) as f64 / (1u64 << 53) as f64
}

/// A simulated worker, as the real one: Lease (heartbeat) with what it can
/// take and every task it holds; the tasks a Complete leased start at once,
/// or queue while every slot is busy (`--lease-ahead`); a queued task
/// starts as soon as a running one's work ends; a slot with nothing to run
/// leases at once, else the next Lease is the heartbeat.
async fn worker(
    run: Arc<Run>,
    client: WorkerServiceClient<Channel>,
    id: String,
    slots: u32,
    ahead: u32,
    heartbeat: Duration,
) -> Latencies {
    struct Sim {
        run: Arc<Run>,
        client: WorkerServiceClient<Channel>,
        id: String,
        slots: usize,
        capacity: u32,
        started: Option<Instant>,
        tasks: JoinSet<Option<TaskDone>>,
        /// Running tasks, and whether each still holds its slot.
        running: HashMap<tokio::task::Id, (pb::RunningTask, bool)>,
        queue: VecDeque<(pb::TaskAssignment, Instant)>,
        freed_tx: mpsc::UnboundedSender<(tokio::task::Id, oneshot::Sender<()>)>,
        claims: Arc<Claims>,
    }
    impl Sim {
        fn start(&mut self, task: pb::TaskAssignment) {
            self.queue.push_back((task, Instant::now()));
            self.start_queued();
        }
        fn start_queued(&mut self) {
            while self
                .running
                .values()
                .filter(|(_, in_slot)| *in_slot)
                .count()
                < self.slots
            {
                let Some((task, since)) = self.queue.pop_front() else {
                    break;
                };
                let r = pb::RunningTask {
                    task_id: task.task_id.clone(),
                    attempt: task.attempt,
                };
                let claim = task
                    .queued
                    .then(|| self.claims.claim(&task.task_id, task.attempt));
                let h = self.tasks.spawn(run_task(
                    self.run.clone(),
                    self.client.clone(),
                    self.id.clone(),
                    task,
                    since.elapsed(),
                    self.capacity,
                    self.freed_tx.clone(),
                    self.claims.clone(),
                    claim,
                ));
                self.running.insert(h.id(), (r, true));
                self.started.get_or_insert_with(Instant::now);
            }
        }
        fn freed(&mut self, (id, started): (tokio::task::Id, oneshot::Sender<()>)) {
            if let Some((_, in_slot)) = self.running.get_mut(&id) {
                *in_slot = false;
            }
            self.start_queued();
            let _ = started.send(());
        }
        fn reap(&mut self, j: Joined, lat: &mut Latencies) {
            let id = match &j {
                Ok((id, _)) => *id,
                Err(e) => e.id(),
            };
            self.running.remove(&id);
            self.start_queued();
            for task in reap(j, lat) {
                self.start(task);
            }
        }
    }
    let (freed_tx, mut freed_rx) = mpsc::unbounded_channel();
    let mut sim = Sim {
        run: run.clone(),
        client: client.clone(),
        id: id.clone(),
        slots: slots as usize,
        capacity: slots + ahead,
        started: None,
        tasks: JoinSet::new(),
        running: HashMap::new(),
        queue: VecDeque::new(),
        freed_tx,
        claims: Arc::default(),
    };
    let mut lat = Latencies::default();
    let mut next_beat = Instant::now();
    let mut leased_once = false;
    let mut spread = {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        id.hash(&mut h);
        h.finish() | 1
    };
    loop {
        while let Ok(id) = freed_rx.try_recv() {
            sim.freed(id);
        }
        while let Some(j) = sim.tasks.try_join_next_with_id() {
            sim.reap(j, &mut lat);
        }
        if run.stop.is_cancelled() {
            break;
        }
        let held = (sim.running.len() + sim.queue.len()) as u32;
        let idle_slot = held < slots;
        if !idle_slot && Instant::now() < next_beat {
            tokio::select! {
                () = tokio::time::sleep_until(next_beat.into()) => {}
                () = run.stop.cancelled() => break,
                Some(j) = sim.tasks.join_next_with_id(), if !sim.tasks.is_empty() => sim.reap(j, &mut lat),
                Some(id) = freed_rx.recv() => sim.freed(id),
            }
            continue;
        }
        // With an idle slot the coordinator may hold the answer until a
        // task is ready (a long poll), as for the real worker.
        let wait = if idle_slot {
            heartbeat.min(LONG_POLL_MAX)
        } else {
            Duration::ZERO
        };
        let request = pb::LeaseRequest {
            worker_id: id.clone(),
            free_slots: sim.capacity.saturating_sub(held),
            running: sim
                .running
                .values()
                .map(|(r, _)| r.clone())
                .chain(sim.queue.iter().map(|(t, _)| pb::RunningTask {
                    task_id: t.task_id.clone(),
                    attempt: t.attempt,
                }))
                .collect(),
            wait_ms: wait.as_millis() as u32,
        };
        let t = Instant::now();
        let first = !std::mem::replace(&mut leased_once, true);
        let mut lease_client = client.clone();
        let answer = tokio::select! {
            a = lease_client.lease(request) => a,
            () = run.stop.cancelled() => break,
        };
        // Spread as the real worker spreads it (up to a quarter less).
        let beat = heartbeat.mul_f64(0.75 + 0.25 * unit(&mut spread));
        next_beat = t + beat;
        // After a long poll that found nothing, look again at once.
        let mut pause = beat.saturating_sub(t.elapsed());
        match answer {
            Ok(a) => {
                let a = a.into_inner();
                // A long poll's wait for work is not the lease's latency.
                if wait.is_zero() || !a.tasks.is_empty() {
                    let us = micros(t.elapsed());
                    if first {
                        lat.first_lease = Some(us);
                    } else {
                        lat.lease.push(us);
                    }
                }
                // A queued task taken back for another worker is dropped.
                sim.queue.retain(|(t, _)| !a.stop.contains(&t.task_id));
                for task in a.tasks {
                    sim.start(task);
                }
            }
            Err(e) => {
                run.error("Lease", e);
                pause = Duration::from_millis(200);
            }
        }
        tokio::select! {
            () = tokio::time::sleep(pause) => {}
            () = run.stop.cancelled() => break,
            Some(j) = sim.tasks.join_next_with_id(), if !sim.tasks.is_empty() => sim.reap(j, &mut lat),
            Some(id) = freed_rx.recv() => sim.freed(id),
        }
    }
    sim.tasks.abort_all();
    while let Some(j) = sim.tasks.join_next_with_id().await {
        sim.reap(j, &mut lat);
    }
    lat.first_start = sim.started;
    lat
}

type Joined = Result<(tokio::task::Id, Option<TaskDone>), tokio::task::JoinError>;

/// Records what an ended task measured; returns the tasks its Complete
/// leased.
fn reap(joined: Joined, lat: &mut Latencies) -> Vec<pb::TaskAssignment> {
    match joined {
        Ok((_, out)) => {
            match out {
                Some(done) => {
                    lat.last_work_end = lat.last_work_end.max(Some(done.work_end));
                    lat.report.extend(done.report_us);
                    lat.complete.push(done.complete_us);
                    if !done.next.is_empty() {
                        // The Complete was this slot's lease.
                        lat.lease.push(done.complete_us);
                    }
                    done.next
                }
                None => vec![],
            }
        }
        Err(_) => vec![],
    }
}

/// What one WatchJob stream received.
#[derive(Default)]
struct Watched {
    /// Arrival time of each event after the snapshot.
    arrivals: Vec<Instant>,
    gaps: u64,
    ended: bool,
    error: Option<String>,
}

async fn watch(channel: Channel, job_id: String, stop: CancellationToken) -> Watched {
    let mut w = Watched::default();
    let mut client = JobServiceClient::new(channel);
    let mut stream = match client.watch_job(pb::WatchJobRequest { job_id }).await {
        Ok(s) => s.into_inner(),
        Err(e) => {
            w.error = Some(e.to_string());
            return w;
        }
    };
    let mut last = 0u64;
    let grace = async {
        stop.cancelled().await;
        tokio::time::sleep(Duration::from_secs(10)).await;
    };
    tokio::pin!(grace);
    loop {
        let msg = tokio::select! {
            m = stream.message() => m,
            () = &mut grace => break,
        };
        match msg {
            Ok(Some(ev)) => {
                if ev.seq == 0 {
                    continue; // the snapshot
                }
                w.arrivals.push(Instant::now());
                if ev.seq != last + 1 {
                    w.gaps += 1;
                }
                last = ev.seq;
                if let Some(pb::job_event::Kind::Job(j)) = &ev.kind {
                    if matches!(
                        pb::JobState::try_from(j.state),
                        Ok(pb::JobState::Succeeded
                            | pb::JobState::Failed
                            | pb::JobState::Cancelled)
                    ) {
                        w.ended = true;
                    }
                }
            }
            Ok(None) => break,
            Err(e) => {
                w.error = Some(e.to_string());
                break;
            }
        }
    }
    w
}

// ------------------------------------------------------------ one run

struct Outcome {
    workers: usize,
    slots: u32,
    tasks: usize,
    task_ms: u64,
    task_jitter: f64,
    channels: usize,
    submit: Duration,
    wall: Duration,
    /// Slot time idle before the first task of each worker, and after its
    /// last one's work until the end (summed over workers).
    startup: Duration,
    tail: Duration,
    /// Tasks each worker held queued beyond its slots.
    ahead: u32,
    acked: u64,
    lost: u64,
    taken_back: u64,
    /// Each worker's first Lease, all sent at once.
    first_lease: Vec<u32>,
    /// Later Leases, and Completes that leased the next task.
    lease: Vec<u32>,
    report: Vec<u32>,
    complete: Vec<u32>,
    server_lease: Option<Histogram>,
    /// Lease looks whose renewals were deferred, and committed.
    looks: Option<(f64, f64)>,
    /// Coordinator user and system CPU seconds during the run.
    cpu: f64,
    cpu_sys: f64,
    own_cpu: f64,
    rss_idle: u64,
    rss_submitted: u64,
    rss_registered: u64,
    rss_peak: u64,
    hwm: u64,
    threads_idle: u64,
    threads_peak: u64,
    db_bytes: u64,
    watched: Option<(Watched, Instant)>,
    fsync: Duration,
    filesystem: String,
}

async fn run_once(
    args: &Args,
    workers: usize,
    slots: u32,
    tasks: usize,
    time: TaskTime,
    with_watch: bool,
    label: &str,
) -> Result<Outcome> {
    let TaskTime {
        ms: task_ms,
        jitter,
    } = time;
    let ticks = clock_ticks();
    let ahead = args.lease_ahead.min(slots);
    let server = Server::start(args).await?;
    let pid = server.pid();
    eprintln!(
        "{label}: coordinator pid {pid}, data dir {}",
        server.data_dir().display()
    );
    let fsync = fsync_median(&server.data_dir(), if args.smoke { 10 } else { 100 })?;
    let filesystem = filesystem_of(&server.data_dir());
    let control = server.channel().await?;
    let mut jobs = JobServiceClient::new(control.clone());
    let rss_idle = status_field(pid, "VmRSS");
    let threads_idle = status_field(pid, "Threads");

    let t = Instant::now();
    let job_ids = submit_jobs(&mut jobs, tasks, label).await?;
    let submit = t.elapsed();
    let rss_submitted = status_field(pid, "VmRSS");

    // Channels, and registration a few at a time (as workers start).
    let n_channels = workers.div_ceil(args.per_channel);
    let mut channels = vec![];
    for _ in 0..n_channels {
        channels.push(server.channel().await?);
    }
    let ids: Vec<String> = futures::stream::iter(0..workers)
        .map(|i| {
            let mut c = WorkerServiceClient::new(channels[i / args.per_channel].clone());
            async move {
                c.register(pb::RegisterRequest {
                    protocol_version: ridgeline_common::proto::PROTOCOL_VERSION,
                    name: format!("sim-{i}"),
                    device: "cpu".into(),
                    slots,
                    memory_bytes: 0,
                    previous_worker_id: String::new(),
                    lease_ahead: ahead,
                })
                .await
                .map(|r| r.into_inner())
            }
        })
        .buffered(16)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .map(|r| r.map(|r| r.worker_id).context("Register"))
        .collect::<Result<_>>()?;
    let heartbeat = Duration::from_secs_f64(args.heartbeat);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let rss_registered = status_field(pid, "VmRSS");

    let run = Arc::new(Run {
        target: tasks as u64,
        task_ms,
        jitter,
        separate: args.separate_calls,
        stop: CancellationToken::new(),
        acked: AtomicU64::new(0),
        done: AtomicU64::new(0),
        errors: AtomicU64::new(0),
        lost: AtomicU64::new(0),
        taken_back: AtomicU64::new(0),
        first_error: Mutex::new(None),
        end: Mutex::new(None),
    });
    let watcher = with_watch
        .then(|| tokio::spawn(watch(control.clone(), job_ids[0].clone(), run.stop.clone())));
    // Let the watcher catch up on the stored log before the clock starts.
    tokio::time::sleep(Duration::from_millis(100)).await;

    // Peak RSS and threads, sampled while the workers run.
    let sampling = CancellationToken::new();
    let sampler = {
        let stop = sampling.clone();
        tokio::spawn(async move {
            let (mut rss, mut threads) = (0, 0);
            loop {
                rss = rss.max(status_field(pid, "VmRSS"));
                threads = threads.max(status_field(pid, "Threads"));
                tokio::select! {
                    () = tokio::time::sleep(Duration::from_millis(50)) => {}
                    () = stop.cancelled() => return (rss, threads),
                }
            }
        })
    };

    let cpu0 = cpu_seconds(pid, ticks);
    let own0 = cpu_seconds(std::process::id(), ticks);
    let t0 = Instant::now();
    let mut handles = JoinSet::new();
    for (i, id) in ids.into_iter().enumerate() {
        let client = WorkerServiceClient::new(channels[i / args.per_channel].clone());
        handles.spawn(worker(run.clone(), client, id, slots, ahead, heartbeat));
    }
    // Generous: a stuck run is an error, not a hang.
    let ideal = Duration::from_millis(task_ms * tasks as u64 / (workers as u64 * slots as u64));
    let limit = Duration::from_secs(600).max(ideal * 20);
    let finished = tokio::time::timeout(limit, run.stop.cancelled())
        .await
        .is_ok();
    let end = run.end.lock().unwrap().unwrap_or_else(Instant::now);
    let wall = end - t0;
    let cpu1 = cpu_seconds(pid, ticks);
    let own1 = cpu_seconds(std::process::id(), ticks);
    let (cpu, cpu_sys) = (cpu1.0 + cpu1.1 - cpu0.0 - cpu0.1, cpu1.1 - cpu0.1);
    let own_cpu = own1.0 + own1.1 - own0.0 - own0.1;
    run.stop.cancel();
    let (mut first_lease, mut lease) = (vec![], vec![]);
    let (mut report, mut complete) = (vec![], vec![]);
    // Idle slot time before each worker's first task and after its last
    // one (one-slot workers: per worker is per slot).
    let (mut startup, mut tail) = (Duration::ZERO, Duration::ZERO);
    while let Some(l) = handles.join_next().await {
        let l = l?;
        startup += l
            .first_start
            .map_or(wall, |s| s.saturating_duration_since(t0));
        tail += l
            .last_work_end
            .map_or(Duration::ZERO, |e| end.saturating_duration_since(e));
        first_lease.extend(l.first_lease);
        lease.extend(l.lease);
        report.extend(l.report);
        complete.extend(l.complete);
    }
    sampling.cancel();
    let (rss_peak, threads_peak) = sampler.await?;
    let hwm = status_field(pid, "VmHWM");
    let watched = match watcher {
        Some(w) => Some((w.await?, t0)),
        None => None,
    };
    let scraped = server.metrics().await.ok();
    let server_lease = scraped
        .as_deref()
        .and_then(|m| Histogram::parse(m, "ridgeline_lease_duration_seconds"));
    // Lease looks whose renewals were deferred, and those committed.
    let looks = scraped.as_deref().map(|m| {
        let count = |renewals: &str| {
            let key = format!("ridgeline_leases_total{{renewals=\"{renewals}\"}} ");
            m.lines()
                .find_map(|l| l.strip_prefix(key.as_str()))
                .and_then(|v| v.trim().parse::<f64>().ok())
                .unwrap_or(0.0)
        };
        (count("deferred"), count("committed"))
    });

    if let Some(e) = run.first_error.lock().unwrap().take() {
        bail!(
            "{label}: {} call(s) failed; first: {e}\ncoordinator log:\n{}",
            run.errors.load(Ordering::Relaxed),
            server.log_tail()
        );
    }
    if !finished {
        bail!(
            "{label}: only {} of {tasks} tasks done after {limit:?}",
            run.done.load(Ordering::Relaxed)
        );
    }
    for id in &job_ids {
        let s = jobs
            .get_job(pb::GetJobRequest { job_id: id.clone() })
            .await?
            .into_inner();
        // The last Complete committed the job's end in the same transaction.
        if s.state != pb::JobState::Succeeded as i32 {
            bail!(
                "{label}: job {id} is {:?}, not succeeded",
                pb::JobState::try_from(s.state)
            );
        }
    }
    Ok(Outcome {
        workers,
        slots,
        tasks,
        task_ms,
        task_jitter: jitter,
        channels: n_channels,
        submit,
        wall,
        startup,
        tail,
        ahead,
        acked: run.acked.load(Ordering::Relaxed),
        lost: run.lost.load(Ordering::Relaxed),
        taken_back: run.taken_back.load(Ordering::Relaxed),
        first_lease,
        lease,
        report,
        complete,
        server_lease,
        looks,
        cpu,
        cpu_sys,
        own_cpu,
        rss_idle,
        rss_submitted,
        rss_registered,
        rss_peak,
        hwm,
        threads_idle,
        threads_peak,
        db_bytes: server.db_bytes(),
        watched,
        fsync,
        filesystem,
    })
}

// ------------------------------------------------------------ figures

/// A Prometheus histogram (cumulative buckets).
struct Histogram {
    buckets: Vec<(f64, f64)>,
    sum: f64,
    count: f64,
}

impl Histogram {
    fn parse(text: &str, name: &str) -> Option<Histogram> {
        let mut h = Histogram {
            buckets: vec![],
            sum: 0.0,
            count: 0.0,
        };
        for line in text.lines() {
            let Some((key, value)) = line.rsplit_once(' ') else {
                continue;
            };
            let Ok(value) = value.trim().parse::<f64>() else {
                continue;
            };
            if let Some(rest) = key.strip_prefix(&format!("{name}_bucket{{le=\"")) {
                let le = rest.split('"').next().unwrap_or("");
                let le = if le == "+Inf" {
                    f64::INFINITY
                } else {
                    le.parse().ok()?
                };
                h.buckets.push((le, value));
            } else if key == format!("{name}_sum") {
                h.sum = value;
            } else if key == format!("{name}_count") {
                h.count = value;
            }
        }
        h.buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
        (h.count > 0.0).then_some(h)
    }

    /// "≤ 1.6 ms", or "> 409.6 ms" past the last finite bucket.
    fn bound(&self, q: f64) -> String {
        if q.is_finite() {
            format!("≤ {:.1} ms", q * 1e3)
        } else {
            let top = self
                .buckets
                .iter()
                .rev()
                .find(|(le, _)| le.is_finite())
                .map_or(0.0, |(le, _)| *le);
            format!("> {:.1} ms", top * 1e3)
        }
    }

    /// Upper bound of the bucket holding quantile `q` (seconds).
    fn quantile(&self, q: f64) -> f64 {
        let want = q * self.count;
        self.buckets
            .iter()
            .find(|(_, c)| *c >= want)
            .map_or(f64::INFINITY, |(le, _)| *le)
    }
}

fn percentile_ms(v: &mut [u32], q: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_unstable();
    let i = ((q * v.len() as f64).ceil() as usize).clamp(1, v.len()) - 1;
    v[i] as f64 / 1000.0
}

/// 12345.6 → "12,346".
fn thousands(x: f64) -> String {
    let n = x.round() as i64;
    let s = n.unsigned_abs().to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    if n < 0 {
        format!("-{out}")
    } else {
        out
    }
}

fn mib(kib: u64) -> String {
    format!("{:.1} MiB", kib as f64 / 1024.0)
}

fn verdict(met: bool) -> &'static str {
    if met {
        "met"
    } else {
        "**not met**"
    }
}

fn load_table(o: &mut Outcome) -> String {
    let mut t = String::new();
    let secs = o.wall.as_secs_f64();
    let results = o.acked as f64 / secs;
    let _ = writeln!(
        t,
        "load: {} workers × {} slot(s) on {} HTTP/2 channel(s); {} tasks of one line-search point, {}; \
         data dir on {} (4 KiB append + fdatasync: median {:.2} ms); {} jobs submitted in {:.2} s",
        o.workers,
        o.slots,
        o.channels,
        thousands(o.tasks as f64),
        if o.task_ms == 0 {
            "instant".to_string()
        } else if o.task_jitter > 0.0 {
            format!(
                "{}-{} ms each (spread evenly)",
                (o.task_ms as f64 * (1.0 - o.task_jitter)).round(),
                (o.task_ms as f64 * (1.0 + o.task_jitter)).round()
            )
        } else {
            format!("{} ms each", o.task_ms)
        },
        o.filesystem,
        o.fsync.as_secs_f64() * 1e3,
        o.tasks.div_ceil(TASKS_PER_JOB),
        o.submit.as_secs_f64()
    );
    t.push('\n');
    t.push_str("| figure | measured | goal | |\n|---|---|---|---|\n");
    let _ = writeln!(
        t,
        "| durable results/s (reports + completions acked) | {}/s ({} calls in {:.2} s; {} tasks/s) | {} |",
        thousands(results),
        thousands(o.acked as f64),
        secs,
        thousands(o.tasks as f64 / secs),
        // Tasks that take time bound the rate: the goal is for instant ones.
        if o.task_ms == 0 {
            format!("≥ 5,000/s | {}", verdict(results >= 5000.0))
        } else {
            "— (bounded by the tasks' own time) | ".to_string()
        }
    );
    let _ = writeln!(
        t,
        "| leases lost to expiry (Report/Complete refused, task re-run) | {} | 0 | {} |",
        o.lost,
        verdict(o.lost == 0)
    );
    // All of them; then apart, the start (every worker's first Lease at
    // once) and what follows.
    let mut all: Vec<u32> = o.first_lease.iter().chain(&o.lease).copied().collect();
    for (what, v) in [
        (
            "Lease calls, and Completes that leased the next task",
            &mut all,
        ),
        (
            "each worker's first Lease, all sent at once",
            &mut o.first_lease,
        ),
        (
            "after the start: later Leases, and Completes that leased the next task",
            &mut o.lease,
        ),
    ] {
        if v.is_empty() {
            continue;
        }
        let (l50, l99) = (percentile_ms(v, 0.5), percentile_ms(v, 0.99));
        let lmax = v.last().map_or(f64::NAN, |&m| m as f64 / 1e3);
        let _ = writeln!(
            t,
            "| lease latency p50 / p99, client-observed ({what}) | {l50:.2} / {l99:.2} ms (max {lmax:.1} ms; {} calls) | p99 < 20 ms | {} |",
            thousands(v.len() as f64),
            verdict(l99 < 20.0)
        );
    }
    match &o.server_lease {
        Some(h) => {
            let (s50, s99) = (h.quantile(0.5), h.quantile(0.99));
            let _ = writeln!(
                t,
                "| lease latency p50 / p99, server, Lease calls only (`ridgeline_lease_duration_seconds` bucket bound) | {} / {} (mean {:.2} ms; {} calls) | p99 < 20 ms | {} |",
                h.bound(s50),
                h.bound(s99),
                h.sum / h.count * 1e3,
                thousands(h.count),
                verdict(s99 < 0.020)
            );
        }
        None => {
            let _ = writeln!(
                t,
                "| lease latency p50 / p99, server, Lease calls only (`ridgeline_lease_duration_seconds` bucket bound) | (no /metrics) | p99 < 20 ms | |"
            );
        }
    }
    if let Some((deferred, committed)) = o.looks {
        let _ = writeln!(
            t,
            "| Lease looks answered without a commit of their own (renewals deferred, `ridgeline_leases_total`) | {} of {} | — | |",
            thousands(deferred),
            thousands(deferred + committed)
        );
    }
    let (r50, r99) = (
        percentile_ms(&mut o.report, 0.5),
        percentile_ms(&mut o.report, 0.99),
    );
    let (c50, c99) = (
        percentile_ms(&mut o.complete, 0.5),
        percentile_ms(&mut o.complete, 0.99),
    );
    let _ = writeln!(
        t,
        "| Report / Complete latency p50 / p99, client-observed | {} / {c50:.2} / {c99:.2} ms | — | |",
        if r50.is_nan() {
            "(reports ride with Complete);".to_string()
        } else {
            format!("{r50:.2} / {r99:.2} ms;")
        }
    );
    let _ = writeln!(
        t,
        "| coordinator CPU | {:.2} s ({:.2} s system) in {:.2} s wall ({:.2} cores; {:.3} ms per task) | — | |",
        o.cpu,
        o.cpu_sys,
        secs,
        o.cpu / secs,
        o.cpu * 1e3 / o.tasks as f64
    );
    let _ = writeln!(
        t,
        "| load generator CPU (same 2 cores) | {:.2} s ({:.2} cores) | — | |",
        o.own_cpu,
        o.own_cpu / secs
    );
    let _ = writeln!(
        t,
        "| coordinator peak RSS (VmHWM) | {} (idle {}, after submit {}, registered {}, sampled peak {}; threads {} → {}) | — | |",
        mib(o.hwm),
        mib(o.rss_idle),
        mib(o.rss_submitted),
        mib(o.rss_registered),
        mib(o.rss_peak),
        o.threads_idle,
        o.threads_peak
    );
    let per_worker_idle =
        (o.rss_registered as f64 - o.rss_submitted as f64) * 1024.0 / o.workers as f64;
    let per_worker_peak =
        (o.rss_peak.max(o.hwm) as f64 - o.rss_submitted as f64) * 1024.0 / o.workers as f64;
    let _ = writeln!(
        t,
        "| memory per worker (RSS growth / N) | {:.1} KiB registered; {:.1} KiB at peak while running | linear, small | |",
        per_worker_idle / 1024.0,
        per_worker_peak / 1024.0
    );
    let per_task_rss = (o.rss_submitted as f64 - o.rss_idle as f64) * 1024.0 / o.tasks as f64;
    let _ = writeln!(
        t,
        "| memory per task (RSS growth / K) | {} B RSS when queued; {} B on disk (DB + WAL) when done | linear, small | |",
        thousands(per_task_rss),
        thousands(o.db_bytes as f64 / o.tasks as f64)
    );
    if let Some((w, t0)) = &o.watched {
        let live: Vec<&Instant> = w.arrivals.iter().filter(|a| **a >= *t0).collect();
        let span = live.last().map_or(0.0, |l| (**l - *t0).as_secs_f64());
        let rate = if span > 0.0 {
            live.len() as f64 / span
        } else {
            f64::NAN
        };
        let _ = writeln!(
                t,
                "| events/s to one watcher (WatchJob on job 1) | {}/s ({} events in {:.2} s; {}; {}{}) | — | |",
                thousands(rate),
                thousands(live.len() as f64),
                span,
                if w.gaps == 0 { "no gaps".to_string() } else { format!("{} gaps", w.gaps) },
                if w.ended { "job end seen" } else { "job end NOT seen" },
                w.error.as_ref().map_or(String::new(), |e| format!("; error: {e}"))
            );
    }
    // (Against an ideal only when every task takes the same time.)
    if o.task_ms > 0 && o.task_jitter == 0.0 {
        t.push_str(&overhead_row(o));
    }
    t
}

fn overhead_row(o: &Outcome) -> String {
    let ideal = o.task_ms as f64 / 1e3 * o.tasks as f64 / (o.workers as f64 * o.slots as f64);
    let wall = o.wall.as_secs_f64();
    let over = (wall / ideal - 1.0) * 100.0;
    // The same overhead split by where the slots sat idle, as shares of the
    // ideal slot time (they add up to the overhead with one-slot workers).
    let work = o.task_ms as f64 / 1e3 * o.tasks as f64;
    let idle = wall * o.workers as f64 * o.slots as f64 - work;
    let (startup, tail) = (o.startup.as_secs_f64(), o.tail.as_secs_f64());
    let between = idle - startup - tail;
    let share = |x: f64| x / work * 100.0;
    format!(
        "| scheduling overhead, {} tasks × {} ms on {} slots, lease ahead {} | {:.3} s vs ideal {:.3} s: {:+.1} % (idle slot time: {:.1} % before each worker's first task, {:.1} % between tasks, {:.1} % after its last; coordinator CPU {:.2} s; {} lease(s) lost to expiry; {} queued task(s) taken back; Lease looks without a commit of their own: {}) | < 2 % (Ray Tune: 14 %) | {} |\n",
        thousands(o.tasks as f64),
        thousands(o.task_ms as f64),
        thousands(o.workers as f64 * o.slots as f64),
        o.ahead,
        wall,
        ideal,
        over,
        share(startup),
        share(between),
        share(tail),
        o.cpu,
        o.lost,
        o.taken_back,
        o.looks.map_or("?".into(), |(d, c)| format!(
            "{} of {}",
            thousands(d),
            thousands(d + c)
        )),
        verdict(over < 2.0)
    )
}

/// A line search's wall time on 1, 2, 4, 8 workers against the ideal.
fn scaling_table(points: usize, ms: u64, rows: &[(usize, f64, u64)]) -> String {
    let mut t = format!(
        "\nline search of {points} points (one per task, {ms} ms each) on N one-slot workers:\n\n\
         | workers | wall | ideal ⌈P/N⌉·T | over ideal | speed-up vs 1 worker | efficiency |\n\
         |---:|---:|---:|---:|---:|---:|\n"
    );
    let one = rows.first().map_or(f64::NAN, |r| r.1);
    for &(n, wall, lost) in rows {
        let ideal = points.div_ceil(n) as f64 * ms as f64 / 1e3;
        let speedup = one / wall;
        let _ = writeln!(
            t,
            "| {n} | {wall:.2} s | {ideal:.2} s | {:+.1} % | {speedup:.2}× | {:.0} %{} |",
            (wall / ideal - 1.0) * 100.0,
            speedup / n as f64 * 100.0,
            if lost > 0 {
                format!(" ({lost} leases lost)")
            } else {
                String::new()
            }
        );
    }
    t
}

async fn main_async(args: Args) -> Result<()> {
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let loadavg = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let loadavg = loadavg
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ");
    println!(
        "Coordinator under load: {}, {cores} cores visible, load average {loadavg} before the runs",
        coordinator_binary()?.display()
    );
    let mut out = String::new();
    if args.load {
        let mut o = run_once(
            &args,
            args.workers,
            args.slots,
            args.tasks,
            TaskTime {
                ms: args.task_ms,
                jitter: args.task_jitter,
            },
            true,
            "load",
        )
        .await?;
        out.push_str(&load_table(&mut o));
    }
    if let Some((k, t, n)) = args.overhead {
        let o = run_once(&args, n, 1, k, TaskTime::fixed(t), false, "overhead").await?;
        if !args.load {
            out.push_str("| figure | measured | goal | |\n|---|---|---|---|\n");
        }
        out.push_str(&overhead_row(&o));
    }
    if let Some((points, ms)) = args.scaling {
        let mut rows = vec![];
        for n in [1, 2, 4, 8] {
            let o = run_once(
                &args,
                n,
                1,
                points,
                TaskTime::fixed(ms),
                false,
                &format!("scaling on {n}"),
            )
            .await?;
            rows.push((n, o.wall.as_secs_f64(), o.lost));
        }
        out.push_str(&scaling_table(points, ms, &rows));
    }
    println!("\n{out}");
    Ok(())
}

fn main() {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(2);
        }
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    if let Err(e) = runtime.block_on(main_async(args)) {
        eprintln!("load: {e:#}");
        std::process::exit(1);
    }
}
