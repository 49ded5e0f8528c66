//! The structural JSON differ: the monolith's document (`expected`) against the new service's
//! (`actual`), with ignored places, arrays compared as sets, and a tolerance for numbers. Every
//! difference has a location and a pattern (see [`crate::path`]).

use std::collections::HashMap;

use serde_json::Value;

use crate::path::{Location, Pattern, Seg};
use crate::{Difference, Kind};

mod big;
pub(crate) use big::parse;

/// How two JSON documents are compared.
#[derive(Debug, Clone, Default)]
pub struct JsonRules {
    /// Places left out of the diff (with everything below them).
    pub ignore: Vec<Pattern>,
    /// Arrays compared as sets: elements paired by the value at `key` (relative to the element,
    /// `$` for the element itself), order ignored.
    pub unordered: Vec<Unordered>,
    pub numbers: Tolerance,
}

#[derive(Debug, Clone)]
pub struct Unordered {
    pub path: Pattern,
    /// A plain path inside each element; `None` pairs equal elements.
    pub key: Option<Pattern>,
}

/// When two numbers count as equal.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Tolerance {
    /// `|a - b| <= relative · max(|a|, |b|)`.
    pub relative: f64,
    /// `|a - b| <= absolute`.
    pub absolute: f64,
}

impl Tolerance {
    /// Whether two numbers count as equal. Integers (serde_json keeps every `i64` and `u64`
    /// exactly) compare exactly, so two 64-bit ids a unit apart differ whatever `f64` says; an
    /// integer equals a float only where the float holds it exactly (`1` and `1.0`); two floats
    /// are equal when they are the same `f64`. Only a configured tolerance widens any of these.
    /// (Integers beyond 64 bits are compared by [`Tolerance::equal_big`].)
    fn equal(&self, a: &serde_json::Number, b: &serde_json::Number) -> bool {
        if a == b {
            return true;
        }
        let int = |n: &serde_json::Number| {
            n.as_i64()
                .map(i128::from)
                .or_else(|| n.as_u64().map(i128::from))
        };
        match (int(a), int(b)) {
            (Some(x), Some(y)) => {
                let scale = x.unsigned_abs().max(y.unsigned_abs()) as f64;
                x == y || self.within(x.abs_diff(y) as f64, scale)
            }
            (Some(i), None) | (None, Some(i)) => {
                let f = if int(a).is_some() { b } else { a }.as_f64();
                f.is_some_and(|f| {
                    (f.fract() == 0.0 && f.abs() < 1e38 && f as i128 == i)
                        || self.within((f - i as f64).abs(), f.abs().max(i.unsigned_abs() as f64))
                })
            }
            (None, None) => match (a.as_f64(), b.as_f64()) {
                (Some(x), Some(y)) => {
                    let d = (x - y).abs();
                    d == 0.0 || self.within(d, x.abs().max(y.abs()))
                }
                _ => false,
            },
        }
    }

    /// Two numbers at least one of which is an integer beyond 64 bits (see [`big`]): equal when
    /// their literals are, or a float holds the big one exactly; else only within a tolerance.
    fn equal_big(&self, a: &Value, b: &Value) -> bool {
        let (la, lb) = (big::literal(a), big::literal(b));
        if la.is_some() && la == lb {
            return true;
        }
        let float_is = |n: &Value, l: Option<&str>| match (n, l) {
            (Value::Number(n), Some(l)) if n.is_f64() => {
                n.as_f64().is_some_and(|f| big::float_is(f, l))
            }
            _ => false,
        };
        if float_is(a, lb) || float_is(b, la) {
            return true;
        }
        match (big::as_f64(a), big::as_f64(b)) {
            (Some(x), Some(y)) => self.within((x - y).abs(), x.abs().max(y.abs())),
            _ => false,
        }
    }

    /// Whether a difference `d` between numbers of size `scale` is within the tolerance (never
    /// when none is configured).
    fn within(&self, d: f64, scale: f64) -> bool {
        (self.absolute > 0.0 && d <= self.absolute)
            || (self.relative > 0.0 && d <= self.relative * scale)
    }
}

/// The JSON type name used in differences.
pub fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) if big::literal(v).is_some() => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// Every difference between `expected` and `actual`: object members in key order (then the
/// members only `actual` has), array elements in order.
pub fn diff(expected: &Value, actual: &Value, rules: &JsonRules) -> Vec<Difference> {
    let mut out = Vec::new();
    let mut at = Vec::new();
    walk(expected, actual, rules, &mut at, &mut out);
    out
}

fn ignored(rules: &JsonRules, at: &[Seg]) -> bool {
    rules.ignore.iter().any(|p| p.covers(at))
}

fn push(
    out: &mut Vec<Difference>,
    at: &[Seg],
    kind: Kind,
    expected: Option<&Value>,
    actual: Option<&Value>,
) {
    let loc = Location(at.to_vec());
    out.push(Difference {
        kind,
        location: loc.to_string(),
        pattern: loc.pattern(),
        expected: expected.map(big::shown),
        actual: actual.map(big::shown),
    });
}

