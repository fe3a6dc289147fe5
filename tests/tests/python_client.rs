//! Interoperability over real sockets: the Python example client
//! (`examples/python/`, stubs generated from `proto/` alone) submits a
//! procedure job to a live coordinator with tokens, watches it run on a
//! real worker and prints every decision, the final state and the
//! recommendation; and the standard health and reflection services answer
//! without a token, as `grpcurl` and load balancers use them.
//!
//! The Python test needs `python3` with grpcio and grpcio-tools
//! (`examples/python/requirements.txt`). Without them it prints
//! "skipped: …" and passes, unless `RIDGELINE_REQUIRE_PYTHON=1` (CI), where
//! it fails saying what is missing.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use ridgeline_common::auth::Bearer;
use ridgeline_common::proto::v1 as pb;
use ridgeline_common::proto::v1::job_service_client::JobServiceClient;
use ridgeline_coordinator::auth::Tokens;
use ridgeline_coordinator::ServerConfig;
use ridgeline_tests::{jobs, Coordinator};
use ridgeline_worker::runner::{self, WorkerConfig};
use tokio_stream::StreamExt;
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;

const CLIENT_TOKEN: &str = "client-secret-python-0123456789";
const WORKER_TOKEN: &str = "worker-secret-python-0123456789";
const SERVICES: [&str; 2] = ["ridgeline.v1.JobService", "ridgeline.v1.WorkerService"];

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf()
}

/// `python3`, if it can import grpc and grpc_tools; otherwise `None` after
/// printing why (or a panic when `RIDGELINE_REQUIRE_PYTHON=1`).
fn python() -> Option<&'static str> {
    let missing = match std::process::Command::new("python3")
        .args(["-c", "import grpc, grpc_tools"])
        .output()
    {
        Err(e) => format!("python3 cannot be run: {e}"),
        Ok(o) if !o.status.success() => format!(
            "python3 lacks grpcio or grpcio-tools ({}): python3 -m pip install -r examples/python/requirements.txt",
            String::from_utf8_lossy(&o.stderr).trim()
        ),
        Ok(_) => return Some("python3"),
    };
    if std::env::var("RIDGELINE_REQUIRE_PYTHON").is_ok_and(|v| v == "1") {
        panic!("RIDGELINE_REQUIRE_PYTHON=1 but {missing}");
    }
    eprintln!("skipped: {missing}");
    None
}

/// A coordinator that requires tokens.
async fn start(dir: &Path) -> Coordinator {
    let file = dir.join("tokens.toml");
    std::fs::write(
        &file,
        format!("client = [\"{CLIENT_TOKEN}\"]\nworker = [\"{WORKER_TOKEN}\"]\n"),
    )
    .unwrap();
    let mut config = ServerConfig::new(dir.join("data"));
    config.scheduler.heartbeat_interval = Duration::from_millis(100);
    config.tokens = Arc::new(Tokens::load(&file).unwrap());
    Coordinator::start_with("127.0.0.1:0".parse().unwrap(), config).await
}

async fn channel(c: &Coordinator) -> Channel {
    tonic::transport::Endpoint::from_shared(c.url())
        .unwrap()
        .connect()
        .await
        .expect("connect")
}

/// Runs the Python client with `args` and `env`; returns (exit code,
/// stdout, stderr).
async fn run_client(py: &str, args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
    let mut cmd = tokio::process::Command::new(py);
    cmd.arg(workspace().join("examples/python/ridgeline_client.py"))
        .args(args)
        .current_dir(workspace())
        .env_remove("RIDGELINE_TOKEN")
        .env_remove("RIDGELINE_TOKEN_FILE")
        .env_remove("RIDGELINE_COORDINATOR")
        .envs(env.iter().copied())
        .kill_on_drop(true);
    let out = tokio::time::timeout(Duration::from_secs(300), cmd.output())
        .await
        .expect("the Python client finished within 5 minutes")
        .expect("run the Python client");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    eprintln!("python client {args:?}:\n{stdout}{stderr}");
    (out.status.code().unwrap_or(-1), stdout, stderr)
}

