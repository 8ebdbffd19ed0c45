//! Guardian: decides whether the node accepts a job. Pure functions, no I/O.
//!
//! The checks and their order are Ritual's (node reference §3), so clients see the same error
//! texts; the differences are deliberate fixes: the client address is the connection's peer (a
//! body can never set it), and every rejection carries serialisable `params`.

use std::{collections::BTreeMap, net::IpAddr};

use alloy_primitives::{Address, U256};
use ipnet::IpNet;
use serde_json::{Value, json};

use crate::config::ContainerSpec;

/// A rejected job: the message and parameters returned to the client (HTTP 405, as Ritual's node).
#[derive(Debug, Clone, PartialEq)]
pub struct Rejection {
    /// Error text, e.g. `Container not supported`.
    pub error: &'static str,
    /// Details (`{"container": "x"}`).
    pub params: Value,
}

impl Rejection {
    fn new(error: &'static str, params: Value) -> Self {
        Self { error, params }
    }
}

/// What the Guardian knows of one container.
#[derive(Debug, Clone)]
struct Restrictions {
    external: bool,
    generates_proofs: bool,
    allowed_ips: Vec<IpNet>,
    allowed_addresses: Vec<Address>,
    allowed_delegate_addresses: Vec<Address>,
    accepted_payments: BTreeMap<Address, U256>,
}

/// The request filter.
#[derive(Debug, Clone)]
pub struct Guardian {
    containers: crate::FastMap<String, Restrictions>,
    chain_enabled: bool,
    has_payment_address: bool,
}

impl Guardian {
    /// Builds the Guardian from validated container specs; `has_payment_address` tells whether
    /// the node has a payment wallet (`chain.wallet.payment_address`) to be paid into.
    pub fn new(containers: &[ContainerSpec], chain_enabled: bool, has_payment_address: bool) -> Self {
        let containers = containers
            .iter()
            .map(|c| {
                (
                    c.id.clone(),
                    Restrictions {
                        external: c.external,
                        generates_proofs: c.generates_proofs,
                        allowed_ips: c.allowed_ips.clone(),
                        allowed_addresses: c.allowed_addresses.clone(),
                        allowed_delegate_addresses: c.allowed_delegate_addresses.clone(),
                        accepted_payments: c.accepted_payments.clone(),
                    },
                )
            })
            .collect();
        Self {
            containers,
            chain_enabled,
            has_payment_address,
        }
    }

    /// Each container's restrictions; rejects unknown containers and a non-external first one.
    fn pipeline(&self, containers: &[String], first: &str) -> Result<Vec<&Restrictions>, Rejection> {
        let restrictions = containers
            .iter()
            .map(|id| {
                self.containers
                    .get(id)
                    .ok_or_else(|| Rejection::new("Container not supported", json!({"container": id})))
            })
            .collect::<Result<Vec<_>, _>>()?;
        if !restrictions[0].external {
            return Err(Rejection::new(
                "First container must be external",
                json!({"first_container": first}),
            ));
        }
        Ok(restrictions)
    }

    /// Checks an off-chain job from `client` (node reference §3.1, in that order).
    pub fn check_offchain(&self, containers: &[String], requires_proof: bool, client: IpAddr) -> Result<(), Rejection> {
        let Some(first) = containers.first() else {
            return Err(Rejection::new("No containers specified", json!({})));
        };
        let restrictions = self.pipeline(containers, first)?;
        let last = containers.len() - 1;
        if requires_proof && !restrictions[last].generates_proofs {
            return Err(Rejection::new(
                "Container does not generate proof",
                json!({"container": containers[last]}),
            ));
        }
        let client = client.to_canonical();
        for (id, r) in containers.iter().zip(&restrictions) {
            if !r.allowed_ips.is_empty() && !r.allowed_ips.iter().any(|n| n.contains(&client)) {
                return Err(Rejection::new(
                    "Container not allowed for address",
                    json!({"container": id, "address": client.to_string()}),
                ));
            }
        }
        Ok(())
    }

    /// Checks a delegated subscription before the chain side looks at it (node reference §3.2).
    ///
    /// Without a chain the node cannot deliver it, so it is rejected with a proper 405 body
    /// (Ritual's node answered 500 here because its params could not be serialised).
    pub fn check_delegated_precondition(
        &self,
        subscription: &Value,
        expiry: Option<u64>,
        now: u64,
    ) -> Result<(), Rejection> {
        if !self.chain_enabled {
            return Err(Rejection::new(
                "Chain not enabled",
                json!({"delegated_subscription": subscription}),
            ));
        }
        if let Some(expiry) = expiry
            && expiry < now
        {
            return Err(Rejection::new(
                "Signature expired",
                json!({"delegated_subscription": subscription}),
            ));
        }
        Ok(())
    }

