//! The Processor's reads before a delivery: for every subscription due in a block, in one JSON-RPC
//! batch, whether it is cancelled, how many nodes responded, whether its wallet can pay, the
//! consumer's inputs, and the on-chain id of a delegated subscription not yet known there. Only
//! where others have responded already does a second round ask whether this node was one of them
//! (after a restart it may have been).

use std::collections::HashMap;

use alloy::{
    eips::BlockId,
    primitives::{Address, Bytes, U256},
    sol_types::SolCall,
};
use infernet_contracts::bindings::{
    BaseConsumer, EIP712Coordinator, Reader, TestToken, Wallet as PaymentWallet, WalletFactory,
};
use infernet_types::Subscription;

use super::{
    coordinator,
    rpc::{Read, Rpc, RpcError, decode},
    schedule::{Check, Due, unpayable},
};

/// Contracts the pre-check reads.
#[derive(Debug, Clone, Copy)]
pub struct Contracts {
    /// `EIP712Coordinator`.
    pub coordinator: Address,
    /// `Reader`.
    pub reader: Address,
    /// `WalletFactory`.
    pub wallet_factory: Address,
    /// The node's address (the `caller` of `getContainerInputs`, the responder).
    pub node: Address,
}

/// An error for answers that do not line up with what was asked.
fn short_answer() -> RpcError {
    RpcError::Decode {
        method: "Reader".into(),
        message: "fewer answers than subscriptions asked for".into(),
    }
}

fn call(to: Address, data: impl Into<Bytes>) -> Read {
    Read::Call { to, data: data.into() }
}

/// Where a candidate's answers are in the batch.
struct Slots {
    inputs: Option<usize>,
    created: Option<usize>,
    /// Valid wallet, the owner's allowance, the wallet's balance.
    payment: Option<[usize; 3]>,
}

/// The batch being built.
#[derive(Default)]
struct Batch {
    reads: Vec<Read>,
}

impl Batch {
    fn push(&mut self, read: Read) -> usize {
        self.reads.push(read);
        self.reads.len() - 1
    }
}

/// `(first id, end id)` of each run of consecutive ids (sorted, deduplicated).
fn runs(ids: &[(u32, u32)]) -> Vec<(u32, u32)> {
    let mut runs: Vec<(u32, u32)> = Vec::new();
    for (id, _) in ids {
        match runs.last_mut() {
            Some((_, end)) if *end == *id => *end += 1,
            _ => runs.push((*id, *id + 1)),
        }
    }
    runs
}

fn payment_reads(batch: &mut Batch, c: &Contracts, s: &Subscription) -> [usize; 3] {
    let allowance = PaymentWallet::allowanceCall {
        spender: s.owner,
        token: s.payment_token,
    };
    let balance = if s.payment_token == Address::ZERO {
        Read::Balance(s.wallet)
    } else {
        call(s.payment_token, TestToken::balanceOfCall(s.wallet).abi_encode())
    };
    [
        batch.push(call(
            c.wallet_factory,
            WalletFactory::isValidWalletCall(s.wallet).abi_encode(),
        )),
        batch.push(call(s.wallet, allowance.abi_encode())),
        batch.push(balance),
    ]
}

fn slots(batch: &mut Batch, c: &Contracts, d: &Due, now: u64) -> Slots {
    let inputs = d.inputs_of.map(|id| {
        let inputs = BaseConsumer::getContainerInputsCall {
            subscriptionId: id,
            interval: d.interval,
            timestamp: u32::try_from(now).unwrap_or(u32::MAX),
            caller: c.node,
        };
        batch.push(call(d.sub.owner, inputs.abi_encode()))
    });
    let created = d
        .find_created
        .map(|(owner, nonce)| batch.push(call(c.coordinator, coordinator::delegate_created_id(owner, nonce))));
    let payment = d.sub.is_paid().then(|| payment_reads(batch, c, &d.sub));
    Slots {
        inputs,
        created,
        payment,
    }
}

type Answers = Vec<Result<Bytes, RpcError>>;

fn answer(answers: &Answers, i: usize) -> Result<Bytes, RpcError> {
    answers.get(i).cloned().unwrap_or_else(|| Err(short_answer()))
}

/// On-chain state by id: the subscription and its responses so far.
fn onchain_state(
    answers: &Answers,
    runs: &[(u32, u32, usize)],
    counts_slot: Option<usize>,
) -> HashMap<u32, Result<(Subscription, u16), RpcError>> {
    let counts = counts_slot
        .map(|i| decode::<Reader::readRedundancyCountBatchCall>(answer(answers, i)))
        .unwrap_or(Ok(Vec::new()));
    let mut state = HashMap::new();
    let mut position = 0;
    for (start, end, slot) in runs {
        let subs = decode::<Reader::readSubscriptionBatchCall>(answer(answers, *slot));
        for (i, id) in (*start..*end).enumerate() {
            let entry = match (&subs, &counts) {
                (Ok(subs), Ok(counts)) => match (subs.get(i), counts.get(position)) {
                    (Some(s), Some(count)) => Ok((Subscription::from(s.clone()), *count)),
                    _ => Err(short_answer()),
                },
                (Err(e), _) | (_, Err(e)) => Err(e.clone()),
            };
            state.insert(id, entry);
            position += 1;
        }
    }
    state
}

