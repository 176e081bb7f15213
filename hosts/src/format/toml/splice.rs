//! Splicing the original text at `toml_edit`'s spans: an edit is a byte range and its new
//! text; the helpers find an array's elements and its layout, insert, replace or remove elements
//! in front, and find where an inline table's key-value pair begins.

use std::collections::HashMap;
use std::ops::Range;

use toml_edit::{Array, InlineTable, Value};

/// A replacement of `range` of the text by `text`.
pub(super) struct Edit {
    pub(super) range: Range<usize>,
    pub(super) text: String,
}

/// Applies non-overlapping edits; `None` if two overlap.
pub(super) fn apply(body: &str, mut edits: Vec<Edit>) -> Option<String> {
    edits.sort_by_key(|e| (e.range.start, e.range.end));
    let mut out = String::with_capacity(body.len() + edits.len() * 64);
    let mut at = 0;
    for e in edits {
        if e.range.start < at || e.range.end > body.len() {
            return None;
        }
        out.push_str(body.get(at..e.range.start)?);
        out.push_str(&e.text);
        at = e.range.end;
    }
    out.push_str(&body[at..]);
    Some(out)
}

/// A TOML basic string for `s`.
pub(super) fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c.is_control() => out.push_str(&format!("\\u{:04X}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Inside the inline table `container`, the last place before `key_start` where a key-value
/// pair's leading text begins: just after `{` or after the previous value. What lies between it
/// and a leaf key is whitespace, an optional comma, and the key's dotted prefix (keys hold no
/// values). `cache`: each container's sorted places, computed once (a hostile file may hold
/// many entries in one inline table).
pub(super) fn boundary(
    body: &str,
    container: &InlineTable,
    key_start: usize,
    cache: &mut HashMap<usize, Vec<usize>>,
) -> Option<usize> {
    let span = container.span()?;
    let inside = span.start < key_start && key_start < span.end;
    if !(inside && body.get(span.clone()).is_some_and(|t| t.starts_with('{'))) {
        return None;
    }
    let ends = cache.entry(span.start).or_insert_with(|| {
        let mut ends = vec![span.start + 1];
        for (_, v) in container.iter() {
            value_ends(v, &mut ends);
        }
        ends.sort_unstable();
        ends
    });
    let i = ends.partition_point(|e| *e <= key_start);
    i.checked_sub(1).map(|i| ends[i])
}

/// The end of every value in `v` (dotted tables have no text of their own).
fn value_ends(v: &Value, out: &mut Vec<usize>) {
    match v {
        Value::InlineTable(t) => {
            if !t.is_dotted()
                && let Some(s) = t.span()
            {
                out.push(s.end);
            }
            for (_, v) in t.iter() {
                value_ends(v, out);
            }
        }
        Value::Array(a) => {
            if let Some(s) = a.span() {
                out.push(s.end);
            }
            for v in a.iter() {
                value_ends(v, out);
            }
        }
        v => out.extend(v.span().map(|s| s.end)),
    }
}

/// The spans of an array's elements, and the position just after its `[`.
fn elements(body: &str, arr: &Array) -> Option<(usize, Vec<Range<usize>>)> {
    let span = arr.span()?;
    if !body.get(span.clone())?.starts_with('[') {
        return None;
    }
    let els: Option<Vec<_>> = arr.iter().map(Value::span).collect();
    Some((span.start + 1, els?))
}

/// How elements are separated before `first` (the first element's start): `, ` on one line,
/// or `,` + line break + indentation when the array has one element per line.
fn separator(body: &str, open: usize, first: usize) -> String {
    let lead = &body[open..first];
    match lead.rfind('\n') {
        Some(i) => {
            let nl = if lead[..i].ends_with('\r') {
                "\r\n"
            } else {
                "\n"
            };
            format!(",{nl}{}", &lead[i + 1..])
        }
        None => ", ".to_owned(),
    }
}

/// Inserts `items` (TOML literals) in front of the array's elements, in its layout.
pub(super) fn insert_front(body: &str, arr: &Array, items: &[String]) -> Option<Edit> {
    let (open, els) = elements(body, arr)?;
    Some(match els.first() {
        None => Edit {
            range: open..open,
            text: items.join(", "),
        },
        Some(first) => {
            let sep = separator(body, open, first.start);
            Edit {
                range: first.start..first.start,
                text: items.iter().map(|i| format!("{i}{sep}")).collect(),
            }
        }
    })
}

/// Replaces the first `n` elements (there is at least one more) by `items`.
pub(super) fn replace_front(body: &str, arr: &Array, n: usize, items: &[String]) -> Option<Edit> {
    let (open, els) = elements(body, arr)?;
    let (first, next) = (els.first()?, els.get(n)?);
    let sep = separator(body, open, first.start);
    Some(Edit {
        range: first.start..next.start,
        text: items.iter().map(|i| format!("{i}{sep}")).collect(),
    })
}

/// Removes the first `n` elements; when that is all of them, a trailing comma goes too.
pub(super) fn remove_front(body: &str, arr: &Array, n: usize) -> Result<Edit, String> {
    let fail = || "cannot locate \"args\" in the file".to_owned();
    let (_, els) = elements(body, arr).ok_or_else(fail)?;
    let first = els.first().ok_or_else(fail)?;
    if let Some(next) = els.get(n) {
        return Ok(Edit {
            range: first.start..next.start,
            text: String::new(),
        });
    }
    let last = els
        .get(n.checked_sub(1).ok_or_else(fail)?)
        .ok_or_else(fail)?;
    let mut end = last.end;
    if arr.trailing_comma() {
        end = comma_after(body, end).ok_or_else(fail)? + 1;
    }
    Ok(Edit {
        range: first.start..end,
        text: String::new(),
    })
}

/// The comma after `at`, past whitespace, line breaks and comments.
fn comma_after(body: &str, mut at: usize) -> Option<usize> {
    let bytes = body.as_bytes();
    while at < bytes.len() {
        match bytes[at] {
            b' ' | b'\t' | b'\r' | b'\n' => at += 1,
            b'#' => at += body[at..].find('\n')?,
            b',' => return Some(at),
            _ => return None,
        }
    }
    None
}
