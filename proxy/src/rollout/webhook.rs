//! The webhook gate: the controller POSTs the context's state and figures as JSON to the team's
//! URL; a 2xx answer within the timeout passes, anything else fails.

use std::time::Duration;

use strangler_rollout::{Evidence, State, Webhook};

/// Calls the webhook once: `Ok` for a 2xx, else why not.
pub(super) async fn call(
    w: &Webhook,
    context: &str,
    state: &State,
    e: &Evidence,
    step_requests: u64,
) -> Result<(), String> {
    let body = serde_json::json!({
        "context": context,
        "state": state,
        "figures": {
            "legacy": { "requests": e.legacy.requests, "errors": e.legacy.errors,
                        "p99_ms": e.legacy.latency.quantile_ms(0.99) },
            "service": { "requests": e.service.requests, "errors": e.service.errors,
                         "p99_ms": e.service.latency.quantile_ms(0.99) },
            "shadow": { "compared": e.shadow_compared, "matched": e.shadow_matched },
            "step_requests": step_requests,
        },
    });
    let timeout = Duration::from_millis(w.timeout_ms);
    let body = Some(("application/json", body.to_string().into()));
    let call = crate::client::call("POST", &w.url, body, None);
    match tokio::time::timeout(timeout, call).await {
        Ok(Ok(a)) if (200..300).contains(&a.status) => Ok(()),
        Ok(Ok(a)) => Err(format!("answered {}", a.status)),
        Ok(Err(e)) => Err(e),
        Err(_) => Err(format!("no answer within {timeout:?}")),
    }
}
