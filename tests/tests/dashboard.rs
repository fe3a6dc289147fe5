//! The dashboard and `/metrics` over a real HTTP socket, and in a real
//! browser: headless Chromium loads a running job's page and the figures
//! are there (inline SVG), and a screenshot is saved.
//!
//! The browser part needs `chromium` (Debian's package; `.ci/run`
//! installs it). Without it the test says "skipped" unless
//! `RIDGELINE_REQUIRE_BROWSER=1`, which CI sets.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use ridgeline_common::proto::v1 as pb;
use ridgeline_common::proto::v1::job_service_client::JobServiceClient;
use ridgeline_common::proto::v1::worker_service_client::WorkerServiceClient;
use ridgeline_common::proto::PROTOCOL_VERSION;
use ridgeline_coordinator::auth::Tokens;
use ridgeline_coordinator::ServerConfig;
use ridgeline_tests::{free_addr, http_get as get, jobs, Coordinator};
use tonic::metadata::MetadataValue;

const CLIENT: &str = "dashboard-client-token-0123";
const WORKER: &str = "dashboard-worker-token-0123";

fn with_token<T>(msg: T, token: &str) -> tonic::Request<T> {
    let mut r = tonic::Request::new(msg);
    let v: MetadataValue<_> = format!("Bearer {token}").parse().unwrap();
    r.metadata_mut().insert("authorization", v);
    r
}

