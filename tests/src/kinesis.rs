//! A real Kinesis-compatible server for tests — `kinesis-local` (npm, kinesis-mock) on free
//! loopback ports — plus a fault-injecting HTTP shim to put between a client and it: throttled
//! calls, failed records, and outages (the shim stops listening). Also a scratch PostgreSQL
//! database per test.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use aws_sdk_kinesis::Client;
use aws_sdk_kinesis::config::{BehaviorVersion, Credentials, Region};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use strangler_events::kinesis::StreamRecord;
use tokio::net::TcpListener;

use crate::proxy::free_port;

/// Where `.ci/run` installs kinesis-local; `KINESIS_LOCAL_DIR` overrides.
fn package_dir() -> PathBuf {
    if let Ok(d) = std::env::var("KINESIS_LOCAL_DIR") {
        return PathBuf::from(d);
    }
    let home = std::env::var("HOME").unwrap_or_else(|_| "/root".into());
    PathBuf::from(home).join(".cache/strangler-npm/node_modules/kinesis-local")
}

pub struct KinesisLocal {
    child: Child,
    pub addr: SocketAddr,
}

impl KinesisLocal {
    /// Starts kinesis-local on free ports and waits for its health check. When a port picked for
    /// it was taken in between (it exits at once), it starts again on new ports.
    pub async fn start() -> KinesisLocal {
        let dir = package_dir();
        assert!(
            dir.join("main.js").exists(),
            "kinesis-local is not installed at {} (run .ci/run, or npm install --prefix ~/.cache/strangler-npm kinesis-local)",
            dir.display()
        );
        for _ in 0..5 {
            let (plain, tls) = (free_port(), free_port());
            let child = Command::new("node")
                .arg(dir.join("main.js"))
                .env("KINESIS_MOCK_CERT_PATH", dir.join("server.json"))
                .env("KINESIS_MOCK_PLAIN_PORT", plain.port().to_string())
                .env("KINESIS_MOCK_TLS_PORT", tls.port().to_string())
                .env("CREATE_STREAM_DURATION", "0ms")
                .env("DELETE_STREAM_DURATION", "0ms")
                .env("SHARD_LIMIT", "1000")
                .env("LOG_LEVEL", "WARN")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("start kinesis-local (node)");
            let mut k = KinesisLocal { child, addr: plain };
            let deadline = std::time::Instant::now() + Duration::from_secs(60);
            loop {
                if k.child.try_wait().unwrap().is_some() {
                    break; // exited: a port was taken; try new ones
                }
                // A server still starting may take a connection and reset it: not ready yet.
                let health = http::Request::get("/healthcheck")
                    .header("host", "localhost")
                    .body(http_body_util::Full::new(bytes::Bytes::new()))
                    .expect("a request");
                if tokio::net::TcpStream::connect(plain).await.is_ok()
                    && tokio::time::timeout(
                        Duration::from_secs(2),
                        crate::client::request(plain, health),
                    )
                    .await
                    .is_ok_and(|r| r.is_ok_and(|r| r.status == 200))
                {
                    return k;
                }
                assert!(
                    std::time::Instant::now() < deadline,
                    "kinesis-local not healthy after 60 s"
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        panic!("kinesis-local exited at start five times in a row");
    }

    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }
}

impl Drop for KinesisLocal {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An `ORDER_CREATED` event for the outbox: `{"key": key, "n": n}` on `stream`, keyed by `key`.
pub fn order_event(stream: &str, key: &str, n: u64) -> strangler_events::NewEvent {
    let ev = strangler_events::CloudEvent::new(
        "strangler/test",
        "ORDER_CREATED",
        json!({"key": key, "n": n}),
    );
    strangler_events::NewEvent {
        id: ev.id.clone(),
        route: "orders".into(),
        stream: stream.into(),
        partition_key: key.into(),
        payload: ev.to_bytes(),
    }
}

/// An SDK client with static test credentials for `endpoint`.
pub fn client(endpoint: &str) -> Client {
    let http = aws_smithy_http_client::Builder::new()
        .tls_provider(aws_smithy_http_client::tls::Provider::Rustls(
            aws_smithy_http_client::tls::rustls_provider::CryptoMode::Ring,
        ))
        .build_https();
    let conf = aws_sdk_kinesis::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .credentials_provider(Credentials::new("test", "test", None, None, "tests"))
        .endpoint_url(endpoint)
        .http_client(http)
        .build();
    Client::from_conf(conf)
}

/// Creates an on-demand stream and waits until it is active.
pub async fn create_stream(c: &Client, name: &str) {
    c.create_stream()
        .stream_name(name)
        .shard_count(2)
        .send()
        .await
        .expect("create stream");
    for _ in 0..100 {
        let d = c
            .describe_stream_summary()
            .stream_name(name)
            .send()
            .await
            .unwrap();
        if d.stream_description_summary()
            .map(|s| s.stream_status().as_str())
            == Some("ACTIVE")
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("stream {name} never became active");
}

/// Every event in the stream, per shard in sequence order: (partition key, data as JSON).
pub async fn read_all(c: &Client, name: &str) -> Vec<(String, Value)> {
    as_events(
        &strangler_events::kinesis::read_stream(c, name)
            .await
            .unwrap(),
    )
}

/// Records read back as (partition key, data as JSON).
pub fn as_events(records: &[StreamRecord]) -> Vec<(String, Value)> {
    records
        .iter()
        .map(|r| {
            (
                r.partition_key.clone(),
                serde_json::from_slice(&r.data).unwrap(),
            )
        })
        .collect()
}

/// What the shim does to traffic.
#[derive(Default)]
pub struct Faults {
    /// Fail every Nth PutRecords call whole with a throttling error (0: never).
    pub throttle_every_call: AtomicUsize,
    /// Fail every Nth record of each PutRecords call with ProvisionedThroughputExceeded (0: never).
    pub fail_every_record: AtomicUsize,
    /// Reject every record as invalid (a failure about the record: it uses up tries).
    pub reject_all_records: AtomicBool,
    /// Deny `ListShards` (as an IAM policy without kinesis:ListShards would).
    pub deny_list_shards: AtomicBool,
    /// Send every Nth PutRecords call on to Kinesis, then cut the connection without an answer
    /// (0: never): the caller cannot know whether its records were stored.
    pub cut_every_call: AtomicUsize,
    pub cut_calls: AtomicUsize,
    calls: AtomicUsize,
    pub throttled_calls: AtomicUsize,
    pub failed_records: AtomicUsize,
    /// Kinesis's per-shard write limits, enforced as Kinesis does (see [`ShardLimits`]).
    pub shard_limits: std::sync::Mutex<Option<ShardLimits>>,
    /// Records refused for their shard's limit.
    pub limited_records: AtomicUsize,
    /// Every call answered this much later (a real Kinesis's round trip: ~10–30 ms in region).
    pub delay_ms: AtomicU64,
}

/// Per-shard write limits over a sliding second, as Kinesis enforces them: a record whose shard
/// already took `records` records or `bytes` bytes (data and partition key) in the last second
/// fails with `ProvisionedThroughputExceededException`.
pub struct ShardLimits {
    pub records: usize,
    pub bytes: usize,
    /// `(first hash key, last hash key, shard id)` of the open shards ([`shard_ranges`]).
    pub shards: Vec<(u128, u128, String)>,
    taken:
        std::collections::HashMap<String, std::collections::VecDeque<(std::time::Instant, usize)>>,
}

impl ShardLimits {
    pub fn new(records: usize, bytes: usize, shards: Vec<(u128, u128, String)>) -> ShardLimits {
        ShardLimits {
            records,
            bytes,
            shards,
            taken: Default::default(),
        }
    }

    /// Whether the shard has room for a record of `bytes` now (and takes it when it has).
    fn admit(&mut self, hash: u128, bytes: usize) -> bool {
        let Some((_, _, shard)) = self
            .shards
            .iter()
            .find(|(lo, hi, _)| (*lo..=*hi).contains(&hash))
        else {
            return true;
        };
        let now = std::time::Instant::now();
        let q = self.taken.entry(shard.clone()).or_default();
        while q
            .front()
            .is_some_and(|(t, _)| now.duration_since(*t) >= Duration::from_secs(1))
        {
            q.pop_front();
        }
        let used: usize = q.iter().map(|(_, b)| b).sum();
        if q.len() + 1 > self.records || used + bytes > self.bytes {
            return false;
        }
        q.push_back((now, bytes));
        true
    }
}

/// The open shards of a stream as `(first hash key, last hash key, shard id)`.
pub async fn shard_ranges(c: &Client, stream: &str) -> Vec<(u128, u128, String)> {
    let out = c.list_shards().stream_name(stream).send().await.unwrap();
    out.shards()
        .iter()
        .filter(|s| {
            s.sequence_number_range()
                .and_then(|r| r.ending_sequence_number())
                .is_none()
        })
        .map(|s| {
            let r = s.hash_key_range().unwrap();
            (
                r.starting_hash_key().parse().unwrap(),
                r.ending_hash_key().parse().unwrap(),
                s.shard_id().to_string(),
            )
        })
        .collect()
}

/// A fault-injecting HTTP proxy in front of a Kinesis endpoint.
pub struct Shim {
    pub addr: SocketAddr,
    pub faults: Arc<Faults>,
    target: SocketAddr,
    task: Option<tokio::task::JoinHandle<()>>,
    /// The connections being served (aborted by `down`).
    conns: Arc<std::sync::Mutex<Vec<tokio::task::AbortHandle>>>,
}

impl Shim {
    /// Starts the shim on a port of its own (bound on port 0 and kept).
    pub async fn start(target: SocketAddr) -> Shim {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mut shim = Shim {
            addr: listener.local_addr().unwrap(),
            faults: Arc::new(Faults::default()),
            target,
            task: None,
            conns: Arc::default(),
        };
        shim.serve(listener);
        shim
    }

    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Stops listening and resets the open connections (pooled keep-alive ones too): new
    /// connections are refused until `up`.
    pub fn down(&mut self) {
        if let Some(t) = self.task.take() {
            t.abort();
        }
        for c in self.conns.lock().unwrap().drain(..) {
            c.abort();
        }
    }

    /// Listens again on the same port (waiting up to 10 s for the system to release it).
    pub async fn up(&mut self) {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        let listener = loop {
            match TcpListener::bind(self.addr).await {
                Ok(l) => break l,
                Err(e) => {
                    assert!(
                        std::time::Instant::now() < deadline,
                        "the shim cannot listen on {} again: {e}",
                        self.addr
                    );
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        };
        self.serve(listener);
    }

    /// Serves connections from `listener` until `down`.
    fn serve(&mut self, listener: TcpListener) {
        let (faults, target) = (Arc::clone(&self.faults), self.target);
        let conns = Arc::clone(&self.conns);
        self.task = Some(tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let faults = Arc::clone(&faults);
                let mut conns = conns.lock().unwrap();
                conns.retain(|c| !c.is_finished());
                conns.push(
                    tokio::spawn(async move {
                        let svc = service_fn(move |req| {
                            let faults = Arc::clone(&faults);
                            async move {
                                // No answer: hyper closes the connection.
                                handle(req, target, &faults)
                                    .await
                                    .ok_or("connection cut by the shim")
                            }
                        });
                        let _ = hyper::server::conn::http1::Builder::new()
                            .serve_connection(TokioIo::new(stream), svc)
                            .await;
                    })
                    .abort_handle(),
                );
            }
        }));
    }
}

impl Drop for Shim {
    fn drop(&mut self) {
        self.down();
    }
}

/// The shim's answer, or `None` to cut the connection without one.
async fn handle(
    req: Request<Incoming>,
    target: SocketAddr,
    f: &Faults,
) -> Option<Response<Full<Bytes>>> {
    let (parts, body) = req.into_parts();
    let body = body
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let delay = f.delay_ms.load(Ordering::Relaxed);
    if delay > 0 {
        tokio::time::sleep(Duration::from_millis(delay)).await;
    }
    let op = parts
        .headers
        .get("x-amz-target")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    if op.ends_with(".ListShards") && f.deny_list_shards.load(Ordering::SeqCst) {
        return Some(error(
            400,
            "AccessDeniedException",
            "not allowed: kinesis:ListShards (shim)",
        ));
    }
    if !op.ends_with(".PutRecords") {
        return Some(forward(&parts, body, target).await);
    }
    let n = f.calls.fetch_add(1, Ordering::SeqCst) + 1;
    let every = f.throttle_every_call.load(Ordering::SeqCst);
    if every > 0 && n.is_multiple_of(every) {
        f.throttled_calls.fetch_add(1, Ordering::SeqCst);
        return Some(error(
            400,
            "ProvisionedThroughputExceededException",
            "Rate exceeded for stream (shim)",
        ));
    }
    let cut = f.cut_every_call.load(Ordering::SeqCst);
    if cut > 0 && n.is_multiple_of(cut) {
        let stored = forward(&parts, body, target).await;
        if stored.status() == 200 {
            f.cut_calls.fetch_add(1, Ordering::SeqCst);
            return None;
        }
        return Some(stored);
    }
    let mut doc: Value = serde_json::from_slice(&body).unwrap();
    let records = doc["Records"].as_array().cloned().unwrap_or_default();
    let fail_every = f.fail_every_record.load(Ordering::SeqCst);
    let fail_all = f.reject_all_records.load(Ordering::SeqCst);
    let mut failing: HashSet<usize> = (0..records.len())
        .filter(|i| fail_all || (fail_every > 0 && (i + n).is_multiple_of(fail_every)))
        .collect();
    let mut limited = HashSet::new();
    if let Some(limits) = f.shard_limits.lock().unwrap().as_mut() {
        for (i, r) in records.iter().enumerate() {
            if failing.contains(&i) {
                continue;
            }
            let key = r["PartitionKey"].as_str().unwrap_or("");
            let hash = r["ExplicitHashKey"]
                .as_str()
                .and_then(|h| h.parse().ok())
                .unwrap_or_else(|| strangler_events::aggregate::hash_key(key));
            // base64: 4 characters per 3 bytes, less the padding.
            let data = r["Data"].as_str().unwrap_or("");
            let bytes = data.len() / 4 * 3 - data.bytes().rev().take_while(|&b| b == b'=').count();
            if !limits.admit(hash, bytes + key.len()) {
                limited.insert(i);
            }
        }
    }
    f.limited_records.fetch_add(limited.len(), Ordering::SeqCst);
    failing.extend(limited.iter().copied());
    if failing.is_empty() {
        return Some(forward(&parts, body, target).await);
    }
    // Send on only the records that "succeed"; answer for the rest as Kinesis would.
    let kept: Vec<Value> = records
        .iter()
        .enumerate()
        .filter(|(i, _)| !failing.contains(i))
        .map(|(_, r)| r.clone())
        .collect();
    let mut kept_results = Vec::new().into_iter();
    if !kept.is_empty() {
        doc["Records"] = Value::Array(kept);
        let resp = forward(&parts, Bytes::from(doc.to_string()), target).await;
        if resp.status() != 200 {
            return Some(resp);
        }
        let out: Value =
            serde_json::from_slice(&resp.into_body().collect().await.unwrap().to_bytes()).unwrap();
        kept_results = out["Records"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .into_iter();
    }
    let mut results = Vec::new();
    let mut failed = 0;
    for i in 0..records.len() {
        if failing.contains(&i) {
            failed += 1;
            results.push(if fail_all && !limited.contains(&i) {
                json!({"ErrorCode": "InvalidArgumentException", "ErrorMessage": "record rejected (shim)"})
            } else {
                json!({"ErrorCode": "ProvisionedThroughputExceededException", "ErrorMessage": "Rate exceeded for shard (shim)"})
            });
        } else {
            let r = kept_results
                .next()
                .unwrap_or(json!({"ErrorCode": "InternalFailure", "ErrorMessage": "missing"}));
            if r.get("ErrorCode").is_some() {
                failed += 1;
            }
            results.push(r);
        }
    }
    f.failed_records
        .fetch_add(failing.len() - limited.len(), Ordering::SeqCst);
    let body = json!({"FailedRecordCount": failed, "Records": results}).to_string();
    Some(
        Response::builder()
            .status(200)
            .header("content-type", "application/x-amz-json-1.1")
            .body(Full::new(Bytes::from(body)))
            .unwrap(),
    )
}

fn error(status: u16, ty: &str, msg: &str) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header("content-type", "application/x-amz-json-1.1")
        .header("x-amzn-errortype", ty)
        .body(Full::new(Bytes::from(
            json!({"__type": ty, "message": msg}).to_string(),
        )))
        .unwrap()
}

async fn forward(
    parts: &http::request::Parts,
    body: Bytes,
    target: SocketAddr,
) -> Response<Full<Bytes>> {
    let mut b = Request::builder()
        .method(parts.method.clone())
        .uri(parts.uri.clone());
    for (k, v) in &parts.headers {
        if k != "content-length" {
            b = b.header(k, v);
        }
    }
    let req = b.body(Full::new(body)).unwrap();
    match crate::client::request(target, req).await {
        Ok(r) => {
            let mut resp = Response::builder().status(r.status);
            for (k, v) in &r.headers {
                if k != "content-length" && k != "transfer-encoding" {
                    resp = resp.header(k, v);
                }
            }
            resp.body(Full::new(r.body)).unwrap()
        }
        Err(e) => error(
            500,
            "InternalFailure",
            &format!("shim could not reach kinesis-local: {e}"),
        ),
    }
}
