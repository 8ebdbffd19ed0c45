//! The Wallet's task: the only holder of the node's key. It signs locally, sends in JSON-RPC
//! batches, watches receipts on every new block, replaces a transaction that stays unmined, and
//! at start settles what an earlier run left pending. Callers reach it through
//! [`super::wallet::Wallet`]; its decisions are [`super::nonces`]'s.

use std::{
    collections::BTreeMap,
    sync::Arc,
    time::{Duration, Instant},
};

use alloy::{
    consensus::{SignableTransaction, TxEip1559, TxEnvelope, TxLegacy},
    eips::eip2718::Encodable2718,
    primitives::{Address, B256, Bytes, TxKind, U256},
    rpc::types::TransactionReceipt,
    signers::{SignerSync, local::PrivateKeySigner},
};
use tokio::sync::{mpsc, oneshot, watch};
use tokio_util::sync::CancellationToken;

use super::{
    blocks::{Head, Throttle},
    nonces::{self, CancelStep, DEFAULT_PRIORITY_FEE, Fees, MAX_REPLACEMENTS, Replacement, Startup, Verdict},
    rpc::{Rpc, RpcError},
    status::ChainStatus,
    wallet::{Command, TxError, TxOutcome, TxRequest},
};

/// Most transactions sent in one JSON-RPC batch.
const MAX_BATCH: usize = 256;

struct Inflight {
    request: TxRequest,
    gas_limit: u64,
    hashes: Vec<B256>,
    fees: Fees,
    sent_block: u64,
    sent_at: Instant,
    first_sent: Instant,
    replacements: u32,
    reply: Option<oneshot::Sender<TxOutcome>>,
}

/// The task's state.
pub(super) struct Sender {
    rpc: Rpc,
    signer: PrivateKeySigner,
    chain_id: u64,
    next_nonce: u64,
    inflight: BTreeMap<u64, Inflight>,
    priority_fee: Option<(u128, u64)>,
    head: Option<Head>,
    status: Arc<ChainStatus>,
    receipt_warnings: Throttle,
}

