//! The gRPC plumbing every part of the runtime shares: the channel to the
//! coordinator, calls with a deadline, what a refusal means, and backoff.

use std::future::Future;
use std::time::Duration;

use ridgeline_common::auth::Bearer;
use ridgeline_common::proto::v1::worker_service_client::WorkerServiceClient;
use ridgeline_common::tls::ClientTls;
use tonic::{Code, Response, Status};

use super::RunnerError;

/// The client every call of this worker goes through (cheap to clone: all
/// clones share one HTTP/2 connection, re-established on demand).
pub(crate) type Client = ridgeline_common::auth::WorkerClient;

/// Largest message either side may send. Artifacts travel in 1 MiB chunks
/// and reports in batches of at most [`super::reporter::MAX_BATCH`] items,
/// so this leaves a wide margin without letting a broken peer make us
/// allocate without bound.
pub(crate) const MAX_MESSAGE_BYTES: usize = 16 << 20;

/// Deadline of one unary call. tonic enforces no deadline on its own, and a
/// coordinator that is stopped (SIGSTOP, a hung host) keeps the TCP
/// connection open without ever answering: without this a heartbeat could
/// wait forever.
pub(crate) const RPC_TIMEOUT: Duration = Duration::from_secs(10);

/// Builds a lazily connecting client: nothing is dialled until the first
/// call, and a broken connection is re-dialled by the next call, so the
/// worker can start before the coordinator and outlive its restarts.
pub(crate) fn connect(url: &str, token: &Bearer, tls: &ClientTls) -> Result<Client, RunnerError> {
    let endpoint = tls
        .endpoint(url)
        .map_err(|message| RunnerError::Coordinator {
            url: url.trim().to_string(),
            message,
        })?;
    let channel = endpoint
        .connect_timeout(Duration::from_secs(5))
        .tcp_nodelay(true)
        // HTTP/2 pings notice a coordinator that stopped answering during a
        // long upload or download, where a per-call deadline cannot apply.
        .http2_keep_alive_interval(Duration::from_secs(10))
        .keep_alive_timeout(Duration::from_secs(20))
        .keep_alive_while_idle(true)
        .connect_lazy();
    Ok(
        WorkerServiceClient::with_interceptor(channel, token.clone())
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES),
    )
}

/// Awaits a unary call for at most `limit`; no answer in time reads as
/// `DEADLINE_EXCEEDED` (transient, like every transport failure).
pub(crate) async fn call<T>(
    limit: Duration,
    fut: impl Future<Output = Result<Response<T>, Status>>,
) -> Result<T, Status> {
    match tokio::time::timeout(limit, fut).await {
        Ok(r) => r.map(Response::into_inner),
        Err(_) => Err(Status::deadline_exceeded(format!(
            "the coordinator did not answer within {limit:?}"
        ))),
    }
}

/// What a refused call means for the worker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// The coordinator is unreachable, restarting or overloaded: try the
    /// same call again later.
    Transient,
    /// `NOT_FOUND`: the coordinator does not know what we named (this
    /// worker after it lost its store, or a task).
    NotFound,
    /// `FAILED_PRECONDITION`: the attempt is no longer ours (stale attempt,
    /// lease lost) or, at registration, the protocol versions differ.
    Precondition,
    /// Anything else: retrying the same request cannot help.
    Permanent,
}

/// Classifies a refusal. Transport failures surface in tonic as
/// `UNAVAILABLE` (refused or reset connection), `UNKNOWN` or `INTERNAL`
/// (broken HTTP/2 stream) and `CANCELLED`; all of them are worth retrying.
/// So is `RESOURCE_EXHAUSTED`: the coordinator's disk is full or it serves
/// as many streams as it will; nothing was stored, and a resend once space
/// is freed is stored once.
pub(crate) fn classify(status: &Status) -> Refusal {
    match status.code() {
        Code::Unavailable
        | Code::Unknown
        | Code::DeadlineExceeded
        | Code::Cancelled
        | Code::Aborted
        | Code::ResourceExhausted
        | Code::Internal => Refusal::Transient,
        Code::NotFound => Refusal::NotFound,
        Code::FailedPrecondition => Refusal::Precondition,
        _ => Refusal::Permanent,
    }
}