    /// Checks the containers of an on-chain (`delegated == false`) or delegated subscription once its
    /// container id has been resolved (node reference §3.2 steps 4–7 and §3.3 steps 2–5).
    pub fn check_subscription_containers(
        &self,
        containers: &[String],
        owner: Address,
        requires_proof: bool,
        delegated: bool,
        containers_hash: &str,
    ) -> Result<(), Rejection> {
        let Some(first) = containers.first() else {
            return Err(Rejection::new(
                "Container-set not supported",
                json!({"containers_hash": containers_hash}),
            ));
        };
        let restrictions = self.pipeline(containers, first)?;
        let last = containers.len() - 1;
        let proof_check = || {
            if requires_proof && !restrictions[last].generates_proofs {
                Err(Rejection::new(
                    "Container does not generate proof",
                    json!({"container": containers[last]}),
                ))
            } else {
                Ok(())
            }
        };
        let owner_check = || {
            for (id, r) in containers.iter().zip(&restrictions) {
                let list = if delegated {
                    &r.allowed_delegate_addresses
                } else {
                    &r.allowed_addresses
                };
                if !list.is_empty() && !list.contains(&owner) {
                    return Err(Rejection::new(
                        "Container not allowed for address",
                        json!({"container": id, "address": owner.to_checksum(None)}),
                    ));
                }
            }
            Ok(())
        };
        // Ritual checks proofs before owners for delegated subscriptions, owners first on chain.
        if delegated {
            proof_check()?;
            owner_check()
        } else {
            owner_check()?;
            proof_check()
        }
    }
}

