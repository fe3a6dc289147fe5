//! CI smoke run of the coordinator load generator
//! (`coordinator/benches/load.rs`): builds it in this test's profile (cargo
//! is a no-op when it is up to date), runs it with `--smoke` against a real
//! `coordinator serve` and checks that it succeeds and prints every figure.
//! It checks that the benchmark runs, not its times.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The `load` bench executable, built with `cargo build --benches` in the
/// profile of this test (release when this test runs under `--release`).
fn load_bench() -> PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    // target/<profile>/deps/<test>
    let release = exe
        .parent()
        .and_then(|p| p.parent())
        .and_then(|p| p.file_name())
        .is_some_and(|n| n == "release");
    let mut cmd = Command::new(env!("CARGO"));
    cmd.args([
        "build",
        "--benches",
        "-p",
        "ridgeline-coordinator",
        "--message-format=json-render-diagnostics",
    ]);
    if release {
        cmd.arg("--release");
    }
    // What cargo set for this test process (CARGO_MANIFEST_DIR, CARGO_PKG_*…)
    // is not the inner build's: build scripts that watch these variables
    // (ring's does) would otherwise rebuild, and again at the next plain
    // `cargo build`.
    for (key, _) in std::env::vars_os() {
        let k = key.to_string_lossy();
        if k.starts_with("CARGO_PKG_")
            || k.starts_with("CARGO_MANIFEST_")
            || matches!(
                k.as_ref(),
                "CARGO_CRATE_NAME"
                    | "CARGO_BIN_NAME"
                    | "CARGO_PRIMARY_PACKAGE"
                    | "CARGO_TARGET_TMPDIR"
                    | "CARGO_RUSTC_CURRENT_DIR"
                    | "OUT_DIR"
            )
        {
            cmd.env_remove(&key);
        }
    }
    let out = cmd
        .stderr(Stdio::inherit())
        .output()
        .expect("run cargo build");
    assert!(
        out.status.success(),
        "cargo build --benches -p ridgeline-coordinator failed"
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|m| m["reason"] == "compiler-artifact" && m["target"]["name"] == "load")
        .find_map(|m| m["executable"].as_str().map(PathBuf::from))
        .expect("cargo reported no executable for the `load` bench")
}

#[test]
fn the_load_generator_prints_every_figure() {
    let bench = load_bench();
    let mut child = Command::new(&bench)
        .arg("--smoke")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the load bench");
    let start = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait") {
            break s;
        }
        if start.elapsed() > Duration::from_secs(120) {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the load bench did not finish within 120 s");
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let out = child.wait_with_output().expect("output");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        status.success(),
        "load --smoke failed ({status}):\n{stdout}\n{stderr}"
    );
    for figure in [
        "| durable results/s",
        "| lease latency p50 / p99, client-observed",
        "| lease latency p50 / p99, server",
        "| Report / Complete latency",
        "| coordinator CPU",
        "| coordinator peak RSS",
        "| memory per worker",
        "| memory per task",
        "| events/s to one watcher",
        "| scheduling overhead",
        "| workers | wall | ideal",
        "| 1 | ",
        "| 8 | ",
    ] {
        assert!(stdout.contains(figure), "no `{figure}` row in:\n{stdout}");
    }
    // Every figure was measured (the server's histogram was read, the
    // watcher saw the whole job).
    assert!(!stdout.contains("no /metrics"), "{stdout}");
    assert!(!stdout.contains("NaN"), "{stdout}");
    assert!(
        stdout.contains("no gaps; job end seen"),
        "the watcher missed events:\n{stdout}"
    );
}
