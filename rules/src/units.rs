//! Units shared by rule files and the config: sizes such as `64KiB` or `1MiB`, durations such
//! as `250ms` or `10m`.

use std::time::Duration;

/// Why a size or a duration could not be read (each says the text it was given).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UnitError {
    #[error("`{0}` is not a size such as 65536, 64KiB or 1MiB")]
    NotASize(String),
    #[error("`{0}` is too large")]
    TooLarge(String),
    #[error("`{0}` is not a duration such as 250ms, 5s or 2m")]
    NotADuration(String),
    #[error("`{0}` is too long a duration")]
    TooLong(String),
}

/// A size in bytes: a number with an optional unit (`B`, `KiB`, `MiB`, `KB`, `MB`).
pub fn parse_size(s: &str) -> Result<usize, UnitError> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: usize = num.parse().map_err(|_| UnitError::NotASize(s.into()))?;
    let mult = match unit.trim() {
        "" | "B" => 1,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "KB" => 1000,
        "MB" => 1_000_000,
        _ => return Err(UnitError::NotASize(s.into())),
    };
    n.checked_mul(mult)
        .ok_or_else(|| UnitError::TooLarge(s.into()))
}

/// `250ms`, `5s`, `2m`, `1h`, `7d`.
pub fn parse_duration(s: &str) -> Result<Duration, UnitError> {
    let s = s.trim();
    let split = s
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: f64 = num.parse().map_err(|_| UnitError::NotADuration(s.into()))?;
    let secs = match unit.trim() {
        "ms" => n / 1000.0,
        "s" => n,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        "d" => n * 86_400.0,
        _ => return Err(UnitError::NotADuration(s.into())),
    };
    Duration::try_from_secs_f64(secs).map_err(|_| UnitError::TooLong(s.into()))
}