impl Guardian {
    /// Checks a subscription's payment against `accepted_payments` (node reference §3.4, with
    /// addresses compared as addresses, not strings). `params` go into the rejection.
    pub fn check_payment(
        &self,
        containers: &[String],
        token: Address,
        amount: U256,
        params: Value,
    ) -> Result<(), Rejection> {
        let invalid = |why: String| {
            tracing::debug!(%why, "invalid payment");
            Err(Rejection::new("Invalid payment", params.clone()))
        };
        if !self.has_payment_address && amount > U256::ZERO {
            return invalid("no chain.wallet.payment_address to be paid into".into());
        }
        let mut minimum = U256::ZERO;
        for id in containers {
            let Some(r) = self.containers.get(id) else { continue };
            if r.accepted_payments.is_empty() {
                continue;
            }
            match r.accepted_payments.get(&token) {
                Some(min) => minimum = minimum.saturating_add(*min),
                None => return invalid(format!("token {token} not accepted by container {id}")),
            }
        }
        if amount < minimum {
            return invalid(format!("{amount} is below the minimum {minimum}"));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{parse, validate};

    fn guardian(json: &str) -> Guardian {
        let loaded = parse(json).unwrap();
        let v = validate(loaded.config, &[]).unwrap();
        Guardian::new(&v.containers, false, false)
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn g() -> Guardian {
        guardian(
            r#"{"manage_containers": false, "containers": [
                {"id": "open"},
                {"id": "internal", "external": false, "generates_proofs": true},
                {"id": "lan", "allowed_ips": ["10.0.0.0/8", "::1"]},
                {"id": "prover", "generates_proofs": true, "allowed_addresses": ["0x3B1554f346DFe5c482Bb4BA31b880c1C18412170"],
                 "allowed_delegate_addresses": ["0x0000000000000000000000000000000000000001"]}
            ]}"#,
        )
    }

    fn ids(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn offchain_checks_in_ritual_order() {
        let g = g();
        let client = ip("192.0.2.1");
        assert_eq!(
            g.check_offchain(&[], false, client).unwrap_err().error,
            "No containers specified"
        );
        let r = g
            .check_offchain(&ids(&["open", "nope", "internal"]), false, client)
            .unwrap_err();
        assert_eq!(
            (r.error, r.params),
            ("Container not supported", json!({"container": "nope"}))
        );
        let r = g
            .check_offchain(&ids(&["internal", "open"]), false, client)
            .unwrap_err();
        assert_eq!(
            (r.error, r.params),
            (
                "First container must be external",
                json!({"first_container": "internal"})
            )
        );
        let r = g.check_offchain(&ids(&["open"]), true, client).unwrap_err();
        assert_eq!(
            (r.error, r.params),
            ("Container does not generate proof", json!({"container": "open"}))
        );
        assert!(g.check_offchain(&ids(&["open", "internal"]), true, client).is_ok());
        let r = g.check_offchain(&ids(&["open", "lan"]), false, client).unwrap_err();
        assert_eq!(
            (r.error, r.params),
            (
                "Container not allowed for address",
                json!({"container": "lan", "address": "192.0.2.1"})
            )
        );
    }

    #[test]
    fn allowed_ips_match_cidrs_and_mapped_ipv6() {
        let g = g();
        let lan = ids(&["lan"]);
        assert!(g.check_offchain(&lan, false, ip("10.200.0.7")).is_ok());
        assert!(g.check_offchain(&lan, false, ip("::ffff:10.0.0.1")).is_ok());
        assert!(g.check_offchain(&lan, false, ip("::1")).is_ok());
        assert!(g.check_offchain(&lan, false, ip("11.0.0.1")).is_err());
        assert!(g.check_offchain(&lan, false, ip("::2")).is_err());
    }

    #[test]
    fn delegated_needs_a_chain_and_an_unexpired_signature() {
        let g = g();
        let sub = json!({"owner": "0x1"});
        let r = g.check_delegated_precondition(&sub, Some(10), 5).unwrap_err();
        assert_eq!(r.error, "Chain not enabled");
        assert_eq!(r.params, json!({"delegated_subscription": sub}));
        let chained = Guardian {
            chain_enabled: true,
            ..g
        };
        assert_eq!(
            chained
                .check_delegated_precondition(&sub, Some(4), 5)
                .unwrap_err()
                .error,
            "Signature expired"
        );
        assert!(chained.check_delegated_precondition(&sub, Some(5), 5).is_ok());
    }

    #[test]
    fn subscription_owner_lists_depend_on_origin() {
        let g = g();
        let owner: Address = "0x3B1554f346DFe5c482Bb4BA31b880c1C18412170".parse().unwrap();
        let p = ids(&["prover"]);
        assert!(g.check_subscription_containers(&p, owner, true, false, "0xh").is_ok());
        let r = g
            .check_subscription_containers(&p, owner, false, true, "0xh")
            .unwrap_err();
        assert_eq!(r.error, "Container not allowed for address");
        assert_eq!(r.params["address"], "0x3B1554f346DFe5c482Bb4BA31b880c1C18412170");
        let r = g
            .check_subscription_containers(&[], owner, false, false, "0xh")
            .unwrap_err();
        assert_eq!(
            (r.error, r.params),
            ("Container-set not supported", json!({"containers_hash": "0xh"}))
        );
        // Delegated: the proof check comes before the owner check.
        let r = g
            .check_subscription_containers(&ids(&["open"]), owner, true, true, "0xh")
            .unwrap_err();
        assert_eq!(r.error, "Container does not generate proof");
    }

    #[test]
    fn payments_follow_accepted_payments() {
        let loaded = parse(
            r#"{"manage_containers": false, "containers": [
                {"id": "free"},
                {"id": "eth", "accepted_payments": {"0x0000000000000000000000000000000000000000": 100}},
                {"id": "tok", "accepted_payments": {"0x3b1554f346dfe5c482bb4ba31b880c1c18412170": 5, "0x0000000000000000000000000000000000000000": 1}}
            ]}"#,
        )
        .unwrap();
        let v = validate(loaded.config, &[]).unwrap();
        let paid = Guardian::new(&v.containers, true, true);
        let eth = Address::ZERO;
        let token: Address = "0x3B1554f346DFe5c482Bb4BA31b880c1C18412170".parse().unwrap();
        let p = json!({"subscription_id": 7});
        assert!(
            paid.check_payment(&ids(&["free"]), token, U256::ZERO, p.clone())
                .is_ok()
        );
        assert!(
            paid.check_payment(&ids(&["eth"]), eth, U256::from(100), p.clone())
                .is_ok()
        );
        let r = paid
            .check_payment(&ids(&["eth"]), eth, U256::from(99), p.clone())
            .unwrap_err();
        assert_eq!((r.error, r.params), ("Invalid payment", json!({"subscription_id": 7})));
        // Token keys match whatever their case in the config.
        assert!(
            paid.check_payment(&ids(&["tok"]), token, U256::from(5), p.clone())
                .is_ok()
        );
        assert!(
            paid.check_payment(&ids(&["eth", "tok"]), token, U256::from(500), p.clone())
                .is_err(),
            "eth does not take the token"
        );
        assert!(
            paid.check_payment(&ids(&["eth", "tok"]), eth, U256::from(101), p.clone())
                .is_ok()
        );
        assert!(
            paid.check_payment(&ids(&["eth", "tok"]), eth, U256::from(100), p.clone())
                .is_err()
        );
        let unpaid_node = Guardian::new(&v.containers, true, false);
        assert!(
            unpaid_node
                .check_payment(&ids(&["free"]), eth, U256::from(1), p.clone())
                .is_err()
        );
        assert!(unpaid_node.check_payment(&ids(&["free"]), eth, U256::ZERO, p).is_ok());
    }
}
