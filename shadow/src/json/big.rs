//! Integers beyond 64 bits. serde_json (without `arbitrary_precision`, which would change every
//! number in the workspace) reads them as `f64`s, so `123456789012345678901234` and `…235` would
//! compare equal. A body holding such a literal is read with each one turned into a marked string
//! of its digits first; the differ compares marked numbers by their literal (exactly), or as
//! `f64`s under a configured tolerance. In stored differences they show as strings of their
//! digits (a JSON value here cannot hold them as numbers).

use serde_json::Value;

/// Starts a marked big integer: a private-use character no JSON number or sane string starts
/// with.
const MARK: &str = "\u{E000}int:";

/// Parses a JSON body, keeping integers beyond 64 bits exact (marked). `None`: not JSON.
pub(crate) fn parse(b: &[u8]) -> Option<Value> {
    match mark(b) {
        None => serde_json::from_slice(b).ok(),
        Some(marked) => serde_json::from_slice(&marked).ok(),
    }
}

/// The body with every integer literal beyond 64 bits quoted and marked, or `None` when it has
/// none (the common case: parsed as it is).
fn mark(b: &[u8]) -> Option<Vec<u8>> {
    let mut out: Option<Vec<u8>> = None;
    let (mut i, mut copied) = (0, 0);
    while i < b.len() {
        match b[i] {
            b'"' => {
                // Skip the string, escapes included.
                i += 1;
                while i < b.len() && b[i] != b'"' {
                    i += if b[i] == b'\\' { 2 } else { 1 };
                }
                i += 1;
            }
            c if c == b'-' || c.is_ascii_digit() => {
                let start = i;
                while i < b.len() && matches!(b[i], b'0'..=b'9' | b'-' | b'+' | b'.' | b'e' | b'E')
                {
                    i += 1;
                }
                let token = &b[start..i];
                let integer = token
                    .iter()
                    .skip(usize::from(token[0] == b'-'))
                    .all(u8::is_ascii_digit)
                    && token.len() > usize::from(token[0] == b'-');
                let fits = std::str::from_utf8(token)
                    .ok()
                    .is_some_and(|t| t.parse::<i64>().is_ok() || t.parse::<u64>().is_ok());
                if integer && !fits {
                    let o = out.get_or_insert_with(|| Vec::with_capacity(b.len() + 16));
                    o.extend_from_slice(&b[copied..start]);
                    o.push(b'"');
                    o.extend_from_slice(MARK.as_bytes());
                    o.extend_from_slice(token);
                    o.push(b'"');
                    copied = i;
                }
            }
            _ => i += 1,
        }
    }
    let mut o = out?;
    o.extend_from_slice(&b[copied.min(b.len())..]);
    Some(o)
}

/// The digits of a marked big integer.
pub(crate) fn literal(v: &Value) -> Option<&str> {
    match v {
        Value::String(s) => s.strip_prefix(MARK),
        _ => None,
    }
}

/// A value for stored differences: marked big integers as strings of their digits.
pub(crate) fn shown(v: &Value) -> Value {
    match v {
        Value::String(s) => Value::String(s.strip_prefix(MARK).unwrap_or(s).to_string()),
        Value::Array(a) => Value::Array(a.iter().map(shown).collect()),
        Value::Object(o) => Value::Object(o.iter().map(|(k, v)| (k.clone(), shown(v))).collect()),
        other => other.clone(),
    }
}

/// A number as an `f64` (marked big integers rounded), for tolerances.
pub(crate) fn as_f64(v: &Value) -> Option<f64> {
    match v {
        Value::Number(n) => n.as_f64(),
        _ => literal(v).and_then(|l| l.parse().ok()),
    }
}

/// Whether a float equals a big integer exactly (`1e20` and `100000000000000000000`).
pub(crate) fn float_is(f: f64, literal: &str) -> bool {
    f.fract() == 0.0 && format!("{f:.0}") == literal
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_integers_beyond_64_bits_are_marked_and_strings_are_left_alone() {
        assert_eq!(mark(br#"{"id": 9223372036854775807, "x": -1.5e300}"#), None);
        let got = parse(br#"{"id": 123456789012345678901234, "s": "99999999999999999999999", "n": [-99999999999999999999]}"#)
            .unwrap();
        assert_eq!(literal(&got["id"]), Some("123456789012345678901234"));
        assert_eq!(got["s"], "99999999999999999999999");
        assert_eq!(literal(&got["n"][0]), Some("-99999999999999999999"));
        assert_eq!(shown(&got)["id"], "123456789012345678901234");
        // Escaped quotes inside strings do not end them.
        let got = parse(br#"["a\"1", 18446744073709551616]"#).unwrap();
        assert_eq!(got[0], "a\"1");
        assert_eq!(literal(&got[1]), Some("18446744073709551616"));
        assert!(float_is(1e20, "100000000000000000000"));
        assert!(!float_is(1e20, "100000000000000000001"));
    }
}
