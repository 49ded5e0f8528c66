//! The comparison, off the request path: once the served answer is complete and the copy's is
//! in, the two are compared (`strangler-shadow`), noise is learned and left out, the result is
//! counted, and a mismatch goes to the store, redacted first.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::HeaderMap;
use strangler_rules::Shadow;
use strangler_shadow::{Answer, Difference, Kind};
use strangler_store::NewMismatch;
use strangler_store::mismatches::Message;

use super::{Answers, Captured, Copied, ShadowCtx, Shadowing};

/// Patterns labelled per route in `strangler_shadow_differences_total`; the rest are `other`.
const PATTERN_LABELS: usize = 50;

/// What the comparison needs of the request.
pub struct ComparedRequest {
    pub route: String,
    /// The route's context, when it has one (a rollout's match-rate gate counts its results).
    pub context: Option<std::sync::Arc<str>>,
    pub method: String,
    pub path: String,
    pub trace_id: Option<String>,
    /// As the copy carried them (stripped headers left out).
    pub headers: HeaderMap,
    pub body: Bytes,
    /// How long the served answer took.
    pub served_in: Duration,
}

impl Shadowing {
    /// Compares the served answer in `ctx` with its copy's, in a task of its own.
    pub fn settle(
        self: &Arc<Self>,
        ctx: Box<ShadowCtx>,
        shadow: Arc<Shadow>,
        req: ComparedRequest,
    ) {
        let ctx = *ctx;
        let Some(answer) = ctx.answer else {
            return; // never sent: its skip is counted already
        };
        let this = Arc::clone(self);
        self.rt.spawn(async move {
            let answers = answer.await.unwrap_or_else(|_| Answers {
                copy: Copied::Error("the copy's task ended".into()),
                secondary: None,
            });
            this.compare(
                answers,
                ctx.served,
                ctx.served_too_large,
                ctx.to_service,
                &shadow,
                req,
            );
        });
    }

