//! `coordinator`: serves the head node (`serve`) and is the researchers'
//! client (`submit`, `status`, `watch`, `list`, `cancel`, `workers`,
//! `export`, `report`, `gallery`, `upload`). Thin: flags are parsed here,
//! everything else is the library.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand};
use ridgeline_coordinator::client::{ClientTls, Credentials};
use ridgeline_coordinator::scheduler::SchedulerConfig;
use ridgeline_coordinator::tls::ServerTls;
use ridgeline_coordinator::{serve, ServerConfig};
use tokio_util::sync::CancellationToken;

#[derive(Parser)]
#[command(
    name = "coordinator",
    version,
    about = "Ridgeline coordinator and client"
)]
struct Cli {
    /// The coordinator to talk to (client commands; `--server` works too).
    #[arg(
        long,
        alias = "server",
        global = true,
        env = "RIDGELINE_COORDINATOR",
        default_value = "http://127.0.0.1:50051"
    )]
    coordinator: String,
    /// File holding this client's bearer token (or set RIDGELINE_TOKEN).
    #[arg(long, global = true, env = "RIDGELINE_TOKEN_FILE")]
    token_file: Option<PathBuf>,
    /// CA certificate (PEM) that signed an `https://` coordinator's
    /// certificate [default: the system's trust store] (client commands).
    #[arg(long, global = true, env = "RIDGELINE_TLS_CA")]
    tls_ca: Option<PathBuf>,
    /// Log format.
    #[arg(long, global = true, default_value = "text", value_parser = ["text", "json"])]
    log_format: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the coordinator on this machine (the head node).
    Serve {
        /// Address to listen on.
        #[arg(long, default_value = "0.0.0.0:50051")]
        listen: SocketAddr,
        /// Where the database and artifacts live.
        #[arg(long, env = "RIDGELINE_DATA_DIR", default_value = "ridgeline-data")]
        data_dir: PathBuf,
        /// Seconds without a heartbeat after which a worker's tasks are
        /// handed to others.
        #[arg(long, default_value_t = 30.0)]
        lease_ttl: f64,
        /// Seconds between worker heartbeats.
        #[arg(long, default_value_t = 3.0)]
        heartbeat: f64,
        /// TOML file of the accepted bearer tokens (`client = [...]`,
        /// `worker = [...]`); without it anyone who can reach the port may
        /// call everything.
        #[arg(long, env = "RIDGELINE_TOKENS")]
        tokens: Option<PathBuf>,
        /// A worker whose last N task attempts all failed gets no new tasks
        /// for --quarantine seconds (0: never quarantine).
        #[arg(long, default_value_t = 3)]
        quarantine_after: u32,
        #[arg(long, default_value_t = 600.0)]
        quarantine: f64,
        /// Serve TLS with this certificate (PEM; `tls-init` makes a lab's
        /// set). Clients and workers then use https://.
        #[arg(long, env = "RIDGELINE_SERVER_TLS_CERT", requires = "tls_key")]
        tls_cert: Option<PathBuf>,
        /// The private key (PEM) of --tls-cert.
        #[arg(long, env = "RIDGELINE_SERVER_TLS_KEY", requires = "tls_cert")]
        tls_key: Option<PathBuf>,
        /// Accept job data files only from under this directory (repeat for
        /// several; `artifact:` uploads are always allowed) [default: any
        /// path].
        #[arg(
            long = "data-root",
            value_name = "DIR",
            env = "RIDGELINE_DATA_ROOTS",
            value_delimiter = ':'
        )]
        data_roots: Vec<PathBuf>,
        /// Mutual TLS: workers must present a client certificate signed by
        /// this CA (PEM). Clients need none.
        #[arg(long, env = "RIDGELINE_TLS_CLIENT_CA", requires = "tls_cert")]
        tls_client_ca: Option<PathBuf>,
    },
    /// Make a self-signed TLS set for a lab: a CA, a server certificate for
    /// the head node and a worker client certificate.
    TlsInit {
        /// Directory to write ca.pem/.key, server.pem/.key, worker.pem/.key.
        #[arg(long)]
        out: PathBuf,
        /// A name or IP address workers and clients use for the head node
        /// (repeat for each; the first is the certificate's common name).
        #[arg(long = "host", required = true)]
        hosts: Vec<String>,
        /// Years the certificates stay valid.
        #[arg(long, default_value_t = 5)]
        years: u32,
    },
    #[command(flatten)]
    Client(ridgeline_coordinator::client::ClientCommand),
}

