//! `strangler stream read|create`: look at what the proxy published (every record of a stream,
//! one JSON line each), or create a stream on a local Kinesis server for development. Uses the
//! config's Kinesis settings and AWS's standard credential chain.

use anyhow::Result;

use crate::config::Config;

#[derive(Debug, clap::Subcommand)]
pub enum StreamCommand {
    /// Print every event of a stream as a JSON line: partition key and the event (KPL
    /// aggregated records are taken apart: one line per event, with its sub-sequence number).
    #[command(
        after_help = "Example:\n  strangler stream read -c strangler.yaml --stream shop-orders | head"
    )]
    Read {
        #[arg(long)]
        stream: String,
    },
    /// Create a stream (for local Kinesis servers in development).
    #[command(
        after_help = "Example:\n  strangler stream create -c strangler.yaml --stream shop-orders --shards 2"
    )]
    Create {
        #[arg(long)]
        stream: String,
        #[arg(long, default_value_t = 1)]
        shards: i32,
    },
}

pub fn run(cfg: &Config, cmd: &StreamCommand) -> Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let c = strangler_events::kinesis::client(
            cfg.kinesis_region.as_deref(),
            cfg.kinesis_endpoint.as_deref(),
        )
        .await;
        match cmd {
            StreamCommand::Create { stream, shards, .. } => {
                c.create_stream()
                    .stream_name(stream)
                    .shard_count(*shards)
                    .send()
                    .await
                    .map_err(|e| {
                        anyhow::anyhow!(
                            "creating stream {stream}: {}",
                            strangler_events::kinesis::error_line(&e.into())
                        )
                    })?;
                println!("created stream {stream}");
            }
            StreamCommand::Read { stream, .. } => {
                let records = strangler_events::kinesis::read_stream(&c, stream)
                    .await
                    .map_err(|e| {
                        anyhow::anyhow!(
                            "reading stream {stream}: {}",
                            strangler_events::kinesis::error_line(&e)
                        )
                    })?;
                for rec in records {
                    let event: serde_json::Value = serde_json::from_slice(&rec.data)
                        .unwrap_or_else(|_| String::from_utf8_lossy(&rec.data).into());
                    let mut line = serde_json::json!({
                        "partition_key": rec.partition_key,
                        "sequence_number": rec.sequence_number,
                        "event": event,
                    });
                    if let Some(sub) = rec.sub_sequence_number {
                        line["sub_sequence_number"] = sub.into();
                    }
                    println!("{line}");
                }
            }
        }
        Ok(())
    })
}
