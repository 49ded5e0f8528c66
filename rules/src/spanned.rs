//! A value read from a rule file, with the line and column it was written at.
//!
//! serde-saphyr's own `Spanned` keeps two full locations (where a value is used and where it
//! is defined, each with a character and a byte span): 96 bytes beside every field. A rule file
//! of 10,000 routes held ~37 MB of them while it compiled (the kernel's clearing of fresh pages
//! was half of `strangler check`'s time). Only the line and column where a value is used are
//! ever reported, so this keeps those (8 bytes) and drops the rest as it is read.

use serde::{Deserialize, Deserializer, Serialize, Serializer};

#[derive(Debug, Clone, PartialEq)]
pub struct Spanned<T> {
    pub value: T,
    /// 1-based; 0 when the reader knew no location.
    pub line: u32,
    pub column: u32,
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Spanned<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = serde_saphyr::Spanned::<T>::deserialize(d)?;
        let at = |n: u64| u32::try_from(n).unwrap_or(u32::MAX);
        Ok(Spanned {
            value: s.value,
            line: at(s.referenced.line()),
            column: at(s.referenced.column()),
        })
    }
}

/// As its value: what the rule file's JSON Schema shows as a field's default.
impl<T: Serialize> Serialize for Spanned<T> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.value.serialize(s)
    }
}
