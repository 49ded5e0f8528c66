//! The `strangler` binary: parses the command line and hands over to `serve` (the proxy) or to
//! one of the commands in `cli/`; one place turns their result into the exit status.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;
use clap::error::ErrorKind;
use clap::{CommandFactory, Parser, Subcommand};
use strangler::{cli, serve, telemetry};

/// pingora allocates per request (headers, buffers, futures); glibc's malloc was ~12 % of the
/// proxy's CPU in `perf` on the pass-through benchmark. mimalloc's thread-local free lists cut that.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "strangler",
    version = concat!(env!("CARGO_PKG_VERSION"), " (commit ", env!("STRANGLER_COMMIT"), ")"),
    about = "Strangler-fig migration proxy: route, dual-write, shadow, shift"
)]
struct Cli {
    /// The proxy's config file (strangler.yaml).
    #[arg(long, short, global = true)]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the proxy.
    #[command(after_help = "Example:\n  strangler run -c strangler.yaml")]
    Run {
        /// Take over the listening sockets of a running instance (graceful upgrade; send the old
        /// one SIGQUIT).
        #[arg(long)]
        upgrade: bool,
    },
    /// Validate config and rule files; print every error with its location.
    #[command(after_help = "Example:\n  strangler check strangler.yaml rules/orders.yaml")]
    Check {
        /// Config and rule files (rule files have a top-level `routes:`); `--config` adds one.
        #[arg(required_unless_present = "config")]
        files: Vec<PathBuf>,
    },
    /// Show which route a request matches, where it would go, and the event it would publish.
    #[command(
        after_help = "Example:\n  strangler explain -c strangler.yaml --method POST --path /orders --body order.json"
    )]
    Explain(cli::explain::ExplainArgs),
    /// Read or create a Kinesis stream (to see what was published).
    #[command(subcommand)]
    Stream(cli::stream::StreamCommand),
    /// Re-publish archived events through the running proxy (replay), and list replays.
    #[command(subcommand)]
    Events(cli::events::EventsCommand),
    /// The running proxy's shadow comparison: figures per route, or one stored mismatch.
    #[command(subcommand)]
    Shadow(cli::shadow::ShadowCommand),
    /// The running proxy's rollouts: status, pause, resume, promote, rollback, set-weight, audit.
    #[command(subcommand)]
    Rollout(cli::rollout::RolloutCommand),
    /// Size the streams from what the relay sent: shards needed, PUT units, monthly cost.
    #[command(after_help = "Example:\n  strangler capacity -c strangler.yaml --days 1")]
    Capacity(cli::capacity::CapacityArgs),
    /// Print the least-privilege IAM policy for the streams the rules publish to.
    #[command(name = "iam-policy")]
    #[command(
        after_help = "Example:\n  strangler iam-policy -c strangler.yaml > strangler-policy.json"
    )]
    IamPolicy(cli::iam::IamPolicyArgs),
    /// Every context to the monolith at once, on every replica (or back).
    #[command(subcommand, name = "kill-switch")]
    KillSwitch(cli::kill_switch::KillSwitchCommand),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if !matches!(cli.command, Command::Run { .. }) {
        quiet_on_closed_stdout();
    }
    exit(dispatch(cli))
}

fn dispatch(cli: Cli) -> Result<()> {
    let config = cli.config;
    // Every command but `check` works with one config; clap's usage error (exit 2) without it.
    let cfg = || match &config {
        Some(path) => cli::load(path),
        None => Cli::command()
            .error(
                ErrorKind::MissingRequiredArgument,
                "this command needs the proxy's config: --config <CONFIG>",
            )
            .exit(),
    };
    match cli.command {
        Command::Run { upgrade } => {
            let cfg = cfg()?;
            telemetry::init(cfg.log_format, &cfg.log_level);
            // Synchronous on purpose: pingora builds its own runtimes in `run_forever`.
            serve::run(&cfg, upgrade)
        }
        Command::Check { mut files } => {
            files.splice(0..0, config);
            Ok(cli::check::run(&files)?)
        }
        Command::Explain(args) => cli::explain::run(&cfg()?, &args),
        Command::Stream(cmd) => cli::stream::run(&cfg()?, &cmd),
        Command::Events(cmd) => cli::events::run(&cfg()?, &cmd),
        Command::Shadow(cmd) => cli::shadow::run(&cfg()?, &cmd),
        Command::Rollout(cmd) => cli::rollout::run(&cfg()?, &cmd),
        Command::Capacity(args) => cli::capacity::run(&cfg()?, &args),
        Command::IamPolicy(args) => cli::iam::run(&cfg()?, &args),
        Command::KillSwitch(cmd) => cli::kill_switch::run(&cfg()?, &cmd),
    }
}

/// The exit status of a command: 0 done; 1 failed, with the reason on stderr (unless the
/// command already printed it).
fn exit(result: Result<()>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if e.is::<cli::Reported>() => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("strangler: {e:#}");
            ExitCode::FAILURE
        }
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
