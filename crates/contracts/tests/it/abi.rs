//! ABI drift: the bindings generated from `contracts/out/` must carry exactly the selectors, event topics and
//! error selectors of the real Infernet SDK v1.1.0 (listed in `contracts/selectors.expected.json`), and the
//! container-id hashing must reproduce the reference vectors.

use std::collections::BTreeMap;

use alloy::hex;
use alloy::primitives::{B256, b256};
use alloy::sol_types::{SolCall, SolError, SolEvent};
use infernet_contracts::bindings::*;
use infernet_contracts::container_id;

const EXPECTED: &str = include_str!("../../../../contracts/selectors.expected.json");

/// `signature -> 0x-selector` of one generated `…Calls` / `…Events` / `…Errors` enum.
macro_rules! entries {
    ($enum:ty) => {
        <$enum>::SIGNATURES
            .iter()
            .zip(<$enum>::SELECTORS)
            .map(|(sig, sel)| (sig.to_string(), hex::encode_prefixed(sel)))
            .collect()
    };
}

/// What the bindings of `contract` declare for `kind` (`functions`, `events`, `errors`).
fn bound(contract: &str, kind: &str) -> Option<BTreeMap<String, String>> {
    Some(match (contract, kind) {
        ("Registry", "functions") => entries!(Registry::RegistryCalls),
        ("Coordinator", "functions") => entries!(Coordinator::CoordinatorCalls),
        ("Coordinator", "events") => entries!(Coordinator::CoordinatorEvents),
        ("Coordinator", "errors") => entries!(Coordinator::CoordinatorErrors),
        ("EIP712Coordinator", "functions") => entries!(EIP712Coordinator::EIP712CoordinatorCalls),
        ("EIP712Coordinator", "events") => entries!(EIP712Coordinator::EIP712CoordinatorEvents),
        ("EIP712Coordinator", "errors") => entries!(EIP712Coordinator::EIP712CoordinatorErrors),
        ("Inbox", "functions") => entries!(Inbox::InboxCalls),
        ("Inbox", "events") => entries!(Inbox::InboxEvents),
        ("Inbox", "errors") => entries!(Inbox::InboxErrors),
        ("Reader", "functions") => entries!(Reader::ReaderCalls),
        ("Fee", "functions") => entries!(Fee::FeeCalls),
        ("Fee", "events") => entries!(Fee::FeeEvents),
        ("Fee", "errors") => entries!(Fee::FeeErrors),
        ("WalletFactory", "functions") => entries!(WalletFactory::WalletFactoryCalls),
        ("WalletFactory", "events") => entries!(WalletFactory::WalletFactoryEvents),
        ("Wallet", "functions") => entries!(Wallet::WalletCalls),
        ("Wallet", "events") => entries!(Wallet::WalletEvents),
        ("Wallet", "errors") => entries!(Wallet::WalletErrors),
        ("BaseConsumer", "functions") => entries!(BaseConsumer::BaseConsumerCalls),
        ("BaseConsumer", "errors") => entries!(BaseConsumer::BaseConsumerErrors),
        ("CallbackConsumer", "functions") => entries!(CallbackConsumer::CallbackConsumerCalls),
        ("SubscriptionConsumer", "functions") => entries!(SubscriptionConsumer::SubscriptionConsumerCalls),
        ("Delegator", "functions") => entries!(Delegator::DelegatorCalls),
        ("Allowlist", "functions") => entries!(Allowlist::AllowlistCalls),
        ("Allowlist", "errors") => entries!(Allowlist::AllowlistErrors),
        ("IVerifier", "functions") => entries!(IVerifier::IVerifierCalls),
        ("AtomicVerifier", "functions") => entries!(AtomicVerifier::AtomicVerifierCalls),
        ("TestToken", "errors") => entries!(TestToken::TestTokenErrors),
        _ => return None,
    })
}

