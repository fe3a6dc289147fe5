//! The client commands end to end against the real coordinator, served in
//! this process on a local port (`crate::serve`, its own data directory per
//! test). Jobs are put into the states a test needs by driving the worker
//! side by hand over gRPC (Register, Lease, Report, Complete, Fail), as a
//! worker would: requests arrive as sent, answers and errors come back as
//! the commands promise, and `watch` ends as the job does.
//!
//! Every job runs in single-chunk runs (`chunk_epochs = epochs`), so a
//! completion needs no checkpoint.
//!
//! Dropped from the earlier tests against a hand-written fake, because the
//! real coordinator never sends them: an event stream cut off before the job
//! ends (its message is checked in `watch::tests::outcomes`), a task the
//! snapshot did not list (every task is planned at submit; learning one is
//! checked in `watch::tests::merging_a_fresh_status_…`), an event resent with
//! a seq already seen, and events after the job's end (`watch` skips the
//! former and stops at the end; nothing tests those two any more).

use std::time::Duration;

use ridgeline_common::proto::v1 as pb;
use ridgeline_common::proto::v1::job_service_client::JobServiceClient;
use ridgeline_common::proto::v1::worker_service_client::WorkerServiceClient;
use ridgeline_common::proto::PROTOCOL_VERSION;
use ridgeline_common::task::TaskSpec;
use ridgeline_common::JobId;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;

use super::render::{format_jobs, format_status, CSV_HEADER};
use super::{run, ClientCommand, Credentials, ExportFormat, JobFileFormat};

/// A coordinator served in this process on a free local port.
struct Coordinator {
    /// `127.0.0.1:port`, as a user would give it to the client.
    addr: String,
    shutdown: CancellationToken,
    served: Option<JoinHandle<crate::Result<()>>>,
    _data: tempfile::TempDir,
}

impl Coordinator {
    async fn start() -> Coordinator {
        let data = tempfile::tempdir().expect("data dir");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("local address").to_string();
        let shutdown = CancellationToken::new();
        let served = tokio::spawn(crate::serve(
            listener,
            crate::ServerConfig::new(data.path()),
            shutdown.clone(),
        ));
        Coordinator {
            addr,
            shutdown,
            served: Some(served),
            _data: data,
        }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    async fn jobs(&self) -> JobServiceClient<Channel> {
        JobServiceClient::connect(self.url())
            .await
            .expect("connect the job service")
    }

    /// Runs a client command, as `coordinator <cmd> --coordinator <addr>`.
    async fn run(&self, cmd: ClientCommand) -> anyhow::Result<()> {
        run(cmd, &self.addr, &Credentials::none()).await
    }

    /// Submits a TOML job over gRPC (the tests that need its id).
    async fn submit(&self, text: &str) -> String {
        self.jobs()
            .await
            .submit_job(pb::SubmitJobRequest {
                text: text.into(),
                format: pb::JobFormat::Toml as i32,
            })
            .await
            .expect("submit")
            .into_inner()
            .job_id
    }

    async fn status(&self, job: &str) -> pb::JobStatus {
        self.jobs()
            .await
            .get_job(pb::GetJobRequest { job_id: job.into() })
            .await
            .expect("get job")
            .into_inner()
    }

    /// A worker driven by hand, registered under `name`.
    async fn worker(&self, name: &str) -> Worker {
        let mut client = WorkerServiceClient::connect(self.url())
            .await
            .expect("connect the worker service");
        let id = client
            .register(pb::RegisterRequest {
                protocol_version: PROTOCOL_VERSION,
                name: name.into(),
                device: "cpu".into(),
                slots: 2,
                memory_bytes: 0,
                previous_worker_id: String::new(),
                lease_ahead: 0,
            })
            .await
            .expect("register")
            .into_inner()
            .worker_id;
        Worker { client, id }
    }

    /// Stops serving; the coordinator must shut down cleanly.
    async fn stop(mut self) {
        self.shutdown.cancel();
        if let Some(served) = self.served.take() {
            let ended = tokio::time::timeout(Duration::from_secs(10), served)
                .await
                .expect("the coordinator stops");
            ended.expect("serve task").expect("serve");
        }
    }
}

impl Drop for Coordinator {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// The worker side of the protocol, one call at a time.
struct Worker {
    client: WorkerServiceClient<Channel>,
    id: String,
}

impl Worker {
    /// Leases `n` tasks (all there must be), in the job's order.
    async fn lease(&mut self, n: u32) -> Vec<pb::TaskAssignment> {
        let tasks = self
            .client
            .lease(pb::LeaseRequest {
                worker_id: self.id.clone(),
                free_slots: n,
                running: vec![],
                wait_ms: 0,
            })
            .await
            .expect("lease")
            .into_inner()
            .tasks;
        assert_eq!(tasks.len(), n as usize, "{tasks:#?}");
        tasks
    }

