//! Mutual TLS for the connections of a distributed job: coordinator ↔ workers, worker ↔
//! worker, and TLS on the control API.
//!
//! A job's pods share one certificate, issued by a CA that exists for that job alone (the
//! operator makes both and mounts them, Kubernetes `kubernetes.io/tls` layout plus
//! `ca.crt`). Trusting only that CA is what ties a connection to the job: a peer of
//! another job, or one without a certificate, fails the handshake, before this side reads
//! any of its bytes as a frame. Peers do not check the address they reached against the
//! certificate (pods move, and workers are reached by IP): the name they check is
//! `sluice_crds::tls::PEER_NAME`, which every job certificate carries.
//!
//! Without a certificate directory, every connection is plain TCP, as embedded and local
//! distributed runs need.
//!
//! The sockets of the data exchange and of the coordinator protocol are blocking, and read
//! by one thread while others write; [`Link`] keeps that shape under TLS (see
//! [`link`]).

mod link;

pub use link::{Link, LinkReader, LinkWriter};

use crate::error::Error;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use sluice_crds::tls::{CA_FILE, CERT_FILE, KEY_FILE, PEER_NAME};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// What a job's processes need to speak TLS to each other: a server side that requires a
/// client certificate from the job's CA, and a client side that presents one.
#[derive(Clone)]
pub struct TlsContext {
    server: Arc<ServerConfig>,
    client: Arc<ClientConfig>,
    /// The control API's side: the job's certificate, no client certificate asked for
    /// (callers prove themselves with the API's bearer token).
    https: Arc<ServerConfig>,
    /// The directory the files came from, for messages.
    dir: PathBuf,
}

impl std::fmt::Debug for TlsContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsContext")
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

impl TlsContext {
    /// Reads `ca.crt`, `tls.crt` and `tls.key` from `dir`.
    pub fn from_dir(dir: &Path) -> Result<Self, Error> {
        let file = |name: &str| dir.join(name);
        let bad = |name: &str, message: String| Error::Tls {
            path: file(name),
            message,
        };
        let read_certs = |name: &str| -> Result<Vec<CertificateDer<'static>>, Error> {
            let path = file(name);
            let certs = CertificateDer::pem_file_iter(&path)
                .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
                .map_err(|e| bad(name, e.to_string()))?;
            if certs.is_empty() {
                return Err(bad(name, "holds no PEM certificate".into()));
            }
            Ok(certs)
        };
        let ca = read_certs(CA_FILE)?;
        let chain = read_certs(CERT_FILE)?;
        let key = PrivateKeyDer::from_pem_file(file(KEY_FILE))
            .map_err(|e| bad(KEY_FILE, e.to_string()))?;
        let mut roots = RootCertStore::empty();
        for cert in ca {
            roots
                .add(cert)
                .map_err(|e| bad(CA_FILE, format!("not a usable CA certificate: {e}")))?;
        }
        let roots = Arc::new(roots);
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let tls13 = &[&rustls::version::TLS13];
        let verifier = WebPkiClientVerifier::builder_with_provider(roots.clone(), provider.clone())
            .build()
            .map_err(|e| bad(CA_FILE, e.to_string()))?;
        let mut server = ServerConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(tls13)
            .map_err(|e| bad(CERT_FILE, e.to_string()))?
            .with_client_cert_verifier(verifier)
            .with_single_cert(chain.clone(), key.clone_key())
            .map_err(|e| bad(CERT_FILE, e.to_string()))?;
        let mut https = ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| bad(CERT_FILE, e.to_string()))?
            .with_no_client_auth()
            .with_single_cert(chain.clone(), key.clone_key())
            .map_err(|e| bad(CERT_FILE, e.to_string()))?;
        https.alpn_protocols = vec![b"http/1.1".to_vec()];
        // Peers never resume a session: a ticket after the handshake would only be a
        // message for the reading side to swallow.
        server.send_tls13_tickets = 0;
        let client = ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(tls13)
            .map_err(|e| bad(CERT_FILE, e.to_string()))?
            .with_root_certificates(roots)
            .with_client_auth_cert(chain, key)
            .map_err(|e| bad(CERT_FILE, e.to_string()))?;
        Ok(TlsContext {
            server: Arc::new(server),
            client: Arc::new(client),
            https: Arc::new(https),
            dir: dir.to_path_buf(),
        })
    }

    /// The control API's HTTPS.
    pub fn https(&self) -> Arc<ServerConfig> {
        self.https.clone()
    }

    fn peer_name() -> Result<ServerName<'static>, std::io::Error> {
        ServerName::try_from(PEER_NAME)
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))
    }
}

#[cfg(test)]
pub(crate) mod tests;
