//! The worker runtime: registers with a coordinator, leases tasks, runs
//! them on the engine and reports back.
//!
//! ```text
//!            ┌──────────── lease loop (this file) ─────────────┐
//! Register ─►│ Lease every heartbeat: renews running leases,   │
//!            │ stops what the coordinator says, starts new     │
//!            │ assignments ──► task::run (one per attempt)     │
//!            └────────────────────┬────────────────────────────┘
//!                                 ▼
//!    artifacts::obtain ─► work::train / work::line_search (blocking thread)
//!                                 │ Progress
//!                                 ▼
//!         reporter (Report seq 1,2,3… in order) ─► upload ─► Complete
//! ```
//!
//! The worker outlives its coordinator: transport failures are retried
//! with backoff while tasks keep running and their reports queue up; a
//! coordinator that forgot the worker is registered with again under the
//! same id. Only the shutdown token or `exit_when_idle` end [`run`].
//!
//! [`run`] installs no tracing subscriber and reads no process arguments,
//! so tests and custom worker binaries (with their own models in
//! [`WorkerConfig::registry`]) can run it in-process.

mod artifacts;
pub mod metrics;
mod reporter;
mod rpc;
mod task;
mod work;

use std::collections::{HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use ridgeline_common::auth::Bearer;
use ridgeline_common::claims::Claims;
use ridgeline_common::proto::v1 as pb;
use ridgeline_common::proto::PROTOCOL_VERSION;
use ridgeline_common::spec::DataRoots;
use ridgeline_common::tls::ClientTls;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::{JoinError, JoinSet};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

pub use crate::engine::device::DeviceChoice;
pub use crate::engine::model::ModelRegistry;
pub use artifacts::{check_hash, verify, ArtifactCache};
pub use task::{StopReason, TaskControl};
pub use work::{
    is_retryable, DatasetCache, Engine, Memo, DATASET_CACHE_ENTRIES, DIRECTION_CACHE_ENTRIES,
};

use crate::engine::device::{self, SlotPools};
use crate::engine::error::EngineError;
use metrics::WorkerMetrics;
use rpc::{Backoff, Client, Refusal};
use task::FAIL_GRACE;

/// Default of [`WorkerConfig::shutdown_grace`].
pub const DEFAULT_SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// Heartbeat used when the coordinator announces none.
const DEFAULT_HEARTBEAT: Duration = Duration::from_secs(1);

/// The longest a Lease may wait for work (well inside the RPC timeout).
const LONG_POLL_MAX: Duration = Duration::from_secs(5);

/// Everything a worker needs to run.
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    /// `http://host:port` (a bare `host:port` is taken as http).
    pub coordinator: String,
    /// How the worker is listed (`ListWorkers`); need not be unique.
    pub name: String,
    pub device: DeviceChoice,
    /// Tasks run at once.
    pub slots: usize,
    /// Threads of each slot's own pool, which runs its task's engine work
    /// on the CPU (`None`: the machine's cores shared out among the slots).
    pub threads: Option<usize>,
    /// Tasks held queued beyond `slots`, each started the moment a slot
    /// frees (a lease ahead; at most `slots`; 0 for none). The coordinator
    /// grants them only from a job with tasks to spare, and takes one back,
    /// until this worker starts it, for a worker that falls idle.
    pub lease_ahead: usize,
    /// Where artifacts (checkpoints, weights) are kept by hash.
    pub cache_dir: PathBuf,
    /// Return after this long with no task running or leased (`None`: run
    /// until shut down).
    pub exit_when_idle: Option<Duration>,
    /// Custom models this worker can build (`kind = "custom"`).
    pub registry: ModelRegistry,
    /// After shutdown is asked for, how long running tasks may still
    /// finish before they are stopped and handed back.
    pub shutdown_grace: Duration,
    /// Sent with every call, when the coordinator requires tokens.
    pub token: Bearer,
    /// The coordinator's CA and this worker's client certificate, for an
    /// `https://` coordinator.
    pub tls: ClientTls,
    /// The only directories a job's data files may be read from (empty:
    /// any path this process can read). Uploaded files (`artifact:`) are
    /// always allowed.
    pub data_roots: DataRoots,
    /// Serve Prometheus `/metrics` here (none: not at all).
    pub metrics_listen: Option<std::net::SocketAddr>,
}

