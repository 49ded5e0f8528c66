//! What the relay sent each stream: Kinesis records (an aggregate is one), events and bytes per
//! minute, and each minute's busiest second, written to the store every 10 s
//! (`strangler_stream_usage`) for `strangler capacity`.

use std::collections::HashMap;

use strangler_store::Minute;

#[derive(Default)]
struct Stream {
    minute: Minute,
    second: i64,
    second_records: i64,
    second_bytes: i64,
}

/// The counts not yet written.
#[derive(Default)]
pub(super) struct Meter {
    streams: HashMap<String, Stream>,
    /// Minutes that ended before they were written.
    ended: Vec<Minute>,
}

impl Meter {
    /// Counts what Kinesis accepted in one call.
    pub(super) fn sent(
        &mut self,
        stream: &str,
        records: i64,
        events: i64,
        bytes: i64,
        now_ms: i64,
    ) {
        if records == 0 {
            return;
        }
        let minute_ms = now_ms - now_ms.rem_euclid(60_000);
        let second = now_ms.div_euclid(1000);
        let s = self.streams.entry(stream.to_string()).or_default();
        if s.minute.minute_ms != minute_ms {
            if s.minute.records > 0 {
                self.ended.push(std::mem::take(&mut s.minute));
            }
            s.minute = Minute {
                stream: stream.to_string(),
                minute_ms,
                ..Minute::default()
            };
        }
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
    }

    /// Everything counted since the last call (the current minute's counts start again from
    /// zero; the store sums them and keeps the larger peak).
    pub(super) fn take(&mut self) -> Vec<Minute> {
        let mut out = std::mem::take(&mut self.ended);
        for s in self.streams.values_mut() {
            if s.minute.records > 0 {
                let m = &mut s.minute;
                out.push(m.clone());
                (m.records, m.events, m.bytes) = (0, 0, 0);
            }
        }
        out
    }
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
        assert_eq!((got[1].minute_ms, got[1].records), (t + 60_000, 2));
        assert!(m.take().is_empty());
    }
}
