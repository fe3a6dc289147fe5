//! The whole system on one machine: a coordinator on a local port, two
//! workers, and two real jobs from `examples/` on built-in data (an LR ramp
//! over 3 seeds, and a line search), watched live; then the curves (mean ±
//! spread over seeds) are printed and written as CSV under `ridgeline-demo/`.
//!
//!     cargo run --release -p ridgeline-worker --example demo
//!
//! Everything goes over real gRPC sockets, exactly as with
//! `coordinator serve` and `worker` on separate machines.

use std::path::PathBuf;
use std::time::Duration;

use ridgeline_common::proto::v1 as pb;
use ridgeline_coordinator::client::{self, ClientCommand, ExportFormat};
use ridgeline_coordinator::ServerConfig;
use ridgeline_worker::engine::device;
use ridgeline_worker::runner::{self, WorkerConfig};
use tokio_util::sync::CancellationToken;

const WORKERS: usize = 2;

fn main() -> anyhow::Result<()> {
    // Before any thread starts: each worker gets its share of the cores.
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    device::configure_threads(WORKERS, cores);
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
        workers.push(tokio::spawn(runner::run(cfg, stop.clone())));
    }
    println!("{WORKERS} workers started\n");

    let mut jobs = client::connect(&url).await?;
    for kind in ["lr_ramp", "line_search"] {
        let path = examples.join(format!("{kind}.toml"));
        let text = std::fs::read_to_string(&path)?;
        let id = jobs
            .submit_job(pb::SubmitJobRequest {
                text,
                format: pb::JobFormat::Toml as i32,
            })
            .await?
            .into_inner()
            .job_id;
        println!("── {kind}: job {id} ({})", path.display());
        // The same live view as `coordinator watch JOB`.
        if let Err(e) = client::run(ClientCommand::Watch { job: id.clone() }, &url).await {
            println!("{e:#}");
        }
        let results = jobs
            .get_results(pb::GetResultsRequest { job_id: id.clone() })
            .await?
            .into_inner();
        print_curves(kind, &results);
        let csv = out.join(format!("{kind}.csv"));
        client::run(
            ClientCommand::Export {
                job: id,
                format: ExportFormat::Csv,
                out: Some(csv),
            },
            &url,
        )
        .await?;
        println!();
    }

    stop.cancel();
    for w in workers {
        w.await??;
    }
    server.await??;
    Ok(())
}

/// Heldout metric, mean ± sample std over seeds, with a bar per point.
fn print_curves(kind: &str, r: &pb::JobResults) {
    let x_name = if kind == "line_search" { "a" } else { "epoch" };
    for a in &r.aggregates {
        println!(
            "{kind} [{}]: heldout metric, mean ± std over seeds",
            a.group
        );
        for i in 0..a.x.len() {
            let m = a.heldout_mean[i];
            let bar = if m.is_finite() {
                "█".repeat((m.clamp(0.0, 1.0) * 40.0).round() as usize)
            } else {
                String::new()
            };
            println!(
                "  {x_name} {:>6.2}  {:>6.3} ± {:<6.3} (n={})  {bar}",
                a.x[i], m, a.heldout_std[i], a.n[i]
            );
        }
    }
    for c in &r.curves {
        if let Some(end) = &c.end {
            if end.kind == pb::run_end::Kind::Diverged as i32 {
                println!(
                    "  {} diverged in epoch {}: {}",
                    c.curve, end.epoch, end.reason
                );
            }
        }
    }
}
