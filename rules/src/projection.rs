//! Parsing a JSON request body into only the parts the rules can look at.
//!
//! A rule set reads a body through a known list of JSONPaths (body predicates, sticky body keys,
//! `request.body` references of `publish`). Building the whole `Value` tree of a 1 KB body, and
//! dropping it, was a fifth of the proxy's work on a body-matching route, while the rules read
//! one key of it. [`Projection`] keeps the subtrees those paths can reach and skips the rest
//! without building it. Skipped parts are still checked, so a body is JSON under a projection
//! exactly when it is JSON for `serde_json::from_slice` (the `body_projection` fuzz target
//! compares the two).
//!
//! Only member names narrow what is kept: a wildcard, index, slice or descendant step keeps the
//! whole subtree where it starts, and a filter (which may refer to `$`) keeps the whole body.
//! Every path therefore selects the same values in the projected body as in the whole one.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt;

use jsonpath_rust::parser::model::{JpQuery, Segment, Selector};
use serde::de::{DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};

/// The parts of a body a rule set can reach.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Projection {
    root: Node,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Node {
    /// Keep this whole subtree.
    all: bool,
    /// Otherwise: the members to keep, and what of each.
    members: BTreeMap<String, Node>,
}

impl Projection {
    /// Keeps everything `query` can select.
    pub fn add(&mut self, query: &JpQuery) {
        if query.segments.iter().any(has_filter) {
            self.root.all = true;
            return;
        }
        let mut node = &mut self.root;
        for segment in &query.segments {
            if node.all {
                return;
            }
            match segment {
                Segment::Selector(Selector::Name(name)) if plain(name) => {
                    node = node.members.entry(name.clone()).or_default();
                }
                Segment::Selectors(selectors)
                    if selectors
                        .iter()
                        .all(|s| matches!(s, Selector::Name(n) if plain(n))) =>
                {
                    for s in selectors {
                        if let Selector::Name(n) = s {
                            *node.members.entry(n.clone()).or_default() = Node {
                                all: true,
                                members: BTreeMap::new(),
                            };
                        }
                    }
                    return;
                }
                _ => break,
            }
        }
        node.all = true;
        node.members.clear();
    }

    /// Whether nothing is narrowed (the body is parsed whole).
    pub fn is_all(&self) -> bool {
        self.root.all
    }

    /// Parses `body`, keeping what the projection reaches. Fails exactly when the body is not
    /// JSON (see the module comment).
    pub fn parse(&self, body: &[u8]) -> Result<Value, serde_json::Error> {
        // serde_json checks a skipped string's `\u` escapes for hex digits only, not for lone
        // surrogates (which a built string rejects): a body with any is parsed whole.
        if self.root.all || body.windows(2).any(|w| w == b"\\u") {
            return serde_json::from_slice(body);
        }
        // Strings are skipped without being decoded: check the UTF-8 of the whole text first,
        // as building them would.
        let text = std::str::from_utf8(body).map_err(|e| {
            <serde_json::Error as serde::de::Error>::custom(format!("invalid UTF-8: {e}"))
        })?;
        let mut de = serde_json::Deserializer::from_str(text);
        let value = NodeSeed(&self.root).deserialize(&mut de)?;
        de.end()?;
        Ok(value)
    }
}

/// A skipped value, checked as a whole parse checks it. serde's `IgnoredAny` skips numbers
/// without converting them, so `1e400` passed it while `serde_json::from_slice` refuses it as out
/// of range; this reads every value (strings borrowed, nothing kept) and drops it.
struct Skip;

impl<'de> serde::Deserialize<'de> for Skip {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Skip, D::Error> {
        d.deserialize_any(Skip)
    }
}

impl<'de> Visitor<'de> for Skip {
    type Value = Skip;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E>(self, _: bool) -> Result<Skip, E> {
        Ok(Skip)
    }
    fn visit_i64<E>(self, _: i64) -> Result<Skip, E> {
        Ok(Skip)
    }
    fn visit_u64<E>(self, _: u64) -> Result<Skip, E> {
        Ok(Skip)
    }
    fn visit_f64<E>(self, _: f64) -> Result<Skip, E> {
        Ok(Skip)
    }
    fn visit_str<E>(self, _: &str) -> Result<Skip, E> {
        Ok(Skip)
    }
    fn visit_unit<E>(self) -> Result<Skip, E> {
        Ok(Skip)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Skip, A::Error> {
        while seq.next_element::<Skip>()?.is_some() {}
        Ok(Skip)
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Skip, A::Error> {
        while map.next_entry::<Skip, Skip>()?.is_some() {}
        Ok(Skip)
    }
}

/// A member name as the path parser keeps it: quoted forms (`['a b']`) are left whole-subtree.
fn plain(name: &str) -> bool {
    !name.starts_with(['\'', '"'])
}

fn has_filter(segment: &Segment) -> bool {
    match segment {
        Segment::Descendant(s) => has_filter(s),
        Segment::Selector(s) => matches!(s, Selector::Filter(_)),
        Segment::Selectors(ss) => ss.iter().any(|s| matches!(s, Selector::Filter(_))),
    }
}

/// Deserializes one value under a node: whole, or an object with only the kept members.
struct NodeSeed<'n>(&'n Node);

impl<'de> DeserializeSeed<'de> for NodeSeed<'_> {
    type Value = Value;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        if self.0.all {
            serde::Deserialize::deserialize(d)
        } else {
            d.deserialize_any(self)
        }
    }
}

