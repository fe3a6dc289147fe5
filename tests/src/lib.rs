//! Test harness for the end-to-end tests in `tests/tests/`: a real
//! coordinator on `127.0.0.1:0` (in-process, or as a child process for
//! kill tests) and gRPC clients to it. No mocks: everything talks over real
//! sockets.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use ridgeline_common::proto::v1 as pb;
use ridgeline_common::proto::v1::job_service_client::JobServiceClient;
use ridgeline_common::proto::v1::worker_service_client::WorkerServiceClient;
use ridgeline_coordinator::scheduler::SchedulerConfig;
use ridgeline_coordinator::ServerConfig;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;

/// A coordinator served in this process.
pub struct Coordinator {
    pub addr: SocketAddr,
    pub data_dir: PathBuf,
    shutdown: CancellationToken,
    handle: Option<JoinHandle<ridgeline_coordinator::Result<()>>>,
}

impl Coordinator {
    /// Starts a coordinator on a free port with short leases.
    pub async fn start(data_dir: &Path, lease_ttl: Duration) -> Coordinator {
        Self::start_on("127.0.0.1:0".parse().expect("addr"), data_dir, lease_ttl).await
    }

    pub async fn start_on(addr: SocketAddr, data_dir: &Path, lease_ttl: Duration) -> Coordinator {
        let mut config = ServerConfig::new(data_dir);
        config.scheduler = SchedulerConfig {
            lease_ttl,
            heartbeat_interval: Duration::from_millis(100),
            ..SchedulerConfig::default()
        };
        Self::start_with(addr, config).await
    }