    async fn report(&mut self, t: &pb::TaskAssignment, seq: u64, item: pb::Progress) {
        let r = self
            .client
            .report(pb::ReportRequest {
                worker_id: self.id.clone(),
                task_id: t.task_id.clone(),
                attempt: t.attempt,
                seq,
                items: vec![item],
            })
            .await
            .expect("report")
            .into_inner();
        assert!(r.stored && !r.stop, "{r:?}");
    }

    async fn complete(&mut self, t: &pb::TaskAssignment, end: pb::RunEnd) {
        self.client
            .complete(pb::CompleteRequest {
                worker_id: self.id.clone(),
                task_id: t.task_id.clone(),
                attempt: t.attempt,
                epochs_trained: end.epoch,
                end: Some(end),
                checkpoint_hash: String::new(),
                engine_ms: 0,
                next_slots: 0,
                queued_ms: 0,
                queued_starts: vec![],
                last_report: None,
            })
            .await
            .expect("complete");
    }

    /// Fails the task for good (not retryable): its job fails.
    async fn fail(&mut self, t: &pb::TaskAssignment, message: &str) {
        self.client
            .fail(pb::FailRequest {
                worker_id: self.id.clone(),
                task_id: t.task_id.clone(),
                attempt: t.attempt,
                message: message.into(),
                retryable: false,
                handed_back: false,
            })
            .await
            .expect("fail");
    }
}

/// An LR ramp of `replicates` runs of `epochs` epochs, one task per run.
fn lr_ramp(replicates: u32, epochs: u32) -> String {
    format!(
        r#"kind = "lr_ramp"
replicates = {replicates}
chunk_epochs = {epochs}
batch_size = 32
[data.source]
kind = "tabular"
n_train = 600
n_heldout = 200
seed = 5
[model]
kind = "mlp"
hidden = [32]
[lr_ramp]
start = 0.001
end = 1.0
epochs = {epochs}
"#
    )
}

/// `lr_ramp(2, 2)` written as JSON.
const LR_RAMP_JSON: &str = r#"{
  "kind": "lr_ramp",
  "replicates": 2,
  "chunk_epochs": 2,
  "batch_size": 32,
  "data": { "source": { "kind": "tabular", "n_train": 600, "n_heldout": 200, "seed": 5 } },
  "model": { "kind": "mlp", "hidden": [32] },
  "lr_ramp": { "start": 0.001, "end": 1.0, "epochs": 2 }
}"#;

/// The curve a leased task trains (`seed=0`, …).
fn curve(t: &pb::TaskAssignment) -> String {
    match TaskSpec::from_json(&t.spec_json).expect("task spec") {
        TaskSpec::Train(train) => train.curve,
        other => panic!("not a training task: {other:?}"),
    }
}

fn metrics(loss: f64, accuracy: f64) -> Option<pb::Metrics> {
    Some(pb::Metrics {
        loss,
        metric: accuracy,
        accuracy: Some(accuracy),
        r2: None,
        pearson: None,
        majority_fraction: None,
    })
}

/// The measurement at the end of epoch `epoch` (1-based).
fn epoch(
    epoch: u32,
    lr: f64,
    train: Option<pb::Metrics>,
    heldout: Option<pb::Metrics>,
) -> pb::Progress {
    pb::Progress {
        curve: String::new(),
        kind: Some(pb::progress::Kind::Epoch(pb::EpochReport {
            epoch,
            step: u64::from(epoch) * 10,
            progress: f64::from(epoch),
            lr,
            momentum: 0.0,
            batch_loss: None,
            train,
            heldout,
        })),
        ..Default::default()
    }
}

fn completed(epoch: u32) -> pb::RunEnd {
    pb::RunEnd {
        kind: pb::run_end::Kind::Completed as i32,
        epoch,
        ..Default::default()
    }
}

/// Starts `watch <job>` in the background, and checks it is still
/// following the job (which has not ended) a moment later.
async fn watch_in_background(c: &Coordinator, job: &str) -> JoinHandle<anyhow::Result<()>> {
    let (addr, job) = (c.addr.clone(), job.to_string());
    let watching = tokio::spawn(async move {
        run(ClientCommand::Watch { job }, &addr, &Credentials::none()).await
    });
    tokio::time::sleep(Duration::from_millis(150)).await;
    assert!(
        !watching.is_finished(),
        "watch ended before the job did: {:?}",
        watching.await
    );
    watching
}

/// What a background `watch` ended with.
async fn watched(watching: JoinHandle<anyhow::Result<()>>) -> anyhow::Result<()> {
    tokio::time::timeout(Duration::from_secs(10), watching)
        .await
        .expect("watch ends when the job does")
        .expect("watch task")
}

#[tokio::test]
async fn submit_sends_the_format_of_the_file_and_names_a_refused_one() {
    let c = Coordinator::start().await;
    let dir = tempfile::tempdir().expect("temp dir");
    let submit = |file: &std::path::Path, format| ClientCommand::Submit {
        file: file.to_path_buf(),
        format,
    };

    // The format follows the extension unless given: a JSON job in
    // `job.json` is accepted, the same file read as TOML is refused.
    let json = dir.path().join("job.json");
    std::fs::write(&json, LR_RAMP_JSON).expect("write");
    c.run(submit(&json, None)).await.expect("submit json");
    let e = c
        .run(submit(&json, Some(JobFileFormat::Toml)))
        .await
        .expect_err("JSON is not TOML")
        .to_string();
    // Read as TOML, the file fails on its first line (`{`).
    assert!(
        e.starts_with(&format!("{}: `job`: line 1: ", json.display())),
        "{e}"
    );
    let toml = dir.path().join("job.toml");
    std::fs::write(&toml, lr_ramp(2, 2)).expect("write");
    c.run(submit(&toml, None)).await.expect("submit toml");
    let txt = dir.path().join("job.txt");
    std::fs::write(&txt, LR_RAMP_JSON).expect("write");
    c.run(submit(&txt, Some(JobFileFormat::Json)))
        .await
        .expect("submit json named .txt");

    // A job the coordinator refuses: the message names the file and the field.
    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, lr_ramp(1, 2).replace("start = 0.001", "start = -1")).expect("write");
    let e = c
        .run(submit(&bad, None))
        .await
        .expect_err("refused")
        .to_string();
    assert_eq!(
        e,
        format!(
            "{}: `lr_ramp.lr.start`: must be a finite number > 0, got -1",
            bad.display()
        )
    );

