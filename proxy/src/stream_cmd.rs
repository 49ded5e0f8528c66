//! `strangler stream read|create`: look at what the proxy published (every record of a stream,
//! one JSON line each), or create a stream on a local Kinesis server for development. Uses the
//! config's Kinesis settings and AWS's standard credential chain.

use std::path::PathBuf;

use anyhow::{Context as _, Result};
use aws_sdk_kinesis::types::ShardIteratorType;

use crate::config::Config;

#[derive(Debug, clap::Subcommand)]
pub enum StreamCommand {
    /// Print every record of a stream as a JSON line: partition key and the event.
    Read {
        #[arg(long)]
        config: PathBuf,
        #[arg(long)]
        stream: String,
    },
    /// Create a stream (for local Kinesis servers in development).
    Create {
        #[arg(long)]
        config: PathBuf,
        #[arg(long)]
        stream: String,
        #[arg(long, default_value_t = 1)]
        shards: i32,
    },
}

pub fn run(cmd: &StreamCommand) -> Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let (StreamCommand::Read { config, .. } | StreamCommand::Create { config, .. }) = cmd;
        let cfg = Config::load(config).map_err(|d| anyhow::anyhow!("{d}"))?;
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
                    .context("CreateStream")?;
                println!("created stream {stream}");
            }
            StreamCommand::Read { stream, .. } => {
                let shards = c
                    .list_shards()
                    .stream_name(stream)
                    .send()
                    .await
                    .context("ListShards")?;
                for shard in shards.shards() {
                    let mut iter = c
                        .get_shard_iterator()
                        .stream_name(stream)
                        .shard_id(shard.shard_id())
                        .shard_iterator_type(ShardIteratorType::TrimHorizon)
                        .send()
                        .await
                        .context("GetShardIterator")?
                        .shard_iterator()
                        .map(str::to_string);
                    while let Some(it) = iter {
                        let r = c
                            .get_records()
                            .shard_iterator(it)
                            .limit(1000)
                            .send()
                            .await
                            .context("GetRecords")?;
                        for rec in r.records() {
                            let event: serde_json::Value =
                                serde_json::from_slice(rec.data().as_ref()).unwrap_or_else(|_| {
                                    String::from_utf8_lossy(rec.data().as_ref()).into()
                                });
                            let line = serde_json::json!({
                                "partition_key": rec.partition_key(),
                                "sequence_number": rec.sequence_number(),
                                "event": event,
                            });
                            println!("{line}");
                        }
                        if r.records().is_empty()
                            || r.millis_behind_latest() == Some(0) && r.records().is_empty()
                        {
                            break;
                        }
                        iter = r.next_shard_iterator().map(str::to_string);
                    }
                }
            }
        }
        Ok(())
    })
}
