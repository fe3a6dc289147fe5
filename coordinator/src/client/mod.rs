//! The client side of the `coordinator` CLI: everything but `serve`.
//!
//! ```text
//! coordinator submit examples/lr_ramp.toml        # prints the job id alone
//! coordinator watch <job>                         # bars + one line per measurement
//! coordinator status [<job>]                      # one job, or all of them
//! coordinator list
//! coordinator cancel <job>
//! coordinator workers
//! coordinator export <job> [--format csv|json] [--out results.csv]
//! coordinator report <job> [--out DIR]             # report.html, curves.csv, recommended.toml…
//! coordinator gallery [--out DIR]                  # gallery.html of final line searches
//! ```
//!
//! Every command talks to the coordinator's `JobService` at the endpoint
//! given to [`run`] (the binary takes it from `--coordinator` or
//! `RIDGELINE_COORDINATOR`). Rendering is in [`render`] (text and CSV) and
//! [`json`] (the JSON export), pure functions with their own tests; only
//! [`watch`] draws progress bars.

pub mod json;
pub mod render;
#[cfg(test)]
mod server_tests;
pub mod watch;

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, Context as _};
use clap::{Subcommand, ValueEnum};
use ridgeline_common::auth::JobClient;
pub use ridgeline_common::auth::{Bearer, Credentials};
use ridgeline_common::proto::v1 as pb;
use ridgeline_common::proto::v1::job_service_client::JobServiceClient;
use ridgeline_common::proto::v1::worker_service_client::WorkerServiceClient;
pub use ridgeline_common::tls::ClientTls;
use tonic::{Code, Status};

/// The hint shown whenever the coordinator cannot be reached.
const ADDRESS_HINT: &str =
    "is it running? Give its address with --coordinator or the RIDGELINE_COORDINATOR environment variable";

/// Largest message accepted from the coordinator (results of big grids).
const MAX_MESSAGE_BYTES: usize = 256 << 20;

/// The format of a job file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum JobFileFormat {
    Toml,
    Json,
}

impl JobFileFormat {
    /// The format a file's name suggests: JSON for `*.json`, TOML otherwise.
    pub fn from_path(path: &Path) -> Self {
        match path.extension().and_then(|e| e.to_str()) {
            Some(e) if e.eq_ignore_ascii_case("json") => JobFileFormat::Json,
            _ => JobFileFormat::Toml,
        }
    }

    fn to_wire(self) -> pb::JobFormat {
        match self {
            JobFileFormat::Toml => pb::JobFormat::Toml,
            JobFileFormat::Json => pb::JobFormat::Json,
        }
    }
}

/// The format of `export`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, ValueEnum)]
pub enum ExportFormat {
    /// One row per measurement, then one per aggregate point (see
    /// [`render::results_to_csv`]).
    #[default]
    Csv,
    /// The whole of the job's results (see [`json::ResultsJson`]).
    Json,
}