/// A coordinator with tokens and its web pages, and a job held half-way
/// by a scripted worker (two epochs of three reported): running, with
/// curves to draw.
async fn running_job(dir: &std::path::Path) -> (Coordinator, SocketAddr, String) {
    let file = dir.join("tokens.toml");
    std::fs::write(
        &file,
        format!("client = [\"{CLIENT}\"]\nworker = [\"{WORKER}\"]\n"),
    )
    .unwrap();
    let http = free_addr();
    let mut config = ServerConfig::new(dir.join("data"));
    config.tokens = Arc::new(Tokens::load(&file).unwrap());
    config.http = Some(http);
    let c = Coordinator::start_with("127.0.0.1:0".parse().unwrap(), config).await;
    let mut jobs = JobServiceClient::connect(c.url()).await.unwrap();
    let job = jobs
        .submit_job(with_token(
            pb::SubmitJobRequest {
                text: jobs::lr_ramp(2, 3, 3),
                format: pb::JobFormat::Toml as i32,
            },
            CLIENT,
        ))
        .await
        .unwrap()
        .into_inner()
        .job_id;
    let mut w = WorkerServiceClient::connect(c.url()).await.unwrap();
    let me = w
        .register(with_token(
            pb::RegisterRequest {
                protocol_version: PROTOCOL_VERSION,
                name: "scripted".into(),
                device: "cpu".into(),
                slots: 2,
                ..Default::default()
            },
            WORKER,
        ))
        .await
        .unwrap()
        .into_inner()
        .worker_id;
    let tasks = w
        .lease(with_token(
            pb::LeaseRequest {
                worker_id: me.clone(),
                free_slots: 2,
                running: vec![],
                wait_ms: 0,
            },
            WORKER,
        ))
        .await
        .unwrap()
        .into_inner()
        .tasks;
    assert_eq!(tasks.len(), 2);
    for (i, t) in tasks.iter().enumerate() {
        let items = (1..=2u32)
            .map(|epoch| {
                let m = |v: f64| {
                    Some(pb::Metrics {
                        loss: 1.0 - v,
                        metric: v,
                        accuracy: Some(v),
                        ..Default::default()
                    })
                };
                let acc = 0.3 + 0.2 * f64::from(epoch) + 0.01 * i as f64;
                pb::Progress {
                    kind: Some(pb::progress::Kind::Epoch(pb::EpochReport {
                        epoch,
                        step: u64::from(epoch) * 10,
                        progress: f64::from(epoch),
                        lr: 0.01 * f64::from(epoch),
                        train: m(acc),
                        heldout: m(acc - 0.05),
                        ..Default::default()
                    })),
                    ..Default::default()
                }
            })
            .collect();
        w.report(with_token(
            pb::ReportRequest {
                worker_id: me.clone(),
                task_id: t.task_id.clone(),
                attempt: t.attempt,
                seq: 1,
                items,
            },
            WORKER,
        ))
        .await
        .unwrap();
    }
    (c, http, job)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pages_need_the_client_token_and_metrics_count_what_happened() {
    let dir = tempfile::tempdir().unwrap();
    let (c, http, job) = running_job(dir.path()).await;

    // Metrics: no token needed; the queue, the leases, the events.
    let m = get(http, "/metrics", &[]).await;
    assert_eq!(m.status, 200, "{}", m.head);
    for line in [
        "ridgeline_tasks{state=\"leased\"} 2",
        "ridgeline_jobs{state=\"running\"} 1",
        "ridgeline_workers{state=\"active\"} 1",
        "ridgeline_task_transitions_total{to=\"leased\"} 2",
        "ridgeline_reports_stored_total 2",
        "ridgeline_lease_duration_seconds_count 1",
        // Both leased tasks were ready since the submit.
        "ridgeline_task_wait_seconds_count 2",
    ] {
        assert!(m.body.contains(line), "{line} missing:\n{}", m.body);
    }
    assert!(
        m.body.contains("ridgeline_events_written_total"),
        "{}",
        m.body
    );

    // Pages: the browser is sent to the login form; a bearer header or the
    // login cookie opens them; a worker token does not.
    let r = get(http, "/", &[]).await;
    assert_eq!(r.status, 303, "{}", r.head);
    assert!(
        r.head.to_lowercase().contains("location: /login"),
        "{}",
        r.head
    );
    let bearer = format!("Bearer {CLIENT}");
    let r = get(http, "/", &[("Authorization", &bearer)]).await;
    assert_eq!(r.status, 200);
    assert!(
        r.body.contains(&job) && r.body.contains("scripted"),
        "{}",
        r.body
    );
    let r = get(http, "/", &[("Authorization", &format!("Bearer {WORKER}"))]).await;
    assert_eq!(r.status, 403);
    let r = get(http, "/", &[("Authorization", "Bearer not-a-token-at-all")]).await;
    assert_eq!(r.status, 401);
    let r = get(http, &format!("/login?token={WORKER}"), &[]).await;
    assert_eq!(r.status, 401, "a worker token cannot log in");
    let r = get(
        http,
        &format!("/login?token={CLIENT}&next=/jobs/{job}"),
        &[],
    )
    .await;
    assert_eq!(r.status, 303, "{}", r.head);
    let head = r.head.to_lowercase();
    assert!(
        head.contains(&format!("location: /jobs/{job}")),
        "{}",
        r.head
    );
    assert!(head.contains("httponly"), "{}", r.head);
    let r = get(http, "/login?token=x&next=//evil.example/", &[]).await;
    assert_eq!(r.status, 401);
    let cookie = format!("ridgeline_token={CLIENT}");
    let page = get(http, &format!("/jobs/{job}"), &[("Cookie", &cookie)]).await;
    assert_eq!(page.status, 200);
    assert!(
        page.body.contains("<svg"),
        "the figures are drawn while it runs"
    );
    assert!(
        page.body.contains("http-equiv=\"refresh\""),
        "a running job's page reloads itself"
    );
    let r = get(http, "/jobs/not-a-job", &[("Cookie", &cookie)]).await;
    assert_eq!(r.status, 400, "{}", r.body);
    let r = get(http, "/gallery", &[("Cookie", &cookie)]).await;
    assert_eq!(r.status, 200);
    c.stop().await;
}

fn chromium() -> Option<PathBuf> {
    for name in ["chromium", "chromium-browser", "google-chrome"] {
        if let Ok(out) = Command::new("which").arg(name).output() {
            if out.status.success() {
                return Some(PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()));
            }
        }
    }
    None
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_browser_shows_the_running_job_s_figures() {
    let Some(browser) = chromium() else {
        assert!(
            std::env::var("RIDGELINE_REQUIRE_BROWSER").as_deref() != Ok("1"),
            "chromium is not installed, and RIDGELINE_REQUIRE_BROWSER=1"
        );
        eprintln!("skipped: chromium is not installed");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let (c, http, job) = running_job(dir.path()).await;
    let url = format!("http://{http}/login?token={CLIENT}&next=/jobs/{job}");
    let profile = dir.path().join("profile");
    let run = |extra: &[&str]| {
        let browser = browser.clone();
        let url = url.clone();
        let profile = profile.clone();
        let extra: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
        async move {
            tokio::task::spawn_blocking(move || {
                Command::new(browser)
                    .args([
                        "--headless",
                        "--no-sandbox",
                        "--disable-gpu",
                        "--disable-dev-shm-usage",
                        "--hide-scrollbars",
                    ])
                    .arg(format!("--user-data-dir={}", profile.display()))
                    .args(extra)
                    .arg(url)
                    .output()
                    .expect("run chromium")
            })
            .await
            .unwrap()
        }
    };
    // The DOM after the browser followed the login redirect to the job.
    let out = tokio::time::timeout(Duration::from_secs(90), run(&["--dump-dom"]))
        .await
        .expect("chromium answers");
    let dom = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        dom.contains(&job),
        "the job's page: {}",
        &dom[..dom.len().min(2000)]
    );
    let figures = dom.matches("<svg").count();
    assert!(figures >= 1, "figures rendered in the browser: {figures}");
    assert!(
        dom.contains("<polyline") || dom.contains("<path"),
        "curves are drawn"
    );

    let shot = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("dashboard-running-job.png");
    let _ = std::fs::remove_file(&shot);
    let out = tokio::time::timeout(
        Duration::from_secs(90),
        run(&[
            &format!("--screenshot={}", shot.display()),
            "--window-size=1100,1400",
        ]),
    )
    .await
    .expect("chromium answers");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let png = std::fs::read(&shot).expect("the screenshot was saved");
    assert!(
        png.starts_with(b"\x89PNG") && png.len() > 10_000,
        "{} bytes",
        png.len()
    );
    eprintln!("screenshot: {}", shot.display());
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_worker_serves_its_throughput_as_metrics() {
    let dir = tempfile::tempdir().unwrap();
    let c = Coordinator::start(&dir.path().join("data"), Duration::from_secs(30)).await;
    let stop = tokio_util::sync::CancellationToken::new();
    // The port comes from `free_addr`, and something else (another test's
    // outgoing connection) may take it before the worker binds it: then the
    // worker stops at once, and another port is tried.
    let mut tries = 0;
    let (addr, worker) = loop {
        tries += 1;
        let addr = free_addr();
        let mut w = ridgeline_worker::runner::WorkerConfig::new(c.url(), "measured");
        w.cache_dir = dir.path().join("cache");
        w.metrics_listen = Some(addr);
        let worker = tokio::spawn(ridgeline_worker::runner::run(w, stop.clone()));
        let bound = loop {
            if worker.is_finished() {
                break false;
            }
            if tokio::net::TcpStream::connect(addr).await.is_ok() {
                tokio::time::sleep(Duration::from_millis(50)).await;
                break !worker.is_finished();
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        };
        if bound {
            break (addr, worker);
        }
        let ended = worker.await.unwrap();
        assert!(tries < 5, "the worker did not start: {ended:?}");
    };
    let mut client = c.jobs().await;
    // 2 seeds × 3 epochs of the 600-row built-in table, and a line search.
    let job = ridgeline_tests::submit(&mut client, &jobs::lr_ramp(2, 3, 3))
        .await
        .unwrap();
    ridgeline_tests::wait_for_end(&mut client, &job, Duration::from_secs(120)).await;
    let search = ridgeline_tests::submit(&mut client, &jobs::line_search(5, 5))
        .await
        .unwrap();
    ridgeline_tests::wait_for_end(&mut client, &search, Duration::from_secs(120)).await;
    let m = get(addr, "/metrics", &[]).await;
    assert_eq!(m.status, 200, "{}", m.head);
    let value = |name: &str| -> f64 {
        m.body
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("{name} missing:\n{}", m.body))
    };
    assert_eq!(
        value("ridgeline_worker_tasks_finished_total{outcome=\"completed\"}"),
        3.0
    );
    assert_eq!(value("ridgeline_worker_epochs_trained_total"), 6.0);
    assert_eq!(value("ridgeline_worker_samples_trained_total"), 6.0 * 600.0);
    assert_eq!(value("ridgeline_worker_line_points_total"), 5.0);
    assert_eq!(value("ridgeline_worker_running_tasks"), 0.0);
    stop.cancel();
    worker.await.unwrap().unwrap();
    c.stop().await;
}
