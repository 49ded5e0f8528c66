//! What a handler is given: one CloudEvent taken out of a Kinesis record (a KPL aggregate holds
//! many), with where it was read. Pure code: bytes in, events out.

use strangler_wire::Envelope;

/// One event, as published by strangler (CloudEvents 1.0, structured JSON) or by anyone who
/// writes the same envelope, with where it was read. Its attributes are the envelope's
/// (`event.id`, `event.ty`, `event.data`, … through `Deref`; `event.whole` is the whole JSON,
/// extensions such as `traceparent` included). The consumer applies each `id` once.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    pub envelope: Envelope,
    pub shard_id: String,
    pub partition_key: String,
    pub sequence_number: String,
    /// The event's place in its Kinesis record when that record is a KPL aggregate.
    pub sub_sequence_number: Option<u32>,
}

impl std::ops::Deref for Event {
    type Target = Envelope;
    fn deref(&self) -> &Envelope {
        &self.envelope
    }
}

/// A record that is not an event the consumer can apply (it is passed over, logged and counted,
/// never handed to the handler).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unreadable {
    pub sequence_number: String,
    pub sub_sequence_number: Option<u32>,
    pub reason: String,
}

/// Where a record was read: the shard (and its hash key range, when known), its sequence number
/// and its own partition key.
#[derive(Debug, Clone, Copy)]
pub struct Origin<'a> {
    pub shard_id: &'a str,
    pub hash_range: Option<(u128, u128)>,
    pub sequence_number: &'a str,
    pub partition_key: &'a str,
}

/// The events in one Kinesis record, in order: an aggregate taken apart, or the record itself.
/// A record that looks aggregated but does not decode, or an event without an `id` or that is
/// not JSON, becomes an [`Unreadable`].
///
/// An aggregate's event whose key (its explicit hash key, else its partition key's MD5) falls
/// outside the shard's hash range is left out and counted (the second value): it landed here
/// because the producer's shard map was out of date after a reshard, and the producer sends it
/// again to its own shard (strangler's relay and the KPL do). This is the KCL's rule too.
pub fn from_record(origin: Origin<'_>, data: &[u8]) -> (Vec<Result<Event, Unreadable>>, usize) {
    let unreadable = |sub: Option<u32>, reason: String| Unreadable {
        sequence_number: origin.sequence_number.to_string(),
        sub_sequence_number: sub,
        reason,
    };
    match strangler_wire::aggregate::decode(data) {
        Ok(None) => (vec![parse(origin, origin.partition_key, None, data)], 0),
        Ok(Some(records)) => {
            let mut misplaced = 0;
            let events = records
                .iter()
                .enumerate()
                .filter(|(_, r)| {
                    let here = in_range(origin.hash_range, r);
                    misplaced += usize::from(!here);
                    here
                })
                .map(|(i, r)| {
                    let sub = u32::try_from(i).ok();
                    parse(origin, &r.partition_key, sub, &r.data)
                })
                .collect();
            (events, misplaced)
        }
        Err(e) => (vec![Err(unreadable(None, e.to_string()))], 0),
    }
}

/// Whether an aggregate's event belongs to the shard's hash key range (true when the range is
/// not known).
fn in_range(range: Option<(u128, u128)>, r: &strangler_wire::aggregate::UserRecord) -> bool {
    let Some((lo, hi)) = range else {
        return true;
    };
    let hash = r
        .explicit_hash_key
        .as_deref()
        .and_then(|h| h.parse::<u128>().ok())
        .unwrap_or_else(|| strangler_wire::aggregate::hash_key(&r.partition_key));
    (lo..=hi).contains(&hash)
}

