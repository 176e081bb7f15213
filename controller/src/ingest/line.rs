//! An event line's top-level members, read in one pass without building a JSON tree (each value
//! kept as the bytes it is in the line), and what ingest needs from them: a field's text or
//! number, and the canonical bytes of the event without `hash` (what the chain hash covers).
//!
//! It gives exactly what parsing the line into a `serde_json::Value` and writing
//! [`thoth_proto::canonical::to_canonical`] would: a string without escapes, `true`, `false`,
//! `null` and a plain integer are written as they are in the line (serde_json writes them
//! byte for byte the same); anything else (an object, an array, a fraction, an escaped string) is
//! parsed alone and written canonically. A line it does not read that way (not an object,
//! a key given twice) is left to the caller's general path ([`Members::read`] gives None).

use std::borrow::Cow;
use std::fmt;

use serde::de::{Deserializer, MapAccess, Visitor};
use serde_json::Value;
use serde_json::value::RawValue;

/// The top-level members of an event line, sorted by key (UTF-8 bytes).
pub(super) struct Members<'a>(Vec<(Cow<'a, str>, &'a RawValue)>);

/// A key, borrowed from the line unless it holds escapes.
struct Key<'a>(Cow<'a, str>);

impl<'de> serde::Deserialize<'de> for Key<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Key<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E>(self, s: &'de str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Borrowed(s)))
            }
            fn visit_str<E>(self, s: &str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Owned(s.to_owned())))
            }
        }
        d.deserialize_str(V)
    }
}

impl<'de> serde::Deserialize<'de> for Members<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Members<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut m: A) -> Result<Members<'de>, A::Error> {
                let mut out = Vec::with_capacity(m.size_hint().unwrap_or(24));
                while let Some((k, v)) = m.next_entry::<Key<'de>, &'de RawValue>()? {
                    out.push((k.0, v));
                }
                Ok(Members(out))
            }
        }
        d.deserialize_map(V)
    }
}

impl<'a> Members<'a> {
    /// The members of `line`, or None when it is not a JSON object or gives a key twice.
    pub(super) fn read(line: &'a [u8]) -> Option<Members<'a>> {
        let Members(mut m) = serde_json::from_slice(line).ok()?;
        m.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
        if m.windows(2).any(|w| w[0].0 == w[1].0) {
            return None;
        }
        Some(Members(m))
    }

    fn raw(&self, key: &str) -> Option<&'a str> {
        self.0
            .binary_search_by(|(k, _)| k.as_bytes().cmp(key.as_bytes()))
            .ok()
            .map(|i| self.0[i].1.get())
    }

    /// The member `key` when it is a string (as `Value::as_str`).
    pub(super) fn text(&self, key: &str) -> Option<String> {
        let raw = self.raw(key)?;
        if !raw.starts_with('"') {
            return None;
        }
        if !raw.contains('\\') {
            return Some(raw[1..raw.len() - 1].to_owned());
        }
        serde_json::from_str(raw).ok()
    }

    /// The member `key` when it is an integer from 0 to `u64::MAX` (as `Value::as_u64`).
    pub(super) fn number(&self, key: &str) -> Option<u64> {
        let raw = self.raw(key)?;
        if !raw.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        raw.parse().ok()
    }

    /// The canonical bytes of the object without its member `skip`, or None when a nested value
    /// does not parse alone (the caller's general path then decides).
    pub(super) fn canonical_without(&self, skip: &str) -> Option<Vec<u8>> {
        let mut out = Vec::with_capacity(
            self.0
                .iter()
                .map(|(k, v)| k.len() + v.get().len() + 4)
                .sum(),
        );
        out.push(b'{');
        let mut first = true;
        for (k, v) in &self.0 {
            if k == skip {
                // Not written, but it must be valid JSON all the same (as a whole-line parse
                // would require).
                if !as_written(v.get()) {
                    nested(v.get())?;
                }
                continue;
            }
            if !first {
                out.push(b',');
            }
            first = false;
            serde_json::to_writer(&mut out, k.as_ref()).ok()?;
            out.push(b':');
            let raw = v.get();
            if as_written(raw) {
                out.extend_from_slice(raw.as_bytes());
            } else {
                let v = nested(raw)?;
                thoth_proto::canonical::write_canonical(&v, &mut out);
            }
        }
        out.push(b'}');
        Some(out)
    }
}

