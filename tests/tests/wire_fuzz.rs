//! Bad input over the wire (issue 5): every RPC of both services, fed
//! generated messages with missing fields, odd and huge strings, `../`
//! paths, absurd numbers (NaN, ±inf, 0, u64::MAX, huge repeated fields),
//! wrong enum values, wrong attempts and tasks the caller does not hold,
//! against one real coordinator per property over real gRPC. Every answer
//! must be OK or a clean refusal (an `INVALID_ARGUMENT` names its field),
//! the coordinator must keep answering, and nothing stored may change from
//! a refused message. Then targeted tests: foreign tasks and wrong attempts,
//! the message-size limit, oversized, overlong and mismatched uploads, and
//! NaN/inf metrics (recorded as sent: that is how divergence reads).
//!
//! The two properties run 64 cases each by default (about 10 s on 2
//! cores, for CI). A long run (about 20 s per 100 cases; `--nocapture`
//! prints how often each RPC got each status code):
//!
//! ```sh
//! PROPTEST_CASES=3000 cargo test -p ridgeline-tests --test wire_fuzz every_ -- --nocapture
//! ```

use std::path::{Path, PathBuf};
use std::time::Duration;

use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use ridgeline_common::proto::v1 as pb;
use ridgeline_common::proto::v1::job_service_client::JobServiceClient;
use ridgeline_common::proto::v1::worker_service_client::WorkerServiceClient;
use ridgeline_coordinator::scheduler::SchedulerConfig;
use ridgeline_coordinator::ServerConfig;
use ridgeline_tests::{jobs, register, submit, wait_for_end, Coordinator};
use ridgeline_worker::engine::artifact::content_hash;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;
use tonic::{Code, Status};

type Jobs = JobServiceClient<Channel>;
type Workers = WorkerServiceClient<Channel>;

/// Longest any one call may take before it counts as a hang.
const CALL: Duration = Duration::from_secs(20);

/// Artifacts larger than this are refused by the coordinators here.
const MAX_ARTIFACT: u64 = 1 << 20;

// ------------------------------------------------------------ fixture

fn config(dir: &Path) -> ServerConfig {
    let mut config = ServerConfig::new(dir);
    config.scheduler = SchedulerConfig {
        // No lease may run out during a property: the scripted holders do
        // not heartbeat.
        lease_ttl: Duration::from_secs(600),
        heartbeat_interval: Duration::from_millis(100),
        // The fuzz fails tasks on purpose; no quarantine in between.
        quarantine_after: 0,
        ..SchedulerConfig::default()
    };
    config.max_artifact_bytes = MAX_ARTIFACT;
    config
}

fn metrics(m: f64) -> Option<pb::Metrics> {
    Some(pb::Metrics {
        loss: 1.0 - m,
        metric: m,
        accuracy: Some(m),
        ..Default::default()
    })
}

fn epoch_item(epoch: u32, m: f64) -> pb::Progress {
    pb::Progress {
        kind: Some(pb::progress::Kind::Epoch(pb::EpochReport {
            epoch,
            step: u64::from(epoch) * 10,
            progress: f64::from(epoch),
            lr: 0.1,
            train: metrics(m),
            heldout: metrics(m),
            ..Default::default()
        })),
        ..Default::default()
    }
}

fn point_item(index: u32, alpha: f64, m: f64) -> pb::Progress {
    pb::Progress {
        kind: Some(pb::progress::Kind::Point(pb::LinePoint {
            index,
            alpha,
            train: metrics(m),
            heldout: metrics(m),
        })),
        ..Default::default()
    }
}

fn end(kind: pb::run_end::Kind, epoch: u32) -> Option<pb::RunEnd> {
    Some(pb::RunEnd {
        kind: kind as i32,
        epoch,
        ..Default::default()
    })
}

async fn lease_one(w: &mut Workers, worker: &str) -> pb::TaskAssignment {
    let l = w
        .lease(pb::LeaseRequest {
            worker_id: worker.into(),
            free_slots: 1,
            running: vec![],
            wait_ms: 0,
        })
        .await
        .expect("lease")
        .into_inner();
    assert_eq!(l.tasks.len(), 1, "one task for {worker}: {l:?}");
    l.tasks.into_iter().next().expect("a task")
}

async fn report(
    w: &mut Workers,
    worker: &str,
    t: &pb::TaskAssignment,
    seq: u64,
    items: Vec<pb::Progress>,
) -> Result<pb::ReportResponse, Status> {
    w.report(pb::ReportRequest {
        worker_id: worker.into(),
        task_id: t.task_id.clone(),
        attempt: t.attempt,
        seq,
        items,
    })
    .await
    .map(tonic::Response::into_inner)
}

async fn upload(w: &mut Workers, chunks: Vec<pb::ArtifactChunk>) -> Result<String, Status> {
    w.upload_artifact(tokio_stream::iter(chunks))
        .await
        .map(|r| r.into_inner().hash)
}

/// A coordinator holding a finished job, a job whose only task a scripted
/// worker holds, and an artifact: what the fuzz must never change.
struct Fixture {
    c: Coordinator,
    jobs: Jobs,
    workers: Workers,
    done_job: String,
    done_task: String,
    /// Finished the done job: its resent completion is acknowledged.
    done_worker: String,
    live_job: String,
    live_task: String,
    /// Holds the live task; the fuzz never speaks as it (its reports
    /// would be valid).
    holder: String,
    /// Registered for the fuzz to use.
    fuzz_worker: String,
    artifact: String,
    _dir: tempfile::TempDir,
}

impl Fixture {
    async fn start() -> Fixture {
        let dir = tempfile::tempdir().expect("tempdir");
        let c =
            Coordinator::start_with("127.0.0.1:0".parse().expect("addr"), config(dir.path())).await;
        let mut jobs = c.jobs().await;
        let mut workers = c.workers().await;

        let done_job = submit(&mut jobs, &jobs::lr_ramp(1, 2, 2))
            .await
            .expect("submit");
        let done_worker = register(&mut workers, "done").await;
        let t = lease_one(&mut workers, &done_worker).await;
        let items = vec![epoch_item(0, 0.1), epoch_item(1, 0.5), epoch_item(2, 0.7)];
        report(&mut workers, &done_worker, &t, 1, items)
            .await
            .expect("report");
        workers
            .complete(pb::CompleteRequest {
                worker_id: done_worker.clone(),
                task_id: t.task_id.clone(),
                attempt: t.attempt,
                end: end(pb::run_end::Kind::Completed, 2),
                checkpoint_hash: String::new(),
                epochs_trained: 2,
                engine_ms: 0,
                next_slots: 0,
                queued_ms: 0,
                queued_starts: vec![],
                last_report: None,
            })
            .await
            .expect("complete");
        let s = wait_for_end(&mut jobs, &done_job, Duration::from_secs(10)).await;
        assert_eq!(s.state, pb::JobState::Succeeded as i32);
        let done_task = t.task_id;

        let live_job = submit(&mut jobs, &jobs::lr_ramp(1, 3, 3))
            .await
            .expect("submit");
        let holder = register(&mut workers, "holder").await;
        let t = lease_one(&mut workers, &holder).await;
        report(
            &mut workers,
            &holder,
            &t,
            1,
            vec![epoch_item(0, 0.1), epoch_item(1, 0.4)],
        )
        .await
        .expect("report");
        let live_task = t.task_id;

        let data = b"an artifact the fuzz may download".to_vec();
        let artifact = content_hash(&data);
        let size = data.len() as u64;
        upload(
            &mut workers,
            vec![pb::ArtifactChunk {
                hash: artifact.clone(),
                size,
                data,
            }],
        )
        .await
        .expect("upload");
        let fuzz_worker = register(&mut workers, "fuzz").await;
        Fixture {
            c,
            jobs,
            workers,
            done_job,
            done_task,
            done_worker,
            live_job,
            live_task,
            holder,
            fuzz_worker,
            artifact,
            _dir: dir,
        }
    }

    fn artifacts_dir(&self) -> PathBuf {
        self.c.data_dir.join("artifacts")
    }

