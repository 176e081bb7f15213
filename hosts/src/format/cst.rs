//! Text-level edits of a JSON or JSONC syntax tree (jsonc-parser's CST), shared by the JSON
//! engine and the extension-manifest engine. jsonc-parser's own insertions and removals
//! rearrange the whitespace around array elements; these write and erase exact text instead
//! (raw literals), so an unwrap gives back every byte a wrap saw.
//!
//! A repeated key: every reader (serde, `JSON.parse`, VS Code, Claude) takes the last property
//! of a name, so the last is the only one read and edited here; the earlier ones stay as
//! written, and unwrapping restores them.

use std::collections::HashSet;

use jsonc_parser::ParseOptions;
use jsonc_parser::cst::{
    CstArray, CstInputValue, CstNode, CstObject, CstObjectProp, CstRootNode, CstStringLit,
};

use super::model::ConfigError;

/// The parser's options: strict JSON, or JSONC (comments and trailing commas).
pub(crate) fn options(jsonc: bool) -> ParseOptions {
    ParseOptions {
        allow_comments: jsonc,
        allow_loose_object_property_names: false,
        allow_trailing_commas: jsonc,
        allow_missing_commas: false,
        allow_single_quoted_strings: false,
        allow_hexadecimal_numbers: false,
        allow_unary_plus_numbers: false,
        allow_bare_decimal_point_numbers: false,
        allow_non_finite_numbers: false,
        allow_extended_string_escapes: false,
    }
}

/// The syntax tree of a file's text (after any BOM), with the position of the first error.
pub(crate) fn parse_root(body: &str, jsonc: bool) -> Result<CstRootNode, ConfigError> {
    CstRootNode::parse(body, &options(jsonc)).map_err(|e| ConfigError::Invalid {
        line: e.line_display(),
        column: e.column_display(),
        message: e.kind().to_string(),
    })
}

/// A string's JSON literal.
pub(crate) fn raw(s: &str) -> String {
    serde_json::to_string(s).expect("strings serialize")
}

/// The JSON literals of strings.
pub(crate) fn raws(v: &[String]) -> Vec<String> {
    v.iter().map(|s| raw(s)).collect()
}

/// The last property named `key` (the one a reader keeps).
pub(crate) fn last(obj: &CstObject, key: &str) -> Option<CstObjectProp> {
    obj.properties()
        .into_iter()
        .rev()
        .find(|p| p.decoded_name().as_deref() == Some(key))
}

/// The object value of the last property named `key`.
pub(crate) fn child(obj: &CstObject, key: &str) -> Option<CstObject> {
    last(obj, key).and_then(|p| p.object_value())
}

/// The array value of the last property named `key`.
pub(crate) fn array(obj: &CstObject, key: &str) -> Option<CstArray> {
    last(obj, key).and_then(|p| p.array_value())
}

/// The properties of `obj`, the last of each name only, in document order.
pub(crate) fn last_props(obj: &CstObject) -> Vec<(String, CstObjectProp)> {
    let mut seen = HashSet::new();
    let mut out: Vec<(String, CstObjectProp)> = obj
        .properties()
        .into_iter()
        .rev()
        .filter_map(|p| {
            let name = p.decoded_name()?;
            seen.insert(name.clone()).then_some((name, p))
        })
        .collect();
    out.reverse();
    out
}

/// `c` as the property `key`, if it is one.
pub(crate) fn prop_named(c: &CstNode, key: &str) -> Option<CstObjectProp> {
    c.as_object_prop()
        .filter(|p| p.decoded_name().as_deref() == Some(key))
}

/// The raw literal (quotes and escapes as written) of the string property `key` (the last).
pub(crate) fn raw_string(obj: &CstObject, key: &str) -> Option<String> {
    last(obj, key)
        .and_then(|p| p.value())
        .and_then(|v| v.as_string_lit())
        .map(|l| l.raw_value())
}

/// Sets the property `key` (the last) to the string `value`.
pub(crate) fn set_string(obj: &CstObject, key: &str, value: &str) {
    if let Some(p) = last(obj, key) {
        p.set_value(CstInputValue::String(value.to_owned()));
    }
}

