//! What a container's output becomes on chain: the `input`, `output` and `proof` bytes of
//! `deliverCompute`, encoded exactly as Ritual's node does so consumers decode them unchanged.
//!
//! An output object with all of `raw_input`, `processed_input`, `raw_output`, `processed_output`
//! and `proof` (un-prefixed hex, `null` for empty) gives
//! `input = abi.encode(bytes raw_input, bytes processed_input)`,
//! `output = abi.encode(bytes raw_output, bytes processed_output)` and `proof` as raw bytes.
//! Anything else is delivered as `output = abi.encode(string)` of the output's Python `repr`
//! (`{'output': 'hi'}`), with empty input and proof.

use alloy::{primitives::Bytes, sol_types::SolValue};
use serde_json::{Map, Value};

/// The bytes of one delivery.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ChainOutput {
    /// `input` argument.
    pub input: Bytes,
    /// `output` argument.
    pub output: Bytes,
    /// `proof` argument.
    pub proof: Bytes,
}

/// Why an output cannot be delivered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EncodingError {
    /// One of the five keys is a string that is not hex.
    #[error("output.{key}: not hex ({message})")]
    NotHex {
        /// The key.
        key: &'static str,
        /// The decoder's message.
        message: String,
    },
    /// One of the five keys is neither a string nor `null`.
    #[error("output.{key}: expected a hex string, found {found}")]
    NotString {
        /// The key.
        key: &'static str,
        /// What it holds.
        found: String,
    },
    /// The container's answer is not JSON.
    #[error("output is not JSON: {0}")]
    NotJson(String),
}

const FIVE_KEYS: [&str; 5] = [
    "raw_input",
    "processed_input",
    "raw_output",
    "processed_output",
    "proof",
];

fn hex_field(obj: &Map<String, Value>, key: &'static str) -> Result<Vec<u8>, EncodingError> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::String(s)) => {
            alloy::primitives::hex::decode(s.strip_prefix("0x").unwrap_or(s)).map_err(|e| EncodingError::NotHex {
                key,
                message: e.to_string(),
            })
        }
        Some(other) => Err(EncodingError::NotString {
            key,
            found: other.to_string(),
        }),
    }
}

/// Encodes a container's final output for delivery; `raw` is the container's answer as sent, so
/// the `repr` keeps its key order (Python dicts keep insertion order).
pub fn encode_output(output: &Value, raw: &[u8]) -> Result<ChainOutput, EncodingError> {
    if let Value::Object(obj) = output
        && FIVE_KEYS.iter().all(|k| obj.contains_key(*k))
    {
        let raw_input = hex_field(obj, "raw_input")?;
        let processed_input = hex_field(obj, "processed_input")?;
        let raw_output = hex_field(obj, "raw_output")?;
        let processed_output = hex_field(obj, "processed_output")?;
        let proof = hex_field(obj, "proof")?;
        return Ok(ChainOutput {
            input: (Bytes::from(raw_input), Bytes::from(processed_input))
                .abi_encode_params()
                .into(),
            output: (Bytes::from(raw_output), Bytes::from(processed_output))
                .abi_encode_params()
                .into(),
            proof: proof.into(),
        });
    }
    Ok(ChainOutput {
        input: Bytes::new(),
        output: python_repr(raw)?.abi_encode().into(),
        proof: Bytes::new(),
    })
}

/// Python's `repr` of what `json.loads` makes of the JSON text `raw`.
pub fn python_repr(raw: &[u8]) -> Result<String, EncodingError> {
    let mut out = String::with_capacity(raw.len() + 16);
    let literals = number_literals(raw);
    let mut numbers = literals.iter();
    let mut de = serde_json::Deserializer::from_slice(raw);
    let repr = Repr {
        out: &mut out,
        numbers: &mut numbers,
    };
    serde::de::DeserializeSeed::deserialize(repr, &mut de).map_err(|e| EncodingError::NotJson(e.to_string()))?;
    Ok(out)
}

/// The number literals of a JSON text, outside its strings, in document order. The deserializer
/// visits numbers in that same order, and hands an integer past 64 bits over as a float; its
/// literal keeps the digits that Python's `int` keeps.
fn number_literals(raw: &[u8]) -> Vec<&[u8]> {
    let mut literals = Vec::new();
    let (mut i, mut in_string) = (0, false);
    while i < raw.len() {
        match raw[i] {
            b'\\' if in_string => i += 1,
            b'"' => in_string = !in_string,
            b'-' | b'0'..=b'9' if !in_string => {
                let start = i;
                while i < raw.len() && matches!(raw[i], b'0'..=b'9' | b'-' | b'+' | b'.' | b'e' | b'E') {
                    i += 1;
                }
                literals.push(&raw[start..i]);
                continue;
            }
            _ => {}
        }
        i += 1;
    }
    literals
}

