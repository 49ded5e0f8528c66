//! `strangler events replay` and `strangler events replays`: the admin API's replay endpoints for
//! a terminal. The replay itself runs in the proxy; this command starts (or resumes) it and
//! follows it with a progress bar (rate and ETA) on a terminal, or a line every 5 s otherwise.
//! Ctrl-C stops following, not the replay: `--resume ID` follows it again.

use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use serde_json::{Value, json};

use super::admin::call;
use crate::config::Config;

#[derive(Debug, clap::Subcommand)]
pub enum EventsCommand {
    /// Re-publish archived events (events.keep_published) with their original ids through the
    /// outbox: those of a stream or a route created in [--since, --until).
    #[command(
        after_help = "Example:\n  strangler events replay -c strangler.yaml --stream shop-orders --since 2h --dry-run"
    )]
    Replay(ReplayArgs),
    /// The latest replay jobs.
    #[command(after_help = "Example:\n  strangler events replays -c strangler.yaml")]
    Replays,
}

#[derive(Debug, clap::Args)]
pub struct ReplayArgs {
    /// The events published to this stream…
    #[arg(long, conflicts_with_all = ["route", "resume"], required_unless_present_any = ["route", "resume"])]
    stream: Option<String>,
    /// …or by this route.
    #[arg(long, conflicts_with = "resume")]
    route: Option<String>,
    /// Created at or after: RFC 3339, a date, epoch milliseconds, or an age (2h, 7d).
    #[arg(long, required_unless_present = "resume")]
    since: Option<String>,
    /// Created before (same forms).
    #[arg(long, conflicts_with = "resume")]
    until: Option<String>,
    /// Only events of this CloudEvents type.
    #[arg(long = "type", conflicts_with = "resume")]
    ty: Option<String>,
    /// Publish to this stream instead (to backfill a new consumer's own stream, say).
    #[arg(long, conflicts_with = "resume")]
    to_stream: Option<String>,
    /// Also select the copies earlier replays published (by default a replay takes the
    /// original events only, so replaying a window twice sends each event once more, not twice).
    #[arg(long, conflicts_with = "resume")]
    include_replayed: bool,
    /// Count what would be replayed; change nothing.
    #[arg(long, conflicts_with = "resume")]
    dry_run: bool,
    /// Events per second at most (default: as fast as the relay takes them).
    #[arg(long, default_value_t = 0)]
    rate: u32,
    /// Resume an interrupted or failed replay from where it stopped (or follow a running one).
    #[arg(long, value_name = "ID")]
    resume: Option<i64>,
    /// Start it and return; do not follow.
    #[arg(long)]
    detach: bool,
}

pub fn run(cfg: &Config, cmd: &EventsCommand) -> Result<()> {
    match cmd {
        EventsCommand::Replays => {
            let v = call(cfg, "GET", "/api/replays", None)?;
            println!(
                "{:>4}  {:<11}  {:>9}  {:>9}  selection",
                "id", "state", "done", "total"
            );
            for j in v["replays"].as_array().into_iter().flatten() {
                println!(
                    "{:>4}  {:<11}  {:>9}  {:>9}  {}",
                    // (Width applies to strings, not to `Value`'s Display.)
                    j["id"].to_string(),
                    j["state"].as_str().unwrap_or("?"),
                    j["done"].to_string(),
                    j["total"].to_string(),
                    describe(j)
                );
            }
            Ok(())
        }
        EventsCommand::Replay(a) => replay(cfg, a),
    }
}

