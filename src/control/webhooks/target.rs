//! Where a delivery may go, and the one HTTP request that goes there.
//!
//! Safety rules (fail closed): the URL must be `https` (plain `http` only with
//! `webhooks.allow_private_targets`, which tests and private networks use); the
//! host is resolved and *every* address must be public — loopback, private,
//! link-local, unspecified, multicast, shared (CGNAT) and reserved ranges are
//! refused unless `allow_private_targets`. The connection goes to the address that
//! was checked (never a second lookup), so a DNS answer that changes between check
//! and connect (rebinding) cannot redirect it. Redirects are never followed (a 3xx
//! is a failed attempt); at most [`EXCERPT_MAX`] bytes of the answer are read.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::uri::Scheme;
use http::{Request, Uri};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

/// Bytes of a receiver's answer kept (and read) at most.
pub(crate) const EXCERPT_MAX: usize = 1024;

/// A checked target URL.
#[derive(Debug, Clone)]
pub(crate) struct Target {
    pub(crate) uri: Uri,
    pub(crate) https: bool,
    pub(crate) host: String,
    pub(crate) port: u16,
}

/// Parses and checks the form of an endpoint URL (not its addresses).
pub(crate) fn parse_url(url: &str, allow_private: bool) -> Result<Target, String> {
    let uri: Uri = url
        .parse()
        .map_err(|_| format!("url: {url:?} is not a URL such as https://example.com/hooks"))?;
    let https = match uri.scheme() {
        Some(s) if *s == Scheme::HTTPS => true,
        Some(s) if *s == Scheme::HTTP => {
            if !allow_private {
                return Err("url: must be https (plain http only with webhooks.allow_private_targets: true)".into());
            }
            false
        }
        _ => return Err(format!("url: {url:?} must start with https://")),
    };
    let auth = uri
        .authority()
        .ok_or_else(|| format!("url: {url:?} needs a host"))?;
    if auth.as_str().contains('@') {
        return Err("url: must not contain a user name or password".into());
    }
    let host = auth
        .host()
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_string();
    if host.is_empty() {
        return Err(format!("url: {url:?} needs a host"));
    }
    let port = auth.port_u16().unwrap_or(if https { 443 } else { 80 });
    Ok(Target {
        uri,
        https,
        host,
        port,
    })
}

/// Is this address one a webhook may not reach without `allow_private_targets`?
pub(crate) fn is_private(ip: IpAddr) -> bool {
    match ip.to_canonical() {
        IpAddr::V4(v4) => private_v4(v4),
        IpAddr::V6(v6) => private_v6(v6),
    }
}

fn private_v4(ip: Ipv4Addr) -> bool {
    let o = ip.octets();
    ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local()
        || ip.is_unspecified()
        || ip.is_broadcast()
        || ip.is_multicast()
        || o[0] == 0
        || (o[0] == 100 && (o[1] & 0xc0) == 64) // 100.64.0.0/10 shared (CGNAT)
        || (o[0] == 192 && o[1] == 0 && o[2] == 0) // 192.0.0.0/24 protocol assignments
        || (o[0] == 198 && (o[1] & 0xfe) == 18) // 198.18.0.0/15 benchmarking
        || o[0] >= 240 // reserved
}

fn private_v6(ip: Ipv6Addr) -> bool {
    let s = ip.segments();
    ip.is_loopback()
        || ip.is_unspecified()
        || ip.is_multicast()
        || (s[0] & 0xfe00) == 0xfc00 // unique local fc00::/7
        || (s[0] & 0xffc0) == 0xfe80 // link-local fe80::/10
        || (s[0] & 0xffc0) == 0xfec0 // site-local (deprecated)
        // NAT64 64:ff9b::/96 reaches the IPv4 address inside it.
        || (s[0] == 0x64 && s[1] == 0xff9b && s[2..6] == [0, 0, 0, 0] && {
            let v4 = Ipv4Addr::new((s[6] >> 8) as u8, s[6] as u8, (s[7] >> 8) as u8, s[7] as u8);
            private_v4(v4)
        })
}

/// Resolves the target and checks every address; returns the one to connect to.
pub(crate) async fn resolve(t: &Target, allow_private: bool) -> Result<SocketAddr, String> {
    let addrs: Vec<SocketAddr> = match t.host.parse::<IpAddr>() {
        Ok(ip) => vec![SocketAddr::new(ip, t.port)],
        Err(_) => tokio::time::timeout(
            Duration::from_secs(5),
            tokio::net::lookup_host((t.host.as_str(), t.port)),
        )
        .await
        .map_err(|_| format!("resolving {} timed out", t.host))?
        .map_err(|e| format!("cannot resolve {}: {e}", t.host))?
        .collect(),
    };
    if addrs.is_empty() {
        return Err(format!("{} has no address", t.host));
    }
    if !allow_private && let Some(bad) = addrs.iter().find(|a| is_private(a.ip())) {
        return Err(format!(
            "refused: {} resolves to {}, a loopback, private or link-local address (set webhooks.allow_private_targets: true to allow)",
            t.host,
            bad.ip()
        ));
    }
    Ok(addrs[0])
}

/// What one attempt got.
#[derive(Debug, Clone)]
pub(crate) struct Answer {
    pub(crate) status: u16,
    pub(crate) excerpt: String,
    pub(crate) duration: Duration,
}