#[test]
fn every_reference_selector_topic_and_error_is_in_the_bindings() {
    let expected: serde_json::Value = serde_json::from_str(EXPECTED).expect("selectors.expected.json parses");
    let contracts = expected["contracts"].as_object().expect("`contracts` object");
    let mut checked = 0;
    let mut problems = Vec::new();
    for (contract, kinds) in contracts {
        for (kind, entries) in kinds.as_object().expect("kinds object") {
            let Some(bound) = bound(contract, kind) else {
                problems.push(format!("{contract}: no binding for its {kind}"));
                continue;
            };
            for (signature, selector) in entries.as_object().expect("entries object") {
                let want = selector.as_str().expect("hex string").to_lowercase();
                match bound.get(signature) {
                    Some(got) if *got == want => checked += 1,
                    Some(got) => problems.push(format!("{contract}.{signature}: bound {got}, reference {want}")),
                    None => problems.push(format!("{contract}: {kind} lacks {signature}")),
                }
            }
        }
    }
    assert!(problems.is_empty(), "ABI drift:\n{}", problems.join("\n"));
    assert!(
        checked >= 100,
        "only {checked} entries checked; is selectors.expected.json complete?"
    );
}

#[test]
fn typed_constants_the_node_relies_on() {
    use EIP712Coordinator as C;
    assert_eq!(C::deliverComputeCall::SELECTOR, hex!("c509543d"));
    assert_eq!(C::deliverComputeDelegateeCall::SELECTOR, hex!("9fff314a"));
    assert_eq!(C::createSubscriptionDelegateeCall::SELECTOR, hex!("9c092514"));
    assert_eq!(C::getSubscriptionCall::SELECTOR, hex!("a17b920b"));
    assert_eq!(Reader::readSubscriptionBatchCall::SELECTOR, hex!("3ddc29f5"));
    assert_eq!(Reader::readRedundancyCountBatchCall::SELECTOR, hex!("757f1c84"));
    assert_eq!(BaseConsumer::getContainerInputsCall::SELECTOR, hex!("962fad75"));
    assert_eq!(
        C::SubscriptionCreated::SIGNATURE_HASH,
        b256!("04344ed7a67fec80c444d56ee1cee242f3f75b91fecc8dbce8890069c82eb48e")
    );
    assert_eq!(
        C::SubscriptionFulfilled::SIGNATURE_HASH,
        b256!("c68fb0ae5cea2793405d29014d881bcda18f67122e0bcd7d0a577e118b64e4c8")
    );
    assert_eq!(
        Inbox::NewInboxItem::SIGNATURE_HASH,
        b256!("ac56b74ea9119b4c4e424d8ed4c3cec0c84d1f6b02200df5a8cd27eb756994d1")
    );
    assert_eq!(C::SignerMismatch::SELECTOR, hex!("10c74b03"));
    assert_eq!(C::SignatureExpired::SELECTOR, hex!("0819bdcd"));
    assert_eq!(C::InvalidSignature::SELECTOR, hex!("8baa579f"));
    assert_eq!(C::NodeRespondedAlready::SELECTOR, hex!("88a21e4f"));
    assert_eq!(Wallet::InsufficientFunds::SELECTOR, hex!("356680b7"));
}

#[test]
fn container_id_matches_the_reference_vectors() {
    let cases: [(&str, B256); 2] = [
        (
            "hello-world",
            b256!("5768661526084c7b4d30f7224ed6c74ade98db3c6c395c55400a17f34a547e22"),
        ),
        (
            "A,B",
            b256!("ed76aa63268e9d816365e0b3c94f7ea57c80b3b404d41ca7a65a492ff9d0526e"),
        ),
    ];
    for (containers, id) in cases {
        assert_eq!(container_id(containers), id, "{containers}");
    }
    // abi.encode of one dynamic string: offset 0x20, length, padded bytes (not encodePacked).
    assert_ne!(container_id("A,B"), alloy::primitives::keccak256("A,B"));
}
