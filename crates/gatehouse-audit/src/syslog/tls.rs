//! TLS for the syslog sink (RFC 5425): the receiver's certificate is always
//! verified (against `ca_file`, or the system's roots without it), and a
//! client certificate is presented when one is configured (mutual TLS).
//!
//! Everything is loaded and checked when the configuration is, so a missing
//! file, a file that is not PEM or a key that does not match its
//! certificate stops start-up instead of failing the first batch. Errors
//! name the setting and the file, never what the file holds: a key file's
//! content must not reach a terminal or a log.
//!
//! A running server loads the files again on request (`SyslogTls::reload`,
//! on SIGHUP and when a file changes): certificates expire, and a sink that
//! cannot connect refuses every call, so renewing a certificate must not
//! need a restart. New connections use the reloaded files.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, PoisonError, RwLock};

use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{ClientConfig, RootCertStore};

/// The TLS settings as configured: files and a name.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SyslogTlsFiles {
    /// PEM: the CA certificate(s) the receiver's certificate must chain to;
    /// the system's roots when absent.
    pub ca_file: Option<PathBuf>,
    /// PEM: the certificate (chain) presented to the receiver.
    pub client_cert_file: Option<PathBuf>,
    /// PEM: the key of `client_cert_file` (PKCS#8, PKCS#1 or SEC1,
    /// unencrypted).
    pub client_key_file: Option<PathBuf>,
    /// The name the receiver's certificate must carry; the address's host
    /// when absent.
    pub server_name: Option<String>,
}

/// A TLS setting that cannot be used. Each names its setting and, for a
/// file, its path.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SyslogTlsError {
    #[error("ca_file {}: {reason}", path.display())]
    CaFile { path: PathBuf, reason: String },
    #[error(
        "ca_file is required: no system CA certificates were found to verify the receiver with ({0})"
    )]
    NoSystemRoots(String),
    #[error("client_cert_file {}: {reason}", path.display())]
    ClientCertFile { path: PathBuf, reason: String },
    #[error("client_key_file {}: {reason}", path.display())]
    ClientKeyFile { path: PathBuf, reason: String },
    #[error("{0} is set without {1}: mutual TLS needs both")]
    ClientPair(&'static str, &'static str),
    #[error("server_name {0:?} is not a DNS name or an IP address")]
    ServerName(String),
    #[error("the address's host {0:?} is not a DNS name or an IP address: set server_name")]
    Host(String),
    #[error("TLS cannot be set up: {0}")]
    Setup(String),
}

/// A client ready to connect: the verified-receiver configuration and the
/// name to verify. Clones share the configuration, so a clone kept by the
/// server reloads the one the sink connects with.
#[derive(Clone)]
pub struct SyslogTls {
    config: Arc<RwLock<Arc<ClientConfig>>>,
    pub(crate) server_name: ServerName<'static>,
    host: String,
    files: SyslogTlsFiles,
}

// The configuration holds the client's private key: only the name is shown.
impl fmt::Debug for SyslogTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SyslogTls")
            .field("server_name", &self.server_name.to_str())
            .finish_non_exhaustive()
    }
}

impl SyslogTls {
    /// Loads and checks the files. `host` is the address's host (without
    /// the port or IPv6 brackets), the name verified unless `server_name`
    /// says otherwise.
    pub fn load(host: &str, files: &SyslogTlsFiles) -> Result<SyslogTls, SyslogTlsError> {
        let server_name = match &files.server_name {
            Some(name) => ServerName::try_from(name.clone())
                .map_err(|_| SyslogTlsError::ServerName(name.clone()))?,
            None => ServerName::try_from(host.to_string())
                .map_err(|_| SyslogTlsError::Host(host.to_string()))?,
        };
        let roots = match &files.ca_file {
            Some(path) => ca_roots(path)?,
            None => system_roots()?,
        };
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let builder = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| SyslogTlsError::Setup(e.to_string()))?
            .with_root_certificates(roots);
        let config = match (&files.client_cert_file, &files.client_key_file) {
            (None, None) => builder.with_no_client_auth(),
            (Some(_), None) => {
                return Err(SyslogTlsError::ClientPair(
                    "client_cert_file",
                    "client_key_file",
                ));
            }
            (None, Some(_)) => {
                return Err(SyslogTlsError::ClientPair(
                    "client_key_file",
                    "client_cert_file",
                ));
            }
            (Some(cert_path), Some(key_path)) => {
                let chain = client_chain(cert_path)?;
                let key = client_key(key_path)?;
                builder.with_client_auth_cert(chain, key).map_err(|e| {
                    SyslogTlsError::ClientKeyFile {
                        path: key_path.clone(),
                        reason: match e {
                            rustls::Error::InconsistentKeys(_) => format!(
                                "is not the key of the certificate in client_cert_file {}",
                                cert_path.display()
                            ),
                            // rustls describes the kind of problem, never
                            // the key's bytes.
                            other => format!("cannot be used: {other}"),
                        },
                    }
                })?
            }
        };
        Ok(SyslogTls {
            config: Arc::new(RwLock::new(Arc::new(config))),
            server_name,
            host: host.to_string(),
            files: files.clone(),
        })
    }

    /// The configuration a new connection uses.
    pub(crate) fn config(&self) -> Arc<ClientConfig> {
        Arc::clone(&self.config.read().unwrap_or_else(PoisonError::into_inner))
    }

    /// Loads the files again and, when they are usable, connects with them
    /// from the next connection on. When they are not, the error says why
    /// and the configuration in use stays.
    pub fn reload(&self) -> Result<(), SyslogTlsError> {
        let fresh = SyslogTls::load(&self.host, &self.files)?;
        let config = fresh.config();
        *self.config.write().unwrap_or_else(PoisonError::into_inner) = config;
        Ok(())
    }

    /// The files it is loaded from (to watch them).
    pub fn files(&self) -> impl Iterator<Item = &Path> {
        [
            &self.files.ca_file,
            &self.files.client_cert_file,
            &self.files.client_key_file,
        ]
        .into_iter()
        .flatten()
        .map(PathBuf::as_path)
    }
}

