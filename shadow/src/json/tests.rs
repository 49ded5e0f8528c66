use proptest::prelude::*;
use serde_json::json;

use super::*;

fn rules() -> JsonRules {
    JsonRules::default()
}

fn at(diffs: &[Difference]) -> Vec<(Kind, &str)> {
    diffs
        .iter()
        .map(|d| (d.kind, d.location.as_str()))
        .collect()
}

#[test]
fn each_kind_of_difference_is_located() {
    let e = json!({"id": 1, "name": "a", "tags": [1, 2], "gone": true, "n": 1, "items": [{"price": 5}, {"price": 6}]});
    let a = json!({"id": "1", "name": "b", "tags": [1, 2, 3], "new": null, "n": 1.0, "items": [{"price": 5}, {"price": 7}]});
    let d = diff(&e, &a, &rules());
    assert_eq!(
        at(&d),
        // Members in key order, then the new service's extra ones.
        [
            (Kind::Missing, "$.gone"),
            (Kind::Type, "$.id"),
            (Kind::Value, "$.items[1].price"),
            (Kind::Value, "$.name"),
            (Kind::Length, "$.tags"),
            (Kind::Extra, "$.new"),
        ]
    );
    let price = d.iter().find(|d| d.location == "$.items[1].price").unwrap();
    assert_eq!(price.pattern, "$.items[*].price");
    assert_eq!(
        (price.expected.clone(), price.actual.clone()),
        (Some(json!(6)), Some(json!(7)))
    );
}

#[test]
fn ignored_places_and_what_is_below_them_never_appear() {
    let e = json!({"generated_at": "x", "items": [{"etag": "a", "p": 1}], "meta": {"a": 1}});
    let a = json!({"generated_at": "y", "items": [{"etag": "b", "p": 1}], "meta": {"b": 2}});
    let r = JsonRules {
        ignore: ["$.generated_at", "$.items[*].etag", "$.meta"]
            .iter()
            .map(|p| Pattern::parse(p).unwrap())
            .collect(),
        ..rules()
    };
    assert!(diff(&e, &a, &r).is_empty());
}

#[test]
fn unordered_arrays_pair_by_key() {
    let e = json!({"items": [{"sku": "A", "q": 1}, {"sku": "B", "q": 2}, {"sku": "C", "q": 3}]});
    let a = json!({"items": [{"sku": "B", "q": 2}, {"sku": "A", "q": 9}, {"sku": "D", "q": 4}]});
    let r = JsonRules {
        unordered: vec![Unordered {
            path: Pattern::parse("$.items").unwrap(),
            key: Some(Pattern::parse("$.sku").unwrap()),
        }],
        ..rules()
    };
    assert_eq!(
        at(&diff(&e, &a, &r)),
        [
            (Kind::Value, "$.items[0].q"),
            (Kind::Missing, "$.items[2]"),
            (Kind::Extra, "$.items[2]"),
        ]
    );
    // Without a key, equal elements pair up whatever their order.
    let r = JsonRules {
        unordered: vec![Unordered {
            path: Pattern::parse("$").unwrap(),
            key: None,
        }],
        ..rules()
    };
    assert!(diff(&json!([1, 2, 2, 3]), &json!([2, 3, 1, 2]), &r).is_empty());
    assert_eq!(
        at(&diff(&json!([1, 2]), &json!([2, 2]), &r)),
        [(Kind::Missing, "$[0]"), (Kind::Extra, "$[1]")]
    );
}

#[test]
fn elements_sharing_a_key_are_paired_as_a_multiset() {
    let r = JsonRules {
        unordered: vec![Unordered {
            path: Pattern::parse("$.items").unwrap(),
            key: Some(Pattern::parse("$.sku").unwrap()),
        }],
        ..rules()
    };
    // Two lines of one sku, swapped; and two without one, swapped.
    let e = json!({"items": [{"sku": 1, "qty": 1}, {"sku": 1, "qty": 2}, {"qty": 5}, {"qty": 6}]});
    let a = json!({"items": [{"qty": 6}, {"sku": 1, "qty": 2}, {"qty": 5}, {"sku": 1, "qty": 1}]});
    assert!(diff(&e, &a, &r).is_empty(), "{:?}", at(&diff(&e, &a, &r)));
    // A real change within a group is still one value difference.
    let changed =
        json!({"items": [{"qty": 6}, {"sku": 1, "qty": 3}, {"qty": 5}, {"sku": 1, "qty": 1}]});
    assert_eq!(
        at(&diff(&e, &changed, &r)),
        [(Kind::Value, "$.items[1].qty")]
    );
}

