//! HTTP/1.x edge cases (RFC 9110/9112) over raw sockets: each test asserts what a direct,
//! standards-following server does, and that nothing malformed or smuggled reaches the upstream.
//! Client faults are answered and counted as the client's (`strangler_downstream_errors_total`),
//! never as the upstream's.

use std::time::Duration;

use strangler_tests::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The proxy with no routes; `setting`: one config setting (key, value), if any.
async fn plain_proxy(setting: Option<(&str, &str)>) -> (Upstream, Proxy) {
    let legacy = Upstream::start("legacy", Behaviour::Echo).await;
    let mut b = ProxyBuilder::new(legacy.addr).rules("r.yaml", "routes: []\n");
    if let Some((key, value)) = setting {
        b = b.setting(key, value);
    }
    let p = b.start().await;
    (legacy, p)
}

#[tokio::test]
async fn short_requests_get_400_at_once() {
    let (legacy, p) = plain_proxy(None).await;
    // Shorter than the 24-byte HTTP/2 preface: a direct server answers these at once.
    for bad in [
        &b"GET /\r\n\r\n"[..],
        b"GARBAGE\r\n\r\n",
        b"GET / HTTP/1.1\r\n\r\r\n\r\n",
    ] {
        let out = raw_exchange(p.addr, bad, Duration::from_secs(5)).await;
        assert!(out.starts_with("HTTP/1.1 400"), "{bad:?} → {out:?}");
    }
    let ok = raw_exchange(p.addr, b"GET / HTTP/1.0\r\n\r\n", Duration::from_secs(5)).await;
    assert!(ok.starts_with("HTTP/1.1 200"), "{ok:?}");
    assert_eq!(
        legacy.hits(),
        1,
        "only the valid request reached the upstream"
    );
    assert_eq!(p.client_faults("bad_request").await, 3.0);
}

#[tokio::test]
async fn idle_connections_are_closed_after_the_header_timeout() {
    let (_legacy, p) = plain_proxy(Some(("client_header_timeout", "2s"))).await;
    let mut idle = Vec::new();
    for _ in 0..500 {
        idle.push(TcpStream::connect(p.addr).await.unwrap());
    }
    // A few that start a header and never finish it.
    for _ in 0..5 {
        let mut s = TcpStream::connect(p.addr).await.unwrap();
        s.write_all(b"GET / HTTP/1.1\r\nHost: t\r\n").await.unwrap();
        idle.push(s);
    }
    // Normal requests are answered while the idle ones wait.
    for _ in 0..20 {
        assert_eq!(get(p.addr, "/x", &[]).await.status, 200);
    }
    // Every idle connection is closed by the proxy, without an answer.
    for mut s in idle {
        let (out, closed) = read_until_closed(&mut s, Duration::from_secs(20)).await;
        assert_eq!(out, "", "an idle connection got an answer");
        assert!(closed, "connection still open after the header timeout");
    }
    assert_eq!(p.client_faults("header_timeout").await, 505.0);
    no_errors_logged(&p);
}

/// Client faults are counted, and logged at DEBUG: an operator's ERROR means the proxy or an
/// upstream failed.
fn no_errors_logged(p: &Proxy) {
    let errors = p.error_lines();
    assert!(
        errors.is_empty(),
        "client faults logged as errors: {errors:#?}"
    );
}