impl WorkerConfig {
    /// A one-slot CPU worker, with one task leased ahead, the default
    /// cache directory and grace.
    pub fn new(coordinator: impl Into<String>, name: impl Into<String>) -> Self {
        Self {
            coordinator: coordinator.into(),
            name: name.into(),
            device: DeviceChoice::Cpu,
            slots: 1,
            threads: None,
            lease_ahead: 1,
            cache_dir: default_cache_dir(),
            exit_when_idle: None,
            registry: ModelRegistry::default(),
            shutdown_grace: DEFAULT_SHUTDOWN_GRACE,
            token: Bearer::none(),
            tls: ClientTls::none(),
            data_roots: DataRoots::any(),
            metrics_listen: None,
        }
    }
}

/// `$XDG_CACHE_HOME/ridgeline` when set, else `ridgeline-cache` in the
/// system's temporary directory.
pub fn default_cache_dir() -> PathBuf {
    match std::env::var_os("XDG_CACHE_HOME").filter(|v| !v.is_empty()) {
        Some(xdg) => PathBuf::from(xdg).join("ridgeline"),
        None => std::env::temp_dir().join("ridgeline-cache"),
    }
}

/// Why the worker could not run. Coordinator outages are not errors: the
/// worker waits them out.
#[derive(Debug, thiserror::Error)]
pub enum RunnerError {
    #[error("invalid worker configuration: {0}")]
    Config(String),
    #[error("`{url}` is not a usable coordinator address: {message}")]
    Coordinator { url: String, message: String },
    // Causes are part of the message (not `#[source]`), so that printing
    // the error with its chain does not repeat them.
    /// The engine's device error already reads "device: …".
    #[error("{0}")]
    Device(EngineError),
    #[error("cannot create the cache directory {}: {error}", path.display())]
    CacheDir {
        path: PathBuf,
        error: std::io::Error,
    },
    /// The coordinator answered the first registration with a refusal
    /// (another protocol version, or a request it finds invalid).
    #[error("the coordinator refused to register this worker: {0}")]
    Refused(String),
}

/// What the lease loop and every task of one worker share.
pub(crate) struct Shared {
    pub(crate) client: Client,
    /// Changes only when a coordinator that forgot this worker hands out a
    /// new id.
    pub(crate) worker_id: watch::Receiver<String>,
    pub(crate) engine: Arc<Engine>,
    /// Where each task's engine work runs: a thread pool of its own.
    pub(crate) pools: Arc<SlotPools>,
    pub(crate) artifacts: ArtifactCache,
    /// Cancelled when the shutdown grace is over: every task stops waiting
    /// and hands its attempt back.
    pub(crate) hard_stop: CancellationToken,
    /// Where a job's data files may be (`--data-root`).
    pub(crate) data_roots: DataRoots,
    pub(crate) metrics: Arc<WorkerMetrics>,
    /// False once the worker is shutting down: a finishing task then asks
    /// `Complete` for no next task.
    pub(crate) accepting: AtomicBool,
    /// What a finishing task's `Complete` asks for: every slot and queue
    /// place (the coordinator subtracts what the worker holds).
    pub(crate) capacity: u32,
    /// A task whose engine work is over says so here: its slot is free
    /// for a queued task while it uploads and completes.
    pub(crate) freed: mpsc::UnboundedSender<Freed>,
    /// Claims of queued tasks just started, for the next `Complete` to
    /// carry.
    pub(crate) claims: Arc<Claims>,
}

/// A running task's slot is free (its engine work is over).
pub(crate) struct Freed {
    pub(crate) id: tokio::task::Id,
    /// Told once the queued task that takes the slot (if any) has made
    /// its claim, so that the freeing task's `Complete` carries it.
    pub(crate) started: oneshot::Sender<()>,
}

