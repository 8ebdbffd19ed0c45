//! Subscriptions end to end: a real `infernet-node` process with the hello-world service, on a
//! devnet (anvil + our contracts), delivering on chain.
//!
//! anvil mines each transaction as it arrives, and the tests move time with `evm_increaseTime`,
//! so interval boundaries are exact and nothing waits for wall-clock periods.

use std::{
    path::PathBuf,
    process::{Command, Stdio},
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use alloy::{
    primitives::{Address, Bytes, U256},
    providers::{DynProvider, Provider},
    sol_types::SolValue,
};
use infernet_contracts::{
    Devnet,
    bindings::{
        EIP712Coordinator, ExampleCallbackConsumer, ExampleDelegatorConsumer, ExampleSubscriptionConsumer, Inbox,
        Wallet, WalletFactory,
    },
    devnet, eip712,
};
use infernet_testkit::{ChildGuard, free_port, wait_healthy};
use serde_json::{Value, json};

use crate::{
    chain::{NODE_KEY, devnet},
    support::{client, get_json},
};

const NODE_BIN: &str = env!("CARGO_BIN_EXE_infernet-node");
/// anvil's account #3: a second node.
const NODE2_KEY: &str = "0x7c852118294e51e653712a81e05800f419141751be58f605c371e15141b007a6";
const WAIT: Duration = Duration::from_secs(40);

/// An `infernet-node` process with its own directory; killed on drop.
struct NodeProcess {
    child: Option<ChildGuard>,
    port: u16,
    dir: tempfile::TempDir,
    config: PathBuf,
}

impl NodeProcess {
    fn start(config: Value) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let config_path = dir.path().join("config.json");
        let mut config = config;
        let port = free_port();
        config["server"] = json!({"port": port, "rate_limit": {"num_requests": 100000, "period": 1}});
        config["store"] = json!({"path": dir.path().join("jobs.db")});
        config["log"] = json!({"path": dir.path().join("node.log")});
        config["forward_stats"] = json!(false);
        std::fs::write(&config_path, config.to_string()).unwrap();
        let mut node = Self {
            child: None,
            port,
            dir,
            config: config_path,
        };
        node.spawn();
        node
    }

    fn spawn(&mut self) {
        let stderr = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("stderr.log"))
            .unwrap();
        let child = Command::new(NODE_BIN)
            .arg("--config")
            .arg(&self.config)
            .env("RUST_LOG", "info,infernet_node=debug")
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .unwrap();
        self.child = Some(ChildGuard(child));
        let healthy = std::panic::catch_unwind(|| wait_healthy(self.port, Duration::from_secs(30)));
        if healthy.is_err() {
            panic!("the node did not become healthy; log:\n{}", self.logs());
        }
    }

    /// SIGKILL: no shutdown work at all.
    fn kill(&mut self) {
        self.child.take();
    }

    fn at(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    fn logs(&self) -> String {
        let text = std::fs::read_to_string(self.dir.path().join("stderr.log")).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(60)..].join("\n")
    }

    async fn metrics(&self) -> String {
        client()
            .get(self.at("/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    async fn chain_state(&self) -> Value {
        let info: Value = get_json(&client(), self.at("/info")).await;
        info["chain"]["state"].clone()
    }
}

/// The value of metric `name` (with `label`, if given) in Prometheus text; for a histogram, its
/// observation count.
fn metric(text: &str, name: &str, label: Option<(&str, &str)>) -> f64 {
    let scrape = prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_string()))).unwrap();
    let sample = scrape
        .samples
        .iter()
        .find(|s| s.metric == name && label.is_none_or(|(k, v)| s.labels.get(k) == Some(v)))
        .unwrap_or_else(|| panic!("{name} {label:?} missing from:\n{text}"));
    match &sample.value {
        prometheus_parse::Value::Counter(v)
        | prometheus_parse::Value::Gauge(v)
        | prometheus_parse::Value::Untyped(v) => *v,
        prometheus_parse::Value::Histogram(h) => h.iter().map(|b| b.count).fold(0.0, f64::max),
        prometheus_parse::Value::Summary(_) => panic!("{name} is a summary"),
    }
}

/// A node config for `devnet`, signing with `key`, reaching the chain at `rpc_url`.
fn node_config(devnet: &Devnet, key: &str, rpc_url: &str) -> Value {
    json!({
        "containers": [{"id": "hello-world", "port": free_port(), "process": {"program": "hello-world"}}],
        "chain": {
            "enabled": true,
            "rpc_url": rpc_url,
            "registry_address": devnet.deployment.registry.to_string(),
            "trail_head_blocks": 0,
            "balance_period": 0.1,
            "snapshot_sync": {"sleep": 0.05, "batch_size": 50, "sync_period": 0.1},
            "wallet": {"private_key": key, "payment_address": devnet.node_payment_wallet.to_string()}
        }
    })
}

