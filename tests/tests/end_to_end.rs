//! A real coordinator and real workers (in-process, or as processes for the
//! kill tests) over real gRPC, running real jobs on built-in data. The
//! numbers that come back must equal what the engine computes when called
//! directly — also when a run's chunks ran on different workers, and when a
//! worker or the coordinator was killed half-way.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use candle_core::Device;
use ridgeline_common::job::{JobFormat, LineSearchSection};
use ridgeline_common::proto::v1 as pb;
use ridgeline_common::{JobSpec, ScheduleSpec};
use ridgeline_tests::{
    free_addr, spawn_coordinator, spawn_worker, spawn_worker_with, submit, wait_for_end,
    Coordinator,
};
use ridgeline_worker::engine::data;
use ridgeline_worker::engine::landscape::{self, EvalOptions};
use ridgeline_worker::engine::model::ModelRegistry;
use ridgeline_worker::engine::train::{self, Collect, Trainer};
use ridgeline_worker::runner::{self, WorkerConfig};
use tokio_util::sync::CancellationToken;

const LIMIT: Duration = Duration::from_secs(300);

/// Starts an in-process worker (one slot, one task leased ahead: the
/// defaults); it stops when the token is cancelled.
fn start_worker(url: &str, name: &str, cache: &std::path::Path, stop: &CancellationToken) {
    start_worker_ahead(url, name, cache, stop, 1);
}

/// A worker that holds `lease_ahead` tasks queued beyond its one slot.
fn start_worker_ahead(
    url: &str,
    name: &str,
    cache: &std::path::Path,
    stop: &CancellationToken,
    lease_ahead: usize,
) {
    let mut cfg = WorkerConfig::new(url, name);
    cfg.lease_ahead = lease_ahead;
    cfg.cache_dir = cache.join(name);
    cfg.shutdown_grace = Duration::from_millis(200);
    let stop = stop.clone();
    tokio::spawn(async move {
        if let Err(e) = runner::run(cfg, stop).await {
            panic!("worker failed: {e}");
        }
    });
}

/// The engine's own reports for every run of a training job, by curve.
fn engine_curves(job_text: &str) -> BTreeMap<String, Vec<ridgeline_common::EpochReport>> {
    let job = JobSpec::parse(job_text, JobFormat::Toml).unwrap();
    let mut out = BTreeMap::new();
    for run in job.runs() {
        let data = Arc::new(data::load(&run.spec.data, &Device::Cpu).unwrap());
        let mut t = Trainer::new(&run.spec, data, &Device::Cpu, &ModelRegistry::default()).unwrap();
        let mut c = Collect::default();
        t.run(run.spec.epochs, &mut c).unwrap();
        out.insert(run.curve, c.0);
    }
    out
}

/// Asserts that the coordinator's curves are the engine's, number for number.
fn assert_same_curves(
    results: &pb::JobResults,
    engine: &BTreeMap<String, Vec<ridgeline_common::EpochReport>>,
) {
    assert_eq!(results.curves.len(), engine.len());
    for c in &results.curves {
        let want = &engine[&c.curve];
        assert_eq!(c.points.len(), want.len(), "{}: every epoch once", c.curve);
        for (p, r) in c.points.iter().zip(want) {
            assert_eq!(p.x, r.progress);
            assert_eq!(p.lr, r.lr);
            let held = p.heldout.unwrap();
            let train = p.train.unwrap();
            assert_eq!(
                (held.loss, held.metric),
                (r.heldout.loss, r.heldout.metric),
                "{} epoch {}",
                c.curve,
                r.epoch
            );
            assert_eq!(
                (train.loss, train.metric),
                (r.train.loss, r.train.metric),
                "{} epoch {}",
                c.curve,
                r.epoch
            );
        }
        let end = c.end.clone().expect("every run has an end");
        assert_eq!(end.kind, pb::run_end::Kind::Completed as i32);
    }
}

fn tabular_ramp(
    replicates: usize,
    epochs: usize,
    chunk: usize,
    n_train: usize,
    report_every: Option<usize>,
) -> String {
    format!(
        r#"kind = "lr_ramp"
replicates = {replicates}
chunk_epochs = {chunk}
batch_size = 32
{every}
[data.source]
kind = "tabular"
n_train = {n_train}
n_heldout = 200
seed = 5
[model]
kind = "mlp"
hidden = [32]
[lr_ramp]
start = 0.001
end = 1.0
epochs = {epochs}
"#,
        every = report_every.map_or(String::new(), |k| format!("report_every_batches = {k}")),
    )
}

const LINE_SEARCH: &str = r#"kind = "line_search"
replicates = 1
seed = 3
[data.source]
kind = "tabular"
n_train = 600
n_heldout = 200
seed = 5
[model]
kind = "mlp"
hidden = [32]
[line_search]
points = 8
from = -0.5
to = 1.5
points_per_task = 1
direction = "trained"
trained_subset = 300
trained_epochs = 2
trained_lr = 0.05
"#;