/// Runs a worker until `shutdown` is cancelled (then lets running tasks
/// finish for up to `shutdown_grace`, and hands back the rest) or until it
/// has been idle for `exit_when_idle`.
pub async fn run(config: WorkerConfig, shutdown: CancellationToken) -> Result<(), RunnerError> {
    if config.slots == 0 || config.slots > 1024 {
        return Err(RunnerError::Config(format!(
            "slots must be between 1 and 1024, not {}",
            config.slots
        )));
    }
    if config.threads == Some(0) || config.threads.is_some_and(|t| t > 1024) {
        return Err(RunnerError::Config(format!(
            "threads must be between 1 and 1024, not {}",
            config.threads.unwrap_or_default()
        )));
    }
    if config.lease_ahead > config.slots {
        return Err(RunnerError::Config(format!(
            "lease-ahead must be at most the slots ({}), not {}",
            config.slots, config.lease_ahead
        )));
    }
    tokio::fs::create_dir_all(&config.cache_dir)
        .await
        .map_err(|error| RunnerError::CacheDir {
            path: config.cache_dir.clone(),
            error,
        })?;
    let client = rpc::connect(&config.coordinator, &config.token, &config.tls)?;
    let metrics = Arc::new(WorkerMetrics::new());
    // Served for as long as this function runs.
    let metrics_stop = CancellationToken::new();
    let _metrics_guard = metrics_stop.clone().drop_guard();
    if let Some(addr) = config.metrics_listen {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|e| RunnerError::Config(format!("--metrics-listen {addr}: {e}")))?;
        tokio::spawn(metrics::serve(listener, metrics.clone(), metrics_stop));
    }
    let choice = config.device;
    // Opening a GPU can take seconds: keep it off the async threads.
    let device = tokio::task::spawn_blocking(move || device::open(choice))
        .await
        .map_err(|e| RunnerError::Device(EngineError::Device(e.to_string())))?
        .map_err(RunnerError::Device)?;
    let threads = config
        .threads
        .unwrap_or_else(|| device::threads_per_slot(config.slots, device::cores()));
    let registration = pb::RegisterRequest {
        protocol_version: PROTOCOL_VERSION,
        name: config.name.clone(),
        device: device::describe(&device),
        slots: u32::try_from(config.slots).unwrap_or(u32::MAX),
        memory_bytes: memory_bytes(),
        previous_worker_id: String::new(),
        lease_ahead: u32::try_from(config.lease_ahead).unwrap_or(u32::MAX),
    };
    tracing::info!(
        coordinator = %config.coordinator,
        name = %config.name,
        device = %registration.device,
        slots = config.slots,
        threads,
        lease_ahead = config.lease_ahead,
        "worker starting"
    );
    let Some(answer) = register_first(&client, &registration, &shutdown).await? else {
        tracing::info!("shut down before registering");
        return Ok(());
    };
    let (id_tx, id_rx) = watch::channel(answer.worker_id.clone());
    let heartbeat = heartbeat_of(&answer);
    tracing::info!(worker_id = %answer.worker_id, ?heartbeat, "registered");
    let (freed, freed_rx) = mpsc::unbounded_channel();
    let shared = Arc::new(Shared {
        client,
        worker_id: id_rx,
        engine: Arc::new(Engine::new(device, config.registry.clone())),
        pools: Arc::new(SlotPools::new(threads)),
        artifacts: ArtifactCache::new(config.cache_dir.clone()),
        hard_stop: CancellationToken::new(),
        data_roots: config.data_roots.clone(),
        metrics: metrics.clone(),
        accepting: AtomicBool::new(true),
        capacity: u32::try_from(config.slots + config.lease_ahead).unwrap_or(u32::MAX),
        freed,
        claims: Arc::default(),
    });
    // `worker_name`, not `name`: JSON logs give each span a `name` (its own).
    let span =
        tracing::info_span!("worker", worker_id = %answer.worker_id, worker_name = %config.name);
    let leaser = Leaser {
        shared,
        id_tx,
        registration,
        heartbeat,
        slots: config.slots,
        lease_ahead: config.lease_ahead,
        grace: config.shutdown_grace,
        exit_when_idle: config.exit_when_idle,
        tasks: JoinSet::new(),
        running: HashMap::new(),
        queue: VecDeque::new(),
        freed: freed_rx,
        draining: false,
        span: span.clone(),
    };
    leaser.run(shutdown).instrument(span).await
}

/// The time from one heartbeat to the next: the interval less up to a
/// quarter of it, at random, so that workers started together do not beat
/// in lock-step (with a thousand of them, a thousand Leases within a few
/// milliseconds every interval, each waiting behind the others).
fn spread(heartbeat: Duration) -> Duration {
    heartbeat.mul_f64(rand::random_range(0.75..=1.0))
}

