//! `worker`: takes training tasks from a Ridgeline coordinator and runs them
//! on this machine's CPU or GPU.
//!
//! A thin shell around [`ridgeline_worker::runner::run`]: it parses the
//! command line, sets up logging, sizes candle's thread pools, and turns
//! SIGTERM / Ctrl-C into a graceful shutdown (a second signal exits at
//! once).
//!
//! Every flag may also be set in a TOML file (`--config FILE` or
//! `RIDGELINE_CONFIG`), keys named as the long flags (see
//! [`ridgeline_common::cli_config`]).

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::{CommandFactory, Parser, ValueEnum};
use ridgeline_common::auth::Bearer;
use ridgeline_common::spec::DataRoots;
use ridgeline_common::tls::ClientTls;
use ridgeline_worker::engine::device::{configure_threads, cores, threads_per_slot};
use ridgeline_worker::runner::{self, DeviceChoice, ModelRegistry, WorkerConfig};
use tokio_util::sync::CancellationToken;
use tracing_subscriber::EnvFilter;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

/// Runs Ridgeline tasks handed out by a coordinator.
#[derive(Debug, Parser)]
#[command(name = "worker", version)]
struct Args {
    /// TOML file of settings, keys named as the long flags
    /// (`slots = 2`, `data-root = ["/data"]`); flags and environment
    /// variables override it.
    #[arg(long, env = "RIDGELINE_CONFIG", value_name = "FILE")]
    config: Option<PathBuf>,
    /// Address of the coordinator.
    #[arg(
        long,
        env = "RIDGELINE_COORDINATOR",
        default_value = "http://127.0.0.1:50051"
    )]
    coordinator: String,
    /// Name shown in the coordinator's worker list [default: this host's name].
    #[arg(long)]
    name: Option<String>,
    /// Device to train on: cpu, cuda:N, or auto (the first GPU if this build
    /// has CUDA and one answers, else the CPU).
    #[arg(long, default_value = "cpu", value_parser = parse_device)]
    device: DeviceChoice,
    /// Tasks run at once (the CPU's cores are shared between them).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=1024))]
    slots: u32,
    /// Threads each slot's task runs on (a thread pool of its own)
    /// [default: the CPU's cores shared out among the slots].
    #[arg(long, env = "RAYON_NUM_THREADS", value_parser = clap::value_parser!(u32).range(1..=1024))]
    threads: Option<u32>,
    /// Tasks held queued beyond --slots, each started the moment a slot
    /// frees (no round trip to the coordinator between tasks). Granted only
    /// from a job with more ready tasks than idle slots; until it starts, a
    /// queued task is taken back for a worker that falls idle with nothing
    /// ready. At most --slots; 0 turns it off.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(0..=1024))]
    lease_ahead: u32,
    /// Where downloaded and produced artifacts are kept
    /// [default: $XDG_CACHE_HOME/ridgeline, else <temp dir>/ridgeline-cache].
    #[arg(long)]
    cache_dir: Option<PathBuf>,
    /// Exit after this many seconds with no task running or leased.
    #[arg(long, value_name = "SECONDS", value_parser = parse_seconds)]
    exit_when_idle: Option<Duration>,
    /// On SIGTERM / Ctrl-C, how long running tasks may still finish before
    /// they are stopped and handed back to the coordinator.
    #[arg(long, value_name = "SECONDS", default_value = "10", value_parser = parse_seconds)]
    shutdown_grace: Duration,
    /// File holding this worker's bearer token, when the coordinator
    /// requires one (or set RIDGELINE_TOKEN).
    #[arg(long, env = "RIDGELINE_TOKEN_FILE")]
    token_file: Option<PathBuf>,
    /// CA certificate (PEM) that signed an `https://` coordinator's
    /// certificate [default: the system's trust store].
    #[arg(long, env = "RIDGELINE_TLS_CA")]
    tls_ca: Option<PathBuf>,
    /// This worker's TLS client certificate (PEM), for a coordinator that
    /// requires one (`serve --tls-client-ca`).
    #[arg(long, env = "RIDGELINE_TLS_CERT", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// The private key (PEM) of --tls-cert.
    #[arg(long, env = "RIDGELINE_TLS_KEY", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Read job data files only from under this directory (repeat for
    /// several; uploaded `artifact:` files are always allowed) [default:
    /// any path this worker can read].
    #[arg(
        long = "data-root",
        value_name = "DIR",
        env = "RIDGELINE_DATA_ROOTS",
        value_delimiter = ':'
    )]
    data_roots: Vec<PathBuf>,
    /// Serve Prometheus metrics (tasks finished, epochs, samples, line-search
    /// points) at http://ADDR/metrics [default: not served].
    #[arg(long, value_name = "ADDR", env = "RIDGELINE_METRICS_LISTEN")]
    metrics_listen: Option<std::net::SocketAddr>,
    /// Log lines as text or as JSON objects with their spans (task lines
    /// carry job_id, task_id, attempt and worker_id; filter with RUST_LOG).
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    /// Print a completion script for this shell and exit, e.g.
    /// `worker --completions bash > /etc/bash_completion.d/worker`.
    #[arg(long, value_name = "SHELL")]
    completions: Option<clap_complete::Shell>,
}

