//! Durations (`250ms`, `5s`, `2m`, `1h`, `7d`) and sizes (`64KiB`, `1MiB`) in config files, read with
//! located errors. What each setting means is `config`'s business, not this module's.

use std::time::Duration;

use serde_saphyr::Spanned;
use strangler_rules::Reporter;

pub(super) fn opt_duration(
    v: Option<&Spanned<String>>,
    field: &str,
    default: Duration,
    r: &mut Reporter,
) -> Duration {
    match v {
        None => default,
        Some(s) => parse_duration(&s.value).unwrap_or_else(|e| {
            r.report(s.into(), field, e.to_string());
            default
        }),
    }
}

/// A size setting (`64KiB`, `1MiB`): `default` when absent; a located error, naming `limits`,
/// when it does not parse or falls outside `range`.
pub(super) fn opt_size(
    v: Option<&Spanned<String>>,
    field: &str,
    default: usize,
    range: std::ops::RangeInclusive<usize>,
    limits: &str,
    r: &mut Reporter,
) -> usize {
    let Some(s) = v else {
        return default;
    };
    match parse_size(&s.value) {
        Ok(n) if range.contains(&n) => n,
        Ok(_) => {
            r.report(s.into(), field, limits);
            default
        }
        Err(e) => {
            r.report(s.into(), field, e.to_string());
            default
        }
    }
}

/// Like `opt_duration`, and zero is an error (a zero timeout would fail every request).
pub(super) fn positive_duration(
    v: Option<&Spanned<String>>,
    field: &str,
    default: Duration,
    r: &mut Reporter,
) -> Duration {
    let d = opt_duration(v, field, default, r);
    if let Some(s) = v
        && d.is_zero()
    {
        r.report(s.into(), field, format!("{field} must be more than 0"));
        return default;
    }
    d
}

pub use strangler_rules::{parse_duration, parse_size};

/// Like `positive_duration`, in whole seconds.
pub(super) fn whole_seconds(
    v: Option<&Spanned<String>>,
    field: &str,
    default: Duration,
    r: &mut Reporter,
) -> Duration {
    let d = positive_duration(v, field, default, r);
    if let Some(s) = v
        && d.subsec_nanos() != 0
    {
        r.report(
            s.into(),
            field,
            format!("{field} is whole seconds, such as 75s"),
        );
        return default;
    }
    d
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_and_sizes() {
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert!(parse_duration("5").is_err());
        assert_eq!(
            parse_duration("7d").unwrap(),
            Duration::from_secs(7 * 86_400)
        );
        assert!(parse_duration("99999999999999999999999d").is_err());
        assert_eq!(parse_size("1MiB").unwrap(), 1 << 20);
        assert_eq!(parse_size("100").unwrap(), 100);
        assert!(parse_size("1GB").is_err());
    }
}
