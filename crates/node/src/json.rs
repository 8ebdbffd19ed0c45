//! Compact JSON for the per-job hot path: the store's records and the containers' inputs.
//!
//! Writes exactly what `serde_json::to_vec` writes for the same values (unit-tested against it),
//! straight into a byte buffer: strings are scanned a word at a time and copied in runs, where
//! serde_json's writer looks each byte up and goes through `io::Write` for every run and escape.
//! That was the largest single cost of the store's writer thread on the streaming path.
//!
//! Why it stays: with `serde_json` writing the records and the container inputs instead, the node
//! spent 67.2k–67.3k instructions per streamed job against 63.2k–63.9k with this writer (`make
//! count`, release builds counted in the same session, 2026-12-03): 5.8 % of the node's work.

use infernet_types::{ContainerInput, ContainerResult, JobLocation, JobResult, JobStatus};
use serde_json::Value;

/// Appends `s` as a JSON string.
pub(crate) fn write_str(out: &mut Vec<u8>, s: &str) {
    out.reserve(s.len() + 2);
    out.push(b'"');
    let bytes = s.as_bytes();
    let mut start = 0;
    while let Some(at) = next_escape(bytes, start) {
        out.extend_from_slice(&bytes[start..at]);
        escape(out, bytes[at]);
        start = at + 1;
    }
    out.extend_from_slice(&bytes[start..]);
    out.push(b'"');
}

/// Where the next byte that JSON must escape (`"`, `\` or a control character) is, from `from`.
fn next_escape(bytes: &[u8], from: usize) -> Option<usize> {
    let rest = &bytes[from..];
    let needs_escape = |&b: &u8| b < 0x20 || b == b'"' || b == b'\\';
    // Eight bytes at a time, the last eight overlapping the words before when the length is not a
    // multiple of eight; byte by byte only within a word that has a hit, and in short strings.
    let mut words = rest.chunks_exact(8);
    let mut at = 0;
    for word in &mut words {
        if has_escape(word) {
            break;
        }
        at += 8;
    }
    if at == rest.len() || (at + 8 > rest.len() && rest.len() >= 8 && !has_escape(&rest[rest.len() - 8..])) {
        return None;
    }
    rest[at..].iter().position(needs_escape).map(|i| from + at + i)
}

/// Whether one of these eight bytes needs escaping. A byte is zero in `x ^ pattern` where it
/// equals the pattern; "has a zero byte" and "has a byte below 0x20" are the usual word tricks,
/// exact as a yes or no for bytes below 0x80 (bytes from 0x80 never need escaping and are masked
/// out by `!word`).
fn has_escape(eight: &[u8]) -> bool {
    const ONES: u64 = u64::from_ne_bytes([0x01; 8]);
    const HIGHS: u64 = u64::from_ne_bytes([0x80; 8]);
    let word = u64::from_ne_bytes(eight.try_into().expect("eight bytes"));
    let below_space = word.wrapping_sub(ONES * 0x20);
    let quote = (word ^ (ONES * u64::from(b'"'))).wrapping_sub(ONES);
    let backslash = (word ^ (ONES * u64::from(b'\\'))).wrapping_sub(ONES);
    (below_space | quote | backslash) & !word & HIGHS != 0
}

fn escape(out: &mut Vec<u8>, b: u8) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    match b {
        b'"' => out.extend_from_slice(b"\\\""),
        b'\\' => out.extend_from_slice(b"\\\\"),
        b'\n' => out.extend_from_slice(b"\\n"),
        b'\r' => out.extend_from_slice(b"\\r"),
        b'\t' => out.extend_from_slice(b"\\t"),
        0x08 => out.extend_from_slice(b"\\b"),
        0x0c => out.extend_from_slice(b"\\f"),
        _ => out.extend_from_slice(&[
            b'\\',
            b'u',
            b'0',
            b'0',
            HEX[usize::from(b >> 4)],
            HEX[usize::from(b & 0xf)],
        ]),
    }
}

/// Appends `value`.
pub(crate) fn write_value(out: &mut Vec<u8>, value: &Value) {
    match value {
        Value::Null => out.extend_from_slice(b"null"),
        Value::Bool(true) => out.extend_from_slice(b"true"),
        Value::Bool(false) => out.extend_from_slice(b"false"),
        Value::Number(n) => {
            if let Some(u) = n.as_u64() {
                out.extend_from_slice(itoa::Buffer::new().format(u).as_bytes());
            } else if let Some(i) = n.as_i64() {
                out.extend_from_slice(itoa::Buffer::new().format(i).as_bytes());
            } else {
                // Floats (and arbitrary precision) as serde_json writes them; writing to a
                // vector cannot fail.
                let _ = serde_json::to_writer(&mut *out, n);
            }
        }
        Value::String(s) => write_str(out, s),
        Value::Array(items) => {
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_value(out, item);
            }
            out.push(b']');
        }
        Value::Object(map) => {
            out.push(b'{');
            for (i, (key, item)) in map.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_str(out, key);
                out.push(b':');
                write_value(out, item);
            }
            out.push(b'}');
        }
    }
}

