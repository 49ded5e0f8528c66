//! Sizing a stream from what the relay sent ([`strangler_store::Minute`]s): the observed rates,
//! the shards they need by AWS's rule (ingress per shard: 1 MB/s or 1,000 records/s, with
//! headroom), the PUT payload units per month with and without KPL aggregation, and what a
//! month costs in provisioned and in on-demand mode. Pure arithmetic; `strangler capacity`
//! prints it.
//!
//! The prices ([`Prices::default`]) are AWS's published us-east-1 prices for Kinesis Data
//! Streams as of 2026 (provisioned: $0.015 per shard-hour, $0.014 per million PUT payload units
//! of 25 KB; on-demand: $0.04 per stream-hour, $0.08 per GB written, each record rounded up to
//! 1 KB). Other regions and later prices differ: every one can be given instead. Reading
//! (GetRecords, enhanced fan-out), extended retention and KMS calls are not included.

use serde::Serialize;
use strangler_store::Minute;

/// Hours in a month, as AWS bills them.
pub const HOURS_PER_MONTH: f64 = 730.0;
/// A PUT payload unit: 25 KB of a record.
pub const PUT_UNIT_BYTES: f64 = 25.0 * 1024.0;
/// A shard's ingress: 1 MB/s (AWS's MiB) and 1,000 records/s.
pub const SHARD_BYTES_PER_SECOND: f64 = 1024.0 * 1024.0;
pub const SHARD_RECORDS_PER_SECOND: f64 = 1000.0;

#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Prices {
    pub shard_hour: f64,
    pub million_put_units: f64,
    pub on_demand_stream_hour: f64,
    pub on_demand_gb_written: f64,
}

impl Default for Prices {
    fn default() -> Self {
        Prices {
            shard_hour: 0.015,
            million_put_units: 0.014,
            on_demand_stream_hour: 0.04,
            on_demand_gb_written: 0.08,
        }
    }
}

/// One stream's figures over the window it has data for.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Sizing {
    pub stream: String,
    /// The first and last send (ms since the epoch; for minutes stored before these were kept,
    /// the first minute's start and the last minute's end), and how many minutes had data.
    pub from_ms: i64,
    pub to_ms: i64,
    pub minutes: i64,
    /// Averages over the window (first send to the end of the last send's second), per second.
    pub avg_records: f64,
    pub avg_events: f64,
    pub avg_bytes: f64,
    /// The busiest second seen.
    pub peak_records: i64,
    pub peak_bytes: i64,
    /// The busiest second asked of the stream: events arriving, in records as sent (events per
    /// record of the window) and bytes; above the peak sent when the shard limiter held it back.
    pub demand_peak_records: i64,
    pub demand_peak_bytes: i64,
    /// Minutes in which the shard limiter held calls back (the shards were at their limits).
    pub held_minutes: i64,
    /// Shards the busiest second of demand needs with the headroom, as sent (aggregated or not).
    pub shards_needed: u64,
    /// Shards the peak would need if every event were its own record.
    pub shards_needed_unaggregated: u64,
    pub put_units_month_unaggregated: f64,
    pub put_units_month_aggregated: f64,
    pub provisioned_month: f64,
    pub on_demand_month: f64,
}

