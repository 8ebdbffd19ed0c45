//! The JSON-RPC endpoint: a retrying transport (typed policy, capped backoff with full jitter,
//! per-attempt timeout), classified errors, and the few calls the chain side makes, with
//! JSON-RPC batching for everything read per block. Its errors are [`super::rpc_error`]'s.

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    task::{Context, Poll},
    time::Duration,
};

use alloy::{
    eips::BlockId,
    primitives::{Address, B256, Bytes, U64, U256},
    rpc::{
        client::{ClientBuilder, RpcClient, Waiter},
        json_rpc::{RequestPacket, ResponsePacket, RpcRecv, RpcSend},
        types::{Block, TransactionReceipt, TransactionRequest},
    },
    sol_types::SolCall,
    transports::{TransportError, TransportErrorKind, TransportFut},
};
use tower::{Layer, Service};

use super::errors::InfernetError;
pub use super::rpc_error::{
    ERROR_KINDS, EndpointError, Refusal, RpcError, RpcErrorKind, SendError, classify, classify_payload,
};

/// How the chain side retries one JSON-RPC request (a batch counts as one).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RetryPolicy {
    /// Delay bound of the first retry.
    pub base_delay: Duration,
    /// Largest delay between two attempts.
    pub max_delay: Duration,
    /// Attempts in all, the first included.
    pub max_attempts: u32,
    /// Longest wait for one attempt's answer.
    pub attempt_timeout: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            base_delay: Duration::from_millis(100),
            max_delay: Duration::from_secs(5),
            max_attempts: 8,
            attempt_timeout: Duration::from_secs(20),
        }
    }
}

impl RetryPolicy {
    /// The backoff between attempts: the workspace's one retry policy (full jitter).
    pub fn backoff(&self) -> infernet_service::retry::RetryPolicy {
        infernet_service::retry::RetryPolicy {
            base_delay: self.base_delay,
            max_delay: self.max_delay,
            max_attempts: self.max_attempts,
        }
    }
}

/// RPC errors seen, by kind (every attempt counts, retried or not).
#[derive(Debug, Default)]
pub struct RpcErrorCounts {
    counts: [AtomicU64; ERROR_KINDS.len()],
    /// JSON-RPC calls sent (a batch of n counts n).
    calls: AtomicU64,
}

impl RpcErrorCounts {
    fn record(&self, kind: RpcErrorKind) {
        self.counts[kind as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// Errors of `kind` so far.
    pub fn get(&self, kind: RpcErrorKind) -> u64 {
        self.counts[kind as usize].load(Ordering::Relaxed)
    }

    /// JSON-RPC calls sent so far.
    pub fn calls(&self) -> u64 {
        self.calls.load(Ordering::Relaxed)
    }
}

/// Tower layer that retries retryable failures of the inner transport.
#[derive(Debug, Clone)]
pub struct RetryLayer {
    policy: RetryPolicy,
    counts: Arc<RpcErrorCounts>,
}

impl<S> Layer<S> for RetryLayer {
    type Service = RetryService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RetryService {
            inner,
            policy: self.policy,
            counts: self.counts.clone(),
        }
    }
}

/// The service of [`RetryLayer`].
#[derive(Debug, Clone)]
pub struct RetryService<S> {
    inner: S,
    policy: RetryPolicy,
    counts: Arc<RpcErrorCounts>,
}

impl<S> Service<RequestPacket> for RetryService<S>
where
    S: Service<RequestPacket, Response = ResponsePacket, Error = TransportError, Future = TransportFut<'static>>
        + Clone
        + Send
        + 'static,
{
    type Response = ResponsePacket;
    type Error = TransportError;
    type Future = TransportFut<'static>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: RequestPacket) -> Self::Future {
        let mut inner = self.inner.clone();
        let (policy, counts) = (self.policy, self.counts.clone());
        Box::pin(async move {
            let calls = match &request {
                RequestPacket::Single(_) => 1,
                RequestPacket::Batch(b) => b.len() as u64,
            };
            let mut attempt = 0;
            loop {
                attempt += 1;
                counts.calls.fetch_add(calls, Ordering::Relaxed);
                let error = match tokio::time::timeout(policy.attempt_timeout, inner.call(request.clone())).await {
                    Ok(Ok(response)) => match response.as_error().map(classify_payload) {
                        // A rate-limit answer inside a 200 is retried like a 429.
                        Some(RpcErrorKind::RateLimited) => {
                            counts.record(RpcErrorKind::RateLimited);
                            None
                        }
                        _ => return Ok(response),
                    },
                    Ok(Err(e)) => {
                        let kind = classify(&e);
                        counts.record(kind);
                        if !kind.is_retryable() {
                            return Err(e);
                        }
                        Some(e)
                    }
                    Err(_) => {
                        counts.record(RpcErrorKind::Timeout);
                        Some(TransportErrorKind::custom_str(&format!(
                            "request timed out after {:?}",
                            policy.attempt_timeout
                        )))
                    }
                };
                if attempt >= policy.max_attempts {
                    return Err(error.unwrap_or_else(|| {
                        TransportErrorKind::custom_str(&format!("rate limited {attempt} times in a row"))
                    }));
                }
                tokio::time::sleep(policy.backoff().jittered_delay(attempt - 1)).await;
            }
        })
    }
}

