//! The `strangler` binary: parses the command line, sets up logging and hands over to `serve`,
//! `check` or `explain`.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use strangler::{
    capacity_cmd, check, config, events_cmd, explain, iam_cmd, rollout_cmd, serve, shadow_cmd,
    stream_cmd, telemetry,
};

/// pingora allocates per request (headers, buffers, futures); glibc's malloc was ~12 % of the
/// proxy's CPU in `perf` on the pass-through benchmark. mimalloc's thread-local free lists cut that.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "strangler",
    version,
    about = "Strangler-fig migration proxy: route, dual-write, shadow, shift"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the proxy.
    #[command(after_help = "Example:\n  strangler run -c strangler.yaml")]
    Run {
        /// The proxy's config file (strangler.yaml).
        #[arg(long, short)]
        config: PathBuf,
        /// Take over the listening sockets of a running instance (graceful upgrade; send the old
        /// one SIGQUIT).
        #[arg(long)]
        upgrade: bool,
    },
    /// Validate config and rule files; print every error with its location.
    #[command(after_help = "Example:\n  strangler check strangler.yaml rules/orders.yaml")]
    Check {
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// Show which route a request matches, where it would go, and the event it would publish.
    #[command(
        after_help = "Example:\n  strangler explain -c strangler.yaml --method POST --path /orders --body order.json"
    )]
    Explain(explain::ExplainArgs),
    /// Read or create a Kinesis stream (to see what was published).
    #[command(subcommand)]
    Stream(stream_cmd::StreamCommand),
    /// Re-publish archived events through the running proxy (replay), and list replays.
    #[command(subcommand)]
    Events(events_cmd::EventsCommand),
    /// The running proxy's shadow comparison: figures per route, or one stored mismatch.
    #[command(subcommand)]
    Shadow(shadow_cmd::ShadowCommand),
    /// The running proxy's rollouts: status, pause, resume, promote, rollback, set-weight, audit.
    #[command(subcommand)]
    Rollout(rollout_cmd::RolloutCommand),
    /// Size the streams from what the relay sent: shards needed, PUT units, monthly cost.
    #[command(after_help = "Example:\n  strangler capacity -c strangler.yaml --days 1")]
    Capacity(capacity_cmd::CapacityArgs),
    /// Print the least-privilege IAM policy for the streams the rules publish to.
    #[command(name = "iam-policy")]
    #[command(
        after_help = "Example:\n  strangler iam-policy -c strangler.yaml > strangler-policy.json"
    )]
    IamPolicy(iam_cmd::IamPolicyArgs),
    /// Every context to the monolith at once, on every replica (or back).
    #[command(subcommand, name = "kill-switch")]
    KillSwitch(rollout_cmd::KillSwitchCommand),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if !matches!(cli.command, Command::Run { .. }) {
        quiet_on_closed_stdout();
    }
    match cli.command {
        Command::Run { config, upgrade } => {
            let cfg = match config::Config::load(&config) {
                Ok(c) => c,
                Err(d) => {
                    eprintln!("{d}");
                    return ExitCode::from(1);
                }
            };
            telemetry::init(cfg.log_format, &cfg.log_level);
            // Synchronous on purpose: pingora builds its own runtimes in `run_forever`.
            if let Err(e) = serve::run(&cfg, upgrade) {
                eprintln!("strangler: {e:#}");
                return ExitCode::from(1);
            }
            ExitCode::SUCCESS
        }
        Command::Check { files } => ExitCode::from(check::run(&files) as u8),
        Command::Stream(cmd) => match stream_cmd::run(&cmd) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("strangler: {e:#}");
                ExitCode::from(2)
            }
        },
        Command::Shadow(cmd) => match shadow_cmd::run(&cmd) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("strangler: {e:#}");
                ExitCode::from(2)
            }
        },
        Command::IamPolicy(args) => match iam_cmd::run(&args) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("strangler: {e:#}");
                ExitCode::from(2)
            }
        },
        Command::Capacity(args) => match capacity_cmd::run(&args) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("strangler: {e:#}");
                ExitCode::from(2)
            }
        },
        Command::Events(cmd) => match events_cmd::run(&cmd) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("strangler: {e:#}");
                ExitCode::from(2)
            }
        },
        Command::Rollout(cmd) => match rollout_cmd::run(&cmd) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("strangler: {e:#}");
                ExitCode::from(2)
            }
        },
        Command::KillSwitch(cmd) => match rollout_cmd::run_kill_switch(&cmd) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("strangler: {e:#}");
                ExitCode::from(2)
            }
        },
        Command::Explain(args) => match explain::run(&args) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("strangler: {e:#}");
                ExitCode::from(2)
            }
        },
    }
}

/// A command's output piped into a reader that stops early (`strangler stream read … | head -1`)
/// ends the command quietly, as Unix tools do, instead of a "Broken pipe" panic (Rust ignores
/// SIGPIPE, so `println!` panics on the closed pipe). The proxy itself (`run`) keeps the default.
fn quiet_on_closed_stdout() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let text = info
            .payload()
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| info.payload().downcast_ref::<&str>().copied())
            .unwrap_or("");
        if text.contains("failed printing to stdout") && text.contains("Broken pipe") {
            std::process::exit(0);
        }
        default(info);
    }));
}
