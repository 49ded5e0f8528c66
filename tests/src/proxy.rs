//! Starts the real `strangler` binary with a config (built from typed values) and rules written
//! to a temp dir, on free loopback ports, and waits until its admin `/readyz` answers.

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use serde_json::{Map, Value, json};

use crate::client::{Reply, get};
use crate::store::Store;

/// The `strangler` binary of this workspace, built once per test process in the profile the
/// tests run in (`cargo test --release` gets a release proxy), so it matches the sources;
/// `STRANGLER_BIN` names another build instead (to run a suite against an older one, as
/// `bench/` does).
pub fn binary() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        if let Some(bin) = std::env::var_os("STRANGLER_BIN") {
            return PathBuf::from(bin);
        }
        // test binary: <target>/<profile dir>/deps/e2e-…; the proxy: <target>/<profile dir>/strangler
        let exe = std::env::current_exe().unwrap();
        let dir = exe.parent().and_then(Path::parent).unwrap();
        let profile = match dir.file_name().and_then(|n| n.to_str()) {
            Some("debug") | None => "dev",
            Some(other) => other,
        };
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let status = Command::new(cargo)
            .args(["build", "--quiet", "-p", "strangler", "--bin", "strangler"])
            .args(["--profile", profile])
            .status()
            .expect("run cargo build");
        assert!(
            status.success(),
            "cargo build -p strangler --profile {profile} failed"
        );
        dir.join("strangler")
    })
    .clone()
}

/// A free port on 127.0.0.1, bound and released: another process may take it before the one it
/// is meant for binds it. Whoever uses it for a process of its own retries with new ports when
/// that process finds it taken ([`ProxyBuilder::start`], `KinesisLocal::start`); listeners of
/// this process stay bound on port 0 instead ([`crate::Upstream`], the fault shim).
pub fn free_port() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

/// An address on 127.0.0.1 where nothing listens, reserved (bound, never listening) for as long
/// as the returned socket lives: a connect to it is refused, and no other test can take it in
/// the meantime (a port bound and released could be).
pub fn dead_port() -> (tokio::net::TcpSocket, SocketAddr) {
    let s = tokio::net::TcpSocket::new_v4().unwrap();
    s.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let addr = s.local_addr().unwrap();
    (s, addr)
}

/// An upstream in the config: its address and options (`read_timeout`, `connect_timeout`, …).
#[derive(Debug, Clone)]
pub struct UpstreamConfig {
    address: SocketAddr,
    options: Map<String, Value>,
}

impl UpstreamConfig {
    pub fn new(address: SocketAddr) -> UpstreamConfig {
        UpstreamConfig {
            address,
            options: Map::new(),
        }
    }

    /// One option of the upstream (as the config file names it).
    pub fn option(mut self, key: &str, value: impl Into<Value>) -> Self {
        self.options.insert(key.into(), value.into());
        self
    }

    pub fn read_timeout(self, d: &str) -> Self {
        self.option("read_timeout", d)
    }

    fn into_value(self) -> Value {
        let mut v = self.options;
        v.insert("address".into(), self.address.to_string().into());
        Value::Object(v)
    }
}

/// Starts the proxy with a config built from typed values. The config file is written as JSON,
/// which the proxy's YAML reader takes as it is.
#[derive(Clone)]
pub struct ProxyBuilder {
    legacy: UpstreamConfig,
    services: Map<String, Value>,
    rules: Vec<(String, String)>,
    settings: Map<String, Value>,
    env: Vec<(String, String)>,
    /// The `tls` of a second, HTTPS listener.
    tls: Option<Value>,
    /// The store given, kept with the proxy for as long as it runs.
    store: Option<Store>,
}

impl ProxyBuilder {
    pub fn new(legacy: SocketAddr) -> ProxyBuilder {
        ProxyBuilder {
            legacy: UpstreamConfig::new(legacy),
            services: Map::new(),
            rules: Vec::new(),
            settings: Map::new(),
            env: Vec::new(),
            tls: None,
            store: None,
        }
    }

    /// The monolith's upstream, with options.
    pub fn legacy(mut self, legacy: UpstreamConfig) -> Self {
        self.legacy = legacy;
        self
    }

    /// A new service.
    pub fn service(mut self, name: &str, upstream: UpstreamConfig) -> Self {
        self.services.insert(name.into(), upstream.into_value());
        self
    }

    /// A rule file in the rules folder.
    pub fn rules(mut self, file: &str, yaml: &str) -> Self {
        self.rules.push((file.into(), yaml.into()));
        self
    }

    /// A top-level config setting: `setting("client_body_timeout", "1s")`,
    /// `setting("events", json!({ "max_attempts": 2 }))`.
    pub fn setting(mut self, key: &str, value: impl Into<Value>) -> Self {
        self.settings.insert(key.into(), value.into());
        self
    }

