//! A `procedure` job end to end: a real coordinator and two real workers
//! over gRPC run all seven steps on built-in data; every decision is
//! stored with its numbers, the stages were released in DAG order, and the
//! final line search reaches the trained weights.

use std::collections::BTreeSet;
use std::time::Duration;

use ridgeline_common::proto::v1 as pb;
use ridgeline_tests::{jobs, submit, wait_for_end, Coordinator};
use ridgeline_worker::runner::{self, WorkerConfig};
use tokio_util::sync::CancellationToken;

const LIMIT: Duration = Duration::from_secs(600);

fn start_worker(url: &str, name: &str, cache: &std::path::Path, stop: &CancellationToken) {
    let mut cfg = WorkerConfig::new(url, name);
    cfg.cache_dir = cache.join(name);
    cfg.shutdown_grace = Duration::from_millis(200);
    let stop = stop.clone();
    tokio::spawn(async move {
        if let Err(e) = runner::run(cfg, stop).await {
            panic!("worker failed: {e}");
        }
    });
}

/// Every step, small: 2 seeds, short ramps and runs, 9-point line searches.
fn procedure_job() -> String {
    format!(
        "kind = \"procedure\"\nname = \"tabular procedure\"\nreplicates = 2\nchunk_epochs = 4\nbatch_size = 32\n{}\n\
         [procedure]\nlr_start = 0.001\nlr_end = 30.0\nlr_epochs = 8\nmomentum_epochs = 5\nconfirm_epochs = 3\n\
         epochs = 8\npoints = 9\npoints_per_task = 5\n",
        jobs::TABULAR_HEAD
    )
}

