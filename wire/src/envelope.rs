//! The CloudEvents 1.0 structured-mode JSON envelope every event is published in. The `id` is a
//! UUIDv7 fixed when the event is created and kept across every retry, so consumers dedupe on it.
//! [`CloudEvent`] writes one; [`read`] reads one back (from strangler or anyone who writes the
//! same envelope).

use serde::{Deserialize, Serialize};
use serde_json::Value;
use serde_json::value::RawValue;

#[derive(Debug, Clone, Serialize)]
pub struct CloudEvent<D = Value> {
    pub specversion: &'static str,
    pub id: String,
    pub source: String,
    #[serde(rename = "type")]
    pub ty: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    /// RFC 3339, UTC.
    pub time: String,
    pub datacontenttype: &'static str,
    /// W3C trace context of the request that caused the event (CloudEvents distributed tracing
    /// extension).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub traceparent: Option<String>,
    pub data: D,
}

/// `data` given either as a value or as JSON text to embed as it is (no parse-and-re-encode of
/// a request body that is passed on whole).
#[derive(Debug, Clone, Serialize)]
#[serde(untagged)]
pub enum Data<'a> {
    Value(Value),
    Text(&'a RawValue),
}

impl<'a> Data<'a> {
    /// JSON text as data; text that is not JSON becomes a JSON string of it (lossy UTF-8).
    pub fn json_text(text: &'a [u8]) -> Data<'a> {
        match serde_json::from_slice::<&RawValue>(text) {
            Ok(raw) => Data::Text(raw),
            Err(_) => Data::Value(Value::String(String::from_utf8_lossy(text).into_owned())),
        }
    }
}

impl<D: Serialize> CloudEvent<D> {
    /// A new event with a fresh UUIDv7 id and the current time.
    pub fn new(source: impl Into<String>, ty: impl Into<String>, data: D) -> CloudEvent<D> {
        let id = uuid::Uuid::now_v7();
        CloudEvent {
            specversion: "1.0",
            id: id.to_string(),
            source: source.into(),
            ty: ty.into(),
            subject: None,
            time: rfc3339_now(),
            datacontenttype: "application/json",
            traceparent: None,
            data,
        }
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("a CloudEvent always serialises")
    }
}

/// An envelope as read back: the attributes a consumer works with, and the whole envelope
/// (extensions such as `traceparent` included).
#[derive(Debug, Clone, PartialEq)]
pub struct Envelope {
    /// The CloudEvents `id`: fixed when the event was made, kept across retries and replays
    /// (consumers dedupe on it). Never empty.
    pub id: String,
    pub source: String,
    /// The CloudEvents `type` (`ORDER_CREATED`).
    pub ty: String,
    pub subject: Option<String>,
    /// RFC 3339 as written (`2026-11-30T15:19:46.123Z`); empty when the event had none.
    pub time: String,
    pub data: Value,
    /// The whole envelope, extensions (`traceparent`, …) included.
    pub whole: Value,
}

#[derive(Deserialize)]
struct Attributes {
    specversion: Option<String>,
    id: Option<String>,
    #[serde(default)]
    source: String,
    #[serde(rename = "type", default)]
    ty: String,
    subject: Option<String>,
    #[serde(default)]
    time: String,
    #[serde(default)]
    data: Value,
}

/// Why bytes are not an event [`read`] can give.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReadError {
    #[error("not JSON: {0}")]
    NotJson(String),
    #[error("not a CloudEvent: {0}")]
    NotCloudEvent(String),
    #[error("not a CloudEvent: specversion is not \"1.0\"")]
    SpecVersion,
    #[error("a CloudEvent without an id")]
    NoId,
}

/// Reads one structured-mode CloudEvent (JSON, `specversion` "1.0", a non-empty `id`).
pub fn read(bytes: &[u8]) -> Result<Envelope, ReadError> {
    let whole: Value =
        serde_json::from_slice(bytes).map_err(|e| ReadError::NotJson(e.to_string()))?;
    let a = Attributes::deserialize(&whole).map_err(|e| ReadError::NotCloudEvent(e.to_string()))?;
    if a.specversion.as_deref() != Some("1.0") {
        return Err(ReadError::SpecVersion);
    }
    let id = a.id.filter(|id| !id.is_empty()).ok_or(ReadError::NoId)?;
    Ok(Envelope {
        id,
        source: a.source,
        ty: a.ty,
        subject: a.subject,
        time: a.time,
        data: a.data,
        whole,
    })
}

/// Current UTC time as `YYYY-MM-DDTHH:MM:SS.mmmZ`, without a date library.
pub fn rfc3339_now() -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    rfc3339(now.as_secs() as i64, now.subsec_millis())
}

/// A time since the Unix epoch as `YYYY-MM-DDTHH:MM:SS.mmmZ` (UTC).
pub fn rfc3339(secs: i64, millis: u32) -> String {
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = if m <= 2 { y + 1 } else { y };
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{millis:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates() {
        assert_eq!(rfc3339(0, 0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339(1_795_641_300, 369), "2026-11-25T21:15:00.369Z");
        assert_eq!(rfc3339(951_782_400, 5), "2000-02-29T00:00:00.005Z");
    }

    #[test]
    fn envelope_shape() {
        let mut e = CloudEvent::new(
            "strangler/orders",
            "ORDER_CREATED",
            serde_json::json!({"id": 1}),
        );
        e.subject = Some("order-1".into());
        let v: Value = serde_json::from_slice(&e.to_bytes()).unwrap();
        assert_eq!(v["specversion"], "1.0");
        assert_eq!(v["type"], "ORDER_CREATED");
        assert_eq!(v["datacontenttype"], "application/json");
        assert_eq!(
            uuid::Uuid::parse_str(v["id"].as_str().unwrap())
                .unwrap()
                .get_version_num(),
            7
        );
        assert!(v.get("traceparent").is_none());
    }

    #[test]
    fn json_text_data_is_embedded_as_it_came() {
        let text = br#"{"z": 1, "a": [1.50, "x"]}"#;
        let e = CloudEvent::new("s", "T", Data::json_text(text));
        let bytes = e.to_bytes();
        let out = std::str::from_utf8(&bytes).unwrap();
        assert!(
            out.ends_with(r#""data":{"z": 1, "a": [1.50, "x"]}}"#),
            "{out}"
        );
        let e = CloudEvent::new("s", "T", Data::json_text(b"not json"));
        let v: Value = serde_json::from_slice(&e.to_bytes()).unwrap();
        assert_eq!(v["data"], "not json");
    }
}