async fn wait_for<F, Fut>(what: &str, node: &NodeProcess, mut done: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + WAIT;
    while !done().await {
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}; node log:\n{}",
            node.logs()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn deployer(devnet: &Devnet) -> DynProvider {
    devnet.provider(devnet::signer(devnet::DEPLOYER))
}

/// Moves the chain's clock forward and mines a block at the new time.
async fn advance(p: &DynProvider, secs: u64) {
    let _: Value = p.raw_request("evm_increaseTime".into(), (secs,)).await.unwrap();
    mine(p).await;
}

async fn mine(p: &DynProvider) {
    let _: Value = p.raw_request("evm_mine".into(), ()).await.unwrap();
}

async fn send<P: Provider, D: alloy::contract::CallDecoder>(
    call: alloy::contract::CallBuilder<P, D>,
) -> alloy::rpc::types::TransactionReceipt {
    let receipt = call.send().await.unwrap().get_receipt().await.unwrap();
    assert!(receipt.status(), "transaction reverted: {receipt:?}");
    receipt
}

fn created_id(receipt: &alloy::rpc::types::TransactionReceipt) -> u32 {
    receipt
        .decoded_log::<EIP712Coordinator::SubscriptionCreated>()
        .expect("SubscriptionCreated")
        .data
        .id
}

type SubscriptionConsumer<'a> = ExampleSubscriptionConsumer::ExampleSubscriptionConsumerInstance<&'a DynProvider>;

/// An unpaid hello-world subscription of the example consumer.
fn unpaid_subscription<'c, 'a>(
    consumer: &'c SubscriptionConsumer<'a>,
    frequency: u32,
    period: u32,
    redundancy: u16,
    lazy: bool,
) -> alloy::contract::SolCallBuilder<&'c &'a DynProvider, ExampleSubscriptionConsumer::createSubscriptionCall> {
    consumer.createSubscription(
        "hello-world".into(),
        frequency,
        period,
        redundancy,
        lazy,
        Address::ZERO,
        U256::ZERO,
        Address::ZERO,
        Address::ZERO,
    )
}

type CallbackConsumer<'a> = ExampleCallbackConsumer::ExampleCallbackConsumerInstance<&'a DynProvider>;

/// A one-shot hello-world request of the example callback consumer, paid `amount` from `wallet`.
fn request<'c, 'a>(
    consumer: &'c CallbackConsumer<'a>,
    inputs: Bytes,
    amount: U256,
    wallet: Address,
) -> alloy::contract::SolCallBuilder<&'c &'a DynProvider, ExampleCallbackConsumer::requestComputeCall> {
    consumer.requestCompute(
        "hello-world".into(),
        inputs,
        1,
        Address::ZERO,
        amount,
        wallet,
        Address::ZERO,
    )
}

/// The local clock as a `uint32` timestamp (signature expiries are checked against it).
fn unix_now() -> u32 {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    u32::try_from(secs).unwrap()
}

fn node_address(index: usize) -> Address {
    devnet::signer(index).address()
}

/// The five-key output of hello-world as delivered: `(raw, processed)` pairs of input and output.
fn decode_pair(bytes: &Bytes) -> (Vec<u8>, Vec<u8>) {
    let (a, b) = <(Bytes, Bytes)>::abi_decode_params(bytes).expect("abi.encode(bytes, bytes)");
    (a.to_vec(), b.to_vec())
}

#[tokio::test]
async fn a_callback_subscription_is_delivered_with_the_consumers_inputs() {
    let devnet = devnet().await;
    let node = NodeProcess::start(node_config(&devnet, NODE_KEY, &devnet.endpoint()));
    let p = deployer(&devnet);
    let consumer = ExampleCallbackConsumer::new(devnet.examples.callback_consumer, &p);
    let receipt = send(request(
        &consumer,
        Bytes::from_static(b"\xde\xad\xbe\xef"),
        U256::ZERO,
        Address::ZERO,
    ))
    .await;
    let id = created_id(&receipt);
    wait_for("the delivery", &node, || async {
        consumer.deliveryCount().call().await.unwrap() == U256::from(1)
    })
    .await;
    let d = consumer.getDelivery(U256::ZERO).call().await.unwrap();
    assert_eq!((d.subscriptionId, d.interval, d.redundancy), (id, 1, 1));
    assert_eq!(d.node, node_address(devnet::NODE));
    // hello-world echoes the on-chain input as raw_input and says hello as raw_output.
    assert_eq!(decode_pair(&d.input).0, vec![0xde, 0xad, 0xbe, 0xef]);
    assert_eq!(decode_pair(&d.output).0, b"hello, world!".to_vec());
    assert!(d.proof.is_empty());

    // The node sees its receipt with the next block it reads.
    wait_for("the node to see its receipt", &node, || async {
        node.chain_state().await["deliveries"]["delivered"] == 1
    })
    .await;
    let state = node.chain_state().await;
    assert_eq!(state["transactions"]["mined"], 1, "{state}");
    assert_eq!(
        state["tracked"]["onchain"], 0,
        "a delivered callback is no longer tracked: {state}"
    );
    let text = node.metrics().await;
    let value = |name: &str, label: Option<(&str, &str)>| metric(&text, name, label);
    assert_eq!(value("infernet_jobs_total", Some(("source", "onchain"))), 1.0, "{text}");
    assert_eq!(
        value("infernet_chain_transactions_total", Some(("outcome", "mined"))),
        1.0
    );
    assert_eq!(
        value("infernet_chain_deliveries_total", Some(("outcome", "delivered"))),
        1.0
    );
    assert_eq!(
        value("infernet_chain_subscriptions_tracked", Some(("kind", "onchain"))),
        0.0
    );
    assert!(value("infernet_chain_head_block", None) >= state["head_block"].as_f64().unwrap());
    assert!(value("infernet_rpc_calls_total", None) > 0.0);
    assert_eq!(
        value("infernet_chain_reaction_seconds", None),
        1.0,
        "one reaction observed"
    );
}

/// `PUT /admin/settings` with `settings`, signed by `operator`.
async fn put_settings(node: &NodeProcess, operator: &infernet_identity::Identity, settings: &Value) {
    let url = node.at("/admin/settings");
    let body = settings.to_string();
    let header = infernet_identity::nip98::authorization(operator, "PUT", &url, Some(body.as_bytes()));
    let answer = client()
        .put(&url)
        .header("authorization", header)
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 200, "{}", answer.text().await.unwrap());
}

