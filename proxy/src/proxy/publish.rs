//! A publishing route's event for one exchange: built from the request, the answer and what
//! the rules read, then stored in the outbox (`sync`: before the answer is released; `async`:
//! in the background, bounded).

use pingora::http::RequestHeader;
use strangler_rules::Params;
use strangler_rules::publish::{BodyValue, Durability, Exchange};

use super::{Ctx, Strangler, target};

impl Strangler {
    /// Records the exchange's event when the route publishes and the status matches `when_status`:
    /// `sync` waits for the outbox commit (so the client's answer is released after it), `async`
    /// stores it in the background. A failed outbox write is logged and counted
    /// (`strangler_events_failed_total{reason="outbox_write"}`) and the client still gets the
    /// monolith's answer: the monolith has already applied the write, and a 5xx would make
    /// clients retry a write that happened.
    pub(super) async fn emit(
        &self,
        req: &RequestHeader,
        ctx: &Ctx,
        status: u16,
        response_headers: &http::HeaderMap,
        response_body: BodyValue<'_>,
    ) {
        let (Some(route), Some(pc)) = (ctx.route(), ctx.publish()) else {
            return;
        };
        let Some(publish) = &route.publish else {
            return;
        };
        if !publish.publishes(status) {
            return;
        }
        let view = target::view(req);
        let params = Params(
            pc.params
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect(),
        );
        let request_body = match (&pc.json, &pc.body) {
            (Some(v), _) => BodyValue::Json(v),
            (None, Some(b)) => BodyValue::Raw(b),
            (None, None) => BodyValue::Absent,
        };
        let ex = Exchange {
            request: &view,
            params: &params,
            request_body,
            request_json_text: pc.json.as_ref().and(pc.body.as_deref()),
            status,
            response_headers,
            response_body,
            sticky_key: pc.sticky.as_deref(),
        };
        let event = self
            .dual_write
            .event(&route.name, publish, &ex, ctx.traceparent.as_deref());
        match publish.durability {
            Durability::Sync => {
                let _ = self.dual_write.enqueue(event).await;
            }
            Durability::Async => self.dual_write.enqueue_async(event),
        }
    }
}