/// A member's value parsed alone with the nesting budget it has inside the line: wrapped in an
/// array, which spends the level the enclosing object spends in a whole-line parse (serde_json
/// skips a raw value without counting depth, so a value parsed bare would get one level more
/// than `thoth_proto`'s verifiers give it).
fn nested(raw: &str) -> Option<Value> {
    let mut wrapped = String::with_capacity(raw.len() + 2);
    wrapped.push('[');
    wrapped.push_str(raw);
    wrapped.push(']');
    let Value::Array(mut one) = serde_json::from_str(&wrapped).ok()? else {
        return None;
    };
    one.pop()
}

/// Whether serde_json writes this JSON value exactly as `raw` is: a string without escapes (it
/// cannot hold a quote or a control character then, the only characters serde_json escapes),
/// a literal, or an integer of at most 18 digits other than `-0`.
fn as_written(raw: &str) -> bool {
    let b = raw.as_bytes();
    match b.first() {
        Some(b'"') => !b.contains(&b'\\'),
        Some(b't' | b'f' | b'n') => true,
        Some(b'-' | b'0'..=b'9') => {
            let digits = b.strip_prefix(b"-").unwrap_or(b);
            !digits.is_empty()
                && digits.len() <= 18
                && digits.iter().all(u8::is_ascii_digit)
                && raw != "-0"
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use thoth_proto::canonical::to_canonical;

    /// The canonical bytes without `hash` as the general path writes them.
    fn general(line: &str) -> Vec<u8> {
        let mut v: Value = serde_json::from_str(line).unwrap();
        v.as_object_mut().unwrap().remove("hash");
        to_canonical(&v)
    }

    #[test]
    fn canonical_bytes_are_those_of_the_parsed_value() {
        for line in [
            r#"{"b":1,"a":"x","hash":"00","seq":3}"#,
            r#" { "z" : [ 1 , {"y":2,"x":[true,null]} ] , "hash" : "h", "a" : false } "#,
            r#"{"s":"tab\there \"q\" \u00e9 \/ \u0001","n":-0,"f":1.50,"e":1e3,"big":123456789012345678901234,"neg":-17}"#,
            r#"{"k\"ey":1,"k\u0041":2,"é":3,"e":4,"detail":{"b":{"d":1,"c":2},"a":[]}}"#,
            r#"{"max":18446744073709551615,"over":18446744073709551616,"i":-9223372036854775808}"#,
            r#"{"hash":"only"}"#,
            r#"{}"#,
        ] {
            let m = Members::read(line.as_bytes()).unwrap();
            assert_eq!(
                String::from_utf8(m.canonical_without("hash").unwrap()).unwrap(),
                String::from_utf8(general(line)).unwrap(),
                "{line}"
            );
        }
    }

    #[test]
    fn fields_read_as_a_value_reads_them() {
        let line = r#"{"a":"plain","b":"esc\"aped \u00e9","n":7,"neg":-7,"f":7.0,"big":18446744073709551616,"s":"7","o":{}}"#;
        let m = Members::read(line.as_bytes()).unwrap();
        let v: Value = serde_json::from_str(line).unwrap();
        for k in ["a", "b", "n", "neg", "f", "big", "s", "o", "absent"] {
            assert_eq!(
                m.text(k).as_deref(),
                v.get(k).and_then(Value::as_str),
                "{k}"
            );
            assert_eq!(m.number(k), v.get(k).and_then(Value::as_u64), "{k}");
        }
    }

    #[test]
    fn values_nested_as_deep_as_a_whole_line_parse_refuses_are_refused() {
        // serde_json allows 128 levels in all; the line's object is one of them.
        for depth in [120, 126, 127, 128, 130] {
            for member in ["x", "hash"] {
                let value = format!("{}{}", "[".repeat(depth), "]".repeat(depth));
                let line = format!(r#"{{"a":1,"{member}":{value}}}"#);
                let whole = serde_json::from_str::<Value>(&line).is_ok();
                let fast = Members::read(line.as_bytes())
                    .and_then(|m| m.canonical_without("hash"))
                    .is_some();
                assert_eq!(fast, whole, "depth {depth} in {member}");
            }
        }
    }

    #[test]
    fn what_is_not_one_object_with_distinct_keys_is_left_to_the_general_path() {
        for line in [
            "[1]",
            "\"s\"",
            "{",
            "{\"a\":1}x",
            r#"{"a":1,"a":2}"#,
            r#"{"a":1,"\u0061":2}"#,
        ] {
            assert!(Members::read(line.as_bytes()).is_none(), "{line}");
        }
    }
}