/// The client commands of the `coordinator` binary.
#[derive(Debug, Clone, PartialEq, Eq, Subcommand)]
pub enum ClientCommand {
    /// Submit a job file; prints the new job's id alone on stdout.
    Submit {
        /// The job file (see examples/ for every kind of job).
        file: PathBuf,
        /// How the file is written [default: json for *.json, toml otherwise].
        #[arg(long, value_enum)]
        format: Option<JobFileFormat>,
    },
    /// Show one job: state, progress per stage, epochs trained, tasks.
    /// Without a job: a table of all jobs, as `list`.
    Status {
        /// The job's id.
        job: Option<String>,
    },
    /// Follow a job until it ends: a progress bar per stage and a line per
    /// measurement. Exits non-zero if the job fails or is cancelled.
    Watch {
        /// The job's id.
        job: String,
    },
    /// A table of all jobs.
    List,
    /// Cancel a job: its running tasks are stopped, pending ones dropped.
    Cancel {
        /// The job's id.
        job: String,
    },
    /// A table of the workers the coordinator knows.
    Workers,
    /// Write a job's curves and their aggregates over seeds.
    Export {
        /// The job's id.
        job: String,
        /// `csv`: one row per measurement and per aggregate point; `json`:
        /// everything, including how each run ended.
        #[arg(long, value_enum, default_value_t = ExportFormat::Csv)]
        format: ExportFormat,
        /// Write to this file instead of stdout.
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Write a job's report into a directory: report.html (figures per
    /// step, decisions, red flags), curves.csv, results.json,
    /// decisions.json, and recommended.toml / recommended.json once the
    /// procedure has recommended something. Prints the files written.
    Report {
        /// The job's id.
        job: String,
        /// The directory (created if missing) [default: report-<job>].
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Write a gallery of the final line searches of all succeeded
    /// `procedure` and `line_search` jobs: DIR/gallery.html, linking to
    /// each job's report in DIR/<job>/.
    Gallery {
        /// The directory (created if missing).
        #[arg(long, default_value = "gallery")]
        out: PathBuf,
    },
    /// Upload a data file (IDX, NPY, NPZ, CSV) to the coordinator, for
    /// machines that cannot read it from a shared path; prints the name to
    /// use for it in a job file: `artifact:<sha256>`.
    Upload {
        /// The file to upload.
        file: PathBuf,
    },
}

/// Runs one client command against the coordinator at `endpoint`
/// (`http://host:port` or `https://host:port`; a bare `host:port` means
/// https when TLS settings are given, plain HTTP otherwise).
///
/// Errors are one readable message each: the coordinator being unreachable
/// (naming the URL and how to set it), a refused job (the coordinator's
/// message names the offending field), an unknown job (`no job <id>`), a
/// job that failed or was cancelled while being watched. Every call
/// carries the bearer token of `creds` (see [`ridgeline_common::auth`]).
pub async fn run(cmd: ClientCommand, endpoint: &str, creds: &Credentials) -> anyhow::Result<()> {
    let url = creds.tls.url(endpoint);
    match cmd {
        ClientCommand::Submit { file, format } => {
            // Read before connecting: a wrong path should not wait on the network.
            let text = std::fs::read_to_string(&file)
                .with_context(|| format!("cannot read {}", file.display()))?;
            let format = format.unwrap_or_else(|| JobFileFormat::from_path(&file));
            let mut client = connect(&url, creds).await?;
            let resp = client
                .submit_job(pb::SubmitJobRequest {
                    text,
                    format: format.to_wire() as i32,
                })
                .await
                .map_err(|s| match s.code() {
                    Code::InvalidArgument => {
                        anyhow!("{}: {}", file.display(), describe_status(&s, &url, None))
                    }
                    _ => rpc_error(&s, &url, None),
                })?;
            emit(&format!("{}\n", resp.into_inner().job_id))
        }
        ClientCommand::Status { job: Some(job) } => {
            let mut client = connect(&url, creds).await?;
            let s = client
                .get_job(pb::GetJobRequest {
                    job_id: job.clone(),
                })
                .await
                .map_err(|s| rpc_error(&s, &url, Some(&job)))?;
            emit(&render::format_status(s.get_ref()))
        }
        ClientCommand::Status { job: None } | ClientCommand::List => {
            let mut client = connect(&url, creds).await?;
            let r = client
                .list_jobs(pb::ListJobsRequest {})
                .await
                .map_err(|s| rpc_error(&s, &url, None))?;
            emit(&render::format_jobs(&r.get_ref().jobs))
        }
        ClientCommand::Watch { job } => {
            let mut client = connect(&url, creds).await?;
            watch::watch(&mut client, &url, &job).await
        }
        ClientCommand::Cancel { job } => {
            let mut client = connect(&url, creds).await?;
            let r = client
                .cancel_job(pb::CancelJobRequest {
                    job_id: job.clone(),
                })
                .await
                .map_err(|s| rpc_error(&s, &url, Some(&job)))?;
            emit(&format!(
                "job {job}: {}\n",
                render::job_state_word(r.get_ref().state)
            ))
        }
        ClientCommand::Workers => {
            let mut client = connect(&url, creds).await?;
            let r = client
                .list_workers(pb::ListWorkersRequest {})
                .await
                .map_err(|s| rpc_error(&s, &url, None))?;
            emit(&render::format_workers(&r.get_ref().workers, now_ms()))
        }
        ClientCommand::Export { job, format, out } => {
            let mut client = connect(&url, creds).await?;
            let r = client
                .get_results(pb::GetResultsRequest {
                    job_id: job.clone(),
                })
                .await
                .map_err(|s| rpc_error(&s, &url, Some(&job)))?
                .into_inner();
            let text = match format {
                ExportFormat::Csv => render::results_to_csv(&r),
                ExportFormat::Json => {
                    json::results_to_json(&r).context("cannot write the results as JSON")?
                }
            };
            match out {
                None => emit(&text),
                Some(path) => {
                    std::fs::write(&path, text)
                        .with_context(|| format!("cannot write {}", path.display()))?;
                    eprintln!(
                        "wrote {} ({} curves, {} aggregates)",
                        path.display(),
                        r.curves.len(),
                        r.aggregates.len()
                    );
                    Ok(())
                }
            }
        }
        ClientCommand::Report { job, out } => {
            let dir = out.unwrap_or_else(|| PathBuf::from(format!("report-{job}")));
            let mut client = connect(&url, creds).await?;
            let (status, results) = fetch_job(&mut client, &url, &job).await?;
            let paths = crate::report::write_report(&dir, &status, &results)
                .with_context(|| format!("cannot write the report into {}", dir.display()))?;
            let mut text = String::new();
            for p in paths {
                text.push_str(&format!("{}\n", p.display()));
            }
            emit(&text)
        }
        ClientCommand::Gallery { out } => {
            let mut client = connect(&url, creds).await?;
            let path = gallery(&mut client, &url, &out).await?;
            emit(&format!("{}\n", path.display()))
        }
        ClientCommand::Upload { file } => {
            let bytes =
                std::fs::read(&file).with_context(|| format!("cannot read {}", file.display()))?;
            let hash = upload(&url, creds, bytes).await?;
            emit(&format!(
                "{}{hash}\n",
                ridgeline_common::spec::ARTIFACT_PREFIX
            ))
        }
    }
}

/// A job's status (GetJob) and results (GetResults).
async fn fetch_job(
    client: &mut JobClient,
    url: &str,
    job: &str,
) -> anyhow::Result<(pb::JobStatus, pb::JobResults)> {
    let status = client
        .get_job(pb::GetJobRequest {
            job_id: job.to_string(),
        })
        .await
        .map_err(|s| rpc_error(&s, url, Some(job)))?
        .into_inner();
    let results = client
        .get_results(pb::GetResultsRequest {
            job_id: job.to_string(),
        })
        .await
        .map_err(|s| rpc_error(&s, url, Some(job)))?
        .into_inner();
    Ok((status, results))
}

/// Whether a job belongs in the gallery: a `procedure` or `line_search`
/// job that succeeded.
pub fn in_gallery(job: &pb::JobStatus) -> bool {
    job.state == pb::JobState::Succeeded as i32
        && matches!(job.kind.as_str(), "procedure" | "line_search")
}

/// The `gallery` command: a report per job with a final line search in
/// `out/<job>/`, and `out/gallery.html`. A job whose results cannot be
/// fetched, or whose id cannot name a directory, is skipped with a
/// warning on stderr; returns the gallery's path.
async fn gallery(client: &mut JobClient, url: &str, out: &Path) -> anyhow::Result<PathBuf> {
    let jobs = client
        .list_jobs(pb::ListJobsRequest {})
        .await
        .map_err(|s| rpc_error(&s, url, None))?
        .into_inner()
        .jobs;
    let mut entries = vec![];
    for status in jobs.iter().filter(|j| in_gallery(j)) {
        let id = &status.job_id;
        if !crate::report::gallery::safe_job_dir(id) {
            eprintln!("warning: skipping a job with the unusable id {id:?}");
            continue;
        }
        let results = match client
            .get_results(pb::GetResultsRequest { job_id: id.clone() })
            .await
        {
            Ok(r) => r.into_inner(),
            Err(s) => {
                eprintln!(
                    "warning: skipping job {id}: {}",
                    describe_status(&s, url, Some(id))
                );
                continue;
            }
        };
        let Some(entry) = crate::report::gallery_entry(status, &results) else {
            continue;
        };
        let dir = out.join(id);
        crate::report::write_report(&dir, status, &results)
            .with_context(|| format!("cannot write the report into {}", dir.display()))?;
        entries.push(entry);
    }
    let path = crate::report::write_gallery(out, &entries)
        .with_context(|| format!("cannot write the gallery into {}", out.display()))?;
    eprintln!(
        "gallery of {} job{} ({} listed)",
        entries.len(),
        if entries.len() == 1 { "" } else { "s" },
        jobs.len()
    );
    Ok(path)
}

/// Uploads `bytes` as an artifact in 1 MiB chunks; returns its hash.
pub async fn upload(url: &str, creds: &Credentials, bytes: Vec<u8>) -> anyhow::Result<String> {
    use sha2::Digest;
    const CHUNK: usize = 1 << 20;
    let hash = hex::encode(sha2::Sha256::digest(&bytes));
    let size = bytes.len() as u64;
    let chunks: Vec<pb::ArtifactChunk> = if bytes.is_empty() {
        vec![pb::ArtifactChunk {
            hash: hash.clone(),
            size,
            data: vec![],
        }]
    } else {
        bytes
            .chunks(CHUNK)
            .enumerate()
            .map(|(i, c)| pb::ArtifactChunk {
                hash: if i == 0 { hash.clone() } else { String::new() },
                size: if i == 0 { size } else { 0 },
                data: c.to_vec(),
            })
            .collect()
    };
    let channel = creds
        .endpoint(url)
        .map_err(|e| anyhow!("{e}; {ADDRESS_HINT}"))?
        .connect_timeout(Duration::from_secs(5))
        .connect()
        .await
        .with_context(|| format!("cannot reach the coordinator at {url}"))?;
    let mut client = WorkerServiceClient::with_interceptor(channel, creds.bearer.clone());
    client
        .upload_artifact(tokio_stream::iter(chunks))
        .await
        .map_err(|s| anyhow::anyhow!("upload refused: {}", s.message()))?;
    Ok(hash)
}

/// Connects to the coordinator's `JobService` at `url`, failing within a few
/// seconds with a message naming the URL when it cannot be reached.
pub async fn connect(url: &str, creds: &Credentials) -> anyhow::Result<JobClient> {
    let endpoint = creds
        .endpoint(url)
        .map_err(|e| anyhow!("{e}; {ADDRESS_HINT}"))?
        .connect_timeout(Duration::from_secs(5));
    let channel = endpoint.connect().await.map_err(|e| {
        anyhow!(
            "cannot reach the coordinator at {url} ({}); {ADDRESS_HINT}",
            error_chain(&e)
        )
    })?;
    let client = JobServiceClient::with_interceptor(channel, creds.bearer.clone());
    Ok(client.max_decoding_message_size(MAX_MESSAGE_BYTES))
}

/// An error and its sources, joined with `: ` (tonic's transport errors say
/// little on their own: "transport error").
fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut parts = vec![e.to_string()];
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if parts.last() != Some(&text) {
            parts.push(text);
        }
        source = s.source();
    }
    parts.join(": ")
}

