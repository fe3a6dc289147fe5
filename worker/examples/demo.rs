//! The whole system on one machine: a coordinator on a local port, two
//! workers, and the whole procedure (`examples/procedure.toml`: seven steps,
//! 3 seeds each, on the built-in glyph digits), watched live stage by
//! stage; then its decisions and recommendation are printed and its report
//! (HTML with a figure per step, recommended.toml/json, CSV) is written
//! under `ridgeline-demo/report/`.
//!
//!     cargo run --release -p ridgeline-worker --example demo
//!
//! Everything goes over real gRPC sockets, exactly as with
//! `coordinator serve` and `worker` on separate machines.

use std::path::PathBuf;
use std::time::Duration;

use ridgeline_common::proto::v1 as pb;
use ridgeline_coordinator::client::{self, ClientCommand};
use ridgeline_coordinator::report;
use ridgeline_coordinator::ServerConfig;
use ridgeline_worker::engine::device;
use ridgeline_worker::runner::{self, WorkerConfig};
use tokio_util::sync::CancellationToken;

const WORKERS: usize = 2;

fn main() -> anyhow::Result<()> {
    // Before any thread starts: each worker gets its share of the cores.
    device::configure_threads(device::threads_per_slot(WORKERS, device::cores()));
    tokio::runtime::Runtime::new()?.block_on(demo())
}

async fn demo() -> anyhow::Result<()> {
    let out = PathBuf::from("ridgeline-demo");
    if out.exists() {
        std::fs::remove_dir_all(&out)?;
    }
    std::fs::create_dir_all(&out)?;
    let examples = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../examples");

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}", listener.local_addr()?);
    let stop = CancellationToken::new();
    let mut config = ServerConfig::new(out.join("data"));
    config.scheduler.heartbeat_interval = Duration::from_millis(200);
    let server = tokio::spawn(ridgeline_coordinator::serve(listener, config, stop.clone()));
    println!(
        "coordinator on {url}, data in {}",
        out.join("data").display()
    );

    let mut workers = vec![];
    for i in 0..WORKERS {
        let mut cfg = WorkerConfig::new(url.clone(), format!("demo-worker-{i}"));
        cfg.cache_dir = out.join(format!("cache-{i}"));
        // The workers share this machine: each gets its share of the cores.
        cfg.threads = Some(device::threads_per_slot(WORKERS, device::cores()));
        workers.push(tokio::spawn(runner::run(cfg, stop.clone())));
    }
    println!("{WORKERS} workers started\n");

    let mut jobs = client::connect(&url, &client::Credentials::none()).await?;
    let path = examples.join("procedure.toml");
    let text = std::fs::read_to_string(&path)?;
    let id = jobs
        .submit_job(pb::SubmitJobRequest {
            text,
            format: pb::JobFormat::Toml as i32,
        })
        .await?
        .into_inner()
        .job_id;
    println!("── the procedure: job {id} ({})", path.display());
    // The same live view as `coordinator watch JOB`: stages, measurements,
    // and each decision as it is made.
    if let Err(e) = client::run(
        ClientCommand::Watch { job: id.clone() },
        &url,
        &client::Credentials::none(),
    )
    .await
    {
        println!("{e:#}");
    }
    let status = jobs
        .get_job(pb::GetJobRequest { job_id: id.clone() })
        .await?
        .into_inner();
    let results = jobs
        .get_results(pb::GetResultsRequest { job_id: id.clone() })
        .await?
        .into_inner();
    println!("\n── decisions");
    for d in &results.decisions {
        println!("{}: {}", d.title, d.summary);
        for f in &d.red_flags {
            println!("    RED FLAG {}: {}", f.title, f.detail);
        }
    }
    let dir = out.join("report");
    let written = report::write_report(&dir, &status, &results)?;
    if let Some(rec) = results
        .decisions
        .iter()
        .find(|d| d.step == "recommendation")
    {
        let v: serde_json::Value = serde_json::from_str(&rec.json)?;
        println!(
            "\n── recommended.toml\n{}",
            v["toml"].as_str().unwrap_or_default()
        );
    }
    println!(
        "{} epochs of training in all. Report: {}",
        results.epochs_trained,
        dir.join("report.html").display()
    );
    for p in written {
        println!("  wrote {}", p.display());
    }

    stop.cancel();
    for w in workers {
        w.await??;
    }
    server.await??;
    Ok(())
}
