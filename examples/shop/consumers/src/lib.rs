//! What the shop's two consumers share: their command line, the Kinesis client, logging, and the
//! run loop that stops on Ctrl-C / SIGTERM and reports progress.

use std::time::Duration;

use anyhow::Result;
use sqlx::AnyPool;
use strangler_consumer::{Config, Consumer, Handler};
use tracing::info;

#[derive(Debug, clap::Parser)]
pub struct Args {
    /// The stream to read (name or ARN).
    #[arg(long, default_value = "shop-orders")]
    pub stream: String,
    /// The consumer's database (its state and checkpoints): sqlite://FILE or postgres://…
    #[arg(long)]
    pub db: String,
    /// A Kinesis endpoint (a local server); otherwise AWS (or AWS_ENDPOINT_URL_KINESIS).
    #[arg(long)]
    pub endpoint: Option<String>,
    #[arg(long)]
    pub region: Option<String>,
    /// The longest wait between reads of a caught-up shard.
    #[arg(long, default_value = "1s", value_parser = parse_duration)]
    pub idle_wait: Duration,
    /// Read through enhanced fan-out (SubscribeToShard) instead of polling.
    #[arg(long)]
    pub enhanced_fan_out: bool,
    /// How often the shard listing is read again (new shards after a reshard).
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub shard_sync: Duration,
    /// Serve the consumer's progress as Prometheus metrics at http://ADDR/metrics (its lag per
    /// shard, events applied, duplicates skipped).
    #[arg(long, value_name = "ADDR")]
    pub metrics: Option<std::net::SocketAddr>,
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    let (n, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: u64 = n
        .parse()
        .map_err(|_| format!("`{s}`: a duration like 500ms, 2s or 1m"))?;
    match unit {
        "ms" => Ok(Duration::from_millis(n)),
        "s" | "" => Ok(Duration::from_secs(n)),
        "m" => Ok(Duration::from_secs(n * 60)),
        _ => Err(format!("`{s}`: a duration like 500ms, 2s or 1m")),
    }
}

pub fn init_logging() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr)
        .init();
}

/// Opens the database, lets `prepare` create the application's tables, and runs the consumer
/// until Ctrl-C or SIGTERM, logging progress every 10 s while events arrive.
pub async fn run<H: Handler>(args: &Args, name: &str, pool: AnyPool, handler: H) -> Result<()> {
    let client =
        strangler_events::kinesis::client(args.region.as_deref(), args.endpoint.as_deref()).await;
    let mut config = Config::new(&args.stream, name);
    config.idle_wait = args.idle_wait;
    config.shard_sync = args.shard_sync;
    config.enhanced_fan_out = args.enhanced_fan_out;
    let consumer = Consumer::new(client, pool, config).await?;
    let progress = consumer.progress();
    if let Some(addr) = args.metrics {
        let registry = prometheus::Registry::new();
        consumer.register_metrics(&registry)?;
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|e| anyhow::anyhow!("cannot serve metrics on {addr}: {e}"))?;
        info!(%addr, "Metrics at /metrics");
        tokio::spawn(serve_metrics(listener, registry));
    }
    let (stop, stopped) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("SIGTERM handler");
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
        let _ = stop.send(true);
    });
    let report = {
        let progress = progress.clone();
        tokio::spawn(async move {
            let mut last = 0;
            loop {
                tokio::time::sleep(Duration::from_secs(10)).await;
                let seen = progress.applied() + progress.duplicates();
                if seen != last {
                    info!(
                        applied = progress.applied(),
                        duplicates = progress.duplicates(),
                        unreadable = progress.unreadable(),
                        millis_behind = progress.millis_behind(),
                        "Progress"
                    );
                    last = seen;
                }
            }
        })
    };
    let result = consumer.run(handler, stopped).await;
    report.abort();
    info!(
        applied = progress.applied(),
        duplicates = progress.duplicates(),
        "Stopped"
    );
    Ok(result?)
}

/// `id` of an order in an event's data: a number, or digits in a string (a path parameter).
pub fn order_id(v: &serde_json::Value) -> Option<i64> {
    v.as_i64()
        .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
}

/// A minimal HTTP/1.1 server for `GET /metrics` (Prometheus's text format), one request per
/// connection: enough for a scraper, without a web framework in the example.
async fn serve_metrics(listener: tokio::net::TcpListener, registry: prometheus::Registry) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    loop {
        let Ok((mut conn, _)) = listener.accept().await else {
            continue;
        };
        let registry = registry.clone();
        tokio::spawn(async move {
            let mut head = Vec::new();
            let mut buf = [0u8; 1024];
            // The request head, within 5 s and 8 KiB.
            let read = tokio::time::timeout(Duration::from_secs(5), async {
                while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 8192 {
                    match conn.read(&mut buf).await {
                        Ok(0) | Err(_) => return false,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                true
            })
            .await;
            if read != Ok(true) {
                return;
            }
            let (status, body) = if head.starts_with(b"GET /metrics ") {
                let text = prometheus::TextEncoder::new()
                    .encode_to_string(&registry.gather())
                    .unwrap_or_default();
                ("200 OK", text)
            } else {
                ("404 Not Found", "GET /metrics\n".to_string())
            };
            let reply = format!(
                "HTTP/1.1 {status}\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = conn.write_all(reply.as_bytes()).await;
        });
    }
}
