//! The `shadow` section of a route, compiled: which requests are copied to the side that did not
//! serve the client, what the copy leaves out, and how the two answers are compared
//! (`strangler-shadow`'s rules). Pure: the proxy sends the copies and runs the comparison.

use http::{HeaderName, Method};

use crate::publish::Redact;
use crate::sticky;

/// Methods copied when the rule lists none: the safe ones (RFC 9110 §9.2.1).
pub const SAFE_METHODS: [Method; 4] = [Method::GET, Method::HEAD, Method::OPTIONS, Method::TRACE];

/// Every copy carries this header (value `1`), so a service can tell shadow traffic apart.
pub const SHADOW_HEADER: &str = "x-strangler-shadow";

/// A compiled `shadow` section.
#[derive(Debug, Clone)]
pub struct Shadow {
    /// The new service compared with the monolith.
    pub service: String,
    /// Share of matching requests copied, in basis points.
    pub sample_bp: u16,
    /// Copied methods.
    pub methods: Vec<Method>,
    /// Never sent with a copy.
    pub strip_headers: Vec<HeaderName>,
    pub compare: strangler_shadow::Rules,
    /// A second monolith instance: fields that differ between the two monolith answers are
    /// noise.
    pub secondary: Option<String>,
    /// Leave suspected noise (learned without a secondary) out of mismatches as well.
    pub exclude_suspected: bool,
    /// Copies in flight at most for the route; past it a copy is skipped (`overloaded`).
    pub in_flight: u32,
    /// The largest body (request or answer) a copy carries or compares; past it the copy is
    /// skipped (`too_large`).
    pub body_limit: usize,
    /// Redacted before a mismatch is stored.
    pub redact: Vec<Redact>,
    /// The sampling hash's salt (`<route>/shadow`): apart from the side choice's, so the sample
    /// is not the same users as the new service's share.
    pub salt: String,
}

/// Where a copy of a request goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CopyTo<'s> {
    /// The new service (the monolith served the client).
    Service(&'s str),
    /// The monolith (the new service served the client; safe methods only).
    Legacy,
}

/// Why a request is not copied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoCopy {
    /// The method is not listed (or, towards the monolith, not safe).
    Method,
    /// Not in the sample.
    Sample,
}

impl Shadow {
    /// Whether and where a request that `served_by_service` (or the monolith) is copied.
    /// `key` is the route's sticky key: the same keys are sampled every time; without one
    /// `random` decides.
    pub fn copy_to(
        &self,
        method: &Method,
        served_by_service: bool,
        key: Option<&str>,
        random: u64,
    ) -> Result<CopyTo<'_>, NoCopy> {
        if !self.methods.contains(method) {
            return Err(NoCopy::Method);
        }
        // A write must never reach the monolith twice.
        if served_by_service && !SAFE_METHODS.contains(method) {
            return Err(NoCopy::Method);
        }
        let bucket = match key {
            Some(k) => sticky::bucket(&self.salt, k.as_bytes()),
            None => sticky::random_bucket(random),
        };
        if !sticky::to_new(bucket, self.sample_bp) {
            return Err(NoCopy::Sample);
        }
        Ok(if served_by_service {
            CopyTo::Legacy
        } else {
            CopyTo::Service(&self.service)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shadow(sample_bp: u16, methods: &[Method]) -> Shadow {
        Shadow {
            service: "orders".into(),
            sample_bp,
            methods: methods.to_vec(),
            strip_headers: Vec::new(),
            compare: strangler_shadow::Rules::default(),
            secondary: None,
            exclude_suspected: false,
            in_flight: 64,
            body_limit: 1 << 20,
            redact: Vec::new(),
            salt: "r/shadow".into(),
        }
    }

    #[test]
    fn copies_go_to_the_other_side_and_writes_never_to_the_monolith() {
        let s = shadow(10_000, &[Method::GET, Method::POST]);
        assert_eq!(
            s.copy_to(&Method::GET, false, None, 0),
            Ok(CopyTo::Service("orders"))
        );
        assert_eq!(s.copy_to(&Method::GET, true, None, 0), Ok(CopyTo::Legacy));
        assert_eq!(
            s.copy_to(&Method::POST, false, None, 0),
            Ok(CopyTo::Service("orders"))
        );
        assert_eq!(s.copy_to(&Method::POST, true, None, 0), Err(NoCopy::Method));
        assert_eq!(s.copy_to(&Method::PUT, false, None, 0), Err(NoCopy::Method));
    }

    #[test]
    fn sampling_is_stable_per_key() {
        let s = shadow(2_000, &SAFE_METHODS);
        let mut sampled = 0;
        for u in 0..1000 {
            let key = format!("user-{u}");
            let first = s.copy_to(&Method::GET, false, Some(&key), 1).is_ok();
            for random in [2, 99, 12345] {
                assert_eq!(
                    s.copy_to(&Method::GET, false, Some(&key), random).is_ok(),
                    first
                );
            }
            sampled += usize::from(first);
        }
        assert!((150..250).contains(&sampled), "{sampled} of 1000 at 20 %");
    }
}