/// The literal as Python prints the `int` it parses to, if it is an integer literal (JSON allows
/// no leading zeros, so only `-0` prints otherwise).
fn integer_literal(literal: &[u8]) -> Option<&str> {
    let digits = literal.strip_prefix(b"-").unwrap_or(literal);
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    if digits == b"0" {
        return Some("0");
    }
    std::str::from_utf8(literal).ok()
}

/// Writes the `repr` of the JSON value it visits, in document order.
struct Repr<'a, 'r> {
    out: &'a mut String,
    /// The number literals not visited yet.
    numbers: &'a mut std::slice::Iter<'r, &'r [u8]>,
}

impl<'r> Repr<'_, 'r> {
    /// The same writer, for a nested value.
    fn nested(&mut self) -> Repr<'_, 'r> {
        Repr {
            out: &mut *self.out,
            numbers: &mut *self.numbers,
        }
    }
}

impl<'de> serde::de::DeserializeSeed<'de> for Repr<'_, '_> {
    type Value = ();

    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> serde::de::Visitor<'de> for Repr<'_, '_> {
    type Value = ();

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<(), E> {
        self.out.push_str(if v { "True" } else { "False" });
        Ok(())
    }

    fn visit_i64<E>(self, v: i64) -> Result<(), E> {
        self.numbers.next();
        self.out.push_str(&v.to_string());
        Ok(())
    }

    fn visit_u64<E>(self, v: u64) -> Result<(), E> {
        self.numbers.next();
        self.out.push_str(&v.to_string());
        Ok(())
    }

    fn visit_f64<E>(self, v: f64) -> Result<(), E> {
        match self.numbers.next().and_then(|literal| integer_literal(literal)) {
            Some(integer) => self.out.push_str(integer),
            None => self.out.push_str(&float_repr(v)),
        }
        Ok(())
    }

    fn visit_str<E>(self, v: &str) -> Result<(), E> {
        string_repr(v, self.out);
        Ok(())
    }

    fn visit_unit<E>(self) -> Result<(), E> {
        self.out.push_str("None");
        Ok(())
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(mut self, mut seq: A) -> Result<(), A::Error> {
        self.out.push('[');
        let mut first = true;
        loop {
            let len = self.out.len();
            if !first {
                self.out.push_str(", ");
            }
            if seq.next_element_seed(self.nested())?.is_none() {
                self.out.truncate(len);
                break;
            }
            first = false;
        }
        self.out.push(']');
        Ok(())
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(mut self, mut map: A) -> Result<(), A::Error> {
        self.out.push('{');
        let mut first = true;
        while let Some(key) = map.next_key::<std::borrow::Cow<'de, str>>()? {
            if !first {
                self.out.push_str(", ");
            }
            first = false;
            string_repr(&key, self.out);
            self.out.push_str(": ");
            map.next_value_seed(self.nested())?;
        }
        self.out.push('}');
        Ok(())
    }
}

/// `repr(float)`: the shortest digits that round-trip, fixed notation for exponents in
/// `[-4, 16)`, otherwise `d.ddde+XX`.
fn float_repr(f: f64) -> String {
    if f.is_nan() {
        return "nan".into();
    }
    if f.is_infinite() {
        return if f > 0.0 { "inf".into() } else { "-inf".into() };
    }
    // `{:e}` gives the shortest round-trip digits: "1.5e0", "1e16", "-2.5e-7".
    let sci = format!("{f:e}");
    let (mantissa, exp) = sci.split_once('e').unwrap_or((&sci, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    let negative = mantissa.starts_with('-');
    let digits: String = mantissa.chars().filter(|c| c.is_ascii_digit()).collect();
    let sign = if negative { "-" } else { "" };
    if (-4..16).contains(&exp) {
        let point = exp + 1;
        let body = if point <= 0 {
            format!("0.{}{digits}", "0".repeat((-point) as usize))
        } else if point as usize >= digits.len() {
            format!("{digits}{}.0", "0".repeat(point as usize - digits.len()))
        } else {
            let (int, frac) = digits.split_at(point as usize);
            format!("{int}.{frac}")
        };
        format!("{sign}{body}")
    } else {
        let (first, rest) = digits.split_at(1);
        let mantissa = if rest.is_empty() {
            first.to_string()
        } else {
            format!("{first}.{rest}")
        };
        let exp_sign = if exp < 0 { '-' } else { '+' };
        format!("{sign}{mantissa}e{exp_sign}{:02}", exp.abs())
    }
}

/// `repr(str)`: single quotes unless the text has a single quote and no double quote.
fn string_repr(s: &str, out: &mut String) {
    let quote = if s.contains('\'') && !s.contains('"') {
        '"'
    } else {
        '\''
    };
    out.push(quote);
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c == quote => {
                out.push('\\');
                out.push(c);
            }
            c if (c as u32) < 0x20 || c as u32 == 0x7f => out.push_str(&format!("\\x{:02x}", c as u32)),
            c if is_unprintable(c) => {
                let code = c as u32;
                if code <= 0xff {
                    out.push_str(&format!("\\x{code:02x}"));
                } else if code <= 0xffff {
                    out.push_str(&format!("\\u{code:04x}"));
                } else {
                    out.push_str(&format!("\\U{code:08x}"));
                }
            }
            c => out.push(c),
        }
    }
    out.push(quote);
}

/// Characters Python's `str.isprintable` rejects that JSON text can carry: C1 controls,
/// separators other than the ASCII space, format characters and unpaired surrogates' stand-ins.
fn is_unprintable(c: char) -> bool {
    matches!(c as u32,
        0x80..=0x9f | 0xa0 | 0xad | 0x1680 | 0x2000..=0x200f | 0x2028..=0x202f | 0x205f..=0x206f
        | 0x3000 | 0xfeff | 0xfff9..=0xfffb | 0xe000..=0xf8ff)
}

#[cfg(test)]
mod tests {
    use alloy::sol_types::SolValue;
    use serde_json::json;