#[tokio::test]
async fn outside_the_providers_hours_subscriptions_wait_when_the_provider_says_so() {
    let devnet = devnet().await;
    let operator = infernet_identity::Identity::generate();
    let mut config = node_config(&devnet, NODE_KEY, &devnet.endpoint());
    config["operator"] = json!({"pubkeys": [operator.npub()]});
    let node = NodeProcess::start(config);
    // Closed until a date two days away, chain subscriptions included.
    let later = jiff::Timestamp::now()
        .checked_add(jiff::SignedDuration::from_hours(60))
        .unwrap();
    let date = later.to_zoned_datetime(jiff::tz::TimeZone::UTC).date().to_string();
    let closed = json!({"availability": {"timezone": "UTC", "weekly": [],
        "exceptions": [{"date": date, "available": true}], "chain_outside": false}});
    put_settings(&node, &operator, &closed).await;

    let p = deployer(&devnet);
    let consumer = ExampleCallbackConsumer::new(devnet.examples.callback_consumer, &p);
    let receipt = send(request(&consumer, Bytes::new(), U256::ZERO, Address::ZERO)).await;
    let requested = receipt.block_number.unwrap();
    // The node reads three more blocks and serves nothing, and says why.
    for _ in 0..3 {
        mine(&p).await;
    }
    wait_for("the node to read past the request", &node, || async {
        let state = node.chain_state().await;
        state["head_block"].as_u64().unwrap_or(0) >= requested + 3 && state["outside_hours"] == true
    })
    .await;
    assert_eq!(consumer.deliveryCount().call().await.unwrap(), U256::ZERO);

    // Serving chain subscriptions outside the hours (the default): the waiting one is delivered.
    let mut open = closed.clone();
    open["availability"]["chain_outside"] = json!(true);
    put_settings(&node, &operator, &open).await;
    mine(&p).await;
    wait_for("the delivery once served outside hours", &node, || async {
        consumer.deliveryCount().call().await.unwrap() == U256::from(1)
    })
    .await;
    assert_eq!(node.chain_state().await["outside_hours"], false);
}

#[tokio::test]
async fn a_recurring_subscription_is_delivered_every_interval_by_each_redundant_node() {
    let devnet = devnet().await;
    let a = NodeProcess::start(node_config(&devnet, NODE_KEY, &devnet.endpoint()));
    let b = NodeProcess::start(node_config(&devnet, NODE2_KEY, &devnet.endpoint()));
    let p = deployer(&devnet);
    let consumer = ExampleSubscriptionConsumer::new(devnet.examples.subscription_consumer, &p);
    send(consumer.setInputData(Bytes::from_static(b"tick"))).await;
    let period = 60;
    let receipt = send(unpaid_subscription(&consumer, 3, period, 2, false)).await;
    let id = created_id(&receipt);
    // Not active yet (activeAt = creation + period): nothing is delivered.
    mine(&p).await;
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(consumer.deliveryCount().call().await.unwrap(), U256::ZERO);
    for interval in 1..=3u32 {
        advance(&p, u64::from(period)).await;
        let want = U256::from(interval * 2);
        wait_for(&format!("interval {interval}"), &a, || async {
            consumer.deliveryCount().call().await.unwrap() == want
        })
        .await;
    }
    let mut seen = Vec::new();
    for i in 0..6u64 {
        let d = consumer.getDelivery(U256::from(i)).call().await.unwrap();
        assert_eq!(d.subscriptionId, id);
        // getContainerInputs = abi.encode(id, interval, "tick"), echoed back as raw_input.
        let expected_input = (id, d.interval, Bytes::from_static(b"tick")).abi_encode_params();
        assert_eq!(decode_pair(&d.input).0, expected_input);
        seen.push((d.interval, d.node));
    }
    seen.sort();
    let (n1, n2) = (node_address(1), node_address(3));
    let expected: Vec<(u32, Address)> = (1..=3)
        .flat_map(|k| {
            let mut pair = [(k, n1), (k, n2)];
            pair.sort();
            pair
        })
        .collect();
    assert_eq!(seen, expected);
    // The subscription is over: later intervals are not served, and neither node tracks it.
    advance(&p, u64::from(period)).await;
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(consumer.deliveryCount().call().await.unwrap(), U256::from(6));
    for node in [&a, &b] {
        wait_for("the node to see its receipts", node, || async {
            node.chain_state().await["deliveries"]["delivered"] == 3
        })
        .await;
        let state = node.chain_state().await;
        assert_eq!(state["tracked"]["onchain"], 0, "{state}");
    }
}

#[tokio::test]
async fn a_lazy_subscription_stores_its_output_in_the_inbox() {
    let devnet = devnet().await;
    let node = NodeProcess::start(node_config(&devnet, NODE_KEY, &devnet.endpoint()));
    let p = deployer(&devnet);
    let consumer = ExampleSubscriptionConsumer::new(devnet.examples.subscription_consumer, &p);
    let receipt = send(unpaid_subscription(&consumer, 1, 0, 1, true)).await;
    let id = created_id(&receipt);
    wait_for("the lazy delivery", &node, || async {
        consumer.deliveryCount().call().await.unwrap() == U256::from(1)
    })
    .await;
    let d = consumer.getDelivery(U256::ZERO).call().await.unwrap();
    assert_eq!(d.subscriptionId, id);
    assert!(
        d.output.is_empty() && d.input.is_empty(),
        "lazy consumers get a pointer only"
    );
    assert_eq!(d.containerId, infernet_contracts::container_id("hello-world"));
    let inbox = Inbox::new(devnet.deployment.inbox, &p);
    let item = inbox
        .read(d.containerId, node_address(devnet::NODE), d.index)
        .call()
        .await
        .unwrap();
    assert_eq!((item.subscriptionId, item.interval), (id, 1));
    assert_eq!(decode_pair(&item.output).0, b"hello, world!".to_vec());
}