#[tokio::test]
async fn slow_header_is_closed_at_the_header_timeout() {
    let (legacy, p) = plain_proxy(Some(("client_header_timeout", "1s"))).await;
    let mut s = TcpStream::connect(p.addr).await.unwrap();
    let started = std::time::Instant::now();
    // One byte every 100 ms: each read is quick, the whole header never comes in time.
    let header = b"GET / HTTP/1.1\r\nHost: t\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n\r\n";
    let mut closed = false;
    for b in header {
        if s.write_all(&[*b]).await.is_err() {
            closed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        if started.elapsed() > Duration::from_secs(6) {
            break;
        }
    }
    let (out, closed_after) = read_until_closed(&mut s, Duration::from_secs(5)).await;
    assert!(closed || out.is_empty(), "{out}");
    assert!(
        closed || closed_after,
        "the slow header's connection is still open"
    );
    assert_eq!(legacy.hits(), 0);
    assert_eq!(p.client_faults("header_timeout").await, 1.0);
    no_errors_logged(&p);
}

#[tokio::test]
async fn idle_keepalive_connections_are_closed() {
    let (_legacy, p) = plain_proxy(Some(("keepalive_timeout", "1s"))).await;
    let mut s = TcpStream::connect(p.addr).await.unwrap();
    s.write_all(b"GET /a HTTP/1.1\r\nHost: t\r\n\r\n")
        .await
        .unwrap();
    // The answer comes, then the idle connection is closed by the proxy.
    let (out, closed) = read_until_closed(&mut s, Duration::from_secs(15)).await;
    assert!(out.starts_with("HTTP/1.1 200"), "{out}");
    assert!(closed, "the idle keep-alive connection is still open");
}

#[tokio::test]
async fn invalid_request_targets_get_400_and_are_not_forwarded() {
    let (legacy, p) = plain_proxy(None).await;
    for bad in [
        &b"GET /get me HTTP/1.1\r\nHost: t\r\n\r\n"[..],
        b"GET /get\0me HTTP/1.1\r\nHost: t\r\n\r\n",
        b"GET /a\"b<c> HTTP/1.1\r\nHost: t\r\n\r\n",
    ] {
        let out = raw_exchange(p.addr, bad, Duration::from_secs(5)).await;
        assert!(out.starts_with("HTTP/1.1 400"), "{bad:?} → {out:?}");
    }
    assert_eq!(legacy.hits(), 0);
}

/// RFC 9112 §3.2: the rules and the upstream see the same target. What a URI may not hold
/// (raw UTF-8, `{ } | \\ ^`), a target without its leading slash, `*` but for OPTIONS and an
/// HTTP/1.1 request without Host get 400 and reach nobody; absolute-form is accepted and goes
/// upstream as origin-form with its authority as Host; identical Content-Lengths are folded.
#[tokio::test]
async fn request_targets_are_what_the_rules_and_the_upstream_both_see() {
    let (legacy, p) = plain_proxy(None).await;
    for bad in [
        &b"GET /caf\xc3\xa9 HTTP/1.1\r\nHost: t\r\n\r\n"[..],
        b"GET get HTTP/1.1\r\nHost: t\r\n\r\n",
        b"GET anything HTTP/1.1\r\nHost: t\r\n\r\n",
        b"GET * HTTP/1.1\r\nHost: t\r\n\r\n",
        b"POST * HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\n\r\n",
        b"GET /a{b} HTTP/1.1\r\nHost: t\r\n\r\n",
        b"GET /a|b HTTP/1.1\r\nHost: t\r\n\r\n",
        b"GET /a\\b HTTP/1.1\r\nHost: t\r\n\r\n",
        b"GET /a^b HTTP/1.1\r\nHost: t\r\n\r\n",
        b"GET /no-host HTTP/1.1\r\n\r\n",
    ] {
        let out = raw_exchange(p.addr, bad, Duration::from_secs(5)).await;
        assert!(out.starts_with("HTTP/1.1 400"), "{bad:?} → {out:?}");
        assert!(
            out.to_ascii_lowercase().contains("connection: close"),
            "{bad:?} → {out:?}"
        );
    }
    assert_eq!(legacy.hits(), 0, "{:?}", legacy.paths());
    // Refused before any route was chosen, and counted so.
    assert_eq!(
        p.metric(r#"strangler_responses_total{class="4xx",route="unrouted",target="none"}"#)
            .await,
        10.0
    );
    // Absolute-form: accepted, forwarded in origin-form, its authority as Host (a Host that
    // disagrees with it is refused by pingora, as a smuggling guard).
    let out = raw_exchange(
        p.addr,
        b"GET http://shop.example/abs?q=1 HTTP/1.1\r\nHost: shop.example\r\nConnection: close\r\n\r\n",
        Duration::from_secs(5),
    )
    .await;
    assert!(out.starts_with("HTTP/1.1 200"), "{out}");
    let body: serde_json::Value =
        serde_json::from_str(out.split("\r\n\r\n").nth(1).unwrap_or("")).unwrap();
    assert_eq!(body["uri"], "/abs?q=1");
    assert_eq!(body["headers"]["host"], serde_json::json!(["shop.example"]));
    // HTTP/1.0 needs no Host; identical Content-Lengths are one.
    let out = raw_exchange(p.addr, b"GET /old HTTP/1.0\r\n\r\n", Duration::from_secs(5)).await;
    assert!(
        out.starts_with("HTTP/1.1 200") || out.starts_with("HTTP/1.0 200"),
        "{out}"
    );
    let out = raw_exchange(
        p.addr,
        b"POST /cl HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\nContent-Length: 3\r\nConnection: close\r\n\r\nabc",
        Duration::from_secs(5),
    )
    .await;
    assert!(out.starts_with("HTTP/1.1 200"), "{out}");
    let body: serde_json::Value =
        serde_json::from_str(out.split("\r\n\r\n").nth(1).unwrap_or("")).unwrap();
    assert_eq!(body["headers"]["content-length"], serde_json::json!(["3"]));
    assert_eq!(body["body_len"], 3);
}

#[tokio::test]
async fn framing_attacks_are_refused_and_nothing_is_smuggled() {
    let (legacy, p) = plain_proxy(None).await;
    // Two different Content-Lengths (RFC 9112 §6.3: unrecoverable error).
    let out = raw_exchange(
        p.addr,
        b"POST /a HTTP/1.1\r\nHost: t\r\nContent-Length: 4\r\nContent-Length: 5\r\n\r\nabcde",
        Duration::from_secs(5),
    )
    .await;
    assert!(out.starts_with("HTTP/1.1 400"), "{out}");
    // A bad chunk size.
    let out = raw_exchange(
        p.addr,
        b"POST /b HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n0\r\n\r\n",
        Duration::from_secs(5),
    )
    .await;
    assert!(!out.contains("HTTP/1.1 200"), "{out}");
    if out.starts_with("HTTP/1.1 400") {
        assert!(
            out.to_ascii_lowercase().contains("connection: close"),
            "{out}"
        );
    }
    // CL + TE: chunked wins and the connection closes (§6.1); what follows is never a request.
    let out = raw_exchange(
        p.addr,
        b"POST /c HTTP/1.1\r\nHost: t\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: t\r\n\r\n",
        Duration::from_secs(5),
    )
    .await;
    assert!(!out.contains("smuggled"), "{out}");
    // An oversize header.
    let mut big = b"GET /d HTTP/1.1\r\nHost: t\r\nX-Big: ".to_vec();
    big.extend(std::iter::repeat_n(b'a', 1 << 20));
    big.extend_from_slice(b"\r\n\r\n");
    let mut s = TcpStream::connect(p.addr).await.unwrap();
    let _ = s.write_all(&big).await;
    let (out, _) = read_until_closed(&mut s, Duration::from_secs(5)).await;
    assert!(out.is_empty() || out.starts_with("HTTP/1.1 4"), "{out}");
    let seen = get(p.addr, "/after", &[]).await;
    assert_eq!(seen.status, 200);
    // /b's header is streamed on before its body turns out malformed (as by any streaming
    // proxy); the two-length request and the smuggled one never reach the upstream.
    let paths = legacy.paths();
    assert!(
        !paths
            .iter()
            .any(|p| p == "/a" || p == "/smuggled" || p == "/d"),
        "a malformed or smuggled request reached the upstream: {paths:?}"
    );
}

#[tokio::test]
async fn http10_clients_get_a_close_delimited_body() {
    // An upstream that answers without Content-Length and closes (close-delimited).
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = vec![0u8; 4096];
                let mut got = Vec::new();
                while !got.windows(4).any(|w| w == b"\r\n\r\n") {
                    match s.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => got.extend_from_slice(&buf[..n]),
                    }
                }
                let _ = s
                    .write_all(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nhello, 1.0")
                    .await;
            });
        }
    });
    let p = ProxyBuilder::new(addr)
        .rules("r.yaml", "routes: []\n")
        .start()
        .await;
    let out = raw_exchange(
        p.addr,
        b"GET / HTTP/1.0\r\nHost: t\r\n\r\n",
        Duration::from_secs(5),
    )
    .await;
    let lower = out.to_ascii_lowercase();
    assert!(out.starts_with("HTTP/1.1 200"), "{out}");
    assert!(!lower.contains("transfer-encoding"), "{out}");
    assert!(out.ends_with("\r\n\r\nhello, 1.0"), "{out:?}");
}

