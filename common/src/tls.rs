//! TLS, the client side: how clients and workers reach a coordinator that
//! serves `https://`. A lab with its own CA (`coordinator tls-init`) gives
//! its certificate (`--tls-ca`, `$RIDGELINE_TLS_CA`); without one the
//! system's trust store is used. Workers of a coordinator that requires
//! client certificates (mutual TLS) also give theirs (`--tls-cert`,
//! `--tls-key`).

use std::path::Path;

use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity};

/// The CA certificate that signed the coordinator's certificate.
pub const CA_ENV: &str = "RIDGELINE_TLS_CA";
/// A worker's client certificate and key (mutual TLS).
pub const CERT_ENV: &str = "RIDGELINE_TLS_CERT";
pub const KEY_ENV: &str = "RIDGELINE_TLS_KEY";

/// TLS settings of a connection to the coordinator; the default is none
/// (plain `http://`, or `https://` checked against the system's roots).
#[derive(Clone, Debug, Default)]
pub struct ClientTls {
    ca: Option<Certificate>,
    identity: Option<Identity>,
}

/// Reads a PEM file that must hold a `what` block (`CERTIFICATE`,
/// `PRIVATE KEY`), naming the file and the flag in every error.
pub fn read_pem(path: &Path, what: &str, flag: &str) -> Result<Vec<u8>, String> {
    let bytes = std::fs::read(path)
        .map_err(|e| format!("{flag} {}: cannot read it: {e}", path.display()))?;
    let text = String::from_utf8_lossy(&bytes);
    let found = text
        .lines()
        .any(|l| l.starts_with("-----BEGIN ") && l.trim_end().ends_with(&format!("{what}-----")));
    if !found {
        return Err(format!(
            "{flag} {}: not a PEM file with a {what} in it",
            path.display()
        ));
    }
    Ok(bytes)
}

impl ClientTls {
    pub fn none() -> Self {
        Self::default()
    }

    /// Loads the CA (`ca`) and the client certificate and key (`cert`,
    /// `key`, both or neither). Missing or malformed files are reported by
    /// name, here rather than at the first call.
    pub fn load(
        ca: Option<&Path>,
        cert: Option<&Path>,
        key: Option<&Path>,
    ) -> Result<Self, String> {
        let ca = match ca {
            Some(p) => Some(Certificate::from_pem(read_pem(
                p,
                "CERTIFICATE",
                "--tls-ca",
            )?)),
            None => None,
        };
        let identity = match (cert, key) {
            (Some(c), Some(k)) => Some(Identity::from_pem(
                read_pem(c, "CERTIFICATE", "--tls-cert")?,
                read_pem(k, "PRIVATE KEY", "--tls-key")?,
            )),
            (None, None) => None,
            (Some(_), None) => {
                return Err("--tls-cert needs --tls-key (the certificate's private key)".into())
            }
            (None, Some(_)) => return Err("--tls-key needs --tls-cert".into()),
        };
        Ok(Self { ca, identity })
    }

    /// Whether any TLS setting was given (then a bare `host:port` means
    /// `https://host:port`).
    pub fn is_set(&self) -> bool {
        self.ca.is_some() || self.identity.is_some()
    }

    /// The full URL for `address`: kept if it has a scheme, else `https://`
    /// when TLS settings were given and `http://` otherwise.
    pub fn url(&self, address: &str) -> String {
        let a = address.trim();
        if a.contains("://") {
            a.to_string()
        } else if self.is_set() {
            format!("https://{a}")
        } else {
            format!("http://{a}")
        }
    }

    /// An endpoint for `address`, with TLS for `https://`. Errors name the
    /// address and what is wrong with it.
    pub fn endpoint(&self, address: &str) -> Result<Endpoint, String> {
        let url = self.url(address);
        let endpoint = Endpoint::from_shared(url.clone())
            .map_err(|e| format!("`{url}` is not a valid coordinator address: {e}"))?;
        if url.starts_with("https://") {
            let mut config = ClientTlsConfig::new();
            config = match &self.ca {
                Some(ca) => config.ca_certificate(ca.clone()),
                None => config.with_native_roots(),
            };
            if let Some(id) = &self.identity {
                config = config.identity(id.clone());
            }
            endpoint
                .tls_config(config)
                .map_err(|e| format!("TLS settings for `{url}`: {e}"))
        } else if url.starts_with("http://") {
            if self.is_set() {
                return Err(format!(
                    "TLS settings were given (--tls-ca/--tls-cert or ${CA_ENV}) but `{url}` is plain http: use https://"
                ));
            }
            Ok(endpoint)
        } else {
            Err(format!(
                "`{url}`: a coordinator address is http://HOST:PORT or https://HOST:PORT"
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bare_addresses_follow_the_tls_settings() {
        let none = ClientTls::none();
        assert_eq!(none.url("h:1"), "http://h:1");
        assert_eq!(none.url(" https://h:1 "), "https://h:1");
        assert!(none
            .endpoint("ftp://h:1")
            .unwrap_err()
            .contains("http://HOST:PORT"));
        assert!(none.endpoint("https://h:1").is_ok());
    }

    #[test]
    fn missing_and_malformed_files_are_named() {
        let dir = std::env::temp_dir().join(format!("ridgeline-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let e = ClientTls::load(Some(&dir.join("nope.pem")), None, None).unwrap_err();
        assert!(e.contains("--tls-ca") && e.contains("nope.pem"), "{e}");
        let junk = dir.join("junk.pem");
        std::fs::write(&junk, "hello\n").unwrap();
        let e = ClientTls::load(Some(&junk), None, None).unwrap_err();
        assert!(e.contains("not a PEM file with a CERTIFICATE"), "{e}");
        let e = ClientTls::load(None, Some(&junk), None).unwrap_err();
        assert!(e.contains("--tls-key"), "{e}");
        std::fs::write(
            &junk,
            "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n",
        )
        .unwrap();
        let tls = ClientTls::load(Some(&junk), None, None).unwrap();
        assert!(tls.is_set());
        assert_eq!(tls.url("h:1"), "https://h:1");
        assert!(tls
            .endpoint("http://h:1")
            .unwrap_err()
            .contains("use https://"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
