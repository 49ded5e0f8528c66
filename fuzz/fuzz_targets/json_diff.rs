//! The shadow JSON differ on arbitrary input: `pattern \n expected \n actual`. It must never
//! panic; a document must equal itself under any rules; and nothing under an ignored pattern may
//! be reported.
#![no_main]

use libfuzzer_sys::fuzz_target;
use strangler_shadow::json::{JsonRules, Unordered, diff};
use strangler_shadow::path::Pattern;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let mut parts = text.splitn(3, '\n');
    let (Some(pattern), Some(e), Some(a)) = (parts.next(), parts.next(), parts.next()) else {
        return;
    };
    let Ok(pattern) = Pattern::parse(pattern) else {
        return;
    };
    let (Ok(e), Ok(a)) = (
        serde_json::from_str::<serde_json::Value>(e),
        serde_json::from_str::<serde_json::Value>(a),
    ) else {
        return;
    };
    let rules = JsonRules {
        ignore: vec![pattern.clone()],
        unordered: vec![Unordered {
            path: pattern.clone(),
            key: None,
        }],
        ..JsonRules::default()
    };
    assert!(diff(&e, &e, &rules).is_empty(), "a document differs from itself");
    let plain = JsonRules {
        ignore: vec![pattern.clone()],
        ..JsonRules::default()
    };
    for d in diff(&e, &a, &plain) {
        let loc = Pattern::parse(&d.location)
            .ok()
            .and_then(|p| p.as_location())
            .unwrap_or_else(|| panic!("a location that does not parse back: {}", d.location));
        assert!(
            !pattern.covers(&loc.0),
            "an ignored place was reported: {}",
            d.location
        );
    }
});
