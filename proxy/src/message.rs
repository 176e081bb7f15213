//! Classifying JSON-RPC messages without re-serializing them: the proxy looks at `id`, `method`
//! and, for a few methods, `params` or `result`, and forwards the original bytes.

use std::borrow::Cow;

use serde::Deserialize;
use serde::de::{self, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::Value;
use serde_json::value::RawValue;

/// JSON-RPC error codes the proxy answers with.
pub mod code {
    /// Not JSON.
    pub const PARSE_ERROR: i64 = -32700;
    /// JSON, but not a JSON-RPC message the proxy can serve.
    pub const INVALID_REQUEST: i64 = -32600;
    /// `tools/call` without a usable `params.name`.
    pub const INVALID_PARAMS: i64 = -32602;
    /// The server went away before answering.
    pub const INTERNAL_ERROR: i64 = -32603;
}

#[derive(Deserialize)]
struct Envelope<'a> {
    /// `Some("null")` for `"id": null`, `None` when there is no `id` member.
    #[serde(borrow, default, deserialize_with = "present")]
    id: Option<&'a RawValue>,
    #[serde(borrow, default)]
    method: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    params: Option<&'a RawValue>,
    #[serde(borrow, default)]
    result: Option<&'a RawValue>,
    #[serde(borrow, default)]
    error: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct CallParams<'a> {
    #[serde(borrow)]
    name: Cow<'a, str>,
    #[serde(borrow, default)]
    arguments: Option<&'a RawValue>,
    #[serde(borrow, default, rename = "_meta")]
    meta: Option<&'a RawValue>,
    #[serde(borrow, default, rename = "requestState")]
    request_state: Option<Cow<'a, str>>,
    #[serde(borrow, default, rename = "inputResponses")]
    input_responses: Option<&'a RawValue>,
}

/// Keeps `null` as a value: a member that is present is `Some`, even when it is `null`.
fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<&'de RawValue>, D::Error> {
    <&RawValue>::deserialize(d).map(Some)
}

/// `_meta` key of the 2026-07-28 lifecycle carrying the client's capabilities.
pub const CLIENT_CAPABILITIES_META: &str = "io.modelcontextprotocol/clientCapabilities";

/// A message, as far as the proxy needs to know it.
#[derive(Debug)]
pub enum Message<'a> {
    /// A request (`id` and `method`).
    Request {
        /// The id, as its JSON text.
        id: &'a RawValue,
        /// The method.
        method: Cow<'a, str>,
        /// The params, if any.
        params: Option<&'a RawValue>,
    },
    /// A notification (`method`, no `id`).
    Notification {
        /// The method.
        method: Cow<'a, str>,
        /// The params, if any.
        params: Option<&'a RawValue>,
    },
    /// A response (`id` and `result` or `error`).
    Response {
        /// The id, as its JSON text.
        id: &'a RawValue,
        /// The result, when it succeeded.
        result: Option<&'a RawValue>,
        /// The error, when it failed.
        error: Option<&'a RawValue>,
    },
}

/// Why a line is not a message the proxy can serve.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invalid {
    /// The error code to answer a client with.
    pub code: i64,
    /// What is wrong.
    pub message: String,
}