/// A failed call as an error (see [`describe_status`]).
pub(crate) fn rpc_error(s: &Status, url: &str, job: Option<&str>) -> anyhow::Error {
    anyhow!(describe_status(s, url, job))
}

/// A gRPC status as one message for people. `INVALID_ARGUMENT` and
/// `FAILED_PRECONDITION` give the coordinator's message (which names the
/// field); `NOT_FOUND` for a job call gives `no job <id>`; transport
/// problems name the URL.
pub fn describe_status(s: &Status, url: &str, job: Option<&str>) -> String {
    let msg = s.message().trim();
    let or = |fallback: &str| {
        if msg.is_empty() {
            fallback.to_string()
        } else {
            msg.to_string()
        }
    };
    match s.code() {
        Code::InvalidArgument => or("invalid argument"),
        Code::FailedPrecondition => or("refused by the coordinator"),
        Code::NotFound => match job {
            Some(id) => format!("no job {id}"),
            None => or("not found"),
        },
        Code::Unavailable => format!("the coordinator at {url} is unavailable ({}); {ADDRESS_HINT}", or("no answer")),
        Code::DeadlineExceeded => format!("the coordinator at {url} did not answer in time"),
        Code::Unimplemented => format!(
            "the coordinator at {url} does not offer this call ({}); is it the same version as this client?",
            or("unimplemented")
        ),
        Code::Cancelled => format!("the call was cancelled ({})", or("no reason given")),
        code => format!("the coordinator answered {code:?}: {}", or("no message")),
    }
}

