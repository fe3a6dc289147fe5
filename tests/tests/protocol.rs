//! The coordinator's protocol over real gRPC, driven by hand where a test
//! needs to control exactly what a worker says and when: validation at
//! submit, leases and attempts, stale reports, idempotent resends, watching,
//! cancellation, and durability across a restart.

use std::time::Duration;

use ridgeline_common::proto::v1 as pb;
use ridgeline_tests::{jobs, register, submit, Coordinator};
use tonic::Code;

fn metrics(m: f64) -> Option<pb::Metrics> {
    Some(pb::Metrics {
        loss: 1.0 - m,
        metric: m,
        accuracy: Some(m),
        r2: None,
        pearson: None,
        majority_fraction: None,
    })
}

fn epoch_item(epoch: u32) -> pb::Progress {
    pb::Progress {
        curve: "ignored: the coordinator uses the task's curve".into(),
        kind: Some(pb::progress::Kind::Epoch(pb::EpochReport {
            epoch,
            step: epoch as u64 * 10,
            progress: epoch as f64,
            lr: 0.1,
            momentum: 0.0,
            batch_loss: None,
            train: metrics(0.5),
            heldout: metrics(0.4),
        })),
        ..Default::default()
    }
}

#[tokio::test]
async fn bad_jobs_are_refused_naming_the_problem_and_nothing_is_stored() {
    let dir = tempfile::tempdir().unwrap();
    let c = Coordinator::start(dir.path(), Duration::from_secs(30)).await;
    let mut client = c.jobs().await;
    let good = jobs::lr_ramp(1, 3, 3);
    let cases = [
        (
            good.replace("start = 0.001", "start = 0.001\nstrat = 2"),
            "strat",
        ),
        (
            good.replace("start = 0.001", "start = -0.001"),
            "lr_ramp.lr.start",
        ),
        (
            good.replace(
                "kind = \"tabular\"\nn_train = 600\nn_heldout = 200\nseed = 5",
                "kind = \"npy\"\nx = \"/nonexistent/x.npy\"\ny = \"/nonexistent/y.npy\"",
            ),
            "/nonexistent/x.npy",
        ),
        (
            good.replace("kind = \"tabular\"", "kind = \"cifar\""),
            "cifar",
        ),
        ("kind = \"train\"".to_string(), "data"),
    ];
    for (text, needle) in cases {
        let err = submit(&mut client, &text).await.unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
        assert!(
            err.message().contains(needle),
            "`{needle}` not in: {}",
            err.message()
        );
    }
    let listed = client
        .list_jobs(pb::ListJobsRequest {})
        .await
        .unwrap()
        .into_inner();
    assert!(listed.jobs.is_empty(), "nothing half-created");
    let err = client
        .get_job(pb::GetJobRequest {
            job_id: "not-an-id".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().contains("job_id"));
    c.stop().await;
}

#[tokio::test]
async fn a_worker_of_another_protocol_version_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let c = Coordinator::start(dir.path(), Duration::from_secs(30)).await;
    let mut w = c.workers().await;
    let err = w
        .register(pb::RegisterRequest {
            protocol_version: 99,
            name: "old".into(),
            device: "cpu".into(),
            slots: 1,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    assert!(
        err.message().contains("protocol version 1"),
        "{}",
        err.message()
    );
    c.stop().await;
}

#[tokio::test]
async fn expired_leases_move_on_and_stale_reports_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let c = Coordinator::start(dir.path(), Duration::from_secs(1)).await;
    let mut client = c.jobs().await;
    let job = submit(&mut client, &jobs::lr_ramp(1, 2, 2)).await.unwrap();
    let mut w = c.workers().await;
    let a = register(&mut w, "a").await;
    let b = register(&mut w, "b").await;

    let lease = w
        .lease(pb::LeaseRequest {
            worker_id: a.clone(),
            free_slots: 4,
            running: vec![],
            wait_ms: 0,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(lease.tasks.len(), 1, "one run, one chunk");
    let task = lease.tasks[0].clone();
    assert_eq!(task.attempt, 1);
    assert_eq!(task.job_id, job);

    let report = |seq: u64, attempt: u32, worker: &str| pb::ReportRequest {
        worker_id: worker.into(),
        task_id: task.task_id.clone(),
        attempt,
        seq,
        items: vec![epoch_item(seq as u32)],
    };
    let r = w.report(report(1, 1, &a)).await.unwrap().into_inner();
    assert!(r.stored && !r.stop);
    let r = w.report(report(1, 1, &a)).await.unwrap().into_inner();
    assert!(
        !r.stored,
        "a resent report is acknowledged, not stored twice"
    );
    // Another worker cannot report for a task it does not hold.
    let err = w.report(report(2, 1, &b)).await.unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);

    // Worker a goes quiet past the TTL: the task is handed to b as attempt 2.
    let mut leased = None;
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let l = w
            .lease(pb::LeaseRequest {
                worker_id: b.clone(),
                free_slots: 1,
                running: vec![],
                wait_ms: 0,
            })
            .await
            .unwrap()
            .into_inner();
        if let Some(t) = l.tasks.into_iter().next() {
            leased = Some(t);
            break;
        }
    }
    let t2 = leased.expect("the task was re-leased after the TTL");
    assert_eq!(t2.task_id, task.task_id);
    assert_eq!(t2.attempt, 2);

    // a comes back: its reports and completion are refused, and its
    // heartbeat tells it to stop.
    let err = w.report(report(2, 1, &a)).await.unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
    let hb = w
        .lease(pb::LeaseRequest {
            worker_id: a.clone(),
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
    let end = pb::RunEnd {
        kind: pb::run_end::Kind::Completed as i32,
        epoch: 2,
        ..Default::default()
    };
    let err = w
        .complete(pb::CompleteRequest {
            worker_id: a.clone(),
            task_id: task.task_id.clone(),
            attempt: 1,
            end: Some(end.clone()),
            checkpoint_hash: String::new(),
            epochs_trained: 2,
            engine_ms: 0,
            next_slots: 0,
            queued_ms: 0,
            queued_starts: vec![],
            last_report: None,
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);

    // b finishes: every epoch is there once (a's epoch 1 was replaced by
    // b's, not added).
    for seq in 1..=2 {
        let r = w
            .report(pb::ReportRequest {
                worker_id: b.clone(),
                task_id: task.task_id.clone(),
                attempt: 2,
                seq,
                items: vec![epoch_item(seq as u32)],
            })
            .await
            .unwrap()
            .into_inner();
        assert!(r.stored);
    }
    w.complete(pb::CompleteRequest {
        worker_id: b.clone(),
        task_id: task.task_id.clone(),
        attempt: 2,
        end: Some(end),
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
    let status = client
        .get_job(pb::GetJobRequest {
            job_id: job.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(status.state, pb::JobState::Succeeded as i32, "{status:#?}");
    assert_eq!(
        status.epochs_trained, 2,
        "the refused completion was not counted"
    );
    let results = client
        .get_results(pb::GetResultsRequest {
            job_id: job.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(results.curves.len(), 1);
    let xs: Vec<f64> = results.curves[0].points.iter().map(|p| p.x).collect();
    assert_eq!(xs, vec![1.0, 2.0]);
    c.stop().await;
}

#[tokio::test]
async fn a_late_watcher_sees_every_event_in_order_then_live_ones() {
    let dir = tempfile::tempdir().unwrap();
    let c = Coordinator::start(dir.path(), Duration::from_secs(30)).await;
    let mut client = c.jobs().await;
    let job = submit(&mut client, &jobs::lr_ramp(1, 3, 3)).await.unwrap();
    let mut w = c.workers().await;
    let a = register(&mut w, "a").await;
    let task = lease_one(&mut w, &a).await;
    let send = |seq: u64| pb::ReportRequest {
        worker_id: a.clone(),
        task_id: task.task_id.clone(),
        attempt: 1,
        seq,
        items: vec![epoch_item(seq as u32)],
    };
    w.report(send(1)).await.unwrap();
    w.report(send(2)).await.unwrap();

    // Connect midway.
    let mut stream = client
        .watch_job(pb::WatchJobRequest {
            job_id: job.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    let first = stream.message().await.unwrap().unwrap();
    assert!(matches!(first.kind, Some(pb::job_event::Kind::Snapshot(_))));
    // Then finish the job while watching.
    w.report(send(3)).await.unwrap();
    w.complete(pb::CompleteRequest {
        worker_id: a.clone(),
        task_id: task.task_id.clone(),
        attempt: 1,
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
    let mut seqs = vec![];
    let mut epochs = vec![];
    let mut last_state = None;
    while let Some(ev) = tokio::time::timeout(Duration::from_secs(10), stream.message())
        .await
        .expect("the stream ends when the job ends")
        .unwrap()
    {
        seqs.push(ev.seq);
        match ev.kind {
            Some(pb::job_event::Kind::Progress(p)) => {
                if let Some(pb::progress::Kind::Epoch(e)) = p.kind {
                    epochs.push(e.epoch);
                }
            }
            Some(pb::job_event::Kind::Job(j)) => last_state = Some(j.state),
            _ => {}
        }
    }
    assert_eq!(
        seqs,
        (1..=seqs.len() as u64).collect::<Vec<_>>(),
        "every event, in order, from the first"
    );
    assert_eq!(epochs, vec![1, 2, 3]);
    assert_eq!(last_state, Some(pb::JobState::Succeeded as i32));
    c.stop().await;
}

#[tokio::test]
async fn cancel_stops_the_task_and_refuses_further_reports() {
    let dir = tempfile::tempdir().unwrap();
    let c = Coordinator::start(dir.path(), Duration::from_secs(30)).await;
    let mut client = c.jobs().await;
    let job = submit(&mut client, &jobs::lr_ramp(2, 3, 3)).await.unwrap();
    let mut w = c.workers().await;
    let a = register(&mut w, "a").await;
    let task = lease_one(&mut w, &a).await;
    let r = client
        .cancel_job(pb::CancelJobRequest {
            job_id: job.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.state, pb::JobState::Cancelled as i32);
    let hb = w
        .lease(pb::LeaseRequest {
            worker_id: a.clone(),
            free_slots: 1,
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
    assert!(
        hb.tasks.is_empty(),
        "nothing of a cancelled job is handed out"
    );
    let err = w
        .report(pb::ReportRequest {
            worker_id: a.clone(),
            task_id: task.task_id.clone(),
            attempt: 1,
            seq: 1,
            items: vec![epoch_item(1)],
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    let results = client
        .get_results(pb::GetResultsRequest { job_id: job })
        .await
        .unwrap()
        .into_inner();
    assert!(results.curves.is_empty(), "nothing recorded after cancel");
    c.stop().await;
}

#[tokio::test]
async fn accepted_results_survive_a_coordinator_restart() {
    let dir = tempfile::tempdir().unwrap();
    let c = Coordinator::start(dir.path(), Duration::from_secs(30)).await;
    let addr = c.addr;
    let mut client = c.jobs().await;
    let job = submit(&mut client, &jobs::lr_ramp(1, 3, 3)).await.unwrap();
    let mut w = c.workers().await;
    let a = register(&mut w, "a").await;
    let task = lease_one(&mut w, &a).await;
    w.report(pb::ReportRequest {
        worker_id: a.clone(),
        task_id: task.task_id.clone(),
        attempt: 1,
        seq: 1,
        items: vec![epoch_item(1)],
    })
    .await
    .unwrap();
    c.stop().await;

    let c = Coordinator::start_on(addr, dir.path(), Duration::from_secs(30)).await;
    let mut w = c.workers().await;
    // The worker carries on with the same lease: a resend is recognised,
    // the next report is stored.
    let r = w
        .report(pb::ReportRequest {
            worker_id: a.clone(),
            task_id: task.task_id.clone(),
            attempt: 1,
            seq: 1,
            items: vec![epoch_item(1)],
        })
        .await
        .unwrap()
        .into_inner();
    assert!(!r.stored);
    let mut client = c.jobs().await;
    let results = client
        .get_results(pb::GetResultsRequest {
            job_id: job.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(results.curves[0].points.len(), 1);
    let status = client
        .get_job(pb::GetJobRequest { job_id: job })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(status.state, pb::JobState::Running as i32);
    c.stop().await;
}

#[tokio::test]
async fn workers_only_get_tasks_their_device_can_run() {
    let dir = tempfile::tempdir().unwrap();
    let c = Coordinator::start(dir.path(), Duration::from_secs(30)).await;
    let mut client = c.jobs().await;
    let job = submit(
        &mut client,
        &format!("device = \"cuda\"\n{}", jobs::lr_ramp(1, 2, 2)),
    )
    .await
    .unwrap();
    let mut w = c.workers().await;
    let cpu = register(&mut w, "cpu-box").await;
    let l = w
        .lease(pb::LeaseRequest {
            worker_id: cpu,
            free_slots: 4,
            running: vec![],
            wait_ms: 0,
        })
        .await
        .unwrap()
        .into_inner();
    assert!(
        l.tasks.is_empty(),
        "a cuda job is not handed to a cpu worker"
    );
    let gpu = w
        .register(pb::RegisterRequest {
            protocol_version: ridgeline_common::proto::PROTOCOL_VERSION,
            name: "gpu-box".into(),
            device: "cuda:0".into(),
            slots: 1,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .worker_id;
    let l = w
        .lease(pb::LeaseRequest {
            worker_id: gpu,
            free_slots: 4,
            running: vec![],
            wait_ms: 0,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(l.tasks.len(), 1);
    assert_eq!(l.tasks[0].job_id, job);
    c.stop().await;
}

#[tokio::test]
async fn retries_are_bounded_and_the_job_fails_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let c = Coordinator::start(dir.path(), Duration::from_secs(30)).await;
    let mut client = c.jobs().await;
    let job = submit(
        &mut client,
        &format!("max_attempts = 2\n{}", jobs::lr_ramp(2, 2, 2)),
    )
    .await
    .unwrap();
    let mut w = c.workers().await;
    let a = register(&mut w, "a").await;
    let mut attempts = vec![];
    for _ in 0..2 {
        let t = lease_one(&mut w, &a).await;
        attempts.push((t.task_id.clone(), t.attempt));
        w.fail(pb::FailRequest {
            worker_id: a.clone(),
            task_id: t.task_id.clone(),
            attempt: t.attempt,
            message: "CUDA out of memory".into(),
            retryable: true,
            handed_back: false,
        })
        .await
        .unwrap();
    }
    assert_eq!(attempts[0].0, attempts[1].0, "the same task came back");
    assert_eq!((attempts[0].1, attempts[1].1), (1, 2));
    let s = client
        .get_job(pb::GetJobRequest { job_id: job })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(s.state, pb::JobState::Failed as i32);
    assert!(
        s.error.contains("failed 2 times") && s.error.contains("CUDA out of memory"),
        "{}",
        s.error
    );
    assert!(
        s.tasks
            .iter()
            .all(|t| t.state != pb::TaskState::Pending as i32
                && t.state != pb::TaskState::Leased as i32),
        "nothing of a failed job stays queued: {s:#?}"
    );
    c.stop().await;
}

/// Leases the next task for `worker`.
type Workers = ridgeline_common::proto::v1::worker_service_client::WorkerServiceClient<
    tonic::transport::Channel,
>;

/// A Lease for one slot that must hand out a task.
async fn lease_one(w: &mut Workers, worker: &str) -> pb::TaskAssignment {
    lease_one_or_none(w, worker).await.expect("a task to lease")
}

/// A Lease for one slot: the task it hands out, if any.
async fn lease_one_or_none(w: &mut Workers, worker: &str) -> Option<pb::TaskAssignment> {
    w.lease(pb::LeaseRequest {
        worker_id: worker.into(),
        free_slots: 1,
        running: vec![],
        wait_ms: 0,
    })
    .await
    .unwrap()
    .into_inner()
    .tasks
    .into_iter()
    .next()
}

/// A Lease for one slot that waits (up to a minute) for a task.
fn long_poll(
    w: &Workers,
    worker: &str,
) -> tokio::task::JoinHandle<Result<tonic::Response<pb::LeaseResponse>, tonic::Status>> {
    let (mut w, worker) = (w.clone(), worker.to_string());
    tokio::spawn(async move {
        w.lease(pb::LeaseRequest {
            worker_id: worker,
            free_slots: 1,
            running: vec![],
            wait_ms: 60_000,
        })
        .await
    })
}

/// A counter or count from the coordinator's `/metrics` (0 if absent).
async fn counter(http: std::net::SocketAddr, name: &str) -> u64 {
    let text = ridgeline_tests::http_get(http, "/metrics", &[]).await.body;
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        .and_then(|n| n.trim().parse::<u64>().ok())
        .unwrap_or(0)
}

fn report(worker: &str, t: &pb::TaskAssignment, seq: u64, epoch: u32) -> pb::ReportRequest {
    pb::ReportRequest {
        worker_id: worker.into(),
        task_id: t.task_id.clone(),
        attempt: t.attempt,
        seq,
        items: vec![epoch_item(epoch)],
    }
}

#[tokio::test]
async fn a_retried_attempt_replaces_the_abandoned_one_s_measurements() {
    let dir = tempfile::tempdir().unwrap();
    let c = Coordinator::start(dir.path(), Duration::from_secs(30)).await;
    let mut client = c.jobs().await;
    let job = submit(&mut client, &jobs::lr_ramp(1, 3, 3)).await.unwrap();
    let mut w = c.workers().await;
    let a = register(&mut w, "a").await;
    let t1 = lease_one(&mut w, &a).await;
    for e in 1..=3 {
        w.report(report(&a, &t1, e as u64, e)).await.unwrap();
    }
    w.fail(pb::FailRequest {
        worker_id: a.clone(),
        task_id: t1.task_id.clone(),
        attempt: 1,
        message: "out of memory".into(),
        retryable: true,
        handed_back: false,
    })
    .await
    .unwrap();
    let t2 = lease_one(&mut w, &a).await;
    assert_eq!(t2.attempt, 2);
    w.report(report(&a, &t2, 1, 1)).await.unwrap();
    w.complete(pb::CompleteRequest {
        worker_id: a.clone(),
        task_id: t2.task_id.clone(),
        attempt: 2,
        end: Some(pb::RunEnd {
            kind: pb::run_end::Kind::Diverged as i32,
            epoch: 1,
            step: 15,
            reason: "loss became NaN".into(),
        }),
        checkpoint_hash: String::new(),
        epochs_trained: 1,
        engine_ms: 0,
        next_slots: 0,
        queued_ms: 0,
        queued_starts: vec![],
        last_report: None,
    })
    .await
    .unwrap();
    let r = client
        .get_results(pb::GetResultsRequest {
            job_id: job.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    let xs: Vec<f64> = r.curves[0].points.iter().map(|p| p.x).collect();
    assert_eq!(xs, vec![1.0], "attempt 1's epochs 2-3 are gone with it");
    // Every progress event says which attempt measured it.
    let mut stream = client
        .watch_job(pb::WatchJobRequest { job_id: job })
        .await
        .unwrap()
        .into_inner();
    let mut attempts = vec![];
    while let Some(ev) = stream.message().await.unwrap() {
        if let Some(pb::job_event::Kind::Progress(p)) = ev.kind {
            assert_eq!(p.task_id, t1.task_id);
            attempts.push(p.attempt);
        }
    }
    assert_eq!(
        attempts,
        vec![1, 1, 1, 2, 2],
        "3 reports of attempt 1, one of attempt 2, its end"
    );
    c.stop().await;
}

#[tokio::test]
async fn malformed_completions_are_refused_and_do_not_block_scheduling() {
    let dir = tempfile::tempdir().unwrap();
    let c = Coordinator::start(dir.path(), Duration::from_secs(30)).await;
    let mut client = c.jobs().await;
    // Two chunks: the first must hand on a checkpoint.
    submit(&mut client, &jobs::lr_ramp(1, 4, 2)).await.unwrap();
    let mut w = c.workers().await;
    let a = register(&mut w, "a").await;
    let t = lease_one(&mut w, &a).await;
    let complete = |kind: pb::run_end::Kind| pb::CompleteRequest {
        worker_id: a.clone(),
        task_id: t.task_id.clone(),
        attempt: 1,
        end: Some(pb::RunEnd {
            kind: kind as i32,
            epoch: 2,
            ..Default::default()
        }),
        checkpoint_hash: String::new(),
        epochs_trained: 2,
        engine_ms: 0,
        next_slots: 0,
        queued_ms: 0,
        queued_starts: vec![],
        last_report: None,
    };
    let err = w
        .complete(complete(pb::run_end::Kind::Stopped))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().contains("end.kind"), "{}", err.message());
    let err = w
        .complete(complete(pb::run_end::Kind::Completed))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(
        err.message().contains("checkpoint_hash"),
        "{}",
        err.message()
    );
    let mut bad = complete(pb::run_end::Kind::Completed);
    bad.checkpoint_hash = "ab".repeat(32);
    let err = w.complete(bad).await.unwrap_err();
    assert!(
        err.message().contains("was not uploaded"),
        "{}",
        err.message()
    );
    // Scheduling goes on: another job's task is still handed out.
    submit(&mut client, &jobs::lr_ramp(1, 2, 2)).await.unwrap();
    let b = register(&mut w, "b").await;
    let l = w
        .lease(pb::LeaseRequest {
            worker_id: b,
            free_slots: 1,
            running: vec![],
            wait_ms: 0,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(l.tasks.len(), 1);
    c.stop().await;
}

#[tokio::test]
async fn a_hand_back_on_shutdown_does_not_use_up_attempts() {
    let dir = tempfile::tempdir().unwrap();
    let c = Coordinator::start(dir.path(), Duration::from_secs(30)).await;
    let mut client = c.jobs().await;
    let job = submit(
        &mut client,
        &format!("max_attempts = 1\n{}", jobs::lr_ramp(1, 2, 2)),
    )
    .await
    .unwrap();
    let mut w = c.workers().await;
    let a = register(&mut w, "a").await;
    for attempt in 1..=3 {
        let t = lease_one(&mut w, &a).await;
        assert_eq!(t.attempt, attempt);
        w.fail(pb::FailRequest {
            worker_id: a.clone(),
            task_id: t.task_id.clone(),
            attempt,
            message: "worker shutting down".into(),
            retryable: true,
            handed_back: true,
        })
        .await
        .unwrap();
    }
    let s = client
        .get_job(pb::GetJobRequest { job_id: job })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(s.state, pb::JobState::Running as i32, "{s:#?}");
    assert_eq!(s.tasks[0].state, pb::TaskState::Pending as i32);
    c.stop().await;
}

#[tokio::test]
async fn an_open_watch_does_not_hold_up_shutdown() {
    let dir = tempfile::tempdir().unwrap();
    let c = Coordinator::start(dir.path(), Duration::from_secs(30)).await;
    let mut client = c.jobs().await;
    let job = submit(&mut client, &jobs::lr_ramp(1, 2, 2)).await.unwrap();
    let mut stream = client
        .watch_job(pb::WatchJobRequest { job_id: job })
        .await
        .unwrap()
        .into_inner();
    stream.message().await.unwrap().unwrap();
    tokio::time::timeout(Duration::from_secs(5), c.stop())
        .await
        .expect("the server stops although the job is still being watched");
}

fn failure(worker: &str, t: &pb::TaskAssignment) -> pb::FailRequest {
    pb::FailRequest {
        worker_id: worker.into(),
        task_id: t.task_id.clone(),
        attempt: t.attempt,
        message: "CUDA out of memory".into(),
        retryable: true,
        handed_back: false,
    }
}

/// A worker that fails everything it touches (a broken GPU, a missing
/// mount) is quarantined after 3 failed attempts in a row instead of
/// burning every task's attempts; the others keep going. A completed task
/// resets the count.
#[tokio::test]
async fn a_worker_that_fails_everything_is_quarantined() {
    let dir = tempfile::tempdir().unwrap();
    let c = Coordinator::start(dir.path(), Duration::from_secs(30)).await;
    let mut client = c.jobs().await;
    let job = submit(
        &mut client,
        &format!("max_attempts = 10\n{}", jobs::lr_ramp(3, 2, 2)),
    )
    .await
    .unwrap();
    let mut w = c.workers().await;

    // Fails, fails, completes, fails, fails: never 3 in a row.
    let flaky = register(&mut w, "flaky").await;
    for round in 0..5 {
        let t = lease_one(&mut w, &flaky).await;
        if round == 2 {
            w.report(report(&flaky, &t, 1, 0)).await.unwrap();
            w.report(report(&flaky, &t, 2, 1)).await.unwrap();
            w.report(report(&flaky, &t, 3, 2)).await.unwrap();
            w.complete(pb::CompleteRequest {
                worker_id: flaky.clone(),
                task_id: t.task_id.clone(),
                attempt: t.attempt,
                end: Some(pb::RunEnd {
                    kind: pb::run_end::Kind::Completed as i32,
                    epoch: 2,
                    ..Default::default()
                }),
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
        } else {
            w.fail(failure(&flaky, &t)).await.unwrap();
        }
    }
    let workers = |c: &mut ridgeline_common::proto::v1::job_service_client::JobServiceClient<
        tonic::transport::Channel,
    >| {
        let mut c = c.clone();
        async move {
            c.list_workers(pb::ListWorkersRequest {})
                .await
                .unwrap()
                .into_inner()
                .workers
        }
    };
    let listed = workers(&mut client).await;
    assert_eq!(listed[0].state, "active", "{listed:?}");

    // Three failures in a row: no new work, and the reason is listed.
    let bad = register(&mut w, "bad").await;
    for _ in 0..3 {
        let t = lease_one(&mut w, &bad).await;
        w.fail(failure(&bad, &t)).await.unwrap();
    }
    let none = w
        .lease(pb::LeaseRequest {
            worker_id: bad.clone(),
            free_slots: 1,
            running: vec![],
            wait_ms: 0,
        })
        .await
        .unwrap()
        .into_inner();
    assert!(none.tasks.is_empty(), "a quarantined worker gets no task");
    let listed = workers(&mut client).await;
    let b = listed.iter().find(|x| x.worker_id == bad).unwrap();
    assert_eq!(b.state, "quarantined");
    assert!(
        b.quarantine_reason.contains("last 3 task attempts failed")
            && b.quarantine_reason.contains("CUDA out of memory"),
        "{}",
        b.quarantine_reason
    );
    assert!(b.quarantined_until_unix_ms > 0);

    // The job is not failed by it, and a healthy worker carries on.
    let s = client
        .get_job(pb::GetJobRequest {
            job_id: job.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(s.state, pb::JobState::Running as i32, "{}", s.error);
    let good = register(&mut w, "good").await;
    let t = lease_one(&mut w, &good).await;
    assert!(
        t.attempt > 1,
        "a task the bad worker failed is retried elsewhere"
    );
    c.stop().await;
}

/// An idle worker's Lease with `wait_ms` is held until a task is ready (a
/// job submitted while it waits), not answered empty at once; with nothing
/// ready it is answered empty by the end of the heartbeat interval, which
/// caps the wait.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_poll_lease_gets_a_task_submitted_while_it_waits() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = ridgeline_coordinator::ServerConfig::new(dir.path());
    config.scheduler.heartbeat_interval = Duration::from_secs(60);
    let c = Coordinator::start_with("127.0.0.1:0".parse().unwrap(), config).await;
    let mut w = c.workers().await;
    let a = register(&mut w, "a").await;
    // Nothing is queued: a plain heartbeat is answered empty.
    let empty = w
        .lease(pb::LeaseRequest {
            worker_id: a.clone(),
            free_slots: 1,
            running: vec![],
            wait_ms: 0,
        })
        .await
        .unwrap()
        .into_inner();
    assert!(empty.tasks.is_empty());
    let waiting = long_poll(&w, &a);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        !waiting.is_finished(),
        "the long poll answered before any task was ready"
    );
    let mut client = c.jobs().await;
    let job = submit(&mut client, &jobs::lr_ramp(1, 2, 2)).await.unwrap();
    let got = tokio::time::timeout(Duration::from_secs(30), waiting)
        .await
        .expect("the long poll was not answered when the job was submitted")
        .unwrap()
        .unwrap()
        .into_inner();
    assert_eq!(got.tasks.len(), 1, "{got:?}");
    assert_eq!(got.tasks[0].job_id, job);
    c.stop().await;

    // The wait is capped by the heartbeat interval (here 100 ms).
    let dir = tempfile::tempdir().unwrap();
    let c = Coordinator::start(dir.path(), Duration::from_secs(30)).await;
    let mut w = c.workers().await;
    let a = register(&mut w, "a").await;
    let answer = tokio::time::timeout(
        Duration::from_secs(30),
        w.lease(pb::LeaseRequest {
            worker_id: a,
            free_slots: 1,
            running: vec![],
            wait_ms: u32::MAX,
        }),
    )
    .await
    .expect("a long poll outlived the heartbeat interval by far")
    .unwrap()
    .into_inner();
    assert!(answer.tasks.is_empty());
    c.stop().await;
}

/// A Lease waiting for work is woken by a commit that may have made a
/// task ready (here a training chunk, released by its predecessor's
/// Complete), not by every commit: reports that ready nothing leave it
/// waiting, without looking at the queue again. (Woken by every commit, a
/// thousand idle workers each ran a Lease per batch while the others
/// finished a stage.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_poll_wakes_for_work_made_ready_not_for_every_commit() {
    let dir = tempfile::tempdir().unwrap();
    let http = ridgeline_tests::free_addr();
    let mut config = ridgeline_coordinator::ServerConfig::new(dir.path());
    config.scheduler.heartbeat_interval = Duration::from_secs(60);
    config.http = Some(http);
    let c = Coordinator::start_with("127.0.0.1:0".parse().unwrap(), config).await;
    let mut client = c.jobs().await;
    let mut w = c.workers().await;
    // One run of two one-epoch chunks: the second waits for the first.
    submit(&mut client, &jobs::lr_ramp(1, 2, 1)).await.unwrap();
    let b = register(&mut w, "b").await;
    let first = lease_one(&mut w, &b).await;
    let a = register(&mut w, "a").await;
    // Passes over the queue so far (each Lease look is timed).
    let passes = || counter(http, "ridgeline_lease_duration_seconds_count");
    let before = passes().await;
    let waiting = long_poll(&w, &a);
    tokio::time::sleep(Duration::from_millis(200)).await;
    // Five reports, five commits with an event each, none readies a task.
    for seq in 1..=5 {
        w.report(report(&b, &first, seq, 1)).await.unwrap();
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!waiting.is_finished(), "answered with nothing ready");
    assert_eq!(
        passes().await - before,
        1,
        "the waiting Lease looked again after commits that readied nothing"
    );
    // The first chunk completes with its checkpoint: the second is ready,
    // and the waiting Lease gets it at once.
    let data = b"the first chunk's checkpoint".to_vec();
    let hash = ridgeline_worker::engine::artifact::content_hash(&data);
    w.upload_artifact(tokio_stream::iter(vec![pb::ArtifactChunk {
        hash: hash.clone(),
        size: data.len() as u64,
        data,
    }]))
    .await
    .unwrap();
    w.complete(pb::CompleteRequest {
        worker_id: b.clone(),
        task_id: first.task_id.clone(),
        attempt: first.attempt,
        end: Some(pb::RunEnd {
            kind: pb::run_end::Kind::Completed as i32,
            epoch: 1,
            ..Default::default()
        }),
        checkpoint_hash: hash,
        epochs_trained: 1,
        ..Default::default()
    })
    .await
    .unwrap();
    let got = tokio::time::timeout(Duration::from_secs(30), waiting)
        .await
        .expect("the waiting Lease was not woken by the released chunk")
        .unwrap()
        .unwrap()
        .into_inner();
    assert_eq!(got.tasks.len(), 1, "{got:?}");
    assert_ne!(got.tasks[0].task_id, first.task_id, "{got:?}");
    c.stop().await;
}

/// A worker that asks for no task has nothing to be handed: its
/// heartbeat is answered from the last commit, and its renewals ride with a
/// later batch (`ridgeline_leases_total{renewals="deferred"}`). They are
/// still real: a lease renewed that way outlives its TTL twice over,
/// while the other worker's looks find nothing; and it expires once the
/// heartbeats stop, after which the old holder's heartbeat, answered the
/// same way, is told to stop.
#[tokio::test]
async fn a_full_worker_s_heartbeats_renew_its_leases_without_a_commit_of_their_own() {
    let dir = tempfile::tempdir().unwrap();
    let http = ridgeline_tests::free_addr();
    let mut config = ridgeline_coordinator::ServerConfig::new(dir.path());
    config.scheduler.lease_ttl = Duration::from_millis(1_200);
    config.scheduler.heartbeat_interval = Duration::from_millis(100);
    config.http = Some(http);
    let c = Coordinator::start_with("127.0.0.1:0".parse().unwrap(), config).await;
    let mut client = c.jobs().await;
    let mut w = c.workers().await;
    // One run, one chunk: a single task.
    submit(&mut client, &jobs::lr_ramp(1, 2, 2)).await.unwrap();
    let a = register(&mut w, "a").await;
    let b = register(&mut w, "b").await;
    let task = lease_one(&mut w, &a).await;
    let deferred = || counter(http, "ridgeline_leases_total{renewals=\"deferred\"}");
    let heartbeat = |worker: String, task: pb::TaskAssignment| pb::LeaseRequest {
        worker_id: worker,
        free_slots: 0,
        running: vec![pb::RunningTask {
            task_id: task.task_id,
            attempt: task.attempt,
        }],
        wait_ms: 0,
    };
    let before = deferred().await;
    // Two TTLs of heartbeats from a; b looks for work all the while.
    let mut beats = 0;
    let start = std::time::Instant::now();
    while start.elapsed() < Duration::from_millis(2_400) {
        let hb = w
            .lease(heartbeat(a.clone(), task.clone()))
            .await
            .unwrap()
            .into_inner();
        assert!(hb.tasks.is_empty() && hb.stop.is_empty(), "{hb:?}");
        beats += 1;
        let look = w
            .lease(pb::LeaseRequest {
                worker_id: b.clone(),
                free_slots: 1,
                running: vec![],
                wait_ms: 0,
            })
            .await
            .unwrap()
            .into_inner();
        assert!(
            look.tasks.is_empty(),
            "a's lease expired though it heartbeat: {look:?}"
        );
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    assert_eq!(
        deferred().await - before,
        beats,
        "a's heartbeats waited for commits of their own"
    );
    // a goes quiet: its lease runs out and b gets the task.
    let mut taken = None;
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        if let Some(t) = lease_one_or_none(&mut w, &b).await {
            taken = Some(t);
            break;
        }
    }
    let taken = taken.expect("the lease never expired once the heartbeats stopped");
    assert_eq!(
        (taken.task_id.as_str(), taken.attempt),
        (task.task_id.as_str(), 2)
    );
    // a's next heartbeat, still with no room, is told to stop.
    let hb = w
        .lease(heartbeat(a.clone(), task.clone()))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(hb.stop, vec![task.task_id.clone()]);
    assert_eq!(deferred().await - before, beats + 1);
    c.stop().await;
}

/// A Complete with `next_slots` leases the worker's next task in the same
/// call (the real worker's steady state: no Lease between two tasks), never
/// beyond the slots it registered; a resent Complete leases nothing more,
/// and a bad `next_slots` is refused without storing the completion.
#[tokio::test]
async fn a_completion_leases_the_next_task_within_the_worker_s_slots() {
    let dir = tempfile::tempdir().unwrap();
    let c = Coordinator::start(dir.path(), Duration::from_secs(30)).await;
    let mut client = c.jobs().await;
    let job = submit(&mut client, &jobs::line_search(4, 1)).await.unwrap();
    let mut w = c.workers().await;
    let a = register(&mut w, "a").await; // one slot
    let done = |t: &pb::TaskAssignment, next_slots: u32| pb::CompleteRequest {
        worker_id: a.clone(),
        task_id: t.task_id.clone(),
        attempt: t.attempt,
        end: Some(pb::RunEnd {
            kind: pb::run_end::Kind::Completed as i32,
            ..Default::default()
        }),
        checkpoint_hash: String::new(),
        epochs_trained: 0,
        engine_ms: 0,
        next_slots,
        queued_ms: 0,
        queued_starts: vec![],
        last_report: None,
    };
    let t1 = lease_one(&mut w, &a).await;
    let mut next = w.complete(done(&t1, 1)).await.unwrap().into_inner().tasks;
    assert_eq!(next.len(), 1, "{next:?}");
    let t2 = next.remove(0);
    assert_eq!((t2.job_id.as_str(), t2.attempt), (job.as_str(), 1));
    assert_ne!(t2.task_id, t1.task_id);

    // A resend of t1's completion is acknowledged and leases nothing.
    let again = w.complete(done(&t1, 1)).await.unwrap().into_inner();
    assert!(again.tasks.is_empty(), "{again:?}");

    // Asking for five gets one: the worker has one slot, freed by t2.
    let mut next = w.complete(done(&t2, 5)).await.unwrap().into_inner().tasks;
    assert_eq!(next.len(), 1, "{next:?}");
    let t3 = next.remove(0);

    // More than any worker can hold: refused, and t3 is still leased.
    let err = w.complete(done(&t3, 5000)).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    assert!(err.message().contains("next_slots"), "{}", err.message());
    let s = client
        .get_job(pb::GetJobRequest {
            job_id: job.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    let state = |id: &str| {
        s.tasks
            .iter()
            .find(|t| t.task_id == id)
            .map(|t| t.state)
            .unwrap()
    };
    assert_eq!(state(&t3.task_id), pb::TaskState::Leased as i32);
    assert_eq!(state(&t2.task_id), pb::TaskState::Done as i32);

    // next_slots 0: the old way, nothing leased; the last task then comes
    // from a Lease, and the job finishes.
    let none = w.complete(done(&t3, 0)).await.unwrap().into_inner();
    assert!(none.tasks.is_empty());
    let t4 = lease_one(&mut w, &a).await;
    let last = w.complete(done(&t4, 1)).await.unwrap().into_inner();
    assert!(last.tasks.is_empty(), "nothing left to lease: {last:?}");
    let end = ridgeline_tests::wait_for_end(&mut client, &job, Duration::from_secs(30)).await;
    assert_eq!(end.state, pb::JobState::Succeeded as i32, "{end:?}");
    c.stop().await;
}

/// A run's next chunk goes to the worker that completed the chunk before
/// it (whose cache holds the checkpoint it continues), ahead of a task that
/// comes first in the job's order: here, another run's chunk released
/// earlier. Without the preference, `a` would be handed that one and `b`'s
/// checkpoint would be downloaded by `a`.
#[tokio::test]
async fn a_run_s_next_chunk_goes_to_the_worker_that_holds_its_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let c = Coordinator::start(dir.path(), Duration::from_secs(30)).await;
    let mut client = c.jobs().await;
    // Three runs of two one-epoch chunks, in the job's order run by run.
    let job = submit(&mut client, &jobs::lr_ramp(3, 2, 1)).await.unwrap();
    let mut w = c.workers().await;
    let b = register(&mut w, "b").await;
    let a = register(&mut w, "a").await;
    let first_b = lease_one(&mut w, &b).await;
    let first_a = lease_one(&mut w, &a).await;
    let checkpoint = |worker: &str, t: &pb::TaskAssignment, next_slots: u32| {
        let data = format!("checkpoint of {} by {worker}", t.task_id).into_bytes();
        let hash = ridgeline_worker::engine::artifact::content_hash(&data);
        let mut w = w.clone();
        let (worker, t) = (worker.to_string(), t.clone());
        async move {
            w.upload_artifact(tokio_stream::iter(vec![pb::ArtifactChunk {
                hash: hash.clone(),
                size: data.len() as u64,
                data,
            }]))
            .await
            .unwrap();
            w.complete(pb::CompleteRequest {
                worker_id: worker,
                task_id: t.task_id,
                attempt: t.attempt,
                end: Some(pb::RunEnd {
                    kind: pb::run_end::Kind::Completed as i32,
                    epoch: 1,
                    ..Default::default()
                }),
                checkpoint_hash: hash,
                epochs_trained: 1,
                next_slots,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner()
            .tasks
        }
    };
    // b's chunk is done first and b takes nothing: its run's second chunk
    // is ready, and first in the job's order.
    assert!(checkpoint(&b, &first_b, 0).await.is_empty());
    // a completes its chunk: it is handed its own run's next chunk.
    let next = checkpoint(&a, &first_a, 1).await;
    assert_eq!(next.len(), 1, "{next:?}");
    let s = client
        .get_job(pb::GetJobRequest { job_id: job })
        .await
        .unwrap()
        .into_inner();
    let label = |id: &str| {
        s.tasks
            .iter()
            .find(|t| t.task_id == id)
            .map(|t| t.label.clone())
            .unwrap()
    };
    // "seed=N" of "seed=N, epochs 0-1".
    let run = |id: &str| label(id).split(", epochs ").next().unwrap().to_string();
    assert_eq!(
        label(&next[0].task_id),
        format!("{}, epochs 1-2", run(&first_a.task_id))
    );
    // b, asking now, gets the chunk that continues its own run.
    let then = lease_one(&mut w, &b).await;
    assert_eq!(
        label(&then.task_id),
        format!("{}, epochs 1-2", run(&first_b.task_id))
    );
    c.stop().await;
}

/// A worker registered with `lease_ahead` gets tasks beyond its slots, to
/// queue, but only from a job with ready tasks to spare (more than the idle
/// slots of live workers): a queued task must not keep an idle worker
/// waiting. The Complete's `queued_ms` dates the attempt's start.
#[tokio::test]
async fn a_worker_holds_tasks_ahead_only_from_a_job_with_tasks_to_spare() {
    let dir = tempfile::tempdir().unwrap();
    let c = Coordinator::start(dir.path(), Duration::from_secs(30)).await;
    let mut client = c.jobs().await;
    let mut w = c.workers().await;
    let registration = |name: &str, slots: u32, lease_ahead: u32| pb::RegisterRequest {
        protocol_version: ridgeline_common::proto::PROTOCOL_VERSION,
        name: name.into(),
        device: "cpu".into(),
        slots,
        lease_ahead,
        ..Default::default()
    };
    // A queue longer than the slots is refused, naming the field.
    let err = w.register(registration("greedy", 1, 2)).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    assert!(err.message().contains("lease_ahead"), "{}", err.message());

    let job = submit(&mut client, &jobs::line_search(3, 1)).await.unwrap();
    let a = ridgeline_tests::register_ahead(&mut w, "a", 1).await;
    // Asking for more than a slot and a queue place gets exactly those two:
    // three tasks ready, no other worker idle.
    let first = w
        .lease(pb::LeaseRequest {
            worker_id: a.clone(),
            free_slots: 5,
            running: vec![],
            wait_ms: 0,
        })
        .await
        .unwrap()
        .into_inner()
        .tasks;
    assert_eq!(first.len(), 2, "a slot and a queue place: {first:?}");
    let done = |t: &pb::TaskAssignment, queued_ms: u64| pb::CompleteRequest {
        worker_id: a.clone(),
        task_id: t.task_id.clone(),
        attempt: t.attempt,
        end: Some(pb::RunEnd {
            kind: pb::run_end::Kind::Completed as i32,
            ..Default::default()
        }),
        next_slots: 2,
        queued_ms,
        queued_starts: vec![],
        ..Default::default()
    };

    // Now b is idle and one task is left: a gets no queue place, and b's
    // lease gets the task.
    let b = register(&mut w, "b").await;
    // Past the coordinator's reuse of its idle-slot count.
    tokio::time::sleep(Duration::from_millis(250)).await;
    let next = w.complete(done(&first[0], 0)).await.unwrap().into_inner();
    assert!(next.tasks.is_empty(), "no task to spare: {next:?}");
    let last = lease_one(&mut w, &b).await;
    assert_eq!(last.job_id, job);

    // The queued one completes, saying it waited 40 ms in the queue.
    w.complete(done(&first[1], 40)).await.unwrap();
    let s = client
        .get_job(pb::GetJobRequest {
            job_id: job.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    let status = |id: &str| s.tasks.iter().find(|t| t.task_id == id).unwrap().clone();
    let (t1, t2) = (status(&first[0].task_id), status(&first[1].task_id));
    assert_eq!(t1.started_unix_ms, t1.leased_unix_ms, "{t1:?}");
    assert_eq!(t2.started_unix_ms, t2.leased_unix_ms + 40, "{t2:?}");
    assert!(t2.started_unix_ms <= t2.done_unix_ms, "{t2:?}");
    // Not done yet: no start.
    assert_eq!(status(&last.task_id).started_unix_ms, 0);
    c.stop().await;
}

/// A task one worker holds queued (leased ahead) and has not started is
/// taken back for a worker that falls idle with nothing ready (attempt + 1,
/// not a failure). The holder asks before it starts a queued task
/// (StartQueued): refused once the task was taken back, and from then on
/// safe from a take-back once granted. Exactly one of the two runs it.
#[tokio::test]
async fn an_idle_worker_takes_back_a_queued_task_its_holder_has_not_started() {
    let dir = tempfile::tempdir().unwrap();
    let c = Coordinator::start(dir.path(), Duration::from_secs(30)).await;
    let mut client = c.jobs().await;
    let mut w = c.workers().await;
    let job = submit(&mut client, &jobs::line_search(4, 1)).await.unwrap();
    let a = ridgeline_tests::register_ahead(&mut w, "a", 1).await;
    let lease = |worker: &str, free: u32, running: Vec<pb::RunningTask>| pb::LeaseRequest {
        worker_id: worker.to_string(),
        free_slots: free,
        running,
        wait_ms: 0,
    };
    let start = |worker: &str, t: &pb::TaskAssignment| pb::StartQueuedRequest {
        worker_id: worker.to_string(),
        task_id: t.task_id.clone(),
        attempt: t.attempt,
    };
    let held = w
        .lease(lease(&a, 2, vec![]))
        .await
        .unwrap()
        .into_inner()
        .tasks;
    assert_eq!(held.len(), 2, "a slot and a queue place: {held:?}");
    let (t1, t2) = (&held[0], &held[1]);
    assert!(
        !t1.queued && t2.queued,
        "only the queue place is marked: {held:?}"
    );
    let done = |worker: &str, t: &pb::TaskAssignment, next_slots: u32| pb::CompleteRequest {
        worker_id: worker.to_string(),
        task_id: t.task_id.clone(),
        attempt: t.attempt,
        end: Some(pb::RunEnd {
            kind: pb::run_end::Kind::Completed as i32,
            ..Default::default()
        }),
        next_slots,
        ..Default::default()
    };

    // b takes the two tasks still ready, then falls idle: it gets t2, which
    // a holds queued, at attempt 2, for its slot.
    let b = register(&mut w, "b").await;
    let t3 = lease_one(&mut w, &b).await;
    let t4 = w
        .complete(done(&b, &t3, 1))
        .await
        .unwrap()
        .into_inner()
        .tasks;
    assert_eq!(t4.len(), 1, "{t4:?}");
    assert_ne!(t4[0].task_id, t2.task_id, "a ready task first: {t4:?}");
    let taken = w
        .complete(done(&b, &t4[0], 1))
        .await
        .unwrap()
        .into_inner()
        .tasks;
    assert_eq!(taken.len(), 1, "{taken:?}");
    assert_eq!(
        (taken[0].task_id.as_str(), taken[0].attempt, taken[0].queued),
        (t2.task_id.as_str(), 2, false)
    );

    // a's slot frees: its start of t2 is refused, every time it asks.
    for _ in 0..2 {
        let answer = w.start_queued(start(&a, t2)).await.unwrap().into_inner();
        assert!(!answer.start, "{answer:?}");
        assert!(answer.reason.contains("taken back"), "{answer:?}");
    }
    // Its heartbeat, still listing the old attempt, is told to drop it.
    let running = |t: &pb::TaskAssignment| pb::RunningTask {
        task_id: t.task_id.clone(),
        attempt: t.attempt,
    };
    let beat = w
        .lease(lease(&a, 0, vec![running(t1), running(t2)]))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(beat.stop, vec![t2.task_id.clone()], "{beat:?}");
    // A completion of the old attempt is refused; b's counts.
    let err = w.complete(done(&a, t2, 0)).await.unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
    w.complete(done(&b, &taken[0], 0)).await.unwrap();
    w.complete(done(&a, t1, 0)).await.unwrap();
    let end = ridgeline_tests::wait_for_end(&mut client, &job, Duration::from_secs(30)).await;
    assert_eq!(end.state, pb::JobState::Succeeded as i32, "{end:?}");
    let t2_end = end.tasks.iter().find(|t| t.task_id == t2.task_id).unwrap();
    assert_eq!((t2_end.attempt, t2_end.worker_id.as_str()), (2, b.as_str()));

    // Started first, it stays: a queues one, b takes the last ready one,
    // a starts its queued one, and b, idle again, gets nothing.
    let job2 = submit(&mut client, &jobs::line_search(3, 1)).await.unwrap();
    // Past the coordinator's reuse of its idle-slot count.
    tokio::time::sleep(Duration::from_millis(250)).await;
    let held = w
        .lease(lease(&a, 2, vec![]))
        .await
        .unwrap()
        .into_inner()
        .tasks;
    assert_eq!(held.len(), 2, "a slot and a queue place: {held:?}");
    assert!(held[1].queued, "{held:?}");
    let last = lease_one(&mut w, &b).await;
    let answer = w
        .start_queued(start(&a, &held[1]))
        .await
        .unwrap()
        .into_inner();
    assert!(answer.start, "{answer:?}");
    let none = w.complete(done(&b, &last, 1)).await.unwrap().into_inner();
    assert!(
        none.tasks.is_empty(),
        "a started task is not taken: {none:?}"
    );
    // Asking again, or about a task leased for a slot, is answered from
    // the store: it is a's.
    for t in [&held[1], &held[0]] {
        let answer = w.start_queued(start(&a, t)).await.unwrap().into_inner();
        assert!(answer.start, "{answer:?}");
    }
    // Another worker's, or a stale attempt: refused.
    let answer = w
        .start_queued(start(&b, &held[0]))
        .await
        .unwrap()
        .into_inner();
    assert!(
        !answer.start && answer.reason.contains("not leased to this worker"),
        "{answer:?}"
    );
    w.complete(done(&a, &held[0], 0)).await.unwrap();
    w.complete(done(&a, &held[1], 0)).await.unwrap();
    let end = ridgeline_tests::wait_for_end(&mut client, &job2, Duration::from_secs(30)).await;
    assert_eq!(end.state, pb::JobState::Succeeded as i32, "{end:?}");

    // Bad ids name the field; an unknown task is NOT_FOUND.
    let mut bad = start(&a, &held[0]);
    bad.task_id = "not-a-task".into();
    let err = w.start_queued(bad).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    assert!(err.message().contains("task_id"), "{}", err.message());
    let mut unknown = start(&a, &held[0]);
    unknown.task_id = ridgeline_common::TaskId::new().to_string();
    let err = w.start_queued(unknown).await.unwrap_err();
    assert_eq!(err.code(), Code::NotFound, "{err:?}");
    c.stop().await;
}

/// The claim of a queued task can ride with the Complete its worker sends
/// as the task starts (`queued_starts`), answered as StartQueued would be,
/// in order: a claimed task is no longer taken back, a task taken back is
/// refused, an unknown one is refused without refusing the completion, and
/// a malformed id refuses the whole call and stores nothing.
#[tokio::test]
async fn a_completion_carries_the_claims_of_the_queued_tasks_its_worker_started() {
    let dir = tempfile::tempdir().unwrap();
    let c = Coordinator::start(dir.path(), Duration::from_secs(30)).await;
    let mut client = c.jobs().await;
    let mut w = c.workers().await;
    let job = submit(&mut client, &jobs::line_search(4, 1)).await.unwrap();
    let a = ridgeline_tests::register_ahead(&mut w, "a", 1).await;
    let held = w
        .lease(pb::LeaseRequest {
            worker_id: a.clone(),
            free_slots: 2,
            running: vec![],
            wait_ms: 0,
        })
        .await
        .unwrap()
        .into_inner()
        .tasks;
    assert_eq!(held.len(), 2, "a slot and a queue place: {held:?}");
    let (t1, t2) = (&held[0], &held[1]);
    assert!(t2.queued, "{held:?}");
    let running = |t: &pb::TaskAssignment| pb::RunningTask {
        task_id: t.task_id.clone(),
        attempt: t.attempt,
    };
    let done =
        |worker: &str, t: &pb::TaskAssignment, next_slots: u32, claims: Vec<pb::RunningTask>| {
            pb::CompleteRequest {
                worker_id: worker.to_string(),
                task_id: t.task_id.clone(),
                attempt: t.attempt,
                end: Some(pb::RunEnd {
                    kind: pb::run_end::Kind::Completed as i32,
                    ..Default::default()
                }),
                next_slots,
                queued_starts: claims,
                ..Default::default()
            }
        };

    // t1 ends and a starts t2 in its slot: t1's Complete claims t2, and
    // refills a's queue with t3.
    let answer = w
        .complete(done(&a, t1, 2, vec![running(t2)]))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(answer.queued_starts.len(), 1, "{answer:?}");
    assert!(answer.queued_starts[0].start, "{answer:?}");
    assert_eq!(answer.tasks.len(), 1, "{answer:?}");
    let t3 = &answer.tasks[0];
    assert!(t3.queued, "{answer:?}");

    // b takes the last ready task, then falls idle: of a's two tasks it
    // takes back t3, which a has not claimed, never t2, which it has.
    let b = register(&mut w, "b").await;
    let t4 = lease_one(&mut w, &b).await;
    let taken = w
        .complete(done(&b, &t4, 1, vec![]))
        .await
        .unwrap()
        .into_inner()
        .tasks;
    assert_eq!(taken.len(), 1, "{taken:?}");
    assert_eq!(
        (taken[0].task_id.as_str(), taken[0].attempt),
        (t3.task_id.as_str(), 2)
    );

    // A malformed claim refuses the whole completion, naming the field;
    // t2 is still leased (nothing was stored).
    let mut bad = running(t3);
    bad.task_id = "not-a-task".into();
    let err = w
        .complete(done(&a, t2, 0, vec![running(t3), bad]))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    assert!(
        err.message().contains("queued_starts.task_id") && err.message().contains("entry 1"),
        "{}",
        err.message()
    );
    // t2 ends and a starts t3: refused, taken back; an unknown task is
    // refused too, and t2's completion is stored all the same.
    let unknown = pb::RunningTask {
        task_id: ridgeline_common::TaskId::new().to_string(),
        attempt: 1,
    };
    let answer = w
        .complete(done(&a, t2, 0, vec![running(t3), unknown]))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(answer.queued_starts.len(), 2, "{answer:?}");
    assert!(
        !answer.queued_starts[0].start && answer.queued_starts[0].reason.contains("taken back"),
        "{answer:?}"
    );
    assert!(
        !answer.queued_starts[1].start && answer.queued_starts[1].reason.contains("no task"),
        "{answer:?}"
    );
    // Asked again, the answer is the same.
    let again = w
        .start_queued(pb::StartQueuedRequest {
            worker_id: a.clone(),
            task_id: t3.task_id.clone(),
            attempt: t3.attempt,
        })
        .await
        .unwrap()
        .into_inner();
    assert!(!again.start, "{again:?}");
    w.complete(done(&b, &taken[0], 0, vec![])).await.unwrap();
    let end = ridgeline_tests::wait_for_end(&mut client, &job, Duration::from_secs(30)).await;
    assert_eq!(end.state, pb::JobState::Succeeded as i32, "{end:?}");
    let by_id = |id: &str| end.tasks.iter().find(|t| t.task_id == id).unwrap();
    assert_eq!(
        (
            by_id(&t2.task_id).attempt,
            by_id(&t2.task_id).worker_id.as_str()
        ),
        (1, a.as_str())
    );
    assert_eq!(
        (
            by_id(&t3.task_id).attempt,
            by_id(&t3.task_id).worker_id.as_str()
        ),
        (2, b.as_str())
    );
    c.stop().await;
}

/// A task whose assignment never reached its worker (the answer was lost)
/// is sent again by the worker's next heartbeat that does not list it,
/// same attempt, rather than left to wait for its lease to expire; a task
/// leased just before the heartbeat was written (its answer possibly on
/// its way) is not, nor one the heartbeat lists.
#[tokio::test]
async fn a_task_whose_assignment_was_lost_is_sent_again_by_the_next_heartbeat() {
    let dir = tempfile::tempdir().unwrap();
    let c = Coordinator::start(dir.path(), Duration::from_secs(30)).await;
    let mut client = c.jobs().await;
    let mut w = c.workers().await;
    let job = submit(&mut client, &jobs::line_search(2, 1)).await.unwrap();
    let a = ridgeline_tests::register(&mut w, "a").await;
    let beat = |running: Vec<pb::RunningTask>| pb::LeaseRequest {
        worker_id: a.clone(),
        free_slots: 1,
        running,
        wait_ms: 0,
    };
    // The answer is "lost": the worker never heard of this task.
    let lost = lease_one(&mut w, &a).await;
    // Just leased: not yet taken for lost, and nothing more for a's slot.
    let soon = w.lease(beat(vec![])).await.unwrap().into_inner();
    assert!(soon.tasks.is_empty(), "{soon:?}");
    tokio::time::sleep(Duration::from_millis(2_100)).await;
    let again = w.lease(beat(vec![])).await.unwrap().into_inner();
    assert_eq!(again.tasks.len(), 1, "{again:?}");
    let t = &again.tasks[0];
    assert_eq!(
        (&t.task_id, t.attempt, &t.spec_json, t.queued),
        (&lost.task_id, lost.attempt, &lost.spec_json, false)
    );
    // Listed, it is only renewed.
    let listed = w
        .lease(beat(vec![pb::RunningTask {
            task_id: lost.task_id.clone(),
            attempt: lost.attempt,
        }]))
        .await
        .unwrap()
        .into_inner();
    assert!(
        listed.tasks.is_empty() && listed.stop.is_empty(),
        "{listed:?}"
    );
    // It completes as any task; the job's other task follows.
    w.complete(pb::CompleteRequest {
        worker_id: a.clone(),
        task_id: lost.task_id.clone(),
        attempt: lost.attempt,
        end: Some(pb::RunEnd {
            kind: pb::run_end::Kind::Completed as i32,
            ..Default::default()
        }),
        ..Default::default()
    })
    .await
    .unwrap();
    let s = client
        .get_job(pb::GetJobRequest { job_id: job })
        .await
        .unwrap()
        .into_inner();
    let done = s.tasks.iter().find(|t| t.task_id == lost.task_id).unwrap();
    assert_eq!(
        (done.state, done.attempt),
        (pb::TaskState::Done as i32, 1),
        "{s:#?}"
    );
    c.stop().await;
}

/// A Complete may carry the attempt's last report: stored in the same
/// transaction just before the completion, once even when the Complete is
/// resent, and refused as a whole (nothing stored, the task still leased)
/// when it does not belong to the attempt or has a bad item.
#[tokio::test]
async fn a_completion_can_carry_the_attempt_s_last_report() {
    let dir = tempfile::tempdir().unwrap();
    let c = Coordinator::start(dir.path(), Duration::from_secs(30)).await;
    let mut client = c.jobs().await;
    let job = submit(&mut client, &jobs::lr_ramp(1, 2, 2)).await.unwrap();
    let mut w = c.workers().await;
    let a = register(&mut w, "a").await;
    let t = lease_one(&mut w, &a).await;
    w.report(report(&a, &t, 1, 0)).await.unwrap();
    let done = pb::CompleteRequest {
        worker_id: a.clone(),
        task_id: t.task_id.clone(),
        attempt: t.attempt,
        end: Some(pb::RunEnd {
            kind: pb::run_end::Kind::Completed as i32,
            epoch: 2,
            ..Default::default()
        }),
        checkpoint_hash: String::new(),
        epochs_trained: 2,
        engine_ms: 0,
        next_slots: 1,
        queued_ms: 0,
        queued_starts: vec![],
        last_report: Some(pb::ReportRequest {
            worker_id: a.clone(),
            task_id: t.task_id.clone(),
            attempt: t.attempt,
            seq: 2,
            items: vec![epoch_item(1), epoch_item(2)],
        }),
    };
    let epochs = |r: &pb::JobResults| -> Vec<f64> {
        r.curves
            .iter()
            .flat_map(|c| c.points.iter().map(|p| p.x))
            .collect()
    };
    let results =
        |mut client: ridgeline_common::proto::v1::job_service_client::JobServiceClient<
            tonic::transport::Channel,
        >,
         job: String| async move {
            client
                .get_results(pb::GetResultsRequest { job_id: job })
                .await
                .unwrap()
                .into_inner()
        };

    let mut other_attempt = done.clone();
    other_attempt.last_report.as_mut().unwrap().attempt = 7;
    let err = w.complete(other_attempt).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    assert!(err.message().contains("last_report"), "{}", err.message());
    let mut bad_item = done.clone();
    bad_item.last_report.as_mut().unwrap().items[1].kind = None;
    let err = w.complete(bad_item).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    assert!(
        err.message().contains("last_report.items[1]"),
        "{}",
        err.message()
    );
    assert_eq!(
        epochs(&results(client.clone(), job.clone()).await),
        vec![0.0],
        "a refused Complete stores none of its report"
    );

    let answer = w.complete(done.clone()).await.unwrap().into_inner();
    assert!(answer.tasks.is_empty(), "nothing else to lease");
    // A resend (its answer lost): acknowledged, nothing stored twice.
    w.complete(done).await.unwrap();
    assert_eq!(
        epochs(&results(client.clone(), job.clone()).await),
        vec![0.0, 1.0, 2.0]
    );
    let end = ridgeline_tests::wait_for_end(&mut client, &job, Duration::from_secs(30)).await;
    assert_eq!(end.state, pb::JobState::Succeeded as i32, "{end:?}");
    c.stop().await;
}
