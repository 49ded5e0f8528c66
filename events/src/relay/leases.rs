//! The streams' leases: on PostgreSQL each stream is relayed by the one replica holding its
//! lease (`relay:<stream>`, see [`strangler_store::lease_set`]), and the streams are shared out
//! among the replicas. A stream's lease changes hands only between calls: before this replica
//! takes or hands back a lease, every call in flight is settled, so a stream's events are never
//! sent by two replicas at once and each key's order holds across the move. Writes settling a
//! stream's rows carry its lease's fence: refused once another replica took it.

use std::collections::HashSet;

use tokio::task::JoinSet;
use tracing::{info, warn};

use strangler_store::{Outbox, Pending};

use super::calls::Sent;
use super::{Relay, RelayError};

impl Relay {
    /// The outbox, its writes fenced by `stream`'s lease.
    pub(super) fn outbox_for(&self, stream: &str) -> Outbox {
        match &self.leases {
            Some(l) => self.outbox.fenced(l.fence(stream)),
            None => self.outbox.clone(),
        }
    }

    /// The rows of the streams this replica relays; the streams of the others are noted, so
    /// their leases join the set the replicas share out.
    pub(super) fn own(&mut self, mut rows: Vec<Pending>) -> Vec<Pending> {
        for r in &rows {
            if !self.known.contains(&r.stream) {
                self.unknown.insert(r.stream.clone());
            }
        }
        if let Some(relaying) = &self.relaying {
            rows.retain(|r| relaying.contains(&r.stream));
        }
        rows
    }

    /// One lease round: streams newly seen join the set, free leases are taken up to this
    /// replica's fair share, and leases over it are handed back. When that changes what this
    /// replica relays, the calls in flight are settled first and the outbox is read again
    /// (a stream just taken has rows below the cursor). True when it changed.
    pub(super) async fn balance(&mut self, calls: &mut JoinSet<Sent>) -> Result<bool, RelayError> {
        let Some(set) = &mut self.leases else {
            return Ok(false);
        };
        if !self.unknown.is_empty() {
            let names: Vec<&str> = self.unknown.iter().map(String::as_str).collect();
            set.know(&names).await?;
            self.known.extend(self.unknown.drain());
        }
        let round = set.round().await?;
        // Compared with what is held rather than taken from the round alone: a round that
        // failed halfway may have taken a lease the relay does not send yet.
        let held: HashSet<String> = set.held().into_iter().collect();
        if round.over.is_empty() && self.relaying.as_ref().is_none_or(|r| *r == held) {
            self.show_leases(&round.names, true);
            return Ok(false);
        }
        self.settle_in_flight(calls).await?;
        let Some(set) = &mut self.leases else {
            return Ok(false);
        };
        let mut handed = Ok(());
        for stream in &round.over {
            if let Err(e) = set.release(stream).await {
                handed = Err(e.into());
                break;
            }
            info!(
                stream,
                "Relay lease handed back (another replica relays the stream)"
            );
        }
        for stream in &round.taken {
            info!(stream, "Relay lease taken: this replica relays the stream");
        }
        // Whatever happened above, from now on only the streams still held are sent.
        self.relaying = Some(set.held().into_iter().collect());
        self.show_leases(&round.names, true);
        self.reset(calls).await;
        handed.map(|()| true)
    }

    /// Settles every call in flight (a lease is about to move).
    async fn settle_in_flight(&mut self, calls: &mut JoinSet<Sent>) -> Result<(), RelayError> {
        while let Some(done) = calls.join_next().await {
            if let Err(e) = self.settle_joined(done).await {
                if e.lease_lost() {
                    return Err(e);
                }
                warn!(error = %e, "Relay cannot record a PutRecords result; its rows are sent again");
            }
        }
        Ok(())
    }

    /// At shutdown, once the calls are settled: every lease handed back, so the other replicas
    /// relay the streams at their next round.
    pub(super) async fn hand_back(&mut self) {
        let Some(set) = &mut self.leases else {
            return;
        };
        for stream in set.held() {
            if let Err(e) = set.release(&stream).await {
                warn!(stream, error = %e, "Cannot hand the relay lease back; another replica takes it once this one's session ends");
            }
        }
        self.show_leases(&[], false);
    }

    /// `strangler_lease_held{lease="relay:<stream>"}`: 1 for the streams relayed here while
    /// `live`, 0 for the set's other `names` (and for every stream once not live).
    pub(super) fn show_leases(&self, names: &[String], live: bool) {
        let Some(set) = &self.leases else {
            return;
        };
        let held: Vec<&String> = match &self.relaying {
            None => self.known.iter().collect(),
            Some(r) => r.iter().collect(),
        };
        for stream in names.iter().chain(held.iter().copied()) {
            let mine = live && held.contains(&stream);
            self.metrics
                .lease_held
                .with_label_values(&[&set.name(stream)])
                .set(i64::from(mine));
        }
    }
}
