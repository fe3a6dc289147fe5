//! Serving: both services on one listener, the lease-expiry sweeper, and
//! graceful shutdown.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use ridgeline_common::proto::v1::job_service_server::JobServiceServer;
use ridgeline_common::proto::v1::worker_service_server::WorkerServiceServer;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use crate::artifacts::ArtifactStore;
use crate::auth::Tokens;
use crate::error::{CoordError, Result};
use crate::scheduler::{Scheduler, SchedulerConfig};
use crate::service::jobs::JobApi;
use crate::service::workers::WorkerApi;
use crate::store::Store;
use crate::tls::ServerTls;
use ridgeline_common::spec::DataRoots;

#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub data_dir: PathBuf,
    pub scheduler: SchedulerConfig,
    /// Largest gRPC message accepted (job files, reports).
    pub max_message_bytes: usize,
    /// Largest artifact accepted by UploadArtifact.
    pub max_artifact_bytes: u64,
    /// HTTP/2 streams (calls in flight, open watches) one connection may
    /// hold at once.
    pub max_streams_per_connection: u32,
    /// Open `WatchJob` streams, over all connections.
    pub max_watchers: usize,
    /// Uploads in progress at once.
    pub max_uploads: usize,
    /// Bearer tokens accepted (none: no authentication).
    pub tokens: Arc<Tokens>,
    /// Serve TLS (`https://`) instead of plain HTTP/2; with a client CA,
    /// workers must present a certificate it signed.
    pub tls: Option<ServerTls>,
    /// The only directories job files may name data files in (empty: any
    /// path; uploaded `artifact:` files are always allowed).
    pub data_roots: DataRoots,
    /// Where the web pages and `/metrics` are served (none: not at all).
    pub http: Option<SocketAddr>,
    /// The address was derived, not asked for (`--http-listen auto`): if it
    /// is taken, serve without the pages rather than not at all.
    pub http_optional: bool,
}

impl ServerConfig {
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        Self {
            data_dir: data_dir.into(),
            scheduler: SchedulerConfig::default(),
            max_message_bytes: 8 << 20,
            max_artifact_bytes: 4 << 30,
            max_streams_per_connection: 256,
            max_watchers: 1024,
            max_uploads: 16,
            tokens: Arc::new(Tokens::open()),
            tls: None,
            data_roots: DataRoots::any(),
            http: None,
            http_optional: false,
        }
    }
}

