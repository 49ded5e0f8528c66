//! An upstream for benchmarks (`bench/shadow.sh`): answers every request with the same JSON
//! document (about 1 KB, an order with items) after a fixed delay, on one thread.
//! Usage: bench-upstream PORT DELAY_MS

use std::convert::Infallible;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let usage = || anyhow::anyhow!("usage: bench-upstream PORT DELAY_MS");
    let port: u16 = args.next().ok_or_else(usage)?.parse()?;
    let delay = Duration::from_millis(args.next().ok_or_else(usage)?.parse()?);
    let items: Vec<serde_json::Value> = (0..12)
        .map(|i| serde_json::json!({ "sku": format!("sku-{i:04}"), "qty": i % 3 + 1, "price_cents": 450 + i * 10 }))
        .collect();
    let body = Bytes::from(
        serde_json::json!({ "id": 1, "user_id": "alice", "status": "placed", "items": items, "total_cents": 12345 })
            .to_string(),
    );
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let listener = TcpListener::bind(("127.0.0.1", port)).await?;
        loop {
            let (stream, _) = listener.accept().await?;
            let _ = stream.set_nodelay(true);
            let body = body.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |req: Request<hyper::body::Incoming>| {
                    let body = body.clone();
                    async move {
                        let _ = req.into_body().collect().await;
                        if !delay.is_zero() {
                            tokio::time::sleep(delay).await;
                        }
                        Ok::<_, Infallible>(
                            Response::builder()
                                .header("content-type", "application/json")
                                .body(Full::new(body))
                                .expect("a valid response"),
                        )
                    }
                });
                let _ = http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    })
}