/// Classifies one line.
pub fn classify(line: &[u8]) -> Result<Message<'_>, Invalid> {
    // serde also reads a struct from an array (fields by position): only objects are messages.
    if line.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        return Err(not_an_object(line));
    }
    // JSON allows a bare CR between tokens, and some stdio readers (Python's text mode) take it
    // as a line break: a message with one inside could carry a second message the proxy never
    // saw. Only the CR of a final CRLF is accepted.
    let body = line.strip_suffix(b"\n").unwrap_or(line);
    let body = body.strip_suffix(b"\r").unwrap_or(body);
    if body.contains(&b'\r') {
        return Err(Invalid {
            code: code::INVALID_REQUEST,
            message: "a carriage return inside a message: MCP stdio messages are single lines"
                .into(),
        });
    }
    let env: Envelope<'_> = match serde_json::from_slice(line) {
        Ok(env) => env,
        Err(e) => return Err(not_an_envelope(line, e)),
    };
    let is_null = |id: &RawValue| id.get() == "null";
    match (env.id, env.method) {
        (Some(id), Some(method)) => {
            if is_null(id) {
                return Err(Invalid {
                    code: code::INVALID_REQUEST,
                    message: "a request id must be a string or a number, not null".into(),
                });
            }
            check_id(id)?;
            Ok(Message::Request {
                id,
                method,
                params: env.params,
            })
        }
        (None, Some(method)) => {
            if method == "tools/call" {
                return Err(Invalid {
                    code: code::INVALID_REQUEST,
                    message: "tools/call must be a request with an id, not a notification".into(),
                });
            }
            Ok(Message::Notification {
                method,
                params: env.params,
            })
        }
        (Some(id), None) if env.result.is_some() || env.error.is_some() => {
            // `"id": null` is how JSON-RPC answers a request it could not read.
            if !(is_null(id) && env.error.is_some()) {
                check_id(id)?;
            }
            Ok(Message::Response {
                id,
                result: env.result,
                error: env.error,
            })
        }
        _ => Err(Invalid {
            code: code::INVALID_REQUEST,
            message: "not a JSON-RPC request, notification or response".into(),
        }),
    }
}

/// The id as a key that survives a peer re-encoding it (`"\u0078"` and `"x"` are one id).
pub fn id_key(id: &RawValue) -> String {
    let raw = id.get();
    // The common cases are already canonical: small integers and strings without escapes.
    let plain_int = raw.len() < 16
        && raw.bytes().all(|b| b.is_ascii_digit())
        && (raw == "0" || !raw.starts_with('0'));
    let plain_str = raw.len() >= 2 && raw.starts_with('"') && !raw.contains('\\');
    if plain_int || plain_str {
        return raw.to_owned();
    }
    match serde_json::from_str::<Value>(raw) {
        Ok(v) => id_key_value(&v),
        Err(_) => id.get().to_owned(),
    }
}

/// [`id_key`] of an id already decoded (e.g. a cancellation's `requestId`). Numbers are keyed
/// by value, as a server reads them: `2`, `2.0`, `2e0`, `20e-1` and `-0` vs `0` are one id (a
/// JavaScript server re-encodes `2.0` as `2`; a Python server compares them equal), and integers
/// beyond 2^53, which a JavaScript server cannot tell apart, are keyed by their nearest double.
pub fn id_key_value(v: &Value) -> String {
    match v {
        Value::Number(n) => match n.as_f64() {
            Some(f) if f.is_finite() && f.fract() == 0.0 && f.abs() < 9.2e18 => {
                // Exact for |f| < 2^53; beyond that, the double's own integer value.
                format!("{}", f as i64)
            }
            Some(f) if f.is_finite() => format!("{f:e}"),
            _ => n.to_string(),
        },
        other => other.to_string(),
    }
}

fn check_id(id: &RawValue) -> Result<(), Invalid> {
    let raw = id.get();
    // The common ids need no decoding: a run of digits, or a string (the text is valid JSON).
    if raw.starts_with('"')
        || (!raw.is_empty() && raw.len() < 20 && raw.bytes().all(|b| b.is_ascii_digit()))
    {
        return Ok(());
    }
    let ok = match serde_json::from_str::<Value>(raw) {
        Ok(Value::String(_)) => true,
        Ok(Value::Number(n)) => n.as_i64().is_some() || n.as_u64().is_some() || n.is_f64(),
        _ => false,
    };
    if ok {
        Ok(())
    } else {
        Err(Invalid {
            code: code::INVALID_REQUEST,
            message: "id must be a string or a number".into(),
        })
    }
}

fn not_an_envelope(line: &[u8], e: serde_json::Error) -> Invalid {
    if let Err(e) = serde_json::from_slice::<IgnoredAny>(line) {
        return Invalid {
            code: code::PARSE_ERROR,
            message: format!("parse error: {e}"),
        };
    }
    Invalid {
        code: code::INVALID_REQUEST,
        message: format!("invalid request: {e}"),
    }
}