/// The first registration: retried through transport failures (the
/// coordinator may start after the worker), refused for good otherwise.
/// `None` when shutdown came first.
async fn register_first(
    client: &Client,
    request: &pb::RegisterRequest,
    shutdown: &CancellationToken,
) -> Result<Option<pb::RegisterResponse>, RunnerError> {
    let mut backoff = Backoff::new();
    loop {
        match rpc::call(rpc::RPC_TIMEOUT, client.clone().register(request.clone())).await {
            Ok(answer) => return Ok(Some(answer)),
            Err(status) if rpc::classify(&status) == Refusal::Transient => {
                tracing::warn!(error = %rpc::describe(&status), "coordinator unreachable; retrying");
            }
            Err(status) => return Err(RunnerError::Refused(rpc::describe(&status))),
        }
        tokio::select! {
            () = shutdown.cancelled() => return Ok(None),
            () = tokio::time::sleep(backoff.next_delay()) => {}
        }
    }
}

fn heartbeat_of(answer: &pb::RegisterResponse) -> Duration {
    match answer.heartbeat_interval_ms {
        0 => DEFAULT_HEARTBEAT,
        ms => Duration::from_millis(u64::from(ms).max(20)),
    }
}

/// A task attempt this worker runs.
struct Running {
    task_id: String,
    attempt: u32,
    control: Arc<TaskControl>,
    /// Until its engine work is over (then it only uploads and completes,
    /// and a queued task may have its slot).
    in_slot: bool,
}

/// A task leased ahead, waiting for a slot.
struct Queued {
    assignment: pb::TaskAssignment,
    since: Instant,
}

/// The lease loop's state.
struct Leaser {
    shared: Arc<Shared>,
    id_tx: watch::Sender<String>,
    registration: pb::RegisterRequest,
    heartbeat: Duration,
    slots: usize,
    lease_ahead: usize,
    grace: Duration,
    exit_when_idle: Option<Duration>,
    /// One future per task attempt (see [`task::run`]); each ends with the
    /// tasks its `Complete` leased for the slot it freed.
    tasks: JoinSet<Vec<pb::TaskAssignment>>,
    running: HashMap<tokio::task::Id, Running>,
    /// Tasks leased ahead, started in order as slots free.
    queue: VecDeque<Queued>,
    /// Running tasks whose engine work is over.
    freed: mpsc::UnboundedReceiver<Freed>,
    /// Shutting down: tasks leased now are handed straight back.
    draining: bool,
    span: tracing::Span,
}

/// Why a lease call did not go through.
enum LeaseFailure {
    /// `NOT_FOUND`: the coordinator forgot this worker.
    UnknownWorker,
    Other,
}

