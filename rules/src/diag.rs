//! Located diagnostics: every problem found in a config or rule file, as
//! `file:line:col: field.path: message`. Owns the error type that validation returns; does not
//! decide what is valid (that is `compile`).

use std::fmt;
use std::sync::Arc;

/// One problem in one file, with the place it was found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    pub file: Arc<str>,
    /// 1-based; 0 when the place is unknown (a missing file, say).
    pub line: u64,
    pub column: u64,
    /// Dotted field path such as `routes[2].match.path.regex`; empty for whole-file problems.
    pub field: String,
    pub message: String,
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}: ", self.file, self.line, self.column)?;
        if !self.field.is_empty() {
            write!(f, "{}: ", self.field)?;
        }
        f.write_str(&self.message)
    }
}

/// Every diagnostic found in one validation run; never empty when returned as an error.
#[derive(Debug, Clone, Default, PartialEq, Eq, thiserror::Error)]
pub struct Diagnostics(pub Vec<Diagnostic>);

impl fmt::Display for Diagnostics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, d) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{d}")?;
        }
        Ok(())
    }
}

impl Diagnostics {
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn extend(&mut self, other: Diagnostics) {
        self.0.extend(other.0);
    }

    /// `Ok(value)` when nothing was reported, else every diagnostic.
    pub fn into_result<T>(self, value: T) -> Result<T, Diagnostics> {
        if self.0.is_empty() {
            Ok(value)
        } else {
            Err(self)
        }
    }
}

/// Collects diagnostics for one file: errors, and warnings (valid but likely wrong).
#[derive(Debug)]
pub struct Reporter {
    file: Arc<str>,
    diags: Diagnostics,
    warnings: Diagnostics,
}

impl Reporter {
    pub fn new(file: impl Into<Arc<str>>) -> Self {
        Self {
            file: file.into(),
            diags: Diagnostics::default(),
            warnings: Diagnostics::default(),
        }
    }

    pub fn file(&self) -> &Arc<str> {
        &self.file
    }

    pub fn report(&mut self, at: Loc, field: impl Into<String>, message: impl Into<String>) {
        self.diags.0.push(Diagnostic {
            file: self.file.clone(),
            line: at.line,
            column: at.column,
            field: field.into(),
            message: message.into(),
        });
    }

    /// A YAML syntax or shape error from the deserializer (unknown field, wrong type, …).
    pub fn yaml_error(&mut self, err: &serde_saphyr::Error) {
        let at = err.location().map(Loc::from).unwrap_or_default();
        // The plain rendering repeats the location and adds a snippet; keep the first line only.
        let text = err.without_snippet().to_string();
        let message = text.lines().next().unwrap_or("invalid YAML").to_string();
        let mut message = strip_location_prefix(&message);
        // …and some end with ` at line L, column C`.
        if let Some(i) = message.rfind(" at line ")
            && message[i..].contains(", column ")
        {
            message.truncate(i);
        }
        if INDENTATION_SHAPED.iter().any(|m| message.contains(m)) {
            message.push_str(
                " (check the indentation here: keys of one mapping, and the items of one list, \
                 start in the same column)",
            );
        }
        self.report(at, "", message);
    }

    /// Something valid that is likely a mistake: shown by `check`, never refused.
    pub fn warn(&mut self, at: Loc, field: impl Into<String>, message: impl Into<String>) {
        self.warnings.0.push(Diagnostic {
            file: self.file.clone(),
            line: at.line,
            column: at.column,
            field: field.into(),
            message: message.into(),
        });
    }

    pub fn finish(self) -> Diagnostics {
        self.diags
    }

    /// Takes in what `other` (another file's reporter) found, each keeping its own file.
    pub fn absorb(&mut self, other: Reporter) {
        self.diags.extend(other.diags);
        self.warnings.extend(other.warnings);
    }

    /// The errors and the warnings.
    pub fn finish_with_warnings(self) -> (Diagnostics, Diagnostics) {
        (self.diags, self.warnings)
    }

    pub fn has_errors(&self) -> bool {
        !self.diags.is_empty()
    }

    /// How many problems have been reported so far.
    pub fn count(&self) -> usize {
        self.diags.len()
    }
}

/// serde-saphyr prefixes messages with `line L column C: `; we print our own location.
fn strip_location_prefix(msg: &str) -> String {
    let trimmed = msg.strip_prefix("error: ").unwrap_or(msg);
    if let Some(rest) = trimmed.strip_prefix("line ")
        && let Some(idx) = rest.find(": ")
        && rest[..idx].contains("column")
    {
        return rest[idx + 2..].to_string();
    }
    trimmed.to_string()
}

/// YAML parser messages that, in a hand-edited file, almost always mean a line indented too far
/// or not far enough.
const INDENTATION_SHAPED: [&str; 4] = [
    "did not find expected key",
    "did not find expected '-' indicator",
    "mapping values are not allowed in this context",
    "did not find expected <document start>",
];

/// A 1-based line and column in a source file.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct Loc {
    pub line: u64,
    pub column: u64,
}

impl From<serde_saphyr::Location> for Loc {
    fn from(l: serde_saphyr::Location) -> Self {
        Loc {
            line: l.line(),
            column: l.column(),
        }
    }
}

impl<T> From<&serde_saphyr::Spanned<T>> for Loc {
    fn from(s: &serde_saphyr::Spanned<T>) -> Self {
        s.referenced.into()
    }
}

impl<T> From<&crate::Spanned<T>> for Loc {
    fn from(s: &crate::Spanned<T>) -> Self {
        Loc {
            line: s.line.into(),
            column: s.column.into(),
        }
    }
}
