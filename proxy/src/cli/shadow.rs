//! `strangler shadow summary|show`: the running proxy's shadow figures and one stored mismatch,
//! as readable text for a terminal. Both ask the admin API named by the config (the same JSON as
//! `GET /api/shadow` and `GET /api/shadow/mismatches/{id}`).

use anyhow::Result;
use serde_json::Value;

use super::admin::call;
use crate::config::Config;

#[derive(Debug, clap::Subcommand)]
pub enum ShadowCommand {
    /// Per shadowed route: comparisons, match rate, skips, the most frequent differences, noise.
    #[command(after_help = "Example:\n  strangler shadow summary -c strangler.yaml")]
    Summary,
    /// One stored mismatch whole: the request, both answers and every difference.
    #[command(after_help = "Example:\n  strangler shadow show -c strangler.yaml 42")]
    Show {
        /// The mismatch id (from `GET /api/shadow/mismatches`).
        id: i64,
    },
}

pub fn run(cfg: &Config, cmd: &ShadowCommand) -> Result<()> {
    match cmd {
        ShadowCommand::Summary => {
            print!("{}", summary(&call(cfg, "GET", "/api/shadow", None)?));
        }
        ShadowCommand::Show { id } => {
            let m = call(cfg, "GET", &format!("/api/shadow/mismatches/{id}"), None)?;
            print!("{}", mismatch(&m));
        }
    }
    Ok(())
}

fn summary(v: &Value) -> String {
    let routes = v["routes"].as_array().cloned().unwrap_or_default();
    if routes.is_empty() {
        return "no route has a shadow section\n".into();
    }
    let mut out = format!(
        "{:<24} {:>9} {:>8} {:>9} {:>7} {:>8} {:>8}  skipped\n",
        "route", "compared", "match %", "mismatch", "errors", "timeouts", ""
    );
    for r in &routes {
        let n = |k: &str| r[k].as_u64().unwrap_or(0);
        let rate = r["match_rate"]
            .as_f64()
            .map_or("-".to_string(), |x| format!("{:.2}", x * 100.0));
        let skipped: Vec<String> = r["skipped"]
            .as_object()
            .into_iter()
            .flatten()
            .filter(|(_, n)| n.as_u64().unwrap_or(0) > 0)
            .map(|(k, n)| format!("{k} {n}"))
            .collect();
        out.push_str(&format!(
            "{:<24} {:>9} {:>8} {:>9} {:>7} {:>8} {:>8}  {}\n",
            r["route"].as_str().unwrap_or("?"),
            n("compared"),
            rate,
            n("mismatched"),
            n("errors"),
            n("timeouts"),
            "",
            if skipped.is_empty() {
                "-".into()
            } else {
                skipped.join(", ")
            }
        ));
        for p in r["top_patterns"].as_array().into_iter().flatten() {
            out.push_str(&format!(
                "    {:>7}  {}\n",
                p[1].as_u64().unwrap_or(0),
                p[0].as_str().unwrap_or("?")
            ));
        }
        for n in r["noise"].as_array().into_iter().flatten() {
            out.push_str(&format!(
                "    noise ({}): {} differed {} of {}\n",
                n["kind"].as_str().unwrap_or("?"),
                n["pattern"].as_str().unwrap_or("?"),
                n["differed"],
                n["of"]
            ));
        }
    }
    out
}

fn mismatch(m: &Value) -> String {
    let mut out = format!(
        "mismatch {} on route {} at {} (trace {})\n{} {}\n",
        m["id"],
        m["route"].as_str().unwrap_or("?"),
        m["at_ms"].as_i64().map_or_else(
            || "?".to_string(),
            |ms| strangler_events::envelope::rfc3339(
                ms.div_euclid(1000),
                u32::try_from(ms.rem_euclid(1000)).unwrap_or(0)
            )
        ),
        m["trace_id"].as_str().unwrap_or("-"),
        m["method"].as_str().unwrap_or("?"),
        m["path"].as_str().unwrap_or("?"),
    );
    for (title, side) in [("monolith", &m["expected"]), ("new service", &m["actual"])] {
        out.push_str(&format!(
            "\n{title}: {}{}\n{}\n",
            side["status"],
            if side["truncated"] == true {
                " (body cut at 64 KiB)"
            } else {
                ""
            },
            side["body"].as_str().unwrap_or("")
        ));
    }
    out.push_str("\ndifferences:\n");
    for d in m["differences"].as_array().into_iter().flatten() {
        out.push_str(&format!(
            "  {:<8} {}: {} → {}\n",
            d["kind"].as_str().unwrap_or("?"),
            d["location"].as_str().unwrap_or("?"),
            d.get("expected").map_or("(none)".into(), Value::to_string),
            d.get("actual").map_or("(none)".into(), Value::to_string),
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn the_summary_shows_rates_skips_patterns_and_noise() {
        let v = json!({"routes": [{
            "route": "orders-read", "compared": 4, "matched": 3, "mismatched": 1, "errors": 0,
            "timeouts": 0, "skipped": {"method": 2, "overloaded": 0}, "match_rate": 0.75,
            "top_patterns": [["$.total", 1]],
            "noise": [{"pattern": "$.at", "kind": "suspected", "differed": 10, "of": 10}]
        }]});
        let text = summary(&v);
        assert!(text.contains("orders-read"), "{text}");
        assert!(text.contains("75.00"), "{text}");
        assert!(
            text.contains("method 2") && !text.contains("overloaded"),
            "{text}"
        );
        assert!(text.contains("      1  $.total"), "{text}");
        assert!(
            text.contains("noise (suspected): $.at differed 10 of 10"),
            "{text}"
        );
        assert_eq!(
            summary(&json!({"routes": []})),
            "no route has a shadow section\n"
        );
    }

    #[test]
    fn a_mismatch_shows_both_answers_and_each_difference() {
        let m = json!({
            "id": 7, "route": "r", "at_ms": 1_796_041_672_437_i64, "trace_id": null, "method": "GET", "path": "/o/1",
            "expected": {"status": 200, "body": "{\"total\":10}", "truncated": false},
            "actual": {"status": 200, "body": "{\"total\":11}", "truncated": true},
            "differences": [{"kind": "value", "location": "$.total", "expected": 10, "actual": 11},
                            {"kind": "missing", "location": "$.x", "expected": 1}]
        });
        let text = mismatch(&m);
        assert!(text.contains("GET /o/1"), "{text}");
        assert!(
            text.starts_with("mismatch 7 on route r at 2026-11-30T12:27:52.437Z (trace -)"),
            "{text}"
        );
        assert!(
            text.contains("new service: 200 (body cut at 64 KiB)"),
            "{text}"
        );
        assert!(text.contains("value    $.total: 10 → 11"), "{text}");
        assert!(text.contains("missing  $.x: 1 → (none)"), "{text}");
    }
}
