//! The `check` and `explain` commands, and every example config under `examples/`.

use std::path::{Path, PathBuf};
use std::process::Command;

use strangler_tests::binary;

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

fn run(args: &[&str], dir: &Path) -> (i32, String, String) {
    output(Command::new(binary()).args(args).current_dir(dir))
}

/// `run` with no AWS region anywhere: none in the environment, no AWS profile files.
fn run_without_region(args: &[&str], dir: &Path) -> (i32, String, String) {
    output(
        Command::new(binary())
            .args(args)
            .current_dir(dir)
            .env_remove("AWS_REGION")
            .env_remove("AWS_DEFAULT_REGION")
            .env_remove("AWS_PROFILE")
            .env("AWS_CONFIG_FILE", dir.join("no-aws-config"))
            .env(
                "AWS_SHARED_CREDENTIALS_FILE",
                dir.join("no-aws-credentials"),
            ),
    )
}

fn output(cmd: &mut Command) -> (i32, String, String) {
    let out = cmd.output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into(),
        String::from_utf8_lossy(&out.stderr).into(),
    )
}

fn write(dir: &Path, name: &str, text: &str) {
    std::fs::create_dir_all(dir.join(name).parent().unwrap()).unwrap();
    std::fs::write(dir.join(name), text).unwrap();
}

const CONFIG: &str = "listen: [\"127.0.0.1:8080\"]\nlegacy: { address: \"127.0.0.1:8081\" }\nservices:\n  orders: { address: \"127.0.0.1:8082\" }\nrules: rules\n";

#[test]
fn check_prints_every_error_located_and_fails() {
    let d = tempfile::tempdir().unwrap();
    write(d.path(), "strangler.yaml", CONFIG);
    write(
        d.path(),
        "rules/a.yaml",
        "routes:\n  - name: a\n    match: { methods: [GTE], path: { template: \"/o/{id\" } }\n    target: { service: billing, weight: 101 }\n",
    );
    write(
        d.path(),
        "rules/b.yaml",
        "routes:\n  - name: b\n    match: { path: { prefix: /x } }\n    target: { service: orders, sticky: { path_param: id } }\n    extra: 1\n",
    );
    let (code, out, err) = run(&["check", "strangler.yaml"], d.path());
    assert_eq!(code, 1, "stdout: {out}\nstderr: {err}");
    for want in [
        "rules/a.yaml:3:24: routes[0].match.methods[0]: unknown method `GTE`",
        "rules/a.yaml:3:48: routes[0].match.path.template: segment `{id` opens `{` without closing it",
        "rules/a.yaml:4:24: routes[0].target.service: unknown service `billing` (the config names: orders, legacy)",
        "rules/a.yaml:4:41: routes[0].target.weight: weight 101 is out of range 0–100",
        "rules/b.yaml:5:5: unknown field `extra`",
        "5 error(s)",
    ] {
        assert!(err.contains(want), "missing `{want}` in:\n{err}");
    }
    // The README's form names a rule file under the config's folder too: each error once.
    let (code, _, twice) = run(&["check", "strangler.yaml", "rules/a.yaml"], d.path());
    assert_eq!(code, 1);
    assert_eq!(twice.matches("unknown method `GTE`").count(), 1, "{twice}");
    assert!(twice.contains("5 error(s)"), "{twice}");
}

#[test]
fn check_accepts_valid_files_with_a_summary() {
    let d = tempfile::tempdir().unwrap();
    write(d.path(), "strangler.yaml", CONFIG);
    write(
        d.path(),
        "rules/a.yaml",
        "routes:\n  - { name: a, match: { path: { prefix: /o } }, target: { service: orders, weight: 5 } }\n",
    );
    let (code, out, err) = run(&["check", "strangler.yaml", "rules/a.yaml"], d.path());
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains(
            "ok: strangler.yaml: 1 listener(s), 1 service(s) (orders); 1 route(s) in 1 rule file(s)"
        ),
        "{out}"
    );
    assert!(out.contains("ok: rules/a.yaml: 1 route(s)"), "{out}");
}

