//! SQLite's short cut from the group writer to the relay: the rows a group commit added, handed
//! over in memory (one process, and `seq` values known at commit), so the relay need not read
//! back what was just written.

use std::sync::Mutex;

use super::{NewEvent, Outbox, Pending};

/// Rows the hand-off holds at most; beyond that the relay reads the store.
const ROWS: usize = 8_192;

/// The group writer's committed rows on their way to the relay. The store stays the truth: the
/// relay takes these rows only when they continue its cursor without a gap, and reads the store
/// otherwise (rows added by other paths, rows from before a start, rows not kept here because
/// the relay was not taking them).
pub(crate) struct HandOff {
    rows: Vec<Pending>,
    bytes: usize,
    /// The highest `seq` the group writer committed.
    last_seq: i64,
    /// Rows may have reached the store another way (a start, a re-drive, a bulk load).
    stale: bool,
    /// The most payload bytes it holds (an eighth of the memory budget); beyond that the relay
    /// reads the store.
    max_bytes: usize,
}

impl HandOff {
    /// Stale at first: the store may hold rows from an earlier run.
    pub(crate) fn new(max_bytes: usize) -> HandOff {
        HandOff {
            rows: Vec::new(),
            bytes: 0,
            last_seq: 0,
            stale: true,
            max_bytes,
        }
    }

    /// Passes committed events to the relay as the rows they became (`last` is the `seq` of the
    /// final one), or only notes their `seq` when the relay has not taken what it was given.
    pub(crate) fn put(handoff: &Mutex<HandOff>, events: Vec<NewEvent>, last: i64, now: i64) {
        let Ok(mut h) = handoff.lock() else {
            return;
        };
        h.last_seq = last;
        let bytes: usize = events.iter().map(|e| e.payload.len()).sum();
        if h.rows.len() + events.len() > ROWS || h.bytes + bytes > h.max_bytes {
            return;
        }
        h.bytes += bytes;
        let first = last - events.len() as i64 + 1;
        h.rows
            .extend(events.into_iter().enumerate().map(|(i, e)| Pending {
                seq: first + i as i64,
                id: e.id,
                stream: e.stream,
                partition_key: e.partition_key,
                payload: e.payload,
                attempts: 0,
                created_ms: now,
                next_attempt_ms: now,
            }));
    }
}

impl Outbox {
    /// The rows committed since `cursor` when the group writer handed over all of them, in
    /// `seq` order; `None` when the store must be read instead (see [`HandOff`]). Takes what
    /// the hand-off holds either way.
    pub fn handed_over(&self, cursor: i64) -> Option<Vec<Pending>> {
        let mut h = self.store.handoff.as_ref()?.lock().ok()?;
        let rows = std::mem::take(&mut h.rows);
        h.bytes = 0;
        if std::mem::take(&mut h.stale) {
            return None;
        }
        let rows: Vec<Pending> = rows.into_iter().filter(|r| r.seq > cursor).collect();
        let whole = match (rows.first(), rows.last()) {
            (Some(first), Some(last)) => {
                first.seq == cursor + 1
                    && last.seq == h.last_seq
                    && (last.seq - first.seq) as usize + 1 == rows.len()
            }
            _ => h.last_seq <= cursor,
        };
        whole.then_some(rows)
    }

    /// Rows reached the store outside the group writer (a re-drive, a replay): the relay is
    /// woken and reads them from the store, not the hand-off.
    pub(crate) fn added_outside_writer(&self) {
        if let Some(h) = &self.store.handoff
            && let Ok(mut h) = h.lock()
        {
            h.stale = true;
        }
        self.store.committed.notify_one();
    }
}
