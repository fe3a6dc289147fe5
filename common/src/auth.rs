//! Bearer tokens, the client side: every call to the coordinator carries
//! `authorization: Bearer <token>` when a token is configured. Tokens come
//! from a file (`--token-file`, or `$RIDGELINE_TOKEN_FILE`) or from
//! `$RIDGELINE_TOKEN`, never from a command-line argument, so they stay out
//! of shell history and `ps`.

use std::fmt;
use std::path::Path;

use tonic::metadata::AsciiMetadataValue;
use tonic::service::interceptor::InterceptedService;
use tonic::service::Interceptor;
use tonic::transport::Channel;
use tonic::{Request, Status};

use crate::proto::v1::job_service_client::JobServiceClient;
use crate::proto::v1::worker_service_client::WorkerServiceClient;

/// The token itself.
pub const TOKEN_ENV: &str = "RIDGELINE_TOKEN";
/// A file holding the token (its first non-empty line).
pub const TOKEN_FILE_ENV: &str = "RIDGELINE_TOKEN_FILE";

/// A client of the coordinator's `JobService` that sends the token.
pub type JobClient = JobServiceClient<InterceptedService<Channel, Bearer>>;
/// A client of the coordinator's `WorkerService` that sends the token.
pub type WorkerClient = WorkerServiceClient<InterceptedService<Channel, Bearer>>;

/// The `authorization` header of every call, or nothing.
#[derive(Clone, Default)]
pub struct Bearer(Option<AsciiMetadataValue>);

impl fmt::Debug for Bearer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(_) => f.write_str("Bearer(<redacted>)"),
            None => f.write_str("Bearer(none)"),
        }
    }
}

impl Bearer {
    /// No token: for coordinators that run without authentication.
    pub fn none() -> Self {
        Self(None)
    }

    /// A token: printable ASCII without spaces.
    pub fn new(token: &str) -> Result<Self, String> {
        let token = token.trim();
        if token.is_empty() {
            return Err("the token is empty".into());
        }
        if !token.chars().all(|c| c.is_ascii_graphic()) {
            return Err("a token must be printable ASCII without spaces".into());
        }
        let value = AsciiMetadataValue::try_from(format!("Bearer {token}"))
            .map_err(|e| format!("the token cannot be sent: {e}"))?;
        Ok(Self(Some(value)))
    }

    /// Reads the token from `file` when given, else from the file named by
    /// `$RIDGELINE_TOKEN_FILE`, else from `$RIDGELINE_TOKEN`; none if
    /// neither is set.
    pub fn from_env(file: Option<&Path>) -> Result<Self, String> {
        let file = file
            .map(Path::to_path_buf)
            .or_else(|| std::env::var_os(TOKEN_FILE_ENV).map(Into::into));
        if let Some(path) = file {
            return Self::from_file(&path);
        }
        match std::env::var(TOKEN_ENV) {
            Ok(t) if !t.trim().is_empty() => {
                Self::new(&t).map_err(|e| format!("${TOKEN_ENV}: {e}"))
            }
            _ => Ok(Self::none()),
        }
    }

    /// The first non-empty line of `path`.
    pub fn from_file(path: &Path) -> Result<Self, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read the token file {}: {e}", path.display()))?;
        let line = text.lines().map(str::trim).find(|l| !l.is_empty());
        match line {
            Some(t) => Self::new(t).map_err(|e| format!("{}: {e}", path.display())),
            None => Err(format!("the token file {} is empty", path.display())),
        }
    }

    pub fn is_set(&self) -> bool {
        self.0.is_some()
    }
}

/// What a client or worker presents to the coordinator: its bearer token
/// and the TLS settings of the connection.
#[derive(Clone, Debug, Default)]
pub struct Credentials {
    pub bearer: Bearer,
    pub tls: crate::tls::ClientTls,
}

impl Credentials {
    /// No token, no TLS settings.
    pub fn none() -> Self {
        Self::default()
    }

    pub fn with_bearer(bearer: Bearer) -> Self {
        Self {
            bearer,
            ..Self::default()
        }
    }

    /// The endpoint of the coordinator at `address` (TLS for `https://`).
    pub fn endpoint(&self, address: &str) -> Result<tonic::transport::Endpoint, String> {
        self.tls.endpoint(address)
    }
}

impl Interceptor for Bearer {
    fn call(&mut self, mut req: Request<()>) -> Result<Request<()>, Status> {
        if let Some(v) = &self.0 {
            req.metadata_mut().insert("authorization", v.clone());
        }
        Ok(req)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_sent_as_bearer_and_never_printed() {
        let mut b = Bearer::new(" s3cret-token \n").unwrap();
        let req = b.call(Request::new(())).unwrap();
        assert_eq!(
            req.metadata().get("authorization").unwrap(),
            "Bearer s3cret-token"
        );
        assert!(!format!("{b:?}").contains("s3cret"));
        let req = Bearer::none().call(Request::new(())).unwrap();
        assert!(req.metadata().get("authorization").is_none());
        assert!(Bearer::new("two words").is_err());
        assert!(Bearer::new("").is_err());
    }

    #[test]
    fn a_token_file_gives_its_first_line() {
        let dir = std::env::temp_dir().join(format!("ridgeline-token-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("token");
        std::fs::write(&f, "\n  abc123  \nignored\n").unwrap();
        let b = Bearer::from_file(&f).unwrap();
        assert!(b.is_set());
        let mut b2 = b.clone();
        let req = b2.call(Request::new(())).unwrap();
        assert_eq!(
            req.metadata().get("authorization").unwrap(),
            "Bearer abc123"
        );
        std::fs::write(&f, "\n\n").unwrap();
        assert!(Bearer::from_file(&f).unwrap_err().contains("empty"));
        let e = Bearer::from_file(&dir.join("missing")).unwrap_err();
        assert!(e.contains("missing"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
