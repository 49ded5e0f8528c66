//! HTTPS listeners through the real proxy, tried with curl and openssl as a client would: h2 and
//! http/1.1 by ALPN, the certificate chosen by SNI (each verified against its own CA file),
//! TLS 1.1 refused, `X-Forwarded-Proto: https` upstream, and a certificate swapped on disk under
//! load with no failed request (connections open before the swap keep going; new ones get the
//! new certificate). The upstream runs on the test's runtime: every client command runs on a
//! blocking thread ([`output`]), never on the runtime itself.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use serde_json::json;
use strangler_tests::proxy::free_port;
use strangler_tests::*;

/// A self-signed certificate for `name` (its own CA), made with the openssl CLI.
fn make_cert(dir: &Path, file: &str, name: &str) -> (PathBuf, PathBuf) {
    let (cert, key) = (
        dir.join(format!("{file}.pem")),
        dir.join(format!("{file}.key")),
    );
    let out = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-days",
            "2",
            "-subj",
            &format!("/CN={name}"),
            "-addext",
            &format!("subjectAltName=DNS:{name}"),
            "-keyout",
        ])
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .expect("openssl (the CLI) is needed for this test");
    assert!(out.status.success(), "{out:?}");
    (cert, key)
}

/// Runs a command off the test's runtime (which serves the upstream meanwhile).
async fn output(mut cmd: Command) -> Output {
    tokio::task::spawn_blocking(move || cmd.output().expect("run a client command"))
        .await
        .unwrap()
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// curl to `https://{name}:{port}{path}` resolved to the proxy, verifying with `ca`.
async fn curl(name: &str, port: u16, path: &str, ca: &Path, extra: &[&str]) -> Output {
    let mut cmd = Command::new("curl");
    cmd.args(["-sS", "--max-time", "20", "--cacert"])
        .arg(ca)
        .args(["--resolve", &format!("{name}:{port}:127.0.0.1")])
        .args(extra)
        .arg(format!("https://{name}:{port}{path}"));
    output(cmd).await
}

/// The serial of the certificate the proxy presents for `name`.
async fn served_serial(port: u16, name: &str) -> String {
    let name = name.to_string();
    tokio::task::spawn_blocking(move || served_serial_now(port, &name))
        .await
        .unwrap()
}

fn served_serial_now(port: u16, name: &str) -> String {
    let sc = Command::new("openssl")
        .args(["s_client", "-connect", &format!("127.0.0.1:{port}")])
        .args(["-servername", name])
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    let mut x509 = Command::new("openssl")
        .args(["x509", "-noout", "-serial"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    x509.stdin.take().unwrap().write_all(&sc.stdout).unwrap();
    text(&x509.wait_with_output().unwrap()).trim().to_string()
}

fn serial_of(cert: &Path) -> String {
    let o = Command::new("openssl")
        .args(["x509", "-noout", "-serial", "-in"])
        .arg(cert)
        .output()
        .unwrap();
    text(&o).trim().to_string()
}

#[tokio::test]
async fn https_speaks_h2_and_http1_picks_the_certificate_by_sni_and_refuses_tls_1_1() {
    let dir = tempfile::tempdir().unwrap();
    let (a, a_key) = make_cert(dir.path(), "a", "a.test");
    let (b, b_key) = make_cert(dir.path(), "b", "b.test");
    let legacy = Upstream::start("legacy", Behaviour::Echo).await;
    let p = ProxyBuilder::new(legacy.addr)
        .rules("r.yaml", BODY_ROUTE)
        .https(json!([
            { "cert": a, "key": a_key },
            { "cert": b, "key": b_key },
        ]))
        .start()
        .await;
    let port = p.tls_addr.unwrap().port();

    let out = curl(
        "a.test",
        port,
        "/hello",
        &a,
        &["--http2", "-w", "\n%{http_version}"],
    )
    .await;
    let t = text(&out);
    assert!(out.status.success(), "{t}");
    let (body, version) = t.rsplit_once('\n').unwrap();
    assert_eq!(version, "2", "{t}");
    let echo: serde_json::Value = serde_json::from_str(body).unwrap();
    assert_eq!(
        echo["headers"]["x-forwarded-proto"],
        json!(["https"]),
        "{echo}"
    );

    // An HTTP/2 request the proxy sends upstream itself (its route reads the body) goes as
    // HTTP/1.1, with its authority as Host.
    let out = curl(
        "a.test",
        port,
        "/orders",
        &a,
        &[
            "--http2",
            "-H",
            "content-type: application/json",
            "-d",
            r#"{"items":[1]}"#,
            "-w",
            "\n%{http_version} %{http_code}",
        ],
    )
    .await;
    let t = text(&out);
    let (body, status) = t.rsplit_once('\n').unwrap();
    assert_eq!(status, "2 200", "{t}");
    let echo: serde_json::Value = serde_json::from_str(body).unwrap();
    assert_eq!(echo["uri"], "/orders", "{echo}");
    assert_eq!(
        echo["headers"]["host"],
        json!([format!("a.test:{port}")]),
        "{echo}"
    );

    // The same over cleartext HTTP/2 (h2c) on the plain listener.
    let mut cmd = Command::new("curl");
    cmd.args(["-sS", "--max-time", "20", "--http2-prior-knowledge"])
        .args([
            "-H",
            "content-type: application/json",
            "-d",
            r#"{"items":[1]}"#,
        ])
        .args(["-w", "\n%{http_version} %{http_code}"])
        .arg(format!("http://{}/orders", p.addr));
    let t = text(&output(cmd).await);
    assert!(t.ends_with("\n2 200"), "{t}");

    // The other name gets the other certificate (curl verifies it against b's file alone).
    let out = curl(
        "b.test",
        port,
        "/hello",
        &b,
        &["--http1.1", "-w", "\n%{http_version}"],
    )
    .await;
    let t = text(&out);
    assert!(out.status.success(), "{t}");
    assert!(t.ends_with("\n1.1"), "{t}");
    // …and not a's.
    assert!(
        !curl("b.test", port, "/hello", &a, &[])
            .await
            .status
            .success()
    );

    // TLS 1.2 and 1.3 only.
    let tls = |v: &'static str| {
        let mut cmd = Command::new("openssl");
        cmd.args([
            "s_client",
            "-brief",
            v,
            "-connect",
            &format!("127.0.0.1:{port}"),
        ])
        .args(["-servername", "a.test"])
        .stdin(std::process::Stdio::null());
        output(cmd)
    };
    assert!(tls("-tls1_2").await.status.success());
    assert!(tls("-tls1_3").await.status.success());
    let old = tls("-tls1_1").await;
    assert!(
        !old.status.success(),
        "TLS 1.1 was accepted: {}",
        text(&old)
    );
    // The plain listener still answers.
    assert_eq!(get(p.addr, "/plain", &[]).await.status, 200);
    let errors = p.error_lines();
    assert!(
        errors.is_empty(),
        "a client's failed handshake is not our error: {errors:#?}"
    );
}

#[tokio::test]
async fn a_certificate_swapped_under_load_fails_no_request() {
    let dir = tempfile::tempdir().unwrap();
    let (a, a_key) = make_cert(dir.path(), "a", "a.test");
    let (next, next_key) = make_cert(dir.path(), "next", "a.test");
    // Clients trust both (the old one for connections made before the swap).
    let bundle = dir.path().join("bundle.pem");
    let both = [std::fs::read(&a).unwrap(), std::fs::read(&next).unwrap()].concat();
    std::fs::write(&bundle, both).unwrap();
    let legacy = Upstream::start("legacy", Behaviour::Echo).await;
    let p = ProxyBuilder::new(legacy.addr)
        .rules("r.yaml", "routes: []\n")
        .https(json!([{ "cert": a, "key": a_key }]))
        .start()
        .await;
    let port = p.tls_addr.unwrap().port();
    let before = served_serial(port, "a.test").await;
    assert_eq!(before, serial_of(&a));

    // Load: one keep-alive connection, and a new connection per request, 20 requests a second
    // each, for about 4 s.
    let urls: Vec<String> = (0..80)
        .map(|_| format!("https://a.test:{port}/hello"))
        .collect();
    let load = |fresh: bool| {
        let (bundle, urls) = (bundle.clone(), urls.clone());
        tokio::task::spawn_blocking(move || {
            let mut cmd = Command::new("curl");
            cmd.args(["-sS", "--max-time", "30", "--rate", "20/s", "--cacert"])
                .arg(&bundle)
                .args(["--resolve", &format!("a.test:{port}:127.0.0.1")])
                .args(["-w", "\n@%{http_code}\n"]);
            if fresh {
                cmd.args(["-H", "Connection: close"]);
            }
            cmd.args(&urls).output().unwrap()
        })
    };
    let (kept, fresh) = (load(false), load(true));
    // Swap the files mid-load, each by an atomic rename (key first, as a deploy tool might).
    tokio::time::sleep(Duration::from_secs(1)).await;
    std::fs::rename(&next_key, &a_key).unwrap();
    std::fs::rename(&next, &a).unwrap();
    wait_for(
        "the new certificate served",
        Duration::from_secs(10),
        || {
            let a = a.clone();
            async move { served_serial(port, "a.test").await == serial_of(&a) }
        },
    )
    .await;
    assert_ne!(before, served_serial(port, "a.test").await);
    for (what, t) in [("kept-alive", kept), ("fresh", fresh)] {
        let out = t.await.unwrap();
        // Each answer's body, then `@<status>` on a line of its own.
        let codes = String::from_utf8_lossy(&out.stdout).to_string();
        assert!(out.status.success(), "{what}: {}", text(&out));
        assert_eq!(
            codes.lines().filter(|c| *c == "@200").count(),
            80,
            "{what}: {codes}"
        );
    }
    assert!(
        p.metric(r#"strangler_tls_reloads_total{result="ok"}"#)
            .await
            >= 1.0,
        "{}",
        p.logs()
    );
}

/// A certificate that does not load stops the start (and `check`) with the file named.
#[tokio::test]
async fn a_bad_certificate_file_is_named_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let (a, _) = make_cert(dir.path(), "a", "a.test");
    let (_, other_key) = make_cert(dir.path(), "other", "a.test");
    let legacy = Upstream::start("legacy", Behaviour::Echo).await;
    let mut p = ProxyBuilder::new(legacy.addr)
        .rules("r.yaml", "routes: []\n")
        .https(json!([{ "cert": a, "key": other_key }]))
        .start_on(free_port(), free_port());
    let status = p.exit_status(Duration::from_secs(20)).await;
    assert!(status.is_some_and(|s| !s.success()), "{}", p.logs());
    let logs = p.logs();
    assert!(
        logs.contains("listen[1].tls[0]") && logs.contains("does not match"),
        "{logs}"
    );
}