/// What is wrong with a PEM file, without quoting it.
fn pem_problem(error: &pem::Error, what: &str) -> String {
    match error {
        pem::Error::NoItemsFound => format!("is not PEM: it holds no {what}"),
        pem::Error::MissingSectionEnd { .. } => {
            "is not valid PEM: a section has no END line".into()
        }
        pem::Error::IllegalSectionStart { .. } => {
            "is not valid PEM: a BEGIN line is malformed".into()
        }
        pem::Error::Base64Decode(_) => "is not valid PEM: a section is not base64".into(),
        pem::Error::SectionTooLarge => "is not valid PEM: a section is too large".into(),
        _ => "is not valid PEM".into(),
    }
}

fn read(path: &Path) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| format!("cannot be read: {e}"))
}

/// Every certificate in a PEM file; at least one.
fn certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let bytes = read(path)?;
    let certs = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| pem_problem(&e, "CERTIFICATE"))?;
    if certs.is_empty() {
        return Err(pem_problem(&pem::Error::NoItemsFound, "CERTIFICATE"));
    }
    Ok(certs)
}

fn ca_roots(path: &Path) -> Result<RootCertStore, SyslogTlsError> {
    let failed = |reason: String| SyslogTlsError::CaFile {
        path: path.to_path_buf(),
        reason,
    };
    let mut roots = RootCertStore::empty();
    for (n, cert) in certificates(path).map_err(failed)?.into_iter().enumerate() {
        roots
            .add(cert)
            .map_err(|e| failed(format!("certificate {} cannot be used: {e}", n + 1)))?;
    }
    Ok(roots)
}

/// The system's CA certificates (the files OpenSSL would use; the
/// `SSL_CERT_FILE` and `SSL_CERT_DIR` variables choose others).
fn system_roots() -> Result<RootCertStore, SyslogTlsError> {
    let found = rustls_native_certs::load_native_certs();
    let mut roots = RootCertStore::empty();
    let (added, _unparsable) = roots.add_parsable_certificates(found.certs);
    if added == 0 {
        let why = found
            .errors
            .first()
            .map_or_else(|| "none installed".to_string(), ToString::to_string);
        return Err(SyslogTlsError::NoSystemRoots(why));
    }
    Ok(roots)
}

fn client_chain(path: &Path) -> Result<Vec<CertificateDer<'static>>, SyslogTlsError> {
    certificates(path).map_err(|reason| SyslogTlsError::ClientCertFile {
        path: path.to_path_buf(),
        reason,
    })
}

fn client_key(path: &Path) -> Result<PrivateKeyDer<'static>, SyslogTlsError> {
    let failed = |reason: String| SyslogTlsError::ClientKeyFile {
        path: path.to_path_buf(),
        reason,
    };
    let bytes = read(path).map_err(failed)?;
    PrivateKeyDer::from_pem_slice(&bytes).map_err(|e| {
        failed(pem_problem(
            &e,
            "unencrypted PRIVATE KEY (PKCS#8), RSA PRIVATE KEY or EC PRIVATE KEY",
        ))
    })
}

