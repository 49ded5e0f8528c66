//! The `publish` section of a route: which event a matching exchange becomes — stream, type,
//! source, subject, partition key and data, each a literal or a reference into the request or the
//! monolith's response — when it is published (`when_status`), and what is redacted before the
//! event is stored or sent. Pure: building an event's fields from an exchange happens here; the
//! envelope, the outbox and Kinesis live in `strangler-events`.

use http::{HeaderMap, HeaderName};
use jsonpath_rust::JsonPath;
use jsonpath_rust::parser::model::JpQuery;
use jsonpath_rust::query::queryable::Queryable;
use serde_json::Value;

use crate::request::{Params, Request, query_param};

/// A compiled `publish` section.
#[derive(Debug)]
pub struct Publish {
    pub stream: String,
    pub ty: String,
    pub source: String,
    pub subject: Option<ValueRef>,
    /// `None`: the route's sticky key, or the event id when there is none.
    pub partition_key: Option<ValueRef>,
    pub data: Data,
    /// Status classes/codes that publish (default 2xx).
    pub when_status: Vec<StatusMatch>,
    pub redact: Vec<Redact>,
    pub durability: Durability,
}

#[derive(Debug)]
pub enum ValueRef {
    Literal(Value),
    RequestBody { source: String, query: JpQuery },
    RequestHeader(HeaderName),
    RequestQuery(String),
    PathParam(String),
    RequestPath,
    RequestMethod,
    ResponseStatus,
    ResponseHeader(HeaderName),
    ResponseBody { source: String, query: JpQuery },
    StickyKey,
}

#[derive(Debug)]
pub enum Data {
    One(ValueRef),
    Object(Vec<(String, ValueRef)>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatusMatch {
    Code(u16),
    /// 2 for 2xx.
    Class(u16),
}

#[derive(Debug, Clone)]
pub struct Redact {
    pub jsonpath: String,
    pub hash: bool,
}

/// When the event is durable relative to the client's response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// Committed to the outbox before the response is released (default).
    Sync,
    /// The response goes out at once; the event follows (lost if the process dies in between).
    Async,
}

/// One exchange, as far as events are concerned.
#[derive(Debug, Clone, Copy)]
pub struct Exchange<'a> {
    pub request: &'a Request<'a>,
    pub params: &'a Params<'a>,
    /// The request body: parsed JSON, or the raw bytes when it is not JSON.
    pub request_body: BodyValue<'a>,
    /// The request body's text when it parsed as JSON: an event whose data is the whole body,
    /// unredacted, carries this text as it came instead of re-encoding the parsed value.
    pub request_json_text: Option<&'a [u8]>,
    pub status: u16,
    pub response_headers: &'a HeaderMap,
    pub response_body: BodyValue<'a>,
    pub sticky_key: Option<&'a str>,
}

#[derive(Debug, Clone, Copy)]
pub enum BodyValue<'a> {
    Json(&'a Value),
    /// Not JSON: `$` gives the text (UTF-8, lossy); any other path gives null.
    Raw(&'a [u8]),
    Absent,
}

/// The fields of one event, redacted.
#[derive(Debug, Clone, PartialEq)]
pub struct EventFields<'a> {
    pub subject: Option<String>,
    pub partition_key: Option<String>,
    pub data: EventData<'a>,
}

/// An event's `data`.
#[derive(Debug, Clone, PartialEq)]
pub enum EventData<'a> {
    Value(Value),
    /// The request body's JSON text, as it came (see `Exchange::request_json_text`).
    JsonText(&'a [u8]),
}

impl Publish {
    /// Whether `status` publishes.
    pub fn publishes(&self, status: u16) -> bool {
        self.when_status.iter().any(|m| match m {
            StatusMatch::Code(c) => *c == status,
            StatusMatch::Class(c) => status / 100 == *c,
        })
    }

    pub fn needs_request_body(&self) -> bool {
        self.refs()
            .any(|r| matches!(r, ValueRef::RequestBody { .. }))
    }

    pub fn needs_response_body(&self) -> bool {
        self.refs()
            .any(|r| matches!(r, ValueRef::ResponseBody { .. }))
    }

    /// True when the data is the whole request body, unredacted: the event carries the
    /// request's JSON text as it came (`Exchange::request_json_text`), no parsed tree.
    fn data_is_request_text(&self) -> bool {
        matches!(&self.data, Data::One(ValueRef::RequestBody { source, .. }) if source == "$")
            && self.redact.is_empty()
    }

    /// Adds the request-body paths the event reads from a parsed body to `p`.
    pub(crate) fn add_body_paths(&self, p: &mut crate::Projection) {
        let data = (!self.data_is_request_text()).then_some(&self.data);
        for r in self.refs_of(data) {
            if let ValueRef::RequestBody { query, .. } = r {
                p.add(query);
            }
        }
    }

    fn refs(&self) -> impl Iterator<Item = &ValueRef> {
        self.refs_of(Some(&self.data))
    }

    /// The subject, the partition key, and the refs of `data` when given.
    fn refs_of<'s>(&'s self, data: Option<&'s Data>) -> impl Iterator<Item = &'s ValueRef> {
        // Called on the request path (via `Route::needs_body`): no allocation.
        let (one, fields) = match data {
            None => (None, &[][..]),
            Some(Data::One(r)) => (Some(r), &[][..]),
            Some(Data::Object(f)) => (None, f.as_slice()),
        };
        self.subject
            .iter()
            .chain(&self.partition_key)
            .chain(one)
            .chain(fields.iter().map(|(_, r)| r))
    }