/// `-c` is `--config` in every command that takes one, and the help says what it is.
#[test]
fn every_config_option_takes_c_and_says_what_it_is() {
    let d = tempfile::tempdir().unwrap();
    write(d.path(), "strangler.yaml", CONFIG);
    write(d.path(), "rules/a.yaml", "routes: []\n");
    let (code, out, err) = run(
        &[
            "explain",
            "-c",
            "strangler.yaml",
            "--method",
            "GET",
            "--path",
            "/x",
        ],
        d.path(),
    );
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("legacy"), "{out}");
    for cmd in [
        &["run"][..],
        &["explain"],
        &["stream", "read"],
        &["shadow", "summary"],
        &["rollout", "status"],
        &["kill-switch", "on"],
        &["capacity"],
        &["iam-policy"],
        &["events", "replays"],
    ] {
        let (code, out, err) = run(&[cmd, &["--help"]].concat(), d.path());
        assert_eq!(code, 0, "{cmd:?}: {err}");
        assert!(
            out.contains("-c, --config <CONFIG>") && out.contains("The proxy's config file"),
            "{cmd:?}: {out}"
        );
    }
}

/// Every command's help ends with an example of it.
#[test]
fn every_command_shows_an_example() {
    let d = tempfile::tempdir().unwrap();
    for cmd in [
        &["run"][..],
        &["check"],
        &["explain"],
        &["stream", "read"],
        &["stream", "create"],
        &["events", "replay"],
        &["events", "replays"],
        &["shadow", "summary"],
        &["shadow", "show"],
        &["rollout", "status"],
        &["rollout", "pause"],
        &["rollout", "resume"],
        &["rollout", "promote"],
        &["rollout", "rollback"],
        &["rollout", "set-weight"],
        &["rollout", "audit"],
        &["capacity"],
        &["iam-policy"],
        &["kill-switch", "on"],
        &["kill-switch", "off"],
        &["kill-switch", "status"],
    ] {
        let (code, out, err) = run(&[cmd, &["--help"]].concat(), d.path());
        assert_eq!(code, 0, "{cmd:?}: {err}");
        let example = format!("Example:\n  strangler {}", cmd.join(" "));
        assert!(out.contains(&example), "{cmd:?}: {out}");
    }
}

/// `strangler check … | head -0`: the reader is gone before the first line; the command ends
/// quietly with 0, as Unix tools do, not with a "Broken pipe" panic (101).
#[test]
fn output_into_a_closed_pipe_ends_quietly() {
    let d = tempfile::tempdir().unwrap();
    write(d.path(), "strangler.yaml", CONFIG);
    write(d.path(), "rules/a.yaml", "routes: []\n");
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let out = Command::new(binary())
        .args(["check", "strangler.yaml", "rules/a.yaml"])
        .current_dir(d.path())
        .stdout(writer)
        .stderr(std::process::Stdio::piped())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert!(!err.contains("panicked"), "{err}");
}

#[test]
fn check_warns_about_shadowed_writes_on_a_publishing_route_and_still_passes() {
    let d = tempfile::tempdir().unwrap();
    write(
        d.path(),
        "strangler.yaml",
        &format!("{CONFIG}kinesis: {{ region: us-east-1 }}\n"),
    );
    write(
        d.path(),
        "rules/a.yaml",
        "routes:\n  - name: create\n    match: { methods: [POST], path: { exact: /o } }\n    target: { service: orders, weight: 0 }\n    publish: { stream: orders, type: ORDER_CREATED }\n    shadow: { service: orders, methods: [POST] }\n",
    );
    let (code, out, err) = run(&["check", "strangler.yaml"], d.path());
    assert_eq!(code, 0, "{err}");
    assert!(
        err.contains("warning: rules/a.yaml:6:41: routes[0].shadow.methods: `POST` is copied to the new service on a route that also publishes"),
        "{err}"
    );
    assert!(out.contains("ok: strangler.yaml"), "{out}");
}

