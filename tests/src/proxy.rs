//! Starts the real `strangler` binary with a config and rules written to a temp dir, on free
//! loopback ports, and waits until its admin `/readyz` answers.

use std::fmt::Write as _;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use crate::client::get;

/// The `strangler` binary of this workspace, built once per test process so it matches the
/// sources; `STRANGLER_BIN` names another build instead (to run a suite against an older one,
/// as `bench/` does).
pub fn binary() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        if let Some(bin) = std::env::var_os("STRANGLER_BIN") {
            return PathBuf::from(bin);
        }
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let status = Command::new(cargo)
            .args(["build", "--quiet", "-p", "strangler", "--bin", "strangler"])
            .status()
            .expect("run cargo build");
        assert!(status.success(), "cargo build -p strangler failed");
        // test binary: <target>/debug/deps/e2e-…; the proxy: <target>/debug/strangler
        let exe = std::env::current_exe().unwrap();
        let dir = exe.parent().and_then(Path::parent).unwrap();
        dir.join("strangler")
    })
    .clone()
}

/// A free port on 127.0.0.1 (bound and released; the proxy binds it right after).
pub fn free_port() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

pub struct ProxyBuilder {
    legacy: SocketAddr,
    legacy_extra: String,
    services: Vec<(String, SocketAddr, String)>,
    rules: Vec<(String, String)>,
    extra: String,
    env: Vec<(String, String)>,
}

impl ProxyBuilder {
    pub fn new(legacy: SocketAddr) -> ProxyBuilder {
        ProxyBuilder {
            legacy,
            legacy_extra: String::new(),
            services: Vec::new(),
            rules: Vec::new(),
            extra: String::new(),
            env: Vec::new(),
        }
    }

    /// A new service; `extra` is more YAML flow-mapping entries (e.g. `read_timeout: 300ms`).
    pub fn service(mut self, name: &str, addr: SocketAddr, extra: &str) -> Self {
        self.services.push((name.into(), addr, extra.into()));
        self
    }

    pub fn legacy_options(mut self, extra: &str) -> Self {
        self.legacy_extra = extra.into();
        self
    }

    /// A rule file in the rules folder.
    pub fn rules(mut self, file: &str, yaml: &str) -> Self {
        self.rules.push((file.into(), yaml.into()));
        self
    }

    /// More top-level config lines.
    pub fn config(mut self, yaml: &str) -> Self {
        self.extra.push_str(yaml);
        self.extra.push('\n');
        self
    }

    /// An environment variable for the proxy process.
    pub fn env(mut self, k: &str, v: &str) -> Self {
        self.env.push((k.into(), v.into()));
        self
    }

    pub async fn start(self) -> Proxy {
        let dir = tempfile::tempdir().unwrap();
        let rules_dir = dir.path().join("rules");
        std::fs::create_dir(&rules_dir).unwrap();
        for (name, yaml) in &self.rules {
            std::fs::write(rules_dir.join(name), yaml).unwrap();
        }
        let (addr, admin) = (free_port(), free_port());
        let sep = |s: &str| {
            if s.is_empty() {
                String::new()
            } else {
                format!(", {s}")
            }
        };
        let mut cfg = format!(
            "listen: [\"{addr}\"]\nadmin: \"{admin}\"\nworkers: 2\nlegacy: {{ address: \"{}\"{} }}\nrules: rules\nlog: {{ level: \"info\" }}\n",
            self.legacy,
            sep(&self.legacy_extra)
        );
        if !self.services.is_empty() {
            cfg.push_str("services:\n");
            for (n, a, extra) in &self.services {
                writeln!(cfg, "  {n}: {{ address: \"{a}\"{} }}", sep(extra)).unwrap();
            }
        }
        cfg.push_str(&self.extra);
        let config = dir.path().join("strangler.yaml");
        std::fs::write(&config, cfg).unwrap();
        let log = dir.path().join("strangler.log");
        let child = spawn(&config, &log, &self.env);
        let mut proxy = Proxy {
            child,
            addr,
            admin,
            dir,
            config,
            log,
            env: self.env,
        };
        proxy.wait_ready().await;
        proxy
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
    pub admin: SocketAddr,
    pub dir: tempfile::TempDir,
    pub config: PathBuf,
    pub log: PathBuf,
    env: Vec<(String, String)>,
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
        self.child = spawn(&self.config, &self.log, &self.env);
        self.wait_ready().await;
    }

    async fn wait_ready(&mut self) {
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!("strangler exited with {status}:\n{}", self.logs());
            }
            let admin_ok = tokio::net::TcpStream::connect(self.admin).await.is_ok();
            let proxy_ok = tokio::net::TcpStream::connect(self.addr).await.is_ok();
            if admin_ok && proxy_ok && get(self.admin, "/readyz", &[]).await.status == 200 {
                return;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "strangler not ready:\n{}",
                self.logs()
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
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

    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