#[tokio::test]
async fn a_cancelled_subscription_is_not_served() {
    let devnet = devnet().await;
    let node = NodeProcess::start(node_config(&devnet, NODE_KEY, &devnet.endpoint()));
    let p = deployer(&devnet);
    let consumer = ExampleSubscriptionConsumer::new(devnet.examples.subscription_consumer, &p);
    let create = || unpaid_subscription(&consumer, 5, 30, 1, false);
    // One cancelled before it starts, one after its first interval.
    let early = created_id(&send(create()).await);
    let late = created_id(&send(create()).await);
    send(consumer.cancelSubscription(early)).await;
    advance(&p, 30).await;
    wait_for("interval 1 of the live subscription", &node, || async {
        consumer.deliveryCount().call().await.unwrap() == U256::from(1)
    })
    .await;
    assert_eq!(
        consumer.getDelivery(U256::ZERO).call().await.unwrap().subscriptionId,
        late
    );
    send(consumer.cancelSubscription(late)).await;
    for _ in 0..3 {
        advance(&p, 30).await;
        tokio::time::sleep(Duration::from_millis(400)).await;
    }
    assert_eq!(consumer.deliveryCount().call().await.unwrap(), U256::from(1));
    let state = node.chain_state().await;
    assert_eq!(state["tracked"]["onchain"], 0, "{state}");
    assert_eq!(
        state["transactions"]["sent"], 1,
        "no transaction for cancelled intervals: {state}"
    );
}

/// A consumer wallet owned by the deployer, holding 100,000 wei, letting `spender` spend all of it.
async fn consumer_wallet(devnet: &Devnet, p: &DynProvider, spender: Address) -> Address {
    let (funds, allowance) = (U256::from(100_000), U256::from(100_000));
    let factory = WalletFactory::new(devnet.deployment.wallet_factory, p);
    let receipt = send(factory.createWallet(node_address(devnet::DEPLOYER))).await;
    let wallet = receipt
        .decoded_log::<WalletFactory::WalletCreated>()
        .unwrap()
        .data
        .wallet;
    let fund = alloy::rpc::types::TransactionRequest::default().to(wallet).value(funds);
    p.send_transaction(fund).await.unwrap().get_receipt().await.unwrap();
    send(Wallet::new(wallet, p).approve(spender, Address::ZERO, allowance)).await;
    wallet
}

#[tokio::test]
async fn a_paid_subscription_pays_the_nodes_wallet_and_underpaid_ones_are_refused() {
    let devnet = devnet().await;
    let mut config = node_config(&devnet, NODE_KEY, &devnet.endpoint());
    config["containers"][0]["accepted_payments"] = json!({"0x0000000000000000000000000000000000000000": 1000});
    let node = NodeProcess::start(config);
    let p = deployer(&devnet);
    let consumer = ExampleCallbackConsumer::new(devnet.examples.callback_consumer, &p);
    let wallet = consumer_wallet(&devnet, &p, *consumer.address()).await;
    let node_wallet = devnet.node_payment_wallet;
    let before = p.get_balance(node_wallet).await.unwrap();
    // Below the container's accepted minimum (1000 wei): ignored.
    send(request(&consumer, Bytes::new(), U256::from(999), wallet)).await;
    let paid = created_id(&send(request(&consumer, Bytes::new(), U256::from(10_000), wallet)).await);
    wait_for("the paid delivery", &node, || async {
        consumer.deliveryCount().call().await.unwrap() == U256::from(1)
    })
    .await;
    assert_eq!(
        consumer.getDelivery(U256::ZERO).call().await.unwrap().subscriptionId,
        paid
    );
    // Fee 5 % is taken twice: the node's wallet gets 90 %.
    let after = p.get_balance(node_wallet).await.unwrap();
    assert_eq!(after - before, U256::from(9_000));
    // The node reports the payment wallet's balance (for the operator's "funds low" alert) and
    // its own account's, the same in `/info`, the heartbeat's chain state and `/metrics`.
    let node_account = node_address(devnet::NODE);
    wait_for("the balances in /info", &node, || async {
        let balances = node.chain_state().await["balances"].clone();
        balances["payment"]["wei"] == after.to_string()
            && balances["payment"]["address"].as_str().map(str::to_lowercase)
                == Some(node_wallet.to_string().to_lowercase())
            && balances["node"]["wei"].as_str().and_then(|w| w.parse::<U256>().ok())
                == Some(p.get_balance(node_account).await.unwrap())
    })
    .await;
    let metrics = node.metrics().await;
    let eth = f64::from(after) / 1e18;
    assert!(
        (metric(&metrics, "infernet_chain_balance_eth", Some(("wallet", "payment"))) - eth).abs() < 1e-9,
        "{metrics}"
    );
    assert!(metric(&metrics, "infernet_chain_balance_eth", Some(("wallet", "node"))) > 1.0);
    assert_eq!(metric(&metrics, "infernet_chain_transactions_pending", None), 0.0);
    mine(&p).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        consumer.deliveryCount().call().await.unwrap(),
        U256::from(1),
        "the underpaid one stays unserved"
    );
}

/// A signed delegated-subscription request body for the devnet's delegator consumer.
fn delegated_body(devnet: &Devnet, signer: usize, nonce: u32, expiry: u32, containers: &str) -> String {
    delegated_schedule(devnet, signer, nonce, expiry, containers, (0, 0, 1))
}