/// Steps 1-3 of the procedure (line search, LR, momentum and its
/// confirmation: enough for a recommendation) on small built-in data: a
/// few seconds.
fn small_procedure() -> String {
    format!(
        "kind = \"procedure\"\nname = \"python client\"\nreplicates = 2\nchunk_epochs = 4\nbatch_size = 32\n{}\n\
         [procedure]\nsteps = [1, 2, 3]\nlr_start = 0.001\nlr_end = 30.0\nlr_epochs = 8\nmomentum_epochs = 5\nconfirm_epochs = 3\npoints = 9\npoints_per_task = 5\n",
        jobs::TABULAR_HEAD
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_python_client_submits_watches_and_prints_every_decision() {
    let Some(py) = python() else { return };
    let dir = tempfile::tempdir().unwrap();
    let coord = start(dir.path()).await;
    let stop = CancellationToken::new();
    let mut cfg = WorkerConfig::new(coord.url(), "py-w1");
    cfg.cache_dir = dir.path().join("cache");
    cfg.shutdown_grace = Duration::from_millis(200);
    cfg.token = Bearer::new(WORKER_TOKEN).unwrap();
    let worker = tokio::spawn(runner::run(cfg, stop.clone()));

    let job_file = dir.path().join("job.toml");
    std::fs::write(&job_file, small_procedure()).unwrap();
    let job_path = job_file.to_str().unwrap();
    let url = coord.url();

    // Without a token the coordinator refuses it, and the client says so.
    let (code, _, stderr) = run_client(py, &["--coordinator", &url, job_path], &[]).await;
    assert_ne!(code, 0);
    assert!(stderr.contains("UNAUTHENTICATED"), "{stderr}");

    // With the client token from the environment: submit, watch, decide.
    let (code, out, _) = run_client(
        py,
        &["--coordinator", &url, job_path],
        &[("RIDGELINE_TOKEN", CLIENT_TOKEN)],
    )
    .await;
    assert_eq!(code, 0, "the job succeeded:\n{out}");
    let job_id = out
        .lines()
        .find_map(|l| l.strip_prefix("submitted ")?.split(" as job ").nth(1))
        .unwrap_or_else(|| panic!("no job id in:\n{out}"))
        .trim()
        .to_string();

    // What the coordinator stored is what the client printed.
    let mut jobs = JobServiceClient::with_interceptor(
        channel(&coord).await,
        Bearer::new(CLIENT_TOKEN).unwrap(),
    );
    let status = jobs
        .get_job(pb::GetJobRequest {
            job_id: job_id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(status.state, pb::JobState::Succeeded as i32);
    let results = jobs
        .get_results(pb::GetResultsRequest {
            job_id: job_id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    let steps: Vec<&str> = results.decisions.iter().map(|d| d.step.as_str()).collect();
    for s in [
        "initial_line_search",
        "lr",
        "momentum",
        "momentum_confirm",
        "recommendation",
    ] {
        assert!(steps.contains(&s), "decision {s} stored: {steps:?}");
    }
    for d in &results.decisions {
        let line = format!("decision {}: {}: {}", d.step, d.title, d.summary);
        assert!(out.contains(&line), "the client printed `{line}`:\n{out}");
    }
    assert!(out.contains("final state: SUCCEEDED"), "{out}");
    // The recommendation, with its paste-ready TOML.
    let rec = results.decisions.last().expect("decisions");
    assert_eq!(rec.step, "recommendation");
    assert!(
        out.contains(&format!("recommendation: {}", rec.summary)),
        "{out}"
    );
    let rec_json: serde_json::Value = serde_json::from_str(&rec.json).unwrap();
    assert!(
        rec_json["lr"].as_f64().is_some(),
        "a recommendation: {rec_json}"
    );
    assert!(out.contains("[optimizer]"), "{out}");

    // Following the finished job with the token from a file: the stream
    // replays the history and ends.
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, format!("\n{CLIENT_TOKEN}\n")).unwrap();
    let (code, again, _) = run_client(
        py,
        &[
            "--coordinator",
            &url,
            "--job",
            &job_id,
            "--token-file",
            token_file.to_str().unwrap(),
        ],
        &[],
    )
    .await;
    assert_eq!(code, 0, "{again}");
    for d in &results.decisions {
        assert!(again.contains(&format!("decision {}: ", d.step)), "{again}");
    }
    assert!(again.contains("final state: SUCCEEDED"), "{again}");

    stop.cancel();
    let _ = worker.await;
    coord.stop().await;
}

/// The names reflection lists (`grpcurl list`).
async fn listed_services(c: &Coordinator) -> (Vec<String>, Vec<String>) {
    use tonic_reflection::pb::{v1, v1alpha};
    let mut client = v1::server_reflection_client::ServerReflectionClient::new(channel(c).await);
    let request = v1::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(v1::server_reflection_request::MessageRequest::ListServices(
            String::new(),
        )),
    };
    let mut stream = client
        .server_reflection_info(tokio_stream::iter([request]))
        .await
        .expect("reflection v1 answers without a token")
        .into_inner();
    let v1_names = match stream.next().await.unwrap().unwrap().message_response {
        Some(v1::server_reflection_response::MessageResponse::ListServicesResponse(l)) => {
            l.service.into_iter().map(|s| s.name).collect()
        }
        other => panic!("not a list of services: {other:?}"),
    };

    let mut client =
        v1alpha::server_reflection_client::ServerReflectionClient::new(channel(c).await);
    let request = v1alpha::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(
            v1alpha::server_reflection_request::MessageRequest::ListServices(String::new()),
        ),
    };
    let mut stream = client
        .server_reflection_info(tokio_stream::iter([request]))
        .await
        .expect("reflection v1alpha answers without a token")
        .into_inner();
    let alpha_names = match stream.next().await.unwrap().unwrap().message_response {
        Some(v1alpha::server_reflection_response::MessageResponse::ListServicesResponse(l)) => {
            l.service.into_iter().map(|s| s.name).collect()
        }
        other => panic!("not a list of services: {other:?}"),
    };
    (v1_names, alpha_names)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_and_reflection_answer_without_a_token() {
    let dir = tempfile::tempdir().unwrap();
    let coord = start(dir.path()).await;

    // Tokens are required for Ridgeline's own calls…
    let mut jobs = JobServiceClient::new(channel(&coord).await);
    let e = jobs
        .list_jobs(pb::ListJobsRequest {})
        .await
        .expect_err("no token");
    assert_eq!(e.code(), tonic::Code::Unauthenticated);

    // …but not for health checking: SERVING for the server and both services.
    let mut health = HealthClient::new(channel(&coord).await);
    for name in ["", SERVICES[0], SERVICES[1]] {
        let r = health
            .check(HealthCheckRequest {
                service: name.into(),
            })
            .await
            .unwrap_or_else(|e| panic!("health check {name:?}: {e}"))
            .into_inner();
        assert_eq!(r.status, ServingStatus::Serving as i32, "{name:?}");
    }
    let e = health
        .check(HealthCheckRequest {
            service: "no.such.Service".into(),
        })
        .await
        .expect_err("unknown service");
    assert_eq!(e.code(), tonic::Code::NotFound);

    // …nor for reflection, v1 and v1alpha: both services are listed.
    let (v1_names, alpha_names) = listed_services(&coord).await;
    for names in [&v1_names, &alpha_names] {
        for s in SERVICES.iter().chain(&["grpc.health.v1.Health"]) {
            assert!(names.iter().any(|n| n == s), "{s} listed: {names:?}");
        }
    }
    assert!(v1_names
        .iter()
        .any(|n| n == "grpc.reflection.v1.ServerReflection"));

    // A watcher sees NOT_SERVING once shutdown starts, and its stream ends
    // (it does not hold up the graceful shutdown).
    let mut watch = health
        .watch(HealthCheckRequest {
            service: SERVICES[0].into(),
        })
        .await
        .unwrap()
        .into_inner();
    let first = watch.next().await.unwrap().unwrap();
    assert_eq!(first.status, ServingStatus::Serving as i32);
    let stopping = tokio::spawn(coord.stop());
    let mut seen = Vec::new();
    let watched = tokio::time::timeout(Duration::from_secs(20), async {
        while let Some(Ok(r)) = watch.next().await {
            seen.push(r.status);
        }
    })
    .await;
    assert!(watched.is_ok(), "the watch stream ended at shutdown");
    assert_eq!(seen, vec![ServingStatus::NotServing as i32]);
    tokio::time::timeout(Duration::from_secs(20), stopping)
        .await
        .expect("the coordinator stopped")
        .unwrap();
}
