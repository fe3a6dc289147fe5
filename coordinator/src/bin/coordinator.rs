//! `coordinator`: serves the head node (`serve`) and is the researchers'
//! client (`submit`, `status`, `watch`, `list`, `cancel`, `workers`,
//! `export`, `report`, `gallery`, `upload`). Thin: flags are parsed here,
//! everything else is the library.
//!
//! Every flag may also be set in a TOML file (`--config FILE` or
//! `RIDGELINE_CONFIG`): global flags at the top, `serve` flags under
//! `[serve]` (see [`ridgeline_common::cli_config`]).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{CommandFactory, Parser, Subcommand};
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
    /// TOML file of settings: keys are the long flag names (global ones at
    /// the top, `serve` ones under `[serve]`); flags and environment
    /// variables override it.
    #[arg(long, global = true, env = "RIDGELINE_CONFIG", value_name = "FILE")]
    config: Option<PathBuf>,
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
    /// Log lines as text or as JSON objects with their spans (filter with
    /// RUST_LOG).
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
        /// Seconds a quarantined worker gets no new tasks.
        #[arg(long, default_value_t = 600.0)]
        quarantine: f64,
        /// Serve TLS with this certificate (PEM; `tls-init` makes a lab's
        /// set). Clients and workers then use https://.
        #[arg(long, env = "RIDGELINE_SERVER_TLS_CERT", requires = "tls_key")]
        tls_cert: Option<PathBuf>,
        /// The private key (PEM) of --tls-cert.
        #[arg(long, env = "RIDGELINE_SERVER_TLS_KEY", requires = "tls_cert")]
        tls_key: Option<PathBuf>,
        /// Mutual TLS: workers must present a client certificate signed by
        /// this CA (PEM). Clients need none.
        #[arg(long, env = "RIDGELINE_TLS_CLIENT_CA", requires = "tls_cert")]
        tls_client_ca: Option<PathBuf>,
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
        /// Where the web pages (jobs, workers, live reports, gallery) and
        /// Prometheus `/metrics` are served (plain HTTP): an address, `auto`
        /// (the gRPC address with port + 1, e.g. 50052; on 127.0.0.1 when
        /// TLS is on) or `off`.
        #[arg(long, env = "RIDGELINE_HTTP_LISTEN", default_value = "auto")]
        http_listen: String,
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
    /// Print a shell completion script, e.g.
    /// `coordinator completions bash > /etc/bash_completion.d/coordinator`.
    Completions {
        /// The shell to complete in.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    #[command(flatten)]
    Client(ridgeline_coordinator::client::ClientCommand),
}

/// Writes the completion script of `shell` for this command line.
fn completions(shell: clap_complete::Shell, out: &mut dyn std::io::Write) {
    clap_complete::generate(shell, &mut Cli::command(), "coordinator", out);
}

/// Logs to stderr in `format`. Lines are written by a thread of their own
/// (`tracing_appender::non_blocking`): a call, or the store's writer inside
/// its transaction, formats its line and goes on, instead of waiting for a
/// `write` to stderr (which can be a slow pipe or journal on a cluster's
/// head node). None is dropped: when the buffer is full, logging waits as
/// before. The returned guard writes what is left when dropped; hold it
/// until the end.
fn init_logs(format: &str) -> tracing_appender::non_blocking::WorkerGuard {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let (stderr, guard) = tracing_appender::non_blocking::NonBlockingBuilder::default()
        .lossy(false)
        .thread_name("ridgeline-logs")
        .finish(std::io::stderr());
    // Colours only on a terminal: a log file or journal gets plain text.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(stderr);
    if format == "json" {
        builder
            .json()
            .with_current_span(true)
            .with_span_list(true)
            .init();
    } else {
        builder.init();
    }
    guard
}

/// `--http-listen`: `off`, `auto` (the gRPC address, port + 1) or an
/// address. The pages are plain HTTP: with TLS on, `auto` keeps them (and
/// the token cookie) on this machine; an explicit address is the
/// operator's choice (e.g. behind a TLS proxy).
fn http_address(value: &str, grpc: SocketAddr, tls: bool) -> anyhow::Result<Option<SocketAddr>> {
    match value.trim() {
        "off" => Ok(None),
        "auto" => match grpc.port().checked_add(1) {
            Some(port) if tls => Ok(Some(SocketAddr::new(
                std::net::Ipv4Addr::LOCALHOST.into(),
                port,
            ))),
            Some(port) => Ok(Some(SocketAddr::new(grpc.ip(), port))),
            None => {
                anyhow::bail!("--http-listen auto: the gRPC port is the last one; give an address")
            }
        },
        a => a.parse().map(Some).map_err(|_| {
            anyhow::anyhow!("--http-listen: `{a}` is not an address (IP:PORT), `auto` or `off`")
        }),
    }
}

fn seconds(name: &str, s: f64) -> anyhow::Result<Duration> {
    if !(s.is_finite() && s > 0.0) {
        anyhow::bail!("--{name} must be a positive number of seconds");
    }
    Ok(Duration::from_secs_f64(s))
}

