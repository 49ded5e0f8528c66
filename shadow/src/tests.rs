use std::io::Write;

use http::HeaderMap;
use serde_json::json;

use super::*;

fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
    let mut h = HeaderMap::new();
    for (k, v) in pairs {
        h.append(
            http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
            v.parse().unwrap(),
        );
    }
    h
}

fn answer<'a>(status: u16, headers: &'a HeaderMap, body: &'a [u8]) -> Answer<'a> {
    Answer {
        status,
        headers,
        body,
    }
}

#[test]
fn equal_answers_match() {
    let h = headers(&[("content-type", "application/json")]);
    let body = br#"{"id": 1, "items": [1, 2]}"#;
    let d = compare(
        &answer(200, &h, body),
        &answer(200, &h, body),
        &Rules::default(),
    )
    .unwrap();
    assert!(d.is_empty(), "{d:?}");
}

#[test]
fn status_headers_and_body_differences_are_listed() {
    let e = headers(&[("content-type", "application/json"), ("x-other", "a")]);
    let a = headers(&[
        ("content-type", "application/json; charset=utf-8"),
        ("x-other", "b"),
    ]);
    let d = compare(
        &answer(200, &e, br#"{"total": 10}"#),
        &answer(201, &a, br#"{"total": 11}"#),
        &Rules::default(),
    )
    .unwrap();
    let got: Vec<_> = d.iter().map(|d| (d.kind, d.location.as_str())).collect();
    // `x-other` is not compared: only the listed headers are.
    assert_eq!(
        got,
        [
            (Kind::Status, "status"),
            (Kind::Header, "header:content-type"),
            (Kind::Value, "$.total")
        ]
    );
}

#[test]
fn a_compressed_and_a_plain_answer_with_the_same_json_match() {
    let plain = headers(&[("content-type", "application/json")]);
    let gz = headers(&[
        ("content-type", "application/json"),
        ("content-encoding", "gzip"),
    ]);
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    enc.write_all(br#"{"a": [1, 2, {"b": null}]}"#).unwrap();
    let zipped = enc.finish().unwrap();
    let d = compare(
        &answer(200, &plain, br#"{ "a": [1,2,{"b":null}] }"#),
        &answer(200, &gz, &zipped),
        &Rules::default(),
    )
    .unwrap();
    assert!(d.is_empty(), "{d:?}");
}

#[test]
fn other_bodies_are_compared_byte_for_byte() {
    let h = headers(&[("content-type", "text/plain")]);
    let same = compare(
        &answer(200, &h, b"ok"),
        &answer(200, &h, b"ok"),
        &Rules::default(),
    );
    assert!(same.unwrap().is_empty());
    let d = compare(
        &answer(200, &h, b"ok"),
        &answer(200, &h, b"OK!"),
        &Rules::default(),
    )
    .unwrap();
    assert_eq!(d.len(), 1);
    assert_eq!(d[0].kind, Kind::Body);
    assert_eq!(
        d[0].actual,
        Some(json!({"bytes": 3, "start": "OK!", "differs_at": 0, "around": "OK!"}))
    );
    // A long body says where it first differs, with a little context on each side.
    let long = |tail: &str| format!("{}{tail}", "a".repeat(100));
    let (e, a) = (long("xyz"), long("xYz"));
    let d = compare(
        &answer(200, &h, e.as_bytes()),
        &answer(200, &h, a.as_bytes()),
        &Rules::default(),
    )
    .unwrap();
    let around = |s: &str| format!("{}{s}", "a".repeat(15));
    assert_eq!(d[0].expected.as_ref().unwrap()["differs_at"], 101);
    assert_eq!(
        d[0].expected.as_ref().unwrap()["around"],
        json!(around("xyz"))
    );
    assert_eq!(
        d[0].actual.as_ref().unwrap()["around"],
        json!(around("xYz"))
    );
}

#[test]
fn an_undecodable_body_is_not_comparable() {
    let h = headers(&[("content-encoding", "gzip")]);
    let plain = HeaderMap::new();
    let err = compare(
        &answer(200, &plain, b"{}"),
        &answer(200, &h, b"junk"),
        &Rules::default(),
    )
    .unwrap_err();
    assert!(
        err.to_string()
            .starts_with("new service: the gzip body is corrupt"),
        "{err}"
    );
}

/// Integers beyond 64 bits compare by their literal: two that `f64` rounds to one value differ,
/// the same literal matches, and the difference shows their digits.
#[test]
fn integers_beyond_64_bits_are_exact() {
    let h = headers(&[("content-type", "application/json")]);
    let d = compare(
        &answer(200, &h, br#"{"id":123456789012345678901234,"n":1}"#),
        &answer(200, &h, br#"{"id":123456789012345678901235,"n":1}"#),
        &Rules::default(),
    )
    .unwrap();
    assert_eq!(d.len(), 1, "{d:?}");
    assert_eq!(d[0].location, "$.id");
    assert_eq!(d[0].expected, Some(json!("123456789012345678901234")));
    assert_eq!(d[0].actual, Some(json!("123456789012345678901235")));
    // The same literal, and a float that holds it exactly, match.
    for other in [
        &br#"{"id":123456789012345678901234,"n":1}"#[..],
        br#"{"id":1.23456789012345678901234e23,"n":1.0}"#,
    ] {
        let same = compare(
            &answer(200, &h, br#"{"id":123456789012345678901234,"n":1}"#),
            &answer(200, &h, other),
            &Rules::default(),
        )
        .unwrap();
        let exact = other.starts_with(br#"{"id":1234"#);
        assert_eq!(same.is_empty(), exact, "{same:?}");
    }
}

mod big_integers {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Two distinct integer literals, of any size, never compare equal without a
        /// tolerance; equal ones always do.
        #[test]
        fn distinct_integer_literals_never_compare_equal(
            a in "-?[1-9][0-9]{0,39}",
            b in "-?[1-9][0-9]{0,39}",
            last in 0u8..10,
        ) {
            let h = headers(&[("content-type", "application/json")]);
            // And one differing from `a` in its last digit only.
            let close = format!("{}{last}", &a[..a.len() - 1]);
            for b in [b, close, a.clone()] {
                let (x, y) = (format!(r#"{{"id":{a}}}"#), format!(r#"{{"id":{b}}}"#));
                let d = compare(&answer(200, &h, x.as_bytes()), &answer(200, &h, y.as_bytes()), &Rules::default()).unwrap();
                prop_assert_eq!(d.is_empty(), a == b, "{} against {}: {:?}", a, b, d);
            }
        }
    }
}