impl<'de> Visitor<'de> for NodeSeed<'_> {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut kept = Map::new();
        while let Some(key) = map.next_key_seed(KeySeed)? {
            match self.0.members.get(key.as_ref()) {
                // A repeated member replaces the earlier one, as in a whole parse.
                Some(node) => {
                    let v = map.next_value_seed(NodeSeed(node))?;
                    kept.insert(key.into_owned(), v);
                }
                None => {
                    map.next_value::<Skip>()?;
                }
            }
        }
        Ok(Value::Object(kept))
    }

    // No member name selects inside an array: checked, not kept.
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        while seq.next_element::<Skip>()?.is_some() {}
        Ok(Value::Array(Vec::new()))
    }

    // Scalars are kept as they are (a path may end at one, or select nothing below it).
    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_string()))
    }
    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
}

/// A member name, borrowed from the body unless it has escapes.
struct KeySeed;

impl<'de> DeserializeSeed<'de> for KeySeed {
    type Value = Cow<'de, str>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Cow<'de, str>, D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for KeySeed {
    type Value = Cow<'de, str>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a member name")
    }
    fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Cow<'de, str>, E> {
        Ok(Cow::Borrowed(v))
    }
    fn visit_str<E>(self, v: &str) -> Result<Cow<'de, str>, E> {
        Ok(Cow::Owned(v.to_string()))
    }
    fn visit_string<E>(self, v: String) -> Result<Cow<'de, str>, E> {
        Ok(Cow::Owned(v))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonpath_rust::parser::parse_json_path;
    use jsonpath_rust::query::js_path_process;
    use proptest::prelude::*;
    use serde_json::json;

    fn projection(paths: &[&str]) -> Projection {
        let mut p = Projection::default();
        for s in paths {
            p.add(&parse_json_path(s).unwrap());
        }
        p
    }

    fn select(v: &Value, path: &str) -> Vec<Value> {
        let q = parse_json_path(path).unwrap();
        js_path_process(&q, v)
            .map(|found| found.into_iter().map(|r| r.val().clone()).collect())
            .unwrap_or_default()
    }

    #[test]
    fn keeps_only_the_members_paths_reach() {
        let p = projection(&["$.user", "$.order.id"]);
        let body = br#"{"user":"u-1","items":[{"sku":"a"}],"order":{"id":7,"note":"x"},"n":1}"#;
        assert_eq!(
            p.parse(body).unwrap(),
            json!({"user": "u-1", "order": {"id": 7}})
        );
    }

    #[test]
    fn wildcards_indexes_and_descendants_keep_the_subtree_filters_everything() {
        let body = br#"{"items":[{"sku":"a","q":1}],"other":{"x":1},"z":2}"#;
        let whole: Value = serde_json::from_slice(body).unwrap();
        let p = projection(&["$.items[*].sku"]);
        assert_eq!(
            p.parse(body).unwrap(),
            json!({"items": [{"sku": "a", "q": 1}]})
        );
        assert_eq!(
            projection(&["$.other..x"]).parse(body).unwrap(),
            json!({"other": {"x": 1}})
        );
        assert_eq!(
            projection(&["$.items[?(@.q == 1)]"]).parse(body).unwrap(),
            whole
        );
        assert!(projection(&["$"]).is_all());
        assert!(projection(&["$..sku"]).is_all());
    }

    #[test]
    fn a_body_is_json_exactly_when_a_whole_parse_says_so() {
        let p = projection(&["$.user"]);
        for bad in [
            &b"{\"user\":1,"[..],
            b"{\"a\": [1, 2,]}",
            b"{\"a\": tru}",
            b"{\"a\": \"\x01\"}",
            b"{\"a\": \"\xff\"}",
            b"{\"a\": 01}",
            b"{} {}",
            b"",
            b"{\"a\": \"\\ud800\"}",
            // Numbers out of f64's range (the body_projection fuzz target found these).
            b"[1e400]",
            b"{\"a\": {\"b\": -6e66666}}",
        ] {
            assert!(serde_json::from_slice::<Value>(bad).is_err());
            assert!(p.parse(bad).is_err(), "{:?}", String::from_utf8_lossy(bad));
        }
        assert_eq!(p.parse(b" [1,2] ").unwrap(), json!([]));
        assert_eq!(p.parse(b"\"s\"").unwrap(), json!("s"));
    }

    #[test]
    fn a_repeated_member_keeps_the_last_as_a_whole_parse_does() {
        let p = projection(&["$.a"]);
        assert_eq!(p.parse(br#"{"a":1,"b":2,"a":3}"#).unwrap(), json!({"a": 3}));
        assert_eq!(
            p.parse(br#"{"\u0061":1}"#).unwrap(),
            json!({"a": 1}),
            "escaped member names are matched by their value"
        );
    }

    fn json_value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i32>().prop_map(Value::from),
            "[a-c]{0,3}".prop_map(Value::String),
        ];
        leaf.prop_recursive(4, 40, 5, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                prop::collection::btree_map("[a-d]", inner, 0..5)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    const PATHS: &[&str] = &[
        "$",
        "$.a",
        "$.b",
        "$.a.b",
        "$.a.c.d",
        "$['a']",
        "$['a','b']",
        "$.a[0]",
        "$.b[*].c",
        "$.a[1:]",
        "$..c",
        "$.c..a",
        "$.a[?(@.b)]",
        "$.d[?(@ == $.a)]",
    ];

    proptest! {
        #[test]
        fn every_path_selects_the_same_from_the_projected_body(
            doc in json_value(),
            picked in prop::collection::vec(prop::sample::select(PATHS), 1..4),
        ) {
            let p = projection(&picked);
            let body = serde_json::to_vec(&doc).unwrap();
            let projected = p.parse(&body).unwrap();
            for path in &picked {
                prop_assert_eq!(select(&projected, path), select(&doc, path), "path {}", path);
            }
        }
    }
}