    /// What the fixture's jobs look like from outside: status, results and
    /// (for the finished job) its whole event log.
    async fn snapshot(&self) -> String {
        let mut c = self.jobs.clone();
        let mut out = String::new();
        for job in [&self.done_job, &self.live_job] {
            out += &job_snapshot(&mut c, job).await;
        }
        let mut events = c
            .watch_job(pb::WatchJobRequest {
                job_id: self.done_job.clone(),
            })
            .await
            .expect("watch")
            .into_inner();
        while let Some(e) = tokio::time::timeout(CALL, events.message())
            .await
            .expect("the finished job's log ends")
            .expect("watch")
        {
            if e.seq > 0 {
                out += &format!("{e:?}\n");
            }
        }
        out
    }
}

/// A job's status and results (Debug: NaN equals NaN there).
async fn job_snapshot(c: &mut Jobs, job: &str) -> String {
    let status = c
        .get_job(pb::GetJobRequest { job_id: job.into() })
        .await
        .expect("get job")
        .into_inner();
    let results = c
        .get_results(pb::GetResultsRequest { job_id: job.into() })
        .await
        .expect("get results")
        .into_inner();
    format!("{status:?}\n{results:?}\n")
}

/// Every file under `dir`, sorted.
fn files(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .map(|d| {
            d.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

// ------------------------------------------------------------ strategies

/// Strings a careless or hostile client might send.
fn odd_text() -> BoxedStrategy<String> {
    prop_oneof![
        2 => Just(String::new()),
        3 => "\\PC{0,40}",
        1 => "[\\x00-\\x1f\\x7f]{1,8}",
        2 => prop::sample::select(vec![
            "../../../../etc/passwd",
            "..",
            "/",
            "./artifacts/../ridgeline.db",
            "C:\\Windows\\win.ini",
            "\0",
            "\u{FEFF}\u{202E}gpj.exe",
            "%2e%2e%2f",
            "artifact:../../x",
            "e\u{301}\u{338}\u{35c}",
            "😀🧨",
            " ",
            "null",
            "-1",
            "NaN",
        ])
        .prop_map(String::from),
        1 => (1usize..=3).prop_map(|k| "é".repeat(k * 50_000)),
    ]
    .boxed()
}

/// An id: one of `known`, a spelling of one that UUID parsing accepts, a
/// well-formed id nobody has, or odd text.
fn id_from(known: Vec<String>) -> BoxedStrategy<String> {
    let spellings: Vec<String> = known
        .iter()
        .flat_map(|k| {
            [
                k.to_uppercase(),
                format!(" {k}\n"),
                format!("{{{k}}}"),
                format!("urn:uuid:{k}"),
                k.replace('-', ""),
                format!("{k}x"),
                k[..k.len() - 1].to_string(),
            ]
        })
        .collect();
    let mut s = vec![
        (2, odd_text()),
        (
            1,
            "[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}".boxed(),
        ),
    ];
    if !known.is_empty() {
        s.push((3, prop::sample::select(known).boxed()));
        s.push((2, prop::sample::select(spellings).boxed()));
    }
    proptest::strategy::Union::new_weighted(s).boxed()
}

fn any_u32() -> BoxedStrategy<u32> {
    prop_oneof![
        Just(0u32),
        Just(1),
        Just(2),
        Just(3),
        Just(u32::MAX),
        any::<u32>()
    ]
    .boxed()
}

fn any_u64() -> BoxedStrategy<u64> {
    prop_oneof![
        Just(0u64),
        Just(1),
        Just(u64::MAX),
        Just(1 << 63),
        any::<u64>()
    ]
    .boxed()
}

fn any_f64() -> BoxedStrategy<f64> {
    prop_oneof![
        Just(f64::NAN),
        Just(f64::INFINITY),
        Just(f64::NEG_INFINITY),
        Just(0.0),
        Just(-0.0),
        Just(-1.0),
        Just(0.5),
        Just(f64::MAX),
        Just(f64::MIN_POSITIVE),
        prop::num::f64::ANY,
    ]
    .boxed()
}

/// An enum value on the wire: a known one or anything.
fn any_enum() -> BoxedStrategy<i32> {
    prop_oneof![3 => 0..=5i32, 1 => any::<i32>()].boxed()
}

fn wire_metrics() -> BoxedStrategy<Option<pb::Metrics>> {
    let m = (
        any_f64(),
        any_f64(),
        prop::option::of(any_f64()),
        prop::option::of(any_f64()),
        prop::option::of(any_f64()),
        prop::option::of(any_f64()),
    )
        .prop_map(
            |(loss, metric, accuracy, r2, pearson, majority_fraction)| pb::Metrics {
                loss,
                metric,
                accuracy,
                r2,
                pearson,
                majority_fraction,
            },
        );
    prop::option::weighted(0.85, m).boxed()
}

fn run_end() -> BoxedStrategy<pb::RunEnd> {
    (any_enum(), any_u32(), any_u64(), odd_text())
        .prop_map(|(kind, epoch, step, reason)| pb::RunEnd {
            kind,
            epoch,
            step,
            reason,
        })
        .boxed()
}

/// One measurement: often a plausible one for the sandbox task, often not.
fn progress() -> BoxedStrategy<pb::Progress> {
    use pb::progress::Kind;
    let small = || prop_oneof![3 => 0u32..6, 1 => any_u32()];
    let epoch = (
        small(),
        any_u64(),
        any_f64(),
        any_f64(),
        any_f64(),
        prop::option::of(any_f64()),
        wire_metrics(),
        wire_metrics(),
    )
        .prop_map(
            |(epoch, step, progress, lr, momentum, batch_loss, train, heldout)| {
                Some(Kind::Epoch(pb::EpochReport {
                    epoch,
                    step,
                    progress,
                    lr,
                    momentum,
                    batch_loss,
                    train,
                    heldout,
                }))
            },
        );
    let point = (small(), any_f64(), wire_metrics(), wire_metrics()).prop_map(
        |(index, alpha, train, heldout)| {
            Some(Kind::Point(pb::LinePoint {
                index,
                alpha,
                train,
                heldout,
            }))
        },
    );
    let data = (any_u32(), any_u64(), any_u64(), any_u64()).prop_map(
        |(classes, train_rows, heldout_rows, heldout_in_train)| {
            Some(Kind::Data(pb::DataSummary {
                classes,
                train_rows,
                heldout_rows,
                heldout_in_train,
            }))
        },
    );
    let kind = prop_oneof![
        1 => Just(None),
        4 => epoch,
        4 => point,
        1 => run_end().prop_map(|e| Some(Kind::End(e))),
        1 => data,
    ];
    (odd_text(), kind, odd_text(), any_u32())
        .prop_map(|(curve, kind, task_id, attempt)| pb::Progress {
            curve,
            kind,
            task_id,
            attempt,
        })
        .boxed()
}

fn items() -> BoxedStrategy<Vec<pb::Progress>> {
    // Repeated without the (possibly huge) strings, so the message stays
    // under the size limit and the repetition is what is tested.
    let bare = || {
        progress().prop_map(|mut p| {
            p.curve.clear();
            p.task_id.clear();
            if let Some(pb::progress::Kind::End(e)) = &mut p.kind {
                e.reason.clear();
            }
            p
        })
    };
    // What the sandbox task may well have measured (any metric value).
    let epochs = prop::collection::vec(
        (0u32..=2, any_f64()).prop_map(|(e, m)| epoch_item(e, m)),
        1..4,
    );
    let points = prop::collection::vec(
        (0u32..4, any_f64()).prop_map(|(i, m)| point_item(i, f64::from(i) / 3.0, m)),
        1..4,
    );
    prop_oneof![
        12 => prop::collection::vec(progress(), 0..4),
        4 => epochs,
        4 => points,
        1 => bare().prop_map(|p| vec![p; 10_001]),
        1 => bare().prop_map(|p| vec![p; 3_000]),
    ]
    .boxed()
}

/// Who a worker call speaks as, and for which task attempt.
#[derive(Debug, Clone)]
enum Target {
    /// The sandbox task's current holder and attempt: a valid lease, so the
    /// measurements themselves are what is judged.
    Sandbox,
    Given {
        worker: String,
        task: String,
        attempt: u32,
    },
}

#[derive(Debug, Clone)]
enum Call {
    Register(pb::RegisterRequest),
    Lease(pb::LeaseRequest),
    Report {
        to: Target,
        seq: u64,
        items: Vec<pb::Progress>,
    },
    Complete {
        to: Target,
        end: Option<pb::RunEnd>,
        checkpoint_hash: String,
        epochs_trained: u32,
        /// Claims of queued tasks carried along.
        claims: Vec<Target>,
    },
    Fail {
        to: Target,
        message: String,
        retryable: bool,
        handed_back: bool,
    },
    StartQueued {
        to: Target,
    },
    Download(pb::DownloadArtifactRequest),
    Upload(Vec<pb::ArtifactChunk>),
    Submit(pb::SubmitJobRequest),
    GetJob(pb::GetJobRequest),
    ListJobs,
    Watch(pb::WatchJobRequest),
    Cancel(pb::CancelJobRequest),
    Results(pb::GetResultsRequest),
    ListWorkers,
}

impl Call {
    fn name(&self) -> &'static str {
        match self {
            Call::Register(_) => "Register",
            Call::Lease(_) => "Lease",
            Call::Report { .. } => "Report",
            Call::Complete { .. } => "Complete",
            Call::Fail { .. } => "Fail",
            Call::StartQueued { .. } => "StartQueued",
            Call::Download(_) => "DownloadArtifact",
            Call::Upload(_) => "UploadArtifact",
            Call::Submit(_) => "SubmitJob",
            Call::GetJob(_) => "GetJob",
            Call::ListJobs => "ListJobs",
            Call::Watch(_) => "WatchJob",
            Call::Cancel(_) => "CancelJob",
            Call::Results(_) => "GetResults",
            Call::ListWorkers => "ListWorkers",
        }
    }

    /// The request fields an `INVALID_ARGUMENT` may name (None: any text,
    /// for job files, whose parser names its own fields).
    fn fields(&self) -> Option<&'static [&'static str]> {
        Some(match self {
            Call::Register(_) => &[
                "protocol_version",
                "name",
                "device",
                "slots",
                "memory_bytes",
                "previous_worker_id",
                "lease_ahead",
            ],
            Call::Lease(_) => &["worker_id", "free_slots", "running"],
            Call::Report { .. } => &["worker_id", "task_id", "attempt", "seq", "items"],
            Call::Complete { .. } => &[
                "worker_id",
                "task_id",
                "attempt",
                "end",
                "checkpoint_hash",
                "epochs_trained",
                "queued_starts",
            ],
            Call::Fail { .. } => &["worker_id", "task_id", "attempt", "message"],
            Call::StartQueued { .. } => &["worker_id", "task_id", "attempt"],
            Call::Download(_) | Call::Upload(_) => &["hash", "size", "data"],
            Call::Submit(_) => return None,
            Call::GetJob(_) | Call::Watch(_) | Call::Cancel(_) | Call::Results(_) => &["job_id"],
            Call::ListJobs | Call::ListWorkers => &[],
        })
    }
}

/// The ids the worker-service fuzz may use.
#[derive(Debug, Clone)]
struct Known {
    workers: Vec<String>,
    tasks: Vec<String>,
    hashes: Vec<String>,
}

fn target(k: &Known) -> BoxedStrategy<Target> {
    let given = (
        id_from(k.workers.clone()),
        id_from(k.tasks.clone()),
        any_u32(),
    )
        .prop_map(|(worker, task, attempt)| Target::Given {
            worker,
            task,
            attempt,
        });
    prop_oneof![1 => Just(Target::Sandbox), 1 => given].boxed()
}

fn hash_from(k: &Known) -> BoxedStrategy<String> {
    let spellings: Vec<String> = k
        .hashes
        .iter()
        .flat_map(|h| {
            [
                h.to_uppercase(),
                format!("../{h}"),
                format!("{h}.safetensors"),
                h[1..].to_string(),
            ]
        })
        .collect();
    prop_oneof![
        2 => prop::sample::select(k.hashes.clone()),
        2 => prop::sample::select(spellings),
        2 => "[0-9a-f]{64}",
        2 => odd_text(),
    ]
    .boxed()
}

fn upload_chunks() -> BoxedStrategy<Vec<pb::ArtifactChunk>> {
    let data = prop::collection::vec(prop::collection::vec(any::<u8>(), 0..48), 0..4);
    // How the first chunk announces the artifact: 0-1 honestly, 2 with
    // another hash, 3 with odd text for a hash; and its size: 0-1
    // honestly, 2 one byte short, 3 anything, 4 over the limit.
    let honest = || 0u8..5;
    (
        data,
        honest(),
        honest(),
        "[0-9a-f]{64}",
        odd_text(),
        any_u64(),
    )
        .prop_map(|(data, how_hash, how_size, other, odd, any_size)| {
            let all: Vec<u8> = data.concat();
            let hash = match how_hash {
                0 | 1 => content_hash(&all),
                2 => other,
                _ => odd,
            };
            let size = match how_size {
                0 | 1 => all.len() as u64,
                2 => (all.len() as u64).saturating_sub(1),
                3 => any_size,
                _ => MAX_ARTIFACT + 1,
            };
            data.into_iter()
                .enumerate()
                .map(|(i, data)| pb::ArtifactChunk {
                    hash: if i == 0 { hash.clone() } else { String::new() },
                    size: if i == 0 { size } else { 0 },
                    data,
                })
                .collect()
        })
        .boxed()
}

fn worker_call(k: &Known) -> BoxedStrategy<Call> {
    let workers = || id_from(k.workers.clone());
    let device = prop_oneof![
        3 => Just("cpu".to_string()),
        1 => Just("cuda:0".to_string()),
        3 => prop::sample::select(vec!["cuda:", "cuda:x", "cuda:-1", "cuda:99999999999", "metal:0", "CPU", "cpu ", "cuda:0/../1"]).prop_map(String::from),
        2 => odd_text(),
    ];
    let register = (
        prop_oneof![3 => Just(1u32), 1 => any_u32()],
        odd_text(),
        device,
        any_u32(),
        any_u64(),
        workers(),
        prop_oneof![3 => Just(0u32), 2 => Just(1u32), 1 => any_u32()],
    )
        .prop_map(
            |(
                protocol_version,
                name,
                device,
                slots,
                memory_bytes,
                previous_worker_id,
                lease_ahead,
            )| {
                Call::Register(pb::RegisterRequest {
                    protocol_version,
                    name,
                    device,
                    slots,
                    memory_bytes,
                    previous_worker_id,
                    lease_ahead,
                })
            },
        );
    let running_task = (id_from(k.tasks.clone()), any_u32())
        .prop_map(|(task_id, attempt)| pb::RunningTask { task_id, attempt });
    let running = prop_oneof![
        8 => prop::collection::vec(running_task.clone(), 0..4),
        1 => running_task.prop_map(|t| vec![t; 2_000]),
    ];
    let lease = (workers(), any_u32(), running).prop_map(|(worker_id, free_slots, running)| {
        Call::Lease(pb::LeaseRequest {
            worker_id,
            free_slots,
            running,
            wait_ms: 0,
        })
    });
    let report = (target(k), any_u64(), items()).prop_map(|(to, seq, items)| Call::Report {
        to,
        seq,
        items,
    });
    let checkpoint = prop_oneof![2 => Just(String::new()), 2 => hash_from(k)];
    let complete = (
        target(k),
        prop::option::weighted(0.8, run_end()),
        checkpoint,
        any_u32(),
        prop::collection::vec(target(k), 0..3),
    )
        .prop_map(
            |(to, end, checkpoint_hash, epochs_trained, claims)| Call::Complete {
                to,
                end,
                checkpoint_hash,
                epochs_trained,
                claims,
            },
        );
    let fail = (target(k), odd_text(), any::<bool>(), any::<bool>()).prop_map(
        |(to, message, retryable, handed_back)| Call::Fail {
            to,
            message,
            retryable,
            handed_back,
        },
    );
    let start_queued = target(k).prop_map(|to| Call::StartQueued { to });
    let download =
        hash_from(k).prop_map(|hash| Call::Download(pb::DownloadArtifactRequest { hash }));
    prop_oneof![
        2 => register,
        2 => lease,
        6 => report,
        3 => complete,
        2 => fail,
        1 => start_queued,
        1 => download,
        2 => upload_chunks().prop_map(Call::Upload),
    ]
    .boxed()
}

/// A valid job file with one thing broken (or not).
fn job_text() -> BoxedStrategy<String> {
    let templates = vec![
        jobs::lr_ramp(1, 2, 2),
        jobs::line_search(4, 4),
        jobs::lr_ramp(2, 4, 2),
    ];
    let values = vec![
        "nan",
        "inf",
        "-inf",
        "-1",
        "0",
        "1e308",
        "-1e-308",
        "18446744073709551615",
        "-9223372036854775809",
        "\"x\"",
        "[]",
        "{}",
        "\"../../etc/passwd\"",
        "\"artifact:0000\"",
        "true",
        "99999999",
    ];
    (
        prop::sample::select(templates),
        any::<prop::sample::Index>(),
        0u8..5,
        prop::sample::select(values),
        odd_text(),
    )
        .prop_map(|(text, at, how, value, junk)| {
            let mut lines: Vec<String> = text.lines().map(String::from).collect();
            let i = at.index(lines.len());
            match how {
                0 => {
                    if let Some((key, _)) = lines[i].split_once('=') {
                        lines[i] = format!("{key}= {value}");
                    }
                }
                1 => {
                    lines.remove(i);
                }
                2 => {
                    let l = lines[i].clone();
                    lines.insert(i, l);
                }
                3 => lines.insert(i, junk),
                _ => {}
            }
            lines.join("\n")
        })
        .boxed()
}

fn job_call(live_job: &str, done_job: &str) -> BoxedStrategy<Call> {
    // Reading may name the live job; cancelling may not (that would be a
    // valid change).
    let any_job = || id_from(vec![live_job.to_string(), done_job.to_string()]);
    let text = prop_oneof![
        4 => job_text(),
        2 => odd_text(),
        1 => Just(jobs::lr_ramp(1, 2, 2) + &"# padding\n".repeat(110_000)),
    ];
    let format = prop_oneof![3 => Just(1), 1 => Just(0), 1 => Just(2), 1 => any_enum()];
    let submit = (text, format)
        .prop_map(|(text, format)| Call::Submit(pb::SubmitJobRequest { text, format }));
    prop_oneof![
        4 => submit,
        2 => any_job().prop_map(|job_id| Call::GetJob(pb::GetJobRequest { job_id })),
        1 => Just(Call::ListJobs),
        2 => any_job().prop_map(|job_id| Call::Watch(pb::WatchJobRequest { job_id })),
        2 => id_from(vec![done_job.to_string()]).prop_map(|job_id| Call::Cancel(pb::CancelJobRequest { job_id })),
        2 => any_job().prop_map(|job_id| Call::Results(pb::GetResultsRequest { job_id })),
        1 => Just(Call::ListWorkers),
    ]
    .boxed()
}

// ------------------------------------------------------------ driving

/// A task the fuzz may report for as its holder: an lr_ramp chunk or a
/// line search, made afresh whenever the fuzz has ended the last one.
struct Sandbox {
    worker: String,
    job: String,
    task: String,
    attempt: u32,
    made: usize,
}

impl Sandbox {
    async fn ensure(&mut self, jobs: &mut Jobs, w: &mut Workers) {
        let status = jobs
            .get_job(pb::GetJobRequest {
                job_id: self.job.clone(),
            })
            .await
            .expect("get job")
            .into_inner();
        let held = status.tasks.iter().any(|t| {
            t.task_id == self.task
                && t.state == pb::TaskState::Leased as i32
                && t.worker_id == self.worker
                && t.attempt == self.attempt
        });
        if held {
            return;
        }
        // Whatever the fuzz left queued goes, so the sandbox worker gets the
        // new task and nothing else.
        jobs.cancel_job(pb::CancelJobRequest {
            job_id: self.job.clone(),
        })
        .await
        .expect("cancel");
        // The fuzz may have re-registered it as another device.
        w.register(pb::RegisterRequest {
            protocol_version: ridgeline_common::proto::PROTOCOL_VERSION,
            name: "sandbox".into(),
            device: "cpu".into(),
            slots: 1,
            memory_bytes: 0,
            previous_worker_id: self.worker.clone(),
            lease_ahead: 0,
        })
        .await
        .expect("register");
        self.made += 1;
        let text = if self.made.is_multiple_of(2) {
            jobs::line_search(4, 4)
        } else {
            jobs::lr_ramp(1, 2, 2)
        };
        self.job = submit(jobs, &text).await.expect("submit");
        let t = lease_one(w, &self.worker).await;
        assert_eq!(t.job_id, self.job);
        self.task = t.task_id;
        self.attempt = t.attempt;
    }

    fn resolve(&self, to: &Target) -> (String, String, u32) {
        match to {
            Target::Sandbox => (self.worker.clone(), self.task.clone(), self.attempt),
            Target::Given {
                worker,
                task,
                attempt,
            } => (worker.clone(), task.clone(), *attempt),
        }
    }
}

/// Sends `call`; Ok(()) or the refusal. Streams are read to their end (a
/// watch of a running job: its first event).
async fn send(
    call: &Call,
    jobs: &mut Jobs,
    w: &mut Workers,
    sandbox: Option<&Sandbox>,
) -> Result<(), Status> {
    let resolve = |to: &Target| sandbox.expect("a sandbox for worker calls").resolve(to);
    match call.clone() {
        Call::Register(r) => w.register(r).await.map(drop),
        Call::Lease(r) => w.lease(r).await.map(drop),
        Call::Report { to, seq, items } => {
            let (worker_id, task_id, attempt) = resolve(&to);
            w.report(pb::ReportRequest {
                worker_id,
                task_id,
                attempt,
                seq,
                items,
            })
            .await
            .map(drop)
        }
        Call::Complete {
            to,
            end,
            checkpoint_hash,
            epochs_trained,
            claims,
        } => {
            let (worker_id, task_id, attempt) = resolve(&to);
            let queued_starts = claims
                .iter()
                .map(|c| {
                    let (_, task_id, attempt) = resolve(c);
                    pb::RunningTask { task_id, attempt }
                })
                .collect();
            w.complete(pb::CompleteRequest {
                worker_id,
                task_id,
                attempt,
                end,
                checkpoint_hash,
                epochs_trained,
                engine_ms: 0,
                next_slots: 0,
                queued_ms: 0,
                queued_starts,
                last_report: None,
            })
            .await
            .map(drop)
        }
        Call::Fail {
            to,
            message,
            retryable,
            handed_back,
        } => {
            let (worker_id, task_id, attempt) = resolve(&to);
            w.fail(pb::FailRequest {
                worker_id,
                task_id,
                attempt,
                message,
                retryable,
                handed_back,
            })
            .await
            .map(drop)
        }
        Call::StartQueued { to } => {
            let (worker_id, task_id, attempt) = resolve(&to);
            w.start_queued(pb::StartQueuedRequest {
                worker_id,
                task_id,
                attempt,
            })
            .await
            .map(drop)
        }
        Call::Download(r) => {
            let mut s = w.download_artifact(r).await?.into_inner();
            while s.message().await?.is_some() {}
            Ok(())
        }
        Call::Upload(chunks) => upload(w, chunks).await.map(drop),
        Call::Submit(r) => jobs.submit_job(r).await.map(drop),
        Call::GetJob(r) => jobs.get_job(r).await.map(drop),
        Call::ListJobs => jobs.list_jobs(pb::ListJobsRequest {}).await.map(drop),
        Call::Watch(r) => {
            let mut s = jobs.watch_job(r).await?.into_inner();
            let first = s.message().await?.expect("a watch starts with a snapshot");
            assert!(
                matches!(first.kind, Some(pb::job_event::Kind::Snapshot(_))),
                "{first:?}"
            );
            Ok(())
        }
        Call::Cancel(r) => jobs.cancel_job(r).await.map(drop),
        Call::Results(r) => jobs.get_results(r).await.map(drop),
        Call::ListWorkers => jobs.list_workers(pb::ListWorkersRequest {}).await.map(drop),
    }
}

/// Whether a refusal is a clean one, and an `INVALID_ARGUMENT` names one of
/// the call's fields.
fn check_refusal(call: &Call, status: &Status) -> Result<(), TestCaseError> {
    let clean = [
        Code::InvalidArgument,
        Code::NotFound,
        Code::FailedPrecondition,
        Code::PermissionDenied,
        Code::OutOfRange,
        Code::ResourceExhausted,
    ];
    prop_assert!(
        clean.contains(&status.code()),
        "unclean refusal: {:?}: {}",
        status.code(),
        clip(status.message())
    );
    prop_assert!(
        !status.message().is_empty(),
        "a refusal without a message: {status:?}"
    );
    prop_assert!(
        status.message().len() < 4_000,
        "a refusal echoing its input: {} bytes",
        status.message().len()
    );
    if status.code() == Code::InvalidArgument {
        if let Some(fields) = call.fields() {
            let named = status
                .message()
                .strip_prefix('`')
                .and_then(|m| m.split(['`', '.', '[']).next())
                .unwrap_or("");
            prop_assert!(
                fields.contains(&named),
                "the refusal does not name a field of the request: {}",
                clip(status.message())
            );
        }
    }
    Ok(())
}

fn clip(s: &str) -> String {
    s.chars().take(300).collect()
}

/// How often each call got each answer (printed with `--nocapture`).
type Tally = std::sync::Mutex<std::collections::BTreeMap<String, usize>>;

fn print(tally: Tally) {
    let tally = tally.into_inner().unwrap_or_else(|p| p.into_inner());
    eprintln!("answers: {tally:?}");
}

fn runner() -> TestRunner {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(64);
    TestRunner::new(Config {
        cases,
        failure_persistence: None,
        // Each shrink step is a round trip to the coordinator: enough to get
        // a readable case, not an exhaustive one.
        max_shrink_iters: 256,
        ..Config::default()
    })
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

/// Runs `call` against the fixture and checks the answer, that the
/// coordinator still answers, that no upload left a partial file behind,
/// and (`must_not_change`) that the fixture's jobs are as before.
async fn case(
    f: &Fixture,
    call: &Call,
    sandbox: Option<&mut Sandbox>,
    before: &str,
    tally: &Tally,
) -> Result<(), TestCaseError> {
    let (mut jobs, mut w) = (f.jobs.clone(), f.workers.clone());
    let sandbox = match sandbox {
        Some(s) => {
            s.ensure(&mut jobs, &mut w).await;
            Some(&*s)
        }
        None => None,
    };
    let sandbox_before = match sandbox {
        Some(s) => Some(job_snapshot(&mut jobs, &s.job).await),
        None => None,
    };
    let artifacts_before = files(&f.artifacts_dir());
    let answer = tokio::time::timeout(CALL, send(call, &mut jobs, &mut w, sandbox))
        .await
        .map_err(|_| TestCaseError::fail(format!("no answer within {CALL:?}")))?;
    let code = answer.as_ref().err().map_or(Code::Ok, Status::code);
    *tally
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .entry(format!("{} {code:?}", call.name()))
        .or_default() += 1;
    if let Err(status) = &answer {
        check_refusal(call, status)?;
    }
    // Still serving.
    let listed = tokio::time::timeout(CALL, jobs.list_jobs(pb::ListJobsRequest {})).await;
    prop_assert!(
        matches!(listed, Ok(Ok(_))),
        "the coordinator stopped answering: {listed:?}"
    );
    let artifacts = files(&f.artifacts_dir());
    prop_assert!(
        !artifacts.iter().any(|n| n.ends_with(".part")),
        "a partial upload was left behind: {artifacts:?}"
    );
    if answer.is_err() {
        prop_assert_eq!(
            &artifacts,
            &artifacts_before,
            "a refused call changed the artifacts"
        );
        if let (Some(s), Some(b)) = (sandbox, sandbox_before) {
            let after = job_snapshot(&mut jobs, &s.job).await;
            prop_assert!(
                after == b,
                "a refused call changed the sandbox job:\nbefore {b}\nafter {after}"
            );
        }
    }
    let after = f.snapshot().await;
    prop_assert!(
        after == before,
        "the fixture's jobs changed:\nbefore {before}\nafter {after}"
    );
    Ok(())
}

#[test]
fn every_worker_call_is_answered_cleanly_and_refusals_change_nothing() {
    let rt = rt();
    let (f, sandbox, before) = rt.block_on(async {
        let f = Fixture::start().await;
        let mut w = f.workers.clone();
        let worker = register(&mut w, "sandbox").await;
        // Holds nothing yet (the done job is no sandbox): made on the first case.
        let sandbox = Sandbox {
            worker,
            job: f.done_job.clone(),
            task: String::new(),
            attempt: 0,
            made: 0,
        };
        let before = f.snapshot().await;
        (f, sandbox, before)
    });
    let known = Known {
        // Never the live task's holder: its reports would be valid.
        workers: vec![
            f.fuzz_worker.clone(),
            f.done_worker.clone(),
            sandbox.worker.clone(),
        ],
        tasks: vec![f.live_task.clone(), f.done_task.clone()],
        hashes: vec![f.artifact.clone()],
    };
    let sandbox = std::sync::Mutex::new(sandbox);
    let tally = Tally::default();
    runner()
        .run(&worker_call(&known), |call| {
            let mut s = sandbox.lock().unwrap_or_else(|p| p.into_inner());
            rt.block_on(case(&f, &call, Some(&mut *s), &before, &tally))
        })
        .unwrap();
    print(tally);
    // The live task's lease survived it all: its holder still reports.
    rt.block_on(async {
        let mut w = f.workers.clone();
        let t = pb::TaskAssignment {
            task_id: f.live_task.clone(),
            attempt: 1,
            ..Default::default()
        };
        let r = report(&mut w, &f.holder, &t, 2, vec![epoch_item(2, 0.6)]).await;
        assert!(r.expect("the holder's report").stored);
    });
    rt.block_on(f.c.stop());
}

#[test]
fn every_job_call_is_answered_cleanly_and_refusals_change_nothing() {
    let rt = rt();
    let (f, before) = rt.block_on(async {
        let f = Fixture::start().await;
        let before = f.snapshot().await;
        (f, before)
    });
    let tally = Tally::default();
    runner()
        .run(&job_call(&f.live_job, &f.done_job), |call| {
            rt.block_on(case(&f, &call, None, &before, &tally))
        })
        .unwrap();
    print(tally);
    // Whatever the fuzz submitted, a good job is still accepted.
    rt.block_on(async {
        let mut jobs = f.jobs.clone();
        submit(&mut jobs, &jobs::lr_ramp(1, 2, 2))
            .await
            .expect("submit after the fuzz");
    });
    rt.block_on(f.c.stop());
}

// ------------------------------------------------------------ targeted

/// Refused, with this code.
fn refused<T: std::fmt::Debug>(r: Result<T, Status>, code: Code) -> Status {
    let e = r.expect_err("refused");
    assert_eq!(e.code(), code, "{e:?}");
    e
}

#[tokio::test]
async fn reports_for_tasks_not_held_or_of_another_attempt_are_refused_and_not_recorded() {
    let dir = tempfile::tempdir().unwrap();
    let c = Coordinator::start_with("127.0.0.1:0".parse().unwrap(), config(dir.path())).await;
    let mut jobs = c.jobs().await;
    let mut w = c.workers().await;
    let job = submit(&mut jobs, &jobs::lr_ramp(1, 3, 3)).await.unwrap();
    let other_job = submit(&mut jobs, &jobs::lr_ramp(1, 3, 3)).await.unwrap();
    let a = register(&mut w, "a").await;
    let b = register(&mut w, "b").await;
    let task = lease_one(&mut w, &a).await;
    assert_eq!(task.job_id, job);
    let pending = jobs
        .get_job(pb::GetJobRequest {
            job_id: other_job.clone(),
        })
        .await
        .unwrap()
        .into_inner()
        .tasks[0]
        .task_id
        .clone();
    let before = (
        job_snapshot(&mut jobs, &job).await,
        job_snapshot(&mut jobs, &other_job).await,
    );

    let wrong = |worker: &str, task_id: &str, attempt: u32| {
        let t = pb::TaskAssignment {
            task_id: task_id.into(),
            attempt,
            ..Default::default()
        };
        (worker.to_string(), t)
    };
    let cases = [
        (wrong(&b, &task.task_id, 1), Code::FailedPrecondition),
        (wrong(&a, &task.task_id, 0), Code::FailedPrecondition),
        (wrong(&a, &task.task_id, 2), Code::FailedPrecondition),
        (wrong(&a, &task.task_id, u32::MAX), Code::FailedPrecondition),
        (wrong(&a, &pending, 1), Code::FailedPrecondition),
        (wrong(&a, &uuid_nobody_has(), 1), Code::NotFound),
        (wrong(&a, "../../tasks", 1), Code::InvalidArgument),
        (
            wrong(&task.task_id, &task.task_id, 1),
            Code::FailedPrecondition,
        ),
    ];
    for (seq, ((worker, t), code)) in cases.iter().enumerate() {
        let e = refused(
            report(&mut w, worker, t, seq as u64 + 1, vec![epoch_item(1, 0.5)]).await,
            *code,
        );
        if *code == Code::FailedPrecondition {
            assert!(e.message().contains("report refused"), "{}", e.message());
        }
        let complete = w
            .complete(pb::CompleteRequest {
                worker_id: worker.clone(),
                task_id: t.task_id.clone(),
                attempt: t.attempt,
                end: end(pb::run_end::Kind::Completed, 3),
                checkpoint_hash: String::new(),
                epochs_trained: 3,
                engine_ms: 0,
                next_slots: 0,
                queued_ms: 0,
                queued_starts: vec![],
                last_report: None,
            })
            .await;
        refused(complete, *code);
        let fail = w
            .fail(pb::FailRequest {
                worker_id: worker.clone(),
                task_id: t.task_id.clone(),
                attempt: t.attempt,
                message: "not mine".into(),
                retryable: false,
                handed_back: false,
            })
            .await;
        refused(fail, *code);
    }
    // A heartbeat naming a task the worker does not hold renews nothing and
    // tells it to stop.
    let hb = w
        .lease(pb::LeaseRequest {
            worker_id: b.clone(),
            free_slots: 0,
            running: vec![pb::RunningTask {
                task_id: task.task_id.clone(),
                attempt: 1,
            }],
            wait_ms: 0,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(hb.stop, vec![task.task_id.clone()]);
    let after = (
        job_snapshot(&mut jobs, &job).await,
        job_snapshot(&mut jobs, &other_job).await,
    );
    assert_eq!(after, before, "nothing refused was recorded");
    let workers = jobs
        .list_workers(pb::ListWorkersRequest {})
        .await
        .unwrap()
        .into_inner()
        .workers;
    assert!(
        workers.iter().all(|w| w.tasks_done == 0),
        "no refused completion counted: {workers:?}"
    );

    // The holder's own report and completion go through, once.
    let r = report(&mut w, &a, &task, 1, vec![epoch_item(1, 0.5)])
        .await
        .unwrap();
    assert!(r.stored);
    w.complete(pb::CompleteRequest {
        worker_id: a.clone(),
        task_id: task.task_id.clone(),
        attempt: 1,
        end: end(pb::run_end::Kind::Completed, 3),
        checkpoint_hash: String::new(),
        epochs_trained: 3,
        engine_ms: 0,
        next_slots: 0,
        queued_ms: 0,
        queued_starts: vec![],
        last_report: None,
    })
    .await
    .unwrap();
    let s = wait_for_end(&mut jobs, &job, Duration::from_secs(10)).await;
    assert_eq!(s.state, pb::JobState::Succeeded as i32);
    assert_eq!(s.epochs_trained, 3, "only the holder's completion counted");
    let results = jobs
        .get_results(pb::GetResultsRequest {
            job_id: job.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(results.curves.len(), 1);
    assert_eq!(
        results.curves[0].points.len(),
        1,
        "only the holder's report: {results:?}"
    );
    // After the task is done, its holder's late reports are refused too.
    refused(
        report(&mut w, &a, &task, 2, vec![epoch_item(2, 0.6)]).await,
        Code::FailedPrecondition,
    );
    c.stop().await;
}

fn uuid_nobody_has() -> String {
    "6f1c2d7e-5b4a-4c3d-9e8f-0a1b2c3d4e5f".into()
}

#[tokio::test]
async fn measurements_a_task_cannot_have_made_are_refused_naming_the_field() {
    let dir = tempfile::tempdir().unwrap();
    let c = Coordinator::start_with("127.0.0.1:0".parse().unwrap(), config(dir.path())).await;
    let mut jobs = c.jobs().await;
    let mut w = c.workers().await;
    let a = register(&mut w, "a").await;
    // A two-chunk run (epochs 0-2, 2-4) and a line search over 4 points.
    let ramp = submit(&mut jobs, &jobs::lr_ramp(1, 4, 2)).await.unwrap();
    let chunk = lease_one(&mut w, &a).await;
    assert_eq!(chunk.job_id, ramp);
    let bad: Vec<(Vec<pb::Progress>, &str)> = vec![
        (vec![pb::Progress::default()], "`items[0].kind`"),
        (
            vec![epoch_item(1, 0.5), {
                let mut p = epoch_item(2, 0.5);
                if let Some(pb::progress::Kind::Epoch(e)) = &mut p.kind {
                    e.heldout = None;
                }
                p
            }],
            "`items[1].epoch.heldout`",
        ),
        (vec![epoch_item(3, 0.5)], "`items[0].epoch.epoch`"),
        (vec![point_item(0, 0.0, 0.5)], "`items[0].point`"),
        (
            vec![pb::Progress {
                kind: Some(pb::progress::Kind::End(pb::RunEnd {
                    kind: 42,
                    ..Default::default()
                })),
                ..Default::default()
            }],
            "`items[0].end.kind`",
        ),
    ];
    let before = job_snapshot(&mut jobs, &ramp).await;
    for (seq, (items, field)) in bad.into_iter().enumerate() {
        let e = refused(
            report(&mut w, &a, &chunk, seq as u64 + 1, items).await,
            Code::InvalidArgument,
        );
        assert!(
            e.message().starts_with(field),
            "{field} not named: {}",
            e.message()
        );
    }
    assert_eq!(
        job_snapshot(&mut jobs, &ramp).await,
        before,
        "nothing of a refused report is stored"
    );
    // A refused seq is not burnt: the same seq, sent right, is stored.
    assert!(
        report(&mut w, &a, &chunk, 1, vec![epoch_item(1, 0.5)])
            .await
            .unwrap()
            .stored
    );
    jobs.cancel_job(pb::CancelJobRequest { job_id: ramp })
        .await
        .unwrap();

    let search = submit(&mut jobs, &jobs::line_search(4, 4)).await.unwrap();
    let block = lease_one(&mut w, &a).await;
    assert_eq!(block.job_id, search);
    for (items, field) in [
        (vec![point_item(4, 1.0, 0.5)], "`items[0].point.index`"),
        (
            vec![point_item(0, 0.0, 0.5), point_item(u32::MAX, 1.0, 0.5)],
            "`items[1].point.index`",
        ),
        (vec![epoch_item(0, 0.5)], "`items[0].epoch`"),
        (
            vec![pb::Progress {
                kind: Some(pb::progress::Kind::Point(pb::LinePoint {
                    index: 0,
                    ..Default::default()
                })),
                ..Default::default()
            }],
            "`items[0].point.train`",
        ),
    ] {
        let e = refused(
            report(&mut w, &a, &block, 1, items).await,
            Code::InvalidArgument,
        );
        assert!(
            e.message().starts_with(field),
            "{field} not named: {}",
            e.message()
        );
    }
    let results = jobs
        .get_results(pb::GetResultsRequest {
            job_id: search.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(results.curves.is_empty(), "{results:?}");
    // Completion: a missing or unknown end, a checkpoint that is not a hash.
    for (end, hash, field) in [
        (None, "", "`end`"),
        (
            Some(pb::RunEnd {
                kind: 7,
                ..Default::default()
            }),
            "",
            "`end.kind`",
        ),
        (
            end(pb::run_end::Kind::Completed, 0),
            "../../ridgeline.db",
            "`checkpoint_hash`",
        ),
    ] {
        let e = refused(
            w.complete(pb::CompleteRequest {
                worker_id: a.clone(),
                task_id: block.task_id.clone(),
                attempt: block.attempt,
                end,
                checkpoint_hash: hash.repeat(10_000),
                epochs_trained: 0,
                engine_ms: 0,
                next_slots: 0,
                queued_ms: 0,
                queued_starts: vec![],
                last_report: None,
            })
            .await,
            Code::InvalidArgument,
        );
        assert!(
            e.message().starts_with(field),
            "{field} not named: {}",
            e.message()
        );
        assert!(
            e.message().len() < 500,
            "the refusal echoes its input: {} bytes",
            e.message().len()
        );
    }
    c.stop().await;
}

#[tokio::test]
async fn messages_over_the_size_limit_are_refused_and_the_coordinator_keeps_serving() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path());
    cfg.max_message_bytes = 256 << 10;
    let c = Coordinator::start_with("127.0.0.1:0".parse().unwrap(), cfg).await;
    let mut jobs = c.jobs().await;
    let mut w = c.workers().await;
    let big = jobs::lr_ramp(1, 2, 2) + &"# padding\n".repeat(30_000);
    let e = submit(&mut jobs, &big).await.unwrap_err();
    assert!(
        matches!(e.code(), Code::OutOfRange | Code::ResourceExhausted),
        "{e:?}"
    );
    let a = register(&mut w, "a").await;
    let e = w
        .report(pb::ReportRequest {
            worker_id: a.clone(),
            task_id: uuid_nobody_has(),
            attempt: 1,
            seq: 1,
            items: vec![epoch_item(1, 0.5); 5_000],
        })
        .await
        .unwrap_err();
    assert!(
        matches!(e.code(), Code::OutOfRange | Code::ResourceExhausted),
        "{e:?}"
    );
    let chunk = vec![0u8; 300 << 10];
    let e = upload(
        &mut w,
        vec![pb::ArtifactChunk {
            hash: content_hash(&chunk),
            size: chunk.len() as u64,
            data: chunk,
        }],
    )
    .await
    .unwrap_err();
    assert!(
        matches!(e.code(), Code::OutOfRange | Code::ResourceExhausted),
        "{e:?}"
    );
    assert!(files(&dir.path().join("artifacts")).is_empty());
    // Still serving, nothing stored; a job under the limit goes through.
    let listed = jobs
        .list_jobs(pb::ListJobsRequest {})
        .await
        .unwrap()
        .into_inner();
    assert!(listed.jobs.is_empty(), "{listed:?}");
    let job = submit(&mut jobs, &jobs::lr_ramp(1, 2, 2)).await.unwrap();
    assert_eq!(lease_one(&mut w, &a).await.job_id, job);
    c.stop().await;

    // Under the message limit but over the job-file limit (1 MiB): named.
    let dir = tempfile::tempdir().unwrap();
    let c = Coordinator::start_with("127.0.0.1:0".parse().unwrap(), config(dir.path())).await;
    let mut jobs = c.jobs().await;
    let e = submit(
        &mut jobs,
        &(jobs::lr_ramp(1, 2, 2) + &"# padding\n".repeat(110_000)),
    )
    .await
    .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(e.message().starts_with("`text`"), "{}", e.message());
    // Over the default 8 MiB message limit.
    let e = submit(
        &mut jobs,
        &(jobs::lr_ramp(1, 2, 2) + &"# padding\n".repeat(900_000)),
    )
    .await
    .unwrap_err();
    assert!(
        matches!(e.code(), Code::OutOfRange | Code::ResourceExhausted),
        "{e:?}"
    );
    assert!(jobs
        .list_jobs(pb::ListJobsRequest {})
        .await
        .unwrap()
        .into_inner()
        .jobs
        .is_empty());
    c.stop().await;
}

#[tokio::test]
async fn an_upload_announced_over_the_limit_is_refused_on_its_first_chunk() {
    let dir = tempfile::tempdir().unwrap();
    let c = Coordinator::start_with("127.0.0.1:0".parse().unwrap(), config(dir.path())).await;
    let mut w = c.workers().await;
    let (tx, rx) = mpsc::channel(4);
    tx.send(pb::ArtifactChunk {
        hash: "ab".repeat(32),
        size: MAX_ARTIFACT * 1000,
        data: vec![7; 1000],
    })
    .await
    .unwrap();
    // The rest is never sent: the answer must come while the stream is
    // still open.
    let answer = tokio::time::timeout(
        Duration::from_secs(10),
        w.upload_artifact(ReceiverStream::new(rx)),
    )
    .await
    .expect("refused before the rest of the stream");
    let e = refused(answer, Code::OutOfRange);
    assert!(
        e.message().starts_with("`size`") && e.message().contains(&MAX_ARTIFACT.to_string()),
        "{}",
        e.message()
    );
    assert!(files(&dir.path().join("artifacts")).is_empty());
    drop(tx);
    c.stop().await;
}

#[tokio::test]
async fn overlong_short_or_mismatched_uploads_leave_no_file_and_no_record() {
    let dir = tempfile::tempdir().unwrap();
    let c = Coordinator::start_with("127.0.0.1:0".parse().unwrap(), config(dir.path())).await;
    let mut w = c.workers().await;
    let mut jobs = c.jobs().await;
    let artifacts = dir.path().join("artifacts");
    let data = b"0123456789abcdefghij".to_vec();
    let chunk = |hash: &str, size: u64, data: &[u8]| pb::ArtifactChunk {
        hash: hash.into(),
        size,
        data: data.to_vec(),
    };
    let more = |d: &[u8]| pb::ArtifactChunk {
        data: d.to_vec(),
        ..Default::default()
    };
    let h = content_hash(&data);
    let cases: Vec<(Vec<pb::ArtifactChunk>, &str, String)> = vec![
        // More bytes than announced (in the first chunk, and later).
        (vec![chunk(&h, 10, &data)], "`size`", h.clone()),
        (
            vec![chunk(&h, 10, &data[..5]), more(&data[5..])],
            "`size`",
            h.clone(),
        ),
        // Fewer.
        (
            vec![chunk(&h, 30, &data[..10]), more(&data[10..])],
            "`size`",
            h.clone(),
        ),
        // The content is not what the hash says.
        (
            vec![chunk(&content_hash(b"other"), 20, &data)],
            "`hash`",
            content_hash(b"other"),
        ),
        (
            vec![chunk(&h, 20, &data[..10]), more(b"ABCDEFGHIJ")],
            "`hash`",
            h.clone(),
        ),
        // No hash, a path for a hash, nothing at all.
        (vec![chunk("", 20, &data)], "`hash`", h.clone()),
        (
            vec![chunk(&format!("../{}", &h[3..]), 20, &data)],
            "`hash`",
            h.clone(),
        ),
        (vec![], "`hash`", h.clone()),
    ];
    for (chunks, field, hash) in cases {
        let e = refused(upload(&mut w, chunks).await, Code::InvalidArgument);
        assert!(
            e.message().starts_with(field),
            "{field} not named: {}",
            e.message()
        );
        assert!(
            files(&artifacts).is_empty(),
            "left behind: {:?}",
            files(&artifacts)
        );
        // No record: a job cannot use it, and it cannot be downloaded.
        let job = jobs::lr_ramp(1, 2, 2).replace(
            "kind = \"tabular\"\nn_train = 600\nn_heldout = 200\nseed = 5",
            &format!("kind = \"npy\"\nx = \"artifact:{hash}\"\ny = \"artifact:{hash}\""),
        );
        let e = refused(submit(&mut jobs, &job).await, Code::InvalidArgument);
        assert!(e.message().contains("never uploaded"), "{}", e.message());
        let e = w
            .download_artifact(pb::DownloadArtifactRequest { hash: hash.clone() })
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::NotFound);
    }
    // An upload abandoned half-way leaves nothing either.
    let (tx, rx) = mpsc::channel(4);
    tx.send(chunk(&h, 20, &data[..10])).await.unwrap();
    let call = tokio::spawn({
        let mut w = w.clone();
        async move { w.upload_artifact(ReceiverStream::new(rx)).await }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    call.abort();
    drop(tx);
    let mut left = files(&artifacts);
    for _ in 0..50 {
        if left.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        left = files(&artifacts);
    }
    assert!(left.is_empty(), "left behind: {left:?}");
    // The right upload works, and is the only file.
    assert_eq!(
        upload(&mut w, vec![chunk(&h, 20, &data[..10]), more(&data[10..])])
            .await
            .unwrap(),
        h
    );
    assert_eq!(files(&artifacts), vec![format!("{h}.safetensors")]);
    c.stop().await;
}

#[tokio::test]
async fn nan_and_infinite_metrics_are_recorded_as_sent_and_end_in_divergence() {
    // What the code intends (common/src/wire.rs `check_progress`, the ramp
    // and plateau analyses): a non-finite metric is not a malformed message
    // but how divergence reads; a run that diverged ends with
    // `end.kind = DIVERGED`, and its later chunks are cancelled.
    let dir = tempfile::tempdir().unwrap();
    let c = Coordinator::start_with("127.0.0.1:0".parse().unwrap(), config(dir.path())).await;
    let mut jobs = c.jobs().await;
    let mut w = c.workers().await;
    let a = register(&mut w, "a").await;
    let job = submit(&mut jobs, &jobs::lr_ramp(1, 4, 2)).await.unwrap();
    let chunk = lease_one(&mut w, &a).await;
    let mut diverged = epoch_item(2, 0.5);
    if let Some(pb::progress::Kind::Epoch(e)) = &mut diverged.kind {
        e.heldout = Some(pb::Metrics {
            loss: f64::INFINITY,
            metric: f64::NAN,
            ..Default::default()
        });
        e.train = Some(pb::Metrics {
            loss: f64::NAN,
            metric: f64::NEG_INFINITY,
            ..Default::default()
        });
        e.batch_loss = Some(f64::INFINITY);
    }
    assert!(
        report(&mut w, &a, &chunk, 1, vec![epoch_item(1, 0.5), diverged])
            .await
            .unwrap()
            .stored
    );
    w.complete(pb::CompleteRequest {
        worker_id: a.clone(),
        task_id: chunk.task_id.clone(),
        attempt: chunk.attempt,
        end: Some(pb::RunEnd {
            kind: pb::run_end::Kind::Diverged as i32,
            epoch: 2,
            step: 20,
            reason: "training loss became NaN".into(),
        }),
        // A diverged chunk hands on no checkpoint.
        checkpoint_hash: String::new(),
        epochs_trained: 2,
        engine_ms: 0,
        next_slots: 0,
        queued_ms: 0,
        queued_starts: vec![],
        last_report: None,
    })
    .await
    .unwrap();
    let s = wait_for_end(&mut jobs, &job, Duration::from_secs(10)).await;
    assert_eq!(s.state, pb::JobState::Succeeded as i32, "{s:#?}");
    assert_eq!(
        s.tasks[1].state,
        pb::TaskState::Cancelled as i32,
        "the rest of the run was cancelled"
    );
    let results = jobs
        .get_results(pb::GetResultsRequest {
            job_id: job.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    let curve = &results.curves[0];
    assert_eq!(curve.points.len(), 2);
    let last = curve.points[1].heldout.expect("heldout");
    assert!(
        last.metric.is_nan() && last.loss == f64::INFINITY,
        "{last:?}"
    );
    assert_eq!(
        curve.end.as_ref().map(|e| e.kind),
        Some(pb::run_end::Kind::Diverged as i32)
    );
    assert!(results.aggregates[0].heldout_mean[1].is_nan());

    // A line-search point past the cliff: stored as measured.
    let search = submit(&mut jobs, &jobs::line_search(4, 4)).await.unwrap();
    let block = lease_one(&mut w, &a).await;
    assert_eq!(block.job_id, search);
    let mut far = point_item(3, 1.0, 0.5);
    if let Some(pb::progress::Kind::Point(p)) = &mut far.kind {
        p.heldout = Some(pb::Metrics {
            loss: f64::INFINITY,
            metric: f64::NAN,
            ..Default::default()
        });
    }
    assert!(
        report(&mut w, &a, &block, 1, vec![point_item(0, 0.0, 0.5), far])
            .await
            .unwrap()
            .stored
    );
    let results = jobs
        .get_results(pb::GetResultsRequest { job_id: search })
        .await
        .unwrap()
        .into_inner();
    let points = &results.curves[0].points;
    assert_eq!(points.len(), 2);
    assert!(points[1].heldout.expect("heldout").metric.is_nan());
    c.stop().await;
}

/// `GetJobRequest` / `ReportRequest` with bytes where the ids are strings:
/// what a client that does not check UTF-8 would send.
#[derive(Clone, PartialEq, prost::Message)]
struct RawIds {
    #[prost(bytes = "vec", tag = "1")]
    first: Vec<u8>,
    #[prost(bytes = "vec", tag = "2")]
    second: Vec<u8>,
}

#[tokio::test]
async fn ids_that_are_not_utf8_are_refused_by_the_decoder_naming_the_field() {
    // Not one of the codes above: tonic answers a message that does not
    // decode as INTERNAL (the gRPC status-code guide's choice for parse
    // errors), before any handler runs; the message names the field.
    let dir = tempfile::tempdir().unwrap();
    let c = Coordinator::start_with("127.0.0.1:0".parse().unwrap(), config(dir.path())).await;
    let channel = tonic::transport::Endpoint::from_shared(c.url())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut grpc = tonic::client::Grpc::new(channel);
    for (path, field) in [
        ("/ridgeline.v1.JobService/GetJob", "GetJobRequest.job_id"),
        (
            "/ridgeline.v1.WorkerService/Report",
            "ReportRequest.worker_id",
        ),
    ] {
        grpc.ready().await.unwrap();
        let raw = RawIds {
            first: vec![0xff, 0xfe, b'.', b'.', b'/', 0xc0],
            second: vec![0x80],
        };
        let answer: Result<tonic::Response<pb::JobStatus>, Status> = grpc
            .unary(
                tonic::Request::new(raw),
                tonic::codegen::http::uri::PathAndQuery::from_static(path),
                tonic_prost::ProstCodec::default(),
            )
            .await;
        let e = refused(answer, Code::Internal);
        assert!(
            e.message().contains(field) && e.message().contains("UTF-8"),
            "{}",
            e.message()
        );
    }
    let mut jobs = c.jobs().await;
    assert!(jobs
        .list_jobs(pb::ListJobsRequest {})
        .await
        .unwrap()
        .into_inner()
        .jobs
        .is_empty());
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_watches_and_uploads_are_capped_and_slots_come_back() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path());
    cfg.max_watchers = 2;
    cfg.max_uploads = 1;
    let c = Coordinator::start_with("127.0.0.1:0".parse().unwrap(), cfg).await;
    let mut jobs = c.jobs().await;
    // No worker: the job stays queued, so its watches stay open.
    let job = submit(&mut jobs, &jobs::lr_ramp(1, 2, 2)).await.unwrap();
    let watch = |mut j: Jobs, job: String| async move {
        j.watch_job(pb::WatchJobRequest { job_id: job }).await
    };
    let mut open = vec![];
    for _ in 0..2 {
        let mut s = watch(c.jobs().await, job.clone())
            .await
            .unwrap()
            .into_inner();
        s.message().await.unwrap().expect("the snapshot");
        open.push(s);
    }
    let e = watch(c.jobs().await, job.clone()).await.unwrap_err();
    assert_eq!(e.code(), Code::ResourceExhausted, "{e:?}");
    assert!(e.message().contains("2 watch streams are open"), "{e:?}");
    // Closing one gives its slot back.
    drop(open.pop());
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        match watch(c.jobs().await, job.clone()).await {
            Ok(_) => break,
            Err(e) if e.code() == Code::ResourceExhausted => {
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "the slot never came back"
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => panic!("{e:?}"),
        }
    }

    // One upload at a time here: a second is refused while the first is
    // still streaming, and goes through once it is done.
    let bytes = vec![3u8; 1000];
    let hash = content_hash(&bytes);
    let (tx, rx) = mpsc::channel(4);
    tx.send(pb::ArtifactChunk {
        hash: hash.clone(),
        size: 1000,
        data: bytes[..500].to_vec(),
    })
    .await
    .unwrap();
    let mut first = c.workers().await;
    let pending = tokio::spawn(async move { first.upload_artifact(ReceiverStream::new(rx)).await });
    let mut w = c.workers().await;
    let chunk = |data: &[u8]| pb::ArtifactChunk {
        hash: hash.clone(),
        size: 1000,
        data: data.to_vec(),
    };
    // The first upload holds the slot once the coordinator has taken its
    // call (a small upload is held in memory: there is no file to see).
    // Until then a small probe goes through (stored, or found in place).
    let probe = vec![4u8; 10];
    let probe_chunk = pb::ArtifactChunk {
        hash: content_hash(&probe),
        size: 10,
        data: probe.clone(),
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        match upload(&mut w, vec![probe_chunk.clone()]).await {
            Ok(_) => {
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "the first upload never started"
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(e) if e.code() == Code::ResourceExhausted => break,
            Err(e) => panic!("{e:?}"),
        }
    }
    let e = upload(&mut w, vec![chunk(&bytes)]).await.unwrap_err();
    assert_eq!(e.code(), Code::ResourceExhausted, "{e:?}");
    assert!(e.message().contains("uploads are in progress"), "{e:?}");
    tx.send(chunk(&bytes[500..])).await.unwrap();
    drop(tx);
    let done = pending.await.unwrap().unwrap().into_inner();
    assert_eq!(done.hash, hash);
    assert_eq!(upload(&mut w, vec![chunk(&bytes)]).await.unwrap(), hash);
    drop(open);
    c.stop().await;
}