/// One read of a JSON-RPC batch ([`Rpc::read_batch`]).
#[derive(Debug, Clone)]
pub enum Read {
    /// `eth_call` of `data` on `to`.
    Call {
        /// Contract.
        to: Address,
        /// Calldata.
        data: Bytes,
    },
    /// `eth_getBalance`, answered as a 32-byte big-endian word like a `uint256` return value.
    Balance(Address),
}

/// The chain endpoint: the JSON-RPC client (with the retry layer) and its error counters.
#[derive(Debug, Clone)]
pub struct Rpc {
    client: RpcClient,
    /// `scheme://host[:port]` of the endpoint, for messages.
    pub url: String,
    scrub: Arc<[String]>,
    /// Errors by kind.
    pub counts: Arc<RpcErrorCounts>,
}

impl Rpc {
    /// Connects (lazily: nothing is sent yet) to `raw_url`.
    pub fn new(raw_url: &str, policy: RetryPolicy) -> Result<Self, EndpointError> {
        let url = infernet_service::secret::SensitiveUrl::parse(raw_url)
            .map_or_else(|_| "<invalid URL>".into(), |u| u.to_string());
        let endpoint = raw_url
            .trim()
            .parse::<reqwest::Url>()
            .map_err(|e| EndpointError::NotUrl(e.to_string()))?;
        if !matches!(endpoint.scheme(), "http" | "https") {
            return Err(EndpointError::Scheme(endpoint.scheme().to_string()));
        }
        let counts = Arc::new(RpcErrorCounts::default());
        let http = reqwest::Client::builder()
            .pool_idle_timeout(Duration::from_secs(60))
            .tcp_nodelay(true)
            .build()
            .map_err(|e| EndpointError::Client(e.to_string()))?;
        let client = ClientBuilder::default()
            .layer(RetryLayer {
                policy,
                counts: counts.clone(),
            })
            .http_with_client(http, endpoint.clone());
        Ok(Self {
            client,
            url,
            scrub: Arc::from(vec![raw_url.to_string(), endpoint.to_string()]),
            counts,
        })
    }

    fn error(&self, method: &str, e: TransportError) -> RpcError {
        let kind = classify(&e);
        let message = self
            .scrub
            .iter()
            .fold(e.to_string(), |m, u| m.replace(u.as_str(), &self.url));
        // Some endpoints name the Infernet error only in the message: decoded here, once.
        let revert = match &e {
            TransportError::ErrorResp(payload) => payload.as_revert_data(),
            _ => None,
        }
        .or_else(|| InfernetError::find_in(&message).map(|i| Bytes::copy_from_slice(&i.selector)));
        RpcError::Call {
            method: method.to_string(),
            message,
            kind,
            revert,
        }
    }

