//! TLS over real sockets, with certificates made by `coordinator tls-init`'s
//! generator: a TLS coordinator serves https only, and a client must trust
//! its CA; with mutual TLS, workers must present a certificate signed by the
//! lab's CA (clients need none), and a real worker with one runs a real job.

use std::time::Duration;

use ridgeline_common::auth::{Bearer, Credentials};
use ridgeline_common::proto::v1 as pb;
use ridgeline_common::proto::v1::job_service_client::JobServiceClient;
use ridgeline_common::proto::v1::worker_service_client::WorkerServiceClient;
use ridgeline_common::proto::PROTOCOL_VERSION;
use ridgeline_common::tls::ClientTls;
use ridgeline_coordinator::client::ClientCommand;
use ridgeline_coordinator::tls::{generate, Generated, ServerTls};
use ridgeline_coordinator::ServerConfig;
use ridgeline_tests::{jobs, wait_for_end, Coordinator};
use ridgeline_worker::runner::{self, WorkerConfig};
use tokio_util::sync::CancellationToken;
use tonic::Code;

fn lab(dir: &std::path::Path) -> Generated {
    generate(&dir.join("tls"), &["127.0.0.1".to_string()], 1).expect("tls-init")
}

async fn start(dir: &std::path::Path, files: &Generated, mutual: bool) -> (Coordinator, String) {
    let mut config = ServerConfig::new(dir.join("data"));
    config.scheduler.heartbeat_interval = Duration::from_millis(100);
    config.tls = Some(
        ServerTls::load(
            &files.server_cert,
            &files.server_key,
            mutual.then_some(files.ca_cert.as_path()),
        )
        .expect("load"),
    );
    let c = Coordinator::start_with("127.0.0.1:0".parse().unwrap(), config).await;
    let url = format!("https://127.0.0.1:{}", c.addr.port());
    (c, url)
}

fn trusting(files: &Generated) -> ClientTls {
    ClientTls::load(Some(&files.ca_cert), None, None).unwrap()
}

fn with_cert(files: &Generated) -> ClientTls {
    ClientTls::load(
        Some(&files.ca_cert),
        Some(&files.worker_cert),
        Some(&files.worker_key),
    )
    .unwrap()
}

async fn list(tls: &ClientTls, url: &str) -> Result<usize, String> {
    let channel = tls
        .endpoint(url)?
        .connect_timeout(Duration::from_secs(5))
        .connect()
        .await
        .map_err(|e| format!("{e:?}"))?;
    JobServiceClient::new(channel)
        .list_jobs(pb::ListJobsRequest {})
        .await
        .map(|r| r.into_inner().jobs.len())
        .map_err(|s| format!("{s:?}"))
}

