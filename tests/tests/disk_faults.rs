//! The coordinator's disk fills up, or its data directory is read-only:
//! clients get a clear error, nothing already stored changes or is lost,
//! a report refused for lack of space is stored exactly once when resent,
//! and work carries on once space is freed.
//!
//! A real `coordinator serve` process runs on a small tmpfs of its own: the
//! test mounts it in a private user and mount namespace (`unshare -rm`, no
//! root needed where unprivileged namespaces are allowed) and fills it from
//! outside through `/proc/<pid>/root`. Where namespaces are not available
//! the tests say "skipped"; CI sets `RIDGELINE_REQUIRE_FAULT_FS=1` so that
//! there they fail instead.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use ridgeline_common::proto::v1 as pb;
use ridgeline_common::proto::v1::job_service_client::JobServiceClient;
use ridgeline_common::proto::v1::worker_service_client::WorkerServiceClient;
use ridgeline_tests::{binary, jobs, register, submit, wait_for_end, Coordinator, Process};
use ridgeline_worker::runner::{self, WorkerConfig};
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;
use tonic::Code;

/// Whether private mount namespaces work here; if not, whether that is an
/// error (CI) or a skip.
fn namespaces() -> bool {
    let ok = Command::new("unshare")
        .args(["-rm", "sh", "-c", "mount -t tmpfs tmpfs /mnt"])
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        let why = "`unshare -rm` cannot mount a tmpfs here (no unprivileged user namespaces)";
        assert!(
            std::env::var("RIDGELINE_REQUIRE_FAULT_FS").as_deref() != Ok("1"),
            "{why}, and RIDGELINE_REQUIRE_FAULT_FS=1"
        );
        eprintln!("skipped: {why}");
    }
    ok
}

/// `coordinator serve` on `mount` as seen from its own mount namespace,
/// where `setup` (shell, `$0` = the mount point) has prepared it.
struct Served {
    process: Process,
    url: String,
}

fn script(setup: &str, data_dir: &str) -> String {
    format!(
        "{setup} && exec \"$1\" serve --listen 127.0.0.1:0 --heartbeat 0.1 --lease-ttl 30 --data-dir \"{data_dir}\""
    )
}

fn command(mount: &Path, setup: &str, data_dir: &str) -> Command {
    let mut cmd = Command::new("unshare");
    cmd.args(["-rm", "sh", "-c", &script(setup, data_dir)])
        .arg(mount)
        .arg(binary("coordinator", "ridgeline-coordinator"))
        .env("RUST_LOG", "warn");
    cmd
}

impl Served {
    fn start(mount: &Path, setup: &str, data_dir: &str) -> Served {
        let mut child = command(mount, setup, data_dir)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start coordinator");
        let mut line = String::new();
        let _ = BufReader::new(child.stdout.take().expect("stdout")).read_line(&mut line);
        let addr = line
            .trim()
            .strip_prefix("listening on ")
            .unwrap_or_else(|| panic!("no address from the coordinator: {line:?}"))
            .to_string();
        Served {
            process: Process { child },
            url: format!("http://{addr}"),
        }
    }

    /// A path inside the coordinator's mount namespace, from outside.
    fn inside(&self, path: &Path) -> PathBuf {
        let rel = path.strip_prefix("/").expect("absolute path");
        PathBuf::from(format!("/proc/{}/root", self.process.child.id())).join(rel)
    }
}

