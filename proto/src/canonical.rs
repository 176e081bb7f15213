//! Canonical JSON: object keys sorted by their UTF-8 bytes, no whitespace,
//! strings and numbers as serde_json writes them. Two equal `Value`s always give the same bytes,
//! whatever order their keys were parsed or built in.

use serde_json::Value;

/// Appends the canonical bytes of `value` to `out`.
pub fn write_canonical(value: &Value, out: &mut Vec<u8>) {
    match value {
        Value::Object(map) => {
            let mut entries: Vec<(&String, &Value)> = map.iter().collect();
            entries.sort_unstable_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
            out.push(b'{');
            for (i, (k, v)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_scalar(&Value::String(k.clone()), out);
                out.push(b':');
                write_canonical(v, out);
            }
            out.push(b'}');
        }
        Value::Array(items) => {
            out.push(b'[');
            for (i, v) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_canonical(v, out);
            }
            out.push(b']');
        }
        scalar => write_scalar(scalar, out),
    }
}

fn write_scalar(value: &Value, out: &mut Vec<u8>) {
    // Writing a scalar into a Vec cannot fail.
    serde_json::to_writer(&mut *out, value).expect("serializing a JSON scalar into memory");
}

/// The canonical bytes of `value`.
pub fn to_canonical(value: &Value) -> Vec<u8> {
    let mut out = Vec::new();
    write_canonical(value, &mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_order_does_not_matter() {
        let a: Value = serde_json::from_str(r#"{"b":1,"a":{"y":[1,"x"],"x":null}}"#).unwrap();
        let b: Value =
            serde_json::from_str(r#"{ "a": {"x":null, "y":[1, "x"]}, "b": 1 }"#).unwrap();
        assert_eq!(to_canonical(&a), to_canonical(&b));
        assert_eq!(
            to_canonical(&a),
            br#"{"a":{"x":null,"y":[1,"x"]},"b":1}"#.to_vec()
        );
    }

    #[test]
    fn strings_are_escaped() {
        let v = serde_json::json!({"k\"": "line\nbreak é"});
        assert_eq!(
            to_canonical(&v),
            "{\"k\\\"\":\"line\\nbreak é\"}".as_bytes()
        );
    }
}
