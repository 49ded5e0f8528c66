//! A plain HTTP/1.1 client (hyper, one connection per request) for talking to the proxy, and
//! raw-socket helpers for what no well-behaved client sends.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::Request;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A whole response.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: http::HeaderMap,
    pub body: Bytes,
}

impl Reply {
    /// The echo upstream's JSON description of the request it got.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }

    /// Which upstream answered (`x-upstream`).
    pub fn upstream(&self) -> &str {
        self.headers
            .get("x-upstream")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// A header the upstream received (first value), from the echo JSON.
    pub fn received_header(&self, name: &str) -> Option<String> {
        self.json()["headers"][name][0].as_str().map(str::to_string)
    }
}

/// Sends one request on a new connection.
pub async fn request(addr: SocketAddr, req: Request<Full<Bytes>>) -> anyhow::Result<Reply> {
    let stream = TcpStream::connect(addr).await?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(conn);
    let resp = sender.send_request(req).await?;
    let (parts, body) = resp.into_parts();
    let body = body.collect().await?.to_bytes();
    Ok(Reply {
        status: parts.status.as_u16(),
        headers: parts.headers,
        body,
    })
}

/// `GET path` with the given headers.
pub async fn get(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> Reply {
    let mut b = Request::get(path);
    if !headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("host")) {
        b = b.header("host", "shop.test");
    }
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    request(addr, b.body(Full::new(Bytes::new())).unwrap())
        .await
        .expect("request")
}

/// `POST path` of a JSON `body` (`content-type: application/json`, `host: shop.test` unless
/// `headers` say otherwise).
pub async fn post(
    addr: SocketAddr,
    path: &str,
    body: impl AsRef<[u8]>,
    headers: &[(&str, &str)],
) -> Reply {
    let mut b = Request::post(path);
    for (name, default) in [("host", "shop.test"), ("content-type", "application/json")] {
        if !headers.iter().any(|(k, _)| k.eq_ignore_ascii_case(name)) {
            b = b.header(name, default);
        }
    }
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    let body = Bytes::copy_from_slice(body.as_ref());
    request(addr, b.body(Full::new(body)).unwrap())
        .await
        .expect("request")
}

/// Writes `bytes` on a new connection; what comes back until the peer closes or `limit` passes.
pub async fn raw_exchange(addr: SocketAddr, bytes: &[u8], limit: Duration) -> String {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(bytes).await.unwrap();
    read_until_closed(&mut s, limit).await.0
}

/// Reads until the peer closes (or resets) or `limit` passes: the text read, and whether the
/// peer closed.
pub async fn read_until_closed(s: &mut TcpStream, limit: Duration) -> (String, bool) {
    let mut out = Vec::new();
    let closed = tokio::time::timeout(limit, s.read_to_end(&mut out))
        .await
        .is_ok();
    (String::from_utf8_lossy(&out).into_owned(), closed)
}

/// A stable hash for comparing bodies (FNV-1a 64).
pub fn hash(b: &[u8]) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for x in b {
        h ^= u64::from(*x);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{h:016x}")
}