fn parse(
    origin: Origin<'_>,
    partition_key: &str,
    sub: Option<u32>,
    data: &[u8],
) -> Result<Event, Unreadable> {
    let unreadable = |reason: String| Unreadable {
        sequence_number: origin.sequence_number.to_string(),
        sub_sequence_number: sub,
        reason,
    };
    let envelope = strangler_wire::envelope::read(data).map_err(|e| unreadable(e.to_string()))?;
    Ok(Event {
        envelope,
        shard_id: origin.shard_id.to_string(),
        partition_key: partition_key.to_string(),
        sequence_number: origin.sequence_number.to_string(),
        sub_sequence_number: sub,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use strangler_wire::aggregate::Builder;

    const ORIGIN: Origin<'static> = Origin {
        shard_id: "shardId-000000000000",
        hash_range: None,
        sequence_number: "4960",
        partition_key: "alice",
    };

    fn event(id: &str) -> Vec<u8> {
        serde_json::to_vec(&serde_json::json!({
            "specversion": "1.0", "id": id, "source": "shop/orders", "type": "ORDER_CREATED",
            "time": "2026-11-30T10:00:00.000Z", "datacontenttype": "application/json",
            "data": {"order_id": 7}
        }))
        .unwrap()
    }

    #[test]
    fn a_plain_record_is_one_event() {
        let (got, _) = from_record(ORIGIN, &event("a"));
        let e = got[0].as_ref().unwrap();
        assert_eq!(
            (e.id.as_str(), e.ty.as_str(), e.partition_key.as_str()),
            ("a", "ORDER_CREATED", "alice")
        );
        assert_eq!(e.data["order_id"], 7);
        assert_eq!(e.sub_sequence_number, None);
    }

    #[test]
    fn an_aggregate_is_taken_apart_in_order_with_each_events_key() {
        let mut b = Builder::default();
        b.push("bob", &event("x"));
        b.push("carol", &event("y"));
        let got: Vec<_> = from_record(ORIGIN, &b.finish())
            .0
            .into_iter()
            .map(Result::unwrap)
            .map(|e| (e.envelope.id, e.partition_key, e.sub_sequence_number))
            .collect();
        assert_eq!(
            got,
            [
                ("x".into(), "bob".into(), Some(0)),
                ("y".into(), "carol".into(), Some(1))
            ]
        );
    }

    #[test]
    fn an_aggregates_events_outside_the_shards_range_are_left_out() {
        let (bob, carol) = (
            strangler_wire::aggregate::hash_key("bob"),
            strangler_wire::aggregate::hash_key("carol"),
        );
        let mut b = Builder::default();
        b.push("bob", &event("x"));
        b.push("carol", &event("y"));
        let record = b.finish();
        let only_bob = Origin {
            hash_range: Some((bob, bob)),
            ..ORIGIN
        };
        let (got, misplaced) = from_record(only_bob, &record);
        let ids: Vec<_> = got.into_iter().map(|e| e.unwrap().envelope.id).collect();
        assert_eq!((ids, misplaced), (vec!["x".to_string()], 1));
        let both = Origin {
            hash_range: Some((bob.min(carol), bob.max(carol))),
            ..ORIGIN
        };
        assert_eq!(
            from_record(both, &record),
            (from_record(ORIGIN, &record).0, 0)
        );
        // A plain record is where Kinesis put it by its own key: never left out.
        let nowhere = Origin {
            hash_range: Some((0, 0)),
            ..ORIGIN
        };
        assert_eq!(from_record(nowhere, &event("z")).1, 0);
    }

    #[test]
    fn what_is_not_an_event_is_unreadable_with_a_reason() {
        for (data, reason) in [
            (&b"hello"[..], "not JSON"),
            (br#"{"specversion":"1.0","type":"X"}"#, "without an id"),
            (br#"{"id":"1","type":"X"}"#, "specversion"),
            (br#"[1,2]"#, "not a CloudEvent"),
        ] {
            let (got, _) = from_record(ORIGIN, data);
            let err = got[0].as_ref().unwrap_err();
            assert!(err.reason.contains(reason), "{data:?}: {}", err.reason);
            assert_eq!(err.sequence_number, "4960");
        }
    }

    /// What the relay writes is what the consumer reads: events built and serialised with
    /// `strangler-wire`, sent one per record or packed into an aggregate, come back from
    /// `from_record` the same, in order, each with its own partition key.
    mod round_trip {
        use super::*;
        use proptest::prelude::*;
        use serde_json::Value;
        use strangler_wire::{CloudEvent, Data};

        fn json() -> impl Strategy<Value = Value> {
            let leaf = prop_oneof![
                Just(Value::Null),
                any::<bool>().prop_map(Value::Bool),
                any::<i64>().prop_map(Value::from),
                "[a-zA-Z0-9 é\\\\\"\u{1F600}]{0,12}".prop_map(Value::from),
            ];
            leaf.prop_recursive(3, 24, 4, |inner| {
                prop_oneof![
                    prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                    prop::collection::btree_map("[a-z_]{1,6}", inner, 0..4)
                        .prop_map(|m| Value::Object(m.into_iter().collect())),
                ]
            })
        }

        prop_compose! {
            fn event()(
                source in "[a-z/]{1,12}",
                ty in "[A-Z_]{1,16}",
                subject in proptest::option::of("[a-z0-9-]{1,10}"),
                traceparent in proptest::option::of("00-[0-9a-f]{32}-[0-9a-f]{16}-01"),
                data in json(),
                key in "[a-z0-9]{1,8}",
            ) -> (String, CloudEvent<Data<'static>>) {
                let mut e = CloudEvent::new(source, ty, Data::Value(data));
                e.subject = subject;
                e.traceparent = traceparent;
                (key, e)
            }
        }

        fn same(got: &Event, key: &str, sent: &CloudEvent<Data<'_>>, sub: Option<u32>) {
            let Data::Value(data) = &sent.data else {
                unreachable!()
            };
            assert_eq!(
                (
                    &got.id,
                    &got.source,
                    &got.ty,
                    &got.subject,
                    &got.time,
                    &got.data
                ),
                (
                    &sent.id,
                    &sent.source,
                    &sent.ty,
                    &sent.subject,
                    &sent.time,
                    data
                )
            );
            assert_eq!(
                got.whole["traceparent"].as_str(),
                sent.traceparent.as_deref()
            );
            assert_eq!(
                (got.partition_key.as_str(), got.sub_sequence_number),
                (key, sub)
            );
        }

        proptest! {
            #[test]
            fn event_to_record_to_aggregate_and_back(events in prop::collection::vec(event(), 1..8)) {
                // One per record.
                for (key, e) in &events {
                    let origin = Origin { partition_key: key, ..ORIGIN };
                    let (got, misplaced) = from_record(origin, &e.to_bytes());
                    prop_assert_eq!(misplaced, 0);
                    same(got[0].as_ref().unwrap(), key, e, None);
                }
                // All in one aggregate.
                let mut b = Builder::default();
                for (key, e) in &events {
                    b.push(key, &e.to_bytes());
                }
                let (got, misplaced) = from_record(ORIGIN, &b.finish());
                prop_assert_eq!((got.len(), misplaced), (events.len(), 0));
                for (i, ((key, e), g)) in events.iter().zip(&got).enumerate() {
                    same(g.as_ref().unwrap(), key, e, Some(i as u32));
                }
            }
        }
    }
}
