//! TLS: the listener's certificate (reloaded when its files change; a bad pair keeps
//! the old one) and the client configuration for an https upstream (system roots, or
//! `upstream_ca_file`). rustls with the ring provider.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::{ClientConfig, RootCertStore, ServerConfig};

use crate::config::TlsPaths;
use crate::config::identity::{Identity, identity};
use crate::observe::metrics::Metrics;

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Reads a certificate chain and its private key; checks that they belong together.
pub(crate) fn load_pair(paths: &TlsPaths) -> Result<CertifiedKey, String> {
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
pub(crate) struct CertResolver {
    current: ArcSwap<CertifiedKey>,
}

impl ResolvesServerCert for CertResolver {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.load_full())
    }
}

/// What identifies a version of the files: device, inode, modification time and
/// length of each, through symlinks (a Kubernetes Secret update swaps a symlink).
fn fingerprint(paths: &TlsPaths) -> Option<[Identity; 2]> {
    Some([identity(&paths.cert_file)?, identity(&paths.key_file)?])
}

/// The listener's TLS: a server config whose certificate follows the files.
#[derive(Debug, Clone)]
pub(crate) struct ListenerTls {
    pub(crate) config: Arc<ServerConfig>,
    resolver: Arc<CertResolver>,
    paths: TlsPaths,
    /// The version of the files in use (taken before they were read).
    loaded: Option<[Identity; 2]>,
}

/// The leaf's expiry (Unix seconds), for the metrics.
fn expiry(pair: &CertifiedKey) -> f64 {
    pair.cert
        .first()
        .and_then(|c| not_after(c))
        .map_or(0.0, |s| s as f64)
}

impl ListenerTls {
    pub(crate) fn new(paths: &TlsPaths, metrics: &Metrics) -> Result<Self, String> {
        let loaded = fingerprint(paths);
        let pair = load_pair(paths)?;
        metrics.tls_cert_expiry.set(expiry(&pair));
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
            loaded,
        })
    }

    /// Polls the files every `every`; on change loads the new pair, keeping the old
    /// one (and logging once) when the new pair is bad.
    pub(crate) async fn watch(self, every: Duration, metrics: Arc<Metrics>) {
        let mut seen = self.loaded.clone();
        loop {
            tokio::time::sleep(every).await;
            let now = fingerprint(&self.paths);
            if now == seen {
                continue;
            }
            seen = now;
            match load_pair(&self.paths) {
                Ok(pair) => {
                    metrics.tls_cert_expiry.set(expiry(&pair));
                    metrics.reload(crate::observe::metrics::ReloadWhat::Tls, true);
                    self.resolver.current.store(Arc::new(pair));
                    tracing::info!(cert = %self.paths.cert_file.display(), "TLS certificate reloaded");
                }
                Err(e) => {
                    metrics.reload(crate::observe::metrics::ReloadWhat::Tls, false);
                    tracing::error!(error = %e, "TLS certificate reload failed; the previous certificate stays in use");
                }
            }
        }
    }
}

/// The client TLS config for an https upstream.
pub(crate) fn upstream_client_config(ca_file: Option<&PathBuf>) -> Result<ClientConfig, String> {
    let roots = match ca_file {
        Some(path) => {
            let mut roots = RootCertStore::empty();
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
            roots
        }
        None => system_roots("https upstreams will fail verification (set upstream_ca_file)"),
    };
    client_config(roots)
}

/// The client TLS config for a `rediss://` cluster store: the PEM certificates of
/// `cluster.redis_ca_file` (already checked when the config was loaded), else the
/// system roots.
pub(crate) fn redis_client_config(ca_pem: Option<&[u8]>) -> Result<ClientConfig, String> {
    let roots = match ca_pem {
        Some(pem) => {
            let mut roots = RootCertStore::empty();
            for cert in CertificateDer::pem_slice_iter(pem) {
                let cert = cert.map_err(|e| format!("cluster.redis_ca_file: {e}"))?;
                roots
                    .add(cert)
                    .map_err(|e| format!("cluster.redis_ca_file: {e}"))?;
            }
            roots
        }
        None => {
            system_roots("a rediss:// store will fail verification (set cluster.redis_ca_file)")
        }
    };
    client_config(roots)
}

/// The system's root certificates; `none_then` says what fails without any.
fn system_roots(none_then: &str) -> RootCertStore {
    let mut roots = RootCertStore::empty();
    let native = rustls_native_certs::load_native_certs();
    for e in &native.errors {
        tracing::warn!(error = %e, "could not read a system root certificate");
    }
    let (added, _) = roots.add_parsable_certificates(native.certs);
    if added == 0 {
        tracing::warn!("no system root certificates found; {none_then}");
    }
    roots
}

fn client_config(roots: RootCertStore) -> Result<ClientConfig, String> {
    ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("tls: {e}"))
        .map(|b| b.with_root_certificates(roots).with_no_client_auth())
}

/// Reads one DER TLV at `pos`: (tag, content range, end).
fn der_tlv(d: &[u8], pos: usize) -> Option<(u8, std::ops::Range<usize>, usize)> {
    let tag = *d.get(pos)?;
    let first = *d.get(pos + 1)?;
    let (len, start) = if first < 0x80 {
        (usize::from(first), pos + 2)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 {
            return None;
        }
        let mut len = 0usize;
        for i in 0..n {
            len = (len << 8) | usize::from(*d.get(pos + 2 + i)?);
        }
        (len, pos + 2 + n)
    };
    let end = start.checked_add(len)?;
    (end <= d.len()).then_some((tag, start..end, end))
}

/// The certificate's notAfter as Unix seconds (a small DER walk: Certificate →
/// TBSCertificate → [version] serial signature issuer validity).
pub(crate) fn not_after(cert_der: &[u8]) -> Option<i64> {
    let (_, cert, _) = der_tlv(cert_der, 0)?;
    let (_, tbs, _) = der_tlv(cert_der, cert.start)?;
    let mut pos = tbs.start;
    let (tag, _, end) = der_tlv(cert_der, pos)?;
    if tag == 0xa0 {
        pos = end; // explicit version
    }
    for _ in 0..3 {
        pos = der_tlv(cert_der, pos)?.2; // serial, signature, issuer
    }
    let (_, validity, _) = der_tlv(cert_der, pos)?;
    let (_, _, after_not_before) = der_tlv(cert_der, validity.start)?;
    let (tag, time, _) = der_tlv(cert_der, after_not_before)?;
    let s = std::str::from_utf8(&cert_der[time]).ok()?;
    let digits = |a: usize, b: usize| s.get(a..b)?.parse::<i32>().ok();
    let (year, rest) = match tag {
        0x17 => {
            // UTCTime YYMMDDHHMMSSZ
            let yy = digits(0, 2)?;
            (if yy >= 50 { 1900 + yy } else { 2000 + yy }, 2)
        }
        0x18 => (digits(0, 4)?, 4), // GeneralizedTime YYYYMMDDHHMMSSZ
        _ => return None,
    };
    let month = time::Month::try_from(u8::try_from(digits(rest, rest + 2)?).ok()?).ok()?;
    let date = time::Date::from_calendar_date(
        year,
        month,
        u8::try_from(digits(rest + 2, rest + 4)?).ok()?,
    )
    .ok()?;
    let t = time::Time::from_hms(
        u8::try_from(digits(rest + 4, rest + 6)?).ok()?,
        u8::try_from(digits(rest + 6, rest + 8)?).ok()?,
        u8::try_from(digits(rest + 8, rest + 10)?).ok()?,
    )
    .ok()?;
    Some(date.with_time(t).assume_utc().unix_timestamp())
}
