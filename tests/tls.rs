//! TLS on the listener (HTTP/1.1 and HTTP/2 by ALPN, certificate reload) and https
//! upstreams with a custom CA, with certificates made in the test (rcgen).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::Full;
use hyper_util::rt::{TokioExecutor, TokioIo};
use keygate::{Gateway, GatewayOptions};
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use support::*;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

fn new_ca(name: &str) -> CertifiedIssuer<'static, KeyPair> {
    let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.distinguished_name.push(DnType::CommonName, name);
    CertifiedIssuer::self_signed(p, KeyPair::generate().unwrap()).unwrap()
}

/// A leaf for localhost/127.0.0.1: (certificate PEM, key PEM, certificate DER).
fn leaf(ca: &CertifiedIssuer<'static, KeyPair>, cn: &str) -> (String, String, Vec<u8>) {
    let key = KeyPair::generate().unwrap();
    let mut p =
        CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()]).unwrap();
    p.distinguished_name.push(DnType::CommonName, cn);
    let cert = p.signed_by(&key, ca).unwrap();
    (cert.pem(), key.serialize_pem(), cert.der().to_vec())
}

fn client_config(ca: &CertifiedIssuer<'static, KeyPair>, alpn: &[u8]) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(CertificateDer::from(ca.der().to_vec())).unwrap();
    let mut cfg = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    cfg.alpn_protocols = vec![alpn.to_vec()];
    Arc::new(cfg)
}

/// Connects with TLS; returns the stream, the negotiated ALPN and the server's leaf.
async fn connect(
    addr: SocketAddr,
    cfg: Arc<rustls::ClientConfig>,
) -> (
    tokio_rustls::client::TlsStream<TcpStream>,
    Option<Vec<u8>>,
    Vec<u8>,
) {
    let tcp = TcpStream::connect(addr).await.unwrap();
    let tls = TlsConnector::from(cfg)
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .unwrap();
    let (_, conn) = tls.get_ref();
    let alpn = conn.alpn_protocol().map(<[u8]>::to_vec);
    let leaf = conn.peer_certificates().unwrap()[0].to_vec();
    (tls, alpn, leaf)
}

fn get(path: &str) -> http::Request<Full<Bytes>> {
    http::Request::builder()
        .uri(format!("https://localhost{path}"))
        .header("x-api-key", SECRET_ALL)
        .header("host", "localhost")
        .body(Full::new(Bytes::new()))
        .unwrap()
}