fn not_an_object(line: &[u8]) -> Invalid {
    if let Err(e) = serde_json::from_slice::<IgnoredAny>(line) {
        return Invalid {
            code: code::PARSE_ERROR,
            message: format!("parse error: {e}"),
        };
    }
    let message = if line.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'[') {
        "JSON-RPC batches are not supported (no MCP revision served here uses them)"
    } else {
        "a JSON-RPC message must be a JSON object"
    };
    Invalid {
        code: code::INVALID_REQUEST,
        message: message.into(),
    }
}

/// The tool name and arguments of a `tools/call`.
#[derive(Debug)]
pub struct ToolCallParams<'a> {
    /// `params.name`.
    pub name: Cow<'a, str>,
    /// `params.arguments` as written (`{}` when absent): an object or `null`, valid JSON that
    /// decodes (numbers in range, nesting within limits). Read with [`Self::arguments`].
    pub arguments_raw: &'a str,
    /// Whether `_meta` declares the elicitation capability (2026-07-28 lifecycle).
    pub meta_elicitation: bool,
    /// `params.requestState` (2026-07-28: a call re-sent after an `input_required` result).
    pub request_state: Option<Cow<'a, str>>,
    /// `params.inputResponses`.
    pub input_responses: Option<Value>,
}

/// Why a `tools/call` cannot be decided on ([`tool_call_params`]).
#[derive(Debug, thiserror::Error)]
pub enum CallParamsError {
    /// The request has no `params`.
    #[error("tools/call without params")]
    NoParams,
    /// `params` does not decode.
    #[error("tools/call params are not usable: {0}")]
    Params(#[source] serde_json::Error),
    /// `params.name` is empty.
    #[error("tools/call with an empty tool name")]
    EmptyName,
    /// `params.arguments` does not decode.
    #[error("tools/call arguments are not usable: {0}")]
    Arguments(#[source] serde_json::Error),
    /// `params.arguments` is neither an object nor `null`.
    #[error("tools/call arguments must be an object")]
    NotAnObject,
    /// `params.inputResponses` does not decode.
    #[error("tools/call inputResponses are not usable: {0}")]
    InputResponses(#[source] serde_json::Error),
}

/// Reads `params` of a `tools/call`; `Err` says why it cannot be decided on.
pub fn tool_call_params(params: Option<&RawValue>) -> Result<ToolCallParams<'_>, CallParamsError> {
    let params = params.ok_or(CallParamsError::NoParams)?;
    let p: CallParams<'_> = serde_json::from_str(params.get()).map_err(CallParamsError::Params)?;
    if p.name.is_empty() {
        return Err(CallParamsError::EmptyName);
    }
    let raw = p.arguments.map(RawValue::get).unwrap_or("{}");
    // Checked as a decoded value would be, without building one: the policy reads only the
    // members its constraints name.
    serde_json::from_str::<Decodes>(raw).map_err(CallParamsError::Arguments)?;
    if !raw.trim_start().starts_with('{') && raw.trim() != "null" {
        return Err(CallParamsError::NotAnObject);
    }
    let meta_elicitation = p
        .meta
        .and_then(|m| serde_json::from_str::<Value>(m.get()).ok())
        .and_then(|m| m.get(CLIENT_CAPABILITIES_META)?.get("elicitation").cloned())
        .is_some_and(|e| !e.is_null());
    let input_responses = match p.input_responses {
        Some(r) => Some(serde_json::from_str(r.get()).map_err(CallParamsError::InputResponses)?),
        None => None,
    };
    Ok(ToolCallParams {
        name: p.name,
        arguments_raw: raw,
        meta_elicitation,
        request_state: p.request_state,
        input_responses,
    })
}

impl ToolCallParams<'_> {
    /// The arguments, for the policy: members are read from the text only where a constraint
    /// looks.
    pub fn arguments(&self) -> thoth_policy::Arguments<'_> {
        thoth_policy::Arguments::Json(self.arguments_raw)
    }

