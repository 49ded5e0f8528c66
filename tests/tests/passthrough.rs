//! What a proxy must not get wrong: hop-by-hop headers, forwarding headers, trace context, large
//! and chunked bodies intact, and clear 502/504 answers when an upstream fails.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::Request;
use hyper::body::Frame;
use hyper_util::rt::TokioIo;
use strangler_tests::*;

#[tokio::test]
async fn hop_by_hop_removed_forwarding_and_trace_headers_added() {
    let legacy = Upstream::start("legacy", Behaviour::Echo).await;
    let p = ProxyBuilder::new(legacy.addr)
        .rules("r.yaml", "routes: []\n")
        .start()
        .await;
    let r = get(
        p.addr,
        "/x",
        &[
            ("connection", "keep-alive, x-secret"),
            ("x-secret", "hop"),
            ("keep-alive", "timeout=5"),
            ("proxy-authorization", "Basic Zm9vOmJhcg=="),
            ("te", "gzip"),
            ("x-end-to-end", "kept"),
            ("x-forwarded-for", "10.0.0.1"),
        ],
    )
    .await;
    assert_eq!(r.status, 200);
    for h in ["x-secret", "keep-alive", "proxy-authorization", "te"] {
        assert_eq!(r.received_header(h), None, "{h} reached the upstream");
    }
    assert_eq!(r.received_header("x-end-to-end").as_deref(), Some("kept"));
    assert_eq!(
        r.received_header("x-forwarded-for").as_deref(),
        Some("10.0.0.1, 127.0.0.1")
    );
    assert_eq!(
        r.received_header("x-forwarded-proto").as_deref(),
        Some("http")
    );
    assert_eq!(
        r.received_header("x-forwarded-host").as_deref(),
        Some("shop.test")
    );
    let tp = r
        .received_header("traceparent")
        .expect("traceparent started");
    assert_eq!(tp.len(), 55, "{tp}");
    // The upstream's keep-alive response header does not reach the client.
    assert!(r.headers.get("keep-alive").is_none());

    let given = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let r = get(p.addr, "/x", &[("traceparent", given)]).await;
    assert_eq!(r.received_header("traceparent").as_deref(), Some(given));
}

#[tokio::test]
async fn large_and_chunked_bodies_stream_through_intact() {
    let legacy = Upstream::start("legacy", Behaviour::EchoBody).await;
    let p = ProxyBuilder::new(legacy.addr)
        .rules("r.yaml", "routes: []\n")
        .start()
        .await;
    let big: Vec<u8> = (0..6 * 1024 * 1024u32).map(|i| (i % 251) as u8).collect();
    let req = Request::post("/upload")
        .header("host", "t")
        .body(Full::new(Bytes::from(big.clone())))
        .unwrap();
    let r = request(p.addr, req).await.unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.body.len(), big.len());
    assert!(r.body == big, "6 MiB body changed on the way");

    // Chunked: a streamed body of unknown length.
    let body = Chunks(
        (0..64)
            .map(|i| Bytes::from(vec![i as u8; 10_000]))
            .collect(),
    );
    let stream = tokio::net::TcpStream::connect(p.addr).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    let req = Request::post("/chunked")
        .header("host", "t")
        .body(body)
        .unwrap();
    let resp = sender.send_request(req).await.unwrap();
    let got = http_body_util::BodyExt::collect(resp.into_body())
        .await
        .unwrap()
        .to_bytes();
    let want: Vec<u8> = (0..64).flat_map(|i| vec![i as u8; 10_000]).collect();
    assert_eq!(got.len(), want.len());
    assert!(got == want, "chunked body changed on the way");
}

/// A body of unknown length: hyper sends it with `Transfer-Encoding: chunked`.
struct Chunks(std::collections::VecDeque<Bytes>);

impl hyper::body::Body for Chunks {
    type Data = Bytes;
    type Error = std::convert::Infallible;
    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        std::task::Poll::Ready(self.0.pop_front().map(|b| Ok(Frame::data(b))))
    }
}

#[tokio::test]
async fn upstream_down_is_502_and_slow_is_504() {
    let legacy = Upstream::start("legacy", Behaviour::Echo).await;
    let slow = Upstream::start("slow", Behaviour::Slow(Duration::from_secs(3))).await;
    let (_reserved, down) = proxy::dead_port(); // nothing listens here
    let rules = r#"
routes:
  - { name: to-down, match: { path: { prefix: /down } }, target: { service: down } }
  - { name: to-slow, match: { path: { prefix: /slow } }, target: { service: slow } }
"#;
    let p = ProxyBuilder::new(legacy.addr)
        .service("down", UpstreamConfig::new(down))
        .service("slow", UpstreamConfig::new(slow.addr).read_timeout("300ms"))
        .rules("r.yaml", rules)
        .start()
        .await;
    let r = get(p.addr, "/down", &[]).await;
    assert_eq!(r.status, 502, "{}", r.text());
    assert!(
        r.text()
            .contains(&format!("upstream down ({down}) refused the connection")),
        "{}",
        r.text()
    );
    let r = get(p.addr, "/slow", &[]).await;
    assert_eq!(r.status, 504, "{}", r.text());
    assert!(r.text().contains("upstream slow"), "{}", r.text());
    assert!(r.text().contains("did not answer in time"), "{}", r.text());
    assert_eq!(p.metric(r#"strangler_upstream_errors_total{kind="connect_refused",route="to-down",target="down"}"#).await, 1.0);
    assert_eq!(
        p.metric(
            r#"strangler_upstream_errors_total{kind="read_timeout",route="to-slow",target="slow"}"#
        )
        .await,
        1.0
    );
    let logs = p.logs();
    assert!(
        logs.contains("route=\"to-down\"") && logs.contains("status=502"),
        "access log:\n{logs}"
    );
}

#[tokio::test]
async fn raw_http10_and_pipelined_requests_work() {
    let legacy = Upstream::start("legacy", Behaviour::Echo).await;
    let p = ProxyBuilder::new(legacy.addr)
        .rules("r.yaml", "routes: []\n")
        .start()
        .await;
    let text = raw_exchange(
        p.addr,
        b"GET /a HTTP/1.1\r\nHost: t\r\n\r\nGET /b HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
        Duration::from_secs(10),
    )
    .await;
    assert_eq!(text.matches("HTTP/1.1 200").count(), 2, "{text}");
}

#[tokio::test]
async fn cleartext_http2_clients_are_served() {
    let legacy = Upstream::start("legacy", Behaviour::Echo).await;
    let p = ProxyBuilder::new(legacy.addr)
        .rules("r.yaml", "routes: []\n")
        .start()
        .await;
    let url = format!("http://{}/h2", p.addr);
    let out = tokio::process::Command::new("curl")
        .args([
            "-s",
            "--http2-prior-knowledge",
            "-o",
            "/dev/null",
            "-w",
            "%{http_version} %{http_code}",
            &url,
        ])
        .output()
        .await
        .expect("curl is installed by .ci/run");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "2 200");
}