/// Writes `text` to stdout; a closed pipe (`… | head`) is not an error.
fn emit(text: &str) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
            Err(e).context("cannot write to stdout")
        }
        _ => Ok(()),
    }
}

/// Milliseconds since the Unix epoch (0 if the clock is before it).
fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::{CommandFactory, Parser};
    use ridgeline_common::job::JobFormat;
    use ridgeline_common::JobSpec;

    /// The commands as the binary mounts them.
    #[derive(Debug, Parser)]
    struct Cli {
        #[command(subcommand)]
        cmd: ClientCommand,
    }

    fn parse(args: &[&str]) -> ClientCommand {
        let mut argv = vec!["coordinator"];
        argv.extend_from_slice(args);
        match Cli::try_parse_from(argv) {
            Ok(c) => c.cmd,
            Err(e) => panic!("{args:?}: {e}"),
        }
    }

    #[test]
    fn command_line() {
        Cli::command().debug_assert();
        assert_eq!(
            parse(&["submit", "job.json"]),
            ClientCommand::Submit {
                file: "job.json".into(),
                format: None
            }
        );
        assert_eq!(
            parse(&["submit", "job.txt", "--format", "json"]),
            ClientCommand::Submit {
                file: "job.txt".into(),
                format: Some(JobFileFormat::Json)
            }
        );
        assert_eq!(parse(&["status"]), ClientCommand::Status { job: None });
        assert_eq!(
            parse(&["status", "j1"]),
            ClientCommand::Status {
                job: Some("j1".into())
            }
        );
        assert_eq!(
            parse(&["watch", "j1"]),
            ClientCommand::Watch { job: "j1".into() }
        );
        assert_eq!(parse(&["list"]), ClientCommand::List);
        assert_eq!(
            parse(&["cancel", "j1"]),
            ClientCommand::Cancel { job: "j1".into() }
        );
        assert_eq!(parse(&["workers"]), ClientCommand::Workers);
        assert_eq!(
            parse(&["export", "j1"]),
            ClientCommand::Export {
                job: "j1".into(),
                format: ExportFormat::Csv,
                out: None
            }
        );
        assert_eq!(
            parse(&["export", "j1", "--format", "json", "--out", "r.json"]),
            ClientCommand::Export {
                job: "j1".into(),
                format: ExportFormat::Json,
                out: Some("r.json".into())
            }
        );
        assert!(Cli::try_parse_from(["coordinator", "export", "j1", "--format", "xml"]).is_err());
        assert_eq!(
            parse(&["report", "j1", "--out", "r"]),
            ClientCommand::Report {
                job: "j1".into(),
                out: Some("r".into())
            }
        );
        assert_eq!(
            parse(&["report", "j1"]),
            ClientCommand::Report {
                job: "j1".into(),
                out: None
            }
        );
        assert!(Cli::try_parse_from(["coordinator", "report"]).is_err());
        assert_eq!(
            parse(&["gallery", "--out", "g"]),
            ClientCommand::Gallery { out: "g".into() }
        );
        assert_eq!(
            parse(&["gallery"]),
            ClientCommand::Gallery {
                out: "gallery".into()
            }
        );
        assert!(Cli::try_parse_from(["coordinator", "watch"]).is_err());
    }

    #[test]
    fn formats_from_file_names() {
        assert_eq!(
            JobFileFormat::from_path(Path::new("a/job.json")),
            JobFileFormat::Json
        );
        assert_eq!(
            JobFileFormat::from_path(Path::new("JOB.JSON")),
            JobFileFormat::Json
        );
        assert_eq!(
            JobFileFormat::from_path(Path::new("job.toml")),
            JobFileFormat::Toml
        );
        assert_eq!(
            JobFileFormat::from_path(Path::new("job")),
            JobFileFormat::Toml
        );
    }

    #[test]
    fn endpoints() {
        let none = Credentials::none();
        assert_eq!(none.tls.url("127.0.0.1:7070"), "http://127.0.0.1:7070");
        assert_eq!(none.tls.url(" http://h:1 "), "http://h:1");
        assert_eq!(none.tls.url("https://h:1"), "https://h:1");
    }

    #[test]
    fn statuses_become_messages() {
        let url = "http://h:1";
        let s = Status::invalid_argument("`lr_ramp.start`: must be a finite number > 0, got -1");
        assert_eq!(
            describe_status(&s, url, None),
            "`lr_ramp.start`: must be a finite number > 0, got -1"
        );
        let s = Status::not_found("job 123 not found");
        assert_eq!(describe_status(&s, url, Some("123")), "no job 123");
        assert_eq!(describe_status(&s, url, None), "job 123 not found");
        let s = Status::unavailable("tcp connect error");
        let m = describe_status(&s, url, None);
        assert!(
            m.contains("http://h:1")
                && m.contains("--coordinator")
                && m.contains("RIDGELINE_COORDINATOR"),
            "{m}"
        );
        let m = describe_status(&Status::internal("disk full"), url, None);
        assert_eq!(m, "the coordinator answered Internal: disk full");
        let m = describe_status(&Status::failed_precondition(""), url, None);
        assert_eq!(m, "refused by the coordinator");
    }

    #[tokio::test]
    async fn an_unreachable_coordinator_is_named() {
        // A port nobody listens on: bind one, note it, and close it.
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
            l.local_addr().expect("addr").port()
        };
        let url = format!("http://127.0.0.1:{port}");
        let e = run(
            ClientCommand::List,
            &format!("127.0.0.1:{port}"),
            &Credentials::none(),
        )
        .await
        .unwrap_err()
        .to_string();
        assert!(
            e.contains(&format!("cannot reach the coordinator at {url}")),
            "{e}"
        );
        assert!(
            e.contains("--coordinator") && e.contains("RIDGELINE_COORDINATOR"),
            "{e}"
        );
        let e = run(
            ClientCommand::List,
            "http://exa mple:1",
            &Credentials::none(),
        )
        .await
        .unwrap_err()
        .to_string();
        assert!(e.contains("not a valid coordinator address"), "{e}");
        // A missing job file is reported before connecting.
        let e = run(
            ClientCommand::Submit {
                file: "/nonexistent/job.toml".into(),
                format: None,
            },
            &url,
            &Credentials::none(),
        )
        .await
        .unwrap_err()
        .to_string();
        assert!(e.contains("cannot read /nonexistent/job.toml"), "{e}");
    }

    /// Every example job file parses and validates, so they never rot.
    #[test]
    fn examples_parse() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples");
        let mut seen = vec![];
        let entries = std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
        for entry in entries {
            let path = entry.expect("directory entry").path();
            let format = match path.extension().and_then(|e| e.to_str()) {
                Some("toml") => JobFormat::Toml,
                Some("json") => JobFormat::Json,
                _ => continue,
            };
            let text = std::fs::read_to_string(&path)
                .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            let spec =
                JobSpec::parse(&text, format).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            let stem = path
                .file_stem()
                .and_then(|s| s.to_str())
                .unwrap_or_default()
                .to_string();
            // Each example is named after its kind.
            assert!(
                stem.starts_with(spec.kind.as_str()),
                "{}: a `{}` job",
                path.display(),
                spec.kind.as_str()
            );
            assert!(
                !spec.name.is_empty(),
                "{}: give the example a name",
                path.display()
            );
            seen.push(stem);
        }
        for kind in [
            "line_search",
            "lr_ramp",
            "momentum_ramp",
            "train",
            "compare",
            "grid",
        ] {
            assert!(
                seen.iter().any(|s| s == kind),
                "{}: no {kind}.toml",
                dir.display()
            );
        }
    }
}
