//! TLS for `wss://` links: rustls with ring, the system's roots (the platform verifier, as
//! reqwest uses) plus those of `network.ca_file`.

use std::sync::Arc;

use rustls::{
    ClientConfig,
    pki_types::{CertificateDer, pem::PemObject},
};

/// Why TLS could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// The CA file.
    #[error("network.ca_file {path}: {message}")]
    CaFile {
        /// Its path.
        path: String,
        /// Why.
        message: String,
    },
    /// rustls refused the configuration.
    #[error("TLS: {0}")]
    Rustls(#[from] rustls::Error),
}

/// The client configuration of links.
pub(super) fn client_config(ca_file: Option<&str>) -> Result<Arc<ClientConfig>, TlsError> {
    let extra: Vec<CertificateDer<'static>> = match ca_file {
        None => Vec::new(),
        Some(path) => {
            let certs = CertificateDer::pem_file_iter(path)
                .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
                .map_err(|e| TlsError::CaFile {
                    path: path.into(),
                    message: e.to_string(),
                })?;
            if certs.is_empty() {
                return Err(TlsError::CaFile {
                    path: path.into(),
                    message: "no certificate in it".into(),
                });
            }
            certs
        }
    };
    Ok(infernet_service::websocket::client_tls(extra)?)
}