    fn compare(
        &self,
        answers: Answers,
        served: Captured,
        served_too_large: bool,
        copy_to_service: bool,
        shadow: &Shadow,
        req: ComparedRequest,
    ) {
        let m = &self.metrics;
        let route = req.route.as_str();
        m.duration
            .with_label_values(&[route, "served"])
            .observe(req.served_in.as_secs_f64());
        let copy = match answers.copy {
            Copied::Answer(copy, took) => {
                m.duration
                    .with_label_values(&[route, "shadow"])
                    .observe(took.as_secs_f64());
                copy
            }
            Copied::Timeout => return self.result(route, "timeout"),
            Copied::Error(e) => {
                tracing::debug!(route, error = %e, "Shadow copy failed");
                return self.result(route, "error");
            }
            Copied::TooLarge => return self.skipped(route, "too_large"),
        };
        if served_too_large {
            return self.skipped(route, "too_large");
        }
        // The monolith's answer is the expected one, whichever side served.
        let (expected, actual) = if copy_to_service {
            (served, copy)
        } else {
            (copy, served)
        };
        fn answer(c: &Captured) -> Answer<'_> {
            Answer {
                status: c.status,
                headers: &c.headers,
                body: &c.body,
            }
        }
        let secondary = answers.secondary.and_then(|c| match c {
            Copied::Answer(answer, _) => Some(answer),
            other => {
                tracing::debug!(route, answer = ?other, "No answer from the secondary");
                None
            }
        });
        // Whatever differs between the two monolith answers is noise (Diffy's primary and
        // secondary, kept per field).
        let monolith_noise = secondary.and_then(|sec| {
            strangler_shadow::compare(&answer(&expected), &answer(&sec), &shadow.compare).ok()
        });
        let diffs = match strangler_shadow::compare(
            &answer(&expected),
            &answer(&actual),
            &shadow.compare,
        ) {
            Ok(d) => d,
            Err(e) => {
                tracing::debug!(route, error = %e, "Shadow answers not comparable");
                return self.skipped(route, "not_comparable");
            }
        };
        let kept = self.with_route(route, |s| {
            if let Some(n) = &monolith_noise {
                s.noise.learn(n);
            }
            s.noise.observe(&diffs);
            s.noise.split(diffs, shadow.exclude_suspected).0
        });
        if let Some(c) = req.context.as_deref()
            && self.rollouts.tracks(c)
        {
            self.rollouts.record_shadow(c, kept.is_empty());
        }
        if kept.is_empty() {
            return self.result(route, "match");
        }
        self.result(route, "mismatch");
        self.count_patterns(route, &kept);
        self.store(shadow, req, &expected, &actual, &kept);
    }

    fn result(&self, route: &str, result: &str) {
        self.metrics
            .compared
            .with_label_values(&[route, result])
            .inc();
        if result == "match" || result == "mismatch" {
            let now = super::now_secs();
            let ratio = self.with_route(route, |s| {
                s.window.record(now, result == "match");
                s.window.ratio(now)
            });
            if let Some(r) = ratio {
                self.metrics.match_ratio.with_label_values(&[route]).set(r);
            }
        }
    }

    fn count_patterns(&self, route: &str, diffs: &[Difference]) {
        // The label of each difference: its pattern while the route has fewer than
        // `PATTERN_LABELS`, `other` past that.
        let labels: Vec<&str> = self.with_route(route, |s| {
            diffs
                .iter()
                .map(|d| {
                    if s.labelled.contains(&d.pattern) {
                        d.pattern.as_str()
                    } else if s.labelled.len() < PATTERN_LABELS {
                        s.labelled.push(d.pattern.clone());
                        d.pattern.as_str()
                    } else {
                        "other"
                    }
                })
                .collect()
        });
        for label in labels {
            self.metrics
                .differences
                .with_label_values(&[route, label])
                .inc();
        }
    }

    /// Queues the mismatch for the store, bodies redacted (and the differences' values with
    /// them: they are taken from the redacted documents).
    fn store(
        &self,
        shadow: &Shadow,
        req: ComparedRequest,
        expected: &Captured,
        actual: &Captured,
        kept: &[Difference],
    ) {
        // Bodies are stored decoded (people read them; the differ decoded them anyway), with
        // their content coding noted instead (`x-strangler-decoded-from`); one that cannot be
        // decoded is stored as it came. Redacted bodies are JSON with the redactions applied.
        let decoded = |body: &[u8], headers: &HeaderMap| -> Option<Vec<u8>> {
            headers.get(http::header::CONTENT_ENCODING)?;
            strangler_shadow::decode::decode(headers, body, shadow.body_limit)
                .ok()
                .map(std::borrow::Cow::into_owned)
        };
        let redact = |body: &[u8], headers: &HeaderMap| -> (Vec<u8>, bool) {
            let plain = decoded(body, headers);
            if shadow.redact.is_empty() {
                let was_decoded = plain.is_some();
                return (plain.unwrap_or_else(|| body.to_vec()), was_decoded);
            }
            match serde_json::from_slice::<serde_json::Value>(plain.as_deref().unwrap_or(body)) {
                Ok(mut v) => {
                    for r in &shadow.redact {
                        strangler_rules::publish::redact(&mut v, r, &*self.hash);
                    }
                    (v.to_string().into_bytes(), true)
                }
                // Not JSON: nothing can be redacted in it, so it is not kept.
                Err(_) => (Vec::new(), true),
            }
        };
        // Credentials are never stored: their headers are kept, masked.
        let headers_of = |h: &HeaderMap, was_decoded: bool| -> Vec<(String, String)> {
            let mut out: Vec<(String, String)> = h
                .iter()
                .filter(|(k, _)| !was_decoded || *k != http::header::CONTENT_ENCODING)
                .map(|(k, v)| {
                    let value = if is_credential(k.as_str()) {
                        MASKED.to_string()
                    } else {
                        String::from_utf8_lossy(v.as_bytes()).into_owned()
                    };
                    (k.as_str().to_string(), value)
                })
                .collect();
            if was_decoded {
                let codings: Vec<&str> = h
                    .get_all(http::header::CONTENT_ENCODING)
                    .iter()
                    .filter_map(|v| v.to_str().ok())
                    .collect();
                if !codings.is_empty() {
                    out.push(("x-strangler-decoded-from".into(), codings.join(", ")));
                }
            }
            out
        };
        let message = |status: u16, h: &HeaderMap, (body, was_decoded): (Vec<u8>, bool)| Message {
            status,
            headers: headers_of(h, was_decoded),
            body,
            truncated: false,
        };
        let (eb, ab) = (
            redact(&expected.body, &expected.headers),
            redact(&actual.body, &actual.headers),
        );
        let mut differences = if shadow.redact.is_empty() {
            kept.to_vec()
        } else {
            redacted_differences(kept, &eb.0, &ab.0, shadow)
        };
        for d in &mut differences {
            if d.kind == Kind::Header
                && d.location
                    .strip_prefix("header:")
                    .is_some_and(is_credential)
            {
                let mask = |v: &mut Option<serde_json::Value>| {
                    if v.is_some() {
                        *v = Some(MASKED.into());
                    }
                };
                mask(&mut d.expected);
                mask(&mut d.actual);
            }
        }
        let mut patterns: Vec<String> = kept.iter().map(|d| d.pattern.clone()).collect();
        patterns.sort();
        patterns.dedup();
        let mismatch = NewMismatch {
            route: req.route,
            at_ms: strangler_store::now_ms(),
            trace_id: req.trace_id,
            method: req.method,
            path: req.path,
            request: message(0, &req.headers, redact(&req.body, &req.headers)),
            expected: message(expected.status, &expected.headers, eb),
            actual: message(actual.status, &actual.headers, ab),
            differences: serde_json::to_value(differences).unwrap_or_default(),
            patterns,
        };
        if self.writer.try_send(mismatch).is_err() {
            self.metrics.store_failures.inc();
        }
    }
}

/// What a stored credential header says instead of its value.
const MASKED: &str = "[masked by strangler]";

/// Headers that carry credentials: stored masked, whatever the route's settings (a shadow copy
/// still carries them to the other side unless `strip_headers` says otherwise).
fn is_credential(name: &str) -> bool {
    [
        "authorization",
        "proxy-authorization",
        "cookie",
        "set-cookie",
    ]
    .iter()
    .any(|c| name.eq_ignore_ascii_case(c))
}

/// The kept differences with their values taken from the redacted bodies: a redacted place has
/// no value to show.
fn redacted_differences(
    kept: &[Difference],
    expected: &[u8],
    actual: &[u8],
    shadow: &Shadow,
) -> Vec<Difference> {
    let parse = |b: &[u8]| serde_json::from_slice::<serde_json::Value>(b).ok();
    let (Some(e), Some(a)) = (parse(expected), parse(actual)) else {
        return kept
            .iter()
            .map(|d| Difference {
                expected: None,
                actual: None,
                ..d.clone()
            })
            .collect();
    };
    let visible = strangler_shadow::json::diff(&e, &a, &shadow.compare.json);
    kept.iter()
        .map(
            |d| match visible.iter().find(|v| v.location == d.location) {
                // The status and headers are not redacted.
                _ if matches!(d.kind, Kind::Status | Kind::Header) => d.clone(),
                Some(v) => v.clone(),
                None => Difference {
                    expected: None,
                    actual: None,
                    ..d.clone()
                },
            },
        )
        .collect()
}