#[test]
fn numbers_within_the_tolerance_are_equal() {
    let r = JsonRules {
        numbers: Tolerance {
            relative: 1e-9,
            absolute: 0.0,
        },
        ..rules()
    };
    assert!(diff(&json!(0.1 + 0.2), &json!(0.3), &r).is_empty());
    assert!(diff(&json!(1), &json!(1.0), &rules()).is_empty());
    assert_eq!(diff(&json!(1.0), &json!(1.001), &r).len(), 1);
    let abs = JsonRules {
        numbers: Tolerance {
            relative: 0.0,
            absolute: 0.01,
        },
        ..rules()
    };
    assert!(diff(&json!(10.0), &json!(10.005), &abs).is_empty());
}

#[test]
fn integers_compare_exactly_without_a_tolerance() {
    let big: Value = serde_json::from_str(r#"{"id":1234567890123456789}"#).unwrap();
    let next: Value = serde_json::from_str(r#"{"id":1234567890123456788}"#).unwrap();
    assert_eq!(at(&diff(&big, &next, &rules())), [(Kind::Value, "$.id")]);
    let two53 = 1u64 << 53;
    assert_eq!(diff(&json!(two53 + 1), &json!(two53), &rules()).len(), 1);
    assert_eq!(
        diff(&json!(u64::MAX), &json!(u64::MAX - 1), &rules()).len(),
        1
    );
    assert_eq!(diff(&json!(-1), &json!(u64::MAX), &rules()).len(), 1);
    // An integer and the float that holds it exactly are equal; one that rounds it is not.
    assert!(diff(&json!(1), &json!(1.0), &rules()).is_empty());
    assert_eq!(
        diff(&json!(two53 + 1), &json!(two53 as f64), &rules()).len(),
        1
    );
    // A configured tolerance still applies to integers.
    let abs = JsonRules {
        numbers: Tolerance {
            relative: 0.0,
            absolute: 1.0,
        },
        ..rules()
    };
    assert!(diff(&json!(two53 + 1), &json!(two53), &abs).is_empty());
}

/// Any JSON value, a few levels deep.
fn value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        (-1e6f64..1e6).prop_map(Value::from),
        "[a-z]{0,6}".prop_map(Value::from),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map("[a-e]{1,2}", inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

proptest! {
    #[test]
    fn distinct_integers_never_compare_equal_without_a_tolerance(
        a in prop_oneof![any::<i64>().prop_map(Value::from), any::<u64>().prop_map(Value::from)],
        b in prop_oneof![any::<i64>().prop_map(Value::from), any::<u64>().prop_map(Value::from)],
        near in -3i64..=3,
    ) {
        // Far apart, and a unit or three apart (where f64 loses them above 2^53).
        let close = match &a {
            Value::Number(n) if n.is_u64() => Value::from(n.as_u64().unwrap().wrapping_add_signed(near)),
            Value::Number(n) => Value::from(n.as_i64().unwrap().wrapping_add(near)),
            _ => unreachable!(),
        };
        for b in [b, close] {
            let same = a.as_i64().map(i128::from).or(a.as_u64().map(i128::from))
                == b.as_i64().map(i128::from).or(b.as_u64().map(i128::from));
            prop_assert_eq!(diff(&a, &b, &rules()).is_empty(), same, "{} against {}", a, b);
        }
    }

    #[test]
    fn a_document_equals_itself(v in value()) {
        prop_assert!(diff(&v, &v, &rules()).is_empty());
    }

    #[test]
    fn ignored_paths_never_appear(e in value(), a in value(), key in "[a-e]{1,2}") {
        let p = format!("$..{key}");
        let r = JsonRules { ignore: vec![Pattern::parse(&p).unwrap()], ..rules() };
        for d in diff(&e, &a, &r) {
            let under = d.location.contains(&format!(".{key}.")) ||
                d.location.contains(&format!(".{key}[")) ||
                d.location.ends_with(&format!(".{key}"));
            prop_assert!(!under, "{} reported under {}", d.location, p);
        }
    }

    #[test]
    fn unordered_arrays_ignore_order(items in prop::collection::vec(value(), 0..8), seed in any::<u64>()) {
        let mut shuffled = items.clone();
        // A deterministic shuffle from the seed.
        let mut s = seed | 1;
        for i in (1..shuffled.len()).rev() {
            s ^= s << 13; s ^= s >> 7; s ^= s << 17;
            shuffled.swap(i, (s % (i as u64 + 1)) as usize);
        }
        let r = JsonRules {
            unordered: vec![Unordered { path: Pattern::parse("$").unwrap(), key: None }],
            ..rules()
        };
        prop_assert!(diff(&Value::Array(items), &Value::Array(shuffled), &r).is_empty());
    }

    #[test]
    fn differences_are_symmetric_in_count(e in value(), a in value()) {
        // Missing one way is extra the other; every other kind keeps its place.
        let there = diff(&e, &a, &rules());
        let back = diff(&a, &e, &rules());
        prop_assert_eq!(there.len(), back.len());
    }
}
