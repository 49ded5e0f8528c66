//! Where a difference is in a JSON document, and the patterns that select such places.
//!
//! A [`Location`] is a concrete path (`$.items[2].price`); its [`Location::pattern`] replaces every
//! array index by `[*]` (`$.items[*].price`), so differences at the same place of different
//! elements count as one. A [`Pattern`] is the JSONPath subset the `compare` rules use:
//! `$`, `.name`, `['name']`, `[2]`, `[*]`, `.*` and `..name` (any depth).

use std::fmt::{self, Write as _};

/// One step into a JSON value.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Seg {
    Key(String),
    Index(usize),
}

/// A concrete place in a JSON document.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct Location(pub Vec<Seg>);

impl Location {
    /// The location with every array index replaced by `[*]`.
    pub fn pattern(&self) -> String {
        render(self.0.iter().map(|s| match s {
            Seg::Key(k) => Step::Key(k),
            Seg::Index(_) => Step::Wild,
        }))
    }
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&render(self.0.iter().map(|s| match s {
            Seg::Key(k) => Step::Key(k),
            Seg::Index(i) => Step::Index(*i),
        })))
    }
}

enum Step<'a> {
    Key(&'a str),
    Index(usize),
    Wild,
}

fn render<'a>(steps: impl Iterator<Item = Step<'a>>) -> String {
    let mut out = String::from("$");
    for s in steps {
        match s {
            Step::Key(k) if is_identifier(k) => {
                out.push('.');
                out.push_str(k);
            }
            Step::Key(k) => {
                out.push_str("['");
                for c in k.chars() {
                    if c == '\'' || c == '\\' {
                        out.push('\\');
                    }
                    out.push(c);
                }
                out.push_str("']");
            }
            Step::Index(i) => {
                let _ = write!(out, "[{i}]");
            }
            Step::Wild => out.push_str("[*]"),
        }
    }
    out
}

fn is_identifier(k: &str) -> bool {
    let mut chars = k.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

/// One step of a [`Pattern`].
#[derive(Debug, Clone, PartialEq, Eq)]
enum PatSeg {
    Key(String),
    Index(usize),
    /// `[*]` or `.*`: any one member or element.
    Any,
    /// `..name`: `name` at this level or any depth below.
    Descend(String),
}

/// A JSONPath subset selecting places in a document (see the module docs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pattern {
    segs: Vec<PatSeg>,
    source: String,
}

impl fmt::Display for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.source)
    }
}

/// Why a comparison path is not one the differ takes (each names the path).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PatternError {
    #[error("a path starts with `$`")]
    NoDollar,
    #[error("`..` needs a member name after it in `{0}`")]
    DescendWithoutName(String),
    #[error("a member name is missing after `.` in `{0}`")]
    MissingName(String),
    #[error("an unclosed `[` in `{0}`")]
    Unclosed(String),
    #[error("`[{inner}]` is not supported (use [N], [*] or ['name']) in `{path}`")]
    Bracket { inner: String, path: String },
    #[error("unexpected `{c}` in `{path}`")]
    Unexpected { c: char, path: String },
}

impl Pattern {
    /// Parses a pattern; the error says what is not supported.
    pub fn parse(source: &str) -> Result<Pattern, PatternError> {
        let s = source.trim();
        let rest = s.strip_prefix('$').ok_or(PatternError::NoDollar)?;
        let b = rest.as_bytes();
        let mut i = 0;
        let mut segs = Vec::new();
        while i < b.len() {
            if rest[i..].starts_with("..") {
                i += 2;
                let (name, n) = name_at(&rest[i..]);
                if name.is_empty() {
                    return Err(PatternError::DescendWithoutName(s.into()));
                }
                segs.push(PatSeg::Descend(name.to_string()));
                i += n;
            } else if b[i] == b'.' {
                i += 1;
                if rest[i..].starts_with('*') {
                    segs.push(PatSeg::Any);
                    i += 1;
                    continue;
                }
                let (name, n) = name_at(&rest[i..]);
                if name.is_empty() {
                    return Err(PatternError::MissingName(s.into()));
                }
                segs.push(PatSeg::Key(name.to_string()));
                i += n;
            } else if b[i] == b'[' {
                let close =
                    bracket_end(&rest[i..]).ok_or_else(|| PatternError::Unclosed(s.into()))?;
                let inner = rest[i + 1..i + close].trim();
                segs.push(bracket(inner).ok_or_else(|| PatternError::Bracket {
                    inner: inner.into(),
                    path: s.into(),
                })?);
                i += close + 1;
            } else {
                let c = rest[i..].chars().next().unwrap_or_default();
                return Err(PatternError::Unexpected { c, path: s.into() });
            }
        }
        Ok(Pattern {
            segs,
            source: s.to_string(),
        })
    }

