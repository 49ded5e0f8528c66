//! What the relay sent each stream: Kinesis records (an aggregate is one), events and bytes per
//! minute, each minute's busiest second, the first and last send, and what the stream was asked
//! to carry: the busiest second of events arriving (by their creation time) and how often the
//! shard limiter held a call back. Written to the store every 10 s (`strangler_stream_usage`)
//! for `strangler capacity`. A send counts in the second its call went out (not when Kinesis
//! answered: a slow answer would pile two seconds' records into one).

use std::collections::HashMap;

use strangler_store::Minute;

#[derive(Default)]
struct Stream {
    minute: Minute,
    second: i64,
    second_records: i64,
    second_bytes: i64,
    /// The creation second being counted for arrivals, and its events and bytes so far.
    arrived_second: i64,
    arrived_events: i64,
    arrived_bytes: i64,
}

/// The counts not yet written.
#[derive(Default)]
pub(super) struct Meter {
    streams: HashMap<String, Stream>,
    /// Minutes that ended before they were written.
    ended: Vec<Minute>,
    /// Arrival peaks of seconds that ended, by stream and minute (arrivals are counted by their
    /// creation time, which need not be the current minute's).
    arrivals: HashMap<(String, i64), (i64, i64)>,
}

fn minute_of(ms: i64) -> i64 {
    ms - ms.rem_euclid(60_000)
}

impl Meter {
    /// The stream's current minute, after moving on to the one holding `now_ms` if needed.
    fn minute(&mut self, stream: &str, now_ms: i64) -> &mut Stream {
        let minute_ms = minute_of(now_ms);
        let s = self.streams.entry(stream.to_string()).or_default();
        if s.minute.minute_ms != minute_ms {
            if has_counts(&s.minute) {
                self.ended.push(std::mem::take(&mut s.minute));
            }
            s.minute = Minute {
                stream: stream.to_string(),
                minute_ms,
                ..Minute::default()
            };
        }
        s
    }

    /// Counts what Kinesis accepted of one call that went out at `sent_ms`.
    pub(super) fn sent(
        &mut self,
        stream: &str,
        records: i64,
        events: i64,
        bytes: i64,
        sent_ms: i64,
    ) {
        if records == 0 {
            return;
        }
        let second = sent_ms.div_euclid(1000);
        let s = self.minute(stream, sent_ms);
        if s.second != second {
            s.second = second;
            s.second_records = 0;
            s.second_bytes = 0;
        }
        s.second_records += records;
        s.second_bytes += bytes;
        let m = &mut s.minute;
        m.records += records;
        m.events += events;
        m.bytes += bytes;
        m.peak_records = m.peak_records.max(s.second_records);
        m.peak_bytes = m.peak_bytes.max(s.second_bytes);
        m.first_ms = Some(m.first_ms.map_or(sent_ms, |f| f.min(sent_ms)));
        m.last_ms = Some(m.last_ms.map_or(sent_ms, |l| l.max(sent_ms)));
    }

    /// Counts events entering the relay, by their creation time (in order per stream: rows
    /// older than the second being counted, a lagging stream's read back, add to no peak).
    pub(super) fn arrived(&mut self, stream: &str, created_ms: i64, bytes: i64) {
        let second = created_ms.div_euclid(1000);
        let s = self.streams.entry(stream.to_string()).or_default();
        if second > s.arrived_second {
            let ended = (s.arrived_second, s.arrived_events, s.arrived_bytes);
            (s.arrived_second, s.arrived_events, s.arrived_bytes) = (second, 0, 0);
            self.arrival_peak(stream, ended);
            let s = self.streams.get_mut(stream).expect("just added");
            s.arrived_events = 1;
            s.arrived_bytes = bytes;
        } else if second == s.arrived_second {
            s.arrived_events += 1;
            s.arrived_bytes += bytes;
        }
    }