/// Sets the property `key` (the last) to the raw string literal `raw`, as written.
pub(crate) fn set_raw(obj: &CstObject, key: &str, raw: &str) {
    if let Some(p) = last(obj, key) {
        match p.value().and_then(|v| v.as_string_lit()) {
            Some(lit) => lit.set_raw_value(raw.to_owned()),
            None => p.set_value(CstInputValue::String(
                serde_json::from_str::<String>(raw).unwrap_or_default(),
            )),
        }
    }
}

/// Removes every property named `key`.
pub(crate) fn remove_all(obj: &CstObject, key: &str) {
    for p in obj.properties() {
        if p.decoded_name().as_deref() == Some(key) {
            p.remove();
        }
    }
}

/// An array's children (tokens and trivia included) and the indexes of its elements among them.
fn layout(arr: &CstArray) -> (Vec<CstNode>, Vec<usize>) {
    let children = arr.children();
    let elements = children
        .iter()
        .enumerate()
        .filter(|(_, c)| !c.is_trivia() && !c.is_token())
        .map(|(i, _)| i)
        .collect();
    (children, elements)
}

/// The string literal of element `n` of `arr`.
pub(crate) fn element(arr: &CstArray, n: usize) -> Option<CstStringLit> {
    let (children, elements) = layout(arr);
    elements.get(n).and_then(|&i| children[i].as_string_lit())
}

/// What follows each comma between written elements placed before the child at `first`: a
/// space in an inline container; in a multi-line one, the line break and indentation that
/// precede that child, so each gets a line of its own.
fn separator(children: &[CstNode], first: usize) -> String {
    let before = &children[..first];
    let Some(nl) = before.iter().rposition(CstNode::is_newline) else {
        return " ".into();
    };
    let mut sep = before[nl].to_string();
    for c in before[nl + 1..].iter().take_while(|c| c.is_whitespace()) {
        sep.push_str(&c.to_string());
    }
    sep
}

/// Erases the children `from..to` from the printed text, exactly (no sibling is adjusted, unlike
/// the parser's own removal, which rearranges commas and whitespace).
fn erase(children: &[CstNode], from: usize, to: usize) {
    for c in &children[from..to] {
        if let CstNode::Container(_) = c {
            let inner = c.children();
            erase(&inner, 0, inner.len());
        } else if let Some(s) = c.as_string_lit() {
            s.set_raw_value(String::new());
        } else if let Some(c) = c.as_comment() {
            c.set_raw_value(String::new());
        } else if let Some(w) = c.as_whitespace() {
            w.set_value(String::new());
        } else if c.is_token() || c.is_newline() {
            c.clone().remove();
        } else if let Some(n) = c.as_number_lit() {
            n.set_raw_value(String::new());
        } else if let Some(w) = c.as_word_lit() {
            w.set_raw_value(String::new());
        }
    }
}

/// Writes `items` (raw literals) at the start of `arr`, as text before its first element: every
/// byte of the array is kept after them, so [`remove_first`] gives back exactly what was there.
pub(crate) fn prepend(arr: &CstArray, items: &[String]) {
    let (children, elements) = layout(arr);
    match elements.first() {
        Some(&first) => {
            let sep = separator(&children, first);
            let Some(lit) = children[first].as_string_lit() else {
                return;
            };
            let text = format!(
                "{},{sep}{}",
                items.join(&format!(",{sep}")),
                lit.raw_value()
            );
            lit.set_raw_value(text);
        }
        None => {
            // Empty: the array's text with the elements right after `[` (whatever the array
            // held, comments or line breaks, stays after them).
            let text = arr.to_string();
            let text = format!("[{}{}", items.join(", "), &text[1..]);
            if let Some(lit) = arr
                .clone()
                .replace_with(CstInputValue::String(String::new()))
                .and_then(|n| n.as_string_lit())
            {
                lit.set_raw_value(text);
            }
        }
    }
}

