//! The one TLS set-up of the services: rustls with the ring provider, which async-stripe (to
//! Stripe), redis (`rediss://`) and [`crate::db::connect`] (Postgres) all use.

use std::path::Path;
use std::sync::{Arc, OnceLock};

use rustls::crypto::CryptoProvider;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;

/// The provider, also installed as the process default (the redis crate's `#insecure` mode
/// reads that).
pub fn crypto_provider() -> Arc<CryptoProvider> {
    static PROVIDER: OnceLock<Arc<CryptoProvider>> = OnceLock::new();
    PROVIDER
        .get_or_init(|| {
            let _ = CryptoProvider::install_default(rustls::crypto::ring::default_provider());
            Arc::new(rustls::crypto::ring::default_provider())
        })
        .clone()
}

/// Every PEM certificate in `path`; an error names the file and says what is wrong with it.
pub fn read_ca_file(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let unreadable = |e: &dyn std::fmt::Display| format!("CA file {}: {e}", path.display());
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| unreadable(&e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| unreadable(&e))?;
    if certs.is_empty() {
        return Err(unreadable(&"no PEM certificate in it"));
    }
    Ok(certs)
}

/// Whether `err` (or what caused it) is rustls refusing the handshake for good: a certificate
/// that does not verify or does not name the host, a peer that cannot speak TLS as we do.
/// A connection cut mid-handshake is not: that is worth retrying.
pub fn is_refusal(err: &(dyn std::error::Error + 'static)) -> bool {
    let mut source = Some(err);
    while let Some(e) = source {
        // The redis crate keeps the cause behind an `Arc<dyn Error>`, where no downcast reaches
        // it; rustls' own words for a refused certificate do.
        if e.to_string().starts_with("invalid peer certificate") {
            return true;
        }
        let tls = e.downcast_ref::<rustls::Error>().or_else(|| {
            e.downcast_ref::<std::io::Error>()
                .and_then(|io| io.get_ref())
                .and_then(|inner| inner.downcast_ref::<rustls::Error>())
        });
        if tls.is_some_and(|t| {
            !matches!(
                t,
                rustls::Error::AlertReceived(_) | rustls::Error::General(_)
            )
        }) {
            return true;
        }
        source = e.source();
    }
    false
}

/// `err` with its causes, each once: "error performing TLS handshake: invalid peer certificate:
/// UnknownIssuer".
pub fn error_chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(s) = source {
        let s_text = s.to_string();
        if !text.contains(&s_text) {
            text.push_str(": ");
            text.push_str(&s_text);
        }
        source = s.source();
    }
    text
}