#[test]
fn check_reports_config_errors() {
    let d = tempfile::tempdir().unwrap();
    write(
        d.path(),
        "bad.yaml",
        "listen: [\"127.0.0.1:8080\"]\nlegacy: { address: \"127.0.0.1:8081\", conect_timeout: 1s }\nrules: rules\n",
    );
    let (code, _, err) = run(&["check", "bad.yaml"], d.path());
    assert_eq!(code, 1);
    assert!(
        err.contains("bad.yaml:2:38: unknown field `conect_timeout`"),
        "{err}"
    );
}

#[test]
fn explain_shows_route_target_and_sticky_side() {
    let d = tempfile::tempdir().unwrap();
    write(d.path(), "strangler.yaml", CONFIG);
    write(
        d.path(),
        "rules/a.yaml",
        "routes:\n  - { name: other, match: { methods: [DELETE] }, target: { service: orders } }\n  - { name: orders, match: { path: { template: \"/api/orders/{id}\" } }, target: { service: orders, weight: 50, sticky: { header: x-user } } }\n",
    );
    let (code, out, err) = run(
        &[
            "explain",
            "--config",
            "strangler.yaml",
            "--method",
            "GET",
            "--path",
            "/api/orders/7",
            "-H",
            "x-user: alice",
            "--verbose",
        ],
        d.path(),
    );
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("skip other (") && out.contains("method not in [DELETE]"),
        "{out}"
    );
    assert!(out.contains("route:    orders ("), "{out}");
    assert!(out.contains("params:   id=7"), "{out}");
    assert!(
        out.contains("target:   service orders at weight 50%"),
        "{out}"
    );
    assert!(out.contains("key:      \"alice\" → bucket "), "{out}");
    let (_, out, _) = run(
        &[
            "explain",
            "--config",
            "strangler.yaml",
            "--path",
            "/nothing",
        ],
        d.path(),
    );
    assert!(
        out.contains("none matched → default: legacy (127.0.0.1:8081)"),
        "{out}"
    );
}

const PUBLISHING: &str = "routes:\n  - name: create\n    match: { methods: [POST], path: { exact: /api/orders } }\n    target: { service: legacy }\n    publish: { stream: orders, type: ORDER_CREATED }\n";

#[test]
fn publishing_without_a_region_is_an_error_for_check_and_run() {
    let d = tempfile::tempdir().unwrap();
    write(d.path(), "strangler.yaml", CONFIG);
    write(d.path(), "rules/a.yaml", PUBLISHING);
    let want = "publish: route `create` publishes events, but no AWS region is set";
    let (code, _, err) = run_without_region(&["check", "strangler.yaml"], d.path());
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("rules/a.yaml:2:1: ") && err.contains(want),
        "{err}"
    );
    let (code, _, err) = run_without_region(&["run", "--config", "strangler.yaml"], d.path());
    assert_eq!(code, 1, "{err}");
    assert!(err.contains(want), "{err}");
    // A region in the config (or the environment, or the profile) is enough.
    write(
        d.path(),
        "strangler.yaml",
        &format!("{CONFIG}kinesis: {{ region: eu-west-1 }}\n"),
    );
    let (code, out, err) = run_without_region(&["check", "strangler.yaml"], d.path());
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("1 route(s)"), "{out}");
}

#[test]
fn explain_shows_where_a_shadow_copy_goes_and_what_is_compared() {
    let d = tempfile::tempdir().unwrap();
    write(d.path(), "strangler.yaml", CONFIG);
    write(
        d.path(),
        "rules/a.yaml",
        "routes:\n  - name: read\n    match: { path: { template: \"/api/orders/{id}\" } }\n    target: { service: orders, weight: 0, sticky: { header: x-user } }\n    shadow: { service: orders, compare: { ignore: [\"$.generated_at\"] } }\n",
    );
    let explain = |method: &str| {
        run(
            &[
                "explain",
                "--config",
                "strangler.yaml",
                "--method",
                method,
                "--path",
                "/api/orders/7",
                "-H",
                "x-user: alice",
            ],
            d.path(),
        )
    };
    let (code, out, err) = explain("GET");
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("shadow:   service orders, 100% sampled by the sticky key, methods GET, HEAD, OPTIONS, TRACE"),
        "{out}"
    );
    assert!(
        out.contains("copy:     a copy goes to orders (the monolith serves)"),
        "{out}"
    );
    assert!(
        out.contains("compare:  status, headers [content-type], body ignoring $.generated_at"),
        "{out}"
    );
    let (_, out, _) = explain("DELETE");
    assert!(
        out.contains("copy:     no copy: DELETE is not listed"),
        "{out}"
    );
}

