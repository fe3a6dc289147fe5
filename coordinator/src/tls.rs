//! TLS for the coordinator's port (both services share it): the server's
//! certificate and key, and optionally the CA whose certificates workers
//! must present (mutual TLS, see [`crate::auth`]).
//!
//! A lab without a PKI makes its own with `coordinator tls-init`
//! ([`generate`]): a CA, a server certificate for the head node's names and
//! addresses, and a worker client certificate, all signed by that CA.

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use ridgeline_common::tls::read_pem;
use tonic::transport::{Certificate, Identity, ServerTlsConfig};

use crate::error::{CoordError, Result};

/// The server side of TLS, loaded and checked at start.
#[derive(Debug, Clone)]
pub struct ServerTls {
    identity: Identity,
    client_ca: Option<Certificate>,
}

impl ServerTls {
    /// Reads the server's certificate chain and key, and the CA of worker
    /// client certificates when mutual TLS is wanted.
    pub fn load(cert: &Path, key: &Path, client_ca: Option<&Path>) -> Result<Self> {
        let bad = CoordError::InvalidArgument;
        let identity = Identity::from_pem(
            read_pem(cert, "CERTIFICATE", "--tls-cert").map_err(bad)?,
            read_pem(key, "PRIVATE KEY", "--tls-key").map_err(bad)?,
        );
        let client_ca = match client_ca {
            Some(p) => Some(Certificate::from_pem(
                read_pem(p, "CERTIFICATE", "--tls-client-ca").map_err(bad)?,
            )),
            None => None,
        };
        Ok(Self {
            identity,
            client_ca,
        })
    }

    /// Whether workers must present a client certificate.
    pub fn mutual(&self) -> bool {
        self.client_ca.is_some()
    }

    /// tonic's settings: the identity, and with a client CA, client
    /// certificates verified when presented but optional at the handshake
    /// (clients have none; the worker methods insist, see [`crate::auth`]).
    pub fn config(&self) -> ServerTlsConfig {
        let config = ServerTlsConfig::new().identity(self.identity.clone());
        match &self.client_ca {
            Some(ca) => config.client_ca_root(ca.clone()).client_auth_optional(true),
            None => config,
        }
    }
}

/// The files [`generate`] writes.
#[derive(Debug, Clone)]
pub struct Generated {
    pub ca_cert: PathBuf,
    pub ca_key: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
    pub worker_cert: PathBuf,
    pub worker_key: PathBuf,
}