/// One candidate's check from the batch's answers; `Ok(true)` in the second field when it must
/// ask whether this node responded.
fn check_one(
    d: &Due,
    slots: &Slots,
    answers: &Answers,
    state: &HashMap<u32, Result<(Subscription, u16), RpcError>>,
) -> Result<(Check, bool), RpcError> {
    let mut check = Check::default();
    let mut ask = false;
    if let Some(id) = d.chain_id {
        let (s, count) = state.get(&id).cloned().unwrap_or_else(|| Err(short_answer()))?;
        check.cancelled = s.is_empty() || s.is_cancelled();
        check.served = count >= d.sub.redundancy;
        ask = count > 0 && !check.served;
    }
    if let Some(i) = slots.inputs {
        check.inputs = Some(match answer(answers, i) {
            Ok(raw) => decode::<BaseConsumer::getContainerInputsCall>(Ok(raw)).unwrap_or_default(),
            // A consumer without inputs (or one that reverts) gets empty input, as Ritual's node
            // does; a failing endpoint is retried.
            Err(e) if !e.is_retryable() => Bytes::new(),
            Err(e) => return Err(e),
        });
    }
    if let Some(i) = slots.created {
        let id = decode::<EIP712Coordinator::delegateCreatedIdsCall>(answer(answers, i))?;
        check.created = (id != 0).then_some(id);
    }
    if let Some([valid, allowance, balance]) = slots.payment {
        check.unpayable = unpayable(
            &d.sub,
            decode::<WalletFactory::isValidWalletCall>(answer(answers, valid))?,
            decode::<PaymentWallet::allowanceCall>(answer(answers, allowance)).unwrap_or(U256::ZERO),
            decode::<TestToken::balanceOfCall>(answer(answers, balance))?,
        );
    }
    Ok((check, ask))
}

/// The checks of every due subscription, in order.
pub async fn pre_check(rpc: &Rpc, c: &Contracts, due: &[Due], now: u64) -> Vec<Result<Check, RpcError>> {
    let mut batch = Batch::default();
    let mut ids: Vec<(u32, u32)> = due
        .iter()
        .filter_map(|d| d.chain_id.map(|id| (id, d.interval)))
        .collect();
    ids.sort_unstable();
    ids.dedup_by_key(|(id, _)| *id);
    let runs: Vec<(u32, u32, usize)> = runs(&ids)
        .into_iter()
        .map(|(start, end)| {
            let read = Reader::readSubscriptionBatchCall {
                startId: start,
                endId: end,
            };
            (start, end, batch.push(call(c.reader, read.abi_encode())))
        })
        .collect();
    let counts_slot = (!ids.is_empty()).then(|| {
        let counts = Reader::readRedundancyCountBatchCall {
            ids: ids.iter().map(|(id, _)| *id).collect(),
            intervals: ids.iter().map(|(_, k)| *k).collect(),
        };
        batch.push(call(c.reader, counts.abi_encode()))
    });
    let slots: Vec<Slots> = due.iter().map(|d| slots(&mut batch, c, d, now)).collect();
    let answers = match rpc.read_batch(&batch.reads, BlockId::latest()).await {
        Ok(a) => a,
        Err(e) => return due.iter().map(|_| Err(e.clone())).collect(),
    };
    let state = onchain_state(&answers, &runs, counts_slot);
    let mut ask = Vec::new();
    let mut out: Vec<Result<Check, RpcError>> = due
        .iter()
        .zip(&slots)
        .enumerate()
        .map(|(n, (d, slots))| {
            let (check, asks) = check_one(d, slots, &answers, &state)?;
            if let (true, Some(id)) = (asks, d.chain_id) {
                ask.push((n, id, d.interval));
            }
            Ok(check)
        })
        .collect();
    if !ask.is_empty() {
        responded(rpc, c, &ask, &mut out).await;
    }
    out
}