    use super::*;

    #[test]
    fn repr_matches_python() {
        let repr = |text: &str| python_repr(text.as_bytes()).unwrap();
        assert_eq!(repr(r#"{"output": "hi"}"#), "{'output': 'hi'}");
        // Key order is the container's, as in a Python dict.
        assert_eq!(
            repr(r#"{"z": [1, -2, 1.5, true, false, null, []], "b": {"c": "it's"}, "a": {}}"#),
            r#"{'z': [1, -2, 1.5, True, False, None, []], 'b': {'c': "it's"}, 'a': {}}"#
        );
        assert_eq!(repr(r#""both ' and \"""#), r#"'both \' and "'"#);
        assert_eq!(repr(r#""tab\tnew\nline\\ é ✓""#), r"'tab\tnew\nline\\ é ✓'");
        assert_eq!(repr(r#""\u0001\u007f\u0085""#), r"'\x01\x7f\x85'");
        assert!(python_repr(b"{nope").is_err());
        // Integers past 64 bits keep every digit, as Python's int does; floats stay floats.
        assert_eq!(
            repr(r#"{"s": "a\"1 -2", "big": 340282366920938463463374607431768211456, "f": [1.5, 2e3, -0]}"#),
            r#"{'s': 'a"1 -2', 'big': 340282366920938463463374607431768211456, 'f': [1.5, 2000.0, 0]}"#
        );
        assert_eq!(
            repr("[-98765432109876543210, 18446744073709551615, 18446744073709551616.0]"),
            "[-98765432109876543210, 18446744073709551615, 1.8446744073709552e+19]"
        );
        for (f, text) in [
            (1.0, "1.0"),
            (0.1, "0.1"),
            (1e16, "1e+16"),
            (123456789012345.6, "123456789012345.6"),
            (0.0001, "0.0001"),
            (0.00001, "1e-05"),
            (-2.5e-7, "-2.5e-07"),
            (1.5e300, "1.5e+300"),
        ] {
            assert_eq!(float_repr(f), text, "{f}");
        }
    }

    #[test]
    fn five_keys_become_abi_encoded_bytes() {
        let out = encode_output(
            &json!({
                "raw_input": "01", "processed_input": null, "raw_output": "beef",
                "processed_output": "", "proof": "ff00"
            }),
            b"",
        )
        .unwrap();
        let (ri, pi) = <(Bytes, Bytes)>::abi_decode_params(&out.input).unwrap();
        assert_eq!((ri.to_vec(), pi.to_vec()), (vec![1], vec![]));
        let (ro, po) = <(Bytes, Bytes)>::abi_decode_params(&out.output).unwrap();
        assert_eq!((ro.to_vec(), po.to_vec()), (vec![0xbe, 0xef], vec![]));
        assert_eq!(out.proof.to_vec(), vec![0xff, 0x00]);
        let err = encode_output(
            &json!({
                "raw_input": "zz", "processed_input": "", "raw_output": "", "processed_output": "", "proof": ""
            }),
            b"",
        )
        .unwrap_err();
        assert!(err.to_string().starts_with("output.raw_input"), "{err}");
    }

    #[test]
    fn anything_else_is_the_repr_string() {
        let raw = br#"{"output": {"message": "hello, world!"}}"#;
        let out = encode_output(&serde_json::from_slice(raw).unwrap(), raw).unwrap();
        assert!(out.input.is_empty() && out.proof.is_empty());
        assert_eq!(
            String::abi_decode(&out.output).unwrap(),
            "{'output': {'message': 'hello, world!'}}"
        );
    }
}