    /// True when `loc` is selected by this pattern or lies inside a place it selects.
    pub fn covers(&self, loc: &[Seg]) -> bool {
        covers(&self.segs, loc)
    }

    /// True when the pattern selects `loc` itself (not only something above it).
    pub fn selects(&self, loc: &[Seg]) -> bool {
        selects(&self.segs, loc)
    }

    /// The value at this pattern's place in `v`, when the pattern is a plain path (keys and
    /// indices only; `$` is `v` itself).
    pub fn get<'v>(&self, v: &'v serde_json::Value) -> Option<&'v serde_json::Value> {
        self.segs.iter().try_fold(v, |v, s| match s {
            PatSeg::Key(k) => v.get(k.as_str()),
            PatSeg::Index(i) => v.get(*i),
            PatSeg::Any | PatSeg::Descend(_) => None,
        })
    }

    /// The place a plain pattern names (a location rendered by [`Location`]'s `Display` parses
    /// back to it); `None` when the pattern has wildcards.
    pub fn as_location(&self) -> Option<Location> {
        self.segs
            .iter()
            .map(|s| match s {
                PatSeg::Key(k) => Some(Seg::Key(k.clone())),
                PatSeg::Index(i) => Some(Seg::Index(*i)),
                PatSeg::Any | PatSeg::Descend(_) => None,
            })
            .collect::<Option<Vec<_>>>()
            .map(Location)
    }

    /// True when the pattern has only keys and indices (it names one place).
    pub fn is_plain(&self) -> bool {
        self.segs
            .iter()
            .all(|s| matches!(s, PatSeg::Key(_) | PatSeg::Index(_)))
    }
}

/// A member name after `.` or `..`: letters, digits, `_`, `-`, `$`, `@`.
fn name_at(s: &str) -> (&str, usize) {
    let n = s
        .find(|c: char| !(c.is_alphanumeric() || "_-$@".contains(c)))
        .unwrap_or(s.len());
    (&s[..n], n)
}

/// The offset of the `]` closing the `[` at the start of `s`, past any quoted name.
fn bracket_end(s: &str) -> Option<usize> {
    let mut quote = None;
    let mut escaped = false;
    for (i, c) in s.char_indices().skip(1) {
        match (quote, c) {
            (Some(_), _) if escaped => escaped = false,
            (Some(_), '\\') => escaped = true,
            (Some(q), c) if c == q => quote = None,
            (None, '\'' | '"') => quote = Some(c),
            (None, ']') => return Some(i),
            _ => {}
        }
    }
    None
}

