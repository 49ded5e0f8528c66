//! `listen`: an address (`"0.0.0.0:8080"`, plain HTTP), or an address that ends TLS:
//! `{ address: "0.0.0.0:8443", tls: { cert: a.pem, key: a.key } }`, where `tls` may also be a
//! list of certificates, chosen by the name the client asks for (SNI). Files are PEM, relative to
//! the config's folder, and read (and checked) when the config is.

use std::fmt;
use std::net::SocketAddr;
use std::path::Path;

use serde::de::{self, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer};
use serde_saphyr::Spanned;
use strangler_rules::Reporter;

use crate::tls::CertFiles;

/// One `listen` entry as written.
#[derive(Debug)]
pub(super) struct RawListen {
    address: String,
    tls: Option<Vec<RawCert>>,
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
struct RawCert {
    cert: String,
    key: String,
}

/// A listener that ends TLS, and its certificates (the first is the default one).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsListen {
    pub addr: SocketAddr,
    pub certs: Vec<CertFiles>,
}

impl<'de> Deserialize<'de> for RawListen {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = RawListen;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an IP:port address, or { address, tls: { cert, key } }")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<RawListen, E> {
                Ok(RawListen {
                    address: v.to_string(),
                    tls: None,
                })
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<RawListen, A::Error> {
                let (mut address, mut tls) = (None, None);
                while let Some(k) = map.next_key::<String>()? {
                    match k.as_str() {
                        "address" => address = Some(map.next_value::<String>()?),
                        "tls" => tls = Some(map.next_value::<OneOrMany>()?.0),
                        other => {
                            return Err(de::Error::unknown_field(other, &["address", "tls"]));
                        }
                    }
                }
                Ok(RawListen {
                    address: address.ok_or_else(|| de::Error::missing_field("address"))?,
                    tls,
                })
            }
        }
        d.deserialize_any(V)
    }
}

/// The schema of what [`RawListen`]'s deserializer takes.
impl schemars::JsonSchema for RawListen {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Listen".into()
    }

    fn json_schema(generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
        let cert = generator.subschema_for::<RawCert>();
        schemars::json_schema!({
            "description": "An IP:port address (plain HTTP), or an address that ends TLS with one certificate or a list of them chosen by SNI",
            "oneOf": [
                { "type": "string" },
                {
                    "type": "object",
                    "properties": {
                        "address": { "type": "string" },
                        "tls": { "oneOf": [cert, { "type": "array", "items": cert }] }
                    },
                    "required": ["address"],
                    "additionalProperties": false
                }
            ]
        })
    }
}

/// `tls:` one `{ cert, key }`, or a list of them.
struct OneOrMany(Vec<RawCert>);

impl<'de> Deserialize<'de> for OneOrMany {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = OneOrMany;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("{ cert, key }, or a list of them")
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<OneOrMany, A::Error> {
                let one = RawCert::deserialize(de::value::MapAccessDeserializer::new(map))?;
                Ok(OneOrMany(vec![one]))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<OneOrMany, A::Error> {
                let mut all = Vec::new();
                while let Some(c) = seq.next_element::<RawCert>()? {
                    all.push(c);
                }
                Ok(OneOrMany(all))
            }
        }
        d.deserialize_any(V)
    }
}

/// The plain and the TLS listeners; every address (plain or TLS) is in the first list.
pub(super) fn validate(
    raw: &Spanned<Vec<Spanned<RawListen>>>,
    base: &Path,
    r: &mut Reporter,
) -> (Vec<SocketAddr>, Vec<TlsListen>) {
    let (mut all, mut tls) = (Vec::new(), Vec::new());
    if raw.value.is_empty() {
        r.report(
            raw.into(),
            "listen",
            "give at least one address to listen on",
        );
    }
    for (i, entry) in raw.value.iter().enumerate() {
        let Ok(addr) = entry.value.address.parse::<SocketAddr>() else {
            r.report(
                entry.into(),
                format!("listen[{i}]"),
                format!("`{}` is not an IP:port address", entry.value.address),
            );
            continue;
        };
        all.push(addr);
        let Some(certs) = &entry.value.tls else {
            continue;
        };
        if certs.is_empty() {
            r.report(
                entry.into(),
                format!("listen[{i}].tls"),
                "give at least one { cert, key }",
            );
            continue;
        }
        let mut files = Vec::new();
        for (j, c) in certs.iter().enumerate() {
            let f = CertFiles {
                cert: base.join(&c.cert),
                key: base.join(&c.key),
            };
            // Read now: a bad file stops the start (or `check`), not the first handshake.
            if let Err(e) = crate::tls::load(&f) {
                r.report(entry.into(), format!("listen[{i}].tls[{j}]"), e);
            }
            files.push(f);
        }
        tls.push(TlsListen { addr, certs: files });
    }
    (all, tls)
}