fn walk(e: &Value, a: &Value, rules: &JsonRules, at: &mut Vec<Seg>, out: &mut Vec<Difference>) {
    if ignored(rules, at) {
        return;
    }
    match (e, a) {
        (Value::Object(eo), Value::Object(ao)) => {
            for (k, ev) in eo {
                at.push(Seg::Key(k.clone()));
                match ao.get(k) {
                    Some(av) => walk(ev, av, rules, at, out),
                    None if !ignored(rules, at) => push(out, at, Kind::Missing, Some(ev), None),
                    None => {}
                }
                at.pop();
            }
            for (k, av) in ao {
                if !eo.contains_key(k) {
                    at.push(Seg::Key(k.clone()));
                    if !ignored(rules, at) {
                        push(out, at, Kind::Extra, None, Some(av));
                    }
                    at.pop();
                }
            }
        }
        (Value::Array(ea), Value::Array(aa)) => {
            match rules.unordered.iter().find(|u| u.path.selects(at)) {
                Some(u) => unordered(ea, aa, u, rules, at, out),
                None => {
                    if ea.len() != aa.len() {
                        push(
                            out,
                            at,
                            Kind::Length,
                            Some(&Value::from(ea.len())),
                            Some(&Value::from(aa.len())),
                        );
                    }
                    for (i, (ev, av)) in ea.iter().zip(aa).enumerate() {
                        at.push(Seg::Index(i));
                        walk(ev, av, rules, at, out);
                        at.pop();
                    }
                }
            }
        }
        (Value::Number(x), Value::Number(y)) if !rules.numbers.equal(x, y) => {
            push(out, at, Kind::Value, Some(e), Some(a));
        }
        (Value::Number(_), Value::Number(_)) => {}
        _ if type_name(e) != type_name(a) => push(out, at, Kind::Type, Some(e), Some(a)),
        // Both numbers, one at least beyond 64 bits.
        _ if type_name(e) == "number" && !rules.numbers.equal_big(e, a) => {
            push(out, at, Kind::Value, Some(e), Some(a));
        }
        _ if type_name(e) == "number" => {}
        _ if e != a => push(out, at, Kind::Value, Some(e), Some(a)),
        _ => {}
    }
}

/// Arrays as sets: elements paired by key (or by equality without one). Elements sharing a key
/// (or all without it) are a multiset: equal ones (under the rules) are paired first, whatever
/// their order, then the rest in order. A paired element is compared at the monolith's index;
/// an unpaired one is `missing` (at the monolith's index) or `extra` (at the new service's).
fn unordered(
    ea: &[Value],
    aa: &[Value],
    u: &Unordered,
    rules: &JsonRules,
    at: &mut Vec<Seg>,
    out: &mut Vec<Difference>,
) {
    /// Past this many comparisons in one group, its elements are paired in order only.
    const EXACT_PAIRING: usize = 4_096;
    let key_of = |v: &Value| -> String {
        match &u.key {
            Some(k) => k
                .get(v)
                .map_or_else(|| "\u{0}none".into(), Value::to_string),
            None => v.to_string(),
        }
    };
    // Key → (the monolith's elements with it, the new service's), each in order.
    let mut groups: HashMap<String, (Vec<usize>, Vec<usize>)> = HashMap::new();
    for (i, ev) in ea.iter().enumerate() {
        groups.entry(key_of(ev)).or_default().0.push(i);
    }
    for (j, av) in aa.iter().enumerate() {
        groups.entry(key_of(av)).or_default().1.push(j);
    }
    let mut pair: Vec<Option<usize>> = vec![None; ea.len()];
    let mut paired = vec![false; aa.len()];
    for (mine, mut theirs) in groups.into_values() {
        if mine.len().saturating_mul(theirs.len()) <= EXACT_PAIRING {
            for &i in &mine {
                at.push(Seg::Index(i));
                let same = theirs.iter().position(|&j| {
                    let mut found = Vec::new();
                    walk(&ea[i], &aa[j], rules, at, &mut found);
                    found.is_empty()
                });
                at.pop();
                if let Some(p) = same {
                    pair[i] = Some(theirs.remove(p));
                }
            }
        }
        let mut rest = theirs.into_iter();
        for &i in &mine {
            if pair[i].is_none() {
                pair[i] = rest.next();
            }
        }
    }
    for (i, ev) in ea.iter().enumerate() {
        at.push(Seg::Index(i));
        match pair[i] {
            Some(j) => {
                paired[j] = true;
                walk(ev, &aa[j], rules, at, out);
            }
            None if !ignored(rules, at) => push(out, at, Kind::Missing, Some(ev), None),
            None => {}
        }
        at.pop();
    }
    for (j, av) in aa.iter().enumerate() {
        if !paired[j] {
            at.push(Seg::Index(j));
            if !ignored(rules, at) {
                push(out, at, Kind::Extra, None, Some(av));
            }
            at.pop();
        }
    }
}

#[cfg(test)]
mod tests;
