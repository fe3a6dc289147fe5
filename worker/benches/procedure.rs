//! The README demo's procedure end to end, and where its wall time goes.
//!
//!     cargo bench -p ridgeline-worker --bench procedure                          # the demo: examples/procedure.toml, 2 workers, heartbeat 200 ms
//!     cargo bench -p ridgeline-worker --bench procedure -- --heartbeat-ms 3000   # the coordinator's default heartbeat
//!     cargo bench -p ridgeline-worker --bench procedure -- --smoke               # CI: a tiny procedure, checks the figures are produced
//!
//! Like the demo, it serves a coordinator on a local port (its data in a
//! temporary directory), starts two one-slot workers in this process and
//! submits `examples/procedure.toml`; everything goes over gRPC. When the
//! job has ended it reads the job's tasks (when each became ready, was
//! leased and was done, and the engine time its worker measured) and splits
//! the workers' slot time (slots × wall) into:
//!
//! * **engine**: loading the dataset, building the model, training and
//!   evaluating (what the workers measured around the engine);
//! * **in-task overhead**: the rest of each task's lease: fetching and
//!   uploading checkpoints, reporting measurements, completing;
//! * **scheduling delay**: a slot was free and a task was ready, but the
//!   task was not yet leased (the heartbeat's polling, the coordinator's
//!   decisions and planning, which run as a stage's last task completes);
//! * **no work**: a slot was free and nothing was ready (the procedure's
//!   DAG is narrower than the slots there: e.g. one decision waits for the
//!   last seed of a stage).
//!
//! The share outside training is (in-task overhead + scheduling delay) /
//! (engine + in-task overhead + scheduling delay): of the slot time when
//! there was work to do, the part not spent computing. The goal is < 5 %.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use ridgeline_common::proto::v1 as pb;
use ridgeline_coordinator::client;
use ridgeline_coordinator::ServerConfig;
use ridgeline_worker::engine::device;
use ridgeline_worker::runner::{self, WorkerConfig};
use tokio_util::sync::CancellationToken;

const WORKERS: usize = 2;

struct Args {
    heartbeat: Duration,
    smoke: bool,
    /// The workers' `--lease-ahead` (1, their default).
    lease_ahead: usize,
}

const USAGE: &str = "usage: procedure [--smoke] [--heartbeat-ms MS] [--lease-ahead 0|1]";

fn parse_args() -> Result<Args> {
    let mut a = Args {
        heartbeat: Duration::from_millis(200),
        smoke: false,
        lease_ahead: 1,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        match flag.as_str() {
            "--bench" => {}
            "--smoke" => a.smoke = true,
            "--heartbeat-ms" => {
                let v = it
                    .next()
                    .ok_or_else(|| anyhow!("--heartbeat-ms needs a value"))?;
                let ms: u64 = v.parse().map_err(|_| {
                    anyhow!("--heartbeat-ms: `{v}` is not a number of milliseconds")
                })?;
                if ms == 0 {
                    bail!("--heartbeat-ms must be at least 1");
                }
                a.heartbeat = Duration::from_millis(ms);
            }
            "--lease-ahead" => {
                let v = it
                    .next()
                    .ok_or_else(|| anyhow!("--lease-ahead needs a value"))?;
                a.lease_ahead = v.parse().ok().filter(|&n| n <= 1).ok_or_else(|| {
                    anyhow!("--lease-ahead: `{v}` is not 0 or 1 (the workers have one slot)")
                })?;
            }
            "-h" | "--help" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            other => {
                bail!("unknown argument `{other}`\n{USAGE}")
            }
        }
    }
    Ok(a)
}

/// The demo's job file; in smoke mode cut down to seconds of training.
fn job_text(smoke: bool) -> Result<String> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../examples/procedure.toml");
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    if !smoke {
        return Ok(text);
    }
    let mut doc: toml::Table = text.parse().context("examples/procedure.toml")?;
    let set = |doc: &mut toml::Table, section: &str, key: &str, v: toml::Value| {
        let t = if section.is_empty() {
            Some(doc)
        } else {
            section
                .split('.')
                .try_fold(doc, |t, s| t.get_mut(s).and_then(|v| v.as_table_mut()))
        };
        if let Some(t) = t {
            t.insert(key.into(), v);
        }
    };
    use toml::Value::Integer as I;
    set(&mut doc, "", "replicates", I(2));
    set(&mut doc, "", "chunk_epochs", I(2));
    set(&mut doc, "data.source", "n_train", I(300));
    set(&mut doc, "data.source", "n_heldout", I(150));
    set(&mut doc, "model", "hidden", toml::Value::Array(vec![I(16)]));
    for (k, v) in [
        ("points", 9),
        ("points_per_task", 3),
        ("lr_epochs", 3),
        ("momentum_epochs", 3),
        ("confirm_epochs", 2),
        ("epochs", 4),
    ] {
        set(&mut doc, "procedure", k, I(v));
    }
    Ok(toml::to_string(&doc)?)
}

