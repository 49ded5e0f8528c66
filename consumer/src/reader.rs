//! One shard, read by polling: an iterator from the checkpoint, `GetRecords` in a loop, each
//! batch applied and checkpointed in one transaction, until the shard ends (after a reshard) or
//! the consumer stops.

use std::sync::Arc;
use std::time::Duration;

use aws_sdk_kinesis::Client;
use aws_sdk_kinesis::types::ShardIteratorType;
use sqlx::{AnyPool, Connection as _};
use tokio::sync::watch;
use tracing::{debug, warn};

use crate::checkpoints::{self, Checkpoint};
use crate::event::{self, Event, Origin, Unreadable};
use crate::leases::LeaseLost;
use crate::{Config, ConsumerError, Handler, Progress};

pub(crate) enum End {
    /// Read to its end: the children may start.
    Finished,
    /// The consumer is stopping.
    Stopped,
}

pub(crate) struct Reader {
    pub(crate) client: Client,
    pub(crate) pool: AnyPool,
    pub(crate) config: Arc<Config>,
    pub(crate) progress: Arc<Progress>,
    pub(crate) shard_id: String,
    pub(crate) hash_range: Option<(u128, u128)>,
    /// This instance's name when shards are leased (PostgreSQL): each checkpoint is fenced by
    /// the shard's lease ([`crate::leases::fence`]).
    pub(crate) lease: Option<Arc<str>>,
}

/// A wait that doubles up to a ceiling, with a little jitter so shards do not poll in step.
pub(crate) struct Backoff {
    next: Duration,
    min: Duration,
    max: Duration,
}

impl Backoff {
    pub(crate) fn new(min: Duration, max: Duration) -> Backoff {
        Backoff {
            next: min,
            min,
            max,
        }
    }

    pub(crate) fn step(&mut self) -> Duration {
        let now = self.next;
        self.next = (self.next * 2).min(self.max);
        let jitter = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos())
            % 1000;
        now.mul_f64(0.9 + f64::from(jitter) / 5000.0)
    }

    pub(crate) fn reset(&mut self) {
        self.next = self.min;
    }
}

/// What a `GetRecords` failure means for the loop.
enum ReadError {
    /// Throttled (the shard's read limit, or KMS): wait and read with the same iterator.
    Throttled(String),
    /// The iterator is stale: get a new one from the checkpoint.
    Expired,
    /// The shard is gone (trimmed, or the stream deleted).
    Gone(String),
    /// Anything else (network, timeouts, server errors): wait and start from the checkpoint.
    Other(String),
}

impl Reader {
    pub(crate) async fn run<H: Handler>(
        self,
        handler: Arc<H>,
        mut at: Checkpoint,
        mut stop: watch::Receiver<bool>,
    ) -> Result<End, ConsumerError> {
        let idle_min = Duration::from_millis(200).min(self.config.idle_wait);
        let mut idle = Backoff::new(idle_min, self.config.idle_wait);
        let mut trouble = Backoff::new(Duration::from_millis(100), Duration::from_secs(10));
        let mut iterator: Option<String> = None;
        self.progress.shard(&self.shard_id, |p| {
            p.sequence_number.clone_from(&at.sequence_number);
        });
        tracing::info!(shard = %self.shard_id, from = ?at.sequence_number, "Reading shard");
        loop {
            if *stop.borrow() {
                return Ok(End::Stopped);
            }
            let it = match iterator.take() {
                Some(it) => it,
                None => match self.iterator(&at).await {
                    Ok(Some(it)) => it,
                    Ok(None) => return self.finish(&mut at).await,
                    Err(ReadError::Gone(reason)) => {
                        warn!(shard = %self.shard_id, error = %reason, "Shard is gone; taken as read");
                        return self.finish(&mut at).await;
                    }
                    Err(ReadError::Throttled(e) | ReadError::Other(e)) => {
                        warn!(shard = %self.shard_id, error = %e, "Cannot get a shard iterator; trying again");
                        pause(trouble.step(), &mut stop).await;
                        continue;
                    }
                    Err(ReadError::Expired) => continue,
                },
            };
            let out = match self.read(&it).await {
                Ok(out) => out,
                Err(ReadError::Throttled(e)) => {
                    debug!(shard = %self.shard_id, error = %e, "Read throttled; backing off");
                    iterator = Some(it);
                    pause(trouble.step(), &mut stop).await;
                    continue;
                }
                Err(ReadError::Expired) => continue,
                Err(ReadError::Gone(reason)) => {
                    warn!(shard = %self.shard_id, error = %reason, "Shard is gone; taken as read");
                    return self.finish(&mut at).await;
                }
                Err(ReadError::Other(e)) => {
                    warn!(shard = %self.shard_id, error = %e, "Cannot read the shard; trying again from the checkpoint");
                    pause(trouble.step(), &mut stop).await;
                    continue;
                }
            };
            trouble.reset();
            let behind = out.millis_behind_latest.unwrap_or(0);
            let ended = out.next_shard_iterator.is_none();
            if !self
                .take(&*handler, &out.records, ended, behind, &mut at, &mut stop)
                .await
            {
                return Ok(End::Stopped);
            }
            if ended {
                return self.finish(&mut at).await;
            }
            iterator = out.next_shard_iterator;
            if out.records.is_empty() && behind == 0 {
                pause(idle.step(), &mut stop).await;
            } else {
                idle.reset();
            }
        }
    }

