//! `bench-hyper-proxy LISTEN UPSTREAM`: forwards every request to `UPSTREAM` (host:port) over
//! pooled keep-alive connections and streams the answer back; one current-thread runtime, no
//! rules, no logging, no metrics. The reference row of `bench/run.sh`: what HTTP/1 proxying
//! costs in Rust on tokio before pingora and strangler add theirs.

use std::net::SocketAddr;

use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, Uri};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};

type Upstream = Client<HttpConnector, Incoming>;

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [listen, upstream] = args.as_slice() else {
        eprintln!("usage: bench-hyper-proxy LISTEN UPSTREAM   (both host:port)");
        std::process::exit(2);
    };
    let listen: SocketAddr = listen.parse().expect("LISTEN is host:port");
    let upstream: &'static str = Box::leak(upstream.clone().into_boxed_str());
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    let client: Upstream = Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(1024)
        .build(connector);
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .expect("the listen address is free");
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let _ = stream.set_nodelay(true);
        let client = client.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req| forward(client.clone(), upstream, req));
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

/// The request, re-addressed to the upstream. A failed upstream call ends the client's
/// connection (a reference proxy has no error pages).
async fn forward(
    client: Upstream,
    upstream: &'static str,
    mut req: Request<Incoming>,
) -> Result<Response<Incoming>, Box<dyn std::error::Error + Send + Sync>> {
    let path = req.uri().path_and_query().map_or("/", |p| p.as_str());
    let uri: Uri = format!("http://{upstream}{path}").parse()?;
    *req.uri_mut() = uri;
    Ok(client.request(req).await?)
}