/// Writes the completion script of `shell` for this command line.
fn completions(shell: clap_complete::Shell, out: &mut dyn std::io::Write) {
    clap_complete::generate(shell, &mut Args::command(), "worker", out);
}

fn parse_device(s: &str) -> Result<DeviceChoice, String> {
    s.parse::<DeviceChoice>().map_err(|e| e.to_string())
}

fn parse_seconds(s: &str) -> Result<Duration, String> {
    let v: f64 = s
        .trim()
        .parse()
        .map_err(|_| format!("`{s}` is not a number of seconds"))?;
    Duration::try_from_secs_f64(v)
        .map_err(|_| format!("`{s}` is not a non-negative number of seconds"))
}

impl Args {
    fn config(&self) -> WorkerConfig {
        WorkerConfig {
            coordinator: self.coordinator.clone(),
            name: self.name.clone().unwrap_or_else(hostname),
            device: self.device,
            slots: self.slots as usize,
            threads: self.threads.map(|t| t as usize),
            lease_ahead: self.lease_ahead as usize,
            cache_dir: self
                .cache_dir
                .clone()
                .unwrap_or_else(runner::default_cache_dir),
            exit_when_idle: self.exit_when_idle,
            registry: ModelRegistry::default(),
            shutdown_grace: self.shutdown_grace,
            token: Bearer::none(),
            tls: ClientTls::none(),
            data_roots: DataRoots::any(),
            metrics_listen: self.metrics_listen,
        }
    }
}

/// This machine's name, for the worker list.
fn hostname() -> String {
    std::fs::read_to_string("/etc/hostname")
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok().filter(|s| !s.is_empty()))
        .unwrap_or_else(|| "worker".to_string())
}

fn init_logging(format: LogFormat) {
    let filter = match std::env::var("RUST_LOG") {
        Ok(v) if !v.trim().is_empty() => EnvFilter::try_new(&v).unwrap_or_else(|e| {
            eprintln!("worker: RUST_LOG `{v}` is not a valid filter ({e}); logging at info");
            EnvFilter::new("info")
        }),
        _ => EnvFilter::new("info"),
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    // Fails only if a subscriber is already installed, which a fresh
    // process never has.
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder
            .json()
            .with_current_span(true)
            .with_span_list(true)
            .try_init(),
    };
}