    /// An iterator from the checkpoint; `None` when the shard has no more to read.
    async fn iterator(&self, at: &Checkpoint) -> Result<Option<String>, ReadError> {
        let call = self.client.get_shard_iterator().shard_id(&self.shard_id);
        let call = if self.config.stream.starts_with("arn:") {
            call.stream_arn(&self.config.stream)
        } else {
            call.stream_name(&self.config.stream)
        };
        let call = match &at.sequence_number {
            Some(seq) => call
                .shard_iterator_type(ShardIteratorType::AfterSequenceNumber)
                .starting_sequence_number(seq),
            None => call.shard_iterator_type(ShardIteratorType::TrimHorizon),
        };
        let out = call.send().await.map_err(|e| {
            let text = aws_sdk_kinesis::error::DisplayErrorContext(&e).to_string();
            match e.as_service_error() {
                Some(s) if s.is_provisioned_throughput_exceeded_exception() => {
                    ReadError::Throttled(text)
                }
                Some(s) if s.is_resource_not_found_exception() => ReadError::Gone(text),
                _ => ReadError::Other(text),
            }
        })?;
        Ok(out.shard_iterator.filter(|it| !it.is_empty()))
    }

    async fn read(
        &self,
        iterator: &str,
    ) -> Result<aws_sdk_kinesis::operation::get_records::GetRecordsOutput, ReadError> {
        self.client
            .get_records()
            .shard_iterator(iterator)
            .limit(self.config.batch)
            .send()
            .await
            .map_err(|e| {
                let text = aws_sdk_kinesis::error::DisplayErrorContext(&e).to_string();
                match e.as_service_error() {
                    Some(s)
                        if s.is_provisioned_throughput_exceeded_exception()
                            || s.is_kms_throttling_exception() =>
                    {
                        ReadError::Throttled(text)
                    }
                    Some(s) if s.is_expired_iterator_exception() => ReadError::Expired,
                    Some(s) if s.is_resource_not_found_exception() => ReadError::Gone(text),
                    _ => ReadError::Other(text),
                }
            })
    }

    /// A batch read (polled or pushed): its events applied with the checkpoint after its last
    /// record (`ended`: the shard's end) until that commits, then the progress. False: the
    /// consumer is stopping.
    pub(crate) async fn take<H: Handler>(
        &self,
        handler: &H,
        records: &[aws_sdk_kinesis::types::Record],
        ended: bool,
        millis_behind: i64,
        at: &mut Checkpoint,
        stop: &mut watch::Receiver<bool>,
    ) -> bool {
        if let Some(last) = records.last().map(|r| r.sequence_number().to_string()) {
            let events = self.events_of(records);
            let next = Checkpoint {
                sequence_number: Some(last),
                finished: ended,
            };
            if !self.apply_until_done(handler, &events, &next, stop).await {
                return false;
            }
            *at = next;
        }
        self.progress.shard(&self.shard_id, |p| {
            p.sequence_number.clone_from(&at.sequence_number);
            p.millis_behind = millis_behind;
        });
        true
    }

    /// The events of a batch of records (aggregates taken apart; their events outside this
    /// shard's range left out and counted).
    fn events_of(
        &self,
        records: &[aws_sdk_kinesis::types::Record],
    ) -> Vec<Result<Event, Unreadable>> {
        let mut events = Vec::new();
        let mut misplaced = 0;
        for r in records {
            let origin = Origin {
                shard_id: &self.shard_id,
                hash_range: self.hash_range,
                sequence_number: r.sequence_number(),
                partition_key: r.partition_key().unwrap_or_default(),
            };
            let (these, left_out) = event::from_record(origin, r.data().as_ref());
            events.extend(these);
            misplaced += left_out;
        }
        if misplaced > 0 {
            debug!(shard = %self.shard_id, misplaced, "Aggregated events outside the shard's range left out (the producer sends them again)");
            self.progress.left_out(misplaced as u64);
        }
        events
    }

