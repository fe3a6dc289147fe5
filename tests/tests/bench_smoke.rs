//! CI smoke runs of the benchmarks: the coordinator load generator
//! (`coordinator/benches/load.rs`, against a real `coordinator serve`), the
//! engine throughput bench (`worker/benches/engine.rs`) and the whole
//! procedure's timing (`worker/benches/procedure.rs`). Each is built in this
//! test's profile (cargo is a no-op when it is up to date), run in its
//! short mode, and must succeed and print every figure. They check that
//! the benchmarks run, not their times.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// A bench executable of `package`, built with `cargo build --benches` in
/// the profile of this test (release when this test runs under `--release`).
fn bench_exe(package: &str, name: &str) -> PathBuf {
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
        package,
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
        "cargo build --benches -p {package} failed"
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|m| m["reason"] == "compiler-artifact" && m["target"]["name"] == name)
        .find_map(|m| m["executable"].as_str().map(PathBuf::from))
        .unwrap_or_else(|| panic!("cargo reported no executable for the `{name}` bench"))
}

/// Runs a bench executable with `args`; its stdout, after checking it
/// succeeded within `limit`.
fn run_bench(exe: &PathBuf, args: &[&str], limit: Duration) -> String {
    let mut child = Command::new(exe)
        .args(args)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the bench");
    let start = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait") {
            break s;
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{} {args:?} did not finish within {limit:?}", exe.display());
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let out = child.wait_with_output().expect("output");
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        status.success(),
        "{} {args:?} failed ({status}):\n{stdout}\n{}",
        exe.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

#[test]
fn the_engine_bench_prints_every_row() {
    let exe = bench_exe("ridgeline-worker", "engine");
    let stdout = run_bench(&exe, &["--quick"], Duration::from_secs(600));
    for model in ["mlp_784_256_10", "cnn_small", "mlp_64_128_10"] {
        for phase in ["train", "eval", "evaluate", "line_search"] {
            assert!(
                stdout.lines().any(|l| {
                    let mut cols = l.split_whitespace();
                    cols.next() == Some(model) && cols.next() == Some(phase)
                }),
                "no {model} {phase} row in:\n{stdout}"
            );
        }
    }
    assert!(!stdout.contains("NaN"), "{stdout}");
}

#[test]
fn the_slots_bench_compares_the_pools() {
    let exe = bench_exe("ridgeline-worker", "slots");
    let stdout = run_bench(&exe, &["--quick"], Duration::from_secs(600));
    for model in ["mlp_784_256_10", "cnn_small"] {
        let row = stdout
            .lines()
            .find(|l| l.split_whitespace().next() == Some(model))
            .unwrap_or_else(|| panic!("no {model} row in:\n{stdout}"));
        // Name, examples, three rates and the ratio, all finite.
        let cols: Vec<&str> = row.split_whitespace().collect();
        assert_eq!(cols.len(), 6, "{row}");
        for c in &cols[2..] {
            let v: f64 = c.trim_end_matches('×').parse().unwrap_or(f64::NAN);
            assert!(v.is_finite() && v > 0.0, "`{c}` in {row}");
        }
    }
}

#[test]
fn the_procedure_bench_splits_the_wall_time() {
    let exe = bench_exe("ridgeline-worker", "procedure");
    let stdout = run_bench(&exe, &["--smoke"], Duration::from_secs(900));
    for figure in [
        "| wall time, submit → succeeded",
        "| slot time",
        "| engine (data, model, training, evaluation)",
        "| in-task overhead",
        "| scheduling delay",
        "| no work ready",
        "| engine time the job reports",
        "| chunks run on the worker that wrote the checkpoint",
        "share outside training",
        "| stage | tasks | engine |",
        "| lr_ramp |",
    ] {
        assert!(stdout.contains(figure), "no `{figure}` in:\n{stdout}");
    }
    assert!(!stdout.contains("NaN"), "{stdout}");
}

#[test]
fn the_load_generator_prints_every_figure() {
    let stdout = run_bench(
        &bench_exe("ridgeline-coordinator", "load"),
        &["--smoke"],
        // The other benches' smoke runs share the cores meanwhile.
        Duration::from_secs(300),
    );
    for figure in [
        "| durable results/s",
        "| lease latency p50 / p99, client-observed (Lease calls",
        "| lease latency p50 / p99, client-observed (each worker's first Lease",
        "| lease latency p50 / p99, client-observed (after the start",
        "| lease latency p50 / p99, server",
        "| Report / Complete latency",
        "| Lease looks answered without a commit of their own",
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
