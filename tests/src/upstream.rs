//! Real HTTP/1.1 upstream servers (hyper) on 127.0.0.1:0 that report what they received.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

#[derive(Debug, Clone, Copy)]
pub enum Behaviour {
    /// Answers JSON describing the request: upstream, method, uri, headers, body length and hash
    /// (status 200, or the request's `x-reply-status`; gzip-encoded with `x-reply-gzip`); or the
    /// request's `x-reply-body-<name>` header as its JSON body, when there is one for this
    /// upstream.
    Echo,
    /// Sends the request body back as the response body.
    EchoBody,
    /// Like `Echo`, after waiting.
    Slow(Duration),
    /// Like `Echo`, with this status (a service answering 500s, say).
    Status(u16),
    /// Switches protocols (`101`) on an upgrade request, then echoes every byte; on `push\n` it
    /// also sends `tick\n` eight times, 500 ms apart (a server that talks while the client is
    /// quiet).
    Upgrade,
}

pub struct Upstream {
    pub name: String,
    pub addr: SocketAddr,
    /// The request targets received, in order.
    seen: Arc<Mutex<Vec<String>>>,
    connections: Arc<AtomicUsize>,
    /// What it does now ([`Upstream::switch`] changes it while it runs).
    behaviour: Arc<Mutex<Behaviour>>,
    task: tokio::task::JoinHandle<()>,
}

impl Upstream {
    pub async fn start(name: &str, behaviour: Behaviour) -> Upstream {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind upstream");
        Self::serve(name, behaviour, listener)
    }

    /// Like `start`, on a listener with the given accept backlog (a small one drops SYNs under
    /// a burst of new connections, as a Python server's default of 5 does).
    pub async fn start_with_backlog(name: &str, behaviour: Behaviour, backlog: u32) -> Upstream {
        let socket = tokio::net::TcpSocket::new_v4().expect("socket");
        socket.bind("127.0.0.1:0".parse().unwrap()).expect("bind");
        Self::serve(name, behaviour, socket.listen(backlog).expect("listen"))
    }

    fn serve(name: &str, behaviour: Behaviour, listener: TcpListener) -> Upstream {
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let connections = Arc::new(AtomicUsize::new(0));
        let behaviour = Arc::new(Mutex::new(behaviour));
        let (n, h, c, b) = (
            name.to_string(),
            Arc::clone(&seen),
            Arc::clone(&connections),
            Arc::clone(&behaviour),
        );
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                c.fetch_add(1, Ordering::SeqCst);
                let (n, h, b) = (n.clone(), Arc::clone(&h), Arc::clone(&b));
                tokio::spawn(async move {
                    let svc = service_fn(move |req| {
                        let (n, h) = (n.clone(), Arc::clone(&h));
                        let behaviour = *b.lock().unwrap();
                        async move { Ok::<_, Infallible>(answer(&n, behaviour, req, &h).await) }
                    });
                    let _ = http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc)
                        .with_upgrades()
                        .await;
                });
            }
        });
        Upstream {
            name: name.to_string(),
            addr,
            seen,
            connections,
            behaviour,
            task,
        }
    }

    /// Changes what it does from the next request on.
    pub fn switch(&self, b: Behaviour) {
        *self.behaviour.lock().unwrap() = b;
    }

    /// Requests received so far.
    pub fn hits(&self) -> usize {
        self.seen.lock().unwrap().len()
    }

    /// The request targets received so far, in order.
    pub fn paths(&self) -> Vec<String> {
        self.seen.lock().unwrap().clone()
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn answer(
    name: &str,
    b: Behaviour,
    req: Request<Incoming>,
    seen: &Mutex<Vec<String>>,
) -> Response<Full<Bytes>> {
    let mut req = req;
    seen.lock().unwrap().push(req.uri().to_string());
    if matches!(b, Behaviour::Upgrade) && req.headers().contains_key(hyper::header::UPGRADE) {
        let on = hyper::upgrade::on(&mut req);
        tokio::spawn(async move {
            if let Ok(io) = on.await {
                echo_upgraded(TokioIo::new(io)).await;
            }
        });
        return Response::builder()
            .status(101)
            .header("upgrade", "websocket")
            .header("connection", "upgrade")
            .header("x-upstream", name)
            .body(Full::new(Bytes::new()))
            .unwrap();
    }
    let (parts, body) = req.into_parts();
    let body = body
        .collect()
        .await
        .map(|c| c.to_bytes())
        .unwrap_or_default();
    match b {
        Behaviour::EchoBody => Response::builder()
            .header("x-upstream", name)
            .body(Full::new(body))
            .unwrap(),
        // `x-reply-body-<name>`: this upstream answers that JSON instead of describing the
        // request (two sides answering differently to the same request).
        _ if parts
            .headers
            .contains_key(format!("x-reply-body-{name}").as_str()) =>
        {
            let body = parts.headers[format!("x-reply-body-{name}").as_str()]
                .as_bytes()
                .to_vec();
            Response::builder()
                .header("x-upstream", name)
                .header("content-type", "application/json")
                .body(Full::new(Bytes::from(body)))
                .unwrap()
        }
        // Not an upgrade request: described, like `Echo`.
        Behaviour::Echo | Behaviour::Slow(_) | Behaviour::Status(_) | Behaviour::Upgrade => {
            if let Behaviour::Slow(d) = b {
                tokio::time::sleep(d).await;
            }
            let mut headers = serde_json::Map::new();
            for (k, v) in &parts.headers {
                let v = serde_json::Value::String(v.to_str().unwrap_or("<binary>").to_string());
                match headers.get_mut(k.as_str()) {
                    Some(serde_json::Value::Array(a)) => a.push(v),
                    _ => {
                        headers.insert(k.as_str().to_string(), serde_json::Value::Array(vec![v]));
                    }
                }
            }
            let doc = serde_json::json!({
                "upstream": name,
                "method": parts.method.as_str(),
                "uri": parts.uri.to_string(),
                "headers": headers,
                "body_len": body.len(),
                "body_hash": crate::client::hash(&body),
            });
            // `x-reply-status` lets a test pick the answer's status.
            let status = parts
                .headers
                .get("x-reply-status")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<u16>().ok())
                .unwrap_or(match b {
                    Behaviour::Status(s) => s,
                    _ => 200,
                });
            // `x-reply-gzip`: the answer gzip-encoded.
            let gzip = parts.headers.contains_key("x-reply-gzip");
            let mut body = doc.to_string().into_bytes();
            if gzip {
                use std::io::Write;
                let mut z = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
                z.write_all(&body).unwrap();
                body = z.finish().unwrap();
            }
            let mut resp = Response::builder()
                .status(status)
                .header("x-upstream", name)
                .header("content-type", "application/json")
                .header("keep-alive", "timeout=5");
            if gzip {
                resp = resp.header("content-encoding", "gzip");
            }
            resp.body(Full::new(Bytes::from(body))).unwrap()
        }
    }
}

/// The upgraded side of [`Behaviour::Upgrade`].
async fn echo_upgraded<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static>(
    io: S,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (mut rd, wr) = tokio::io::split(io);
    let wr = Arc::new(tokio::sync::Mutex::new(wr));
    let mut buf = vec![0u8; 64 << 10];
    loop {
        let n = match rd.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        if &buf[..n] == b"push\n" {
            let wr = Arc::clone(&wr);
            tokio::spawn(async move {
                for _ in 0..8 {
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    if wr.lock().await.write_all(b"tick\n").await.is_err() {
                        return;
                    }
                }
            });
            continue;
        }
        if wr.lock().await.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}
