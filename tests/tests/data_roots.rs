//! `--data-root`: a path in a job file cannot make the coordinator or a
//! worker read files outside the directories they were told to serve, and
//! the coordinator answers the same for a file outside that exists and one
//! that does not (no probing of the head node's filesystem).

use std::path::{Path, PathBuf};
use std::time::Duration;

use ridgeline_common::proto::v1 as pb;
use ridgeline_common::spec::DataRoots;
use ridgeline_coordinator::ServerConfig;
use ridgeline_tests::{submit, wait_for_end, Coordinator};
use ridgeline_worker::runner::{self, WorkerConfig};
use tokio_util::sync::CancellationToken;
use tonic::Code;

/// A small two-class CSV file.
fn csv(path: &Path) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let mut text = String::from("a,b,label\n");
    for i in 0..120 {
        let (a, b) = ((i % 7) as f64 / 7.0, (i % 5) as f64 / 5.0);
        text += &format!("{a:.3},{b:.3},{}\n", u8::from(a + b > 0.9));
    }
    std::fs::write(path, text).unwrap();
}

fn job(path: &Path) -> String {
    format!(
        "kind = \"lr_ramp\"\nreplicates = 1\nbatch_size = 16\n\
         [data]\nheldout_fraction = 0.25\n\
         [data.source]\nkind = \"csv\"\npath = \"{}\"\nlabel_column = \"label\"\n\
         [model]\nkind = \"mlp\"\nhidden = [8]\n\
         [lr_ramp]\nstart = 0.01\nend = 1.0\nepochs = 2\n",
        path.display()
    )
}

struct Lab {
    _dir: tempfile::TempDir,
    root: PathBuf,
    inside: PathBuf,
    outside: PathBuf,
    base: PathBuf,
}

fn lab() -> Lab {
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path().to_path_buf();
    let root = base.join("datasets");
    let inside = root.join("ok.csv");
    let outside = base.join("private").join("secret.csv");
    csv(&inside);
    csv(&outside);
    Lab {
        _dir: dir,
        root,
        inside,
        outside,
        base,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_coordinator_refuses_paths_outside_its_data_roots_without_probing() {
    let lab = lab();
    let mut config = ServerConfig::new(lab.base.join("coord"));
    config.data_roots = DataRoots::new(std::slice::from_ref(&lab.root)).unwrap();
    let c = Coordinator::start_with("127.0.0.1:0".parse().unwrap(), config).await;
    let mut client = c.jobs().await;

    let escape = lab.root.join("..").join("private").join("secret.csv");
    let missing = lab.base.join("private").join("no-such.csv");
    let mut messages = vec![];
    for path in [
        &lab.outside,
        &escape,
        &missing,
        &PathBuf::from("/etc/passwd"),
    ] {
        let e = submit(&mut client, &job(path)).await.unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument, "{}: {e:?}", path.display());
        assert!(
            e.message().contains("outside the data roots"),
            "{}: {}",
            path.display(),
            e.message()
        );
        messages.push(e.message().replace(&path.display().to_string(), "PATH"));
    }
    // An existing file outside and a missing one read alike.
    assert_eq!(messages[0], messages[2]);
    let e = submit(&mut client, &job(Path::new("datasets/ok.csv")))
        .await
        .unwrap_err();
    assert!(e.message().contains("relative path"), "{}", e.message());
    let listed = client
        .list_jobs(pb::ListJobsRequest {})
        .await
        .unwrap()
        .into_inner()
        .jobs;
    assert!(listed.is_empty(), "nothing was stored");

    // Inside: accepted, and a missing file inside is named plainly.
    submit(&mut client, &job(&lab.inside)).await.unwrap();
    let e = submit(&mut client, &job(&lab.root.join("gone.csv")))
        .await
        .unwrap_err();
    assert!(e.message().contains("does not exist"), "{}", e.message());
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_worker_reads_data_files_only_under_its_own_data_roots() {
    let lab = lab();
    // The coordinator serves any path; the worker is the one confined.
    let c = Coordinator::start(&lab.base.join("coord"), Duration::from_secs(30)).await;
    let mut client = c.jobs().await;
    let stop = CancellationToken::new();
    let mut w = WorkerConfig::new(c.url(), "confined");
    w.cache_dir = lab.base.join("cache");
    w.data_roots = DataRoots::new(std::slice::from_ref(&lab.root)).unwrap();
    let worker = tokio::spawn(runner::run(w, stop.clone()));

    let bad = submit(&mut client, &job(&lab.outside)).await.unwrap();
    let end = wait_for_end(&mut client, &bad, Duration::from_secs(60)).await;
    assert_eq!(end.state, pb::JobState::Failed as i32, "{end:?}");
    assert!(
        end.error.contains("outside the data roots"),
        "the job fails with the reason: {end:?}"
    );
    let good = submit(&mut client, &job(&lab.inside)).await.unwrap();
    let end = wait_for_end(&mut client, &good, Duration::from_secs(120)).await;
    assert_eq!(end.state, pb::JobState::Succeeded as i32, "{end:?}");
    stop.cancel();
    worker.await.unwrap().unwrap();
    c.stop().await;
}
