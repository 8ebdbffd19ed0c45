//! Our keys, NIP-98 requests and statements against an independent implementation (npm
//! `nostr-tools`, installed by `scripts/install-test-deps.sh`): what one signs, the other accepts;
//! what one gift-wraps, the other opens.

use std::{path::PathBuf, process::Command};

use infernet_identity::{
    Identity, dm,
    nip98::{self, AuthError, Received, Verifier},
    parse_public_key, statement, unix_now,
};

const URL: &str = "http://127.0.0.1:4000/admin/containers";

/// Runs `tests/js/nostr.mjs` with `args`: its output, or its error.
fn nostr_tools(args: &[&str]) -> Result<String, String> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/js");
    assert!(
        dir.join("node_modules/nostr-tools").is_dir(),
        "nostr-tools is not installed in {}: run scripts/install-test-deps.sh",
        dir.display()
    );
    let out = Command::new("node")
        .arg("nostr.mjs")
        .args(args)
        .current_dir(&dir)
        .output()
        .expect("node runs (install Node.js)");
    let text = |b: Vec<u8>| String::from_utf8_lossy(&b).trim().to_string();
    if out.status.success() {
        Ok(text(out.stdout))
    } else {
        Err(text(out.stderr))
    }
}

fn secret_hex(identity: &Identity) -> String {
    // The nsec's 32 bytes, as nostr-tools takes them.
    let (hrp, data) = bech32_decode(&identity.nsec());
    assert_eq!((hrp.as_str(), data.len()), ("nsec", 32));
    hex_encode(&data)
}

/// The payload of a bech32 string (NIP-19 `nsec`), decoded by hand so that this test does not
/// lean on the code it checks.
fn bech32_decode(s: &str) -> (String, Vec<u8>) {
    const CHARSET: &str = "qpzry9x8gf2tvdw0s3jn54khce6mua7l";
    let (hrp, rest) = s.split_at(s.rfind('1').unwrap());
    let values: Vec<u8> = rest[1..].chars().map(|c| CHARSET.find(c).unwrap() as u8).collect();
    let data = &values[..values.len() - 6];
    let (mut acc, mut bits, mut out) = (0u32, 0u32, Vec::new());
    for v in data {
        acc = (acc << 5) | u32::from(*v);
        bits += 5;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    (hrp.to_string(), out)
}

fn hex_encode(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[test]
fn a_request_signed_by_nostr_tools_is_verified_here() {
    let operator = Identity::generate();
    let body = r#"{"id":"llm","image":"ritual/llm:1"}"#;
    let header = nostr_tools(&["sign", &secret_hex(&operator), "POST", URL, body]).unwrap();
    let verifier = Verifier::new(60, 1024);
    let received = Received {
        method: "POST",
        urls: &[URL],
        body: body.as_bytes(),
    };
    let allowed = |key: &_| *key == operator.public_key();
    assert_eq!(
        verifier.verify(Some(&header), &received, unix_now(), allowed),
        Ok(operator.public_key())
    );
    // The same header again is a replay; for another path it is refused whatever the key.
    assert_eq!(
        verifier.verify(Some(&header), &received, unix_now(), allowed),
        Err(AuthError::Replayed)
    );
    let elsewhere = Received {
        urls: &["http://127.0.0.1:4000/admin/pause"],
        ..received
    };
    assert!(matches!(
        verifier.verify(Some(&header), &elsewhere, unix_now(), |_| true),
        Err(AuthError::Url { .. })
    ));
    let changed = Received {
        body: br#"{"id":"llm","image":"evil/llm:1"}"#,
        ..received
    };
    assert_eq!(
        Verifier::new(60, 8).verify(Some(&header), &changed, unix_now(), |_| true),
        Err(AuthError::PayloadMismatch)
    );
}

#[test]
fn a_request_signed_here_is_verified_by_nostr_tools() {
    let operator = Identity::generate();
    let header = nip98::authorization(&operator, "GET", URL, None);
    let signer = nostr_tools(&["verify", "GET", URL, &header]).unwrap();
    assert_eq!(parse_public_key(&signer).unwrap(), operator.public_key());
    let refused = nostr_tools(&["verify", "DELETE", URL, &header]).unwrap_err();
    assert!(refused.contains("method"), "{refused}");
}

#[test]
fn a_statement_signed_here_is_a_valid_event_for_nostr_tools() {
    let node = Identity::generate();
    let signed = statement::sign(&node, "infernet-node", &serde_json::json!({"url": URL})).unwrap();
    let signer = nostr_tools(&["verify-event", &signed]).unwrap();
    assert_eq!(signer, node.public_key().to_hex());
    let forged = signed.replace(URL, "http://127.0.0.1:9999");
    assert!(nostr_tools(&["verify-event", &forged]).is_err());
}

#[test]
fn direct_messages_open_both_ways_with_nostr_tools() {
    let (router, operator) = (Identity::generate(), Identity::generate());
    let wrap = dm::wrap(&router, &operator.public_key(), "[FIRING] offline on n1").unwrap();
    let rumor: serde_json::Value =
        serde_json::from_str(&nostr_tools(&["dm-open", &secret_hex(&operator), &wrap.json]).unwrap()).unwrap();
    assert_eq!(rumor["kind"], 14);
    assert_eq!(rumor["pubkey"], router.public_key().to_hex());
    assert_eq!(rumor["content"], "[FIRING] offline on n1");
    assert!(nostr_tools(&["dm-open", &secret_hex(&router), &wrap.json]).is_err());

    let theirs = nostr_tools(&["dm-wrap", &secret_hex(&operator), &router.public_key().to_hex(), "ack"]).unwrap();
    let opened = dm::unwrap(&router, &theirs).unwrap();
    assert_eq!((opened.sender, opened.kind), (operator.public_key(), 14));
    assert_eq!(opened.content, "ack");
}