    /// Builds the event's fields. `hash` turns a redacted value into its salted digest.
    pub fn fields<'a>(&self, ex: &Exchange<'a>, hash: &dyn Fn(&[u8]) -> String) -> EventFields<'a> {
        let text = |r: &ValueRef| match resolve(r, ex) {
            Value::Null => None,
            Value::String(s) => Some(s),
            v => Some(v.to_string()),
        };
        let subject = self.subject.as_ref().and_then(text);
        let partition_key = self
            .partition_key
            .as_ref()
            .map_or_else(|| ex.sticky_key.map(str::to_string), text);
        if let Some(json_text) = ex.request_json_text
            && self.data_is_request_text()
        {
            return EventFields {
                subject,
                partition_key,
                data: EventData::JsonText(json_text),
            };
        }
        let mut data = match &self.data {
            Data::One(r) => resolve(r, ex),
            Data::Object(fields) => Value::Object(
                fields
                    .iter()
                    .map(|(k, r)| (k.clone(), resolve(r, ex)))
                    .collect(),
            ),
        };
        for r in &self.redact {
            redact(&mut data, r, hash);
        }
        EventFields {
            subject,
            partition_key,
            data: EventData::Value(data),
        }
    }
}

fn resolve(r: &ValueRef, ex: &Exchange<'_>) -> Value {
    let text = |s: Option<&str>| s.map_or(Value::Null, |s| Value::String(s.to_string()));
    match r {
        ValueRef::Literal(v) => v.clone(),
        ValueRef::RequestBody { query, source } => body_path(ex.request_body, query, source),
        ValueRef::ResponseBody { query, source } => body_path(ex.response_body, query, source),
        ValueRef::RequestHeader(h) => text(ex.request.headers.get(h).and_then(|v| v.to_str().ok())),
        ValueRef::ResponseHeader(h) => {
            text(ex.response_headers.get(h).and_then(|v| v.to_str().ok()))
        }
        ValueRef::RequestQuery(q) => text(
            ex.request
                .query
                .and_then(|qs| query_param(qs, q))
                .as_deref(),
        ),
        ValueRef::PathParam(p) => text(ex.params.get(p)),
        ValueRef::RequestPath => Value::String(ex.request.path.to_string()),
        ValueRef::RequestMethod => Value::String(ex.request.method.to_string()),
        ValueRef::ResponseStatus => Value::from(ex.status),
        ValueRef::StickyKey => text(ex.sticky_key),
    }
}

fn body_path(body: BodyValue<'_>, query: &JpQuery, source: &str) -> Value {
    match body {
        BodyValue::Json(v) => match jsonpath_rust::query::js_path_process(query, v) {
            // A wildcard, filter or slice gives every match; a definite path its value.
            Ok(found) if is_multi(source) => {
                Value::Array(found.into_iter().map(|r| r.val().clone()).collect())
            }
            Ok(found) => found
                .into_iter()
                .next()
                .map_or(Value::Null, |r| r.val().clone()),
            Err(_) => Value::Null,
        },
        BodyValue::Raw(bytes) if source == "$" => {
            Value::String(String::from_utf8_lossy(bytes).into_owned())
        }
        BodyValue::Raw(_) | BodyValue::Absent => Value::Null,
    }
}

/// Paths with a wildcard, filter, slice or descendant step select many values.
fn is_multi(source: &str) -> bool {
    source.contains('*')
        || source.contains('?')
        || source.contains("..")
        || source.contains(':')
        || source.contains(',')
}

/// Removes (or, with `hash`, replaces by `hash(value)`) what `r` selects in `data`.
pub fn redact(data: &mut Value, r: &Redact, hash: &dyn Fn(&[u8]) -> String) {
    if r.hash {
        let Ok(paths) = data.query_only_path(&r.jsonpath) else {
            return;
        };
        for p in paths {
            if let Some(v) = data.reference_mut(p) {
                let bytes = match &*v {
                    Value::String(s) => s.as_bytes().to_vec(),
                    other => other.to_string().into_bytes(),
                };
                *v = Value::String(hash(&bytes));
            }
        }
    } else {
        let _ = data.delete_by_path(&r.jsonpath);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn hash(b: &[u8]) -> String {
        format!("h{}", b.len())
    }

    #[test]
    fn redaction_removes_and_hashes() {
        let mut v =
            json!({"card": {"number": "4111", "cvc": "123"}, "email": "a@b.c", "items": [1]});
        redact(
            &mut v,
            &Redact {
                jsonpath: "$.card.cvc".into(),
                hash: false,
            },
            &hash,
        );
        redact(
            &mut v,
            &Redact {
                jsonpath: "$.email".into(),
                hash: true,
            },
            &hash,
        );
        redact(
            &mut v,
            &Redact {
                jsonpath: "$.card.number".into(),
                hash: true,
            },
            &hash,
        );
        assert_eq!(
            v,
            json!({"card": {"number": "h4"}, "email": "h5", "items": [1]})
        );
    }
}