    /// Applies a batch until it commits: a failing handler or database holds the shard here
    /// (nothing is skipped), trying again with a growing wait. False: the consumer is stopping.
    async fn apply_until_done<H: Handler>(
        &self,
        handler: &H,
        events: &[Result<Event, Unreadable>],
        next: &Checkpoint,
        stop: &mut watch::Receiver<bool>,
    ) -> bool {
        let mut failing = Backoff::new(Duration::from_millis(200), Duration::from_secs(30));
        loop {
            match self.apply(handler, events, next).await {
                Ok(()) => return true,
                Err(e) if e.is::<LeaseLost>() => {
                    tracing::info!(shard = %self.shard_id, "Shard lease lost; its batch rolled back, another instance reads on");
                    return false;
                }
                Err(e) => {
                    warn!(shard = %self.shard_id, sequence_number = ?next.sequence_number, error = %e, "Batch not applied; trying again");
                    pause(failing.step(), stop).await;
                    if *stop.borrow() {
                        return false;
                    }
                }
            }
        }
    }

    /// One transaction: each event not applied before goes to the handler, then the checkpoint.
    async fn apply<H: Handler>(
        &self,
        handler: &H,
        events: &[Result<Event, Unreadable>],
        next: &Checkpoint,
    ) -> Result<(), crate::BoxError> {
        let name = &self.config.name;
        let mut conn = self.pool.acquire().await?;
        let mut tx = conn.begin().await?;
        let (mut applied, mut duplicates, mut unreadable) = (0, 0, 0);
        for e in events {
            match e {
                Ok(e) => {
                    if checkpoints::first_time(&mut tx, name, &e.id).await? {
                        handler.apply(&mut tx, e).await?;
                        applied += 1;
                    } else {
                        duplicates += 1;
                    }
                }
                Err(_) => unreadable += 1,
            }
        }
        if !self.checkpoint(&mut tx, next).await? {
            return Err(Box::new(LeaseLost(self.shard_id.clone())));
        }
        tx.commit().await?;
        for e in events.iter().filter_map(|e| e.as_ref().err()) {
            warn!(shard = %self.shard_id, sequence_number = %e.sequence_number, sub_sequence_number = ?e.sub_sequence_number, reason = %e.reason, "Record passed over: not an event");
        }
        self.progress
            .committed(&self.shard_id, applied, duplicates, unreadable);
        Ok(())
    }

    /// Stores the shard's checkpoint in `tx`, fenced by its lease when shards are leased: false
    /// (nothing stored; the caller rolls back) once the lease is no longer this instance's.
    async fn checkpoint(
        &self,
        tx: &mut sqlx::AnyConnection,
        at: &Checkpoint,
    ) -> Result<bool, sqlx::Error> {
        let (name, stream) = (&self.config.name, self.config.stream_name());
        if let Some(me) = &self.lease
            && !crate::leases::fence(tx, name, stream, &self.shard_id, me).await?
        {
            return Ok(false);
        }
        checkpoints::save(tx, name, stream, &self.shard_id, at).await?;
        Ok(true)
    }

    /// Marks the shard read to its end (its children may start).
    /// A database that fails here is tried again (with a growing wait) until it works.
    pub(crate) async fn finish(&self, at: &mut Checkpoint) -> Result<End, ConsumerError> {
        at.finished = true;
        let mut failing = Backoff::new(Duration::from_millis(200), Duration::from_secs(30));
        loop {
            let saved = async {
                let mut conn = self.pool.acquire().await?;
                let mut tx = conn.begin().await?;
                let saved = self.checkpoint(&mut tx, at).await?;
                if saved {
                    tx.commit().await?;
                }
                Ok::<_, sqlx::Error>(saved)
            };
            match saved.await {
                Ok(true) => break,
                Ok(false) => {
                    tracing::info!(shard = %self.shard_id, "Shard lease lost before its end was recorded; another instance reads on");
                    return Ok(End::Stopped);
                }
                Err(e) => {
                    warn!(shard = %self.shard_id, error = %e, "Cannot mark the shard read to its end; trying again");
                    tokio::time::sleep(failing.step()).await;
                }
            }
        }
        self.progress.shard(&self.shard_id, |p| {
            p.finished = true;
            p.millis_behind = 0;
        });
        Ok(End::Finished)
    }
}

/// Waits, or less when the consumer is told to stop.
pub(crate) async fn pause(d: Duration, stop: &mut watch::Receiver<bool>) {
    tokio::select! {
        _ = tokio::time::sleep(d) => {}
        _ = stop.changed() => {}
    }
}