impl Leaser {
    async fn run(mut self, shutdown: CancellationToken) -> Result<(), RunnerError> {
        let mut backoff = Backoff::new();
        let mut need_register = false;
        let mut just_registered = false;
        let mut idle_since = Instant::now();
        let mut drain_until: Option<Instant> = None;
        let mut failing_since: Option<Instant> = None;
        // When the next heartbeat is due. A slot freed by a task whose
        // Complete already brought the next task needs no Lease before it.
        let mut next_beat = Instant::now();
        loop {
            while let Ok(freed) = self.freed.try_recv() {
                self.free_slot(freed);
            }
            while let Some(joined) = self.tasks.try_join_next_with_id() {
                self.reap(joined);
            }
            let now = Instant::now();
            if drain_until.is_none() && shutdown.is_cancelled() {
                drain_until = Some(now + self.grace);
                self.draining = true;
                self.shared.accepting.store(false, Ordering::Relaxed);
                tracing::info!(
                    running = self.running.len(),
                    queued = self.queue.len(),
                    grace = ?self.grace,
                    "shutting down: taking no new tasks"
                );
                // Tasks not started yet go straight back.
                for q in std::mem::take(&mut self.queue) {
                    self.start(q.assignment, true);
                }
            }
            if let Some(until) = drain_until {
                if self.running.is_empty() {
                    tracing::info!("worker stopped");
                    return Ok(());
                }
                if now >= until {
                    self.abandon().await;
                    return Ok(());
                }
            }
            if !self.running.is_empty() {
                idle_since = now;
            } else if let Some(limit) = self.exit_when_idle {
                if now.duration_since(idle_since) >= limit {
                    tracing::info!(idle = ?limit, "idle: exiting");
                    return Ok(());
                }
            }

            // Lease (which is also the heartbeat), or register again. A
            // coordinator that hangs must not hold up a shutdown: the call
            // is dropped when the grace ends, or a second after shutdown is
            // asked for (a second, so that an answer on its way is read and
            // the tasks it may assign are handed straight back rather than
            // left to expire).
            // A slot with nothing to run (a task still completing holds its
            // slot: its Complete brings the next task) leases at once, and
            // may wait for work; a free place in the queue only asks with
            // the heartbeat.
            let draining = drain_until.is_some();
            let held = self.running.len() + self.queue.len();
            let (ask, idle_slot) = if draining {
                (0, false)
            } else {
                (
                    (self.slots + self.lease_ahead).saturating_sub(held),
                    held < self.slots,
                )
            };
            let grace_end = drain_until.unwrap_or(now);
            let due = need_register || idle_slot || now >= next_beat;
            let called = Instant::now();
            let outcome = if due {
                Some(tokio::select! {
                    outcome = async {
                        if need_register {
                            self.register_again().await
                        } else {
                            self.lease(ask, idle_slot, draining).await
                        }
                    } => outcome,
                    () = async {
                        shutdown.cancelled().await;
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }, if !draining => continue,
                    () = tokio::time::sleep_until(grace_end), if draining => continue,
                })
            } else {
                None
            };
            let delay = match outcome {
                // Every slot is busy and the heartbeat is not due yet.
                None => next_beat.saturating_duration_since(now),
                Some(Ok(Step::Leased)) => {
                    if let Some(since) = failing_since.take() {
                        tracing::info!(after = ?since.elapsed(), "coordinator reachable again");
                    }
                    backoff.reset();
                    just_registered = false;
                    // The heartbeat's cadence counts from the call: after a
                    // long poll that found nothing, look again at once.
                    let beat = spread(self.heartbeat);
                    next_beat = called + beat;
                    beat.saturating_sub(called.elapsed())
                }
                Some(Ok(Step::Registered)) => {
                    need_register = false;
                    just_registered = true;
                    next_beat = Instant::now();
                    Duration::ZERO
                }
                Some(Err(LeaseFailure::UnknownWorker)) => {
                    need_register = true;
                    // A coordinator that forgets us again right after we
                    // registered must not be hammered.
                    if just_registered {
                        backoff.next_delay()
                    } else {
                        Duration::ZERO
                    }
                }
                Some(Err(LeaseFailure::Other)) => {
                    failing_since.get_or_insert(now);
                    next_beat = Instant::now();
                    backoff.next_delay()
                }
            };
            if !self.running.is_empty() {
                idle_since = Instant::now();
            }

            let mut wake = Instant::now() + delay;
            if let Some(until) = drain_until {
                wake = wake.min(until);
            }
            if let (true, Some(limit)) = (self.running.is_empty(), self.exit_when_idle) {
                wake = wake.min(idle_since + limit);
            }
            tokio::select! {
                () = tokio::time::sleep_until(wake) => {}
                () = shutdown.cancelled(), if drain_until.is_none() => {}
                // A slot freed up: lease again at once.
                Some(joined) = self.tasks.join_next_with_id(), if !self.tasks.is_empty() => {
                    self.reap(joined);
                }
                // A task's engine work is over: a queued task takes its slot.
                Some(freed) = self.freed.recv() => self.free_slot(freed),
            }
        }
    }

    fn worker_id(&self) -> String {
        self.id_tx.borrow().clone()
    }