fn write_result(out: &mut Vec<u8>, result: &ContainerResult) {
    match result {
        ContainerResult::Output { container, output } => {
            out.extend_from_slice(br#"{"container":"#);
            write_str(out, container);
            out.extend_from_slice(br#","output":"#);
            write_value(out, output);
        }
        ContainerResult::Error { container, error } => {
            out.extend_from_slice(br#"{"container":"#);
            write_str(out, container);
            out.extend_from_slice(br#","error":"#);
            write_str(out, error);
        }
    }
    out.push(b'}');
}

/// Appends `job` as its `Serialize` writes it (the API's wire form).
pub(crate) fn write_job(out: &mut Vec<u8>, job: &JobResult) {
    out.extend_from_slice(br#"{"id":"#);
    write_str(out, &job.id);
    if let Some(intermediate) = &job.intermediate_results {
        out.extend_from_slice(br#","intermediate_results":["#);
        for (i, result) in intermediate.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            write_result(out, result);
        }
        out.push(b']');
    }
    if let Some(receipt) = &job.receipt {
        out.extend_from_slice(br#","receipt":"#);
        write_str(out, receipt);
    }
    out.extend_from_slice(br#","result":"#);
    match &job.result {
        Some(result) => write_result(out, result),
        None => out.extend_from_slice(b"null"),
    }
    out.extend_from_slice(match job.status {
        JobStatus::Running => br#","status":"running"}"#,
        JobStatus::Success => br#","status":"success"}"#,
        JobStatus::Failed => br#","status":"failed"}"#,
    });
}

fn location(l: JobLocation) -> &'static [u8] {
    match l {
        JobLocation::Onchain => b"0",
        JobLocation::Offchain => b"1",
        JobLocation::Stream => b"2",
    }
}

/// `input` as its `Serialize` writes it: a container's request body.
pub(crate) fn container_input(input: &ContainerInput) -> Vec<u8> {
    let mut out = Vec::with_capacity(128);
    out.extend_from_slice(br#"{"source":"#);
    out.extend_from_slice(location(input.source));
    out.extend_from_slice(br#","destination":"#);
    out.extend_from_slice(location(input.destination));
    out.extend_from_slice(br#","data":"#);
    write_value(&mut out, &input.data);
    if let Some(proof) = input.requires_proof {
        out.extend_from_slice(if proof {
            br#","requires_proof":true}"#
        } else {
            br#","requires_proof":false}"#
        });
    } else {
        out.push(b'}');
    }
    out
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn str_of(s: &str) -> String {
        let mut out = Vec::new();
        write_str(&mut out, s);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn strings_are_escaped_as_serde_json_escapes_them() {
        let mut cases: Vec<String> = [
            "",
            "hello, world!",
            "a\"b",
            "back\\slash",
            "line\nfeed\r\ttab",
            "\u{8}\u{c}\u{1}\u{1f}\u{7f}",
            "héllo wörld ✓ 🦀",
            "0123456789abcdef\"0123456789abcdef\\",
        ]
        .into_iter()
        .map(String::from)
        .collect();
        // Every byte value that can stand alone, at every offset in and around a word.
        for b in 0u8..0x80 {
            for offset in 0..17 {
                let mut s = "x".repeat(offset);
                s.push(char::from(b));
                s.push_str(&"y".repeat(17 - offset));
                cases.push(s);
            }
        }
        // And at every position of strings of every length up to three words.
        for len in 1..=24 {
            for at in 0..len {
                for b in [0x01, 0x1f, b'"', b'\\', b'\n'] {
                    let mut s = "z".repeat(len);
                    s.replace_range(at..=at, char::from(b).encode_utf8(&mut [0; 4]));
                    cases.push(s);
                }
            }
        }
        for s in &cases {
            assert_eq!(str_of(s), serde_json::to_string(s).unwrap(), "{s:?}");
        }
    }

    #[test]
    fn values_jobs_and_inputs_are_written_as_their_serialize_writes_them() {
        let output = json!({"output": "tok \"1\"\n", "n": [1, -2, 3.5, 1e300, null, true, false],
            "nested": {"": {}, "k\u{1}": []}, "big": u64::MAX, "neg": i64::MIN});
        let results = [
            ContainerResult::Output {
                container: "a\"b".into(),
                output: output.clone(),
            },
            ContainerResult::Error {
                container: "c".into(),
                error: "failed\twith \\ this".into(),
            },
        ];
        let jobs = [
            JobResult::running("5f0c-id"),
            JobResult::finished("id1", vec![results[0].clone()]),
            JobResult::finished("id2", results.to_vec()),
            JobResult {
                intermediate_results: None,
                ..JobResult::finished("id3", results.to_vec())
            },
            JobResult {
                receipt: Some(r#"{"id":"e","content":"{\"job\":\"id4\"}"}"#.into()),
                ..JobResult::finished("id4", results.to_vec())
            },
        ];
        for job in &jobs {
            let mut out = Vec::new();
            write_job(&mut out, job);
            assert_eq!(String::from_utf8(out).unwrap(), serde_json::to_string(job).unwrap());
        }
        for requires_proof in [None, Some(true), Some(false)] {
            let input = ContainerInput {
                source: JobLocation::Onchain,
                destination: JobLocation::Stream,
                data: output.clone(),
                requires_proof,
            };
            assert_eq!(container_input(&input), serde_json::to_vec(&input).unwrap());
        }
    }
}