/// [`delegated_body`] with a schedule `(active_at, period, frequency)`.
fn delegated_schedule(
    devnet: &Devnet,
    signer: usize,
    nonce: u32,
    expiry: u32,
    containers: &str,
    (active_at, period, frequency): (u32, u32, u32),
) -> String {
    let owner = devnet.examples.delegator_consumer;
    let sub = eip712::Subscription::unpaid(
        owner,
        active_at,
        period,
        frequency,
        1,
        infernet_contracts::container_id(containers),
        false,
    );
    let message = eip712::DelegateSubscription { nonce, expiry, sub };
    let sig = eip712::sign(&devnet::signer(signer), &message, 31337, devnet.deployment.coordinator).unwrap();
    // r and s as plain JSON integers, as Ritual's Python client sends them.
    format!(
        r#"{{"subscription": {{"owner": "{owner}", "active_at": {active_at}, "period": {period}, "frequency": {frequency}, "redundancy": 1,
             "containers": "{:x}", "lazy": false, "verifier": "{z}", "payment_amount": 0,
             "payment_token": "{z}", "wallet": "{z}"}},
           "signature": {{"nonce": {nonce}, "expiry": {expiry}, "v": {}, "r": {}, "s": {}}},
           "data": {{"prompt": "hi"}}}}"#,
        infernet_contracts::container_id(containers),
        sig.v,
        U256::from_be_bytes(sig.r.0),
        U256::from_be_bytes(sig.s.0),
        z = Address::ZERO,
    )
}

async fn post_job(node: &NodeProcess, body: String) -> (u16, Value) {
    let r = client()
        .post(node.at("/api/jobs"))
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn a_delegated_subscription_is_created_and_delivered_and_bad_signatures_are_refused() {
    let devnet = devnet().await;
    let node = NodeProcess::start(node_config(&devnet, NODE_KEY, &devnet.endpoint()));
    let p = deployer(&devnet);
    let now = unix_now();

    // Signed by someone who is not the consumer's signer: refused before the 200.
    let (status, body) = post_job(&node, delegated_body(&devnet, 3, 1, now + 3600, "hello-world")).await;
    assert_eq!(status, 403, "{body}");
    assert!(body["error"].as_str().unwrap().contains("signer mismatch"), "{body}");
    // Expired.
    let (status, body) = post_job(
        &node,
        delegated_body(&devnet, devnet::DELEGATE_SIGNER, 1, now - 10, "hello-world"),
    )
    .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (405, Some("Signature expired")),
        "{body}"
    );
    // A container set this node does not run.
    let (status, body) = post_job(
        &node,
        delegated_body(&devnet, devnet::DELEGATE_SIGNER, 1, now + 3600, "nope"),
    )
    .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (405, Some("Container-set not supported")),
        "{body}"
    );
    // A malformed signature field is named.
    let broken =
        delegated_body(&devnet, devnet::DELEGATE_SIGNER, 1, now + 3600, "hello-world").replace("\"v\": 2", "\"v\": 9");
    let (status, body) = post_job(&node, broken).await;
    assert_eq!(status, 400, "{body}");
    assert!(body["error"].as_str().unwrap().contains("signature.v"), "{body}");

    let good = delegated_body(&devnet, devnet::DELEGATE_SIGNER, 7, now + 3600, "hello-world");
    let (status, body) = post_job(&node, good.clone()).await;
    assert_eq!((status, body), (200, json!({})));
    let consumer = ExampleDelegatorConsumer::new(devnet.examples.delegator_consumer, &p);
    wait_for("the delegated delivery", &node, || async {
        consumer.deliveryCount().call().await.unwrap() == U256::from(1)
    })
    .await;
    let coordinator = EIP712Coordinator::new(devnet.deployment.coordinator, &p);
    let key = alloy::primitives::keccak256((devnet.examples.delegator_consumer, 7u32).abi_encode());
    let id = coordinator.delegateCreatedIds(key).call().await.unwrap();
    assert!(id > 0, "the delivery created the subscription on chain");
    let d = consumer.getDelivery(U256::ZERO).call().await.unwrap();
    assert_eq!(
        (d.subscriptionId, d.interval, d.node),
        (id, 1, node_address(devnet::NODE))
    );
    // Delegated input is the request's data (off-chain source), echoed as raw_input.
    assert_eq!(
        String::from_utf8(decode_pair(&d.input).0).unwrap(),
        r#"{"prompt":"hi"}"#
    );
    // Submitting it again is harmless: accepted, never delivered twice.
    let (status, _) = post_job(&node, good).await;
    assert_eq!(status, 200);
    mine(&p).await;
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(consumer.deliveryCount().call().await.unwrap(), U256::from(1));
    let state = node.chain_state().await;
    assert_eq!(state["transactions"]["sent"], 1, "{state}");
}

/// A JSON-RPC proxy in front of anvil that refuses about a third of the requests with 429 or 503.
async fn flaky_proxy(upstream: String) -> (u16, Arc<AtomicUsize>) {
    use axum::{
        Router,
        body::Bytes as AxumBytes,
        http::{StatusCode, header},
        response::IntoResponse,
        routing::post,
    };
    let refused = Arc::new(AtomicUsize::new(0));
    let count = Arc::new(AtomicUsize::new(0));
    let (r, c) = (refused.clone(), count.clone());
    let http = client();
    let port = crate::support::serve(Router::new().route(
        "/",
        post(move |body: AxumBytes| {
            let (r, c, http, upstream) = (r.clone(), c.clone(), http.clone(), upstream.clone());
            async move {
                let n = c.fetch_add(1, Ordering::SeqCst);
                if n % 3 == 1 {
                    r.fetch_add(1, Ordering::SeqCst);
                    let status = if n % 2 == 0 {
                        StatusCode::TOO_MANY_REQUESTS
                    } else {
                        StatusCode::SERVICE_UNAVAILABLE
                    };
                    return (status, "try later").into_response();
                }
                match http
                    .post(&upstream)
                    .header(header::CONTENT_TYPE, "application/json")
                    .body(body)
                    .send()
                    .await
                {
                    Ok(answer) => {
                        let bytes = answer.bytes().await.unwrap_or_default();
                        ([(header::CONTENT_TYPE, "application/json")], bytes).into_response()
                    }
                    Err(_) => StatusCode::BAD_GATEWAY.into_response(),
                }
            }
        }),
    ))
    .await;
    (port, refused)
}

