//! The `kinesis:` and `events:` sections: where events go and how the relay sends them.

use std::time::Duration;

use serde::Deserialize;
use serde_saphyr::Spanned;
use strangler_events::RelayConfig;
use strangler_rules::Reporter;

use super::values::{opt_duration, opt_size};

#[derive(Debug, Default, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct RawKinesis {
    #[serde(default)]
    region: Option<String>,
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    endpoint: Option<Spanned<String>>,
}

#[derive(Debug, Default, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct RawEvents {
    #[serde(default)]
    #[schemars(with = "Option<u32>")]
    max_attempts: Option<Spanned<u32>>,
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    max_age: Option<Spanned<String>>,
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    keep_published: Option<Spanned<String>>,
    #[serde(default)]
    redact_salt_env: Option<String>,
    #[serde(default)]
    aggregate: Vec<String>,
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    aggregate_max_bytes: Option<Spanned<String>>,
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    memory: Option<Spanned<String>>,
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    async_buffer: Option<Spanned<String>>,
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    max_backoff: Option<Spanned<String>>,
    #[serde(default)]
    #[schemars(with = "Option<u32>")]
    shard_records_per_second: Option<Spanned<u32>>,
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    shard_bytes_per_second: Option<Spanned<String>>,
}

/// The two sections, validated.
pub(super) struct Events {
    pub(super) region: Option<String>,
    pub(super) endpoint: Option<String>,
    pub(super) relay: RelayConfig,
    pub(super) async_buffer: usize,
    pub(super) redact_salt_env: String,
}

pub(super) fn validate(
    kinesis: Option<RawKinesis>,
    ev: Option<RawEvents>,
    r: &mut Reporter,
) -> Events {
    let kinesis = kinesis.unwrap_or_default();
    if let Some(e) = &kinesis.endpoint
        && !(e.value.starts_with("http://") || e.value.starts_with("https://"))
    {
        r.report(
            e.into(),
            "kinesis.endpoint",
            "the endpoint is a URL such as http://127.0.0.1:4567",
        );
    }
    let ev = ev.unwrap_or_default();
    let mut relay = RelayConfig::default();
    if let Some(m) = &ev.max_attempts {
        if m.value == 0 {
            r.report(
                m.into(),
                "events.max_attempts",
                "max_attempts must be at least 1",
            );
        }
        relay.max_attempts = m.value.max(1);
    }
    relay.max_age = opt_duration(ev.max_age.as_ref(), "events.max_age", relay.max_age, r);
    let keep = opt_duration(
        ev.keep_published.as_ref(),
        "events.keep_published",
        Duration::ZERO,
        r,
    );
    relay.keep_published = (!keep.is_zero()).then_some(keep);
    relay.aggregate = ev.aggregate;
    relay.aggregate_max_bytes = opt_size(
        ev.aggregate_max_bytes.as_ref(),
        "events.aggregate_max_bytes",
        relay.aggregate_max_bytes,
        1 << 10..=1000 << 10,
        "aggregate_max_bytes must be between 1KiB and 1000KiB (a Kinesis record holds at most 1 MiB)",
        r,
    );
    // Per-shard write limits: Kinesis's by default; 0 turns one off.
    if let Some(n) = &ev.shard_records_per_second {
        relay.shard_limits.records_per_second = n.value;
    }
    relay.shard_limits.bytes_per_second = opt_size(
        ev.shard_bytes_per_second.as_ref(),
        "events.shard_bytes_per_second",
        relay.shard_limits.bytes_per_second as usize,
        0..=usize::MAX,
        "shard_bytes_per_second is a size such as 1MiB (0: no bytes limit)",
        r,
    ) as u64;
    relay.memory = opt_size(
        ev.memory.as_ref(),
        "events.memory",
        relay.memory,
        8 << 20..=usize::MAX,
        "memory must be at least 8MiB (the relay's working set, the store's caches and the hand-off share it)",
        r,
    );
    let async_buffer = opt_size(
        ev.async_buffer.as_ref(),
        "events.async_buffer",
        relay.memory / 4,
        1 << 10..=usize::MAX,
        "async_buffer must be at least 1KiB",
        r,
    );
    relay.max_backoff = opt_duration(
        ev.max_backoff.as_ref(),
        "events.max_backoff",
        relay.max_backoff,
        r,
    );
    Events {
        region: kinesis.region,
        endpoint: kinesis.endpoint.map(|e| e.value),
        relay,
        async_buffer,
        redact_salt_env: ev
            .redact_salt_env
            .unwrap_or_else(|| "STRANGLER_REDACT_SALT".into()),
    }
}