    async fn request<P: RpcSend, R: RpcRecv>(&self, method: &'static str, params: P) -> Result<R, RpcError> {
        self.client
            .request(method, params)
            .await
            .map_err(|e| self.error(method, e))
    }

    /// `calls` of one method in one JSON-RPC batch, each answered on its own; `Err` when the
    /// batch as a whole got no answer.
    async fn batch<P: RpcSend, R: RpcRecv>(
        &self,
        method: &'static str,
        calls: &[P],
    ) -> Result<Vec<Result<R, RpcError>>, RpcError> {
        if calls.is_empty() {
            return Ok(Vec::new());
        }
        let mut batch = self.client.new_batch();
        let mut waiters = Vec::with_capacity(calls.len());
        for params in calls {
            waiters.push(
                batch
                    .add_call::<P, R>(method, params)
                    .map_err(|e| self.error(method, e))?,
            );
        }
        batch.send().await.map_err(|e| self.error(method, e))?;
        let mut out = Vec::with_capacity(waiters.len());
        for w in waiters {
            out.push(w.await.map_err(|e| self.error(method, e)));
        }
        Ok(out)
    }

    /// `eth_chainId`.
    pub async fn chain_id(&self) -> Result<u64, RpcError> {
        let id: U64 = self.request("eth_chainId", ()).await?;
        Ok(id.to::<u64>())
    }

    /// The latest block (header only).
    pub async fn latest_block(&self) -> Result<Block, RpcError> {
        let block: Option<Block> = self.request("eth_getBlockByNumber", ("latest", false)).await?;
        block.ok_or_else(|| RpcError::Call {
            method: "eth_getBlockByNumber".into(),
            message: "the endpoint has no latest block".into(),
            kind: RpcErrorKind::Rpc,
            revert: None,
        })
    }

    /// `eth_getCode` at latest.
    pub async fn code(&self, at: Address) -> Result<Bytes, RpcError> {
        self.request("eth_getCode", (at, "latest")).await
    }

    /// `eth_getTransactionCount` at `block` (`latest` or `pending`).
    pub async fn nonce(&self, of: Address, block: &'static str) -> Result<u64, RpcError> {
        let n: U64 = self.request("eth_getTransactionCount", (of, block)).await?;
        Ok(n.to::<u64>())
    }

    /// `eth_maxPriorityFeePerGas`, or `None` when the endpoint does not know it.
    pub async fn max_priority_fee(&self) -> Option<u128> {
        let fee: Result<U256, _> = self.request("eth_maxPriorityFeePerGas", ()).await;
        fee.ok().map(|f| f.saturating_to::<u128>())
    }

    /// `eth_gasPrice`.
    pub async fn gas_price(&self) -> Result<u128, RpcError> {
        let price: U256 = self.request("eth_gasPrice", ()).await?;
        Ok(price.saturating_to::<u128>())
    }

    /// `eth_estimateGas` of `tx` at latest; a revert comes back as an error with its data.
    pub async fn estimate_gas(&self, tx: &TransactionRequest) -> Result<u64, RpcError> {
        let gas: U64 = self.request("eth_estimateGas", (tx,)).await?;
        Ok(gas.to::<u64>())
    }

    /// `eth_sendRawTransaction`.
    pub async fn send_raw(&self, raw: Bytes) -> Result<B256, SendError> {
        Ok(self.request("eth_sendRawTransaction", (raw,)).await?)
    }

    /// `eth_sendRawTransaction` of each of `raws` in one JSON-RPC batch, answered one by one.
    pub async fn send_raw_batch(&self, raws: &[Bytes]) -> Vec<Result<B256, SendError>> {
        let params: Vec<(&Bytes,)> = raws.iter().map(|r| (r,)).collect();
        match self.batch::<_, B256>("eth_sendRawTransaction", &params).await {
            Ok(answers) => answers.into_iter().map(|a| a.map_err(SendError::from)).collect(),
            Err(e) => raws.iter().map(|_| Err(SendError::NoAnswer(e.clone()))).collect(),
        }
    }

