//! Keeps going after a rule file's structural error (YAML syntax, an unknown field, a wrong type),
//! so one round of `check` shows every broken item, not only the first. serde stops at the first
//! error of a document; here each top-level key, and each item of a top-level list, is read again
//! on its own from a copy of the file with every other line blanked, so positions stay those of
//! the file. Errors are reported once per place; the items that read cleanly are kept and
//! compiled (their own mistakes are reported too), each keeping its index in the file.

use crate::diag::{Loc, Reporter};
use crate::raw::RawRuleFile;

/// One piece read on its own: a top-level key's line and the lines of one of its list items (or
/// of its whole block, when it holds no list).
struct Piece {
    key: usize,
    lines: std::ops::Range<usize>,
    /// Its index in the top-level list, if it is a list item.
    item: Option<usize>,
}

/// Most bytes of piece copies read for one file: each copy is the file's size (lines blanked),
/// so a broken file of 10,000 routes is read in pieces up to this, not ten thousand times whole.
const BUDGET: usize = 32 << 20;

/// `first` is the whole file's error, already reported. Returns what could be read.
pub(super) fn salvage(
    text: &str,
    first: &serde_saphyr::Error,
    r: &mut Reporter,
) -> Option<RawRuleFile> {
    let lines: Vec<&str> = text.split_inclusive('\n').collect();
    let mut seen: Vec<Loc> = first.location().map(Loc::from).into_iter().collect();
    let mut out = RawRuleFile::default();
    let mut any = false;
    let all = pieces(&lines);
    let room = (BUDGET / text.len().max(1)).max(1);
    if let Some(next) = all.get(room) {
        r.report(
            Loc {
                line: next.lines.start as u64 + 1,
                column: 1,
            },
            "",
            "not checked from here: the file is too large to read in pieces after its \
             structural error; fix that and check again",
        );
    }
    for piece in all.into_iter().take(room) {
        let copy: String = lines
            .iter()
            .enumerate()
            .map(|(i, l)| {
                if i == piece.key || piece.lines.contains(&i) {
                    *l
                } else if l.ends_with('\n') {
                    "\n"
                } else {
                    ""
                }
            })
            .collect();
        match serde_saphyr::from_str_with_options::<Option<RawRuleFile>>(
            &copy,
            super::yaml_options(),
        ) {
            Ok(Some(part)) => {
                any = true;
                let n = piece.item.unwrap_or(0);
                for c in part.contexts.into_iter().flatten() {
                    out.contexts.get_or_insert_with(Vec::new).push(c);
                    out.numbering.contexts.push(n);
                }
                for route in part.routes.into_iter().flatten() {
                    out.routes.get_or_insert_with(Vec::new).push(route);
                    out.numbering.routes.push(n);
                }
            }
            Ok(None) => {}
            Err(e) => {
                let at = e.location().map(Loc::from).unwrap_or_default();
                if !seen.contains(&at) {
                    seen.push(at);
                    r.yaml_error(&e);
                }
            }
        }
    }
    any.then_some(out)
}

/// The file's top-level keys (lines starting in column 1 that are not comments, list items or
/// document markers), split into their list items where the block holds a list.
fn pieces(lines: &[&str]) -> Vec<Piece> {
    let top = |l: &str| {
        l.chars()
            .next()
            .is_some_and(|c| !c.is_whitespace() && c != '#' && c != '-' && c != '.')
    };
    let keys: Vec<usize> = (0..lines.len()).filter(|&i| top(lines[i])).collect();
    let mut out = Vec::new();
    for (k, &key) in keys.iter().enumerate() {
        let end = keys.get(k + 1).copied().unwrap_or(lines.len());
        // A list's items are the `- ` lines least indented in the block.
        let least = (key + 1..end).filter_map(|i| item_indent(lines[i])).min();
        let starts: Vec<usize> = match least {
            Some(indent) => (key + 1..end)
                .filter(|&i| item_indent(lines[i]) == Some(indent))
                .collect(),
            None => Vec::new(),
        };
        if starts.is_empty() {
            out.push(Piece {
                key,
                lines: key + 1..end,
                item: None,
            });
            continue;
        }
        for (n, &start) in starts.iter().enumerate() {
            out.push(Piece {
                key,
                lines: start..starts.get(n + 1).copied().unwrap_or(end),
                item: Some(n),
            });
        }
    }
    out
}

/// The indentation of a list item's first line (`  - name: a`), `None` for other lines.
fn item_indent(line: &str) -> Option<usize> {
    let rest = line.trim_start_matches(' ');
    let dash = rest.strip_prefix('-')?;
    (dash.is_empty() || dash.starts_with([' ', '\n', '\r'])).then_some(line.len() - rest.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn items_are_split_at_the_lists_own_indentation() {
        let text = "# c\nroutes:\n  - name: a\n    match: { methods:\n      - GET }\n  - name: b\ncontexts: []\n";
        let lines: Vec<&str> = text.split_inclusive('\n').collect();
        let p = pieces(&lines);
        let got: Vec<_> = p.iter().map(|p| (p.key, p.lines.clone(), p.item)).collect();
        assert_eq!(
            got,
            vec![(1, 2..5, Some(0)), (1, 5..6, Some(1)), (6, 7..7, None)]
        );
    }
}