    // Exactly the accepted jobs were stored, each as submitted.
    let jobs = c
        .jobs()
        .await
        .list_jobs(pb::ListJobsRequest {})
        .await
        .expect("list")
        .into_inner()
        .jobs;
    assert_eq!(jobs.len(), 3, "{jobs:#?}");
    for j in &jobs {
        assert_eq!(j.kind, "lr_ramp");
        assert_eq!(j.state, pb::JobState::Queued as i32);
        assert_eq!(j.stages[0].total, 2, "two runs of one chunk each");
    }
    c.stop().await;
}

#[tokio::test]
async fn queries_and_cancel_answer_and_unknown_jobs_are_named() {
    let c = Coordinator::start().await;
    // Nothing there yet.
    c.run(ClientCommand::List).await.expect("list of none");
    c.run(ClientCommand::Workers)
        .await
        .expect("workers of none");

    let running = c.submit(&lr_ramp(2, 2)).await;
    let queued = c.submit(&lr_ramp(1, 2)).await;
    let mut w = c.worker("w1").await;
    w.lease(2).await;
    assert_eq!(c.status(&running).await.state, pb::JobState::Running as i32);

    c.run(ClientCommand::Status {
        job: Some(running.clone()),
    })
    .await
    .expect("status");
    c.run(ClientCommand::Status { job: None })
        .await
        .expect("status of all");
    c.run(ClientCommand::List).await.expect("list");
    c.run(ClientCommand::Workers).await.expect("workers");
    let list = c
        .jobs()
        .await
        .list_jobs(pb::ListJobsRequest {})
        .await
        .expect("list")
        .into_inner()
        .jobs;
    let table = format_jobs(&list);
    assert!(
        table.contains(&running) && table.contains(&queued),
        "{table}"
    );
    let page = format_status(&c.status(&running).await);
    assert!(page.contains("state     running"), "{page}");
    assert!(page.contains("seed=0, epochs 0-2"), "{page}");

    // Cancel a queued job, then again: it stays cancelled.
    c.run(ClientCommand::Cancel {
        job: queued.clone(),
    })
    .await
    .expect("cancel");
    assert_eq!(
        c.status(&queued).await.state,
        pb::JobState::Cancelled as i32
    );
    c.run(ClientCommand::Cancel {
        job: queued.clone(),
    })
    .await
    .expect("cancel a cancelled job");
    assert_eq!(
        c.status(&queued).await.state,
        pb::JobState::Cancelled as i32
    );

    // A job id nobody submitted.
    let unknown = JobId::new().to_string();
    let export = |job: &str, format| ClientCommand::Export {
        job: job.into(),
        format,
        out: None,
    };
    for cmd in [
        ClientCommand::Status {
            job: Some(unknown.clone()),
        },
        ClientCommand::Cancel {
            job: unknown.clone(),
        },
        ClientCommand::Watch {
            job: unknown.clone(),
        },
        export(&unknown, ExportFormat::Csv),
        export(&unknown, ExportFormat::Json),
    ] {
        let e = c
            .run(cmd.clone())
            .await
            .expect_err("unknown job")
            .to_string();
        assert_eq!(e, format!("no job {unknown}"), "{cmd:?}");
    }
    // Something that is not a job id at all: the coordinator says why.
    for cmd in [
        ClientCommand::Status {
            job: Some("nope".into()),
        },
        ClientCommand::Cancel { job: "nope".into() },
        ClientCommand::Watch { job: "nope".into() },
        export("nope", ExportFormat::Csv),
    ] {
        let e = c.run(cmd.clone()).await.expect_err("not an id").to_string();
        assert_eq!(
            e, "`job_id`: `nope` is not a valid id (expected a UUID)",
            "{cmd:?}"
        );
    }
    drop(w);
    c.stop().await;
}