async fn start_tls_gateway(dir: &TempDir, upstream: SocketAddr) -> Gateway {
    let cfg = TestConfig::new(upstream)
        .tls("tls.crt", "tls.key")
        .write(dir);
    Gateway::start(&cfg, GatewayOptions::default())
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn http1_and_http2_over_tls_by_alpn() {
    let upstream = Upstream::start().await;
    let ca = new_ca("keygate test CA");
    let (cert, key, _) = leaf(&ca, "gateway one");
    let dir = TempDir::new();
    dir.write("tls.crt", &cert);
    dir.write("tls.key", &key);
    dir.write("keys.yaml", &keys_yaml("kg_x"));
    let gw = start_tls_gateway(&dir, upstream.addr).await;

    let (tls, alpn, _) = connect(gw.public_addr, client_config(&ca, b"http/1.1")).await;
    assert_eq!(alpn.as_deref(), Some(&b"http/1.1"[..]));
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .unwrap();
    tokio::spawn(conn);
    let res = send.send_request(get("/api/v1/jobs")).await.unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(upstream.last().headers["x-forwarded-proto"], "https");

    let (tls, alpn, _) = connect(gw.public_addr, client_config(&ca, b"h2")).await;
    assert_eq!(alpn.as_deref(), Some(&b"h2"[..]));
    let (mut send, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls))
            .await
            .unwrap();
    tokio::spawn(conn);
    let res = send.send_request(get("/api/v1/jobs/2")).await.unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(upstream.last().target, "/api/v1/jobs/2");
    let res = send.send_request(get("/nowhere")).await.unwrap();
    assert_eq!(res.status(), 403);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn replaced_certificate_files_are_used_for_new_handshakes() {
    let upstream = Upstream::start().await;
    let ca = new_ca("keygate test CA");
    let (cert1, key1, der1) = leaf(&ca, "first");
    let dir = TempDir::new();
    dir.write("tls.crt", &cert1);
    dir.write("tls.key", &key1);
    dir.write("keys.yaml", &keys_yaml("kg_x"));
    let gw = start_tls_gateway(&dir, upstream.addr).await;
    let cfg = client_config(&ca, b"http/1.1");
    assert_eq!(connect(gw.public_addr, cfg.clone()).await.2, der1);

    // Replace both files the way a Secret update does: new files renamed into place.
    let (cert2, key2, der2) = leaf(&ca, "second");
    dir.write("tls.crt.new", &cert2);
    dir.write("tls.key.new", &key2);
    std::fs::rename(dir.path().join("tls.key.new"), dir.path().join("tls.key")).unwrap();
    std::fs::rename(dir.path().join("tls.crt.new"), dir.path().join("tls.crt")).unwrap();
    let deadline = std::time::Instant::now() + DEADLINE;
    loop {
        let served = connect(gw.public_addr, cfg.clone()).await.2;
        if served == der2 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "new handshakes use the new certificate within {DEADLINE:?}"
        );
        tokio::time::sleep(POLL).await;
    }

    // A broken pair keeps the last good one: wait for the watcher to count the
    // failed reload, then handshake.
    let failures = "keygate_reloads_total{result=\"failure\",what=\"tls\"}";
    let m = Metrics(gw.metrics_addr);
    let before = m.value(failures).await;
    dir.write(
        "tls.key",
        "-----BEGIN PRIVATE KEY-----\nnot a key\n-----END PRIVATE KEY-----\n",
    );
    m.wait_at_least(failures, before + 1.0).await;
    assert_eq!(connect(gw.public_addr, cfg.clone()).await.2, der2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn https_upstream_with_a_custom_ca() {
    // An https upstream whose certificate is signed by a private CA.
    let ca = new_ca("upstream CA");
    let (cert, key, _) = leaf(&ca, "upstream");
    let chain = vec![CertificateDer::from_pem_slice(cert.as_bytes()).unwrap()];
    let pk = rustls::pki_types::PrivateKeyDer::from_pem_slice(key.as_bytes()).unwrap();
    let server_cfg = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(chain, pk)
    .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(server_cfg));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let up_addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (tcp, _) = listener.accept().await.unwrap();
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let svc = hyper::service::service_fn(
                    |req: http::Request<hyper::body::Incoming>| async move {
                        let body = format!("tls upstream saw {}", req.uri().path());
                        Ok::<_, std::convert::Infallible>(http::Response::new(Full::new(
                            Bytes::from(body),
                        )))
                    },
                );
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tls), svc)
                    .await;
            });
        }
    });

    let dir = TempDir::new();
    dir.write("ca.pem", &ca.pem());
    dir.write("keys.yaml", &keys_yaml("kg_x"));
    let cfg_text = config_yaml(up_addr, &format!("{ROUTES}upstream_ca_file: ca.pem\n")).replace(
        &format!("http://{up_addr}"),
        &format!("https://localhost:{}", up_addr.port()),
    );
    let cfg = dir.write("config.yaml", &cfg_text);
    let gw = Gateway::start(&cfg, GatewayOptions::default())
        .await
        .unwrap();
    let addr = gw.public_addr;
    let r = tokio::task::spawn_blocking(move || {
        Reply::parse(&raw_exchange(
            addr,
            format!("GET /api/v1/jobs/9 HTTP/1.1\r\nHost: localhost\r\nX-API-Key: {SECRET_ALL}\r\nConnection: close\r\n\r\n").as_bytes(),
        ))
    })
    .await
    .unwrap();
    assert_eq!(r.status, 200, "{}", r.raw);
    assert_eq!(r.body, "tls upstream saw /api/v1/jobs/9");

    // Without the CA the upstream's certificate is not trusted: 502.
    let dir2 = TempDir::new();
    dir2.write("keys.yaml", &keys_yaml("kg_x"));
    let cfg2 = dir2.write(
        "config.yaml",
        &cfg_text.replace("upstream_ca_file: ca.pem\n", ""),
    );
    let gw2 = Gateway::start(&cfg2, GatewayOptions::default())
        .await
        .unwrap();
    let addr2 = gw2.public_addr;
    let r = tokio::task::spawn_blocking(move || {
        Reply::parse(&raw_exchange(
            addr2,
            format!("GET /api/v1/jobs/9 HTTP/1.1\r\nHost: localhost\r\nX-API-Key: {SECRET_ALL}\r\nConnection: close\r\n\r\n").as_bytes(),
        ))
    })
    .await
    .unwrap();
    assert_eq!(r.status, 502, "{}", r.raw);
}
