//! `strangler capacity --config F`: per stream the rules publish to, what the relay sent (from
//! the store's per-minute usage, over the last `--days`), the shards that needs by AWS's rule
//! with headroom, the stream's shards and mode now (DescribeStreamSummary), the PUT payload
//! units per month with and without aggregation, and a monthly cost in provisioned and
//! on-demand mode ([`strangler_events::capacity`]; prices overridable).

use std::time::Duration;

use anyhow::Result;
use strangler_events::capacity::{self, Prices, Sizing};
use strangler_events::envelope::rfc3339;

use crate::config::Config;

#[derive(Debug, clap::Args)]
pub struct CapacityArgs {
    /// How far back to look.
    #[arg(long, default_value_t = 7)]
    days: u32,
    /// Percent added to the busiest second seen.
    #[arg(long, default_value_t = 25.0)]
    headroom: f64,
    /// USD per shard-hour (provisioned).
    #[arg(long, default_value_t = Prices::default().shard_hour)]
    shard_hour: f64,
    /// USD per million PUT payload units (provisioned).
    #[arg(long, default_value_t = Prices::default().million_put_units)]
    million_put_units: f64,
    /// USD per stream-hour (on-demand).
    #[arg(long, default_value_t = Prices::default().on_demand_stream_hour)]
    on_demand_stream_hour: f64,
    /// USD per GB written (on-demand).
    #[arg(long, default_value_t = Prices::default().on_demand_gb_written)]
    on_demand_gb: f64,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
}

pub fn run(cfg: &Config, args: &CapacityArgs) -> Result<()> {
    let rules = super::rules(cfg)?;
    let mut streams = rules.publish_streams();
    let prices = Prices {
        shard_hour: args.shard_hour,
        million_put_units: args.million_put_units,
        on_demand_stream_hour: args.on_demand_stream_hour,
        on_demand_gb_written: args.on_demand_gb,
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let store = strangler_store::Store::connect(&cfg.store_url).await?;
        let since = strangler_store::now_ms() - i64::from(args.days) * 86_400_000;
        let minutes = store.usage().since(since).await?;
        let sized = capacity::size(&minutes, args.headroom / 100.0, &prices);
        for s in &sized {
            if !streams.contains(&s.stream) {
                streams.push(s.stream.clone());
            }
        }
        let client = strangler_events::kinesis::client(
            cfg.kinesis_region.as_deref(),
            cfg.kinesis_endpoint.as_deref(),
        )
        .await;
        let mut out = Vec::new();
        for stream in &streams {
            let now = strangler_events::kinesis::describe(&client, stream, Duration::from_secs(5))
                .await
                .map(|d| {
                    let mode = d
                        .stream_mode_details()
                        .map_or("PROVISIONED".to_string(), |m| m.stream_mode().as_str().to_string());
                    (d.open_shard_count(), mode)
                });
            let sizing = sized.iter().find(|s| &s.stream == stream);
            out.push((stream, now, sizing));
        }
        if args.json {
            let doc: Vec<_> = out
                .iter()
                .map(|(stream, now, sizing)| {
                    serde_json::json!({
                        "stream": stream,
                        "shards": now.as_ref().ok().map(|n| n.0),
                        "mode": now.as_ref().ok().map(|n| n.1.clone()),
                        "describe_error": now.as_ref().err().map(ToString::to_string),
                        "usage": sizing,
                    })
                })
                .collect();
            println!("{}", serde_json::to_string_pretty(&serde_json::json!({
                "days": args.days, "headroom_percent": args.headroom, "prices_usd": prices, "streams": doc,
            }))?);
            return Ok(());
        }
        println!(
            "Looking back {} days; headroom {}%; prices (USD): {}/shard-hour, {}/million PUT units, \
             on-demand {}/stream-hour and {}/GB written (us-east-1 list prices; --shard-hour … to change)",
            args.days, args.headroom, prices.shard_hour, prices.million_put_units,
            prices.on_demand_stream_hour, prices.on_demand_gb_written
        );
        for (stream, now, sizing) in out {
            println!();
            println!("{stream}");
            match &now {
                Ok((shards, mode)) => println!(
                    "  now          {shards} open shard{}, {mode}",
                    if *shards == 1 { "" } else { "s" }
                ),
                Err(e) => println!("  now          cannot describe the stream: {e}"),
            }
            match sizing {
                None => println!("  observed     nothing sent in the window (the relay records what it sends)"),
                Some(s) => print_sizing(s),
            }
        }
        Ok(())
    })
}

fn print_sizing(s: &Sizing) {
    let time = |ms: i64| rfc3339(ms.div_euclid(1000), 0);
    // To the end of the last send's second, as the averages count it.
    let end = s.to_ms - s.to_ms.rem_euclid(1000) + 1000;
    let span = Duration::from_millis((end - s.from_ms).max(0) as u64);
    let span = if span.as_secs() < 3600 {
        format!("{} s", span.as_secs())
    } else {
        format!("{:.1} h", span.as_secs_f64() / 3600.0)
    };
    println!(
        "  window       {} to {} ({span}; {} minute{} with events)",
        time(s.from_ms),
        time(end),
        s.minutes,
        if s.minutes == 1 { "" } else { "s" }
    );
    println!(
        "  observed     records/s avg {:.1}, peak {}; bytes/s avg {}, peak {}; events/s avg {:.1}",
        s.avg_records,
        s.peak_records,
        human(s.avg_bytes),
        human(s.peak_bytes as f64),
        s.avg_events
    );
    if s.held_minutes > 0 {
        println!(
            "  held back    the shard limiter held this stream in {} minute{}: its shards were at \
             their write limits, so what arrived is the demand: busiest second {} records, {}",
            s.held_minutes,
            if s.held_minutes == 1 { "" } else { "s" },
            s.demand_peak_records,
            human(s.demand_peak_bytes as f64)
        );
    }
    println!(
        "  needs        {} shard(s) as sent; {} if every event were its own record (1 MiB/s or 1,000 records/s per shard)",
        s.shards_needed, s.shards_needed_unaggregated
    );
    println!(
        "  PUT units    {:.0}/month as sent, {:.0}/month one event per record",
        s.put_units_month_aggregated, s.put_units_month_unaggregated
    );
    println!(
        "  cost/month   provisioned ${:.2} ({} shard(s)), on-demand ${:.2}",
        s.provisioned_month, s.shards_needed, s.on_demand_month
    );
}

fn human(bytes: f64) -> String {
    if bytes >= 1024.0 * 1024.0 {
        format!("{:.1} MiB", bytes / (1024.0 * 1024.0))
    } else if bytes >= 1024.0 {
        format!("{:.1} KiB", bytes / 1024.0)
    } else {
        format!("{bytes:.0} B")
    }
}