    async fn lease(
        &mut self,
        ask: usize,
        idle_slot: bool,
        draining: bool,
    ) -> Result<Step, LeaseFailure> {
        // With an idle slot, the coordinator may hold the answer until a
        // task is ready (a long poll), so a newly released stage starts at
        // once rather than at the next heartbeat.
        let wait = if idle_slot && !draining {
            self.heartbeat.min(LONG_POLL_MAX)
        } else {
            Duration::ZERO
        };
        let request = pb::LeaseRequest {
            wait_ms: u32::try_from(wait.as_millis()).unwrap_or(u32::MAX),
            worker_id: self.worker_id(),
            free_slots: u32::try_from(ask).unwrap_or(u32::MAX),
            // Queued tasks too: their leases are renewed alike.
            running: self
                .running
                .values()
                .map(|r| pb::RunningTask {
                    task_id: r.task_id.clone(),
                    attempt: r.attempt,
                })
                .chain(self.queue.iter().map(|q| pb::RunningTask {
                    task_id: q.assignment.task_id.clone(),
                    attempt: q.assignment.attempt,
                }))
                .collect(),
        };
        let answer = match rpc::call(
            rpc::RPC_TIMEOUT + wait,
            self.shared.client.clone().lease(request),
        )
        .await
        {
            Ok(answer) => answer,
            Err(status) => {
                return Err(match rpc::classify(&status) {
                    Refusal::NotFound => {
                        tracing::warn!(error = %rpc::describe(&status), "the coordinator does not know this worker: registering again");
                        LeaseFailure::UnknownWorker
                    }
                    Refusal::Transient => {
                        tracing::warn!(error = %rpc::describe(&status), "lease failed; retrying");
                        LeaseFailure::Other
                    }
                    Refusal::Precondition | Refusal::Permanent => {
                        tracing::error!(error = %rpc::describe(&status), "lease refused; retrying");
                        LeaseFailure::Other
                    }
                });
            }
        };
        // Stops refer to the attempts we listed, so they are applied before
        // new assignments (possibly a new attempt of a stopped task) start.
        for id in &answer.stop {
            for r in self.running.values().filter(|r| &r.task_id == id) {
                if !r.control.is_stopped() {
                    tracing::info!(task_id = %r.task_id, attempt = r.attempt, "the coordinator asked to stop the task");
                }
                r.control.stop(StopReason::Coordinator);
            }
            // A queued task is not ours any more: it is dropped unstarted
            // (nothing is owed for it).
            self.queue.retain(|q| {
                let keep = &q.assignment.task_id != id;
                if !keep {
                    tracing::info!(task_id = %id, attempt = q.assignment.attempt, "the coordinator took back a queued task");
                }
                keep
            });
        }
        for assignment in answer.tasks {
            self.start(assignment, draining);
        }
        Ok(Step::Leased)
    }

    /// A task assigned to this worker: started if a slot is free (or handed
    /// straight back while draining), else queued behind the others.
    fn start(&mut self, assignment: pb::TaskAssignment, draining: bool) {
        let same =
            |id: &str, attempt: u32| id == assignment.task_id && attempt == assignment.attempt;
        if self.running.values().any(|r| same(&r.task_id, r.attempt))
            || self
                .queue
                .iter()
                .any(|q| same(&q.assignment.task_id, q.assignment.attempt))
        {
            tracing::warn!(task_id = %assignment.task_id, attempt = assignment.attempt, "assigned a task attempt already held here; ignored");
            return;
        }
        if draining {
            self.spawn(assignment, Duration::ZERO, true);
            return;
        }
        self.queue.push_back(Queued {
            assignment,
            since: Instant::now(),
        });
        self.start_queued();
    }

    /// Starts queued tasks while a slot is free.
    fn start_queued(&mut self) {
        while self.running.values().filter(|r| r.in_slot).count() < self.slots {
            let Some(q) = self.queue.pop_front() else {
                break;
            };
            self.spawn(q.assignment, q.since.elapsed(), false);
        }
    }

    /// The engine work of a task is over: its slot goes to the next queued
    /// task, which claims it before the freeing task is told to complete.
    fn free_slot(&mut self, freed: Freed) {
        if let Some(r) = self.running.get_mut(&freed.id) {
            r.in_slot = false;
        }
        self.start_queued();
        let _ = freed.started.send(());
    }