fn bracket(inner: &str) -> Option<PatSeg> {
    if inner == "*" {
        return Some(PatSeg::Any);
    }
    if let Ok(i) = inner.parse::<usize>() {
        return Some(PatSeg::Index(i));
    }
    let q = inner.chars().next()?;
    if (q == '\'' || q == '"') && inner.len() >= 2 && inner.ends_with(q) {
        let mut out = String::new();
        let mut escaped = false;
        for c in inner[1..inner.len() - 1].chars() {
            if escaped {
                out.push(c);
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else {
                out.push(c);
            }
        }
        return Some(PatSeg::Key(out));
    }
    None
}

fn seg_matches(p: &PatSeg, s: &Seg) -> bool {
    match (p, s) {
        (PatSeg::Key(k), Seg::Key(n)) => k == n,
        (PatSeg::Index(i), Seg::Index(n)) => i == n,
        (PatSeg::Any, _) => true,
        _ => false,
    }
}

fn covers(pat: &[PatSeg], loc: &[Seg]) -> bool {
    match pat.split_first() {
        None => true,
        Some((PatSeg::Descend(name), rest)) => (0..loc.len())
            .any(|i| matches!(&loc[i], Seg::Key(k) if k == name) && covers(rest, &loc[i + 1..])),
        Some((p, rest)) => match loc.split_first() {
            Some((s, tail)) => seg_matches(p, s) && covers(rest, tail),
            None => false,
        },
    }
}

fn selects(pat: &[PatSeg], loc: &[Seg]) -> bool {
    match pat.split_first() {
        None => loc.is_empty(),
        Some((PatSeg::Descend(name), rest)) => (0..loc.len())
            .any(|i| matches!(&loc[i], Seg::Key(k) if k == name) && selects(rest, &loc[i + 1..])),
        Some((p, rest)) => match loc.split_first() {
            Some((s, tail)) => seg_matches(p, s) && selects(rest, tail),
            None => false,
        },
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    proptest! {
        #[test]
        fn every_location_parses_back_to_itself(
            segs in prop::collection::vec(
                prop_oneof![
                    any::<String>().prop_map(Seg::Key),
                    (0usize..1000).prop_map(Seg::Index),
                ],
                0..6,
            )
        ) {
            let l = Location(segs);
            let back = Pattern::parse(&l.to_string()).map(|p| p.as_location());
            prop_assert_eq!(back, Ok(Some(l.clone())), "{}", l);
        }
    }

    fn loc(segs: &[&str]) -> Vec<Seg> {
        segs.iter()
            .map(|s| match s.parse::<usize>() {
                Ok(i) => Seg::Index(i),
                Err(_) => Seg::Key((*s).to_string()),
            })
            .collect()
    }

    #[test]
    fn locations_render_and_normalise() {
        let l = Location(loc(&["items", "2", "price"]));
        assert_eq!(l.to_string(), "$.items[2].price");
        assert_eq!(l.pattern(), "$.items[*].price");
        let odd = Location(vec![Seg::Key("a b".into()), Seg::Key("it's".into())]);
        assert_eq!(odd.to_string(), r"$['a b']['it\'s']");
        // A rendered location parses back to itself.
        for l in [&l, &odd] {
            let back = Pattern::parse(&l.to_string()).unwrap().as_location();
            assert_eq!(back.as_ref(), Some(l));
        }
        assert_eq!(Location::default().to_string(), "$");
    }

    #[test]
    fn patterns_select_and_cover() {
        let p = Pattern::parse("$.items[*].etag").unwrap();
        assert!(p.selects(&loc(&["items", "0", "etag"])));
        assert!(p.covers(&loc(&["items", "3", "etag", "x"])));
        assert!(!p.covers(&loc(&["items", "3", "price"])));
        let d = Pattern::parse("$..generated_at").unwrap();
        assert!(d.covers(&loc(&["generated_at"])));
        assert!(d.covers(&loc(&["a", "1", "generated_at"])));
        assert!(!d.covers(&loc(&["a", "generated"])));
        let q = Pattern::parse("$['a b'][2].*").unwrap();
        assert!(q.selects(&loc(&["a b", "2", "z"])));
        assert!(Pattern::parse("$").unwrap().covers(&loc(&["x"])));
    }

    #[test]
    fn unsupported_syntax_is_refused() {
        for bad in ["items", "$.items[?(@.x)]", "$.", "$[", "$..", "$x", "$é"] {
            assert!(Pattern::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn plain_patterns_get_values() {
        let v = serde_json::json!({"sku": "A1", "n": [1, {"x": 2}]});
        assert_eq!(
            Pattern::parse("$.sku").unwrap().get(&v),
            Some(&serde_json::json!("A1"))
        );
        assert_eq!(
            Pattern::parse("$.n[1].x").unwrap().get(&v),
            Some(&serde_json::json!(2))
        );
        assert!(Pattern::parse("$").unwrap().is_plain());
        assert!(!Pattern::parse("$.n[*]").unwrap().is_plain());
    }
}
