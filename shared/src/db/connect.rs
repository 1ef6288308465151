//! Opening one Postgres connection, over TLS when the URL asks for it.
//!
//! tokio-postgres (under diesel-async) understands `sslmode=disable|prefer|require` only, and
//! `require` there means "encrypt", as in libpq. Managed Postgres services hand out URLs with
//! libpq's stronger modes, so `sslmode` and `sslrootcert` are read here, with libpq's meaning:
//!
//! | `sslmode`            | encrypted        | certificate chain checked | host name checked |
//! |----------------------|------------------|---------------------------|-------------------|
//! | `disable`            | no               | no                        | no                |
//! | `prefer` (default)   | if the server can| no                        | no                |
//! | `require`            | yes              | only with a CA file       | no                |
//! | `verify-ca`          | yes              | yes                       | no                |
//! | `verify-full`        | yes              | yes                       | yes               |
//!
//! The chain is checked against the system's roots plus the CA file (`sslrootcert=` in the URL,
//! or `DATABASE_CA_FILE`, which [`crate::settings`] puts there): managed services' CAs (RDS,
//! Cloud SQL) are often not among the system's. TLS is rustls, the one TLS stack of the tree.
//!
//! A failed connection is [`ConnectError::Permanent`] when trying again cannot help (a
//! certificate or host name that does not verify, a CA file that cannot be read, a URL the
//! driver refuses, a server without TLS when TLS is required): the services stop with the
//! message. Anything else (refused, reset, timed out, Postgres starting) is
//! [`ConnectError::Transient`], and the pool keeps retrying.

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use diesel_async::AsyncPgConnection;
use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme,
};
use tokio_postgres_rustls::MakeRustlsConnect;

#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("{0}")]
    Permanent(String),
    #[error("{0}")]
    Transient(String),
}

impl ConnectError {
    pub fn is_permanent(&self) -> bool {
        matches!(self, ConnectError::Permanent(_))
    }
}

/// libpq's `sslmode` values.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SslMode {
    Disable,
    Prefer,
    Require,
    VerifyCa,
    VerifyFull,
}

impl SslMode {
    fn parse(value: &str) -> Result<Self, ConnectError> {
        Ok(match value {
            "disable" => SslMode::Disable,
            // libpq's `allow` tries plain text first; encrypting when offered is the safer reading.
            "allow" | "prefer" => SslMode::Prefer,
            "require" => SslMode::Require,
            "verify-ca" => SslMode::VerifyCa,
            "verify-full" => SslMode::VerifyFull,
            other => {
                return Err(ConnectError::Permanent(format!(
                    "sslmode `{other}` is not one of disable, prefer, require, verify-ca, verify-full"
                )));
            }
        })
    }

    /// What tokio-postgres is told: it negotiates the encryption, our verifier does the rest.
    fn driver_value(self) -> &'static str {
        match self {
            SslMode::Disable => "disable",
            SslMode::Prefer => "prefer",
            SslMode::Require | SslMode::VerifyCa | SslMode::VerifyFull => "require",
        }
    }
}

/// A Postgres URL read for connecting: the driver's config and how to check the server.
#[derive(Clone)]
pub struct Target {
    config: tokio_postgres::Config,
    mode: SslMode,
    ca_file: Option<PathBuf>,
    tls: MakeRustlsConnect,
}

impl std::fmt::Debug for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Not the config: it holds the password.
        f.debug_struct("Target")
            .field("mode", &self.mode)
            .field("ca_file", &self.ca_file)
            .finish_non_exhaustive()
    }
}

impl Target {
    /// Reads `url` (`postgres://…?sslmode=…&sslrootcert=…`) and builds its TLS configuration
    /// (reading the CA file and the system roots once, here).
    pub fn parse(url: &str) -> Result<Self, ConnectError> {
        let (driver_url, mode, ca_file) = split_tls_options(url)?;
        let config: tokio_postgres::Config = driver_url.parse().map_err(|e| {
            ConnectError::Permanent(format!("DATABASE_URL is not a usable Postgres URL: {e}"))
        })?;
        let tls = MakeRustlsConnect::new(client_config(mode, ca_file.as_deref())?);
        Ok(Target {
            config,
            mode,
            ca_file,
            tls,
        })
    }