// Multi-threaded: the proxy runs on this test's runtime while the node starts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deliveries_get_through_an_rpc_that_fails_part_of_the_time() {
    let devnet = devnet().await;
    let (port, refused) = flaky_proxy(devnet.endpoint()).await;
    let node = NodeProcess::start(node_config(&devnet, NODE_KEY, &format!("http://127.0.0.1:{port}")));
    let p = deployer(&devnet);
    let callback = ExampleCallbackConsumer::new(devnet.examples.callback_consumer, &p);
    for i in 0..3u8 {
        send(request(&callback, Bytes::from(vec![i]), U256::ZERO, Address::ZERO)).await;
    }
    let recurring = ExampleSubscriptionConsumer::new(devnet.examples.subscription_consumer, &p);
    send(unpaid_subscription(&recurring, 2, 20, 1, false)).await;
    wait_for("three callbacks", &node, || async {
        callback.deliveryCount().call().await.unwrap() == U256::from(3)
    })
    .await;
    for k in 1..=2u64 {
        advance(&p, 20).await;
        wait_for(&format!("recurring interval {k}"), &node, || async {
            recurring.deliveryCount().call().await.unwrap() == U256::from(k)
        })
        .await;
    }
    assert!(
        refused.load(Ordering::SeqCst) > 10,
        "the proxy refused requests along the way"
    );
    let metrics = node.metrics().await;
    let errors = |kind: &str| metric(&metrics, "infernet_rpc_errors_total", Some(("kind", kind)));
    assert!(errors("rate_limited") > 0.0 && errors("unavailable") > 0.0, "{metrics}");
    wait_for("the node to see its receipts", &node, || async {
        node.chain_state().await["deliveries"]["delivered"] == 5
    })
    .await;
    let state = node.chain_state().await;
    assert_eq!(state["transactions"]["reverted"], 0, "{state}");
    assert_eq!(
        state["transactions"]["sent"], 5,
        "one transaction per delivery: {state}"
    );
}