impl Sender {
    /// A task for `signer`'s account on chain `chain_id`.
    pub(super) fn new(rpc: Rpc, signer: PrivateKeySigner, chain_id: u64, status: Arc<ChainStatus>) -> Self {
        Self {
            rpc,
            signer,
            chain_id,
            next_nonce: 0,
            inflight: BTreeMap::new(),
            priority_fee: None,
            head: None,
            status,
            receipt_warnings: Throttle::new(Duration::from_secs(30)),
        }
    }
    /// Runs until shutdown.
    pub(super) async fn run(
        mut self,
        mut commands: mpsc::Receiver<Command>,
        mut heads: watch::Receiver<Option<Head>>,
        ready: watch::Sender<bool>,
        shutdown: CancellationToken,
    ) {
        tokio::select! {
            _ = self.settle_earlier_run(&mut heads) => {}
            _ = shutdown.cancelled() => return,
        }
        let _ = ready.send(true);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => {
                    for (nonce, tx) in std::mem::take(&mut self.inflight) {
                        if let Some(reply) = tx.reply {
                            let _ = reply.send(TxOutcome::Failed(TxError::ShuttingDown(nonce)));
                        }
                    }
                    return;
                }
                command = commands.recv() => match command {
                    Some(first) => {
                        let mut batch = vec![first];
                        while batch.len() < MAX_BATCH {
                            match commands.try_recv() {
                                Ok(next) => batch.push(next),
                                Err(_) => break,
                            }
                        }
                        self.send_many(batch).await;
                    }
                    None => return,
                },
                changed = heads.changed() => {
                    if changed.is_err() {
                        return;
                    }
                    let head = *heads.borrow_and_update();
                    if let Some(head) = head {
                        self.head = Some(head);
                        self.on_block(head).await;
                    }
                }
            }
        }
    }

    /// At start: transactions of an earlier run may still be pending. Waits for them to be
    /// mined, replacing them with empty self-transfers if they do not get mined in time.
    async fn settle_earlier_run(&mut self, heads: &mut watch::Receiver<Option<Head>>) {
        let address = self.signer.address();
        let started = Instant::now();
        let (mut cancelled, mut announced) = (false, false);
        loop {
            let nonces = async {
                Ok::<_, RpcError>((
                    self.rpc.nonce(address, "latest").await?,
                    self.rpc.nonce(address, "pending").await?,
                ))
            };
            match nonces.await {
                Ok((latest, pending)) => match nonces::startup(latest, pending, started.elapsed(), cancelled) {
                    Startup::Ready(nonce) => {
                        self.next_nonce = nonce;
                        self.status.set_nonce(nonce);
                        if cancelled {
                            tracing::info!(nonce, "earlier transactions settled");
                        }
                        return;
                    }
                    Startup::Cancel { from, to } => {
                        tracing::warn!(
                            from,
                            to,
                            "transactions of an earlier run are stuck; replacing them with empty transfers"
                        );
                        self.cancel_range(from, to).await;
                        cancelled = true;
                    }
                    Startup::Wait if !announced => {
                        announced = true;
                        tracing::info!(
                            from = latest,
                            to = pending,
                            "waiting for transactions sent before the restart to be mined"
                        );
                    }
                    Startup::Wait => {}
                },
                Err(e) => tracing::warn!(error = %e, "cannot read the node's nonce; retrying"),
            }
            let _ = tokio::time::timeout(Duration::from_secs(2), heads.changed()).await;
            self.head = *heads.borrow();
        }
    }

    async fn cancel_range(&mut self, from: u64, to: u64) {
        for nonce in from..to {
            let mut fee = nonces::cancel_fee(self.base_fee().await);
            for _ in 0..nonces::CANCEL_TRIES {
                let raw = match self.sign(self.empty_transfer(nonce, fee, fee / 2)) {
                    Ok((_, raw)) => raw,
                    Err(e) => {
                        tracing::error!(error = %e, "cannot sign");
                        return;
                    }
                };
                let sent = self.rpc.send_raw(raw).await;
                match nonces::after_cancel(sent.as_ref().map(|_| ()), fee) {
                    CancelStep::Next => break,
                    CancelStep::Raise(higher) => {
                        if let Err(e) = sent {
                            tracing::debug!(nonce, error = %e, "cancelling transaction refused; raising the fee");
                        }
                        fee = higher;
                    }
                }
            }
        }
    }

    async fn base_fee(&mut self) -> u128 {
        match self.head.and_then(|h| h.base_fee) {
            Some(fee) => u128::from(fee),
            None => self.rpc.gas_price().await.unwrap_or(DEFAULT_PRIORITY_FEE),
        }
    }

    async fn priority_fee(&mut self) -> u128 {
        let block = self.head.map(|h| h.number).unwrap_or(0);
        match self.priority_fee {
            Some((fee, at)) if block < at + nonces::PRIORITY_FEE_BLOCKS => fee,
            _ => {
                let fee = self.rpc.max_priority_fee().await.unwrap_or(DEFAULT_PRIORITY_FEE);
                self.priority_fee = Some((fee, block));
                fee
            }
        }
    }

    fn sign(&self, tx: UnsignedTx) -> Result<(B256, Bytes), TxError> {
        let envelope: TxEnvelope = match tx {
            UnsignedTx::Eip1559(tx) => {
                let sig = self
                    .signer
                    .sign_hash_sync(&tx.signature_hash())
                    .map_err(|e| TxError::Signing(e.to_string()))?;
                tx.into_signed(sig).into()
            }
            UnsignedTx::Legacy(tx) => {
                let sig = self
                    .signer
                    .sign_hash_sync(&tx.signature_hash())
                    .map_err(|e| TxError::Signing(e.to_string()))?;
                tx.into_signed(sig).into()
            }
        };
        Ok((*envelope.tx_hash(), envelope.encoded_2718().into()))
    }

    fn build(&self, nonce: u64, t: &Inflight) -> UnsignedTx {
        self.unsigned(nonce, t.fees, t.gas_limit, t.request.to, t.request.data.clone())
    }

    /// An empty transfer to the node's own account: takes `nonce` and changes nothing else.
    fn empty_transfer(&self, nonce: u64, max_fee: u128, priority_fee: u128) -> UnsignedTx {
        let legacy = self.head.is_some_and(|h| h.base_fee.is_none());
        let fees = Fees {
            max_fee,
            priority_fee,
            legacy,
        };
        self.unsigned(nonce, fees, 21_000, self.signer.address(), Bytes::new())
    }

    fn unsigned(&self, nonce: u64, fees: Fees, gas_limit: u64, to: Address, input: Bytes) -> UnsignedTx {
        if fees.legacy {
            UnsignedTx::Legacy(TxLegacy {
                chain_id: Some(self.chain_id),
                nonce,
                gas_price: fees.max_fee,
                gas_limit,
                to: TxKind::Call(to),
                value: U256::ZERO,
                input,
            })
        } else {
            UnsignedTx::Eip1559(TxEip1559 {
                chain_id: self.chain_id,
                nonce,
                gas_limit,
                max_fee_per_gas: fees.max_fee,
                max_priority_fee_per_gas: fees.priority_fee,
                to: TxKind::Call(to),
                value: U256::ZERO,
                access_list: Default::default(),
                input,
            })
        }
    }

    /// Fees for a transaction sent now.
    async fn fees(&mut self) -> Fees {
        let legacy = self.head.is_some_and(|h| h.base_fee.is_none());
        let base = self.base_fee().await;
        let priority = if legacy { base } else { self.priority_fee().await };
        nonces::fees(base, priority, legacy)
    }

    /// Sends every transaction waiting, with consecutive nonces, in one JSON-RPC batch: fifty
    /// deliveries due in one block leave in one request instead of fifty.
    async fn send_many(&mut self, batch: Vec<Command>) {
        let fees = self.fees().await;
        let block = self.head.map(|h| h.number).unwrap_or(0);
        let mut pending: Vec<Inflight> = batch
            .into_iter()
            .map(|(tx, reply)| Inflight {
                request: tx.request,
                gas_limit: tx.gas_limit,
                hashes: Vec::new(),
                fees,
                sent_block: block,
                sent_at: Instant::now(),
                first_sent: Instant::now(),
                replacements: 0,
                reply: Some(reply),
            })
            .collect();
        // A nonce error means another sender used this key: the second round signs again from
        // the chain's nonce; a third is not tried.
        for round in 0..2 {
            if pending.is_empty() {
                break;
            }
            if round > 0 {
                match self.rpc.nonce(self.signer.address(), "pending").await {
                    Ok(n) => {
                        tracing::warn!(chain = n, "nonce out of step with the chain; resynchronised");
                        self.next_nonce = n;
                    }
                    Err(e) => tracing::warn!(error = %e, "cannot read the nonce"),
                }
            }
            let mut signed = Vec::with_capacity(pending.len());
            for mut inflight in pending.drain(..) {
                let nonce = self.next_nonce;
                match self.sign(self.build(nonce, &inflight)) {
                    Ok((hash, raw)) => {
                        self.next_nonce += 1;
                        signed.push((nonce, hash, raw, inflight));
                    }
                    Err(e) => reply_failed(&mut inflight, e),
                }
            }
            let raws: Vec<Bytes> = signed.iter().map(|(_, _, raw, _)| raw.clone()).collect();
            let answers = self.rpc.send_raw_batch(&raws).await;
            let mut failed = Vec::new();
            for ((nonce, hash, _, mut inflight), answer) in signed.into_iter().zip(answers) {
                match nonces::verdict(answer, round) {
                    Verdict::Sent => {
                        tracing::info!(tx = %inflight.request.label, %hash, nonce, gas = inflight.gas_limit, "sent transaction");
                        inflight.first_sent = Instant::now();
                        inflight.sent_at = inflight.first_sent;
                        inflight.hashes.push(hash);
                        self.status.tx_sent();
                        self.inflight.insert(nonce, inflight);
                    }
                    Verdict::Resign => pending.push(inflight),
                    Verdict::Failed(refusal) => {
                        self.status.tx_failed();
                        reply_failed(&mut inflight, TxError::refused(refusal, self.signer.address()));
                        failed.push(nonce);
                    }
                }
            }
            let (next, gaps) = nonces::gaps(failed, self.next_nonce);
            self.next_nonce = next;
            for nonce in gaps {
                self.fill_gap(nonce, fees).await;
            }
        }
        self.status.set_nonce(self.next_nonce);
        self.status.set_tx_pending(self.inflight.len());
    }

    /// A refused transaction left its nonce unused while later ones were accepted: an empty
    /// transfer to itself takes the nonce so the later ones can be mined.
    async fn fill_gap(&mut self, nonce: u64, fees: Fees) {
        match self.sign(self.empty_transfer(nonce, fees.max_fee, fees.priority_fee)) {
            Ok((hash, raw)) => match self.rpc.send_raw(raw).await {
                Ok(_) => tracing::info!(nonce, %hash, "filled a nonce gap with an empty transfer"),
                Err(e) => tracing::error!(nonce, error = %e, "cannot fill a nonce gap; later transactions wait for it"),
            },
            Err(e) => tracing::error!(error = %e, "cannot sign"),
        }
    }

    async fn on_block(&mut self, head: Head) {
        self.watch_mined(head).await;
        self.status.set_tx_pending(self.inflight.len());
    }

    /// Settles the transactions mined by `head`, gives up those whose nonce was taken, and
    /// replaces those stuck.
    async fn watch_mined(&mut self, head: Head) {
        if self.inflight.is_empty() {
            return;
        }
        let hashes: Vec<B256> = self.inflight.values().flat_map(|t| t.hashes.iter().copied()).collect();
        let receipts = match self.rpc.receipts(&hashes).await {
            Ok(r) => r,
            Err(e) => {
                if let Some(suppressed) = self.receipt_warnings.allow() {
                    tracing::warn!(error = %e, suppressed, "cannot read transaction receipts; retrying next block");
                }
                return;
            }
        };
        let mined: BTreeMap<B256, TransactionReceipt> = hashes
            .into_iter()
            .zip(receipts)
            .filter_map(|(h, r)| r.map(|r| (h, r)))
            .collect();
        let mut done = Vec::new();
        for (nonce, tx) in &mut self.inflight {
            if let Some((hash, receipt)) = tx.hashes.iter().find_map(|h| mined.get(h).map(|r| (*h, r))) {
                let success = receipt.status();
                if success {
                    self.status.tx_mined();
                } else {
                    self.status.tx_reverted();
                }
                tracing::info!(tx = %tx.request.label, %hash, block = ?receipt.block_number, success, gas_used = receipt.gas_used, "transaction mined");
                if let Some(reply) = tx.reply.take() {
                    let _ = reply.send(TxOutcome::Mined {
                        hash,
                        success,
                        receipt: Box::new(receipt.clone()),
                        sent_at: tx.first_sent,
                    });
                }
                done.push(*nonce);
            }
        }
        for nonce in done {
            self.inflight.remove(&nonce);
        }
        if self.inflight.is_empty() {
            return;
        }
        // Nonces below the chain's were taken by transactions we do not know: give those up.
        if let Ok(latest) = self.rpc.nonce(self.signer.address(), "latest").await {
            let taken: Vec<u64> = self
                .inflight
                .range(..latest)
                .filter(|(n, t)| nonces::nonce_taken(**n, latest, head.number, t.sent_block))
                .map(|(n, _)| *n)
                .collect();
            for nonce in taken {
                if let Some(mut tx) = self.inflight.remove(&nonce) {
                    self.status.tx_failed();
                    reply_failed(&mut tx, TxError::NonceTaken(nonce));
                }
            }
        }
        let stuck: Vec<u64> = self
            .inflight
            .iter()
            .filter(|(_, t)| nonces::is_stuck(head.number, t.sent_block, t.sent_at.elapsed()))
            .map(|(n, _)| *n)
            .collect();
        for nonce in stuck {
            self.replace(nonce, head).await;
        }
    }

    async fn replace(&mut self, nonce: u64, head: Head) {
        let base = self.base_fee().await;
        let Some(mut tx) = self.inflight.remove(&nonce) else {
            return;
        };
        tx.sent_block = head.number;
        tx.sent_at = Instant::now();
        match nonces::replacement(tx.fees, tx.replacements, base) {
            Replacement::KeepWatching => {
                tracing::warn!(tx = %tx.request.label, nonce, "transaction still unmined after {MAX_REPLACEMENTS} fee bumps");
                self.inflight.insert(nonce, tx);
                return;
            }
            Replacement::Bump(fees) => tx.fees = fees,
        }
        tx.replacements += 1;
        match self.sign(self.build(nonce, &tx)) {
            Ok((_, raw)) => match self.rpc.send_raw(raw).await {
                Ok(hash) => {
                    tracing::warn!(tx = %tx.request.label, nonce, %hash, max_fee = tx.fees.max_fee, "transaction was not mined; replaced it with higher fees");
                    tx.hashes.push(hash);
                    self.status.tx_replaced();
                }
                Err(e) => {
                    tracing::warn!(tx = %tx.request.label, nonce, error = %e, "replacement refused; keeping the original")
                }
            },
            Err(e) => tracing::error!(error = %e, "cannot sign a replacement"),
        }
        self.inflight.insert(nonce, tx);
    }
}

fn reply_failed(tx: &mut Inflight, reason: TxError) {
    tracing::warn!(tx = %tx.request.label, %reason, "transaction not sent");
    if let Some(reply) = tx.reply.take() {
        let _ = reply.send(TxOutcome::Failed(reason));
    }
}

enum UnsignedTx {
    Eip1559(TxEip1559),
    Legacy(TxLegacy),
}
