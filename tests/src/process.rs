//! Another program of this workspace run as a process of its own (a consumer, say), so a test can
//! `kill -9` it and start it again; its stderr goes to a log file the test can read.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;

/// Builds a binary of a workspace package in the profile the tests run in (once per test
/// process and binary) and returns its path.
pub fn workspace_binary(package: &str, bin: &str) -> PathBuf {
    static BUILT: Mutex<Vec<String>> = Mutex::new(Vec::new());
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().and_then(Path::parent).unwrap().to_path_buf();
    let mut built = BUILT.lock().unwrap();
    if !built.iter().any(|b| b == bin) {
        let profile = match dir.file_name().and_then(|n| n.to_str()) {
            Some("debug") | None => "dev",
            Some(other) => other,
        };
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let status = Command::new(cargo)
            .args([
                "build",
                "--quiet",
                "-p",
                package,
                "--bin",
                bin,
                "--profile",
                profile,
            ])
            .status()
            .expect("run cargo build");
        assert!(
            status.success(),
            "cargo build -p {package} --bin {bin} failed"
        );
        built.push(bin.to_string());
    }
    dir.join(bin)
}

pub struct Process {
    program: PathBuf,
    args: Vec<String>,
    env: Vec<(String, String)>,
    child: Option<Child>,
    pub log: tempfile::NamedTempFile,
}

impl Process {
    /// Starts `program args…` with `env` added.
    pub fn start(program: &Path, args: &[&str], env: &[(&str, &str)]) -> Process {
        let mut p = Process {
            program: program.to_path_buf(),
            args: args.iter().map(|a| a.to_string()).collect(),
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            child: None,
            log: tempfile::NamedTempFile::new().unwrap(),
        };
        p.restart();
        p
    }

    /// Starts it again (after [`Process::kill9`]), logging to the same file.
    pub fn restart(&mut self) {
        let log = self.log.reopen().unwrap();
        let child = Command::new(&self.program)
            .args(&self.args)
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("start {}: {e}", self.program.display()));
        self.child = Some(child);
    }

    /// `kill -9`.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Whether it has exited (and how), without waiting.
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.as_mut().and_then(|c| c.try_wait().unwrap())
    }

    pub fn logs(&self) -> String {
        std::fs::read_to_string(self.log.path()).unwrap_or_default()
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// The shop's notifier (a `strangler-consumer`) reading `stream` at `endpoint` (kinesis-local)
/// into a SQLite file in `dir`, serving its progress at `http://{metrics}/metrics`.
pub fn notifier(
    dir: &Path,
    stream: &str,
    endpoint: &str,
    metrics: std::net::SocketAddr,
) -> Process {
    Process::start(
        &workspace_binary("shop-consumers", "notifier"),
        &[
            "--db",
            &format!("sqlite://{}", dir.join("notifier.db").display()),
            "--stream",
            stream,
            "--endpoint",
            endpoint,
            "--region",
            "us-east-1",
            "--idle-wait",
            "200ms",
            "--metrics",
            &metrics.to_string(),
        ],
        &[
            ("AWS_ACCESS_KEY_ID", "local"),
            ("AWS_SECRET_ACCESS_KEY", "local"),
        ],
    )
}
