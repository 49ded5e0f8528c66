//! Path patterns (exact, segment-aware prefix, `{param}` templates, anchored regex) and the
//! segment trie that finds the routes whose path can match a request in O(path length), however
//! many routes there are. Paths are matched as received, without percent-decoding.

use std::collections::HashMap;

/// A compiled path pattern.
#[derive(Debug, Clone)]
pub enum PathPattern {
    Exact(String),
    /// Matches the prefix itself and anything below it at a segment boundary: `/api/orders`
    /// matches `/api/orders` and `/api/orders/7`, not `/api/ordersx`. `/` matches every path.
    Prefix(String),
    Template(Template),
    /// Anchored: the whole path must match.
    Regex(regex::Regex),
}

/// `/api/orders/{id}/items/{item}`: literal segments and named one-segment parameters.
#[derive(Debug, Clone)]
pub struct Template {
    pub source: String,
    pub segments: Vec<Segment>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Segment {
    Literal(String),
    Param(String),
}

/// What is wrong with a path template.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TemplateError {
    #[error("a path template must start with '/'")]
    NoLeadingSlash,
    #[error("segment `{0}` opens `{{` without closing it")]
    Unclosed(String),
    #[error("parameter `{{{0}}}` must be a non-empty name of letters, digits and _")]
    BadName(String),
    #[error("parameter `{{{0}}}` appears twice")]
    Twice(String),
    #[error("segment `{0}` mixes text and a parameter; a parameter must be a whole segment")]
    Mixed(String),
}

impl Template {
    /// Parses a template; the error says what is wrong with it.
    pub fn parse(source: &str) -> Result<Template, TemplateError> {
        if !source.starts_with('/') {
            return Err(TemplateError::NoLeadingSlash);
        }
        let mut segments = Vec::new();
        let mut seen = Vec::<&str>::new();
        for seg in split_segments(source) {
            if let Some(inner) = seg.strip_prefix('{') {
                let Some(name) = inner.strip_suffix('}') else {
                    return Err(TemplateError::Unclosed(seg.into()));
                };
                if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                    return Err(TemplateError::BadName(name.into()));
                }
                if seen.contains(&name) {
                    return Err(TemplateError::Twice(name.into()));
                }
                seen.push(name);
                segments.push(Segment::Param(name.to_string()));
            } else if seg.contains('{') || seg.contains('}') {
                return Err(TemplateError::Mixed(seg.into()));
            } else {
                segments.push(Segment::Literal(seg.to_string()));
            }
        }
        Ok(Template {
            source: source.to_string(),
            segments,
        })
    }

    pub fn params(&self) -> impl Iterator<Item = &str> {
        self.segments.iter().filter_map(|s| match s {
            Segment::Param(p) => Some(p.as_str()),
            Segment::Literal(_) => None,
        })
    }

    /// The parameters captured from `path`, or `None` if it does not match.
    pub fn captures<'p>(&self, path: &'p str) -> Option<Vec<(&str, &'p str)>> {
        let mut out = Vec::new();
        let mut parts = split_segments(path);
        for seg in &self.segments {
            let part = parts.next()?;
            match seg {
                Segment::Literal(l) if l == part => {}
                Segment::Param(name) if !part.is_empty() => out.push((name.as_str(), part)),
                _ => return None,
            }
        }
        parts.next().is_none().then_some(out)
    }
}

impl PathPattern {
    pub fn matches(&self, path: &str) -> bool {
        match self {
            PathPattern::Exact(p) => p == path,
            PathPattern::Prefix(p) => prefix_matches(p, path),
            PathPattern::Template(t) => t.captures(path).is_some(),
            PathPattern::Regex(r) => r.is_match(path),
        }
    }
}

fn prefix_matches(prefix: &str, path: &str) -> bool {
    if prefix == "/" {
        return true;
    }
    match path.strip_prefix(prefix) {
        Some(rest) => rest.is_empty() || rest.starts_with('/'),
        None => false,
    }
}

/// Segments after the leading `/`: `/a/b/` gives `a`, `b`, `` (a trailing slash is a segment).
fn split_segments(path: &str) -> std::str::Split<'_, char> {
    path.strip_prefix('/').unwrap_or(path).split('/')
}

/// Route ids reachable from a path, by a trie over path segments. Regex routes and routes
/// without a path are not in it: the caller checks those for every request.
#[derive(Debug, Default)]
pub struct PathIndex {
    root: Node,
}

