//! A short soak: many small jobs submitted by several clients at once,
//! workers joining and leaving (one stopped mid-way, one killed outright by
//! dropping its runtime task, new ones joining), then an invariant check:
//! every job succeeded, every task is done exactly once (one completed
//! attempt), every curve has each epoch exactly once, every job's event log
//! is numbered 1..n without gaps or repeats, and the epochs trained add up.
//! The long variant: `SOAK_JOBS=500 cargo test -p ridgeline-tests --test soak`.

use std::collections::BTreeSet;
use std::time::Duration;

use ridgeline_common::proto::v1 as pb;
use ridgeline_tests::{jobs, submit, wait_for_end, Coordinator};
use ridgeline_worker::runner::{self, WorkerConfig};
use tokio_util::sync::CancellationToken;

fn worker(
    url: &str,
    name: &str,
    dir: &std::path::Path,
) -> (CancellationToken, tokio::task::JoinHandle<()>) {
    let stop = CancellationToken::new();
    let mut cfg = WorkerConfig::new(url, name);
    cfg.cache_dir = dir.join(name);
    cfg.slots = 2;
    cfg.shutdown_grace = Duration::from_millis(100);
    let token = stop.clone();
    let handle = tokio::spawn(async move {
        let _ = runner::run(cfg, token).await;
    });
    (stop, handle)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn many_jobs_many_clients_workers_coming_and_going_lose_and_double_count_nothing() {
    let n_jobs: usize = std::env::var("SOAK_JOBS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(24);
    let dir = tempfile::tempdir().unwrap();
    // Short leases, so the worker that vanishes costs seconds, not minutes.
    let c = Coordinator::start(&dir.path().join("coord"), Duration::from_secs(2)).await;
    let (stop_a, a) = worker(&c.url(), "a", dir.path());
    let (stop_b, b) = worker(&c.url(), "b", dir.path());

    // Four clients submit at once: 2 seeds × 3 epochs in chunks of 2.
    let mut submitters = vec![];
    for k in 0..4 {
        let mut client = c.jobs().await;
        let n = n_jobs / 4 + usize::from(k < n_jobs % 4);
        submitters.push(tokio::spawn(async move {
            let mut ids = vec![];
            for _ in 0..n {
                ids.push(submit(&mut client, &jobs::lr_ramp(2, 3, 2)).await.unwrap());
            }
            ids
        }));
    }
    let mut ids = vec![];
    for s in submitters {
        ids.extend(s.await.unwrap());
    }
    assert_eq!(ids.len(), n_jobs);

    // Workers come and go while the jobs run.
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop_a.cancel(); // a leaves politely (hands back what it holds)
    let (stop_c, c1) = worker(&c.url(), "c", dir.path());
    tokio::time::sleep(Duration::from_millis(300)).await;
    b.abort(); // b vanishes: its leases must expire
    let _ = stop_b;
    let (stop_d, d) = worker(&c.url(), "d", dir.path());

    let mut client = c.jobs().await;
    let mut epochs = 0;
    for id in &ids {
        let s = wait_for_end(&mut client, id, Duration::from_secs(300)).await;
        assert_eq!(s.state, pb::JobState::Succeeded as i32, "{id}: {}", s.error);
        // Every task done, by exactly one completed attempt.
        assert_eq!(s.tasks.len(), 2 * 2, "2 seeds × 2 chunks");
        for t in &s.tasks {
            assert_eq!(t.state, pb::TaskState::Done as i32, "{t:?}");
        }
        let r = client
            .get_results(pb::GetResultsRequest { job_id: id.clone() })
            .await
            .unwrap()
            .into_inner();
        // Each curve has epochs 0..=3 once each, and no other point.
        assert_eq!(r.curves.len(), 2);
        for curve in &r.curves {
            let xs: Vec<f64> = curve.points.iter().map(|p| p.x).collect();
            assert_eq!(xs, vec![0.0, 1.0, 2.0, 3.0], "{}: {}", id, curve.curve);
        }
        assert_eq!(r.epochs_trained, 2 * 3, "{id}: epochs counted once");
        epochs += r.epochs_trained;

        // The event log: numbered 1..n, each once, ending with the job's end.
        let mut stream = client
            .watch_job(pb::WatchJobRequest { job_id: id.clone() })
            .await
            .unwrap()
            .into_inner();
        let mut seqs = vec![];
        while let Some(ev) = stream.message().await.unwrap() {
            if ev.seq != 0 {
                seqs.push(ev.seq);
            }
        }
        let unique: BTreeSet<u64> = seqs.iter().copied().collect();
        assert_eq!(unique.len(), seqs.len(), "{id}: no event twice");
        assert_eq!(
            seqs,
            (1..=seqs.len() as u64).collect::<Vec<_>>(),
            "{id}: no gaps"
        );
    }
    assert_eq!(epochs, (n_jobs * 6) as u64);

    stop_c.cancel();
    stop_d.cancel();
    let _ = tokio::join!(a, c1, d);
    c.stop().await;
}