fn main() -> std::process::ExitCode {
    let cli: Cli = ridgeline_common::cli_config::parse();
    // Still one thread, and SQLite not yet used: its process-wide settings
    // can change (this one cannot fail then).
    ridgeline_coordinator::store::configure_sqlite();
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
            http_listen,
        } => {
            let _logs = init_logs(&cli.log_format);
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
            config.http = http_address(&http_listen, listener.local_addr()?, config.tls.is_some())?;
            config.http_optional = http_listen.trim() == "auto";
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
        Command::Completions { shell } => {
            completions(shell, &mut std::io::stdout());
            Ok(())
        }
        Command::Client(cmd) => {
            let _logs = std::env::var_os("RUST_LOG")
                .is_some()
                .then(|| init_logs(&cli.log_format));
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::{OsStr, OsString};

    fn no_env(_: &OsStr) -> Option<OsString> {
        None
    }

    #[test]
    fn every_flag_and_command_is_documented() {
        Cli::command().debug_assert();
        let missing = ridgeline_common::cli_config::undocumented(&mut Cli::command());
        assert!(missing.is_empty(), "no help text: {missing:?}");
    }

    #[test]
    fn completions_for_bash_zsh_and_fish() {
        use clap_complete::Shell;
        for shell in [Shell::Bash, Shell::Zsh, Shell::Fish] {
            let mut out = Vec::new();
            completions(shell, &mut out);
            let text = String::from_utf8(out).unwrap();
            for word in ["coordinator", "data-dir", "serve"] {
                assert!(text.contains(word), "{shell}: no `{word}` in\n{text}");
            }
        }
        let cli = Cli::try_parse_from(["coordinator", "completions", "fish"]).unwrap();
        assert!(matches!(
            cli.command,
            Command::Completions { shell: Shell::Fish }
        ));
        assert!(Cli::try_parse_from(["coordinator", "completions", "tcsh"]).is_err());
    }

    #[test]
    fn the_http_address_follows_the_grpc_one() {
        let grpc: SocketAddr = "10.0.0.5:50051".parse().unwrap();
        assert_eq!(
            http_address("auto", grpc, false).unwrap(),
            Some("10.0.0.5:50052".parse().unwrap())
        );
        assert_eq!(
            http_address("auto", grpc, true).unwrap(),
            Some("127.0.0.1:50052".parse().unwrap()),
            "plain-HTTP pages stay on this machine when TLS is on"
        );
        assert_eq!(http_address("off", grpc, false).unwrap(), None);
        assert_eq!(
            http_address("0.0.0.0:8080", grpc, true).unwrap(),
            Some("0.0.0.0:8080".parse().unwrap())
        );
        let e = http_address("nowhere", grpc, false)
            .unwrap_err()
            .to_string();
        assert!(e.contains("--http-listen") && e.contains("nowhere"), "{e}");
        assert!(http_address("auto", "10.0.0.5:65535".parse().unwrap(), false).is_err());
    }

    #[test]
    fn settings_from_a_config_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("coordinator.toml");
        std::fs::write(
            &path,
            "coordinator = \"http://head:7000\"\nlog_format = \"json\"\n\n[serve]\n\
             listen = \"127.0.0.1:7001\"\ndata-dir = \"/srv/ridgeline\"\n\
             data-root = [\"/data/a\", \"/data/b\"]\nlease-ttl = 12.5\nquarantine_after = 5\n",
        )
        .unwrap();
        let path = path.to_str().unwrap();
        let cli: Cli = ridgeline_common::cli_config::try_parse_from(
            ["coordinator", "--config", path, "serve", "--lease-ttl", "3"],
            no_env,
        )
        .unwrap();
        assert_eq!(cli.coordinator, "http://head:7000");
        assert_eq!(cli.log_format, "json");
        let Command::Serve {
            listen,
            data_dir,
            data_roots,
            lease_ttl,
            quarantine_after,
            heartbeat,
            ..
        } = cli.command
        else {
            panic!("not serve");
        };
        assert_eq!(listen, "127.0.0.1:7001".parse().unwrap());
        assert_eq!(data_dir, PathBuf::from("/srv/ridgeline"));
        assert_eq!(
            data_roots,
            [PathBuf::from("/data/a"), PathBuf::from("/data/b")]
        );
        assert_eq!(lease_ttl, 3.0, "the flag beats the file");
        assert_eq!(quarantine_after, 5);
        assert_eq!(heartbeat, 3.0, "the default where nothing is set");
        // A client command reads the same file; [serve] does not apply.
        let cli: Cli = ridgeline_common::cli_config::try_parse_from(
            ["coordinator", "list", "--config", path],
            no_env,
        )
        .unwrap();
        assert_eq!(cli.coordinator, "http://head:7000");

        std::fs::write(dir.path().join("bad.toml"), "[serve]\nlisten_on = \"x\"\n").unwrap();
        let bad = dir.path().join("bad.toml");
        let err = ridgeline_common::cli_config::try_parse_from::<Cli, _, _>(
            [
                OsStr::new("coordinator"),
                OsStr::new("--config"),
                bad.as_os_str(),
                OsStr::new("serve"),
            ],
            no_env,
        )
        .err()
        .expect("an unknown key")
        .to_string();
        assert!(
            err.contains("`serve.listen_on`")
                && err.contains("bad.toml")
                && err.contains("lease-ttl"),
            "{err}"
        );
    }
}