/// Serves on `listener` until `shutdown` is cancelled.
pub async fn serve(
    listener: TcpListener,
    config: ServerConfig,
    shutdown: CancellationToken,
) -> Result<()> {
    let store = Store::open(&config.data_dir)?;
    let artifacts = Arc::new(ArtifactStore::open(&config.data_dir)?);
    let scheduler = Arc::new(
        Scheduler::new(store, artifacts.clone(), config.scheduler)?
            .with_data_roots(config.data_roots.clone()),
    );
    scheduler.recover().await?;
    // Everything that can refuse to start is checked before anything is
    // spawned.
    let mut builder = tonic::transport::Server::builder()
        .http2_keepalive_interval(Some(Duration::from_secs(20)))
        // One connection cannot open streams without bound (each watch
        // holds a subscription).
        .max_concurrent_streams(Some(config.max_streams_per_connection));
    if let Some(tls) = &config.tls {
        builder = builder
            .tls_config(tls.config())
            .map_err(|e| CoordError::InvalidArgument(format!("TLS: {e}")))?;
    }
    let http = match config.http {
        Some(addr) => match TcpListener::bind(addr).await {
            Ok(l) => Some(l),
            Err(e) if config.http_optional => {
                tracing::warn!(%addr, error = %e, "the web pages and /metrics are not served (give --http-listen ADDR)");
                None
            }
            Err(e) => {
                return Err(CoordError::InvalidArgument(format!(
                    "cannot serve the web pages on {addr}: {e}"
                )))
            }
        },
        None => None,
    };
    let addr = listener.local_addr().ok();
    tracing::info!(?addr, data_dir = %config.data_dir.display(), "coordinator serving");
    let mut tokens = config.tokens.clone();
    if let Some(tls) = &config.tls {
        if tls.mutual() {
            Arc::make_mut(&mut tokens).require_worker_certs();
        }
    }
    tracing::info!(
        tls = config.tls.is_some(),
        mutual_tls = config.tls.as_ref().is_some_and(ServerTls::mutual),
        "transport"
    );
    if tokens.is_open() {
        tracing::warn!("no tokens configured (serve --tokens FILE): anyone who can reach this port may submit jobs and lease tasks");
    }

    // Lease expiry: a task whose worker went quiet goes back to the queue.
    let sweeper = {
        let s = scheduler.clone();
        let stop = shutdown.clone();
        let every = (config.scheduler.lease_ttl / 4).max(Duration::from_millis(50));
        let ttl_half = config.scheduler.lease_ttl / 2;
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            let mut last = std::time::Instant::now();
            loop {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tick.tick() => {
                        let s = s.clone();
                        // If this process was stalled (suspended, swapped out)
                        // for a good part of a TTL, the workers' heartbeats are
                        // queued behind us: treat it like a restart and give
                        // leases a fresh TTL instead of expiring them all.
                        let stalled = last.elapsed() > every * 2 + ttl_half;
                        last = std::time::Instant::now();
                        let swept = if stalled {
                            s.recover().await.map(|_| 0)
                        } else {
                            s.expire_leases().await
                        };
                        if let Err(e) = swept {
                            tracing::error!(error = %e, "lease sweep failed");
                        }
                    }
                }
            }
        })
    };

    let jobs = JobServiceServer::new(JobApi {
        scheduler: scheduler.clone(),
        shutdown: shutdown.clone(),
        tokens: tokens.clone(),
        watchers: Arc::new(Semaphore::new(config.max_watchers)),
        watchers_limit: config.max_watchers,
    })
    .max_decoding_message_size(config.max_message_bytes)
    .max_encoding_message_size(64 << 20);
    let workers = WorkerServiceServer::new(WorkerApi {
        scheduler: scheduler.clone(),
        artifacts,
        max_artifact_bytes: config.max_artifact_bytes,
        tokens: tokens.clone(),
        uploads: Arc::new(Semaphore::new(config.max_uploads)),
        uploads_limit: config.max_uploads,
    })
    .max_decoding_message_size(config.max_message_bytes)
    .max_encoding_message_size(config.max_message_bytes);
    let web = http.map(|l| {
        tokio::spawn(crate::dashboard::serve(
            l,
            crate::dashboard::Web {
                scheduler: scheduler.clone(),
                tokens: tokens.clone(),
            },
            shutdown.clone(),
        ))
    });
    // Health checking and reflection: no token needed (see `interop`).
    let (_health_reporter, health) = crate::interop::health(shutdown.clone()).await;
    let result = builder
        .add_service(jobs)
        .add_service(workers)
        .add_service(health)
        .add_service(crate::interop::reflection_v1())
        .add_service(crate::interop::reflection_v1alpha())
        .serve_with_incoming_shutdown(
            // TCP_NODELAY: tonic's own setting is ignored for an incoming
            // stream, and without it a small answer written in two pieces
            // waited for the client's delayed ACK (~40 ms per call).
            tonic::transport::server::TcpIncoming::from(listener)
                .with_nodelay(Some(true))
                .with_keepalive(Some(Duration::from_secs(60))),
            shutdown.clone().cancelled_owned(),
        )
        .await
        .map_err(|e| CoordError::Storage(format!("server: {e}")));
    shutdown.cancel();
    let _ = sweeper.await;
    if let Some(web) = web {
        if let Ok(Err(e)) = web.await {
            tracing::error!(error = %e, "the web pages stopped");
        }
    }
    result
}
