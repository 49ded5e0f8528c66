//! Any bytes as a request body, parsed whole and through a projection: both agree on whether it
//! is JSON, and every path of the projection selects the same values from either.
#![no_main]

use jsonpath_rust::parser::parse_json_path;
use jsonpath_rust::query::js_path_process;
use libfuzzer_sys::fuzz_target;
use serde_json::Value;
use strangler_rules::Projection;

const PATHS: &[&str] = &["$.user.id", "$.items[0]", "$.a.b", "$['c','d']", "$.e..f"];

fn select(v: &Value, path: &str) -> Vec<Value> {
    let q = parse_json_path(path).unwrap();
    js_path_process(&q, v).map(|f| f.into_iter().map(|r| r.val().clone()).collect()).unwrap_or_default()
}

fuzz_target!(|data: &[u8]| {
    let mut p = Projection::default();
    for path in PATHS {
        p.add(&parse_json_path(path).unwrap());
    }
    let whole = serde_json::from_slice::<Value>(data);
    let projected = p.parse(data);
    assert_eq!(whole.is_ok(), projected.is_ok(), "{:?} vs {:?}", whole.err(), projected.err());
    if let (Ok(w), Ok(pr)) = (whole, projected) {
        for path in PATHS {
            assert_eq!(select(&w, path), select(&pr, path), "{path}");
        }
    }
});