/// Where the slot time went (milliseconds).
#[derive(Default)]
struct Split {
    engine: i64,
    in_task: i64,
    scheduling: i64,
    no_work: i64,
}

fn split(job: &pb::JobStatus, slots: i64) -> Result<Split> {
    let wall = job.finished_unix_ms - job.created_unix_ms;
    let mut by_worker: HashMap<&str, Vec<&pb::TaskStatus>> = HashMap::new();
    for t in &job.tasks {
        if t.state == pb::TaskState::Done as i32 {
            by_worker.entry(t.worker_id.as_str()).or_default().push(t);
        }
    }
    let mut s = Split::default();
    for tasks in by_worker.values_mut() {
        // A task leased ahead starts after its lease, when it leaves the
        // worker's queue.
        let start = |t: &pb::TaskStatus| t.started_unix_ms.max(t.leased_unix_ms);
        tasks.sort_by_key(|t| start(t));
        // One slot per worker: it is free from the job's start, then from
        // each of its tasks' end. (A queued task starts while the one
        // before still uploads and completes: that overlap counts once.)
        let mut free_since = job.created_unix_ms;
        for t in tasks.iter() {
            if t.leased_unix_ms == 0 || t.done_unix_ms < start(t) {
                bail!("task {} has no lease/start/done times", t.task_id);
            }
            let busy = t.done_unix_ms - start(t).max(free_since);
            let engine = (t.engine_ms as i64).min(busy);
            s.engine += engine;
            s.in_task += (busy - engine).max(0);
            let ready = t.ready_unix_ms.max(free_since);
            s.scheduling += (start(t) - ready).max(0);
            free_since = free_since.max(t.done_unix_ms);
        }
    }
    s.no_work = (slots * wall - s.engine - s.in_task - s.scheduling).max(0);
    Ok(s)
}

fn pct(part: i64, whole: i64) -> f64 {
    if whole > 0 {
        part as f64 * 100.0 / whole as f64
    } else {
        f64::NAN
    }
}