/// Sizes each stream in `minutes` (any order); `headroom` is the fraction added to the peak
/// (0.25: plan for 25 % more than the busiest second seen).
pub fn size(minutes: &[Minute], headroom: f64, prices: &Prices) -> Vec<Sizing> {
    let mut streams: Vec<&str> = minutes.iter().map(|m| m.stream.as_str()).collect();
    streams.sort_unstable();
    streams.dedup();
    streams
        .into_iter()
        .map(|stream| {
            let ms: Vec<&Minute> = minutes.iter().filter(|m| m.stream == stream).collect();
            let from_ms = ms
                .iter()
                .map(|m| m.first_ms.unwrap_or(m.minute_ms))
                .min()
                .unwrap_or(0);
            let to_ms = ms
                .iter()
                .map(|m| m.last_ms.map_or(m.minute_ms + 59_999, |l| l))
                .max()
                .unwrap_or(0);
            // To the end of the last send's second: one burst is at least a second long.
            let seconds = ((to_ms - from_ms) as f64 / 1000.0).max(0.0).floor() + 1.0;
            let sum = |f: fn(&Minute) -> i64| ms.iter().map(|m| f(m)).sum::<i64>() as f64;
            let (records, events, bytes) =
                (sum(|m| m.records), sum(|m| m.events), sum(|m| m.bytes));
            let peak_records = ms.iter().map(|m| m.peak_records).max().unwrap_or(0);
            let peak_bytes = ms.iter().map(|m| m.peak_bytes).max().unwrap_or(0);
            // The busiest second's events, if each were a record: its records scaled by the
            // window's events per record.
            let per_record = if records > 0.0 { events / records } else { 1.0 };
            let arrived_events = ms.iter().map(|m| m.arrived_peak_events).max().unwrap_or(0);
            let demand_peak_records =
                peak_records.max((arrived_events as f64 / per_record).ceil() as i64);
            let demand_peak_bytes =
                peak_bytes.max(ms.iter().map(|m| m.arrived_peak_bytes).max().unwrap_or(0));
            let held_minutes = ms.iter().filter(|m| m.held > 0).count() as i64;
            let shards = |records_per_s: f64| -> u64 {
                let by_records = records_per_s * (1.0 + headroom) / SHARD_RECORDS_PER_SECOND;
                let by_bytes = demand_peak_bytes as f64 * (1.0 + headroom) / SHARD_BYTES_PER_SECOND;
                (by_records.max(by_bytes).ceil() as u64).max(1)
            };
            let month_seconds = HOURS_PER_MONTH * 3600.0;
            let (avg_records, avg_events, avg_bytes) =
                (records / seconds, events / seconds, bytes / seconds);
            // Each record is billed in whole 25 KB units.
            let units_per = |avg_size: f64| (avg_size / PUT_UNIT_BYTES).ceil().max(1.0);
            let event_size = if events > 0.0 { bytes / events } else { 0.0 };
            let record_size = if records > 0.0 { bytes / records } else { 0.0 };
            let put_units_month_unaggregated = avg_events * units_per(event_size) * month_seconds;
            let put_units_month_aggregated = avg_records * units_per(record_size) * month_seconds;
            let shards_needed = shards(demand_peak_records as f64);
            let provisioned_month = shards_needed as f64 * prices.shard_hour * HOURS_PER_MONTH
                + put_units_month_aggregated / 1e6 * prices.million_put_units;
            // On-demand bills each record's size rounded up to 1 KB.
            let kb_per_record = (record_size / 1024.0).ceil().max(1.0);
            let gb_month = avg_records * kb_per_record * month_seconds / (1024.0 * 1024.0);
            let on_demand_month = prices.on_demand_stream_hour * HOURS_PER_MONTH
                + gb_month * prices.on_demand_gb_written;
            Sizing {
                stream: stream.to_string(),
                from_ms,
                to_ms,
                minutes: ms.len() as i64,
                avg_records,
                avg_events,
                avg_bytes,
                peak_records,
                peak_bytes,
                demand_peak_records,
                demand_peak_bytes,
                held_minutes,
                shards_needed,
                shards_needed_unaggregated: shards(demand_peak_records as f64 * per_record),
                put_units_month_unaggregated,
                put_units_month_aggregated,
                provisioned_month,
                on_demand_month,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn minute(
        at: i64,
        records: i64,
        events: i64,
        bytes: i64,
        peak_records: i64,
        peak_bytes: i64,
    ) -> Minute {
        Minute {
            stream: "orders".into(),
            minute_ms: at * 60_000,
            records,
            events,
            bytes,
            peak_records,
            peak_bytes,
            ..Minute::default()
        }
    }

    #[test]
    fn a_quiet_stream_needs_one_shard_and_costs_the_base_price() {
        let got = size(
            &[minute(0, 600, 600, 600_000, 20, 20_000)],
            0.25,
            &Prices::default(),
        );
        let s = &got[0];
        assert_eq!((s.avg_records, s.avg_bytes), (10.0, 10_000.0));
        assert_eq!((s.shards_needed, s.shards_needed_unaggregated), (1, 1));
        // 10 records/s of 1,000 bytes: one unit each.
        let units = 10.0 * HOURS_PER_MONTH * 3600.0;
        assert!((s.put_units_month_aggregated - units).abs() < 1e-6);
        let provisioned = 0.015 * 730.0 + units / 1e6 * 0.014;
        assert!(
            (s.provisioned_month - provisioned).abs() < 1e-9,
            "{}",
            s.provisioned_month
        );
        let gb = 10.0 * 1.0 * 730.0 * 3600.0 / (1024.0 * 1024.0);
        assert!((s.on_demand_month - (0.04 * 730.0 + gb * 0.08)).abs() < 1e-9);
    }

    #[test]
    fn the_peak_and_headroom_decide_the_shards_by_records_or_bytes() {
        // 1,800 records in the busiest second: 2 shards, 3 with 25 % headroom (2,250 / 1,000).
        let got = size(
            &[minute(0, 60_000, 60_000, 6_000_000, 1_800, 180_000)],
            0.25,
            &Prices::default(),
        );
        assert_eq!(got[0].shards_needed, 3);
        // 3 MiB in the busiest second: bytes decide.
        let got = size(
            &[minute(0, 100, 100, 3 << 20, 10, 3 << 20)],
            0.0,
            &Prices::default(),
        );
        assert_eq!(got[0].shards_needed, 3);
    }

    #[test]
    fn aggregation_cuts_records_and_put_units() {
        // 100 events per record of ~50 KB (500 bytes per event): 2 units per record, against one
        // unit per event without aggregation.
        let got = size(
            &[minute(0, 60, 6000, 3_000_000, 5, 250_000)],
            0.0,
            &Prices::default(),
        );
        let s = &got[0];
        assert!(
            (s.put_units_month_aggregated * 50.0 - s.put_units_month_unaggregated).abs() < 1e-3
        );
        assert_eq!(s.shards_needed_unaggregated, 1);
        let busy = size(
            &[minute(0, 60, 6000, 3_000_000, 20, 250_000)],
            0.0,
            &Prices::default(),
        );
        assert_eq!(
            (busy[0].shards_needed, busy[0].shards_needed_unaggregated),
            (1, 2)
        );
    }

    #[test]
    fn averages_cover_the_whole_window_even_minutes_without_data() {
        let got = size(
            &[
                minute(0, 60, 60, 6000, 1, 100),
                minute(9, 60, 60, 6000, 1, 100),
            ],
            0.0,
            &Prices::default(),
        );
        assert_eq!(got[0].minutes, 2);
        assert!((got[0].avg_records - 120.0 / 600.0).abs() < 1e-9);
    }

    /// A 10-second burst is averaged over its 10 seconds, not over the minute it fell in.
    #[test]
    fn a_short_window_is_averaged_over_its_sends() {
        let mut m = minute(0, 100, 100, 10_000, 10, 1000);
        (m.first_ms, m.last_ms) = (Some(20_000), Some(29_500));
        let got = size(&[m], 0.0, &Prices::default());
        assert_eq!((got[0].from_ms, got[0].to_ms), (20_000, 29_500));
        assert!(
            (got[0].avg_records - 10.0).abs() < 1e-9,
            "{}",
            got[0].avg_records
        );
    }

    /// A stream the shard limiter held back sent no more than its shards take; what arrived
    /// is the demand the sizing uses, and the held minutes are reported.
    #[test]
    fn demand_held_back_by_the_limiter_is_sized_from_the_events_arriving() {
        let mut m = minute(0, 60_000, 60_000, 6_000_000, 1_000, 100_000);
        (m.arrived_peak_events, m.arrived_peak_bytes, m.held) = (2_400, 240_000, 37);
        let quiet = minute(1, 600, 600, 60_000, 10, 1000);
        let got = size(&[m, quiet], 0.0, &Prices::default());
        let s = &got[0];
        assert_eq!(s.peak_records, 1_000);
        assert_eq!(
            (s.demand_peak_records, s.demand_peak_bytes),
            (2_400, 240_000)
        );
        assert_eq!(s.held_minutes, 1);
        assert_eq!(s.shards_needed, 3);
    }
}
