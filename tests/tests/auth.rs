//! Bearer tokens over real gRPC: without a valid token every call is
//! `UNAUTHENTICATED`; a worker token cannot submit and a client token
//! cannot lease; with the right tokens a real worker runs a real job, and
//! a worker with a wrong token stops with a clear error instead of
//! retrying forever.

use std::sync::Arc;
use std::time::Duration;

use ridgeline_common::auth::{Bearer, JobClient, WorkerClient};
use ridgeline_common::proto::v1 as pb;
use ridgeline_common::proto::v1::job_service_client::JobServiceClient;
use ridgeline_common::proto::v1::worker_service_client::WorkerServiceClient;
use ridgeline_common::proto::PROTOCOL_VERSION;
use ridgeline_coordinator::auth::Tokens;
use ridgeline_coordinator::ServerConfig;
use ridgeline_tests::{jobs, Coordinator};
use ridgeline_worker::runner::{self, WorkerConfig};
use tokio_util::sync::CancellationToken;
use tonic::Code;

const CLIENT_TOKEN: &str = "client-secret-0123456789";
const WORKER_TOKEN: &str = "worker-secret-0123456789";

async fn start(dir: &std::path::Path) -> Coordinator {
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

async fn job_client(c: &Coordinator, token: Option<&str>) -> JobClient {
    let channel = tonic::transport::Endpoint::from_shared(c.url())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let bearer = token.map_or_else(Bearer::none, |t| Bearer::new(t).unwrap());
    JobServiceClient::with_interceptor(channel, bearer)
}

async fn worker_client(c: &Coordinator, token: Option<&str>) -> WorkerClient {
    let channel = tonic::transport::Endpoint::from_shared(c.url())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let bearer = token.map_or_else(Bearer::none, |t| Bearer::new(t).unwrap());
    WorkerServiceClient::with_interceptor(channel, bearer)
}

fn register() -> pb::RegisterRequest {
    pb::RegisterRequest {
        protocol_version: PROTOCOL_VERSION,
        name: "w".into(),
        device: "cpu".into(),
        slots: 1,
        ..Default::default()
    }
}

fn submit_request() -> pb::SubmitJobRequest {
    pb::SubmitJobRequest {
        text: jobs::lr_ramp(1, 2, 2),
        format: pb::JobFormat::Toml as i32,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_without_a_valid_token_of_the_right_role_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let c = start(dir.path()).await;

    for token in [None, Some("not-a-token-at-all-xyz")] {
        let mut jobs = job_client(&c, token).await;
        let e = jobs.submit_job(submit_request()).await.unwrap_err();
        assert_eq!(e.code(), Code::Unauthenticated, "{token:?}: {e:?}");
        let e = jobs.list_jobs(pb::ListJobsRequest {}).await.unwrap_err();
        assert_eq!(e.code(), Code::Unauthenticated);
        let mut w = worker_client(&c, token).await;
        let e = w.register(register()).await.unwrap_err();
        assert_eq!(e.code(), Code::Unauthenticated);
        let e = w
            .lease(pb::LeaseRequest {
                worker_id: "w".into(),
                free_slots: 1,
                running: vec![],
                wait_ms: 0,
            })
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::Unauthenticated);
    }

    // Each role only what it is for.
    let mut as_worker = job_client(&c, Some(WORKER_TOKEN)).await;
    let e = as_worker.submit_job(submit_request()).await.unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");
    let mut as_client = worker_client(&c, Some(CLIENT_TOKEN)).await;
    let e = as_client.register(register()).await.unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");

    // Nothing was stored by the refused calls.
    let mut client = job_client(&c, Some(CLIENT_TOKEN)).await;
    let listed = client
        .list_jobs(pb::ListJobsRequest {})
        .await
        .unwrap()
        .into_inner();
    assert!(listed.jobs.is_empty());
    let workers = client
        .list_workers(pb::ListWorkersRequest {})
        .await
        .unwrap()
        .into_inner();
    assert!(workers.workers.is_empty());
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn with_the_right_tokens_a_real_worker_runs_a_job_and_a_wrong_one_stops() {
    let dir = tempfile::tempdir().unwrap();
    let c = start(dir.path()).await;
    let stop = CancellationToken::new();

    // A worker with a wrong token: refused at registration, it returns
    // an error naming the refusal rather than retrying forever.
    let mut bad = WorkerConfig::new(c.url(), "intruder");
    bad.cache_dir = dir.path().join("cache-bad");
    bad.token = Bearer::new("wrong-token-0123456789").unwrap();
    let e = tokio::time::timeout(Duration::from_secs(30), runner::run(bad, stop.clone()))
        .await
        .expect("the worker gives up at once")
        .unwrap_err()
        .to_string();
    assert!(e.contains("token is not valid"), "{e}");

    let mut good = WorkerConfig::new(c.url(), "w1");
    good.cache_dir = dir.path().join("cache");
    good.token = Bearer::new(WORKER_TOKEN).unwrap();
    let worker = tokio::spawn(runner::run(good, stop.clone()));

    let mut client = job_client(&c, Some(CLIENT_TOKEN)).await;
    let id = client
        .submit_job(submit_request())
        .await
        .unwrap()
        .into_inner()
        .job_id;
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    loop {
        let s = client
            .get_job(pb::GetJobRequest { job_id: id.clone() })
            .await
            .unwrap()
            .into_inner();
        if s.state == pb::JobState::Succeeded as i32 {
            break;
        }
        assert!(
            s.state == pb::JobState::Queued as i32 || s.state == pb::JobState::Running as i32,
            "{s:?}"
        );
        assert!(
            std::time::Instant::now() < deadline,
            "the job did not finish"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let r = client
        .get_results(pb::GetResultsRequest { job_id: id })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.curves.len(), 1);
    stop.cancel();
    worker.await.unwrap().unwrap();
    c.stop().await;
}