/// A small CNN, so a chunk takes long enough (seconds) for a kill or a
/// signal to land inside it.
const SLOW_CNN_RAMP: &str = r#"kind = "lr_ramp"
replicates = 1
chunk_epochs = 3
batch_size = 32
report_every_batches = 10
[data.source]
kind = "glyphs"
n_train = 1000
n_heldout = 200
[model]
kind = "cnn"
channels = [4, 8]
dense = []
[lr_ramp]
start = 0.001
end = 0.5
epochs = 6
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_workers_share_a_line_search_and_an_lr_ramp_and_match_the_engine() {
    let dir = tempfile::tempdir().unwrap();
    let c = Coordinator::start(&dir.path().join("coord"), Duration::from_secs(20)).await;
    let mut client = c.jobs().await;
    let ramp_text = tabular_ramp(3, 4, 2, 600, None);
    let ls_job = submit(&mut client, LINE_SEARCH).await.unwrap();
    let ramp_job = submit(&mut client, &ramp_text).await.unwrap();
    let stop = CancellationToken::new();
    start_worker(&c.url(), "a", dir.path(), &stop);
    start_worker(&c.url(), "b", dir.path(), &stop);

    let ls = wait_for_end(&mut client, &ls_job, LIMIT).await;
    let ramp = wait_for_end(&mut client, &ramp_job, LIMIT).await;
    assert_eq!(ls.state, pb::JobState::Succeeded as i32, "{ls:#?}");
    assert_eq!(ramp.state, pb::JobState::Succeeded as i32, "{ramp:#?}");
    let workers: BTreeSet<&str> = ls.tasks.iter().map(|t| t.worker_id.as_str()).collect();
    assert_eq!(
        workers.len(),
        2,
        "the points were spread over both workers: {ls:#?}"
    );
    let listed = client
        .list_workers(pb::ListWorkersRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(listed.workers.len(), 2);

    // The LR ramp: 3 seeds, each in 2 chunks, equal to the engine.
    let results = client
        .get_results(pb::GetResultsRequest {
            job_id: ramp_job.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_same_curves(&results, &engine_curves(&ramp_text));
    let agg = &results.aggregates[0];
    assert_eq!(agg.group, "all");
    assert_eq!(agg.n, vec![3; 5], "epochs 0-4, each over 3 seeds");
    assert_eq!(ramp.epochs_trained, 3 * 4);
    // Each task's times: ready ≤ leased ≤ done (a later chunk is ready when
    // the one before it is done), its engine time within its lease, and the
    // job's engine time their sum.
    let mut engine_ms = 0;
    for t in &ramp.tasks {
        assert!(
            0 < t.ready_unix_ms
                && t.ready_unix_ms <= t.leased_unix_ms
                && t.leased_unix_ms <= t.done_unix_ms,
            "{t:#?}"
        );
        // (In whole milliseconds: a chunk this small may take less than one.)
        assert!(
            t.engine_ms as i64 <= t.done_unix_ms - t.leased_unix_ms,
            "{t:#?}"
        );
        engine_ms += t.engine_ms;
    }
    assert!(engine_ms > 0, "{ramp:#?}");
    // "seed=1, epochs 2-4" follows "seed=1, epochs 0-2".
    let chunk = |t: &pb::TaskStatus| -> (String, String, String) {
        let (run, epochs) = t.label.rsplit_once(", epochs ").expect("a chunk label");
        let (from, to) = epochs.split_once('-').expect("from-to");
        (run.to_string(), from.to_string(), to.to_string())
    };
    let mut followed = 0;
    for t in &ramp.tasks {
        let (run, from, _) = chunk(t);
        if let Some(before) = ramp.tasks.iter().find(|p| {
            let (r, _, to) = chunk(p);
            r == run && to == from
        }) {
            assert!(t.ready_unix_ms >= before.done_unix_ms, "{before:#?} {t:#?}");
            followed += 1;
        }
    }
    assert_eq!(followed, 3, "each seed's second chunk");
    assert!((results.engine_seconds - engine_ms as f64 / 1e3).abs() < 1e-6);

    // The line search: every point once, equal to the engine's.
    let results = client
        .get_results(pb::GetResultsRequest {
            job_id: ls_job.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(results.curves.len(), 1);
    let curve = &results.curves[0];
    assert_eq!(curve.points.len(), 8);
    let job = JobSpec::parse(LINE_SEARCH, JobFormat::Toml).unwrap();
    let section: &LineSearchSection = job.line_search.as_ref().unwrap();
    let mut run = job.base_run(
        ScheduleSpec::constant(section.trained_lr, None),
        section.trained_epochs,
        job.seed,
    );
    run.schedule = ScheduleSpec::constant(section.trained_lr, None);
    let data = Arc::new(data::load(&run.data, &Device::Cpu).unwrap());
    let reg = ModelRegistry::default();
    let (theta0, d, _) =
        train::brief_training_direction(&run, &data, &Device::Cpu, &reg, 300, 2).unwrap();
    let t = Trainer::new(&run, data.clone(), &Device::Cpu, &reg).unwrap();
    let eval = EvalOptions {
        train_eval_size: run.train_eval_size,
        eval_batch: train::EVAL_BATCH,
    };
    let want = landscape::line_search(
        t.network(),
        &theta0,
        &d,
        &section.alphas(),
        &data,
        eval,
        |_| true,
    )
    .unwrap();
    for (p, w) in curve.points.iter().zip(&want) {
        assert_eq!(p.x, w.alpha);
        let held = p.heldout.unwrap();
        assert_eq!(
            (held.loss, held.metric),
            (w.heldout.loss, w.heldout.metric),
            "a = {}",
            w.alpha
        );
    }
    stop.cancel();
    c.stop().await;
}

/// Polls the job until `pred` holds for its status.
async fn wait_until(
    client: &mut ridgeline_common::proto::v1::job_service_client::JobServiceClient<
        tonic::transport::Channel,
    >,
    job: &str,
    what: &str,
    pred: impl Fn(&pb::JobStatus) -> bool,
) -> pb::JobStatus {
    let start = tokio::time::Instant::now();
    loop {
        if let Ok(s) = client
            .get_job(pb::GetJobRequest { job_id: job.into() })
            .await
        {
            let s = s.into_inner();
            if pred(&s) {
                return s;
            }
        }
        assert!(start.elapsed() < LIMIT, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Polls the job's results until its first curve satisfies `pred`.
async fn wait_for_points(
    client: &mut ridgeline_common::proto::v1::job_service_client::JobServiceClient<
        tonic::transport::Channel,
    >,
    job: &str,
    what: &str,
    pred: impl Fn(&pb::Curve) -> bool,
) {
    let start = tokio::time::Instant::now();
    loop {
        let r = client
            .get_results(pb::GetResultsRequest { job_id: job.into() })
            .await
            .unwrap()
            .into_inner();
        if r.curves.first().is_some_and(&pred) {
            return;
        }
        assert!(start.elapsed() < LIMIT, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn state_of(s: &pb::JobStatus, i: usize) -> pb::TaskState {
    pb::TaskState::try_from(s.tasks[i].state).unwrap_or(pb::TaskState::Unspecified)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_worker_s_chunk_moves_to_another_worker_with_identical_numbers() {
    let dir = tempfile::tempdir().unwrap();
    let c = Coordinator::start(&dir.path().join("coord"), Duration::from_secs(3)).await;
    let mut client = c.jobs().await;
    // One run in two chunks of three epochs; reports every 20 batches so we
    // can kill the worker in the middle of its second chunk.
    let text = SLOW_CNN_RAMP;
    let job = submit(&mut client, text).await.unwrap();
    let mut a = spawn_worker(&c.url(), "a", 1, &dir.path().join("a"));
    // Chunk 0 done, chunk 1 leased and reporting: kill -9.
    let s = wait_until(&mut client, &job, "chunk 1 to run", |s| {
        state_of(s, 0) == pb::TaskState::Done && state_of(s, 1) == pb::TaskState::Leased
    })
    .await;
    let a_id = s.tasks[0].worker_id.clone();
    wait_for_points(&mut client, &job, "chunk 1 to report", |c| {
        c.points.iter().any(|p| p.x > 3.0)
    })
    .await;
    a.kill();
    let s = client
        .get_job(pb::GetJobRequest {
            job_id: job.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        state_of(&s, 1),
        pb::TaskState::Leased,
        "killed in the middle of chunk 1"
    );
    let _b = spawn_worker(&c.url(), "b", 1, &dir.path().join("b"));
    let s = wait_for_end(&mut client, &job, LIMIT).await;
    assert_eq!(s.state, pb::JobState::Succeeded as i32, "{s:#?}");
    assert_eq!(s.tasks[0].worker_id, a_id);
    assert_ne!(
        s.tasks[1].worker_id, a_id,
        "chunk 1 finished on the other worker"
    );
    assert_eq!(s.tasks[1].attempt, 2, "after a's lease expired");
    let results = client
        .get_results(pb::GetResultsRequest { job_id: job })
        .await
        .unwrap()
        .into_inner();
    // Measured every 20 batches and at epoch ends: compare the epoch ends
    // with the engine (its run reports the same points).
    let engine = engine_curves(text);
    assert_same_curves(&results, &engine);
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_coordinator_restarts_on_its_data_dir_and_the_job_completes() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("coord");
    let addr = free_addr();
    let url = format!("http://{addr}");
    let mut coord = spawn_coordinator(addr, &data_dir, Duration::from_secs(5)).await;
    let mut client =
        ridgeline_common::proto::v1::job_service_client::JobServiceClient::connect(url.clone())
            .await
            .unwrap();
    // Enough work (16 chunks of 20,000 examples) that the job is still
    // running when two chunks are done, however fast the engine.
    let text = tabular_ramp(2, 8, 1, 20_000, None);
    let job = submit(&mut client, &text).await.unwrap();
    let _a = spawn_worker(&url, "a", 1, &dir.path().join("a"));
    let _b = spawn_worker(&url, "b", 1, &dir.path().join("b"));
    let before = wait_until(&mut client, &job, "some chunks done", |s| {
        s.tasks
            .iter()
            .filter(|t| t.state == pb::TaskState::Done as i32)
            .count()
            >= 2
    })
    .await;
    assert_eq!(before.state, pb::JobState::Running as i32, "killed mid-job");
    coord.kill();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let _coord = spawn_coordinator(addr, &data_dir, Duration::from_secs(5)).await;
    let mut client =
        ridgeline_common::proto::v1::job_service_client::JobServiceClient::connect(url.clone())
            .await
            .unwrap();
    let after = wait_for_end(&mut client, &job, LIMIT).await;
    assert_eq!(after.state, pb::JobState::Succeeded as i32, "{after:#?}");
    for (b, a) in before.tasks.iter().zip(&after.tasks) {
        if b.state == pb::TaskState::Done as i32 {
            assert_eq!(a.state, pb::TaskState::Done as i32);
            assert_eq!(a.attempt, b.attempt, "finished work was not redone");
        }
    }
    let results = client
        .get_results(pb::GetResultsRequest { job_id: job })
        .await
        .unwrap()
        .into_inner();
    assert_same_curves(&results, &engine_curves(&text));
}

/// A worker shutting down hands back the task it holds queued (never
/// started) at once, with the running one, rather than leaving it leased
/// until its lease expires.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_shutting_down_hands_back_its_queued_task() {
    let dir = tempfile::tempdir().unwrap();
    // A long TTL: tasks must come back through the hand-back.
    let c = Coordinator::start(&dir.path().join("coord"), Duration::from_secs(60)).await;
    let mut client = c.jobs().await;
    // Chunks long enough (4,000 examples × 3 epochs) that the running one
    // cannot end within the shutdown grace on a fast machine.
    let text = SLOW_CNN_RAMP
        .replace("replicates = 1", "replicates = 3")
        .replace("n_train = 1000", "n_train = 4000");
    let job = submit(&mut client, &text).await.unwrap();
    let stop = CancellationToken::new();
    let mut cfg = WorkerConfig::new(c.url(), "ahead");
    cfg.lease_ahead = 1;
    cfg.cache_dir = dir.path().join("ahead");
    cfg.shutdown_grace = Duration::from_millis(200);
    let worker = tokio::spawn(runner::run(cfg, stop.clone()));
    wait_for_points(&mut client, &job, "the first chunk to report", |c| {
        !c.points.is_empty()
    })
    .await;
    let get = |client: &mut ridgeline_common::proto::v1::job_service_client::JobServiceClient<
        tonic::transport::Channel,
    >| {
        let job = job.clone();
        let mut client = client.clone();
        async move {
            client
                .get_job(pb::GetJobRequest { job_id: job })
                .await
                .unwrap()
                .into_inner()
        }
    };
    let s = get(&mut client).await;
    let leased: Vec<String> = s
        .tasks
        .iter()
        .filter(|t| t.state == pb::TaskState::Leased as i32)
        .map(|t| t.task_id.clone())
        .collect();
    assert_eq!(leased.len(), 2, "one running, one queued: {s:#?}");
    stop.cancel();
    tokio::time::timeout(Duration::from_secs(30), worker)
        .await
        .expect("the worker stops")
        .unwrap()
        .unwrap();
    let s = get(&mut client).await;
    for id in &leased {
        let t = s.tasks.iter().find(|t| &t.task_id == id).unwrap();
        assert_eq!(
            t.state,
            pb::TaskState::Pending as i32,
            "handed back: {t:#?}"
        );
        assert_eq!(t.attempt, 2, "{t:#?}");
        assert!(t.error.contains("shutting down"), "{t:#?}");
    }
    assert_ne!(
        s.state,
        pb::JobState::Failed as i32,
        "a hand-back is no failure"
    );
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_hands_the_running_task_back_at_once_and_the_worker_exits() {
    let dir = tempfile::tempdir().unwrap();
    // A long TTL: the task must come back through the worker's hand-back,
    // not through lease expiry.
    let c = Coordinator::start(&dir.path().join("coord"), Duration::from_secs(60)).await;
    let mut client = c.jobs().await;
    let job = submit(&mut client, SLOW_CNN_RAMP).await.unwrap();
    let mut a = spawn_worker_with(
        &c.url(),
        "a",
        1,
        &dir.path().join("a"),
        &["--shutdown-grace", "0.2"],
    );
    wait_for_points(&mut client, &job, "the task to report", |c| {
        c.points.len() >= 2
    })
    .await;
    a.signal(15);
    let exited = tokio::task::spawn_blocking(move || {
        let t = std::time::Instant::now();
        loop {
            if let Ok(Some(status)) = a.child.try_wait() {
                return Some(status);
            }
            if t.elapsed() > Duration::from_secs(30) {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    })
    .await
    .unwrap();
    let status = exited.expect("the worker exits after SIGTERM");
    assert!(status.success(), "{status:?}");
    let s = client
        .get_job(pb::GetJobRequest {
            job_id: job.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        state_of(&s, 0),
        pb::TaskState::Pending,
        "handed back, not left leased: {s:#?}"
    );
    assert_eq!(s.tasks[0].attempt, 2);
    assert!(
        s.tasks[0].error.contains("shutting down"),
        "{}",
        s.tasks[0].error
    );
    client
        .cancel_job(pb::CancelJobRequest { job_id: job })
        .await
        .unwrap();
    c.stop().await;
}

/// An NPY v1.0 file of little-endian values with descr `descr` (`<f4`, `<i8`).
fn npy(descr: &str, shape: &[usize], data: &[u8]) -> Vec<u8> {
    let shape = match shape {
        [n] => format!("({n},)"),
        _ => format!(
            "({})",
            shape
                .iter()
                .map(usize::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        ),
    };
    let mut header = format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': {shape}, }}");
    while (10 + header.len() + 1) % 64 != 0 {
        header.push(' ');
    }
    header.push('\n');
    let mut out = b"\x93NUMPY\x01\x00".to_vec();
    out.extend_from_slice(&(header.len() as u16).to_le_bytes());
    out.extend_from_slice(header.as_bytes());
    out.extend_from_slice(data);
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uploaded_data_files_are_fetched_by_hash_and_give_the_same_numbers() {
    let dir = tempfile::tempdir().unwrap();
    // 400 examples of 4 features, 3 classes from a fixed rule.
    let (n, d) = (400usize, 4usize);
    let mut x = Vec::with_capacity(n * d * 4);
    let mut y = Vec::with_capacity(n * 8);
    for i in 0..n {
        let f: Vec<f32> = (0..d)
            .map(|j| (((i * 7 + j * 13) % 29) as f32 / 29.0) - 0.5)
            .collect();
        for v in &f {
            x.extend_from_slice(&v.to_le_bytes());
        }
        let class = if f[0] + f[1] > 0.1 {
            0i64
        } else if f[2] > 0.0 {
            1
        } else {
            2
        };
        y.extend_from_slice(&class.to_le_bytes());
    }
    let (xb, yb) = (npy("<f4", &[n, d], &x), npy("<i8", &[n], &y));
    let (xp, yp) = (dir.path().join("x.npy"), dir.path().join("y.npy"));
    std::fs::write(&xp, &xb).unwrap();
    std::fs::write(&yp, &yb).unwrap();

    let c = Coordinator::start(&dir.path().join("coord"), Duration::from_secs(20)).await;
    let hx = ridgeline_coordinator::client::upload(
        &c.url(),
        &ridgeline_coordinator::client::Credentials::none(),
        xb,
    )
    .await
    .unwrap();
    let hy = ridgeline_coordinator::client::upload(
        &c.url(),
        &ridgeline_coordinator::client::Credentials::none(),
        yb,
    )
    .await
    .unwrap();
    let job = |x: &str, y: &str| {
        format!(
            "kind = \"train\"\nreplicates = 2\nbatch_size = 32\n[data.source]\nkind = \"npy\"\nx = \"{x}\"\ny = \"{y}\"\n\
             [model]\nkind = \"mlp\"\nhidden = [16]\n[train]\nepochs = 3\nschedule = {{ lr = {{ kind = \"constant\", lr = 0.1 }} }}\n"
        )
    };
    let mut client = c.jobs().await;
    let missing = "0".repeat(64);
    let err = submit(
        &mut client,
        &job(&format!("artifact:{missing}"), &format!("artifact:{hy}")),
    )
    .await
    .unwrap_err();
    assert!(
        err.message().contains("never uploaded"),
        "{}",
        err.message()
    );
    let id = submit(
        &mut client,
        &job(&format!("artifact:{hx}"), &format!("artifact:{hy}")),
    )
    .await
    .unwrap();
    let stop = CancellationToken::new();
    start_worker(&c.url(), "a", dir.path(), &stop);
    let s = wait_for_end(&mut client, &id, LIMIT).await;
    assert_eq!(s.state, pb::JobState::Succeeded as i32, "{s:#?}");
    assert!(
        dir.path()
            .join("a")
            .join(format!("{hx}.safetensors"))
            .exists(),
        "cached by hash"
    );
    let results = client
        .get_results(pb::GetResultsRequest { job_id: id })
        .await
        .unwrap()
        .into_inner();
    // The same job reading the local files directly.
    assert_same_curves(
        &results,
        &engine_curves(&job(xp.to_str().unwrap(), yp.to_str().unwrap())),
    );
    stop.cancel();
    c.stop().await;
}

/// A worker cut off (SIGSTOP) past its lease TTL: its task is leased again
/// and finished elsewhere; once resumed (SIGCONT), what it still sends for
/// the old attempt is refused and never counted (the curves equal the
/// engine's); it recovers and takes new work.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_worker_past_its_lease_is_fenced_off_then_takes_new_work() {
    let dir = tempfile::tempdir().unwrap();
    let c = Coordinator::start(&dir.path().join("coord"), Duration::from_secs(3)).await;
    let mut client = c.jobs().await;
    let text = SLOW_CNN_RAMP;
    let job = submit(&mut client, text).await.unwrap();
    let a = spawn_worker(&c.url(), "a", 1, &dir.path().join("a"));
    let s = wait_until(&mut client, &job, "chunk 1 to run", |s| {
        state_of(s, 0) == pb::TaskState::Done && state_of(s, 1) == pb::TaskState::Leased
    })
    .await;
    let a_id = s.tasks[1].worker_id.clone();
    wait_for_points(&mut client, &job, "chunk 1 to report", |c| {
        c.points.iter().any(|p| p.x > 3.0)
    })
    .await;
    a.signal(19); // SIGSTOP
    let mut b = spawn_worker(&c.url(), "b", 1, &dir.path().join("b"));
    // a's lease runs out; b takes chunk 1 as attempt 2.
    wait_until(&mut client, &job, "chunk 1 re-leased to b", |s| {
        s.tasks[1].attempt == 2 && !s.tasks[1].worker_id.is_empty() && s.tasks[1].worker_id != a_id
    })
    .await;
    a.signal(18); // SIGCONT: a carries on with its stale attempt for a moment.
    let s = wait_for_end(&mut client, &job, LIMIT).await;
    assert_eq!(s.state, pb::JobState::Succeeded as i32, "{s:#?}");
    assert_ne!(
        s.tasks[1].worker_id, a_id,
        "the re-leased attempt finished it"
    );
    assert_eq!(s.tasks[1].attempt, 2);
    let results = client
        .get_results(pb::GetResultsRequest { job_id: job })
        .await
        .unwrap()
        .into_inner();
    assert_same_curves(&results, &engine_curves(text));

    // b leaves; only a is left to run a new job.
    b.kill();
    let job2 = submit(&mut client, &ridgeline_tests::jobs::lr_ramp(1, 2, 2))
        .await
        .unwrap();
    let s = wait_for_end(&mut client, &job2, LIMIT).await;
    assert_eq!(s.state, pb::JobState::Succeeded as i32, "{s:#?}");
    assert!(
        s.tasks.iter().all(|t| t.worker_id == a_id),
        "the resumed worker took the new job: {s:#?}"
    );
    c.stop().await;
}

/// A line search slow enough (a CNN, all points in one task) for a kill
/// to land in the middle of its block.
const SLOW_CNN_LINE_SEARCH: &str = r#"kind = "line_search"
replicates = 1
seed = 4
[data.source]
kind = "glyphs"
n_train = 1000
n_heldout = 300
[model]
kind = "cnn"
channels = [4, 8]
dense = []
[line_search]
points = 24
points_per_task = 24
"#;

/// Two slow line-search tasks. Worker a, alone, holds the first running and
/// the second queued; worker b then starts, finds nothing ready and takes
/// the queued one back. When a's slot frees, its claim (carried by the
/// first task's Complete) is refused and it drops the task unstarted: each
/// task runs once, the second on b at attempt 2, and nothing waits for a
/// lease to expire.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_worker_takes_back_a_task_queued_on_a_busy_one() {
    let dir = tempfile::tempdir().unwrap();
    let http = ridgeline_tests::free_addr();
    let mut config = ridgeline_coordinator::ServerConfig::new(dir.path().join("coord"));
    // Heartbeats far apart, so that a hears of the take-back only when it
    // asks to start the task (with frequent ones, the heartbeat's stop
    // list may tell it first, and it drops the task without asking).
    config.scheduler = ridgeline_coordinator::scheduler::SchedulerConfig {
        lease_ttl: Duration::from_secs(120),
        heartbeat_interval: Duration::from_secs(30),
        ..Default::default()
    };
    config.http = Some(http);
    let c = Coordinator::start_with("127.0.0.1:0".parse().unwrap(), config).await;
    let mut client = c.jobs().await;
    let two_tasks = SLOW_CNN_LINE_SEARCH.replace("points_per_task = 24", "points_per_task = 12");
    let job = submit(&mut client, &two_tasks).await.unwrap();
    let stop = CancellationToken::new();
    start_worker_ahead(&c.url(), "a", dir.path(), &stop, 1);
    // a holds both: the first running, the second queued behind it.
    let start = tokio::time::Instant::now();
    loop {
        let s = client
            .get_job(pb::GetJobRequest {
                job_id: job.clone(),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(s.tasks.len(), 2, "{s:#?}");
        if (0..2).all(|i| state_of(&s, i) == pb::TaskState::Leased) {
            break;
        }
        assert!(
            state_of(&s, 0) != pb::TaskState::Done,
            "the first task ended before a held the second: {s:#?}"
        );
        assert!(start.elapsed() < LIMIT, "timed out: {s:#?}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    start_worker_ahead(&c.url(), "b", dir.path(), &stop, 1);
    let s = wait_for_end(&mut client, &job, LIMIT).await;
    stop.cancel();
    assert_eq!(s.state, pb::JobState::Succeeded as i32, "{s:#?}");
    let (first, second) = (&s.tasks[0], &s.tasks[1]);
    assert_eq!(first.attempt, 1, "{s:#?}");
    assert_eq!(second.attempt, 2, "taken back once: {s:#?}");
    assert_ne!(first.worker_id, second.worker_id, "{s:#?}");
    // a claimed it as its first task's engine work ended, and was refused
    // once (it did not run a stale copy). The claim rides with that task's
    // Complete when the Complete follows within `claims::RIDE` (100 ms);
    // on a loaded machine (the whole suite at once on two cores) it can
    // come later, and the claim is asked with StartQueued instead.
    let metrics = ridgeline_tests::http_get(http, "/metrics", &[]).await.body;
    let refused = |via: &str| {
        metrics.contains(&format!(
            "ridgeline_queued_starts_total{{answer=\"refused\",via=\"{via}\"}} 1"
        ))
    };
    assert!(
        refused("complete") != refused("start_queued"),
        "refused once, by one of the two calls: {metrics}"
    );
    assert!(!metrics.contains("answer=\"started\""), "{metrics}");
    assert!(
        metrics.contains("ridgeline_leases_expired_total 0"),
        "{metrics}"
    );
    c.stop().await;
}

/// kill -9 of a worker in the middle of a line search: the block is leased
/// again, every point ends up measured once, and the curve equals an
/// undisturbed run of the same job.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_worker_s_line_search_is_redone_with_identical_points() {
    let dir = tempfile::tempdir().unwrap();
    let c = Coordinator::start(&dir.path().join("coord"), Duration::from_secs(3)).await;
    let mut client = c.jobs().await;
    let job = submit(&mut client, SLOW_CNN_LINE_SEARCH).await.unwrap();
    let mut a = spawn_worker(&c.url(), "a", 1, &dir.path().join("a"));
    wait_for_points(&mut client, &job, "some points", |c| !c.points.is_empty()).await;
    a.kill();
    let s = client
        .get_job(pb::GetJobRequest {
            job_id: job.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(state_of(&s, 0), pb::TaskState::Leased, "killed mid-block");
    let _b = spawn_worker(&c.url(), "b", 1, &dir.path().join("b"));
    let s = wait_for_end(&mut client, &job, LIMIT).await;
    assert_eq!(s.state, pb::JobState::Succeeded as i32, "{s:#?}");
    assert_eq!(s.tasks[0].attempt, 2, "redone after a's lease expired");
    // The same job again, undisturbed.
    let again = submit(&mut client, SLOW_CNN_LINE_SEARCH).await.unwrap();
    let s = wait_for_end(&mut client, &again, LIMIT).await;
    assert_eq!(s.state, pb::JobState::Succeeded as i32);
    let curve = |id: String| {
        let mut client = client.clone();
        async move {
            client
                .get_results(pb::GetResultsRequest { job_id: id })
                .await
                .unwrap()
                .into_inner()
                .curves
                .remove(0)
        }
    };
    let killed = curve(job).await;
    let calm = curve(again).await;
    assert_eq!(killed.points.len(), 24, "every point once");
    assert_eq!(
        killed.points, calm.points,
        "identical to an undisturbed run"
    );
    c.stop().await;
}

/// A worker's slot goes from one task to the next without a Lease in
/// between: its Complete asks for the next task, and the coordinator leases
/// it in the same transaction that stores the completion (so, on a one-slot
/// worker, each task after the first is leased at the very millisecond its
/// predecessor was stored done).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_completion_brings_the_worker_its_next_task() {
    let dir = tempfile::tempdir().unwrap();
    let c = Coordinator::start(&dir.path().join("coord"), Duration::from_secs(20)).await;
    let mut client = c.jobs().await;
    let job = submit(&mut client, LINE_SEARCH).await.unwrap();
    let stop = CancellationToken::new();
    // Without a lease ahead (with one, the next task is already held).
    start_worker_ahead(&c.url(), "solo", dir.path(), &stop, 0);
    let s = wait_for_end(&mut client, &job, LIMIT).await;
    stop.cancel();
    assert_eq!(s.state, pb::JobState::Succeeded as i32, "{s:#?}");
    let mut tasks = s.tasks.clone();
    assert_eq!(tasks.len(), 8);
    tasks.sort_by_key(|t| t.leased_unix_ms);
    for pair in tasks.windows(2) {
        let (before, t) = (&pair[0], &pair[1]);
        assert_eq!(t.attempt, 1, "{t:#?}");
        assert_eq!(
            t.leased_unix_ms, before.done_unix_ms,
            "leased by its predecessor's Complete: {before:#?} {t:#?}"
        );
        assert_eq!(t.started_unix_ms, t.leased_unix_ms, "not queued: {t:#?}");
    }
    c.stop().await;
}

/// With `lease_ahead`, a worker holds its next task while one runs and
/// starts it the moment the running one's engine work is over: before that
/// one's upload and Complete, so its start precedes its predecessor's done
/// time, and the coordinator records when it left the queue.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_leased_ahead_starts_as_soon_as_the_slot_frees() {
    let dir = tempfile::tempdir().unwrap();
    let c = Coordinator::start(&dir.path().join("coord"), Duration::from_secs(20)).await;
    let mut client = c.jobs().await;
    let job = submit(&mut client, LINE_SEARCH).await.unwrap();
    let stop = CancellationToken::new();
    start_worker_ahead(&c.url(), "ahead", dir.path(), &stop, 1);
    let s = wait_for_end(&mut client, &job, LIMIT).await;
    stop.cancel();
    assert_eq!(s.state, pb::JobState::Succeeded as i32, "{s:#?}");
    let mut tasks = s.tasks.clone();
    assert_eq!(tasks.len(), 8);
    tasks.sort_by_key(|t| t.started_unix_ms);
    for t in &tasks {
        assert_eq!(t.attempt, 1, "{t:#?}");
        assert!(
            t.leased_unix_ms <= t.started_unix_ms && t.started_unix_ms <= t.done_unix_ms,
            "leased, then started, then done: {t:#?}"
        );
    }
    // Tasks held queued: leased while their predecessor ran, and started
    // before that one was stored done. (Whether a queue place is granted
    // depends on the coordinator's counts of ready tasks and idle slots,
    // refreshed every 100 ms, so not necessarily for the last few.)
    let mut ahead = 0;
    for pair in tasks.windows(2) {
        let (before, t) = (&pair[0], &pair[1]);
        if t.leased_unix_ms < before.done_unix_ms {
            ahead += 1;
            assert!(
                t.started_unix_ms <= before.done_unix_ms,
                "started when the predecessor's engine work ended: {before:#?} {t:#?}"
            );
        }
    }
    assert!(ahead >= 1, "some task was leased ahead: {tasks:#?}");
    assert!(
        tasks[1..]
            .iter()
            .any(|t| t.started_unix_ms > t.leased_unix_ms),
        "some task waited in the worker's queue: {tasks:#?}"
    );
    c.stop().await;
}

/// A custom model that notes, on every forward pass, the thread it runs on
/// and the size of the rayon pool its ops would use.
struct PoolProbe {
    w: candle_core::Tensor,
    b: candle_core::Tensor,
    seen: Arc<std::sync::Mutex<Vec<(String, usize)>>>,
}

impl ridgeline_worker::engine::model::Model for PoolProbe {
    fn forward(&self, xs: &candle_core::Tensor) -> candle_core::Result<candle_core::Tensor> {
        let thread = std::thread::current().name().unwrap_or("").to_string();
        if let Ok(mut seen) = self.seen.lock() {
            seen.push((thread, rayon::current_num_threads()));
        }
        xs.flatten_from(1)?
            .matmul(&self.w.t()?)?
            .broadcast_add(&self.b)
    }
}

/// A worker runs each task's engine work on a rayon pool of its own, of
/// `threads` threads: never on rayon's global pool, which its slots used
/// to share (and queue on).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_s_tasks_run_on_pools_of_their_own_size() {
    use ridgeline_worker::engine::model::{Model, ModelContext, ParamBuilder, ParamRole};
    let dir = tempfile::tempdir().unwrap();
    let c = Coordinator::start(&dir.path().join("coord"), Duration::from_secs(20)).await;
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let mut registry = ModelRegistry::default();
    let noted = seen.clone();
    registry.register(
        "pool_probe",
        move |ctx: &ModelContext, _: &serde_json::Value, pb: &mut ParamBuilder| {
            let d: usize = ctx.input_shape.iter().product();
            let w = pb.param("w", (ctx.outputs, d), ParamRole::Weight, d, ctx.outputs)?;
            let b = pb.param("b", ctx.outputs, ParamRole::Bias, d, ctx.outputs)?;
            Ok(Box::new(PoolProbe {
                w,
                b,
                seen: noted.clone(),
            }) as Box<dyn Model>)
        },
    );
    let stop = CancellationToken::new();
    let mut cfg = WorkerConfig::new(c.url(), "pooled");
    cfg.cache_dir = dir.path().join("cache");
    cfg.slots = 2;
    cfg.threads = Some(3);
    cfg.registry = registry;
    let worker = tokio::spawn(runner::run(cfg, stop.clone()));
    let job = "kind = \"lr_ramp\"\nreplicates = 2\nchunk_epochs = 1\nbatch_size = 32\n\
               [data.source]\nkind = \"tabular\"\nn_train = 200\nn_heldout = 50\nseed = 5\n\
               [model]\nkind = \"custom\"\nname = \"pool_probe\"\n\
               [lr_ramp]\nstart = 0.001\nend = 1.0\nepochs = 2\n";
    let mut jobs = c.jobs().await;
    let id = submit(&mut jobs, job).await.expect("submit");
    let status = wait_for_end(&mut jobs, &id, LIMIT).await;
    assert_eq!(status.state, pb::JobState::Succeeded as i32, "{status:#?}");
    stop.cancel();
    worker.await.expect("worker task").expect("worker");
    let seen = seen.lock().unwrap().clone();
    assert!(!seen.is_empty(), "the model never ran");
    for (thread, pool) in &seen {
        assert!(
            thread.starts_with("ridgeline-slot"),
            "a forward pass ran on `{thread}`, not on a task's pool"
        );
        assert_eq!(
            *pool, 3,
            "a task's pool has {pool} threads, not --threads 3"
        );
    }
    c.stop().await;
}