/// Second round: whether this node is among those that responded.
async fn responded(rpc: &Rpc, c: &Contracts, ask: &[(usize, u32, u32)], out: &mut [Result<Check, RpcError>]) {
    let reads: Vec<Read> = ask
        .iter()
        .map(|(_, id, k)| call(c.coordinator, coordinator::node_responded(*id, *k, c.node)))
        .collect();
    let answers = rpc.read_batch(&reads, BlockId::latest()).await;
    for (i, (n, _, _)) in ask.iter().enumerate() {
        let responded = match &answers {
            Ok(a) => decode::<EIP712Coordinator::nodeRespondedCall>(answer(a, i)),
            Err(e) => Err(e.clone()),
        };
        match (responded, &mut out[*n]) {
            (Ok(r), Ok(check)) => check.responded = r,
            (Err(e), slot) => *slot = Err(e),
            (Ok(_), Err(_)) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use alloy::primitives::{B256, address};

    use super::*;
    use crate::chain::{rpc::RpcErrorKind, schedule::Key};

    const OWNER: Address = address!("00000000000000000000000000000000000000aa");

    fn due(chain_id: Option<u32>, paid: bool) -> Due {
        let sub = Subscription {
            owner: OWNER,
            active_at: 0,
            period: 0,
            frequency: 1,
            redundancy: 2,
            container_id: B256::ZERO,
            lazy: false,
            verifier: Address::ZERO,
            payment_amount: U256::from(if paid { 10 } else { 0 }),
            payment_token: Address::ZERO,
            wallet: OWNER,
        };
        Due {
            key: Key::Onchain(chain_id.unwrap_or(0)),
            interval: 1,
            sub,
            chain_id,
            inputs_of: chain_id,
            find_created: None,
        }
    }

    fn failed(kind: RpcErrorKind) -> Result<Bytes, RpcError> {
        Err(RpcError::Call {
            method: "eth_call".into(),
            message: "failed".into(),
            kind,
            revert: None,
        })
    }

    fn state(sub: &Subscription, count: u16) -> HashMap<u32, Result<(Subscription, u16), RpcError>> {
        HashMap::from([(7, Ok((sub.clone(), count)))])
    }

    #[test]
    fn the_answers_become_a_check() {
        let d = due(Some(7), false);
        let slots = Slots {
            inputs: Some(0),
            created: None,
            payment: None,
        };
        let inputs = BaseConsumer::getContainerInputsCall::abi_encode_returns(&Bytes::from_static(b"in"));
        let answers: Answers = vec![Ok(inputs.into())];
        let (check, ask) = check_one(&d, &slots, &answers, &state(&d.sub, 1)).unwrap();
        assert_eq!(check.inputs, Some(Bytes::from_static(b"in")));
        assert!(
            !check.served && !check.cancelled && ask,
            "one of two responded: was it us?"
        );
        let (check, ask) = check_one(&d, &slots, &answers, &state(&d.sub, 2)).unwrap();
        assert!(check.served && !ask, "redundancy met");
        let mut gone = d.sub.clone();
        gone.owner = Address::ZERO;
        assert!(check_one(&d, &slots, &answers, &state(&gone, 0)).unwrap().0.cancelled);
        // A consumer whose getContainerInputs reverts gets empty input; a failing endpoint is
        // checked again.
        let reverted: Answers = vec![failed(RpcErrorKind::Revert)];
        let (check, _) = check_one(&d, &slots, &reverted, &state(&d.sub, 0)).unwrap();
        assert_eq!(check.inputs, Some(Bytes::new()));
        let down: Answers = vec![failed(RpcErrorKind::Timeout)];
        assert!(check_one(&d, &slots, &down, &state(&d.sub, 0)).is_err());
        assert!(
            check_one(&d, &slots, &answers, &HashMap::new()).is_err(),
            "short answer"
        );
    }

    #[test]
    fn created_ids_and_payment_are_read_from_their_slots() {
        let mut d = due(None, true);
        d.find_created = Some((OWNER, 3));
        let slots = Slots {
            inputs: None,
            created: Some(0),
            payment: Some([1, 2, 3]),
        };
        let word = |v: U256| Ok(Bytes::from(v.to_be_bytes::<32>().to_vec()));
        let answers: Answers = vec![
            word(U256::from(5)),
            word(U256::from(1)),
            word(U256::from(10)),
            word(U256::from(9)),
        ];
        let (check, ask) = check_one(&d, &slots, &answers, &HashMap::new()).unwrap();
        assert_eq!((check.created, ask), (Some(5), false));
        assert!(matches!(
            check.unpayable,
            Some(crate::chain::schedule::Unpayable::Balance { .. })
        ));
        let none: Answers = vec![
            word(U256::ZERO),
            word(U256::from(1)),
            word(U256::from(10)),
            word(U256::from(10)),
        ];
        let (check, _) = check_one(&d, &slots, &none, &HashMap::new()).unwrap();
        assert_eq!((check.created, check.unpayable), (None, None));
    }

    #[test]
    fn consecutive_ids_are_read_in_runs() {
        assert_eq!(runs(&[]), vec![]);
        assert_eq!(
            runs(&[(1, 1), (2, 1), (3, 2), (7, 1), (9, 1), (10, 4)]),
            vec![(1, 4), (7, 8), (9, 11)]
        );
    }
}