    pub fn ssl_mode(&self) -> SslMode {
        self.mode
    }

    /// One new connection, driven on its own task as diesel-async's `establish` does.
    pub async fn connect(&self) -> Result<AsyncPgConnection, ConnectError> {
        let (client, connection) = self
            .config
            .connect(self.tls.clone())
            .await
            .map_err(|e| classify(&e))?;
        AsyncPgConnection::try_from_client_and_connection(client, connection)
            .await
            .map_err(|e| ConnectError::Transient(e.to_string()))
    }
}

/// One connection to `url` (migrations, payctl, the tools): [`Target::parse`] then connect.
pub async fn connect(url: &str) -> Result<AsyncPgConnection, ConnectError> {
    Target::parse(url)?.connect().await
}

/// `url` without the options tokio-postgres does not know, with `sslmode` mapped to one it does.
/// Only URLs are read this way; a `key=value` string goes to the driver as it is.
fn split_tls_options(url: &str) -> Result<(String, SslMode, Option<PathBuf>), ConnectError> {
    let is_url = url.starts_with("postgres://") || url.starts_with("postgresql://");
    let Some((base, query)) = url.split_once('?').filter(|_| is_url) else {
        return Ok((url.to_owned(), SslMode::Prefer, None));
    };
    let mut mode = SslMode::Prefer;
    let mut ca_file = None;
    let mut kept = Vec::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        match key {
            "sslmode" => mode = SslMode::parse(&percent_decode(value))?,
            "sslrootcert" => ca_file = Some(PathBuf::from(percent_decode(value))),
            "sslcert" | "sslkey" => {
                return Err(ConnectError::Permanent(format!(
                    "`{key}` (a client certificate) is not supported; use a password"
                )));
            }
            _ => kept.push(pair),
        }
    }
    // libpq: a root certificate makes `require` check the chain, as `verify-ca` does.
    if mode == SslMode::Require && ca_file.is_some() {
        mode = SslMode::VerifyCa;
    }
    let sslmode = format!("sslmode={}", mode.driver_value());
    kept.push(&sslmode);
    Ok((format!("{base}?{}", kept.join("&")), mode, ca_file))
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], hex) {
            (b'%', Some(b)) => {
                out.push(b);
                i += 3;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn client_config(mode: SslMode, ca_file: Option<&Path>) -> Result<ClientConfig, ConnectError> {
    let provider = crate::tls::crypto_provider();
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| ConnectError::Permanent(format!("TLS setup: {e}")))?;
    let verifier: Arc<dyn ServerCertVerifier> = match mode {
        SslMode::Disable | SslMode::Prefer | SslMode::Require => Arc::new(Unverified(provider)),
        SslMode::VerifyCa | SslMode::VerifyFull => {
            let roots = Arc::new(root_store(ca_file)?);
            let webpki = WebPkiServerVerifier::builder_with_provider(roots, provider)
                .build()
                .map_err(|e| ConnectError::Permanent(format!("TLS setup: {e}")))?;
            if mode == SslMode::VerifyCa {
                Arc::new(ChainOnly(webpki))
            } else {
                webpki
            }
        }
    };
    Ok(builder
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth())
}

/// The system's roots (read once per process) plus every certificate in `ca_file`.
fn root_store(ca_file: Option<&Path>) -> Result<RootCertStore, ConnectError> {
    static SYSTEM: OnceLock<Vec<CertificateDer<'static>>> = OnceLock::new();
    let system = SYSTEM.get_or_init(|| {
        let found = rustls_native_certs::load_native_certs();
        if !found.errors.is_empty() {
            tracing::debug!(errors = ?found.errors, "some system root certificates were unreadable");
        }
        found.certs
    });
    let mut store = RootCertStore::empty();
    store.add_parsable_certificates(system.iter().cloned());
    if let Some(path) = ca_file {
        for cert in crate::tls::read_ca_file(path).map_err(ConnectError::Permanent)? {
            store
                .add(cert)
                .map_err(|e| ConnectError::Permanent(format!("CA file {}: {e}", path.display())))?;
        }
    }
    Ok(store)
}

/// `require` and `prefer`: encrypted, the server's certificate not checked (libpq's meaning).
/// The handshake's signatures are still checked, so the session key is the server's.
#[derive(Debug)]
struct Unverified(Arc<CryptoProvider>);

impl ServerCertVerifier for Unverified {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// `verify-ca`: the chain must lead to a trusted root; the name in it is not compared with the
/// host. webpki checks the name only after the chain, so a name error means the chain passed.
#[derive(Debug)]
struct ChainOnly(Arc<WebPkiServerVerifier>);

impl ServerCertVerifier for ChainOnly {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self
            .0
            .verify_server_cert(end_entity, intermediates, server_name, ocsp, now)
        {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

/// Permanent: the TLS layer refused the server (or the server refused TLS). The error's text
/// (it names host and database at most, never the password) is kept for the message.
fn classify(e: &tokio_postgres::Error) -> ConnectError {
    let text = crate::tls::error_chain(e);
    if crate::tls::is_refusal(e) {
        ConnectError::Permanent(format!(
            "the Postgres server's TLS certificate was refused: {text}"
        ))
    } else if text.contains("server does not support TLS") {
        ConnectError::Permanent(format!(
            "sslmode asks for TLS and the Postgres server does not offer it: {text}"
        ))
    } else {
        ConnectError::Transient(text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(url: &str) -> (String, SslMode, Option<PathBuf>) {
        split_tls_options(url).unwrap()
    }

    #[test]
    fn libpq_modes_are_mapped_to_the_ones_the_driver_knows() {
        let (url, mode, ca) =
            split("postgres://u@db:5432/p?sslmode=verify-full&application_name=x");
        assert_eq!(
            url,
            "postgres://u@db:5432/p?application_name=x&sslmode=require"
        );
        assert_eq!((mode, ca), (SslMode::VerifyFull, None));
        assert_eq!(
            split("postgres://u@db/p?sslmode=verify-ca").1,
            SslMode::VerifyCa
        );
        assert_eq!(
            split("postgres://u@db/p?sslmode=disable").0,
            "postgres://u@db/p?sslmode=disable"
        );
        assert_eq!(split("postgres://u@db/p").1, SslMode::Prefer);
        assert_eq!(
            split("host=db sslmode=require").0,
            "host=db sslmode=require"
        );
    }

    #[test]
    fn a_root_certificate_makes_require_check_the_chain() {
        let (url, mode, ca) = split("postgres://db/p?sslmode=require&sslrootcert=%2Fetc%2Fca.pem");
        assert_eq!(url, "postgres://db/p?sslmode=require");
        assert_eq!(mode, SslMode::VerifyCa);
        assert_eq!(ca, Some(PathBuf::from("/etc/ca.pem")));
    }

    #[test]
    fn unknown_modes_and_client_certificates_are_refused_for_good() {
        for url in [
            "postgres://db/p?sslmode=strict",
            "postgres://db/p?sslmode=require&sslcert=/c.pem",
        ] {
            assert!(split_tls_options(url).unwrap_err().is_permanent(), "{url}");
        }
    }

    #[test]
    fn an_unreadable_or_empty_ca_file_is_permanent() {
        let missing =
            Target::parse("postgres://db/p?sslmode=verify-full&sslrootcert=/nonexistent.pem");
        assert!(
            missing
                .unwrap_err()
                .to_string()
                .contains("/nonexistent.pem")
        );
        let empty = std::env::temp_dir().join(format!("empty-ca-{}.pem", std::process::id()));
        std::fs::write(&empty, "not a certificate\n").unwrap();
        let url = format!(
            "postgres://db/p?sslmode=verify-ca&sslrootcert={}",
            empty.display()
        );
        let err = Target::parse(&url).unwrap_err();
        let _ = std::fs::remove_file(&empty);
        assert!(
            err.is_permanent() && err.to_string().contains("no PEM certificate"),
            "{err}"
        );
    }

    #[test]
    fn percent_escapes_are_decoded() {
        assert_eq!(percent_decode("%2Fa%20b+c%zz"), "/a b+c%zz");
    }
}
