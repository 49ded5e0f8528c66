//! Enhanced fan-out: a registered stream consumer (`RegisterStreamConsumer`, named after the
//! consumer) gets its own 2 MB/s per shard, pushed over `SubscribeToShard` instead of polled.
//! Each subscription (AWS ends them after 5 minutes) starts after the checkpoint
//! (`AFTER_SEQUENCE_NUMBER`, else `TRIM_HORIZON`); each pushed batch is applied like a polled
//! one (one transaction with the checkpoint); an event that names child shards ends the shard.
//! Used when [`crate::Config::enhanced_fan_out`] is set and the server has the API; otherwise
//! the consumer polls.

use std::sync::Arc;
use std::time::Duration;

use aws_sdk_kinesis::Client;
use aws_sdk_kinesis::types::{
    ConsumerStatus, ShardIteratorType, StartingPosition, SubscribeToShardEventStream,
};
use tokio::sync::watch;
use tracing::{debug, info, warn};

use crate::checkpoints::Checkpoint;
use crate::reader::{Backoff, End, Reader, pause};
use crate::{ConsumerError, Handler};

/// Registers the stream consumer (or finds it registered) and waits until it is active; its
/// ARN. `Err`: the server has no enhanced fan-out (or refuses it): poll instead.
pub(crate) async fn register(client: &Client, stream: &str, name: &str) -> Result<String, String> {
    let text =
        |e: &dyn std::error::Error| aws_sdk_kinesis::error::DisplayErrorContext(e).to_string();
    let described = client.describe_stream_summary();
    let described = if stream.starts_with("arn:") {
        described.stream_arn(stream)
    } else {
        described.stream_name(stream)
    };
    let stream_arn = described
        .send()
        .await
        .map_err(|e| text(&e))?
        .stream_description_summary
        .map(|d| d.stream_arn)
        .ok_or("no stream description")?;
    let arn = match client
        .register_stream_consumer()
        .stream_arn(&stream_arn)
        .consumer_name(name)
        .send()
        .await
    {
        Ok(out) => out
            .consumer
            .map(|c| c.consumer_arn)
            .ok_or("no consumer in the answer")?,
        Err(e)
            if e.as_service_error()
                .is_some_and(|s| s.is_resource_in_use_exception()) =>
        {
            client
                .describe_stream_consumer()
                .stream_arn(&stream_arn)
                .consumer_name(name)
                .send()
                .await
                .map_err(|e| text(&e))?
                .consumer_description
                .map(|c| c.consumer_arn)
                .ok_or("no consumer description")?
        }
        Err(e) => return Err(text(&e)),
    };
    for _ in 0..300 {
        let d = client
            .describe_stream_consumer()
            .consumer_arn(&arn)
            .send()
            .await
            .map_err(|e| text(&e))?;
        if d.consumer_description().map(|c| c.consumer_status()) == Some(&ConsumerStatus::Active) {
            info!(consumer = %arn, "Enhanced fan-out consumer active");
            return Ok(arn);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Err(format!("consumer {arn} not active after 60 s"))
}

impl Reader {
    /// Reads the shard through subscriptions until it ends or the consumer stops.
    pub(crate) async fn run_fanout<H: Handler>(
        self,
        handler: Arc<H>,
        mut at: Checkpoint,
        mut stop: watch::Receiver<bool>,
        consumer_arn: &str,
    ) -> Result<End, ConsumerError> {
        let mut trouble = Backoff::new(Duration::from_millis(500), Duration::from_secs(10));
        loop {
            if *stop.borrow() {
                return Ok(End::Stopped);
            }
            let position = match &at.sequence_number {
                Some(seq) => StartingPosition::builder()
                    .r#type(ShardIteratorType::AfterSequenceNumber)
                    .sequence_number(seq),
                None => StartingPosition::builder().r#type(ShardIteratorType::TrimHorizon),
            }
            .build()
            .expect("the type is set");
            let sub = self
                .client
                .subscribe_to_shard()
                .consumer_arn(consumer_arn)
                .shard_id(&self.shard_id)
                .starting_position(position)
                .send()
                .await;
            let mut sub = match sub {
                Ok(sub) => sub,
                Err(e) => {
                    let gone = e
                        .as_service_error()
                        .is_some_and(|s| s.is_resource_not_found_exception());
                    let text = aws_sdk_kinesis::error::DisplayErrorContext(&e).to_string();
                    if gone && at.sequence_number.is_some() {
                        warn!(shard = %self.shard_id, error = %text, "Shard is gone; taken as read");
                        return self.finish(&mut at).await;
                    }
                    // LimitExceeded (one subscription per second per shard) and
                    // ResourceInUse (the previous one not yet closed) pass with time.
                    debug!(shard = %self.shard_id, error = %text, "Cannot subscribe to the shard; trying again");
                    pause(trouble.step(), &mut stop).await;
                    continue;
                }
            };
            loop {
                let event = tokio::select! {
                    e = sub.event_stream.recv() => e,
                    _ = stop.changed() => return Ok(End::Stopped),
                };
                let event = match event {
                    Ok(Some(SubscribeToShardEventStream::SubscribeToShardEvent(e))) => e,
                    Ok(Some(_)) => continue,
                    // The subscription ended (after 5 minutes, or the connection closed):
                    // subscribe again from the checkpoint.
                    Ok(None) => break,
                    Err(e) => {
                        debug!(shard = %self.shard_id, error = %aws_sdk_kinesis::error::DisplayErrorContext(&e), "Subscription failed; subscribing again");
                        pause(trouble.step(), &mut stop).await;
                        break;
                    }
                };
                trouble.reset();
                let ended = event.child_shards.as_ref().is_some_and(|c| !c.is_empty());
                let behind = event.millis_behind_latest;
                if !self
                    .take(&*handler, &event.records, ended, behind, &mut at, &mut stop)
                    .await
                {
                    return Ok(End::Stopped);
                }
                if ended {
                    return self.finish(&mut at).await;
                }
            }
        }
    }
}