    fn spawn(&mut self, assignment: pb::TaskAssignment, queued: Duration, refuse: bool) {
        let control = Arc::new(TaskControl::new());
        let running = Running {
            task_id: assignment.task_id.clone(),
            attempt: assignment.attempt,
            control: control.clone(),
            in_slot: !refuse,
        };
        let shared = self.shared.clone();
        // Tasks log under the worker's span, with their own fields.
        let future = if refuse {
            control.stop(StopReason::Shutdown);
            futures::future::Either::Left(task::refuse(shared, assignment, control))
        } else {
            // A task leased ahead claims its start now, for the next
            // Complete to carry (see `claims`).
            let claim = assignment
                .queued
                .then(|| shared.claims.claim(&assignment.task_id, assignment.attempt));
            futures::future::Either::Right(task::run(shared, assignment, control, queued, claim))
        };
        let handle = self.tasks.spawn(future.instrument(self.span.clone()));
        self.running.insert(handle.id(), running);
    }

    /// A task's future ended: its slot is free, and the tasks its Complete
    /// leased start now (or go straight back while shutting down).
    fn reap(&mut self, joined: Result<(tokio::task::Id, Vec<pb::TaskAssignment>), JoinError>) {
        let (id, next) = match joined {
            Ok(done) => done,
            Err(e) => {
                tracing::error!(error = %e, "a task runner ended abnormally");
                (e.id(), vec![])
            }
        };
        self.running.remove(&id);
        self.start_queued();
        for assignment in next {
            self.start(assignment, self.draining);
        }
    }

    /// Registers again under the same id after the coordinator forgot this
    /// worker. Running tasks carry on: if the coordinator still has their
    /// leases they stay valid, and if not, their next report says so.
    async fn register_again(&mut self) -> Result<Step, LeaseFailure> {
        let mut request = self.registration.clone();
        request.previous_worker_id = self.worker_id();
        match rpc::call(
            rpc::RPC_TIMEOUT,
            self.shared.client.clone().register(request.clone()),
        )
        .await
        {
            Ok(answer) => {
                if answer.worker_id != request.previous_worker_id {
                    tracing::warn!(
                        previous = %request.previous_worker_id,
                        worker_id = %answer.worker_id,
                        running = self.running.len(),
                        "registered under a new id (the leases of tasks still running are lost)"
                    );
                    self.span.record("worker_id", answer.worker_id.as_str());
                    self.id_tx.send_replace(answer.worker_id.clone());
                } else {
                    tracing::info!("registered again");
                }
                self.heartbeat = heartbeat_of(&answer);
                Ok(Step::Registered)
            }
            Err(status) => {
                // Even a refusal is retried: the worker must not exit (and
                // abandon its tasks) because of the coordinator.
                tracing::warn!(error = %rpc::describe(&status), "registering again failed; retrying");
                Err(LeaseFailure::Other)
            }
        }
    }

    /// The grace is over: stops every running task and waits (briefly) for
    /// each to hand its attempt back.
    async fn abandon(&mut self) {
        tracing::warn!(
            running = self.running.len(),
            "shutdown grace over: stopping running tasks and handing them back"
        );
        for r in self.running.values() {
            r.control.stop(StopReason::Shutdown);
        }
        self.shared.hard_stop.cancel();
        let until = Instant::now() + FAIL_GRACE + Duration::from_secs(1);
        while !self.tasks.is_empty() {
            match tokio::time::timeout_at(until, self.tasks.join_next_with_id()).await {
                Ok(Some(joined)) => self.reap(joined),
                Ok(None) => break,
                Err(_) => {
                    tracing::warn!(
                        running = self.running.len(),
                        "some tasks did not hand their attempt back in time; their leases will expire"
                    );
                    break;
                }
            }
        }
    }
}

/// What one turn of the lease loop did.
enum Step {
    Leased,
    Registered,
}

/// Total memory of this machine (`MemTotal` of `/proc/meminfo`), 0 when
/// unknown. Sent at registration so `ListWorkers` can show it.
pub fn memory_bytes() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|text| parse_meminfo(&text))
        .unwrap_or(0)
}