/// Makes a lab's CA (`ca.pem`, `ca.key`), a server certificate for `hosts`
/// (DNS names or IP addresses of the head node; `server.pem`,
/// `server.key`) and one worker client certificate (`worker.pem`,
/// `worker.key`) under `dir`. Keys are written readable by their owner
/// only. Existing files are never overwritten.
pub fn generate(dir: &Path, hosts: &[String], years: u32) -> Result<Generated> {
    if hosts.is_empty() {
        return Err(CoordError::InvalidArgument(
            "--host: give at least one name or address the workers will use for the coordinator"
                .into(),
        ));
    }
    let tls = |what: &str, e: rcgen::Error| CoordError::InvalidArgument(format!("{what}: {e}"));
    let (from, until) = validity(years);
    let (not_before, not_after) = (
        rcgen::date_time_ymd(from, 1, 1),
        rcgen::date_time_ymd(until, 1, 1),
    );

    let mut ca = CertificateParams::new(Vec::<String>::new()).map_err(|e| tls("CA", e))?;
    ca.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca.distinguished_name
        .push(DnType::CommonName, "Ridgeline lab CA");
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    ca.not_before = not_before;
    ca.not_after = not_after;
    let ca_key = KeyPair::generate().map_err(|e| tls("CA key", e))?;
    let ca_cert = ca.self_signed(&ca_key).map_err(|e| tls("CA", e))?;
    let ca_pem = ca_cert.pem();
    let ca_key_pem = ca_key.serialize_pem();
    let issuer = Issuer::new(ca, ca_key);

    let leaf = |names: Vec<String>, cn: &str, usage: ExtendedKeyUsagePurpose| {
        let mut p = CertificateParams::new(names).map_err(|e| tls(&format!("`{cn}`"), e))?;
        p.distinguished_name.push(DnType::CommonName, cn);
        p.use_authority_key_identifier_extension = true;
        p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        p.extended_key_usages = vec![usage];
        p.not_before = not_before;
        p.not_after = not_after;
        let key = KeyPair::generate().map_err(|e| tls("key", e))?;
        let cert = p.signed_by(&key, &issuer).map_err(|e| tls(cn, e))?;
        Ok::<_, CoordError>((cert.pem(), key.serialize_pem()))
    };
    let (server_pem, server_key) = leaf(
        hosts.to_vec(),
        &hosts[0],
        ExtendedKeyUsagePurpose::ServerAuth,
    )?;
    let (worker_pem, worker_key) = leaf(
        vec![],
        "ridgeline-worker",
        ExtendedKeyUsagePurpose::ClientAuth,
    )?;

    std::fs::create_dir_all(dir).map_err(|e| {
        CoordError::InvalidArgument(format!("--out {}: cannot create it: {e}", dir.display()))
    })?;
    let files = Generated {
        ca_cert: dir.join("ca.pem"),
        ca_key: dir.join("ca.key"),
        server_cert: dir.join("server.pem"),
        server_key: dir.join("server.key"),
        worker_cert: dir.join("worker.pem"),
        worker_key: dir.join("worker.key"),
    };
    for path in [
        &files.ca_cert,
        &files.ca_key,
        &files.server_cert,
        &files.server_key,
        &files.worker_cert,
        &files.worker_key,
    ] {
        if path.exists() {
            return Err(CoordError::InvalidArgument(format!(
                "{} already exists: choose another --out or remove the old set first",
                path.display()
            )));
        }
    }
    write(&files.ca_cert, &ca_pem, false)?;
    write(&files.ca_key, &ca_key_pem, true)?;
    write(&files.server_cert, &server_pem, false)?;
    write(&files.server_key, &server_key, true)?;
    write(&files.worker_cert, &worker_pem, false)?;
    write(&files.worker_key, &worker_key, true)?;
    Ok(files)
}

/// From the start of this year (clocks in a lab disagree) to the start of
/// the year `years` from now.
fn validity(years: u32) -> (i32, i32) {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    // Mean Gregorian year; a day off at New Year's only moves the start.
    let year = 1970 + (secs / 31_556_952) as i32;
    (year, year + years.max(1) as i32)
}

fn write(path: &Path, text: &str, secret: bool) -> Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    if secret {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    #[cfg(not(unix))]
    let _ = secret;
    options
        .open(path)
        .and_then(|mut f| f.write_all(text.as_bytes()))
        .map_err(|e| CoordError::Storage(format!("{}: {e}", path.display())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_generated_set_loads_and_is_not_overwritten() {
        let dir = tempfile::tempdir().unwrap();
        let hosts = vec!["localhost".to_string(), "127.0.0.1".to_string()];
        let files = generate(dir.path(), &hosts, 2).unwrap();
        let tls =
            ServerTls::load(&files.server_cert, &files.server_key, Some(&files.ca_cert)).unwrap();
        assert!(tls.mutual());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&files.server_key)
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o077, 0, "keys are private: {mode:o}");
        }
        let e = generate(dir.path(), &hosts, 2).unwrap_err().to_string();
        assert!(e.contains("already exists"), "{e}");
        let e = generate(&dir.path().join("x"), &[], 2)
            .unwrap_err()
            .to_string();
        assert!(e.contains("--host"), "{e}");
        // A key given as the certificate is named.
        let e = ServerTls::load(&files.server_key, &files.server_key, None)
            .unwrap_err()
            .to_string();
        assert!(e.contains("--tls-cert") && e.contains("CERTIFICATE"), "{e}");
    }
}