#[tokio::test]
async fn export_writes_every_measurement_and_how_each_run_ended() {
    let c = Coordinator::start().await;
    let job = c.submit(&lr_ramp(2, 2)).await;
    let mut w = c.worker("w1").await;
    let tasks = w.lease(2).await;
    let (seed0, seed1) = (&tasks[0], &tasks[1]);
    assert_eq!(
        (curve(seed0).as_str(), curve(seed1).as_str()),
        ("seed=0", "seed=1")
    );

    // seed=0 trains both epochs; seed=1 diverges in its second (0-based 1).
    w.report(
        seed0,
        1,
        epoch(1, 0.01, metrics(0.9, 0.5), metrics(1.0, 0.25)),
    )
    .await;
    w.report(
        seed1,
        1,
        epoch(1, 0.01, metrics(0.8, 0.5), metrics(0.9, 0.75)),
    )
    .await;
    w.report(
        seed0,
        2,
        epoch(2, 0.1, metrics(0.5, 0.75), metrics(0.6, 0.5)),
    )
    .await;
    w.complete(seed0, completed(2)).await;
    w.complete(
        seed1,
        pb::RunEnd {
            kind: pb::run_end::Kind::Diverged as i32,
            epoch: 1,
            step: 15,
            reason: "loss became NaN".into(),
        },
    )
    .await;
    let status = c.status(&job).await;
    assert_eq!(status.state, pb::JobState::Succeeded as i32, "{status:#?}");

    // CSV: one row per measurement, then the mean and spread over seeds.
    let dir = tempfile::tempdir().expect("temp dir");
    let csv = dir.path().join("r.csv");
    c.run(ClientCommand::Export {
        job: job.clone(),
        format: ExportFormat::Csv,
        out: Some(csv.clone()),
    })
    .await
    .expect("export csv");
    let text = std::fs::read_to_string(&csv).expect("read csv");
    let spread = 0.125f64.sqrt(); // sample std of 0.25 and 0.75
    assert_eq!(
        text,
        format!(
            "{CSV_HEADER}\n\
             seed=0,1,0.01,0,0.9,0.5,1,0.25,,,\n\
             seed=0,2,0.1,0,0.5,0.75,0.6,0.5,,,\n\
             seed=1,1,0.01,0,0.8,0.5,0.9,0.75,,,\n\
             mean:all,1,,,,0.5,,0.5,{spread},0,2\n\
             mean:all,2,,,,0.75,,0.5,0,0,1\n"
        )
    );

    // JSON: the same, with how each run ended.
    let json = dir.path().join("r.json");
    c.run(ClientCommand::Export {
        job: job.clone(),
        format: ExportFormat::Json,
        out: Some(json.clone()),
    })
    .await
    .expect("export json");
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).expect("read json")).expect("json");
    assert_eq!(v["job_id"], job.as_str());
    assert_eq!(v["kind"], "lr_ramp");
    assert_eq!(v["curves"][0]["curve"], "seed=0");
    assert_eq!(v["curves"][0]["points"].as_array().map(Vec::len), Some(2));
    assert_eq!(v["curves"][0]["points"][1]["heldout"]["accuracy"], 0.5);
    assert_eq!(
        v["curves"][0]["end"],
        serde_json::json!({"kind": "completed", "epoch": 2, "step": 0, "reason": ""})
    );
    assert_eq!(v["curves"][1]["curve"], "seed=1");
    assert_eq!(v["curves"][1]["points"].as_array().map(Vec::len), Some(1));
    assert_eq!(
        v["curves"][1]["end"],
        serde_json::json!({"kind": "diverged", "epoch": 1, "step": 15, "reason": "loss became NaN"})
    );
    assert_eq!(v["aggregates"][0]["group"], "all");
    assert_eq!(v["aggregates"][0]["n"], serde_json::json!([2, 1]));

    // To stdout as well; and watching the finished job replays it to the end.
    for format in [ExportFormat::Csv, ExportFormat::Json] {
        c.run(ClientCommand::Export {
            job: job.clone(),
            format,
            out: None,
        })
        .await
        .expect("export to stdout");
    }
    c.run(ClientCommand::Watch { job: job.clone() })
        .await
        .expect("a job that succeeded");
    drop(w);
    c.stop().await;
}

