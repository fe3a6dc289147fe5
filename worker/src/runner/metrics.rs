//! Prometheus metrics of a worker, served at `/metrics` on
//! `--metrics-listen ADDR` (off by default): task throughput and training
//! throughput, counted as each task ends. Samples per second is
//! `rate(ridgeline_worker_samples_trained_total[5m])` (use a window longer
//! than a chunk).

use std::net::SocketAddr;
use std::sync::Arc;

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use tokio_util::sync::CancellationToken;

type Labels = Vec<(&'static str, &'static str)>;

/// The worker's counters; cheap to update from the training threads.
#[derive(Debug)]
pub struct WorkerMetrics {
    registry: Registry,
    finished: Family<Labels, Counter>,
    running: Gauge,
    epochs: Counter,
    samples: Counter,
    points: Counter,
}

impl Default for WorkerMetrics {
    fn default() -> Self {
        Self::new()
    }
}

impl WorkerMetrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("ridgeline_worker");
        let finished = Family::<Labels, Counter>::default();
        registry.register(
            "tasks_finished",
            "Tasks this worker finished, by outcome (completed, failed, stopped, shutdown)",
            finished.clone(),
        );
        let running = Gauge::default();
        registry.register("running_tasks", "Tasks running now", running.clone());
        let epochs = Counter::default();
        registry.register(
            "epochs_trained",
            "Training epochs completed",
            epochs.clone(),
        );
        let samples = Counter::default();
        registry.register(
            "samples_trained",
            "Training examples processed (rows × epochs); rate() is samples/s",
            samples.clone(),
        );
        let points = Counter::default();
        registry.register(
            "line_points",
            "Line-search points evaluated",
            points.clone(),
        );
        Self {
            registry,
            finished,
            running,
            epochs,
            samples,
            points,
        }
    }

    pub fn task_started(&self) {
        self.running.inc();
    }

    /// `outcome`: completed, failed, stopped or shutdown.
    pub fn task_finished(&self, outcome: &'static str) {
        self.running.dec();
        self.finished
            .get_or_create(&vec![("outcome", outcome)])
            .inc();
    }

    /// A training chunk's epochs, each over `rows` examples (counted when
    /// the chunk ends).
    pub fn trained(&self, epochs: u32, rows: usize) {
        self.epochs.inc_by(u64::from(epochs));
        self.samples.inc_by(u64::from(epochs) * rows as u64);
    }

    pub fn searched(&self, points: usize) {
        self.points.inc_by(points as u64);
    }

    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = encode(&mut out, &self.registry);
        out
    }
}

/// Serves `GET /metrics` on `listener` until `stop`.
pub async fn serve(
    listener: tokio::net::TcpListener,
    metrics: Arc<WorkerMetrics>,
    stop: CancellationToken,
) -> std::io::Result<()> {
    let addr: Option<SocketAddr> = listener.local_addr().ok();
    tracing::info!(?addr, "worker metrics serving at /metrics");
    let app = axum::Router::new().route(
        "/metrics",
        axum::routing::get(move || {
            let metrics = metrics.clone();
            async move {
                (
                    [(
                        axum::http::header::CONTENT_TYPE,
                        "text/plain; version=0.0.4; charset=utf-8",
                    )],
                    metrics.render(),
                )
            }
        }),
    );
    axum::serve(listener, app)
        .with_graceful_shutdown(stop.cancelled_owned())
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_are_exposed() {
        let m = WorkerMetrics::new();
        m.task_started();
        m.trained(2, 600);
        m.searched(1);
        m.task_finished("completed");
        m.task_started();
        let text = m.render();
        for line in [
            "ridgeline_worker_tasks_finished_total{outcome=\"completed\"} 1",
            "ridgeline_worker_running_tasks 1",
            "ridgeline_worker_epochs_trained_total 2",
            "ridgeline_worker_samples_trained_total 1200",
            "ridgeline_worker_line_points_total 1",
        ] {
            assert!(text.contains(line), "{line} missing from\n{text}");
        }
    }
}