/// `MemTotal` in bytes from the text of `/proc/meminfo`.
fn parse_meminfo(text: &str) -> Option<u64> {
    let line = text.lines().find_map(|l| l.strip_prefix("MemTotal:"))?;
    let mut parts = line.split_whitespace();
    let n: u64 = parts.next()?.parse().ok()?;
    let unit: u64 = match parts.next().map(str::to_ascii_lowercase).as_deref() {
        None | Some("b") => 1,
        Some("kb") => 1 << 10,
        Some("mb") => 1 << 20,
        Some("gb") => 1 << 30,
        Some(_) => return None,
    };
    n.checked_mul(unit)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn meminfo_is_read_in_bytes() {
        let text = "MemFree:         1000 kB\nMemTotal:       16318888 kB\nBuffers: 1 kB\n";
        assert_eq!(parse_meminfo(text), Some(16318888 * 1024));
        assert_eq!(parse_meminfo("MemTotal: 12"), Some(12));
        assert_eq!(parse_meminfo("MemTotal: lots kB"), None);
        assert_eq!(parse_meminfo("MemTotal: 1 parsecs"), None);
        assert_eq!(parse_meminfo(""), None);
        if std::path::Path::new("/proc/meminfo").exists() {
            assert!(memory_bytes() > 0);
        }
    }

    #[test]
    fn heartbeats_are_spread_within_the_interval() {
        let h = Duration::from_secs(4);
        let beats: Vec<Duration> = (0..200).map(|_| spread(h)).collect();
        assert!(
            beats.iter().all(|b| *b >= h * 3 / 4 && *b <= h),
            "{beats:?}"
        );
        let (lo, hi) = (beats.iter().min().unwrap(), beats.iter().max().unwrap());
        assert!(*hi - *lo > h / 8, "not spread: {lo:?}..{hi:?}");
    }

    #[test]
    fn the_heartbeat_has_a_floor_and_a_default() {
        let answer = |ms| pb::RegisterResponse {
            worker_id: String::new(),
            heartbeat_interval_ms: ms,
            lease_ttl_ms: 0,
        };
        assert_eq!(heartbeat_of(&answer(0)), DEFAULT_HEARTBEAT);
        assert_eq!(heartbeat_of(&answer(1)), Duration::from_millis(20));
        assert_eq!(heartbeat_of(&answer(250)), Duration::from_millis(250));
    }

    fn rt() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    }

    #[test]
    fn bad_configurations_are_refused_before_anything_starts() {
        let dir = tempfile::tempdir().unwrap();
        let mut config = WorkerConfig::new("http://127.0.0.1:1", "t");
        config.cache_dir = dir.path().join("cache");
        config.slots = 0;
        let err = rt()
            .block_on(run(config.clone(), CancellationToken::new()))
            .unwrap_err();
        assert!(err.to_string().contains("slots"), "{err}");

        config.slots = 2;
        config.lease_ahead = 3;
        let err = rt()
            .block_on(run(config.clone(), CancellationToken::new()))
            .unwrap_err();
        assert!(err.to_string().contains("lease-ahead"), "{err}");

        config.slots = 1;
        config.lease_ahead = 1;
        config.coordinator = "ftp://coordinator".into();
        let err = rt()
            .block_on(run(config.clone(), CancellationToken::new()))
            .unwrap_err();
        assert!(matches!(err, RunnerError::Coordinator { .. }), "{err}");

        let file = dir.path().join("file");
        std::fs::write(&file, b"").unwrap();
        config.coordinator = "http://127.0.0.1:1".into();
        config.cache_dir = file.join("sub");
        let err = rt()
            .block_on(run(config.clone(), CancellationToken::new()))
            .unwrap_err();
        assert!(err.to_string().contains("cache directory"), "{err}");

        if !device::CUDA_BUILD {
            config.cache_dir = dir.path().join("cache");
            config.device = DeviceChoice::Cuda(0);
            let err = rt()
                .block_on(run(config, CancellationToken::new()))
                .unwrap_err();
            assert!(matches!(err, RunnerError::Device(_)), "{err}");
        }
    }

    #[test]
    fn an_unreachable_coordinator_is_waited_for_until_shutdown() {
        let dir = tempfile::tempdir().unwrap();
        let mut config = WorkerConfig::new("127.0.0.1:1", "t");
        config.cache_dir = dir.path().to_path_buf();
        let token = CancellationToken::new();
        let t = token.clone();
        let started = std::time::Instant::now();
        rt().block_on(async move {
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(400)).await;
                t.cancel();
            });
            run(config, token).await
        })
        .unwrap();
        assert!(started.elapsed() >= Duration::from_millis(400));
    }
}