fn init_logs(format: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if format == "json" {
        builder.json().init();
    } else {
        builder.init();
    }
}

fn seconds(name: &str, s: f64) -> anyhow::Result<Duration> {
    if !(s.is_finite() && s > 0.0) {
        anyhow::bail!("--{name} must be a positive number of seconds");
    }
    Ok(Duration::from_secs_f64(s))
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            // `{:#}`: the whole chain of causes on one line, no backtrace.
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Serve {
            listen,
            data_dir,
            lease_ttl,
            heartbeat,
            tokens,
            quarantine_after,
            quarantine,
            tls_cert,
            tls_key,
            tls_client_ca,
            data_roots,
        } => {
            init_logs(&cli.log_format);
            let mut config = ServerConfig::new(data_dir);
            config.data_roots = ridgeline_common::spec::DataRoots::new(&data_roots)
                .map_err(|e| anyhow::anyhow!(e))?;
            if let (Some(cert), Some(key)) = (&tls_cert, &tls_key) {
                config.tls = Some(ServerTls::load(cert, key, tls_client_ca.as_deref())?);
            }
            if let Some(path) = tokens {
                config.tokens =
                    std::sync::Arc::new(ridgeline_coordinator::auth::Tokens::load(&path)?);
            }
            config.scheduler = SchedulerConfig {
                lease_ttl: seconds("lease-ttl", lease_ttl)?,
                heartbeat_interval: seconds("heartbeat", heartbeat)?,
                quarantine_after,
                quarantine_for: seconds("quarantine", quarantine)?,
            };
            let listener = tokio::net::TcpListener::bind(listen)
                .await
                .map_err(|e| anyhow::anyhow!("cannot listen on {listen}: {e}"))?;
            // Print the bound address (port 0 picks one) for scripts.
            println!("listening on {}", listener.local_addr()?);
            let shutdown = CancellationToken::new();
            let on_signal = shutdown.clone();
            tokio::spawn(async move {
                wait_for_signal().await;
                on_signal.cancel();
            });
            serve(listener, config, shutdown).await?;
            Ok(())
        }
        Command::TlsInit { out, hosts, years } => {
            let f = ridgeline_coordinator::tls::generate(&out, &hosts, years)?;
            println!(
                "wrote {}\n\
                 head node: coordinator serve --tls-cert {} --tls-key {} [--tls-client-ca {}]\n\
                 workers:   worker --coordinator https://{}:50051 --tls-ca {} [--tls-cert {} --tls-key {}]\n\
                 clients:   coordinator --coordinator https://{}:50051 --tls-ca {} list\n\
                 keep ca.key offline; copy ca.pem to every machine, worker.pem/.key to the workers",
                out.display(),
                f.server_cert.display(),
                f.server_key.display(),
                f.ca_cert.display(),
                hosts[0],
                f.ca_cert.display(),
                f.worker_cert.display(),
                f.worker_key.display(),
                hosts[0],
                f.ca_cert.display(),
            );
            Ok(())
        }
        Command::Client(cmd) => {
            if std::env::var_os("RUST_LOG").is_some() {
                init_logs(&cli.log_format);
            }
            let bearer = ridgeline_coordinator::client::Bearer::from_env(cli.token_file.as_deref())
                .map_err(|e| anyhow::anyhow!(e))?;
            let tls = ClientTls::load(cli.tls_ca.as_deref(), None, None)
                .map_err(|e| anyhow::anyhow!(e))?;
            let creds = Credentials { bearer, tls };
            ridgeline_coordinator::client::run(cmd, &cli.coordinator, &creds).await
        }
    }
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        if let Ok(mut term) = signal(SignalKind::terminate()) {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
            return;
        }
    }
    let _ = tokio::signal::ctrl_c().await;
}
