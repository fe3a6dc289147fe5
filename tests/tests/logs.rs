//! Logs as machines read them: with `--log-format json` the `worker` and
//! `coordinator serve` write one JSON object per line on stderr, with the
//! current span and the list of spans; every line of a task carries the
//! job, task and worker ids, and the coordinator's lines about a worker's
//! call carry the worker and the task. The worker takes its name and cache
//! from a config file (`--config`), its log format from a flag.

use std::io::{BufRead, BufReader, Read};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use ridgeline_common::proto::v1 as pb;
use ridgeline_common::proto::v1::job_service_client::JobServiceClient;
use ridgeline_tests::{binary, jobs, submit, wait_for_end, Process};
use serde_json::Value;

/// Environment variables that would change what the binaries do here.
const UNSET: &[&str] = &[
    "RIDGELINE_CONFIG",
    "RIDGELINE_COORDINATOR",
    "RIDGELINE_DATA_DIR",
    "RIDGELINE_DATA_ROOTS",
    "RIDGELINE_TOKENS",
    "RIDGELINE_TOKEN",
    "RIDGELINE_TOKEN_FILE",
    "RIDGELINE_TLS_CA",
    "RIDGELINE_TLS_CERT",
    "RIDGELINE_TLS_KEY",
    "RIDGELINE_SERVER_TLS_CERT",
    "RIDGELINE_SERVER_TLS_KEY",
    "RIDGELINE_TLS_CLIENT_CA",
];

fn command(name: &str, package: &str) -> Command {
    let mut cmd = Command::new(binary(name, package));
    for var in UNSET {
        cmd.env_remove(var);
    }
    cmd.env("RUST_LOG", "info")
        .env("RAYON_NUM_THREADS", "1")
        .stdin(Stdio::null())
        .stderr(Stdio::piped());
    cmd
}

/// Reads a child's stderr to its end on a thread.
fn collect(child: &mut std::process::Child) -> std::thread::JoinHandle<String> {
    let mut stderr = child.stderr.take().expect("stderr");
    std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        s
    })
}

/// SIGTERM, then waits (up to 30 s) for a clean exit.
fn stop(p: &mut Process, what: &str) {
    p.signal(15);
    let start = Instant::now();
    loop {
        if let Some(status) = p.child.try_wait().expect("wait") {
            assert!(status.success(), "{what} exited with {status}");
            return;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "{what} did not exit on SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Every line parsed, or a panic naming the line that is not JSON.
fn json_lines(what: &str, logs: &str) -> Vec<Value> {
    assert!(!logs.trim().is_empty(), "{what} logged nothing");
    logs.lines()
        .map(|line| {
            let v: Value = serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("{what}: a line is not JSON ({e}): {line}\n{logs}"));
            assert!(
                v["timestamp"].is_string() && v["level"].is_string() && v["fields"].is_object(),
                "{what}: {line}"
            );
            v
        })
        .collect()
}

fn message(v: &Value) -> &str {
    v["fields"]["message"].as_str().unwrap_or_default()
}

fn span_named<'v>(v: &'v Value, name: &str) -> Option<&'v Value> {
    v["spans"].as_array()?.iter().find(|s| s["name"] == name)
}

fn id(v: &Value, field: &str) -> String {
    let s = v[field].as_str().unwrap_or_default();
    assert!(!s.is_empty(), "no {field} in {v}");
    s.to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_logs_carry_job_task_and_worker_ids() {
    let dir = tempfile::tempdir().expect("tempdir");

    // The coordinator, as a user runs it.
    let mut child = command("coordinator", "ridgeline-coordinator")
        .args(["serve", "--listen", "127.0.0.1:0", "--log-format", "json"])
        .args(["--heartbeat", "0.2", "--data-dir"])
        .arg(dir.path().join("coordinator"))
        .stdout(Stdio::piped())
        .spawn()
        .expect("start coordinator");
    let coordinator_logs = collect(&mut child);
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("read the address");
    let mut coordinator = Process { child };
    let addr = line
        .trim()
        .strip_prefix("listening on ")
        .unwrap_or_else(|| panic!("no address: {line:?}"))
        .to_string();
    let url = format!("http://{addr}");
    let mut client = JobServiceClient::connect(url.clone())
        .await
        .expect("connect");
    let job = submit(&mut client, &jobs::lr_ramp(1, 2, 2))
        .await
        .expect("submit");

    // The worker: name and cache from a config file, JSON by the flag.
    let config = dir.path().join("worker.toml");
    let cache = toml::Value::String(dir.path().join("cache").to_string_lossy().into_owned());
    std::fs::write(
        &config,
        format!("name = \"json-logs\"\nslots = 1\ncache-dir = {cache}\n"),
    )
    .expect("write config");
    let mut child = command("worker", "ridgeline-worker")
        .arg("--config")
        .arg(&config)
        .args(["--log-format", "json", "--coordinator", &url])
        .stdout(Stdio::null())
        .spawn()
        .expect("start worker");
    let worker_logs = collect(&mut child);
    let mut worker = Process { child };

    let status = wait_for_end(&mut client, &job, Duration::from_secs(180)).await;
    assert_eq!(
        status.state,
        pb::JobState::Succeeded as i32,
        "the job did not succeed: {status:#?}"
    );
    stop(&mut worker, "worker");
    stop(&mut coordinator, "coordinator");
    let worker_logs = worker_logs.join().expect("worker stderr");
    let coordinator_logs = coordinator_logs.join().expect("coordinator stderr");

    // Worker: every line is JSON; every line logged in a task has the
    // task's span, current, with the four ids.
    let mut task_lines = Vec::new();
    let mut worker_id = None;
    for v in json_lines("worker", &worker_logs) {
        let Some(task) = span_named(&v, "task") else {
            continue;
        };
        assert_eq!(v["span"], *task, "the task span is the current one: {v}");
        assert_eq!(task["job_id"], job.as_str(), "{v}");
        id(task, "task_id");
        assert!(task["attempt"].as_u64().is_some_and(|a| a >= 1), "{v}");
        let wid = id(task, "worker_id");
        // Under the worker's span, named from the config file.
        let w = span_named(&v, "worker").unwrap_or_else(|| panic!("no worker span: {v}"));
        assert_eq!(w["worker_name"], "json-logs", "{v}");
        assert_eq!(w["worker_id"], wid.as_str(), "{v}");
        worker_id = Some(wid);
        task_lines.push(message(&v).to_string());
    }
    for expected in [
        "training chunk started",
        "training chunk done",
        "task completed",
    ] {
        assert!(
            task_lines.iter().any(|m| m == expected),
            "no `{expected}` line in a task span: {task_lines:?}\n{worker_logs}"
        );
    }
    let worker_id = worker_id.expect("a task line");

    // Coordinator: every line is JSON; the lease and the completion are
    // logged in the span of the worker's call, naming worker and task.
    let lines = json_lines("coordinator", &coordinator_logs);
    for (msg, method) in [("task leased", "Lease"), ("task done", "Complete")] {
        let v = lines
            .iter()
            .find(|v| message(v) == msg)
            .unwrap_or_else(|| panic!("no `{msg}` line:\n{coordinator_logs}"));
        let rpc = span_named(v, "rpc").unwrap_or_else(|| panic!("no rpc span: {v}"));
        assert_eq!(rpc["method"], method, "{v}");
        assert_eq!(rpc["worker_id"], worker_id.as_str(), "{v}");
        assert_eq!(v["span"], *rpc, "{v}");
        if method == "Complete" {
            id(rpc, "task_id");
        }
    }
}
