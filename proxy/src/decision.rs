//! One routing decision per request, made once in `request_filter` from the rules' outcome:
//! which route matched, which side serves it, the upstream, the rewritten path, and what a
//! publishing route keeps for its event, and whether a shadow copy goes to the other side.
//! Every later phase reads it; nothing else in the request's state says where it goes.

use std::borrow::Cow;
use std::sync::Arc;

use bytes::Bytes;
use strangler_rules::shadow::{CopyTo, NoCopy};
use strangler_rules::{Body, Choice, Outcome, Request, Side, Target};

use crate::rollout::Rollouts;
use crate::upstream::{Serving, UpstreamPeer, Upstreams};

/// Where one request goes.
pub struct Decision {
    /// Index of the matched route in the rule set, `None` for the default route.
    pub route: Option<usize>,
    pub serving: Serving,
    /// How the side was chosen (for the access log).
    pub choice: Choice,
    pub upstream: Arc<UpstreamPeer>,
    /// Rewritten path and query for the upstream, when the rewrite changed it.
    pub rewrite: Option<String>,
    /// Kept for the event when the route publishes.
    pub publish: Option<PublishCtx>,
    /// When the route shadows: whether this request is copied, and to the new service
    /// (`Ok(true)`) or to the monolith (`Ok(false)`).
    pub shadow: Option<Result<bool, NoCopy>>,
}

/// What a publishing route keeps of the request until the response is known.
pub struct PublishCtx {
    pub body: Option<Bytes>,
    pub json: Option<serde_json::Value>,
    pub params: Vec<(String, String)>,
    pub sticky: Option<String>,
    /// The event uses the response body: strangler forwards this request itself.
    pub response_body: bool,
}

impl Decision {
    /// The decision for a request the rules matched (or did not: the default route to the
    /// monolith). The sticky key is extracted once, for both the side and the event; the weight
    /// in force (`rollouts`: a rollout's, the kill switch's, else the rule's) decides the side.
    pub fn new(
        upstreams: &Upstreams,
        rollouts: &Rollouts,
        req: &Request<'_>,
        outcome: Outcome<'_>,
        body: Body<'_>,
        random: u64,
    ) -> Decision {
        let Outcome::Matched { id, route, params } = outcome else {
            return Decision {
                route: None,
                serving: Serving::Legacy,
                choice: Choice::Fixed,
                upstream: Arc::clone(upstreams.get(None)),
                rewrite: None,
                publish: None,
                shadow: None,
            };
        };
        let key = route.sticky_key(req, &params, body);
        let (side, choice) = route.decide(rollouts.weight(route), key.as_deref(), random);
        let (serving, service, rewrite) = match (side, &route.target) {
            (Side::Service(name), Target::Service(t)) => {
                let rewrite = t.rewrite.as_ref().and_then(|rw| {
                    let path = rw.apply(req.path);
                    (path != req.path).then(|| match req.query {
                        Some(q) => format!("{path}?{q}"),
                        None => path.into_owned(),
                    })
                });
                (Serving::Service, Some(name), rewrite)
            }
            _ => (Serving::Legacy, None, None),
        };
        let shadow = route.shadow.as_ref().map(|s| {
            s.copy_to(
                req.method,
                serving == Serving::Service,
                key.as_deref(),
                sample_random(random),
            )
            .map(|to| matches!(to, CopyTo::Service(_)))
        });
        // Last: the event keeps the sticky key itself.
        let publish = route.publish.as_ref().map(|p| PublishCtx {
            body: None,
            json: None,
            params: params
                .0
                .iter()
                .map(|(k, v)| ((*k).to_string(), (*v).to_string()))
                .collect(),
            sticky: key.map(Cow::into_owned),
            response_body: p.needs_response_body(),
        });
        Decision {
            route: Some(id),
            serving,
            choice,
            upstream: Arc::clone(upstreams.get(service)),
            rewrite,
            publish,
            shadow,
        }
    }
}

/// The random value the shadow sample uses when a request has no sticky key: drawn apart from
/// the side's, since reusing it would copy requests of one side only (at weight 30 and sample
/// 20, every sampled request would be one the new service serves).
fn sample_random(random: u64) -> u64 {
    random.wrapping_mul(0x9E37_79B9_7F4A_7C15).rotate_left(31)
}

#[cfg(test)]
mod tests {
    use strangler_rules::sticky::{random_bucket, to_new};

    use super::sample_random;

    #[test]
    fn the_sample_does_not_follow_the_side() {
        // Weight 30, sample 20: about 20 % of each side's requests are sampled.
        let (mut legacy, mut legacy_sampled, mut new, mut new_sampled) = (0, 0, 0, 0);
        let mut x = 0x1234_5678_9abc_def0_u64;
        for _ in 0..20_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let sampled = to_new(random_bucket(sample_random(x)), 2_000);
            if to_new(random_bucket(x), 3_000) {
                new += 1;
                new_sampled += usize::from(sampled);
            } else {
                legacy += 1;
                legacy_sampled += usize::from(sampled);
            }
        }
        let share = |s: usize, n: usize| s as f64 / n as f64;
        assert!(
            (0.17..0.23).contains(&share(legacy_sampled, legacy)),
            "{legacy_sampled}/{legacy}"
        );
        assert!(
            (0.17..0.23).contains(&share(new_sampled, new)),
            "{new_sampled}/{new}"
        );
    }
}
