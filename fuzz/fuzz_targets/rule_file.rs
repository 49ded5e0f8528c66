//! Any bytes as a rule file: compile must return a rule set or located errors, never panic; a
//! rule set that compiles must then match requests without panicking.
#![no_main]

use libfuzzer_sys::fuzz_target;
use strangler_rules::{Body, Environment, Request, SourceFile, compile};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let files = [SourceFile { name: "fuzz.yaml".into(), text: text.to_string() }];
    let ctx = Environment { services: Some(vec!["orders".into()]) };
    match compile(&files, &ctx) {
        Ok(set) => {
            let headers = http::HeaderMap::new();
            for path in ["/", "/api/orders/1", "/a/b/c", ""] {
                let req = Request { method: &http::Method::POST, host: Some("h"), path, query: Some("a=1"), headers: &headers };
                let _ = set.find(&req, Body::NotRead);
                let _ = set.find(&req, Body::Unavailable);
            }
        }
        Err(diags) => {
            for d in &diags.0 {
                let _ = d.to_string();
            }
        }
    }
});