#[derive(Debug, Default)]
struct Node {
    literal: HashMap<Box<str>, Node>,
    param: Option<Box<Node>>,
    /// Routes whose exact path or template ends here.
    terminal: Vec<u32>,
    /// Routes whose prefix ends here (they match here and anywhere below).
    prefix: Vec<u32>,
}

impl PathIndex {
    /// Adds route `id` for `pattern`; returns false for patterns the trie does not index (regex).
    pub fn insert(&mut self, id: u32, pattern: &PathPattern) -> bool {
        match pattern {
            PathPattern::Exact(p) => {
                let node = split_segments(p).fold(&mut self.root, |n, s| {
                    n.literal.entry(s.into()).or_default()
                });
                node.terminal.push(id);
            }
            PathPattern::Prefix(p) => {
                let mut node = &mut self.root;
                if p != "/" {
                    for s in split_segments(p) {
                        node = node.literal.entry(s.into()).or_default();
                    }
                }
                node.prefix.push(id);
            }
            PathPattern::Template(t) => {
                let mut node = &mut self.root;
                for seg in &t.segments {
                    node = match seg {
                        Segment::Literal(l) => node.literal.entry(l.as_str().into()).or_default(),
                        Segment::Param(_) => node.param.get_or_insert_with(Default::default),
                    };
                }
                node.terminal.push(id);
            }
            PathPattern::Regex(_) => return false,
        }
        true
    }

    /// Pushes every route id whose indexed pattern may match `path` (exact, prefix and template
    /// routes match for certain; duplicates are possible, order is not kept).
    pub fn candidates(&self, path: &str, out: &mut Vec<u32>) {
        if !path.starts_with('/') {
            return;
        }
        let segs = split_segments(path);
        Self::walk(&self.root, segs, out);
    }

    fn walk(node: &Node, mut segs: std::str::Split<'_, char>, out: &mut Vec<u32>) {
        out.extend_from_slice(&node.prefix);
        let Some(seg) = segs.next() else {
            out.extend_from_slice(&node.terminal);
            return;
        };
        if let Some(param) = &node.param
            && !seg.is_empty()
        {
            Self::walk(param, segs.clone(), out);
        }
        if let Some(child) = node.literal.get(seg) {
            Self::walk(child, segs, out);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn template_captures_params() {
        let t = Template::parse("/api/orders/{id}/items/{item}").unwrap();
        assert_eq!(
            t.captures("/api/orders/42/items/7"),
            Some(vec![("id", "42"), ("item", "7")])
        );
        assert_eq!(t.captures("/api/orders/42/items"), None);
        assert_eq!(t.captures("/api/orders//items/7"), None);
        assert_eq!(t.captures("/api/orders/42/items/7/x"), None);
    }

    #[test]
    fn template_errors() {
        assert!(Template::parse("api/x").is_err());
        assert!(Template::parse("/a/{id").is_err());
        assert!(Template::parse("/a/x{id}").is_err());
        assert!(Template::parse("/a/{id}/{id}").is_err());
        assert!(Template::parse("/a/{}").is_err());
    }

    #[test]
    fn prefix_is_segment_aware() {
        let p = PathPattern::Prefix("/api/orders".into());
        assert!(p.matches("/api/orders"));
        assert!(p.matches("/api/orders/1"));
        assert!(!p.matches("/api/ordersx"));
        assert!(PathPattern::Prefix("/".into()).matches("/anything"));
    }

    #[test]
    fn index_finds_exact_prefix_and_templates() {
        let mut idx = PathIndex::default();
        idx.insert(0, &PathPattern::Exact("/a/b".into()));
        idx.insert(1, &PathPattern::Prefix("/a".into()));
        idx.insert(
            2,
            &PathPattern::Template(Template::parse("/a/{x}").unwrap()),
        );
        idx.insert(3, &PathPattern::Prefix("/".into()));
        let find = |p: &str| {
            let mut v = Vec::new();
            idx.candidates(p, &mut v);
            v.sort_unstable();
            v.dedup();
            v
        };
        assert_eq!(find("/a/b"), vec![0, 1, 2, 3]);
        assert_eq!(find("/a/c"), vec![1, 2, 3]);
        assert_eq!(find("/a"), vec![1, 3]);
        assert_eq!(find("/b"), vec![3]);
        assert_eq!(find("/a/b/c"), vec![1, 3]);
    }
}
