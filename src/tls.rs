//! TLS: the listener's certificate (reloaded when its files change; a bad pair keeps
//! the old one) and the client configuration for an https upstream (system roots, or
//! `upstream_ca_file`). rustls with the ring provider.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::{ClientConfig, RootCertStore, ServerConfig};

use crate::config::TlsPaths;

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Reads a certificate chain and its private key; checks that they belong together.
pub fn load_pair(paths: &TlsPaths) -> Result<CertifiedKey, String> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&paths.cert_file)
        .map_err(|e| format!("{}: {e}", paths.cert_file.display()))?
        .collect::<Result<_, _>>()
        .map_err(|e| format!("{}: {e}", paths.cert_file.display()))?;
    if chain.is_empty() {
        return Err(format!(
            "{}: no certificate found",
            paths.cert_file.display()
        ));
    }
    let key = PrivateKeyDer::from_pem_file(&paths.key_file)
        .map_err(|e| format!("{}: {e}", paths.key_file.display()))?;
    CertifiedKey::from_der(chain, key, &provider()).map_err(|e| {
        format!(
            "{} and {}: {e}",
            paths.cert_file.display(),
            paths.key_file.display()
        )
    })
}

/// The certificate in use, swapped when the files change.
#[derive(Debug)]
pub struct CertResolver {
    current: ArcSwap<CertifiedKey>,
}

impl ResolvesServerCert for CertResolver {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.load_full())
    }
}

/// What identifies a version of the files: (modified time, length) of each, through
/// symlinks (a Kubernetes Secret update swaps a symlink).
fn fingerprint(paths: &TlsPaths) -> Option<[(SystemTime, u64); 2]> {
    let one = |p: &Path| -> Option<(SystemTime, u64)> {
        let m = std::fs::metadata(p).ok()?;
        Some((m.modified().ok()?, m.len()))
    };
    Some([one(&paths.cert_file)?, one(&paths.key_file)?])
}

/// The listener's TLS: a server config whose certificate follows the files.
#[derive(Debug, Clone)]
pub struct ListenerTls {
    pub config: Arc<ServerConfig>,
    resolver: Arc<CertResolver>,
    paths: TlsPaths,
}

impl ListenerTls {
    pub fn new(paths: &TlsPaths) -> Result<Self, String> {
        let pair = load_pair(paths)?;
        let resolver = Arc::new(CertResolver {
            current: ArcSwap::from_pointee(pair),
        });
        let mut config = ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("tls: {e}"))?
            .with_no_client_auth()
            .with_cert_resolver(resolver.clone());
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(Self {
            config: Arc::new(config),
            resolver,
            paths: paths.clone(),
        })
    }

    /// Polls the files every `every`; on change loads the new pair, keeping the old
    /// one (and logging once) when the new pair is bad.
    pub async fn watch(self, every: Duration) {
        let mut seen = fingerprint(&self.paths);
        loop {
            tokio::time::sleep(every).await;
            let now = fingerprint(&self.paths);
            if now == seen {
                continue;
            }
            seen = now;
            match load_pair(&self.paths) {
                Ok(pair) => {
                    self.resolver.current.store(Arc::new(pair));
                    tracing::info!(cert = %self.paths.cert_file.display(), "TLS certificate reloaded");
                }
                Err(e) => {
                    tracing::error!(error = %e, "TLS certificate reload failed; the previous certificate stays in use");
                }
            }
        }
    }
}

/// The client TLS config for an https upstream.
pub fn upstream_client_config(ca_file: Option<&PathBuf>) -> Result<ClientConfig, String> {
    let mut roots = RootCertStore::empty();
    match ca_file {
        Some(path) => {
            for cert in CertificateDer::pem_file_iter(path)
                .map_err(|e| format!("upstream_ca_file: {}: {e}", path.display()))?
            {
                let cert =
                    cert.map_err(|e| format!("upstream_ca_file: {}: {e}", path.display()))?;
                roots
                    .add(cert)
                    .map_err(|e| format!("upstream_ca_file: {}: {e}", path.display()))?;
            }
            if roots.is_empty() {
                return Err(format!(
                    "upstream_ca_file: {}: no certificate found",
                    path.display()
                ));
            }
        }
        None => {
            let native = rustls_native_certs::load_native_certs();
            for e in &native.errors {
                tracing::warn!(error = %e, "could not read a system root certificate");
            }
            let (added, _) = roots.add_parsable_certificates(native.certs);
            if added == 0 {
                tracing::warn!(
                    "no system root certificates found; https upstreams will fail verification (set upstream_ca_file)"
                );
            }
        }
    }
    ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("tls: {e}"))
        .map(|b| b.with_root_certificates(roots).with_no_client_auth())
}

/// A client config that trusts nothing (for http upstreams, where it is never used).
pub fn upstream_client_config_empty() -> Result<ClientConfig, String> {
    ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("tls: {e}"))
        .map(|b| {
            b.with_root_certificates(RootCertStore::empty())
                .with_no_client_auth()
        })
}