#[tokio::test]
async fn watch_follows_a_job_until_it_succeeds() {
    let c = Coordinator::start().await;
    let job = c.submit(&lr_ramp(1, 2)).await;
    let mut w = c.worker("w1").await;
    let task = w.lease(1).await.remove(0);
    w.report(
        &task,
        1,
        epoch(1, 0.01, metrics(0.9, 0.5), metrics(1.0, 0.25)),
    )
    .await;
    let watching = watch_in_background(&c, &job).await;
    // Live events from here on.
    w.report(
        &task,
        2,
        epoch(2, 0.1, metrics(0.5, 0.75), metrics(0.6, 0.5)),
    )
    .await;
    w.complete(&task, completed(2)).await;
    watched(watching).await.expect("the job succeeded");
    // And after the fact.
    c.run(ClientCommand::Watch { job }).await.expect("replayed");
    drop(w);
    c.stop().await;
}

#[tokio::test]
async fn watch_of_a_failed_job_fails_with_the_reason() {
    let c = Coordinator::start().await;
    let job = c.submit(&lr_ramp(2, 2)).await;
    let mut w = c.worker("w1").await;
    let task = w.lease(1).await.remove(0);
    w.report(
        &task,
        1,
        epoch(1, 0.01, metrics(0.9, 0.5), metrics(1.0, 0.25)),
    )
    .await;
    let watching = watch_in_background(&c, &job).await;
    w.fail(&task, "out of memory").await;
    let reason = format!(
        "task {} (seed=0, epochs 0-2) failed: out of memory",
        task.task_id
    );
    let want = format!("job {job} failed: {reason}");
    let e = watched(watching).await.expect_err("the job failed");
    assert_eq!(e.to_string(), want);
    let e = c
        .run(ClientCommand::Watch { job: job.clone() })
        .await
        .expect_err("replayed");
    assert_eq!(e.to_string(), want);

    // The other commands still answer for the failed job; `status` shows the
    // reason, and what was measured before the failure can be exported.
    let status = c.status(&job).await;
    assert_eq!(status.state, pb::JobState::Failed as i32);
    assert_eq!(status.error, reason);
    assert!(
        format_status(&status).contains(&format!("state     failed: {reason}")),
        "{}",
        format_status(&status)
    );
    c.run(ClientCommand::Status {
        job: Some(job.clone()),
    })
    .await
    .expect("status");
    c.run(ClientCommand::Cancel { job: job.clone() })
        .await
        .expect("cancel of an ended job answers its state");
    assert_eq!(c.status(&job).await.state, pb::JobState::Failed as i32);
    let dir = tempfile::tempdir().expect("temp dir");
    let csv = dir.path().join("r.csv");
    c.run(ClientCommand::Export {
        job,
        format: ExportFormat::Csv,
        out: Some(csv.clone()),
    })
    .await
    .expect("export");
    let text = std::fs::read_to_string(&csv).expect("read csv");
    assert_eq!(
        text.lines().nth(1),
        Some("seed=0,1,0.01,0,0.9,0.5,1,0.25,,,"),
        "{text}"
    );
    drop(w);
    c.stop().await;
}

