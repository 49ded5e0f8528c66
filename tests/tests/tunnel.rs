//! WebSockets and other upgraded connections through the real proxy: a tunnel with one idle
//! timer that traffic either way resets (`tunnel_idle_timeout`), not the per-direction client
//! body and upstream read timeouts that cut a quiet WebSocket before, and a tunnel's end is not
//! a client fault. The timeouts are scaled down: 1 s for the body and read timeouts, 3 s idle.

use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use strangler_tests::*;

const HANDSHAKE: &[u8] = b"GET /ws HTTP/1.1\r\nHost: t\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n";

/// Reads exactly `n` bytes within `limit`.
async fn read_n(s: &mut TcpStream, n: usize, limit: Duration) -> Vec<u8> {
    let mut buf = vec![0u8; n];
    tokio::time::timeout(limit, s.read_exact(&mut buf))
        .await
        .unwrap_or_else(|_| panic!("{n} bytes did not come within {limit:?}"))
        .expect("the tunnel closed early");
    buf
}

/// Connects through the proxy and sends the WebSocket handshake; the stream and the answer's
/// head (lowercase).
async fn upgrade(p: &Proxy) -> (TcpStream, String) {
    let mut s = TcpStream::connect(p.addr).await.unwrap();
    s.write_all(HANDSHAKE).await.unwrap();
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        head.extend(read_n(&mut s, 1, Duration::from_secs(5)).await);
    }
    (s, String::from_utf8_lossy(&head).to_ascii_lowercase())
}

#[tokio::test]
async fn a_websocket_stays_open_while_either_side_talks_and_closes_when_both_are_quiet() {
    let ws = Upstream::start("legacy", Behaviour::Upgrade).await;
    let p = ProxyBuilder::new(ws.addr)
        .legacy(UpstreamConfig::new(ws.addr).read_timeout("1s"))
        .rules("r.yaml", "routes: []\n")
        .setting("client_body_timeout", "1s")
        .setting("tunnel_idle_timeout", "3s")
        .start()
        .await;
    let (s, head) = upgrade(&p).await;
    assert!(head.starts_with("http/1.1 101"), "{head}");
    assert!(head.contains("upgrade: websocket"), "{head}");

    // 1 MiB each way.
    let data: Vec<u8> = (0..1 << 20).map(|i| (i % 251) as u8).collect();
    let (mut rd, mut wr) = s.into_split();
    let sent = data.clone();
    let writer = tokio::spawn(async move {
        wr.write_all(&sent).await.unwrap();
        wr
    });
    let mut back = vec![0u8; data.len()];
    tokio::time::timeout(Duration::from_secs(20), rd.read_exact(&mut back))
        .await
        .expect("the echo did not come back")
        .unwrap();
    assert!(back == data, "the echo differs");
    let mut s = rd.reunite(writer.await.unwrap()).unwrap();

    // Quiet for longer than the client body and upstream read timeouts: still open.
    tokio::time::sleep(Duration::from_secs(2)).await;
    s.write_all(b"ping\n").await.unwrap();
    assert_eq!(read_n(&mut s, 5, Duration::from_secs(5)).await, b"ping\n");

    // Only the server talks, for 4 s (longer than the idle timeout): still open.
    s.write_all(b"push\n").await.unwrap();
    let ticks = read_n(&mut s, 40, Duration::from_secs(10)).await;
    assert_eq!(ticks, b"tick\n".repeat(8));

    // Both quiet: closed at the idle timeout, measured from the last tick.
    let quiet = Instant::now();
    let mut rest = Vec::new();
    let n = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut rest))
        .await
        .expect("the tunnel was not closed at its idle timeout")
        .unwrap_or(0);
    let took = quiet.elapsed();
    assert_eq!(n, 0, "{rest:?}");
    assert!(
        took >= Duration::from_millis(2500) && took < Duration::from_secs(8),
        "closed after {took:?}, the idle timeout is 3 s"
    );
    wait_for("the tunnel counted", Duration::from_secs(5), || async {
        p.metric(r#"strangler_tunnels_closed_total{reason="idle_timeout"}"#)
            .await
            == 1.0
    })
    .await;
    assert_eq!(p.metric("strangler_tunnels_open").await, 0.0);
    assert_eq!(p.client_faults("body_timeout").await, 0.0);
    // The latency figures (and a rollout's p99 gate) see the handshake, not the ~10 s the
    // tunnel stayed open.
    let took = p
        .metric(r#"strangler_upstream_duration_seconds_sum{route="default",target="legacy"}"#)
        .await;
    assert!(took > 0.0 && took < 2.0, "{took}");
    let text = get(p.admin, "/metrics", &[]).await.text();
    assert!(
        !text.contains("strangler_upstream_errors_total{"),
        "a tunnel's end was counted against the upstream:\n{text}"
    );
    let errors = p.error_lines();
    assert!(errors.is_empty(), "{errors:#?}");
}

/// A client that closes its side ends the tunnel at once, counted as the client's close.
#[tokio::test]
async fn a_client_closing_ends_the_tunnel() {
    let ws = Upstream::start("legacy", Behaviour::Upgrade).await;
    let p = ProxyBuilder::new(ws.addr)
        .rules("r.yaml", "routes: []\n")
        .start()
        .await;
    let (mut s, _) = upgrade(&p).await;
    s.write_all(b"hello").await.unwrap();
    assert_eq!(read_n(&mut s, 5, Duration::from_secs(5)).await, b"hello");
    drop(s);
    wait_for("the close counted", Duration::from_secs(5), || async {
        p.metric(r#"strangler_tunnels_closed_total{reason="client_closed"}"#)
            .await
            == 1.0
    })
    .await;
    assert_eq!(p.metric("strangler_tunnels_open").await, 0.0);
}
