//! Bearer tokens, the coordinator's side: who may call what.
//!
//! | role | may call |
//! |---|---|
//! | client | every `JobService` method; `UploadArtifact`/`DownloadArtifact` (data files) |
//! | worker | `Register`, `Lease`, `Report`, `Complete`, `Fail`; `UploadArtifact`/`DownloadArtifact` |
//!
//! With tokens configured, a call without a valid token is
//! `UNAUTHENTICATED`, and one whose token has the wrong role
//! `PERMISSION_DENIED`. Without any token configured the coordinator is
//! open (a lab's private network); it says so in its log at start.
//!
//! The tokens file (`serve --tokens FILE`) is TOML:
//!
//! ```toml
//! client = ["a-long-random-string", "another-one"]
//! worker = ["a-different-long-random-string"]
//! ```
//!
//! Tokens are kept only as SHA-256 digests in memory.
//!
//! With mutual TLS (`serve --tls-client-ca`), the worker-only methods
//! (`Register`, `Lease`, `Report`, `Complete`, `Fail`) also need a client
//! certificate signed by that CA; a certificate, once presented, has been
//! verified by the TLS handshake. Clients need none.

use std::collections::HashMap;
use std::path::Path;

use serde::Deserialize;
use sha2::{Digest, Sha256};
use tonic::{Request, Status};

use crate::error::{CoordError, Result};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Client,
    Worker,
}

impl Role {
    fn name(self) -> &'static str {
        match self {
            Role::Client => "client",
            Role::Worker => "worker",
        }
    }
}

pub const CLIENT: &[Role] = &[Role::Client];
pub const WORKER: &[Role] = &[Role::Worker];
pub const ANY: &[Role] = &[Role::Client, Role::Worker];