#[tokio::test]
async fn a_node_killed_with_a_transaction_in_flight_never_delivers_that_interval_twice() {
    let devnet = devnet().await;
    let p = deployer(&devnet);
    // Blocks only when the test mines them: the node's transaction waits in the mempool.
    let _: Value = p.raw_request("evm_setAutomine".into(), (false,)).await.unwrap();
    let mut node = NodeProcess::start(node_config(&devnet, NODE_KEY, &devnet.endpoint()));
    let consumer = ExampleSubscriptionConsumer::new(devnet.examples.subscription_consumer, &p);
    let pending = consumer
        .createSubscription(
            "hello-world".into(),
            2,
            30,
            1,
            false,
            Address::ZERO,
            U256::ZERO,
            Address::ZERO,
            Address::ZERO,
        )
        .send()
        .await
        .unwrap();
    mine(&p).await;
    pending.get_receipt().await.unwrap();
    advance(&p, 30).await;
    let me = node_address(devnet::NODE);
    let nonce_before = p.get_transaction_count(me).await.unwrap();
    wait_for("the node's delivery to reach the mempool", &node, || async {
        p.get_transaction_count(me).pending().await.unwrap() == nonce_before + 1
    })
    .await;
    node.kill();
    node.spawn();
    // The restarted node finds its earlier transaction pending; only then is it mined.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    mine(&p).await;
    let _: Value = p.raw_request("evm_setAutomine".into(), (true,)).await.unwrap();
    wait_for("interval 1", &node, || async {
        consumer.deliveryCount().call().await.unwrap() == U256::from(1)
    })
    .await;
    for _ in 0..4 {
        mine(&p).await;
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    assert_eq!(consumer.deliveryCount().call().await.unwrap(), U256::from(1));
    assert_eq!(
        p.get_transaction_count(me).await.unwrap(),
        nonce_before + 1,
        "the restarted node sent nothing more for interval 1; log:\n{}",
        node.logs()
    );
    assert!(
        node.logs()
            .contains("waiting for transactions sent before the restart to be mined"),
        "{}",
        node.logs()
    );
    // And it serves the next interval normally.
    advance(&p, 30).await;
    wait_for("interval 2", &node, || async {
        consumer.deliveryCount().call().await.unwrap() == U256::from(2)
    })
    .await;
    let d = consumer.getDelivery(U256::from(1)).call().await.unwrap();
    assert_eq!((d.interval, d.node), (2, me));
}

// Multi-threaded: the failing service runs on this test's runtime while the node starts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delegated_subscription_whose_container_fails_is_retried_a_bounded_number_of_times() {
    let devnet = devnet().await;
    let broken = crate::support::stub(crate::support::Stub::Fails).await;
    let mut config = node_config(&devnet, NODE_KEY, &devnet.endpoint());
    config["manage_containers"] = json!(false);
    config["containers"] = json!([{"id": "broken", "port": broken}]);
    let node = NodeProcess::start(config);
    let p = deployer(&devnet);
    let now = unix_now();
    let (status, body) = post_job(
        &node,
        delegated_body(&devnet, devnet::DELEGATE_SIGNER, 3, now + 3600, "broken"),
    )
    .await;
    assert_eq!((status, body), (200, json!({})));
    // Blocks move time on so that each retry (2 s, then 4 s later) comes due.
    let deadline = Instant::now() + WAIT;
    while node.chain_state().await["tracked"]["delegated"] != 0 {
        assert!(Instant::now() < deadline, "still retrying; log:\n{}", node.logs());
        advance(&p, 2).await;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    for _ in 0..5 {
        advance(&p, 5).await;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let state = node.chain_state().await;
    assert_eq!(
        state["deliveries"]["failed"], 3,
        "three attempts, then it is dropped: {state}"
    );
    let info: Value = get_json(&client(), node.at("/info")).await;
    assert_eq!(info["pending"]["onchain"], 0, "{info}");
    assert_eq!(state["transactions"]["sent"], 0, "{state}");
    assert!(node.logs().contains("giving up on this interval"), "{}", node.logs());
}

#[tokio::test]
async fn a_proof_subscription_escrows_the_stake_and_is_paid_after_verification() {
    use infernet_contracts::bindings::AtomicVerifier;
    let devnet = devnet().await;
    let p = deployer(&devnet);
    let verifier = AtomicVerifier::deploy(&p, devnet.deployment.registry).await.unwrap();
    send(verifier.updateSupportedToken(Address::ZERO, true)).await;
    send(verifier.updateFee(Address::ZERO, U256::from(1_000))).await;
    let mut config = node_config(&devnet, NODE_KEY, &devnet.endpoint());
    config["containers"][0]["generates_proofs"] = json!(true);
    let node = NodeProcess::start(config);
    let consumer = ExampleCallbackConsumer::new(devnet.examples.callback_consumer, &p);
    let wallet = consumer_wallet(&devnet, &p, *consumer.address()).await;
    let node_wallet = devnet.node_payment_wallet;
    let before = p.get_balance(node_wallet).await.unwrap();
    for n in 1..=2u64 {
        let call = consumer.requestCompute(
            "hello-world".into(),
            Bytes::new(),
            1,
            Address::ZERO,
            U256::from(10_000),
            wallet,
            *verifier.address(),
        );
        send(call).await;
        wait_for("the verified delivery", &node, || async {
            node.chain_state().await["deliveries"]["delivered"].as_u64() == Some(n)
        })
        .await;
    }
    let d = consumer.getDelivery(U256::ZERO).call().await.unwrap();
    assert_eq!(d.proof.to_vec(), b"proof".to_vec(), "hello-world's proof is delivered");
    // Each delivery: 10,000 paid, 10 % protocol fee, 1,000 to the verifier: 8,000 to the node.
    assert_eq!(p.get_balance(node_wallet).await.unwrap() - before, U256::from(16_000));
    // The node's stake allowance is approved once and restored after each verification.
    let state = node.chain_state().await;
    assert_eq!(
        state["transactions"]["sent"], 3,
        "one approval, two deliveries: {state}"
    );
    let allowance = Wallet::new(node_wallet, &p)
        .allowance(node_address(devnet::NODE), Address::ZERO)
        .call()
        .await
        .unwrap();
    assert_eq!(allowance, U256::from(10_000));
}

#[tokio::test]
async fn a_recurring_delegated_subscription_is_served_once_per_interval_after_it_exists_on_chain() {
    let devnet = devnet().await;
    let node = NodeProcess::start(node_config(&devnet, NODE_KEY, &devnet.endpoint()));
    let p = deployer(&devnet);
    let block = p
        .get_block_by_number(alloy::eips::BlockNumberOrTag::Latest)
        .await
        .unwrap()
        .unwrap();
    let now = u32::try_from(block.header.timestamp).unwrap();
    let body = delegated_schedule(
        &devnet,
        devnet::DELEGATE_SIGNER,
        11,
        now + 3600,
        "hello-world",
        (now, 30, 2),
    );
    let (status, answer) = post_job(&node, body).await;
    assert_eq!((status, answer), (200, json!({})));
    let consumer = ExampleDelegatorConsumer::new(devnet.examples.delegator_consumer, &p);
    wait_for("interval 1", &node, || async {
        consumer.deliveryCount().call().await.unwrap() == U256::from(1)
    })
    .await;
    // The first delivery created it on chain, where the Listener finds it too: it stays one
    // subscription, served under its delegated key.
    for _ in 0..3 {
        mine(&p).await;
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let state = node.chain_state().await;
    assert_eq!(state["tracked"], json!({"delegated": 1, "onchain": 0}), "{state}");
    send(consumer.setInputData(Bytes::from_static(b"tock"))).await;
    advance(&p, 30).await;
    wait_for("interval 2", &node, || async {
        consumer.deliveryCount().call().await.unwrap() == U256::from(2)
    })
    .await;
    let first = consumer.getDelivery(U256::ZERO).call().await.unwrap();
    assert_eq!(
        String::from_utf8(decode_pair(&first.input).0).unwrap(),
        r#"{"prompt":"hi"}"#,
        "the first interval creates it with the signed request's data"
    );
    let d = consumer.getDelivery(U256::from(1)).call().await.unwrap();
    assert_eq!((d.interval, d.node), (2, node_address(devnet::NODE)));
    // From the second interval on: deliverCompute on the created id, with the consumer's inputs
    // (getContainerInputs = abi.encode(id, interval, inputData)), as every node would deliver.
    let id = first.subscriptionId;
    assert_eq!(d.subscriptionId, id);
    let expected_input = (id, 2u32, Bytes::from_static(b"tock")).abi_encode_params();
    assert_eq!(decode_pair(&d.input).0, expected_input);
    advance(&p, 30).await;
    wait_for("the node to finish with it", &node, || async {
        node.chain_state().await["tracked"]["delegated"] == 0
    })
    .await;
    assert_eq!(consumer.deliveryCount().call().await.unwrap(), U256::from(2));
    let state = node.chain_state().await;
    assert_eq!(
        state["transactions"]["sent"], 2,
        "one transaction per interval: {state}"
    );
}

/// The latest block's timestamp.
async fn chain_now(p: &DynProvider) -> u32 {
    let block = p
        .get_block_by_number(alloy::eips::BlockNumberOrTag::Latest)
        .await
        .unwrap()
        .unwrap();
    u32::try_from(block.header.timestamp).unwrap()
}

/// Creates the delegator consumer's delegated subscription `nonce` on chain, as a client (not
/// the node) would: `createSubscriptionDelegatee` from the deployer. Returns its id.
async fn create_delegated(
    devnet: &Devnet,
    p: &DynProvider,
    nonce: u32,
    expiry: u32,
    (active_at, period, frequency): (u32, u32, u32),
) -> u32 {
    let sub = eip712::Subscription::unpaid(
        devnet.examples.delegator_consumer,
        active_at,
        period,
        frequency,
        1,
        infernet_contracts::container_id("hello-world"),
        false,
    );
    let message = eip712::DelegateSubscription {
        nonce,
        expiry,
        sub: sub.clone(),
    };
    let signer = devnet::signer(devnet::DELEGATE_SIGNER);
    let sig = eip712::sign(&signer, &message, 31337, devnet.deployment.coordinator).unwrap();
    let coordinator = EIP712Coordinator::new(devnet.deployment.coordinator, p);
    created_id(&send(coordinator.createSubscriptionDelegatee(nonce, expiry, sub.into(), sig.v, sig.r, sig.s)).await)
}

#[tokio::test]
async fn a_delegated_subscription_created_on_chain_by_someone_else_is_tracked_and_delivered_once() {
    let devnet = devnet().await;
    let node = NodeProcess::start(node_config(&devnet, NODE_KEY, &devnet.endpoint()));
    let p = deployer(&devnet);
    let now = chain_now(&p).await;
    let schedule = (now + 30, 30, 2);
    let body = delegated_schedule(
        &devnet,
        devnet::DELEGATE_SIGNER,
        21,
        now + 3600,
        "hello-world",
        schedule,
    );
    let (status, answer) = post_job(&node, body).await;
    assert_eq!((status, answer), (200, json!({})));
    // The client creates it on chain itself before its first interval.
    let id = create_delegated(&devnet, &p, 21, now + 3600, schedule).await;
    mine(&p).await;
    wait_for("the Listener to read the new subscription", &node, || async {
        node.chain_state().await["synced_subscription_id"].as_u64() >= Some(u64::from(id))
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let state = node.chain_state().await;
    assert_eq!(
        state["tracked"],
        json!({"delegated": 1, "onchain": 0}),
        "the Listener's sighting is the delegated subscription, not a second one: {state}"
    );
    advance(&p, 30).await;
    let consumer = ExampleDelegatorConsumer::new(devnet.examples.delegator_consumer, &p);
    wait_for("interval 1", &node, || async {
        consumer.deliveryCount().call().await.unwrap() == U256::from(1)
    })
    .await;
    for _ in 0..3 {
        mine(&p).await;
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    assert_eq!(consumer.deliveryCount().call().await.unwrap(), U256::from(1));
    let d = consumer.getDelivery(U256::ZERO).call().await.unwrap();
    assert_eq!((d.subscriptionId, d.interval), (id, 1));
    wait_for("the node to see its receipt", &node, || async {
        node.chain_state().await["deliveries"]["delivered"] == 1
    })
    .await;
    let state = node.chain_state().await;
    assert_eq!(
        (&state["transactions"]["sent"], &state["transactions"]["reverted"]),
        (&json!(1), &json!(0)),
        "one transaction, none wasted on a second delivery: {state}"
    );
}

#[tokio::test]
async fn a_callback_whose_wallet_can_never_pay_is_given_up_with_the_reason() {
    let devnet = devnet().await;
    let mut config = node_config(&devnet, NODE_KEY, &devnet.endpoint());
    config["containers"][0]["accepted_payments"] = json!({"0x0000000000000000000000000000000000000000": 1000});
    let mut node = NodeProcess::start(config);
    let p = deployer(&devnet);
    let consumer = ExampleCallbackConsumer::new(devnet.examples.callback_consumer, &p);
    // An account the WalletFactory never created: no delivery can ever be paid from it.
    let not_a_wallet = node_address(devnet::DEPLOYER);
    let id = created_id(&send(request(&consumer, Bytes::new(), U256::from(10_000), not_a_wallet)).await);
    for run in ["first run", "after a restart"] {
        wait_for("the node to give it up", &node, || async {
            node.chain_state().await["deliveries"]["given_up"] == 1
        })
        .await;
        let state = node.chain_state().await;
        let given_up = &state["given_up"][0];
        assert_eq!(given_up["subscription"], format!("subscription {id}"), "{run}: {state}");
        let reason = given_up["reason"].as_str().unwrap();
        assert!(
            reason.contains(&format!("{not_a_wallet} was not created by the WalletFactory")),
            "{run}: {reason}"
        );
        assert_eq!(state["tracked"]["onchain"], 0, "{run}: {state}");
        assert_eq!(state["deliveries"]["failed"], 0, "{run}: no attempt is made: {state}");
        assert_eq!(state["transactions"]["sent"], 0, "{run}: {state}");
        if run == "first run" {
            node.kill();
            node.spawn();
        }
    }
    assert_eq!(consumer.deliveryCount().call().await.unwrap(), U256::ZERO);
}