#[tokio::test]
async fn watch_of_a_cancelled_job_says_so() {
    let c = Coordinator::start().await;
    // Cancelled while watched, with a task running.
    let job = c.submit(&lr_ramp(1, 2)).await;
    let mut w = c.worker("w1").await;
    let task = w.lease(1).await.remove(0);
    w.report(
        &task,
        1,
        epoch(1, 0.01, metrics(0.9, 0.5), metrics(1.0, 0.25)),
    )
    .await;
    let watching = watch_in_background(&c, &job).await;
    c.run(ClientCommand::Cancel { job: job.clone() })
        .await
        .expect("cancel");
    let e = watched(watching).await.expect_err("cancelled");
    assert_eq!(e.to_string(), format!("job {job} was cancelled"));

    // Cancelled before it started, watched afterwards.
    let queued = c.submit(&lr_ramp(1, 2)).await;
    c.run(ClientCommand::Cancel {
        job: queued.clone(),
    })
    .await
    .expect("cancel");
    let e = c
        .run(ClientCommand::Watch {
            job: queued.clone(),
        })
        .await
        .expect_err("cancelled");
    assert_eq!(e.to_string(), format!("job {queued} was cancelled"));
    drop(w);
    c.stop().await;
}

/// A line search of 5 points in one task, on a tabular MLP.
fn line_search_job(name: &str) -> String {
    format!(
        r#"kind = "line_search"
name = "{name}"
replicates = 1
[data.source]
kind = "tabular"
n_train = 600
n_heldout = 200
seed = 5
[model]
kind = "mlp"
hidden = [32]
[line_search]
points = 5
points_per_task = 5
"#
    )
}