#[test]
fn explain_names_a_routes_context_and_its_rollout() {
    let d = tempfile::tempdir().unwrap();
    write(d.path(), "strangler.yaml", CONFIG);
    write(
        d.path(),
        "rules/a.yaml",
        "contexts:\n  - name: orders\n    service: orders\n    sticky: { header: x-user }\n    rollout: { steps: [0, 10, pause, 100], interval: 1m }\nroutes:\n  - name: read\n    match: { path: { prefix: /api/orders } }\n    target: { context: orders }\n",
    );
    let (code, out, err) = run(
        &[
            "explain",
            "--config",
            "strangler.yaml",
            "--path",
            "/api/orders/7",
            "-H",
            "x-user: alice",
        ],
        d.path(),
    );
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("context:  orders (rollout 0 % → 10 % → pause → 100 %;"),
        "{out}"
    );
}

#[test]
fn explain_shows_the_event_a_write_would_publish() {
    let d = tempfile::tempdir().unwrap();
    write(d.path(), "strangler.yaml", CONFIG);
    write(
        d.path(),
        "rules/a.yaml",
        "routes:\n  - name: create\n    match: { methods: [POST], path: { exact: /api/orders } }\n    target: { service: legacy }\n    publish: { stream: orders, type: ORDER_CREATED, partition_key: { request.body: \"$.user\" }, subject: { response.body: \"$.id\" }, redact: [ { jsonpath: \"$.card\" } ] }\n",
    );
    write(
        d.path(),
        "order.json",
        r#"{"user":"u1","sku":"tea","card":"4111"}"#,
    );
    write(d.path(), "answer.json", r#"{"id":77}"#);
    let args = [
        "explain",
        "--config",
        "strangler.yaml",
        "--method",
        "POST",
        "--path",
        "/api/orders",
        "--body",
        "order.json",
        "--response-status",
        "201",
        "--response-body",
        "answer.json",
    ];
    let (code, out, err) = run(&args, d.path());
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("publish:  stream orders type ORDER_CREATED (durability: sync, stored before the answer is released)"),
        "{out}"
    );
    assert!(out.contains("partition key: u1"), "{out}");
    assert!(out.contains("\"subject\": \"77\""), "{out}");
    assert!(
        out.contains("\"sku\": \"tea\"") && !out.contains("4111"),
        "{out}"
    );
    let mut failing = args.to_vec();
    failing[10] = "500";
    let (_, out, _) = run(&failing, d.path());
    assert!(
        out.contains("event:    none: status 500 is not in when_status"),
        "{out}"
    );
}

#[test]
fn every_example_config_passes_check() {
    let examples = workspace().join("examples");
    let mut checked = 0;
    for entry in walk(&examples) {
        if entry
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with("strangler") && n.ends_with(".yaml"))
        {
            let (code, out, err) = run(&["check", entry.to_str().unwrap()], &workspace());
            assert_eq!(code, 0, "{}:\n{out}{err}", entry.display());
            checked += 1;
        }
    }
    assert!(
        checked > 0,
        "no example config found under {}",
        examples.display()
    );
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