    /// Events go to the Kinesis(-compatible) server at `endpoint`, with test credentials and a
    /// fixed redaction salt.
    pub fn kinesis(self, endpoint: &str) -> Self {
        self.setting(
            "kinesis",
            json!({ "region": "us-east-1", "endpoint": endpoint }),
        )
        .env("AWS_ACCESS_KEY_ID", "test")
        .env("AWS_SECRET_ACCESS_KEY", "test")
        .env("STRANGLER_REDACT_SALT", "pepper")
    }

    /// The store the proxy keeps its state in (default: SQLite in its temp dir).
    pub fn store(mut self, store: &Store) -> Self {
        self.store = Some(store.clone());
        self.setting("store", store.url())
    }

    /// A second listener, HTTPS, with this `tls` (`[{ "cert": …, "key": … }, …]`); its address
    /// is [`Proxy::tls_addr`].
    pub fn https(mut self, tls: Value) -> Self {
        self.tls = Some(tls);
        self
    }

    /// An environment variable for the proxy process.
    pub fn env(mut self, k: &str, v: &str) -> Self {
        self.env.push((k.into(), v.into()));
        self
    }

    /// Writes the config and rules to a temp dir and starts the proxy, waiting until it is
    /// ready. When a port picked for it was taken in between (see [`free_port`]), it starts
    /// again on new ports.
    pub async fn start(self) -> Proxy {
        for _ in 0..5 {
            let (addr, admin) = (free_port(), free_port());
            let mut p = self.clone().start_on(addr, admin);
            if ready(&mut p.child, addr, admin, &p.log).await.is_ok() {
                return p;
            }
        }
        panic!("strangler found its ports taken five times in a row");
    }

    /// Writes the config and rules to a temp dir and starts the proxy on these addresses,
    /// without waiting for anything (a test of how it starts, or fails to).
    pub fn start_on(self, addr: SocketAddr, admin: SocketAddr) -> Proxy {
        let dir = tempfile::tempdir().unwrap();
        let rules_dir = dir.path().join("rules");
        std::fs::create_dir(&rules_dir).unwrap();
        for (name, yaml) in &self.rules {
            std::fs::write(rules_dir.join(name), yaml).unwrap();
        }
        let config = dir.path().join("strangler.yaml");
        let log = dir.path().join("strangler.log");
        let mut cfg = Map::new();
        let tls_addr = self.tls.as_ref().map(|_| free_port());
        match (&self.tls, tls_addr) {
            (Some(tls), Some(t)) => cfg.insert(
                "listen".into(),
                json!([addr.to_string(), { "address": t.to_string(), "tls": tls }]),
            ),
            _ => cfg.insert("listen".into(), json!([addr.to_string()])),
        };
        cfg.insert("admin".into(), admin.to_string().into());
        cfg.insert("workers".into(), 2.into());
        cfg.insert("legacy".into(), self.legacy.clone().into_value());
        cfg.insert("rules".into(), "rules".into());
        cfg.insert("log".into(), json!({ "level": "info" }));
        if !self.services.is_empty() {
            cfg.insert("services".into(), Value::Object(self.services.clone()));
        }
        cfg.extend(self.settings.clone());
        let text = serde_json::to_string_pretty(&Value::Object(cfg)).unwrap();
        std::fs::write(&config, text).unwrap();
        let child = spawn(&config, &log, &self.env);
        Proxy {
            child,
            addr,
            tls_addr,
            admin,
            dir,
            config,
            log,
            env: self.env,
            _store: self.store,
        }
    }
}

/// The proxy exited because a port picked for it was taken.
struct PortTaken;