#[tokio::test]
async fn report_and_gallery_write_their_files_from_a_real_server() {
    let c = Coordinator::start().await;
    let name = "<script>alert(1)</script> sweep";
    let ls = c.submit(&line_search_job(name)).await;
    let ramp = c.submit(&lr_ramp(1, 2)).await;
    let mut w = c.worker("w1").await;
    let tasks = w.lease(2).await;
    let (ls_task, ramp_task) = if tasks[0].job_id == ls {
        (&tasks[0], &tasks[1])
    } else {
        (&tasks[1], &tasks[0])
    };
    let spec = TaskSpec::from_json(&ls_task.spec_json).expect("task spec");
    let TaskSpec::LineSearch(line) = spec else {
        panic!("not a line search: {spec:?}")
    };
    assert_eq!(line.points.len(), 5);
    for (seq, &(index, alpha)) in line.points.iter().enumerate() {
        // A hill peaking at a = 0.
        let acc = 0.9 - 0.3 * alpha * alpha;
        w.report(
            ls_task,
            seq as u64 + 1,
            pb::Progress {
                curve: line.curve.clone(),
                kind: Some(pb::progress::Kind::Point(pb::LinePoint {
                    index,
                    alpha,
                    train: metrics(1.0 - acc, acc),
                    heldout: metrics(1.0 - acc, acc),
                })),
                ..Default::default()
            },
        )
        .await;
    }
    w.complete(ls_task, completed(0)).await;
    w.report(
        ramp_task,
        1,
        epoch(1, 0.01, metrics(0.9, 0.5), metrics(1.0, 0.25)),
    )
    .await;
    w.report(
        ramp_task,
        2,
        epoch(2, 0.1, metrics(0.5, 0.75), metrics(0.6, 0.5)),
    )
    .await;
    w.complete(ramp_task, completed(2)).await;
    for job in [&ls, &ramp] {
        let s = c.status(job).await;
        assert_eq!(s.state, pb::JobState::Succeeded as i32, "{s:#?}");
    }

    // `report`: the page and the data, from GetJob and GetResults.
    let dir = tempfile::tempdir().expect("temp dir");
    let out = dir.path().join("r");
    c.run(ClientCommand::Report {
        job: ls.clone(),
        out: Some(out.clone()),
    })
    .await
    .expect("report");
    let html = std::fs::read_to_string(out.join("report.html")).expect("report.html");
    assert!(!html.contains("<script"), "the job's name is escaped");
    assert!(html.contains("&lt;script&gt;alert(1)&lt;/script&gt; sweep"));
    assert!(html.contains(&ls));
    assert_eq!(html.matches("<svg").count(), 1, "one group, one figure");
    let csv = std::fs::read_to_string(out.join("curves.csv")).expect("curves.csv");
    assert!(csv.starts_with(CSV_HEADER));
    assert_eq!(csv.lines().filter(|l| l.starts_with("mean:")).count(), 5);
    let results: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("results.json")).expect("read"))
            .expect("results.json");
    assert_eq!(results["job_id"], ls.as_str());
    assert!(out.join("decisions.json").is_file());
    assert!(!out.join("recommended.toml").exists(), "not a procedure");
    let unknown = JobId::new().to_string();
    let e = c
        .run(ClientCommand::Report {
            job: unknown.clone(),
            out: Some(dir.path().join("u")),
        })
        .await
        .expect_err("unknown job")
        .to_string();
    assert_eq!(e, format!("no job {unknown}"));
    assert!(!dir.path().join("u").exists(), "nothing written for it");

    // `gallery`: the succeeded line search (not the LR ramp), with its report.
    let g = dir.path().join("g");
    c.run(ClientCommand::Gallery { out: g.clone() })
        .await
        .expect("gallery");
    let page = std::fs::read_to_string(g.join("gallery.html")).expect("gallery.html");
    assert!(
        page.contains(&format!("<a href=\"{ls}/report.html\">")),
        "{page}"
    );
    assert!(!page.contains(&ramp));
    assert_eq!(page.matches("<svg").count(), 1);
    assert!(g.join(&ls).join("report.html").is_file());
    assert!(!g.join(&ramp).exists());
    drop(w);
    c.stop().await;
}
