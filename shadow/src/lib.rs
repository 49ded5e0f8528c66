//! Comparison of two answers to the same request: the monolith's and the new service's. Pure
//! logic, no sockets and no pingora: the proxy hands [`compare`] two complete responses and
//! records what it says.
//!
//! What is compared: the status, the listed headers, and the body after content decoding
//! ([`decode`]: gzip, deflate, br) — JSON structurally ([`json`]: changed value, changed type,
//! missing member, extra member, array length; ignored places, arrays as sets, number
//! tolerance), anything else byte for byte. Every [`Difference`] has a location
//! (`$.items[2].price`) and a pattern for counting (`$.items[*].price`, see [`path`]).
//! [`noise`] learns, per route and pattern, which differences say nothing about the new service.

pub mod decode;
pub mod json;
pub mod noise;
pub mod path;

use http::HeaderMap;
use serde::Serialize;
use serde_json::Value;

pub use json::{JsonRules, Tolerance, Unordered};
pub use noise::{Noise, NoiseEntry, NoiseKind};
pub use path::Pattern;

/// What kind of difference.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// The status codes differ.
    Status,
    /// A compared header differs, or one side lacks it.
    Header,
    /// The same type, another value.
    Value,
    /// Another JSON type.
    Type,
    /// In the monolith's answer, not in the new service's.
    Missing,
    /// In the new service's answer, not in the monolith's.
    Extra,
    /// Arrays of different lengths.
    Length,
    /// Bodies that are not both JSON differ (byte comparison, or one side is not JSON).
    Body,
}

/// One difference between the monolith's answer (`expected`) and the new service's (`actual`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Difference {
    pub kind: Kind,
    /// `status`, `header:content-type`, `body`, or a JSON location (`$.items[2].price`).
    pub location: String,
    /// The location with array indices as `[*]`: what differences are counted by.
    pub pattern: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expected: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub actual: Option<Value>,
}

/// One side's complete answer, as received (bodies still content-encoded).
#[derive(Debug, Clone, Copy)]
pub struct Answer<'a> {
    pub status: u16,
    pub headers: &'a HeaderMap,
    pub body: &'a [u8],
}

/// What [`compare`] looks at.
#[derive(Debug, Clone)]
pub struct Rules {
    /// Compared headers, lower case (default: `content-type`).
    pub headers: Vec<http::HeaderName>,
    pub json: JsonRules,
    /// The most bytes a decoded body may have; past it the pair is not comparable.
    pub max_body: usize,
}

impl Default for Rules {
    fn default() -> Self {
        Rules {
            headers: vec![http::header::CONTENT_TYPE],
            json: JsonRules::default(),
            max_body: 1 << 20,
        }
    }
}

/// Why two answers could not be compared.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NotComparable {
    #[error("{side}: {error}")]
    Decode {
        side: &'static str,
        error: decode::DecodeError,
    },
}

/// Every difference between the monolith's answer and the new service's; empty when they
/// match.
pub fn compare<'a>(
    expected: &Answer<'a>,
    actual: &Answer<'a>,
    rules: &Rules,
) -> Result<Vec<Difference>, NotComparable> {
    let mut out = Vec::new();
    if expected.status != actual.status {
        out.push(Difference {
            kind: Kind::Status,
            location: "status".into(),
            pattern: "status".into(),
            expected: Some(expected.status.into()),
            actual: Some(actual.status.into()),
        });
    }
    for name in &rules.headers {
        let values = |h: &HeaderMap| -> Option<Value> {
            let v: Vec<String> = h
                .get_all(name)
                .iter()
                .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
                .collect();
            match v.len() {
                0 => None,
                1 => Some(Value::String(v.into_iter().next().unwrap_or_default())),
                _ => Some(Value::from(v)),
            }
        };
        let (e, a) = (values(expected.headers), values(actual.headers));
        if e != a {
            let location = format!("header:{name}");
            out.push(Difference {
                kind: Kind::Header,
                pattern: location.clone(),
                location,
                expected: e,
                actual: a,
            });
        }
    }
    // The same bytes under the same coding are the same body, whatever the rules: nothing to
    // decode or parse (the common case of a service that answers as the monolith does).
    let coding = |a: &Answer<'_>| a.headers.get(http::header::CONTENT_ENCODING).cloned();
    if expected.body == actual.body && coding(expected) == coding(actual) {
        return Ok(out);
    }
    let decoded =
        |side: &'static str, a: &Answer<'a>| -> Result<std::borrow::Cow<'a, [u8]>, NotComparable> {
            decode::decode(a.headers, a.body, rules.max_body)
                .map_err(|error| NotComparable::Decode { side, error })
        };
    let (eb, ab) = (
        decoded("monolith", expected)?,
        decoded("new service", actual)?,
    );
    let parse = |b: &[u8]| -> Option<Value> {
        if b.is_empty() {
            return None;
        }
        json::parse(b)
    };
    match (parse(&eb), parse(&ab)) {
        (Some(e), Some(a)) => out.extend(json::diff(&e, &a, &rules.json)),
        _ if eb == ab => {}
        _ => {
            let at = first_difference(&eb, &ab);
            out.push(Difference {
                kind: Kind::Body,
                location: "body".into(),
                pattern: "body".into(),
                expected: Some(body_summary(&eb, at)),
                actual: Some(body_summary(&ab, at)),
            });
        }
    }
    Ok(out)
}

/// The offset of the first byte where two bodies differ (the shorter one's length when one is
/// the other's start).
fn first_difference(a: &[u8], b: &[u8]) -> usize {
    a.iter()
        .zip(b)
        .position(|(x, y)| x != y)
        .unwrap_or(a.len().min(b.len()))
}

/// A short description of a body that differs byte for byte: its length, the start of it, and
/// where it first differs from the other side with a little of it around that place.
fn body_summary(b: &[u8], at: usize) -> Value {
    let lossy = |r: std::ops::Range<usize>| String::from_utf8_lossy(&b[r]).into_owned();
    let from = at.saturating_sub(16).min(b.len());
    serde_json::json!({
        "bytes": b.len(),
        "start": lossy(0..b.len().min(64)),
        "differs_at": at,
        "around": lossy(from..b.len().min(at + 32)),
    })
}

#[cfg(test)]
mod tests;