fn submit_request() -> pb::SubmitJobRequest {
    pb::SubmitJobRequest {
        text: jobs::lr_ramp(1, 2, 2),
        format: pb::JobFormat::Toml as i32,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_tls_coordinator_serves_https_to_clients_that_trust_its_ca() {
    let dir = tempfile::tempdir().unwrap();
    let files = lab(dir.path());
    let (c, url) = start(dir.path(), &files, false).await;

    assert_eq!(list(&trusting(&files), &url).await, Ok(0));
    // Plain HTTP/2 to a TLS port gets no answer.
    let plain = list(&ClientTls::none(), &c.url()).await;
    assert!(plain.is_err(), "{plain:?}");
    // The system's roots do not know the lab's CA.
    let unknown = list(&ClientTls::none(), &url).await.unwrap_err();
    assert!(unknown.to_lowercase().contains("certificate"), "{unknown}");
    // Nor does another lab's.
    let other = generate(&dir.path().join("other"), &["127.0.0.1".into()], 1).unwrap();
    let e = list(&trusting(&other), &url).await.unwrap_err();
    assert!(e.to_lowercase().contains("certificate"), "{e}");

    // A real worker over TLS runs a real job (no client certificate needed).
    let stop = CancellationToken::new();
    let mut w = WorkerConfig::new(url.clone(), "tls-worker");
    w.cache_dir = dir.path().join("cache");
    w.tls = trusting(&files);
    let worker = tokio::spawn(runner::run(w, stop.clone()));
    // The CLI's path: a bare host:port means https once a CA is given.
    let creds = Credentials {
        bearer: Bearer::none(),
        tls: trusting(&files),
    };
    let bare = url.trim_start_matches("https://");
    ridgeline_coordinator::client::run(ClientCommand::List, bare, &creds)
        .await
        .expect("`coordinator --tls-ca ca.pem list` over TLS");
    let channel = trusting(&files)
        .endpoint(&url)
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut client = JobServiceClient::new(channel);
    let id = client
        .submit_job(submit_request())
        .await
        .unwrap()
        .into_inner()
        .job_id;
    let end = wait_for_end(&mut client, &id, Duration::from_secs(120)).await;
    assert_eq!(end.state, pb::JobState::Succeeded as i32, "{end:?}");
    stop.cancel();
    worker.await.unwrap().unwrap();
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn with_mutual_tls_only_workers_with_a_lab_certificate_may_lease() {
    let dir = tempfile::tempdir().unwrap();
    let files = lab(dir.path());
    let (c, url) = start(dir.path(), &files, true).await;

    // A worker without a certificate is refused by name, and its runner
    // stops with the reason instead of retrying forever.
    let channel = trusting(&files)
        .endpoint(&url)
        .unwrap()
        .connect()
        .await
        .unwrap();
    let e = WorkerServiceClient::new(channel.clone())
        .register(pb::RegisterRequest {
            protocol_version: PROTOCOL_VERSION,
            name: "no-cert".into(),
            device: "cpu".into(),
            slots: 1,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::Unauthenticated, "{e:?}");
    assert!(e.message().contains("client certificate"), "{e:?}");
    let stop = CancellationToken::new();
    let mut bare = WorkerConfig::new(url.clone(), "no-cert");
    bare.cache_dir = dir.path().join("cache-bare");
    bare.tls = trusting(&files);
    let e = tokio::time::timeout(Duration::from_secs(30), runner::run(bare, stop.clone()))
        .await
        .expect("the worker gives up at once")
        .unwrap_err()
        .to_string();
    assert!(e.contains("--tls-cert"), "{e}");

    // A certificate from another CA fails the handshake.
    let other = generate(&dir.path().join("other"), &["127.0.0.1".into()], 1).unwrap();
    let forged = ClientTls::load(
        Some(&files.ca_cert),
        Some(&other.worker_cert),
        Some(&other.worker_key),
    )
    .unwrap();
    let refused = match forged.endpoint(&url).unwrap().connect().await {
        Err(_) => true,
        Ok(ch) => WorkerServiceClient::new(ch)
            .register(pb::RegisterRequest {
                protocol_version: PROTOCOL_VERSION,
                name: "forged".into(),
                device: "cpu".into(),
                slots: 1,
                ..Default::default()
            })
            .await
            .is_err(),
    };
    assert!(
        refused,
        "a certificate from another CA must not be accepted"
    );

    // Clients need no certificate.
    let mut client = JobServiceClient::new(channel);
    let id = client
        .submit_job(submit_request())
        .await
        .unwrap()
        .into_inner()
        .job_id;
    // A worker with the lab's certificate runs it.
    let mut good = WorkerConfig::new(url.clone(), "lab-worker");
    good.cache_dir = dir.path().join("cache");
    good.tls = with_cert(&files);
    let worker = tokio::spawn(runner::run(good, stop.clone()));
    let end = wait_for_end(&mut client, &id, Duration::from_secs(120)).await;
    assert_eq!(end.state, pb::JobState::Succeeded as i32, "{end:?}");
    let workers = client
        .list_workers(pb::ListWorkersRequest {})
        .await
        .unwrap()
        .into_inner()
        .workers;
    assert!(
        workers.iter().all(|w| w.name == "lab-worker"),
        "only the certified worker registered: {workers:?}"
    );
    stop.cancel();
    worker.await.unwrap().unwrap();
    c.stop().await;
}