/// Erases the first `n` elements of `arr` and the text between them and the next one (the
/// inverse of [`prepend`]); with no element after them, a comma that follows the last too.
pub(crate) fn remove_first(arr: &CstArray, n: usize) {
    let (children, elements) = layout(arr);
    let (Some(&first), Some(&last)) = (elements.first(), elements.get(n.saturating_sub(1))) else {
        return;
    };
    match elements.get(n) {
        Some(&next) => erase(&children, first, next),
        None => {
            let end = children[last + 1..]
                .iter()
                .position(|c| c.is_comma())
                .map_or(last + 1, |i| last + 2 + i);
            erase(&children, first, end);
        }
    }
}

/// Replaces the first `n` elements of `arr` (a wrapper's head and its `--`) by `items` (raw
/// literals), written as [`prepend`] writes them.
pub(crate) fn replace_first(arr: &CstArray, n: usize, items: &[String]) {
    let (children, elements) = layout(arr);
    let Some(&first) = elements.first() else {
        return;
    };
    let sep = separator(&children, first);
    match elements.get(n) {
        Some(&next) => {
            let Some(lit) = children[next].as_string_lit() else {
                return;
            };
            let text = format!(
                "{},{sep}{}",
                items.join(&format!(",{sep}")),
                lit.raw_value()
            );
            erase(&children, first, next);
            lit.set_raw_value(text);
        }
        None => {
            let Some(lit) = children[first].as_string_lit() else {
                return;
            };
            let last = elements[elements.len().min(n).saturating_sub(1)];
            erase(&children, first + 1, last + 1);
            lit.set_raw_value(items.join(&format!(",{sep}")));
        }
    }
}

/// Replaces every element after element `k` of `arr` by `items` (raw literals).
pub(crate) fn replace_after(arr: &CstArray, k: usize, items: &[String]) {
    let (children, elements) = layout(arr);
    let Some(&at) = elements.get(k) else {
        return;
    };
    let Some(lit) = children[at].as_string_lit() else {
        return;
    };
    let sep = separator(&children, elements[0]);
    if let Some(&last) = elements.last()
        && last > at
    {
        erase(&children, at + 1, last + 1);
    }
    let mut text = lit.raw_value();
    for i in items {
        text.push_str(&format!(",{sep}{i}"));
    }
    lit.set_raw_value(text);
}

/// Gives an entry without `args` the command `thoth` and `"args": [items]`, written right after
/// the (last) command's value: on the same line in an inline object, else on a line of its own
/// in the command's indentation ([`remove_added_args`] erases exactly that text).
pub(crate) fn add_args(obj: &CstObject, thoth: &str, items: &[String]) {
    let children = obj.children();
    let at = children
        .iter()
        .rposition(|c| prop_named(c, "command").is_some());
    if let Some(i) = at
        && let Some(lit) = prop_named(&children[i], "command")
            .and_then(|p| p.value())
            .and_then(|v| v.as_string_lit())
    {
        let sep = separator(&children, i);
        lit.set_raw_value(format!(
            "{},{sep}\"args\": [{}]",
            raw(thoth),
            items.join(", ")
        ));
    }
}

/// Removes the `args` [`add_args`] wrote: right after the (last) command's value with only a
/// comma and spacing between, exactly that text is erased (so the bytes come back); elsewhere
/// (moved by hand), every `args` property is removed.
pub(crate) fn remove_added_args(obj: &CstObject) {
    let children = obj.children();
    let span = children
        .iter()
        .rposition(|c| prop_named(c, "command").is_some())
        .and_then(|i| {
            let next = i
                + 1
                + children[i + 1..]
                    .iter()
                    .position(|c| c.as_object_prop().is_some())?;
            let between = &children[i + 1..next];
            (prop_named(&children[next], "args").is_some()
                && between.iter().filter(|c| c.is_comma()).count() == 1
                && between
                    .iter()
                    .all(|c| c.is_comma() || c.is_whitespace() || c.is_newline()))
            .then_some((i + 1, next + 1))
        });
    match span {
        Some((from, to)) => erase(&children, from, to),
        None => remove_all(obj, "args"),
    }
}