/// Test certificates (made by testdata/generate.sh): a CA, a receiver
/// certificate for 127.0.0.1 and localhost, a client certificate, and a CA
/// that signed neither.
#[cfg(test)]
pub(crate) fn testdata(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("src/syslog/testdata")
        .join(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn files(ca: Option<&str>, cert: Option<&str>, key: Option<&str>) -> SyslogTlsFiles {
        SyslogTlsFiles {
            ca_file: ca.map(testdata),
            client_cert_file: cert.map(testdata),
            client_key_file: key.map(testdata),
            server_name: None,
        }
    }

    #[test]
    fn good_files_load() {
        let tls = SyslogTls::load(
            "127.0.0.1",
            &files(Some("ca.pem"), Some("client.pem"), Some("client.key")),
        )
        .unwrap();
        assert!(matches!(tls.server_name, ServerName::IpAddress(_)));
        assert!(tls.config().client_auth_cert_resolver.has_certs());
        let tls = SyslogTls::load("siem.example", &files(Some("ca.pem"), None, None)).unwrap();
        assert_eq!(tls.server_name.to_str(), "siem.example");
        assert!(!tls.config().client_auth_cert_resolver.has_certs());
    }

    #[test]
    fn server_name_overrides_the_host() {
        let tls = SyslogTls::load(
            "10.0.0.5",
            &SyslogTlsFiles {
                server_name: Some("siem.internal".into()),
                ..files(Some("ca.pem"), None, None)
            },
        )
        .unwrap();
        assert_eq!(tls.server_name.to_str(), "siem.internal");
        let err = SyslogTls::load(
            "10.0.0.5",
            &SyslogTlsFiles {
                server_name: Some("not a name".into()),
                ..files(Some("ca.pem"), None, None)
            },
        )
        .unwrap_err();
        assert_eq!(err, SyslogTlsError::ServerName("not a name".into()));
    }

    #[test]
    fn bad_files_are_named_without_their_content() {
        let dir = tempfile::tempdir().unwrap();
        let not_pem = dir.path().join("not-pem.txt");
        std::fs::write(&not_pem, "hello, secret-ish bytes\n").unwrap();
        let missing = dir.path().join("missing.pem");
        let load = |ca: &Path, cert: Option<&Path>, key: Option<&Path>| {
            SyslogTls::load(
                "127.0.0.1",
                &SyslogTlsFiles {
                    ca_file: Some(ca.to_path_buf()),
                    client_cert_file: cert.map(Path::to_path_buf),
                    client_key_file: key.map(Path::to_path_buf),
                    server_name: None,
                },
            )
            .unwrap_err()
            .to_string()
        };
        let ca = testdata("ca.pem");
        let cases = [
            (
                load(&missing, None, None),
                "ca_file",
                &missing,
                "cannot be read",
            ),
            (
                load(&not_pem, None, None),
                "ca_file",
                &not_pem,
                "is not PEM",
            ),
            // A key is not a certificate.
            (
                load(&testdata("client.key"), None, None),
                "ca_file",
                &testdata("client.key"),
                "holds no CERTIFICATE",
            ),
            (
                load(&ca, Some(&not_pem), Some(&testdata("client.key"))),
                "client_cert_file",
                &not_pem,
                "is not PEM",
            ),
            (
                load(&ca, Some(&testdata("client.pem")), Some(&missing)),
                "client_key_file",
                &missing,
                "cannot be read",
            ),
            // A certificate is not a key.
            (
                load(
                    &ca,
                    Some(&testdata("client.pem")),
                    Some(&testdata("ca.pem")),
                ),
                "client_key_file",
                &testdata("ca.pem"),
                "holds no unencrypted PRIVATE KEY",
            ),
            // The receiver's key with the client's certificate.
            (
                load(
                    &ca,
                    Some(&testdata("client.pem")),
                    Some(&testdata("server.key")),
                ),
                "client_key_file",
                &testdata("server.key"),
                "is not the key of the certificate",
            ),
        ];
        let key_text = std::fs::read_to_string(testdata("server.key")).unwrap();
        let key_body = key_text.lines().nth(1).unwrap();
        for (err, setting, path, reason) in cases {
            assert!(err.starts_with(setting), "{err}");
            assert!(err.contains(&path.display().to_string()), "{err}");
            assert!(err.contains(reason), "{err}");
            assert!(!err.contains("secret-ish"), "{err}");
            assert!(!err.contains(key_body), "{err}");
        }
    }

    #[test]
    fn mutual_tls_needs_both_files() {
        let err = SyslogTls::load(
            "127.0.0.1",
            &files(Some("ca.pem"), Some("client.pem"), None),
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "client_cert_file is set without client_key_file: mutual TLS needs both"
        );
        let err = SyslogTls::load(
            "127.0.0.1",
            &files(Some("ca.pem"), None, Some("client.key")),
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "client_key_file is set without client_cert_file: mutual TLS needs both"
        );
    }

    #[test]
    fn a_key_is_never_shown_in_debug_output() {
        let tls = SyslogTls::load(
            "127.0.0.1",
            &files(Some("ca.pem"), Some("client.pem"), Some("client.key")),
        )
        .unwrap();
        let shown = format!("{tls:?}");
        assert!(shown.contains("127.0.0.1"), "{shown}");
        assert!(!shown.contains("key"), "{shown}");
    }
}