    /// Starts a coordinator with `config` on `addr` (port 0: a free one).
    pub async fn start_with(addr: SocketAddr, config: ServerConfig) -> Coordinator {
        let listener = tokio::net::TcpListener::bind(addr).await.expect("bind");
        let addr = listener.local_addr().expect("local addr");
        let data_dir = config.data_dir.clone();
        let shutdown = CancellationToken::new();
        let handle = tokio::spawn(ridgeline_coordinator::serve(
            listener,
            config,
            shutdown.clone(),
        ));
        Coordinator {
            addr,
            data_dir,
            shutdown,
            handle: Some(handle),
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub async fn jobs(&self) -> JobServiceClient<Channel> {
        JobServiceClient::connect(self.url())
            .await
            .expect("connect")
    }

    pub async fn workers(&self) -> WorkerServiceClient<Channel> {
        WorkerServiceClient::connect(self.url())
            .await
            .expect("connect")
    }

    /// Stops serving and waits until the listener is closed.
    pub async fn stop(mut self) {
        self.shutdown.cancel();
        if let Some(h) = self.handle.take() {
            let _ = h.await;
        }
    }
}

impl Drop for Coordinator {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// An HTTP answer (see [`http_get`]).
pub struct Answer {
    pub status: u16,
    pub head: String,
    pub body: String,
}

/// One HTTP/1.1 GET, the answer read to the end (the server closes).
pub async fn http_get(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> Answer {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let mut req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).await.expect("send");
    let mut raw = vec![];
    s.read_to_end(&mut raw).await.expect("read");
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    Answer {
        status,
        head: head.to_string(),
        body: body.to_string(),
    }
}

/// Submits a TOML job and returns its id.
pub async fn submit(
    c: &mut JobServiceClient<Channel>,
    text: &str,
) -> Result<String, tonic::Status> {
    c.submit_job(pb::SubmitJobRequest {
        text: text.to_string(),
        format: pb::JobFormat::Toml as i32,
    })
    .await
    .map(|r| r.into_inner().job_id)
}

/// Waits until the job reaches a terminal state (or panics after `limit`).
pub async fn wait_for_end(
    c: &mut JobServiceClient<Channel>,
    job: &str,
    limit: Duration,
) -> pb::JobStatus {
    let start = tokio::time::Instant::now();
    loop {
        let s = c
            .get_job(pb::GetJobRequest { job_id: job.into() })
            .await
            .expect("get job")
            .into_inner();
        if matches!(
            pb::JobState::try_from(s.state),
            Ok(pb::JobState::Succeeded | pb::JobState::Failed | pb::JobState::Cancelled)
        ) {
            return s;
        }
        if start.elapsed() > limit {
            panic!("job {job} did not finish within {limit:?}: {s:#?}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Registers a hand-driven worker (for protocol tests) and returns its id.
pub async fn register(w: &mut WorkerServiceClient<Channel>, name: &str) -> String {
    register_ahead(w, name, 0).await
}

/// Registers a one-slot CPU worker that holds `lease_ahead` tasks queued.
pub async fn register_ahead(
    w: &mut WorkerServiceClient<Channel>,
    name: &str,
    lease_ahead: u32,
) -> String {
    w.register(pb::RegisterRequest {
        protocol_version: ridgeline_common::proto::PROTOCOL_VERSION,
        name: name.into(),
        device: "cpu".into(),
        slots: 1,
        memory_bytes: 0,
        previous_worker_id: String::new(),
        lease_ahead,
    })
    .await
    .expect("register")
    .into_inner()
    .worker_id
}

/// Small built-in jobs that run in seconds.
pub mod jobs {
    pub const TABULAR_HEAD: &str = r#"
[data.source]
kind = "tabular"
n_train = 600
n_heldout = 200
seed = 5
[model]
kind = "mlp"
hidden = [32]
"#;

    pub fn lr_ramp(replicates: usize, epochs: usize, chunk: usize) -> String {
        format!(
            "kind = \"lr_ramp\"\nreplicates = {replicates}\nchunk_epochs = {chunk}\nbatch_size = 32\n{TABULAR_HEAD}\n[lr_ramp]\nstart = 0.001\nend = 1.0\nepochs = {epochs}\n"
        )
    }

    pub fn line_search(points: usize, per_task: usize) -> String {
        format!(
            "kind = \"line_search\"\nreplicates = 1\n{TABULAR_HEAD}\n[line_search]\npoints = {points}\npoints_per_task = {per_task}\n"
        )
    }
}

/// Path of a workspace binary (`worker`, `coordinator`), built on demand
/// with the same profile as this test when `cargo test` did not build it.
pub fn binary(name: &str, package: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    // target/<profile>/deps/<test> → target/<profile>/<name>
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("target dir")
        .to_path_buf();
    let path = profile_dir.join(name);
    if !path.exists() {
        let release = profile_dir.file_name().is_some_and(|n| n == "release");
        let mut cmd = std::process::Command::new(env!("CARGO"));
        cmd.args(["build", "-p", package, "--bin", name]);
        if release {
            cmd.arg("--release");
        }
        let status = cmd.status().expect("run cargo build");
        assert!(
            status.success(),
            "cargo build -p {package} --bin {name} failed"
        );
    }
    path
}

/// A child process killed (SIGKILL) when dropped.
pub struct Process {
    pub child: std::process::Child,
}

impl Process {
    /// kill -9.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Sends a signal by number (e.g. 19 SIGSTOP, 18 SIGCONT, 15 SIGTERM).
    pub fn signal(&self, sig: i32) {
        let _ = std::process::Command::new("kill")
            .args([format!("-{sig}"), self.child.id().to_string()])
            .status();
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Starts `worker` as a child process.
pub fn spawn_worker(url: &str, name: &str, slots: usize, cache_dir: &Path) -> Process {
    spawn_worker_with(url, name, slots, cache_dir, &[])
}

/// Starts `worker` as a child process with extra flags.
pub fn spawn_worker_with(
    url: &str,
    name: &str,
    slots: usize,
    cache_dir: &Path,
    extra: &[&str],
) -> Process {
    let child = std::process::Command::new(binary("worker", "ridgeline-worker"))
        .args(extra)
        .args([
            "--coordinator",
            url,
            "--name",
            name,
            "--slots",
            &slots.to_string(),
            "--cache-dir",
        ])
        .arg(cache_dir)
        .env("RAYON_NUM_THREADS", "1")
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::inherit())
        .spawn()
        .expect("start worker");
    Process { child }
}

/// Starts `coordinator serve` as a child process on `addr` (which must be
/// free), returning once it accepts connections.
pub async fn spawn_coordinator(addr: SocketAddr, data_dir: &Path, lease_ttl: Duration) -> Process {
    let child = std::process::Command::new(binary("coordinator", "ridgeline-coordinator"))
        .args([
            "serve",
            "--listen",
            &addr.to_string(),
            "--heartbeat",
            "0.1",
            "--lease-ttl",
        ])
        .arg(lease_ttl.as_secs_f64().to_string())
        .arg("--data-dir")
        .arg(data_dir)
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::inherit())
        .spawn()
        .expect("start coordinator");
    // Owned from here: dropped (killed and reaped) on every path.
    let process = Process { child };
    for _ in 0..200 {
        if tokio::net::TcpStream::connect(addr).await.is_ok() {
            return process;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("coordinator did not start on {addr}");
}

/// A free port on 127.0.0.1 (bound and released; for processes that must
/// restart on the same address).
pub fn free_addr() -> SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr")
}