    /// One contract call (`eth_call`) decoded as `C`'s return type.
    pub async fn call<C: SolCall>(&self, to: Address, call: &C, block: BlockId) -> Result<C::Return, RpcError> {
        let tx = TransactionRequest::default().to(to).input(call.abi_encode().into());
        let raw: Bytes = self
            .client
            .request("eth_call", (tx, block))
            .await
            .map_err(|e| self.error(C::SIGNATURE, e))?;
        decode::<C>(Ok(raw))
    }

    /// `reads` at `block` in one JSON-RPC batch, each answered on its own; `Err` when the batch
    /// as a whole got no answer.
    pub async fn read_batch(&self, reads: &[Read], block: BlockId) -> Result<Vec<Result<Bytes, RpcError>>, RpcError> {
        enum Waiting {
            Call(Waiter<Bytes>),
            Balance(Waiter<U256>),
        }
        if reads.is_empty() {
            return Ok(Vec::new());
        }
        let mut batch = self.client.new_batch();
        let mut waiting = Vec::with_capacity(reads.len());
        for read in reads {
            waiting.push(match read {
                Read::Call { to, data } => {
                    let tx = TransactionRequest::default().to(*to).input(data.clone().into());
                    Waiting::Call(
                        batch
                            .add_call("eth_call", &(tx, block))
                            .map_err(|e| self.error("eth_call", e))?,
                    )
                }
                Read::Balance(of) => Waiting::Balance(
                    batch
                        .add_call("eth_getBalance", &(of, block))
                        .map_err(|e| self.error("eth_getBalance", e))?,
                ),
            });
        }
        batch.send().await.map_err(|e| self.error("read batch", e))?;
        let mut out = Vec::with_capacity(waiting.len());
        for w in waiting {
            out.push(match w {
                Waiting::Call(w) => w.await.map_err(|e| self.error("eth_call", e)),
                Waiting::Balance(w) => w
                    .await
                    .map(|b| Bytes::from(b.to_be_bytes::<32>().to_vec()))
                    .map_err(|e| self.error("eth_getBalance", e)),
            });
        }
        Ok(out)
    }

    /// Receipts of `hashes` in one batch (`None`: not mined yet).
    pub async fn receipts(&self, hashes: &[B256]) -> Result<Vec<Option<TransactionReceipt>>, RpcError> {
        let params: Vec<(B256,)> = hashes.iter().map(|h| (*h,)).collect();
        self.batch("eth_getTransactionReceipt", &params)
            .await?
            .into_iter()
            .collect()
    }
}

/// Decodes the answer of one batched call as `C`'s return type.
pub fn decode<C: SolCall>(answer: Result<Bytes, RpcError>) -> Result<C::Return, RpcError> {
    let raw = answer?;
    C::abi_decode_returns(&raw).map_err(|e| RpcError::Decode {
        method: C::SIGNATURE.to_string(),
        message: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_is_capped_and_jittered() {
        let p = RetryPolicy {
            base_delay: Duration::from_millis(100),
            max_delay: Duration::from_secs(2),
            max_attempts: 10,
            attempt_timeout: Duration::from_secs(1),
        };
        let b = p.backoff();
        assert_eq!(b.delay(3, 0.5), Duration::from_millis(400));
        assert_eq!(b.delay(40, 1.0), Duration::from_secs(2));
        assert!((0..100).all(|_| b.jittered_delay(10) <= Duration::from_secs(2)));
    }

    #[test]
    fn rpc_urls_with_single_label_hosts_are_accepted() {
        crate::install_tls_provider();
        for ok in [
            "http://localhost:8545",
            "http://anvil:8545",
            "https://rpc.example/v2/KEY",
            "http://10.0.0.5:8545",
        ] {
            let rpc = Rpc::new(ok, RetryPolicy::default()).unwrap_or_else(|e| panic!("{ok}: {e}"));
            assert!(!rpc.url.contains("KEY"), "{}", rpc.url);
        }
        assert!(
            Rpc::new("ws://localhost:8546", RetryPolicy::default())
                .unwrap_err()
                .to_string()
                .contains("ws://")
        );
        assert!(Rpc::new("localhost:8545 x", RetryPolicy::default()).is_err());
    }
}
