//! Replays run in the proxy (the process whose relay publishes them): `POST /api/replays` makes a
//! job in the store ([`strangler_store::replays`]) and starts it here; each step moves a chunk of
//! archived events into the outbox with the cursor, so the job can be resumed wherever it
//! stopped (`POST /api/replays/{id}/resume`, `strangler events replay --resume ID`). A step waits
//! while the outbox holds more than [`MAX_WAITING`] events, so a large replay never floods the
//! relay's memory or starves live events, and runs at most at the job's `rate`.

use std::time::Duration;

use strangler_store::{Replay, ReplayState, Replays};
use tracing::{info, warn};

/// Events a step moves at most.
const CHUNK: i64 = 500;
/// A step waits while the outbox holds more events than this.
const MAX_WAITING: i64 = 5_000;

/// Runs a job until it is done, cancelled or fails, in a task of its own. `rate`: events per
/// second at most (0: as fast as the relay takes them).
pub fn start(replays: Replays, job: Replay, rate: u32) {
    tokio::spawn(async move {
        let id = job.id;
        info!(
            replay = id,
            total = job.total,
            done = job.done,
            "Replay running"
        );
        match run(&replays, job, rate).await {
            Ok(end) => {
                info!(replay = id, state = %end.state, done = end.done, total = end.total, "Replay ended");
            }
            Err(e) => {
                warn!(replay = id, error = %e, "Replay failed; resume it when the store is back");
                let _ = replays
                    .set_state(
                        id,
                        &[ReplayState::Running],
                        ReplayState::Failed,
                        Some(&e.to_string()),
                    )
                    .await;
            }
        }
    });
}

async fn run(
    replays: &Replays,
    mut job: Replay,
    rate: u32,
) -> Result<Replay, strangler_store::StoreError> {
    let chunk = if rate > 0 {
        i64::from(rate).min(CHUNK)
    } else {
        CHUNK
    };
    while job.state == ReplayState::Running {
        let waiting = replays.outbox_depth().await?;
        if waiting > MAX_WAITING {
            replays.heartbeat(job.id).await?;
            tokio::time::sleep(Duration::from_millis(200)).await;
            continue;
        }
        let started = tokio::time::Instant::now();
        let before = job.done;
        job = replays.step(&job, chunk).await?;
        if rate > 0 {
            let moved = (job.done - before).max(0) as f64;
            let due = Duration::from_secs_f64(moved / f64::from(rate));
            tokio::time::sleep_until(started + due).await;
        }
    }
    Ok(job)
}

/// A time as the CLI and the admin API take it: RFC 3339 (`2026-11-30T10:00:00Z`,
/// `2026-11-30T11:00:00.5+01:00`), a date (`2026-11-30`, midnight UTC), milliseconds since the
/// epoch, or an age (`90m`, `2h`, `7d`: that long before `now_ms`).
pub fn parse_time(text: &str, now_ms: i64) -> Result<i64, String> {
    let t = text.trim();
    let bad = || {
        format!(
            "`{text}` is not a time: RFC 3339 (2026-11-30T10:00:00Z), a date (2026-11-30), \
             milliseconds since the epoch, or an age (90m, 2h, 7d)"
        )
    };
    if !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit()) {
        return t.parse().map_err(|_| bad());
    }
    if let Ok(age) = strangler_rules::parse_duration(t) {
        return Ok(now_ms - age.as_millis() as i64);
    }
    let num = |s: &str| -> Result<i64, String> {
        if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad());
        }
        s.parse().map_err(|_| bad())
    };
    let (date, rest) = t.split_at(t.find(['T', 't', ' ']).unwrap_or(t.len()));
    let mut d = date.split('-');
    let (y, m, day) = match (d.next(), d.next(), d.next(), d.next()) {
        (Some(y), Some(m), Some(day), None) if y.len() == 4 && m.len() == 2 && day.len() == 2 => {
            (num(y)?, num(m)?, num(day)?)
        }
        _ => return Err(bad()),
    };
    if !(1..=12).contains(&m) || !(1..=31).contains(&day) {
        return Err(bad());
    }
    let days = days_from_civil(y, m, day);
    if rest.is_empty() {
        return Ok(days * 86_400_000);
    }
    let rest = &rest[1..];
    let (clock, offset_ms) = if let Some(c) = rest.strip_suffix(['Z', 'z']) {
        (c, 0)
    } else if let Some(i) = rest.rfind(['+', '-']) {
        let (c, off) = rest.split_at(i);
        let sign = if off.starts_with('-') { -1 } else { 1 };
        let (h, mi) = off[1..].split_once(':').ok_or_else(bad)?;
        (c, sign * (num(h)? * 3_600_000 + num(mi)? * 60_000))
    } else {
        return Err(bad());
    };
    let (hms, frac) = clock.split_once('.').unwrap_or((clock, ""));
    let mut p = hms.split(':');
    let (h, mi, s) = match (p.next(), p.next(), p.next(), p.next()) {
        (Some(h), Some(mi), Some(s), None) => (num(h)?, num(mi)?, num(s)?),
        _ => return Err(bad()),
    };
    if h > 23 || mi > 59 || s > 60 {
        return Err(bad());
    }
    let millis = if frac.is_empty() {
        0
    } else {
        num(&format!("{frac:0<3}")[..3])?
    };
    Ok(days * 86_400_000 + h * 3_600_000 + mi * 60_000 + s * 1000 + millis - offset_ms)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's days_from_civil).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_in_every_accepted_form() {
        let now = 1_764_500_000_000;
        assert_eq!(parse_time("1970-01-01T00:00:00Z", now), Ok(0));
        assert_eq!(
            parse_time("2026-11-30T10:00:00Z", now),
            Ok(1_796_032_800_000)
        );
        assert_eq!(
            parse_time("2026-11-30T11:00:00.5+01:00", now),
            Ok(1_796_032_800_500)
        );
        assert_eq!(parse_time("2026-11-30", now), Ok(1_795_996_800_000));
        assert_eq!(parse_time("2000-02-29T12:00:00Z", now), Ok(951_825_600_000));
        assert_eq!(parse_time("1796032800000", now), Ok(1_796_032_800_000));
        assert_eq!(parse_time("0", now), Ok(0));
        assert_eq!(parse_time("2h", now), Ok(now - 7_200_000));
        for bad in [
            "",
            "yesterday",
            "2026-13-01",
            "2026-11-30T25:00:00Z",
            "2026-11-30T10:00:00",
        ] {
            assert!(parse_time(bad, now).is_err(), "{bad}");
        }
    }
}