/// An unreachable Kinesis and missing credentials are one line each, in words, saying what to
/// set; not the SDK's error struct.
#[test]
fn aws_failures_are_one_line_saying_what_to_set() {
    let d = tempfile::tempdir().unwrap();
    write(d.path(), "strangler.yaml", CONFIG);
    write(d.path(), "rules/a.yaml", "routes: []\n");
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let endpoint = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    let aws = |cmd: &mut Command| {
        cmd.current_dir(d.path())
            .env("AWS_REGION", "us-east-1")
            .env("AWS_ENDPOINT_URL_KINESIS", &endpoint)
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .env("AWS_CONFIG_FILE", d.path().join("no-aws-config"))
            .env(
                "AWS_SHARED_CREDENTIALS_FILE",
                d.path().join("no-aws-credentials"),
            )
            .env_remove("AWS_PROFILE");
    };
    let read = ["stream", "read", "-c", "strangler.yaml", "--stream", "s"];
    let mut cmd = Command::new(binary());
    cmd.args(read);
    aws(&mut cmd);
    cmd.env("AWS_ACCESS_KEY_ID", "x")
        .env("AWS_SECRET_ACCESS_KEY", "y");
    let (code, _, err) = output(&mut cmd);
    assert_ne!(code, 0);
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    assert!(
        err.contains("reading stream s: cannot reach Kinesis"),
        "{err}"
    );
    assert!(err.contains("AWS_ENDPOINT_URL_KINESIS"), "{err}");

    let mut cmd = Command::new(binary());
    cmd.args(read);
    aws(&mut cmd);
    cmd.env_remove("AWS_ACCESS_KEY_ID")
        .env_remove("AWS_SECRET_ACCESS_KEY")
        .env_remove("AWS_SESSION_TOKEN");
    let (code, _, err) = output(&mut cmd);
    assert_ne!(code, 0);
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    assert!(err.contains("no AWS credentials found"), "{err}");
    assert!(err.contains("set AWS_ACCESS_KEY_ID"), "{err}");
}

/// `--config` is one global option: before the command or after it, the same.
#[test]
fn config_goes_before_or_after_the_command() {
    let d = tempfile::tempdir().unwrap();
    write(d.path(), "strangler.yaml", CONFIG);
    write(d.path(), "rules/a.yaml", "routes: []\n");
    let explain = ["explain", "--path", "/x"];
    let after = run(
        &[&explain[..], &["--config", "strangler.yaml"]].concat(),
        d.path(),
    );
    let before = run(
        &[&["-c", "strangler.yaml"][..], &explain].concat(),
        d.path(),
    );
    assert_eq!(after.0, 0, "{}", after.2);
    assert_eq!(before, after);
    // `check --config F` checks F (and its rule folder) like `check F`.
    let (code, out, err) = run(&["check", "--config", "strangler.yaml"], d.path());
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("ok: strangler.yaml"), "{out}");
}

/// A command that needs the config and has none is a usage error (2) that says what is missing.
#[test]
fn a_command_without_its_config_says_so() {
    let d = tempfile::tempdir().unwrap();
    let (code, _, err) = run(&["rollout", "status"], d.path());
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("--config <CONFIG>"), "{err}");
    // A command that fails (no proxy to ask: port 1 never listens) is 1, with the reason.
    write(d.path(), "rules/a.yaml", "routes: []\n");
    write(
        d.path(),
        "strangler.yaml",
        &format!("{CONFIG}admin: \"127.0.0.1:1\"\n"),
    );
    let (code, _, err) = run(&["rollout", "status", "-c", "strangler.yaml"], d.path());
    assert_eq!(code, 1, "{err}");
    assert!(
        err.starts_with("strangler: cannot reach the admin API"),
        "{err}"
    );
}

/// `strangler --version` says the version and the commit it was built from.
#[test]
fn version_names_the_commit() {
    let d = tempfile::tempdir().unwrap();
    let (code, out, err) = run(&["--version"], d.path());
    assert_eq!(code, 0, "{err}");
    let head = Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .current_dir(workspace())
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string());
    let commit = head.as_deref().unwrap_or("unknown");
    assert_eq!(
        out.trim(),
        format!("strangler {} (commit {commit})", env!("CARGO_PKG_VERSION"))
    );
}