/// Waits until the proxy's admin `/readyz` answers and its listener accepts. Panics when it
/// exits for any other reason than a taken port, or is not ready within 20 s.
async fn ready(
    child: &mut Child,
    addr: SocketAddr,
    admin: SocketAddr,
    log: &Path,
) -> Result<(), PortTaken> {
    let logs = || std::fs::read_to_string(log).unwrap_or_default();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            let text = logs();
            if text.contains("Address already in use") {
                return Err(PortTaken);
            }
            panic!("strangler exited with {status}:\n{text}");
        }
        let admin_ok = tokio::net::TcpStream::connect(admin).await.is_ok();
        let proxy_ok = tokio::net::TcpStream::connect(addr).await.is_ok();
        if admin_ok && proxy_ok && get(admin, "/readyz", &[]).await.status == 200 {
            return Ok(());
        }
        assert!(
            std::time::Instant::now() < deadline,
            "strangler not ready:\n{}",
            logs()
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

fn spawn(config: &Path, log: &Path, env: &[(String, String)]) -> Child {
    let logfile = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .unwrap();
    Command::new(binary())
        .args(["run", "--config"])
        .arg(config)
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .stdout(Stdio::null())
        .stderr(logfile)
        .spawn()
        .expect("start strangler")
}

pub struct Proxy {
    child: Child,
    pub addr: SocketAddr,
    /// The HTTPS listener's address, with [`ProxyBuilder::https`].
    pub tls_addr: Option<SocketAddr>,
    pub admin: SocketAddr,
    pub dir: tempfile::TempDir,
    pub config: PathBuf,
    pub log: PathBuf,
    env: Vec<(String, String)>,
    /// Dropped after the process is killed (`Drop`), never before.
    _store: Option<Store>,
}

impl Proxy {
    /// `kill -9`: no shutdown, no flushing, nothing graceful.
    pub fn kill9(&mut self) {
        let _ = self.child.kill(); // SIGKILL
        let _ = self.child.wait();
    }

    /// SIGTERM (graceful shutdown); panics unless the process exits within `limit`.
    pub async fn terminate(&mut self, limit: Duration) {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -TERM failed");
        let deadline = std::time::Instant::now() + limit;
        while self.child.try_wait().unwrap().is_none() {
            assert!(
                std::time::Instant::now() < deadline,
                "strangler still running {limit:?} after SIGTERM:\n{}",
                self.logs()
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// Starts the proxy again with the same config, rules and store.
    pub async fn restart(&mut self) {
        self.spawn_again();
        self.wait_ready().await;
    }

    /// Starts the proxy again (after it stopped) without waiting for it to be ready.
    pub fn spawn_again(&mut self) {
        self.child = spawn(&self.config, &self.log, &self.env);
    }

    /// Waits (at most `limit`) for the process to exit by itself; its status, or `None`.
    pub async fn exit_status(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        let deadline = std::time::Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return Some(status);
            }
            if std::time::Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    async fn wait_ready(&mut self) {
        if ready(&mut self.child, self.addr, self.admin, &self.log)
            .await
            .is_err()
        {
            panic!(
                "strangler's ports were taken while it was stopped:\n{}",
                self.logs()
            );
        }
    }

    pub fn rules_dir(&self) -> PathBuf {
        self.dir.path().join("rules")
    }

    /// Replaces a rule file atomically (write + rename, as editors do).
    pub fn write_rules(&self, file: &str, yaml: &str) {
        let tmp = self.dir.path().join(format!(".{file}.tmp"));
        std::fs::write(&tmp, yaml).unwrap();
        std::fs::rename(&tmp, self.rules_dir().join(file)).unwrap();
    }

    /// `method path` on the admin API with an empty body (a command: `POST /api/kill-switch`).
    pub async fn admin_call(&self, method: &str, path: &str, headers: &[(&str, &str)]) -> Reply {
        let mut req = http::Request::builder().method(method).uri(path);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let req = req
            .body(http_body_util::Full::new(bytes::Bytes::new()))
            .expect("a valid request");
        crate::client::request(self.admin, req)
            .await
            .expect("the admin API answers")
    }

    /// A context's stored rollout state (`GET /api/rollouts`), `null` when it has none.
    pub async fn rollout_state(&self, context: &str) -> Value {
        let v = self.admin_json("/api/rollouts").await;
        v["contexts"]
            .as_array()
            .and_then(|a| a.iter().find(|c| c["context"] == context))
            .map_or(Value::Null, |c| c["state"].clone())
    }

    /// The admin API's JSON at `path`.
    pub async fn admin_json(&self, path: &str) -> serde_json::Value {
        get(self.admin, path, &[]).await.json()
    }

    /// The value of one metric sample line (`name{labels}`), 0 when absent.
    pub async fn metric(&self, sample: &str) -> f64 {
        let text = get(self.admin, "/metrics", &[]).await.text();
        text.lines()
            .find_map(|l| {
                l.strip_prefix(sample)
                    .and_then(|rest| rest.strip_prefix(' '))
            })
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0.0)
    }

    /// `strangler_downstream_errors_total{kind}`: the client faults counted so far.
    pub async fn client_faults(&self, kind: &str) -> f64 {
        self.metric(&format!(
            "strangler_downstream_errors_total{{kind=\"{kind}\"}}"
        ))
        .await
    }

    /// Current rules generation (1 at start, +1 per accepted reload).
    pub async fn generation(&self) -> u64 {
        self.admin_json("/api/rules").await["generation"]
            .as_u64()
            .unwrap_or(0)
    }

    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The lines of its log at ERROR level (an operator's ERROR means the proxy or an upstream
    /// failed, never a client).
    pub fn error_lines(&self) -> Vec<String> {
        self.logs()
            .lines()
            .filter(|l| l.contains("ERROR"))
            .map(str::to_string)
            .collect()
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Proxy {
    /// Kills the process. When the test is failing, first prints whether it was still running
    /// and the end of its log: a CI failure then shows what the proxy saw.
    fn drop(&mut self) {
        if std::thread::panicking() {
            let status = match self.child.try_wait() {
                Ok(Some(s)) => format!("had exited ({s})"),
                _ => "was running".to_string(),
            };
            let logs = self.logs();
            let lines: Vec<&str> = logs.lines().collect();
            let tail = &lines[lines.len().saturating_sub(60)..];
            eprintln!(
                "--- strangler (pid {}) {status}; the last {} lines of {}:\n{}\n---",
                self.child.id(),
                tail.len(),
                self.log.display(),
                tail.join("\n")
            );
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