/// Sends one delivery: resolve + check, connect to the checked address, POST,
/// read at most [`EXCERPT_MAX`] bytes. The whole attempt is bounded by `timeout`.
pub(crate) async fn send(
    t: &Target,
    allow_private: bool,
    tls: Option<Arc<rustls::ClientConfig>>,
    headers: Vec<(&'static str, String)>,
    body: Bytes,
    timeout: Duration,
) -> Result<Answer, String> {
    let started = Instant::now();
    match tokio::time::timeout(timeout, attempt(t, allow_private, tls, headers, body)).await {
        Ok(Ok((status, excerpt))) => Ok(Answer {
            status,
            excerpt,
            duration: started.elapsed(),
        }),
        Ok(Err(e)) => Err(e),
        Err(_) => Err(format!("timed out after {} ms", timeout.as_millis())),
    }
}

async fn attempt(
    t: &Target,
    allow_private: bool,
    tls: Option<Arc<rustls::ClientConfig>>,
    headers: Vec<(&'static str, String)>,
    body: Bytes,
) -> Result<(u16, String), String> {
    let addr = resolve(t, allow_private).await?;
    let tcp = TcpStream::connect(addr)
        .await
        .map_err(|e| format!("cannot connect to {addr}: {e}"))?;
    let _ = tcp.set_nodelay(true);
    let path = t
        .uri
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .to_string();
    let host_header = match t.uri.port_u16() {
        Some(p) => format!("{}:{p}", t.uri.host().unwrap_or(&t.host)),
        None => t.uri.host().unwrap_or(&t.host).to_string(),
    };
    let mut req = Request::post(path)
        .header(http::header::HOST, host_header)
        .header(http::header::CONTENT_TYPE, "application/json")
        .header(
            http::header::USER_AGENT,
            concat!("keygate-webhooks/", env!("CARGO_PKG_VERSION")),
        );
    for (k, v) in headers {
        req = req.header(k, v);
    }
    let req = req
        .body(Full::new(body))
        .map_err(|e| format!("cannot build the request: {e}"))?;
    if t.https {
        let cfg = tls.ok_or("no TLS configuration")?;
        let name = rustls::pki_types::ServerName::try_from(t.host.clone())
            .map_err(|_| format!("{} is not a TLS server name", t.host))?;
        let stream = tokio_rustls::TlsConnector::from(cfg)
            .connect(name, tcp)
            .await
            .map_err(|e| format!("TLS with {}: {e}", t.host))?;
        exchange(TokioIo::new(stream), req).await
    } else {
        exchange(TokioIo::new(tcp), req).await
    }
}

async fn exchange<IO>(io: IO, req: Request<Full<Bytes>>) -> Result<(u16, String), String>
where
    IO: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(io)
        .await
        .map_err(|e| format!("HTTP handshake: {e}"))?;
    let conn_task = tokio::spawn(conn);
    let res = sender
        .send_request(req)
        .await
        .map_err(|e| format!("no answer: {e}"))?;
    let status = res.status().as_u16();
    let mut body = res.into_body();
    let mut kept = Vec::new();
    while kept.len() < EXCERPT_MAX {
        match body.frame().await {
            Some(Ok(f)) => {
                if let Some(d) = f.data_ref() {
                    let room = EXCERPT_MAX - kept.len();
                    kept.extend_from_slice(&d[..d.len().min(room)]);
                }
            }
            _ => break,
        }
    }
    // The rest of the body is not read: the connection is dropped.
    drop(body);
    drop(sender);
    conn_task.abort();
    Ok((status, String::from_utf8_lossy(&kept).into_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn private_ranges() {
        for a in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "0.0.0.0",
            "100.64.0.1",
            "::1",
            "fe80::1",
            "fd00::1",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
            "64:ff9b::a00:1",
        ] {
            assert!(is_private(a.parse().unwrap()), "{a}");
        }
        for a in [
            "93.184.216.34",
            "1.1.1.1",
            "2606:4700::1111",
            "64:ff9b::101:101",
        ] {
            assert!(!is_private(a.parse().unwrap()), "{a}");
        }
    }

    #[test]
    fn url_forms() {
        assert!(parse_url("https://example.com/h", false).is_ok());
        assert!(parse_url("http://example.com/h", false).is_err());
        assert!(parse_url("http://example.com/h", true).is_ok());
        assert!(parse_url("ftp://example.com/h", true).is_err());
        assert!(parse_url("https://u:p@example.com/h", false).is_err());
        let t = parse_url("https://[::1]:8443/x?y=1", false).unwrap();
        assert_eq!((t.host.as_str(), t.port), ("::1", 8443));
    }

    #[tokio::test]
    async fn resolution_refuses_private_addresses() {
        for url in [
            "https://127.0.0.1/",
            "https://10.0.0.1/",
            "https://169.254.169.254/latest",
            "https://localhost/",
        ] {
            let t = parse_url(url, false).unwrap();
            let e = resolve(&t, false).await.unwrap_err();
            assert!(e.starts_with("refused"), "{url}: {e}");
        }
        let t = parse_url("http://127.0.0.1:9/", true).unwrap();
        assert!(resolve(&t, true).await.is_ok());
    }
}