    /// The arguments decoded (an approval shows and binds them whole).
    pub fn arguments_value(&self) -> Value {
        serde_json::from_str(self.arguments_raw).unwrap_or(Value::Null)
    }
}

/// A JSON value read through as `serde_json::Value` would read it (so the same texts fail),
/// building nothing.
struct Decodes;

impl<'de> Deserialize<'de> for Decodes {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(DecodesVisitor)
    }
}

struct DecodesVisitor;

impl<'de> Visitor<'de> for DecodesVisitor {
    type Value = Decodes;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Decodes, E> {
        Ok(Decodes)
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<Decodes, E> {
        Ok(Decodes)
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<Decodes, E> {
        Ok(Decodes)
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Decodes, E> {
        Ok(Decodes)
    }
    fn visit_str<E: de::Error>(self, _: &str) -> Result<Decodes, E> {
        Ok(Decodes)
    }
    fn visit_unit<E: de::Error>(self) -> Result<Decodes, E> {
        Ok(Decodes)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Decodes, A::Error> {
        while seq.next_element::<Decodes>()?.is_some() {}
        Ok(Decodes)
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Decodes, A::Error> {
        while map.next_key::<Decodes>()?.is_some() {
            map.next_value::<Decodes>()?;
        }
        Ok(Decodes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_each_kind() {
        let m =
            classify(br#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"x"}}"#)
                .unwrap();
        assert!(matches!(m, Message::Request { ref method, .. } if method == "tools/call"));
        let m = classify(br#"{"jsonrpc":"2.0","method":"notifications/cancelled"}"#).unwrap();
        assert!(matches!(m, Message::Notification { .. }));
        let m = classify(br#"{"jsonrpc":"2.0","id":"a","result":{}}"#).unwrap();
        assert!(matches!(
            m,
            Message::Response {
                result: Some(_),
                error: None,
                ..
            }
        ));
        let m = classify(br#"{"jsonrpc":"2.0","id":"a","error":{"code":1}}"#).unwrap();
        assert!(matches!(
            m,
            Message::Response {
                result: None,
                error: Some(_),
                ..
            }
        ));
    }

    #[test]
    fn id_keys_survive_re_encoding() {
        let raw = |s: &str| RawValue::from_string(s.to_owned()).unwrap();
        assert_eq!(id_key(&raw(r#""\u0078""#)), id_key(&raw(r#""x""#)));
        assert_eq!(id_key(&raw("7")), "7");
    }

    #[test]
    fn numeric_ids_are_keyed_by_value_as_servers_read_them() {
        let raw = |s: &str| RawValue::from_string(s.to_owned()).unwrap();
        for same in ["2.0", "2e0", "20e-1", "2E0", "0.2e1", "2.000"] {
            assert_eq!(id_key(&raw(same)), "2", "{same}");
        }
        assert_eq!(id_key(&raw("-0")), id_key(&raw("0")));
        assert_eq!(id_key(&raw("-0.0")), "0");
        assert_ne!(id_key(&raw("2.5")), id_key(&raw("2")));
        assert_ne!(id_key(&raw("\"2\"")), id_key(&raw("2")));
        // A JavaScript server reads both as 9007199254740992.
        assert_eq!(
            id_key(&raw("9007199254740993")),
            id_key(&raw("9007199254740992"))
        );
        assert_eq!(id_key_value(&serde_json::json!(2.0)), id_key(&raw("2")));
    }

    #[test]
    fn escaped_method_names_are_seen_as_written() {
        let m = classify(br#"{"id":1,"method":"tools\/call","params":{"name":"w"}}"#).unwrap();
        assert!(matches!(m, Message::Request { ref method, .. } if method == "tools/call"));
    }

    #[test]
    fn hostile_shapes_are_refused() {
        assert_eq!(classify(b"{nope").unwrap_err().code, code::PARSE_ERROR);
        assert_eq!(classify(b"\xff\xfe").unwrap_err().code, code::PARSE_ERROR);
        let batch = classify(br#"[{"id":1,"method":"tools/call"}]"#).unwrap_err();
        assert_eq!(batch.code, code::INVALID_REQUEST);
        assert!(batch.message.contains("batches"));
        // Duplicate keys could make the proxy and the server see different methods.
        let dup = classify(br#"{"id":1,"method":"tools/list","method":"tools/call"}"#).unwrap_err();
        assert_eq!(dup.code, code::INVALID_REQUEST);
        assert_eq!(
            classify(br#"{"id":{},"method":"x"}"#).unwrap_err().code,
            code::INVALID_REQUEST
        );
        assert_eq!(
            classify(br#"{"id":1}"#).unwrap_err().code,
            code::INVALID_REQUEST
        );
        assert_eq!(classify(b"42").unwrap_err().code, code::INVALID_REQUEST);
        // A bare CR could hide a second message from the proxy but not from the server.
        let smuggled = b"{\"jsonrpc\":\"2.0\",\"method\":\"notifications/progress\",\"params\":\r{\"id\":7,\"method\":\"tools/call\",\"params\":{\"name\":\"w\"}}\r}\n";
        assert_eq!(classify(smuggled).unwrap_err().code, code::INVALID_REQUEST);
        assert!(classify(b"{\"jsonrpc\":\"2.0\",\"method\":\"x\"}\r\n").is_ok());
        // A null id or no id cannot turn a tools/call into something the proxy forwards.
        let null_id =
            classify(br#"{"jsonrpc":"2.0","id":null,"method":"tools/call","params":{"name":"w"}}"#);
        assert_eq!(null_id.unwrap_err().code, code::INVALID_REQUEST);
        let no_id = classify(br#"{"jsonrpc":"2.0","method":"tools/call","params":{"name":"w"}}"#);
        assert_eq!(no_id.unwrap_err().code, code::INVALID_REQUEST);
        // Ids that cannot be read back are refused.
        assert_eq!(
            classify(br#"{"id":1e400,"method":"x"}"#).unwrap_err().code,
            code::INVALID_REQUEST
        );
        // A server's error for a request it could not read has id null, and still passes.
        let e = classify(br#"{"jsonrpc":"2.0","id":null,"error":{"code":-32700,"message":"x"}}"#);
        assert!(matches!(e, Ok(Message::Response { .. })));
        // An array is never read positionally as a request.
        let positional = classify(br#"[1, "tools/call", {"name": "w"}]"#).unwrap_err();
        assert_eq!(positional.code, code::INVALID_REQUEST);
    }

    #[test]
    fn tool_call_params_are_checked() {
        let raw = |s: &str| RawValue::from_string(s.to_owned()).unwrap();
        let p = raw(r#"{"name":"w","arguments":{"path":"/x"}}"#);
        let c = tool_call_params(Some(&p)).unwrap();
        assert_eq!(
            (c.name.as_ref(), c.arguments_value()["path"].as_str()),
            ("w", Some("/x"))
        );
        assert!(tool_call_params(None).is_err());
        assert!(tool_call_params(Some(&raw(r#"{"arguments":{}}"#))).is_err());
        assert!(tool_call_params(Some(&raw(r#"{"name":""}"#))).is_err());
        assert!(tool_call_params(Some(&raw(r#"{"name":"a","name":"b"}"#))).is_err());
        assert!(tool_call_params(Some(&raw(r#"{"name":"a","arguments":[1]}"#))).is_err());
        assert!(tool_call_params(Some(&raw(r#"{"name":"a","arguments":"{"}"#))).is_err());
        assert!(tool_call_params(Some(&raw(r#"{"name":"a","arguments":null}"#))).is_ok());
        // What a decoded value refuses is refused, though it is valid JSON text.
        let far = raw(r#"{"name":"a","arguments":{"x":[1e400]}}"#);
        assert!(
            tool_call_params(Some(&far))
                .unwrap_err()
                .to_string()
                .contains("not usable")
        );
        let deep = format!(
            r#"{{"name":"a","arguments":{{"x":{}{}}}}}"#,
            "[".repeat(200),
            "]".repeat(200)
        );
        assert!(tool_call_params(Some(&raw(&deep))).is_err());
    }
}