/// The tokens the coordinator accepts.
#[derive(Debug, Clone, Default)]
pub struct Tokens {
    by_digest: HashMap<[u8; 32], Role>,
    /// Worker-only methods need a verified TLS client certificate.
    worker_certs: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TokensFile {
    #[serde(default)]
    client: Vec<String>,
    #[serde(default)]
    worker: Vec<String>,
}

/// Fewer characters than this is too easy to guess.
const MIN_TOKEN_LEN: usize = 16;

fn digest(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

impl Tokens {
    /// No authentication.
    pub fn open() -> Self {
        Self::default()
    }

    pub fn is_open(&self) -> bool {
        self.by_digest.is_empty()
    }

    /// From now on the worker-only methods also need a TLS client
    /// certificate (the server verifies it against its client CA).
    pub fn require_worker_certs(&mut self) {
        self.worker_certs = true;
    }

    /// Reads a tokens file (see the module docs).
    pub fn load(path: &Path) -> Result<Self> {
        let bad = |m: String| CoordError::InvalidArgument(format!("{}: {m}", path.display()));
        let text = std::fs::read_to_string(path).map_err(|e| bad(format!("cannot read: {e}")))?;
        let file: TokensFile = toml::from_str(&text).map_err(|e| bad(e.message().to_string()))?;
        let mut t = Tokens::default();
        for (role, list) in [(Role::Client, &file.client), (Role::Worker, &file.worker)] {
            for (i, tok) in list.iter().enumerate() {
                let field = format!("{}[{i}]", role.name());
                if tok.len() < MIN_TOKEN_LEN || !tok.chars().all(|c| c.is_ascii_graphic()) {
                    return Err(bad(format!(
                        "`{field}`: a token must be at least {MIN_TOKEN_LEN} printable ASCII characters without spaces"
                    )));
                }
                if let Some(other) = t.by_digest.insert(digest(tok), role) {
                    if other != role {
                        return Err(bad(format!(
                            "`{field}`: the same token is also a {} token; give each role its own",
                            other.name()
                        )));
                    }
                }
            }
        }
        if t.is_open() {
            return Err(bad(
                "no tokens: list at least one `client` or `worker` token".into(),
            ));
        }
        Ok(t)
    }

    /// The role of `token`, if it is one of ours.
    pub fn role_of(&self, token: &str) -> Option<Role> {
        self.by_digest.get(&digest(token.trim())).copied()
    }

    /// Accepts the call if it carries a token of one of the `allowed`
    /// roles (or if no tokens are configured).
    pub fn check<T>(&self, req: &Request<T>, allowed: &[Role], method: &str) -> Result<(), Status> {
        if self.worker_certs && allowed == WORKER && !has_client_cert(req) {
            return Err(Status::unauthenticated(format!(
                "{method}: this coordinator requires workers to present a TLS client certificate \
                 signed by its client CA (worker --tls-cert/--tls-key)"
            )));
        }
        if self.is_open() {
            return Ok(());
        }
        let header = req.metadata().get("authorization").ok_or_else(|| {
            Status::unauthenticated(format!(
                "{method}: no bearer token (set RIDGELINE_TOKEN or --token-file)"
            ))
        })?;
        let token = header
            .to_str()
            .ok()
            .and_then(|h| h.strip_prefix("Bearer "))
            .map(str::trim)
            .ok_or_else(|| {
                Status::unauthenticated(format!(
                    "{method}: the authorization header is not `Bearer <token>`"
                ))
            })?;
        match self.by_digest.get(&digest(token)) {
            None => Err(Status::unauthenticated(format!(
                "{method}: the token is not valid"
            ))),
            Some(role) if allowed.contains(role) => Ok(()),
            Some(role) => Err(Status::permission_denied(format!(
                "{method}: a {} token may not call this",
                role.name()
            ))),
        }
    }
}

/// Whether the call came over TLS with a client certificate (which the
/// handshake has already verified against the client CA).
fn has_client_cert<T>(req: &Request<T>) -> bool {
    req.peer_certs().is_some_and(|c| !c.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(token: Option<&str>) -> Request<()> {
        let mut r = Request::new(());
        if let Some(t) = token {
            r.metadata_mut().insert("authorization", t.parse().unwrap());
        }
        r
    }

    fn tokens() -> (tempfile::TempDir, Tokens) {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("tokens.toml");
        std::fs::write(
            &p,
            "client = [\"client-token-0123456789\"]\nworker = [\"worker-token-0123456789\"]\n",
        )
        .unwrap();
        let t = Tokens::load(&p).unwrap();
        (dir, t)
    }

    #[test]
    fn roles_decide_who_may_call_what() {
        let (_d, t) = tokens();
        let client = with(Some("Bearer client-token-0123456789"));
        let worker = with(Some("Bearer worker-token-0123456789"));
        assert!(t.check(&client, CLIENT, "SubmitJob").is_ok());
        assert!(t.check(&worker, WORKER, "Lease").is_ok());
        assert!(t.check(&client, ANY, "UploadArtifact").is_ok());
        let e = t.check(&worker, CLIENT, "SubmitJob").unwrap_err();
        assert_eq!(e.code(), tonic::Code::PermissionDenied);
        assert!(e.message().contains("worker token"), "{}", e.message());
        let e = t.check(&client, WORKER, "Lease").unwrap_err();
        assert_eq!(e.code(), tonic::Code::PermissionDenied);
        for bad in [
            None,
            Some("Bearer nope-nope-nope-nope"),
            Some("client-token-0123456789"),
        ] {
            let e = t.check(&with(bad), ANY, "GetJob").unwrap_err();
            assert_eq!(e.code(), tonic::Code::Unauthenticated, "{bad:?}");
            assert!(e.message().starts_with("GetJob: "));
        }
        assert!(Tokens::open().check(&with(None), CLIENT, "GetJob").is_ok());
    }

    #[test]
    fn with_mutual_tls_worker_methods_need_a_certificate() {
        let mut t = Tokens::open();
        t.require_worker_certs();
        // No TLS at all here, so no certificate: workers are refused,
        // clients and shared methods are not.
        let e = t.check(&with(None), WORKER, "Lease").unwrap_err();
        assert_eq!(e.code(), tonic::Code::Unauthenticated);
        assert!(e.message().contains("--tls-cert"), "{}", e.message());
        assert!(t.check(&with(None), CLIENT, "SubmitJob").is_ok());
        assert!(t.check(&with(None), ANY, "DownloadArtifact").is_ok());
    }

    #[test]
    fn bad_token_files_are_refused_naming_the_entry() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("t.toml");
        for (text, needle) in [
            ("client = [\"short\"]", "`client[0]`"),
            (
                "client = [\"same-token-0123456789\"]\nworker = [\"same-token-0123456789\"]",
                "`worker[0]`",
            ),
            ("", "no tokens"),
            ("clients = [\"x\"]", "clients"),
        ] {
            std::fs::write(&p, text).unwrap();
            let e = Tokens::load(&p).unwrap_err().to_string();
            assert!(e.contains(needle), "{text}: {e}");
        }
        let e = Tokens::load(&dir.path().join("missing.toml"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("cannot read"), "{e}");
    }
}