#[tokio::test]
async fn expect_100_continue_is_answered_when_the_proxy_reads_the_body() {
    let legacy = Upstream::start("legacy", Behaviour::Echo).await;
    let p = ProxyBuilder::new(legacy.addr)
        .rules("r.yaml", BODY_ROUTE)
        .start()
        .await;
    let body = br#"{"items":[1]}"#;
    let mut s = TcpStream::connect(p.addr).await.unwrap();
    let head = format!(
        "POST /orders HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\nContent-Length: {}\r\nExpect: 100-continue\r\nConnection: close\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes()).await.unwrap();
    // A strict client: nothing is sent until the 100 comes.
    let mut first = [0u8; 25];
    tokio::time::timeout(Duration::from_secs(10), s.read_exact(&mut first))
        .await
        .expect("no 100 Continue")
        .unwrap();
    assert_eq!(&first, b"HTTP/1.1 100 Continue\r\n\r\n");
    s.write_all(body).await.unwrap();
    let (out, _) = read_until_closed(&mut s, Duration::from_secs(10)).await;
    assert!(out.starts_with("HTTP/1.1 200"), "{out}");
    let json = &out[out.find("\r\n\r\n").unwrap() + 4..];
    let echo: serde_json::Value = serde_json::from_str(json).unwrap();
    assert_eq!(echo["body_len"], body.len());
    assert!(echo["headers"]["expect"].is_null(), "{echo}");
}

#[tokio::test]
async fn stalled_and_vanished_clients_are_their_fault_not_the_upstreams() {
    let legacy = Upstream::start("legacy", Behaviour::Echo).await;
    let p = ProxyBuilder::new(legacy.addr)
        .legacy(UpstreamConfig::new(legacy.addr).read_timeout("500ms"))
        .rules("r.yaml", BODY_ROUTE)
        .setting("client_body_timeout", "1s")
        .start()
        .await;
    // Stalls mid-body, on a plain route and on a route that reads the body for its rules.
    for path in ["/plain", "/orders"] {
        let head = format!(
            "POST {path} HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{{\"items\""
        );
        let out = raw_exchange(p.addr, head.as_bytes(), Duration::from_secs(15)).await;
        assert!(out.starts_with("HTTP/1.1 408"), "{path}: {out}");
    }
    assert_eq!(p.client_faults("body_timeout").await, 2.0);
    let responses = |route: &str, target: &str, class: &str| {
        format!(
            "strangler_responses_total{{class=\"{class}\",route=\"{route}\",target=\"{target}\"}}"
        )
    };
    // The body route's 408 came before its route was chosen: counted, as unrouted.
    assert_eq!(p.metric(&responses("default", "legacy", "4xx")).await, 1.0);
    assert_eq!(p.metric(&responses("unrouted", "none", "4xx")).await, 1.0);
    assert_eq!(
        p.metric("strangler_requests_total{route=\"unrouted\",target=\"none\"}")
            .await,
        1.0
    );
    // Goes away mid-body: logged as 499, nothing answered (class `none`), nothing blamed on the
    // upstream; once after routing, once while the rules waited for the body.
    {
        let mut s = TcpStream::connect(p.addr).await.unwrap();
        s.write_all(b"POST /plain HTTP/1.1\r\nHost: t\r\nContent-Length: 100\r\n\r\nabc")
            .await
            .unwrap();
        // gone once the request has reached the upstream (its second /plain)
        wait_for("the request upstream", Duration::from_secs(10), || async {
            legacy.paths().iter().filter(|p| *p == "/plain").count() == 2
        })
        .await;
    }
    wait_for(
        "the vanished client's 499",
        Duration::from_secs(10),
        || async { p.logs().contains("status=499") },
    )
    .await;
    assert_eq!(p.client_faults("closed").await, 1.0);
    assert_eq!(p.metric(&responses("default", "legacy", "none")).await, 1.0);
    {
        let mut s = TcpStream::connect(p.addr).await.unwrap();
        s.write_all(b"POST /orders HTTP/1.1\r\nHost: t\r\nContent-Length: 100\r\n\r\n{\"items\"")
            .await
            .unwrap();
    }
    wait_for(
        "the body route's vanished client counted",
        Duration::from_secs(10),
        || async { p.metric(&responses("unrouted", "none", "none")).await == 1.0 },
    )
    .await;
    assert_eq!(p.client_faults("closed").await, 2.0);
    assert_eq!(p.metric(&responses("default", "legacy", "4xx")).await, 1.0);
    let text = get(p.admin, "/metrics", &[]).await.text();
    assert!(
        !text.contains("strangler_upstream_errors_total{"),
        "a client fault was counted against the upstream:\n{text}"
    );
    no_errors_logged(&p);
}

#[tokio::test]
async fn upstream_connections_are_reused_under_load() {
    let legacy = Upstream::start("legacy", Behaviour::Echo).await;
    let p = ProxyBuilder::new(legacy.addr)
        .rules("r.yaml", "routes: []\n")
        .start()
        .await;
    let clients = 8;
    let mut tasks = Vec::new();
    for _ in 0..clients {
        let addr = p.addr;
        tasks.push(tokio::spawn(async move {
            // One keep-alive connection per client, requests back to back.
            let stream = TcpStream::connect(addr).await.unwrap();
            let (mut sender, conn) =
                hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
                    .await
                    .unwrap();
            tokio::spawn(conn);
            for _ in 0..300 {
                let req = hyper::Request::get("/x")
                    .header("host", "t")
                    .body(http_body_util::Empty::<bytes::Bytes>::new())
                    .unwrap();
                let resp = sender.send_request(req).await.unwrap();
                assert_eq!(resp.status(), 200);
                http_body_util::BodyExt::collect(resp.into_body())
                    .await
                    .unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(legacy.hits(), clients * 300);
    assert!(
        legacy.connections() <= clients + 4,
        "{} upstream connections for {clients} clients",
        legacy.connections()
    );
    assert!(
        !p.logs().contains("failed to acquire reusable stream"),
        "{}",
        p.logs()
    );
}

#[tokio::test]
async fn a_burst_of_new_connections_to_a_small_backlog_gets_no_5xx() {
    let legacy = Upstream::start_with_backlog("legacy", Behaviour::Echo, 1).await;
    let p = ProxyBuilder::new(legacy.addr)
        .rules("r.yaml", "routes: []\n")
        .start()
        .await;
    let mut tasks = Vec::new();
    for _ in 0..16 {
        let addr = p.addr;
        tasks.push(tokio::spawn(
            async move { get(addr, "/x", &[]).await.status },
        ));
    }
    for t in tasks {
        assert_eq!(t.await.unwrap(), 200);
    }
}