const STEPS: [&str; 11] = [
    "initial_line_search",
    "lr",
    "momentum",
    "momentum_confirm",
    "plateau",
    "decay",
    "cyclical",
    "variant_lr:adam",
    "variant:adam",
    "final_line_search",
    "recommendation",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_procedure_job_runs_all_seven_steps_and_decides_each() {
    let dir = tempfile::tempdir().unwrap();
    let coord = Coordinator::start(&dir.path().join("data"), Duration::from_secs(30)).await;
    let stop = CancellationToken::new();
    start_worker(&coord.url(), "w1", dir.path(), &stop);
    start_worker(&coord.url(), "w2", dir.path(), &stop);

    let mut client = coord.jobs().await;
    // The same job twice, at once: same seeds, so the same numbers and
    // decisions, whichever worker ran which chunk.
    let job_id = submit(&mut client, &procedure_job())
        .await
        .expect("submitted");
    let twin_id = submit(&mut client, &procedure_job())
        .await
        .expect("submitted");
    let status = wait_for_end(&mut client, &job_id, LIMIT).await;
    let twin_status = wait_for_end(&mut client, &twin_id, LIMIT).await;
    assert_eq!(twin_status.state, pb::JobState::Succeeded as i32);
    assert_eq!(
        status.state,
        pb::JobState::Succeeded as i32,
        "job ended: {}",
        status.error
    );

    // Every stage of the DAG ran, and every task of it is done (or was
    // cancelled after its run diverged).
    let stages: BTreeSet<&str> = status.stages.iter().map(|s| s.stage.as_str()).collect();
    let want: BTreeSet<&str> = [
        "initial_line_search",
        "lr_ramp",
        "momentum_ramp",
        "confirm_momentum",
        "confirm_no_momentum",
        "converge",
        "decay",
        "cyclical",
        "variant_ramp:adam",
        "variant:adam",
        "final_line_search",
    ]
    .into();
    assert_eq!(stages, want);
    for s in &status.stages {
        assert_eq!(s.done + s.cancelled, s.total, "stage {}", s.stage);
        assert_eq!(s.failed, 0, "stage {}", s.stage);
    }

    let results = client
        .get_results(pb::GetResultsRequest {
            job_id: job_id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(results.metric, "accuracy");
    for d in &results.decisions {
        let flags: Vec<&str> = d.red_flags.iter().map(|f| f.code.as_str()).collect();
        eprintln!("{}: {} [{}] {flags:?}", d.title, d.summary, d.confidence);
    }
    let steps: Vec<&str> = results.decisions.iter().map(|d| d.step.as_str()).collect();
    let got: BTreeSet<&str> = steps.iter().copied().collect();
    assert_eq!(got, STEPS.into_iter().collect(), "decisions: {steps:?}");
    assert_eq!(steps.last(), Some(&"recommendation"));
    for d in &results.decisions {
        assert!(!d.summary.is_empty() && !d.thoughts.is_empty(), "{d:?}");
        assert!(d.unix_ms > 0);
        let v: serde_json::Value = serde_json::from_str(&d.json).expect("decision JSON");
        assert!(v.is_object(), "{}", d.json);
    }
    let by_step = |s: &str| {
        results
            .decisions
            .iter()
            .find(|d| d.step == s)
            .unwrap_or_else(|| panic!("no decision {s}"))
    };
    // The order of the DAG: a decision never comes before what it needs.
    let pos = |s: &str| steps.iter().position(|x| *x == s).unwrap();
    assert!(pos("lr") < pos("momentum"));
    assert!(pos("momentum") < pos("momentum_confirm"));
    assert!(pos("momentum_confirm") < pos("plateau"));
    assert!(pos("plateau") < pos("decay") && pos("plateau") < pos("cyclical"));
    assert!(pos("variant_lr:adam") < pos("variant:adam"));
    assert!(pos("variant:adam") < pos("final_line_search"));

    // The LR came out of the ramp, inside its steady region; the data
    // is learnable, so the curve rose above the noise.
    let lr: serde_json::Value = serde_json::from_str(&by_step("lr").json).unwrap();
    let chosen = lr["lr"].as_f64().expect("an LR was chosen");
    assert!((0.001..=30.0).contains(&chosen), "{chosen}");
    assert!(by_step("lr")
        .red_flags
        .iter()
        .all(|f| f.code != "no_lr_improves"));

    // Step 7 searched towards the trained weights: at a = 1 the line gives
    // the trained model's own figure.
    let fin: serde_json::Value = serde_json::from_str(&by_step("final_line_search").json).unwrap();
    assert_eq!(
        fin["at_one"]["agrees"],
        serde_json::Value::Bool(true),
        "{fin}"
    );

    let rec: serde_json::Value = serde_json::from_str(&by_step("recommendation").json).unwrap();
    assert!(rec["lr"].as_f64().is_some(), "{rec}");
    assert!(
        rec["epochs"].as_u64().is_some_and(|e| (1..=8).contains(&e)),
        "{rec}"
    );
    let toml_text = rec["toml"].as_str().unwrap();
    let pasted: toml::Value = toml::from_str(toml_text).expect("paste-ready TOML");
    assert!(pasted.get("optimizer").is_some() && pasted.get("train").is_some());
    // The recommendation pasted into a train job is a valid job.
    let train_job = format!("kind = \"train\"\n{}\n{}", jobs::TABULAR_HEAD, toml_text);
    ridgeline_common::JobSpec::parse(&train_job, ridgeline_common::job::JobFormat::Toml)
        .expect("the recommendation is a valid train job");

    // The cost: every epoch of every task, at most all planned epochs.
    let most = 2 * (8 + 5 + 3 + 3 + 8 + 8 + 8 + 8 + 8);
    assert!(
        results.epochs_trained > 0 && results.epochs_trained <= most,
        "{}",
        results.epochs_trained
    );
    assert_eq!(rec["epochs_trained"].as_u64(), Some(results.epochs_trained));

    // The report: every file, a figure per step (11 stages, 9+ figures),
    // the recommendation pasted verbatim.
    let out = dir.path().join("report");
    ridgeline_coordinator::report::write_report(&out, &status, &results).expect("report");
    for f in [
        "report.html",
        "recommended.toml",
        "recommended.json",
        "curves.csv",
        "results.json",
        "decisions.json",
    ] {
        assert!(out.join(f).is_file(), "{f} written");
    }
    let html = std::fs::read_to_string(out.join("report.html")).unwrap();
    assert!(html.matches("<svg").count() >= 9, "a figure per step");
    for s in [
        "Step 1", "Step 2", "Step 3", "Step 4", "Step 5", "Step 6", "Step 7",
    ] {
        assert!(html.contains(s), "{s} in the report");
    }
    assert_eq!(
        std::fs::read_to_string(out.join("recommended.toml")).unwrap(),
        toml_text
    );

    let twin = client
        .get_results(pb::GetResultsRequest { job_id: twin_id })
        .await
        .unwrap()
        .into_inner();
    let strip = |r: &pb::JobResults| -> Vec<(String, String, String)> {
        r.decisions
            .iter()
            .map(|d| {
                (
                    d.step.clone(),
                    d.summary.clone(),
                    d.json.replace(&r.job_id, "JOB"),
                )
            })
            .collect()
    };
    let mut a = strip(&results);
    let mut b = strip(&twin);
    // Independent stages may be decided in either order.
    a.sort();
    b.sort();
    assert_eq!(a, b, "same job, same seeds: same decisions");
    assert_eq!(results.epochs_trained, twin.epochs_trained);

    stop.cancel();
    coord.stop().await;
}

/// A worker speaking the real protocol that, instead of training, reports
/// the curves `metric(curve, epoch or a)` gives: the DAG's reaction to
/// curves of a known shape, without training noise.
async fn scripted_worker(
    coord: &Coordinator,
    job_id: &str,
    metric: impl Fn(&str, f64) -> f64,
) -> pb::JobStatus {
    use ridgeline_common::task::TaskSpec;
    let mut w = coord.workers().await;
    let mut client = coord.jobs().await;
    let me = ridgeline_tests::register(&mut w, "scripted").await;
    let m = |v: f64| {
        Some(pb::Metrics {
            loss: 1.0 - v,
            metric: v,
            accuracy: Some(v),
            majority_fraction: Some(0.3),
            ..Default::default()
        })
    };
    let deadline = std::time::Instant::now() + LIMIT;
    loop {
        assert!(std::time::Instant::now() < deadline, "the job did not end");
        let tasks = w
            .lease(pb::LeaseRequest {
                worker_id: me.clone(),
                free_slots: 4,
                running: vec![],
                wait_ms: 0,
            })
            .await
            .unwrap()
            .into_inner()
            .tasks;
        if tasks.is_empty() {
            let s = client
                .get_job(pb::GetJobRequest {
                    job_id: job_id.into(),
                })
                .await
                .unwrap()
                .into_inner();
            if s.state != pb::JobState::Queued as i32 && s.state != pb::JobState::Running as i32 {
                return s;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
            continue;
        }
        for t in tasks {
            let spec = TaskSpec::from_json(&t.spec_json).unwrap();
            let (items, epochs, end_epoch): (Vec<pb::Progress>, u32, u32) = match &spec {
                TaskSpec::Train(tr) => {
                    let items = (tr.from_epoch..=tr.to_epoch)
                        .filter(|&e| e > tr.from_epoch || e == 0)
                        .map(|e| {
                            let at = e.saturating_sub(1) as f64;
                            let momentum =
                                tr.run.schedule.momentum.as_ref().map_or(0.0, |s| s.at(at));
                            pb::Progress {
                                kind: Some(pb::progress::Kind::Epoch(pb::EpochReport {
                                    epoch: e as u32,
                                    step: e as u64,
                                    progress: e as f64,
                                    lr: tr.run.schedule.lr.at(at),
                                    momentum,
                                    train: m(metric(&tr.curve, e as f64)),
                                    heldout: m(metric(&tr.curve, e as f64)),
                                    ..Default::default()
                                })),
                                ..Default::default()
                            }
                        })
                        .collect();
                    let n = (tr.to_epoch - tr.from_epoch) as u32;
                    (items, n, tr.to_epoch as u32)
                }
                TaskSpec::LineSearch(ls) => {
                    let items = ls
                        .points
                        .iter()
                        .map(|&(index, a)| pb::Progress {
                            kind: Some(pb::progress::Kind::Point(pb::LinePoint {
                                index,
                                alpha: a,
                                train: m(metric(&ls.curve, a)),
                                heldout: m(metric(&ls.curve, a)),
                            })),
                            ..Default::default()
                        })
                        .collect();
                    (items, 0, 0)
                }
            };
            w.report(pb::ReportRequest {
                worker_id: me.clone(),
                task_id: t.task_id.clone(),
                attempt: t.attempt,
                seq: 1,
                items,
            })
            .await
            .unwrap();
            w.complete(pb::CompleteRequest {
                worker_id: me.clone(),
                task_id: t.task_id.clone(),
                attempt: t.attempt,
                end: Some(pb::RunEnd {
                    kind: pb::run_end::Kind::Completed as i32,
                    epoch: end_epoch,
                    ..Default::default()
                }),
                checkpoint_hash: String::new(),
                epochs_trained: epochs,
                engine_ms: 0,
                next_slots: 0,
                queued_ms: 0,
                queued_starts: vec![],
                last_report: None,
            })
            .await
            .unwrap();
        }
    }
}

/// Curves that never rise above their noise: no LR can be chosen, every
/// step that needs one is recorded as skipped with the reason, the red flag
/// is raised, and the job still ends with a (negative) recommendation.
#[tokio::test]
async fn a_procedure_whose_lr_cannot_be_chosen_skips_what_needs_it() {
    let dir = tempfile::tempdir().unwrap();
    let coord = Coordinator::start(&dir.path().join("data"), Duration::from_secs(30)).await;
    let mut client = coord.jobs().await;
    // One chunk per run: the scripted worker hands on no checkpoints.
    let job = procedure_job().replace("chunk_epochs = 4", "chunk_epochs = 100");
    let job_id = submit(&mut client, &job).await.expect("submitted");
    // Flat at 0.25 with a little seed-to-seed noise.
    let status = scripted_worker(&coord, &job_id, |curve, x| {
        let seed = if curve.ends_with("seed=0") { 1.0 } else { -1.0 };
        0.25 + 0.004 * seed * ((x * 7.0).sin())
    })
    .await;
    assert_eq!(
        status.state,
        pb::JobState::Succeeded as i32,
        "{}",
        status.error
    );
    let r = client
        .get_results(pb::GetResultsRequest { job_id })
        .await
        .unwrap()
        .into_inner();
    let by_step = |s: &str| r.decisions.iter().find(|d| d.step == s);
    let lr = by_step("lr").expect("step 2 decided");
    assert_eq!(lr.confidence, "undetermined", "{}", lr.summary);
    assert!(
        lr.red_flags.iter().any(|f| f.code == "no_lr_improves"),
        "{:?}",
        lr.red_flags
    );
    for step in [
        "momentum",
        "momentum_confirm",
        "plateau",
        "decay",
        "cyclical",
        "variant:adam",
        "final_line_search",
    ] {
        let d = by_step(step).unwrap_or_else(|| panic!("no decision {step}"));
        assert!(d.summary.starts_with("skipped: "), "{step}: {}", d.summary);
    }
    let stages: BTreeSet<&str> = status.stages.iter().map(|s| s.stage.as_str()).collect();
    assert_eq!(
        stages,
        ["initial_line_search", "lr_ramp", "variant_ramp:adam"].into(),
        "nothing that needs an LR was run"
    );
    let rec = by_step("recommendation").expect("a recommendation");
    assert_eq!(rec.summary, "no recommendation");
    assert_eq!(rec.confidence, "undetermined");
    let v: serde_json::Value = serde_json::from_str(&rec.json).unwrap();
    assert!(v["toml"]
        .as_str()
        .unwrap()
        .starts_with("# Ridgeline could not recommend"));
    assert_eq!(
        r.epochs_trained,
        2 * (8 + 8),
        "two ramps of 8 epochs, 2 seeds"
    );
    coord.stop().await;
}