/// Cancels `token` on the first SIGTERM or SIGINT; exits on the second.
fn watch_signals(token: CancellationToken) -> anyhow::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).context("cannot listen for SIGTERM")?;
    let mut int = signal(SignalKind::interrupt()).context("cannot listen for SIGINT")?;
    tokio::spawn(async move {
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM: shutting down"),
            _ = int.recv() => tracing::info!("interrupted: shutting down"),
        }
        token.cancel();
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
        tracing::warn!("second signal: exiting without handing tasks back");
        std::process::exit(130);
    });
    Ok(())
}

fn main() -> ExitCode {
    let args: Args = ridgeline_common::cli_config::parse();
    if let Some(shell) = args.completions {
        completions(shell, &mut std::io::stdout());
        return ExitCode::SUCCESS;
    }
    init_logging(args.log_format);
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // JSON logs are read by machines, which should see the error
            // too; on a terminal one line is enough.
            match args.log_format {
                LogFormat::Json => tracing::error!("{e:#}"),
                LogFormat::Text => eprintln!("worker: {e:#}"),
            }
            ExitCode::FAILURE
        }
    }
}

fn run(args: &Args) -> anyhow::Result<()> {
    let mut config = args.config();
    config.token = Bearer::from_env(args.token_file.as_deref()).map_err(|e| anyhow::anyhow!(e))?;
    config.tls = ClientTls::load(
        args.tls_ca.as_deref(),
        args.tls_cert.as_deref(),
        args.tls_key.as_deref(),
    )
    .map_err(|e| anyhow::anyhow!(e))?;
    config.data_roots = DataRoots::new(&args.data_roots).map_err(|e| anyhow::anyhow!(e))?;
    // Before the runtime starts any thread and before candle runs anything:
    // rayon reads its thread count once, and environment variables must
    // only be set while the process is single-threaded.
    let threads = *config
        .threads
        .get_or_insert_with(|| threads_per_slot(config.slots, cores()));
    configure_threads(threads);
    // The async side only moves messages; the engine runs on blocking
    // threads (one per task), so two runtime threads are plenty.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("worker-rt")
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let token = CancellationToken::new();
    let result = runtime.block_on(async {
        watch_signals(token.clone())?;
        runner::run(config, token)
            .await
            .map_err(anyhow::Error::from)
    });
    // A task stopped at shutdown may still be finishing a step on its
    // blocking thread; its result is no longer wanted.
    runtime.shutdown_timeout(Duration::from_secs(1));
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Args, clap::Error> {
        Args::try_parse_from(std::iter::once("worker").chain(args.iter().copied()))
    }

    #[test]
    fn defaults_and_every_flag() {
        let a = parse(&[]).unwrap();
        if std::env::var_os("RIDGELINE_COORDINATOR").is_none() {
            assert_eq!(a.coordinator, "http://127.0.0.1:50051");
        }
        assert_eq!(a.device, DeviceChoice::Cpu);
        assert_eq!(a.slots, 1);
        assert_eq!(a.exit_when_idle, None);
        assert_eq!(a.shutdown_grace, Duration::from_secs(10));
        assert_eq!(a.log_format, LogFormat::Text);
        let c = a.config();
        assert!(!c.name.is_empty());
        assert_eq!(c.cache_dir, runner::default_cache_dir());

        let a = parse(&[
            "--coordinator",
            "http://10.0.0.1:7000",
            "--name",
            "gpu-box",
            "--device",
            "cuda:1",
            "--slots",
            "4",
            "--cache-dir",
            "/var/cache/rl",
            "--exit-when-idle",
            "2.5",
            "--shutdown-grace",
            "0",
            "--log-format",
            "json",
        ])
        .unwrap();
        let c = a.config();
        assert_eq!(c.coordinator, "http://10.0.0.1:7000");
        assert_eq!(c.name, "gpu-box");
        assert_eq!(c.device, DeviceChoice::Cuda(1));
        assert_eq!(c.slots, 4);
        assert_eq!(c.cache_dir, PathBuf::from("/var/cache/rl"));
        assert_eq!(c.exit_when_idle, Some(Duration::from_millis(2500)));
        assert_eq!(c.shutdown_grace, Duration::ZERO);
        assert_eq!(a.log_format, LogFormat::Json);
        assert_eq!(
            parse(&["--device", "auto"]).unwrap().device,
            DeviceChoice::Auto
        );
    }

    #[test]
    fn bad_values_are_named() {
        let err = parse(&["--device", "gpu"]).unwrap_err().to_string();
        assert!(err.contains("`gpu` is not a device"), "{err}");
        let err = parse(&["--slots", "0"]).unwrap_err().to_string();
        assert!(err.contains("--slots"), "{err}");
        let err = parse(&["--exit-when-idle=-1"]).unwrap_err().to_string();
        assert!(err.contains("non-negative"), "{err}");
        let err = parse(&["--exit-when-idle", "soon"])
            .unwrap_err()
            .to_string();
        assert!(err.contains("`soon` is not a number"), "{err}");
        assert!(parse(&["--log-format", "xml"]).is_err());
        assert!(parse(&["--bogus"]).is_err());
    }

    #[test]
    fn every_flag_is_documented() {
        Args::command().debug_assert();
        let missing = ridgeline_common::cli_config::undocumented(&mut Args::command());
        assert!(missing.is_empty(), "no help text: {missing:?}");
    }

    #[test]
    fn completions_for_bash_zsh_and_fish() {
        use clap_complete::Shell;
        for shell in [Shell::Bash, Shell::Zsh, Shell::Fish] {
            let mut out = Vec::new();
            completions(shell, &mut out);
            let text = String::from_utf8(out).unwrap();
            for word in ["worker", "slots", "data-root"] {
                assert!(text.contains(word), "{shell}: no `{word}` in\n{text}");
            }
        }
        assert_eq!(
            parse(&["--completions", "zsh"]).unwrap().completions,
            Some(Shell::Zsh)
        );
        assert!(parse(&["--completions", "tcsh"]).is_err());
    }

    #[test]
    fn settings_from_a_config_file() {
        use std::ffi::{OsStr, OsString};
        fn no_env(_: &OsStr) -> Option<OsString> {
            None
        }
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("worker.toml");
        std::fs::write(
            &path,
            "coordinator = \"http://head:7000\"\nslots = 3\nname = \"from-file\"\n\
             data_root = [\"/data/a\", \"/data/b\"]\nshutdown-grace = 2.5\nlog-format = \"json\"\n",
        )
        .unwrap();
        let path = path.to_str().unwrap();
        let a: Args = ridgeline_common::cli_config::try_parse_from(
            ["worker", "--config", path, "--slots", "2"],
            no_env,
        )
        .unwrap();
        assert_eq!(a.coordinator, "http://head:7000");
        assert_eq!(a.slots, 2, "the flag beats the file");
        assert_eq!(a.name.as_deref(), Some("from-file"));
        assert_eq!(
            a.data_roots,
            [PathBuf::from("/data/a"), PathBuf::from("/data/b")]
        );
        assert_eq!(a.shutdown_grace, Duration::from_millis(2500));
        assert_eq!(a.log_format, LogFormat::Json);
        assert_eq!(
            a.device,
            DeviceChoice::Cpu,
            "the default where nothing is set"
        );

        for (text, key) in [
            ("slots = 0\n", "`slots`"),
            ("sluts = 2\n", "`sluts`"),
            ("slots = [2]\n", "`slots`"),
        ] {
            std::fs::write(dir.path().join("bad.toml"), text).unwrap();
            let bad = dir.path().join("bad.toml");
            let err = ridgeline_common::cli_config::try_parse_from::<Args, _, _>(
                [
                    OsStr::new("worker"),
                    OsStr::new("--config"),
                    bad.as_os_str(),
                ],
                no_env,
            )
            .expect_err("refused")
            .to_string();
            assert!(
                err.contains(key) && err.contains("bad.toml"),
                "{text}: {err}"
            );
        }
    }
}
