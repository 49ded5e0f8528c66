//! The match rate over a sliding window (the last 5 minutes, in one-minute buckets): what
//! `strangler_shadow_match_ratio` and `GET /api/shadow` show, and what a rollout gate reads.

/// Buckets kept, one minute each.
const BUCKETS: usize = 5;

/// Comparisons and matches of one route, per minute.
#[derive(Debug, Clone, Default)]
pub(super) struct Window {
    /// `(minute, compared, matched)`, the minute since the Unix epoch.
    buckets: [(u64, u64, u64); BUCKETS],
}

impl Window {
    /// Records one comparison at `now_secs` (seconds since the Unix epoch).
    pub(super) fn record(&mut self, now_secs: u64, matched: bool) {
        let minute = now_secs / 60;
        let slot = &mut self.buckets[(minute % BUCKETS as u64) as usize];
        if slot.0 != minute {
            *slot = (minute, 0, 0);
        }
        slot.1 += 1;
        slot.2 += u64::from(matched);
    }

    /// matched / compared over the buckets of the last 5 minutes at `now_secs`; `None` when
    /// nothing was compared in that time.
    pub(super) fn ratio(&self, now_secs: u64) -> Option<f64> {
        let minute = now_secs / 60;
        let (compared, matched) = self
            .buckets
            .iter()
            .filter(|(m, _, _)| minute.saturating_sub(*m) < BUCKETS as u64 && *m <= minute)
            .fold((0, 0), |(c, m), b| (c + b.1, m + b.2));
        (compared > 0).then(|| matched as f64 / compared as f64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn old_minutes_leave_the_window() {
        let mut w = Window::default();
        assert_eq!(w.ratio(0), None);
        w.record(0, false);
        w.record(10, true);
        assert_eq!(w.ratio(59), Some(0.5));
        w.record(61, true);
        assert_eq!(w.ratio(61), Some(2.0 / 3.0));
        // Five minutes on, the first minute's two are gone.
        assert_eq!(w.ratio(5 * 60 + 1), Some(1.0));
        assert_eq!(w.ratio(10 * 60), None);
        // A bucket reused for a new minute starts from zero.
        w.record(5 * 60 + 5, false);
        assert_eq!(w.ratio(5 * 60 + 5), Some(0.5));
    }
}