/// Runs `coordinator serve` that must refuse to start; its error output.
fn refused_start(mount: &Path, setup: &str, data_dir: &str) -> String {
    let out = command(mount, setup, data_dir)
        .stdin(Stdio::null())
        .output()
        .expect("run coordinator");
    assert!(!out.status.success(), "the coordinator should not start");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Writes zeros to `path` until the filesystem refuses (ENOSPC).
fn fill(path: &Path) -> u64 {
    let mut f = std::fs::File::create(path).expect("ballast");
    let block = vec![0u8; 64 << 10];
    let mut written = 0;
    while f.write_all(&block).is_ok() {
        written += block.len() as u64;
    }
    written
}

fn epoch_item(epoch: u32) -> pb::Progress {
    let m = Some(pb::Metrics {
        loss: 0.5,
        metric: 0.5,
        accuracy: Some(0.5),
        ..Default::default()
    });
    pb::Progress {
        kind: Some(pb::progress::Kind::Epoch(pb::EpochReport {
            epoch,
            step: u64::from(epoch) * 10,
            progress: f64::from(epoch),
            lr: 0.1,
            train: m,
            heldout: m,
            ..Default::default()
        })),
        ..Default::default()
    }
}

async fn results(c: &mut JobServiceClient<Channel>, job: &str) -> pb::JobResults {
    c.get_results(pb::GetResultsRequest { job_id: job.into() })
        .await
        .expect("results are readable while the disk is full")
        .into_inner()
}

async fn run_worker(
    url: &str,
    cache: PathBuf,
    stop: CancellationToken,
) -> tokio::task::JoinHandle<()> {
    let mut w = WorkerConfig::new(url.to_string(), "w");
    w.cache_dir = cache;
    tokio::spawn(async move {
        runner::run(w, stop).await.expect("worker");
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_full_disk_refuses_changes_clearly_and_loses_nothing() {
    if !namespaces() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mount = dir.path().join("mnt");
    std::fs::create_dir(&mount).unwrap();
    let data = mount.join("data");
    let served = Served::start(
        &mount,
        "mount -t tmpfs -o size=16m tmpfs \"$0\"",
        data.to_str().unwrap(),
    );
    let mut client = JobServiceClient::connect(served.url.clone()).await.unwrap();

    // Job A runs to completion on a real worker.
    let stop = CancellationToken::new();
    let worker = run_worker(&served.url, dir.path().join("cache"), stop.clone()).await;
    let a = submit(&mut client, &jobs::lr_ramp(2, 3, 3)).await.unwrap();
    let end = wait_for_end(&mut client, &a, Duration::from_secs(120)).await;
    assert_eq!(end.state, pb::JobState::Succeeded as i32, "{end:?}");
    stop.cancel();
    worker.await.unwrap();
    let a_before = results(&mut client, &a).await;

    // Job B: a scripted worker holds its task and has reported epoch 1.
    let b = submit(&mut client, &jobs::lr_ramp(1, 3, 3)).await.unwrap();
    let mut w = WorkerServiceClient::connect(served.url.clone())
        .await
        .unwrap();
    let me = register(&mut w, "scripted").await;
    let task = w
        .lease(pb::LeaseRequest {
            worker_id: me.clone(),
            free_slots: 1,
            running: vec![],
            wait_ms: 0,
        })
        .await
        .unwrap()
        .into_inner()
        .tasks
        .remove(0);
    let report = |seq: u64, epoch: u32| pb::ReportRequest {
        worker_id: me.clone(),
        task_id: task.task_id.clone(),
        attempt: task.attempt,
        seq,
        items: vec![epoch_item(epoch)],
    };
    assert!(w.report(report(1, 1)).await.unwrap().into_inner().stored);

    // The disk fills up.
    let ballast = served.inside(&mount.join("ballast"));
    assert!(fill(&ballast) > 0);

    // A new job is refused with a clear error and leaves nothing behind:
    // keep submitting until SQLite's spare pages are used up too.
    let mut refused = None;
    for _ in 0..200 {
        match submit(&mut client, &jobs::lr_ramp(3, 4, 1)).await {
            Ok(_) => continue,
            Err(e) => {
                refused = Some(e);
                break;
            }
        }
    }
    let e = refused.expect("a submit is refused once the disk is full");
    assert_eq!(e.code(), Code::ResourceExhausted, "{e:?}");
    assert!(e.message().contains("disk is full"), "{e:?}");
    let listed_full = client
        .list_jobs(pb::ListJobsRequest {})
        .await
        .expect("listing works on a full disk")
        .into_inner()
        .jobs
        .len();

    // The worker's next report cannot be stored: refused, not half-kept.
    let mut report_refused = false;
    for seq in 2..50 {
        match w.report(report(seq, 2)).await {
            Ok(r) if r.get_ref().stored => {
                // Spare pages took it; it is stored once, like any other.
                continue;
            }
            Ok(r) => panic!("a new report neither stored nor refused: {r:?}"),
            Err(e) => {
                assert_eq!(e.code(), Code::ResourceExhausted, "{e:?}");
                report_refused = true;
                // Space comes back; the same report, resent, is stored once.
                std::fs::remove_file(&ballast).unwrap();
                let r = w.report(report(seq, 2)).await.unwrap().into_inner();
                assert!(r.stored, "the resend after the refusal is stored");
                let again = w.report(report(seq, 2)).await.unwrap().into_inner();
                assert!(!again.stored, "a second resend is recognised");
                break;
            }
        }
    }
    assert!(
        report_refused,
        "a report was refused while the disk was full"
    );

    // Nothing stored before the fault changed; the refused jobs left no trace.
    assert_eq!(results(&mut client, &a).await, a_before);
    let listed = client
        .list_jobs(pb::ListJobsRequest {})
        .await
        .unwrap()
        .into_inner()
        .jobs
        .len();
    assert_eq!(listed, listed_full, "the refused submit stored nothing");
    let b_points = results(&mut client, &b).await.curves[0].points.clone();
    let epochs: Vec<f64> = b_points.iter().map(|p| p.x).collect();
    assert_eq!(epochs, [1.0, 2.0], "every reported epoch once");

    // Work carries on: the job finishes and a new one runs.
    w.complete(pb::CompleteRequest {
        worker_id: me.clone(),
        task_id: task.task_id.clone(),
        attempt: task.attempt,
        end: Some(pb::RunEnd {
            kind: pb::run_end::Kind::Completed as i32,
            epoch: 3,
            ..Default::default()
        }),
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
    let end = wait_for_end(&mut client, &b, Duration::from_secs(30)).await;
    assert_eq!(end.state, pb::JobState::Succeeded as i32, "{end:?}");
    let stop = CancellationToken::new();
    let worker = run_worker(&served.url, dir.path().join("cache2"), stop.clone()).await;
    let c = submit(&mut client, &jobs::lr_ramp(1, 2, 2)).await.unwrap();
    let end = wait_for_end(&mut client, &c, Duration::from_secs(120)).await;
    assert_eq!(end.state, pb::JobState::Succeeded as i32, "{end:?}");
    stop.cancel();
    worker.await.unwrap();

    // And the database itself is sound (checked on a copy: SQLite resolves
    // /proc/<pid>/root back into this namespace; nothing writes now).
    let copy = dir.path().join("copy");
    std::fs::create_dir(&copy).unwrap();
    for f in ["ridgeline.db", "ridgeline.db-wal"] {
        let from = served.inside(&data.join(f));
        if from.exists() {
            std::fs::copy(&from, copy.join(f)).unwrap();
        }
    }
    let db = rusqlite::Connection::open(copy.join("ridgeline.db")).unwrap();
    let check: String = db
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(check, "ok");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_only_data_dir_is_refused_at_start_and_left_as_it_was() {
    if !namespaces() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    // A data dir with a finished job in it.
    let c = Coordinator::start(&data, Duration::from_secs(30)).await;
    let mut client = c.jobs().await;
    let job = submit(&mut client, &jobs::lr_ramp(1, 2, 2)).await.unwrap();
    let stop = CancellationToken::new();
    let worker = run_worker(&c.url(), dir.path().join("cache"), stop.clone()).await;
    wait_for_end(&mut client, &job, Duration::from_secs(120)).await;
    stop.cancel();
    worker.await.unwrap();
    let before = results(&mut client, &job).await;
    c.stop().await;
    let snapshot = |d: &Path| {
        let mut files: Vec<(String, Vec<u8>)> = std::fs::read_dir(d)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.is_file())
            .map(|p| (p.display().to_string(), std::fs::read(&p).unwrap()))
            .collect();
        files.sort();
        files
    };
    let files = snapshot(&data);

    // The same directory mounted read-only: a clear refusal at start.
    let e = refused_start(
        &data,
        "mount --bind -o ro \"$0\" \"$0\"",
        data.to_str().unwrap(),
    );
    assert!(
        e.contains("cannot be written") && e.contains("Read-only file system"),
        "{e}"
    );
    assert!(
        e.contains(data.to_str().unwrap()),
        "names the directory: {e}"
    );
    assert_eq!(snapshot(&data), files, "nothing in it changed");

    // Writable again, everything is there.
    let c = Coordinator::start(&data, Duration::from_secs(30)).await;
    let mut client = c.jobs().await;
    assert_eq!(results(&mut client, &job).await, before);
    c.stop().await;
}