    fn arrival_peak(&mut self, stream: &str, (second, events, bytes): (i64, i64, i64)) {
        if events == 0 {
            return;
        }
        let peak = self
            .arrivals
            .entry((stream.to_string(), minute_of(second * 1000)))
            .or_default();
        peak.0 = peak.0.max(events);
        peak.1 = peak.1.max(bytes);
    }

    /// The shard limiter held a call of the stream back (its shards were at their limits).
    pub(super) fn held(&mut self, stream: &str, now_ms: i64) {
        self.minute(stream, now_ms).minute.held += 1;
    }

    /// Everything counted since the last call (the current minute's counts start again from
    /// zero; the store sums them and keeps the larger peaks). The second being counted for
    /// arrivals is included as far as it went.
    pub(super) fn take(&mut self) -> Vec<Minute> {
        let mut out = std::mem::take(&mut self.ended);
        let open: Vec<(String, (i64, i64, i64))> = self
            .streams
            .iter()
            .map(|(k, s)| {
                (
                    k.clone(),
                    (s.arrived_second, s.arrived_events, s.arrived_bytes),
                )
            })
            .collect();
        for (stream, second) in open {
            self.arrival_peak(&stream, second);
        }
        for s in self.streams.values_mut() {
            if has_counts(&s.minute) {
                let m = &mut s.minute;
                out.push(m.clone());
                (m.records, m.events, m.bytes, m.held) = (0, 0, 0, 0);
            }
        }
        for ((stream, minute_ms), (events, bytes)) in self.arrivals.drain() {
            match out
                .iter_mut()
                .find(|m| m.stream == stream && m.minute_ms == minute_ms)
            {
                Some(m) => {
                    m.arrived_peak_events = m.arrived_peak_events.max(events);
                    m.arrived_peak_bytes = m.arrived_peak_bytes.max(bytes);
                }
                None => out.push(Minute {
                    stream,
                    minute_ms,
                    arrived_peak_events: events,
                    arrived_peak_bytes: bytes,
                    ..Minute::default()
                }),
            }
        }
        out
    }
}

fn has_counts(m: &Minute) -> bool {
    m.records > 0 || m.held > 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minutes_sum_and_keep_the_busiest_second() {
        let mut m = Meter::default();
        let t = 1_800_000_000_000; // a minute's start
        m.sent("s", 10, 40, 1000, t);
        m.sent("s", 5, 5, 500, t + 300);
        m.sent("s", 1, 1, 100, t + 1500);
        m.sent("s", 2, 2, 200, t + 60_000);
        let got = m.take();
        assert_eq!(got.len(), 2);
        assert_eq!(
            (
                got[0].minute_ms,
                got[0].records,
                got[0].events,
                got[0].bytes
            ),
            (t, 16, 46, 1600)
        );
        assert_eq!((got[0].peak_records, got[0].peak_bytes), (15, 1500));
        assert_eq!((got[0].first_ms, got[0].last_ms), (Some(t), Some(t + 1500)));
        assert_eq!((got[1].minute_ms, got[1].records), (t + 60_000, 2));
        assert!(m.take().is_empty());
    }

    /// The busiest second of arrivals counts events by their creation time, whenever the relay
    /// sees them; a held call is counted in its minute.
    #[test]
    fn arrivals_are_counted_by_creation_second_and_holds_by_minute() {
        let mut m = Meter::default();
        let t = 1_800_000_000_000;
        for i in 0..30 {
            m.arrived("s", t + i, 100);
        }
        for i in 0..10 {
            m.arrived("s", t + 1000 + i, 100);
        }
        // Older than the second being counted (a lagging stream read back): no peak.
        m.arrived("s", t + 10, 100);
        m.held("s", t + 1200);
        m.held("s", t + 1300);
        m.sent("s", 5, 5, 500, t + 1400);
        let got = m.take();
        assert_eq!(got.len(), 1, "{got:?}");
        assert_eq!(
            (got[0].arrived_peak_events, got[0].arrived_peak_bytes),
            (30, 3000)
        );
        assert_eq!((got[0].held, got[0].records), (2, 5));
    }
}