/// A status as one log-friendly line (tonic's `Display` includes metadata
/// and source chains that make log lines unreadable).
pub(crate) fn describe(status: &Status) -> String {
    if status.message().is_empty() {
        format!("{:?}", status.code())
    } else {
        format!("{:?}: {}", status.code(), status.message())
    }
}

/// Exponential backoff for retrying a coordinator that went away: 100 ms,
/// doubling, capped at 5 s, so a restart is noticed within seconds without
/// hammering a coordinator that is down for longer.
#[derive(Debug, Clone)]
pub(crate) struct Backoff {
    next: Duration,
}

impl Backoff {
    pub(crate) const FIRST: Duration = Duration::from_millis(100);
    pub(crate) const CAP: Duration = Duration::from_secs(5);

    pub(crate) fn new() -> Self {
        Self { next: Self::FIRST }
    }

    /// The delay before the next try (and doubles the one after).
    pub(crate) fn next_delay(&mut self) -> Duration {
        let d = self.next;
        self.next = (self.next * 2).min(Self::CAP);
        d
    }

    pub(crate) fn reset(&mut self) {
        self.next = Self::FIRST;
    }
}

impl Default for Backoff {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_to_its_cap_and_resets() {
        let mut b = Backoff::new();
        let ms: Vec<u128> = (0..9).map(|_| b.next_delay().as_millis()).collect();
        assert_eq!(ms, [100, 200, 400, 800, 1600, 3200, 5000, 5000, 5000]);
        b.reset();
        assert_eq!(b.next_delay(), Backoff::FIRST);
    }

    #[test]
    fn refusals_are_classified_by_code() {
        assert_eq!(classify(&Status::unavailable("down")), Refusal::Transient);
        assert_eq!(classify(&Status::unknown("h2")), Refusal::Transient);
        assert_eq!(
            classify(&Status::deadline_exceeded("slow")),
            Refusal::Transient
        );
        assert_eq!(classify(&Status::not_found("who?")), Refusal::NotFound);
        assert_eq!(
            classify(&Status::failed_precondition("stale")),
            Refusal::Precondition
        );
        assert_eq!(
            classify(&Status::invalid_argument("bad")),
            Refusal::Permanent
        );
        assert_eq!(
            classify(&Status::out_of_range("too big")),
            Refusal::Permanent
        );
        // The coordinator's disk is full (or it is at its stream limit):
        // resend later.
        assert_eq!(
            classify(&Status::resource_exhausted("disk full")),
            Refusal::Transient
        );
    }

    #[test]
    fn addresses_get_a_scheme_and_https_needs_tls_settings_only_for_trust() {
        // connect_lazy needs a runtime to spawn its background task.
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let none = ClientTls::none();
        rt.block_on(async {
            assert!(connect("127.0.0.1:1", &Bearer::none(), &none).is_ok());
            assert!(connect("http://localhost:50051", &Bearer::none(), &none).is_ok());
            // https:// with the system's roots (a lab CA comes with --tls-ca).
            assert!(connect("https://example.invalid", &Bearer::none(), &none).is_ok());
            let err = connect("ftp://example.invalid", &Bearer::none(), &none)
                .unwrap_err()
                .to_string();
            assert!(err.contains("https://HOST:PORT"), "{err}");
            let err = connect("http://bad host/", &Bearer::none(), &none)
                .unwrap_err()
                .to_string();
            assert!(err.contains("bad host"), "{err}");
        });
    }

    #[test]
    fn a_call_without_answer_times_out_as_transient() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let status = rt
            .block_on(call(
                Duration::from_millis(10),
                std::future::pending::<Result<Response<()>, Status>>(),
            ))
            .unwrap_err();
        assert_eq!(classify(&status), Refusal::Transient);
        assert!(describe(&status).contains("did not answer"));
    }
}