async fn run(args: Args) -> Result<()> {
    let dir = tempfile::tempdir()?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}", listener.local_addr()?);
    let stop = CancellationToken::new();
    let mut config = ServerConfig::new(dir.path().join("data"));
    config.scheduler.heartbeat_interval = args.heartbeat;
    config.http = None;
    let server = tokio::spawn(ridgeline_coordinator::serve(listener, config, stop.clone()));
    let mut workers = vec![];
    for i in 0..WORKERS {
        let mut cfg = WorkerConfig::new(url.clone(), format!("bench-worker-{i}"));
        cfg.cache_dir = dir.path().join(format!("cache-{i}"));
        cfg.lease_ahead = args.lease_ahead;
        // The workers share this machine: each gets its share of the cores.
        cfg.threads = Some(device::threads_per_slot(WORKERS, device::cores()));
        workers.push(tokio::spawn(runner::run(cfg, stop.clone())));
    }
    let mut jobs = client::connect(&url, &client::Credentials::none()).await?;
    let started = Instant::now();
    let id = jobs
        .submit_job(pb::SubmitJobRequest {
            text: job_text(args.smoke)?,
            format: pb::JobFormat::Toml as i32,
        })
        .await?
        .into_inner()
        .job_id;
    let limit = Duration::from_secs(if args.smoke { 600 } else { 3600 });
    let job = loop {
        let job = jobs
            .get_job(pb::GetJobRequest { job_id: id.clone() })
            .await?
            .into_inner();
        if job.finished_unix_ms > 0 {
            break job;
        }
        if started.elapsed() > limit {
            bail!("the procedure did not end within {limit:?}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    if job.state != pb::JobState::Succeeded as i32 {
        bail!(
            "the procedure ended {:?}: {}",
            pb::JobState::try_from(job.state),
            job.error
        );
    }
    let results = jobs
        .get_results(pb::GetResultsRequest { job_id: id.clone() })
        .await?
        .into_inner();
    stop.cancel();
    for w in workers {
        w.await??;
    }
    server.await??;

    let slots = WORKERS as i64;
    let wall = job.finished_unix_ms - job.created_unix_ms;
    let s = split(&job, slots)?;
    let capacity = slots * wall;
    let with_work = s.engine + s.in_task + s.scheduling;
    let outside = pct(s.in_task + s.scheduling, with_work);
    println!(
        "procedure{}: {} tasks, {} epochs trained, {} decisions; {WORKERS} one-slot workers, heartbeat {} ms",
        if args.smoke { " (smoke)" } else { "" },
        job.tasks.len(),
        results.epochs_trained,
        results.decisions.len(),
        args.heartbeat.as_millis()
    );
    println!();
    println!("| figure | measured | |");
    println!("|---|---|---|");
    println!(
        "| wall time, submit → succeeded | {:.1} s | |",
        wall as f64 / 1e3
    );
    println!(
        "| slot time ({WORKERS} slots × wall) | {:.1} s | 100 % |",
        capacity as f64 / 1e3
    );
    for (name, ms) in [
        ("engine (data, model, training, evaluation)", s.engine),
        ("in-task overhead (transfers, reports, complete)", s.in_task),
        (
            "scheduling delay (ready, a slot free, not leased)",
            s.scheduling,
        ),
        ("no work ready (the DAG narrower than the slots)", s.no_work),
    ] {
        println!(
            "| {name} | {:.1} s | {:.1} % |",
            ms as f64 / 1e3,
            pct(ms, capacity)
        );
    }
    // A task taken back from a worker's queue for an idle one (or retried)
    // ends at attempt 2 or more.
    let again = job.tasks.iter().filter(|t| t.attempt > 1).count();
    println!("| tasks leased again (taken back from a queue, or retried) | {again} | |");
    let (kept, chunks) = continued_on_same_worker(&job.tasks);
    println!(
        "| chunks run on the worker that wrote the checkpoint they continue (no download) | {kept} of {chunks} | |"
    );
    println!(
        "| engine time the job reports (GetResults) | {:.1} s | |",
        results.engine_seconds
    );
    println!(
        "| **share outside training** (in-task + scheduling) / (engine + in-task + scheduling) | **{outside:.1} %** | goal < 5 %: {} |",
        if outside < 5.0 { "met" } else { "**not met**" }
    );

    // Per stage: where the engine time went and how long ready tasks waited.
    let mut stages: BTreeMap<&str, (usize, i64, i64, i64)> = BTreeMap::new();
    for t in &job.tasks {
        let e = stages.entry(t.stage.as_str()).or_default();
        e.0 += 1;
        e.1 += t.engine_ms as i64;
        if t.leased_unix_ms > 0 && t.ready_unix_ms > 0 {
            e.2 += (t.leased_unix_ms - t.ready_unix_ms).max(0);
        }
        if t.done_unix_ms > 0 {
            // From its start: a task leased ahead waited in the queue.
            let start = t.started_unix_ms.max(t.leased_unix_ms);
            e.3 += (t.done_unix_ms - start - t.engine_ms as i64).max(0);
        }
    }
    println!();
    println!("| stage | tasks | engine | mean ready → leased | mean in-task overhead |");
    println!("|---|---:|---:|---:|---:|");
    for (stage, (n, engine, waited, in_task)) in stages {
        println!(
            "| {stage} | {n} | {:.1} s | {:.0} ms | {:.1} ms |",
            engine as f64 / 1e3,
            waited as f64 / n as f64,
            in_task as f64 / n as f64
        );
    }
    Ok(())
}

/// Of the training chunks that continue a previous one (label
/// "{curve}, epochs {from}-{to}": same stage and curve, `from` the
/// previous `to`), how many ran on the worker that ran the previous one.
fn continued_on_same_worker(tasks: &[pb::TaskStatus]) -> (usize, usize) {
    let chunk = |t: &pb::TaskStatus| -> Option<(String, String, u32, u32)> {
        let (curve, epochs) = t.label.rsplit_once(", epochs ")?;
        let (from, to) = epochs.split_once('-')?;
        Some((
            t.stage.clone(),
            curve.to_string(),
            from.parse().ok()?,
            to.parse().ok()?,
        ))
    };
    let by_end: HashMap<(String, String, u32), &str> = tasks
        .iter()
        .filter_map(|t| chunk(t).map(|(s, c, _, to)| ((s, c, to), t.worker_id.as_str())))
        .collect();
    let (mut kept, mut continuing) = (0, 0);
    for t in tasks {
        let Some((stage, curve, from, _)) = chunk(t) else {
            continue;
        };
        if from == 0 {
            continue;
        }
        if let Some(prev) = by_end.get(&(stage, curve, from)) {
            continuing += 1;
            kept += usize::from(*prev == t.worker_id);
        }
    }
    (kept, continuing)
}

fn main() {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("{e:#}");
            std::process::exit(2);
        }
    };
    // Before any thread starts: each worker gets its share of the cores.
    device::configure_threads(device::threads_per_slot(WORKERS, device::cores()));
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("procedure: {e}");
            std::process::exit(1);
        }
    };
    if let Err(e) = runtime.block_on(run(args)) {
        eprintln!("procedure: {e:#}");
        std::process::exit(1);
    }
}