fn replay(cfg: &Config, a: &ReplayArgs) -> Result<()> {
    let job = match a.resume {
        Some(id) => {
            let job = call(cfg, "GET", &format!("/api/replays/{id}"), None)?;
            match job["state"].as_str() {
                Some("interrupted" | "failed") => call(
                    cfg,
                    "POST",
                    &format!("/api/replays/{id}/resume"),
                    Some(&json!({ "rate": a.rate })),
                )?,
                _ => job,
            }
        }
        None => {
            let mut body = json!({
                "since": a.since, "dry_run": a.dry_run, "rate": a.rate,
                "include_replayed": a.include_replayed,
            });
            for (k, v) in [
                ("stream", &a.stream),
                ("route", &a.route),
                ("until", &a.until),
                ("type", &a.ty),
                ("to_stream", &a.to_stream),
            ] {
                if let Some(v) = v {
                    body[k] = v.clone().into();
                }
            }
            let v = call(cfg, "POST", "/api/replays", Some(&body))?;
            if a.dry_run {
                println!(
                    "{} events would be replayed ({})",
                    v["events"],
                    describe(&v["selection"])
                );
                return Ok(());
            }
            v
        }
    };
    let id = job["id"].as_i64().unwrap_or_default();
    eprintln!(
        "replay {id}: {} events ({}); it runs in the proxy: Ctrl-C stops following, not the replay \
         (follow again: --resume {id})",
        job["total"],
        describe(&job)
    );
    if a.detach {
        println!("{id}");
        return Ok(());
    }
    follow(cfg, id, job)
}

/// Polls the job until it ends, drawing progress.
fn follow(cfg: &Config, id: i64, mut job: Value) -> Result<()> {
    let tty = std::io::stderr().is_terminal();
    let started = Instant::now();
    let first_done = job["done"].as_i64().unwrap_or(0);
    let mut last_line = Instant::now();
    loop {
        let (done, total) = (
            job["done"].as_i64().unwrap_or(0),
            job["total"].as_i64().unwrap_or(0),
        );
        let state = job["state"].as_str().unwrap_or("?").to_string();
        let elapsed = started.elapsed().as_secs_f64().max(0.001);
        let rate = (done - first_done) as f64 / elapsed;
        let eta = if rate > 0.0 {
            format!("{:.0}s", (total - done) as f64 / rate)
        } else {
            "?".into()
        };
        let pct = if total > 0 { done * 100 / total } else { 100 };
        if tty {
            let filled = (pct as usize * 30) / 100;
            eprint!(
                "\r[{}{}] {done}/{total} {pct:>3}%  {rate:.0} ev/s  ETA {eta}   ",
                "#".repeat(filled),
                " ".repeat(30 - filled)
            );
            let _ = std::io::stderr().flush();
        } else if last_line.elapsed() >= Duration::from_secs(5) || state != "running" {
            eprintln!("replay {id}: {done}/{total} ({pct}%), {rate:.0} events/s, ETA {eta}");
            last_line = Instant::now();
        }
        if state != "running" {
            if tty {
                eprintln!();
            }
            return match state.as_str() {
                "done" => {
                    println!(
                        "replay {id} done: {done} events back in the outbox, published by the relay"
                    );
                    Ok(())
                }
                other => bail!(
                    "replay {id} is {other} at {done}/{total}{} (resume: --resume {id})",
                    job["error"]
                        .as_str()
                        .map(|e| format!(": {e}"))
                        .unwrap_or_default()
                ),
            };
        }
        std::thread::sleep(Duration::from_millis(250));
        job = call(cfg, "GET", &format!("/api/replays/{id}"), None)?;
    }
}

/// A job's selection in words.
fn describe(j: &Value) -> String {
    let mut s = match (j["stream"].as_str(), j["route"].as_str()) {
        (Some(st), _) => format!("stream {st}"),
        (_, Some(r)) => format!("route {r}"),
        _ => "?".into(),
    };
    if let Some(t) = j["type"].as_str() {
        s.push_str(&format!(", type {t}"));
    }
    let time = |ms: i64| {
        strangler_events::envelope::rfc3339(ms.div_euclid(1000), ms.rem_euclid(1000) as u32)
    };
    if let Some(since) = j["since_ms"].as_i64() {
        s.push_str(&format!(", since {}", time(since)));
    }
    if let Some(until) = j["until_ms"].as_i64() {
        s.push_str(&format!(", until {}", time(until)));
    }
    if let Some(to) = j["to_stream"].as_str() {
        s.push_str(&format!(", to stream {to}"));
    }
    s
}
