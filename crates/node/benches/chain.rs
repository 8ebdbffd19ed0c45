//! The chain side under load, on anvil with 1 s blocks and every RPC call counted by a proxy.
//!
//! Prints, against the targets of the chain-side issue:
//! - idle RPC calls per block with 0, 50 and 10,000 tracked subscriptions (target ≤ 3 in every case);
//! - RSS of the node tracking 10,000 subscriptions (target ≤ 40 MB);
//! - snapshot sync of 10,000 subscriptions by a freshly started node: its own work, the
//!   configured `sleep` between batches excluded (target ≤ 0.5 s), and how the REST API answers
//!   meanwhile;
//! - 50 subscriptions due in the same block: in which blocks they are delivered (target: all in
//!   the next block), and the reaction from the due block to each transaction's send, container
//!   calls excluded (target ≤ 20 ms).
//!
//! Run with `make bench` (builds the release binaries first). `BENCH_IDLE_BLOCKS` sets how many
//! blocks each idle measurement spans (default 10).

use std::{
    collections::BTreeMap,
    process::{Command, Stdio},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use alloy::{
    consensus::{SignableTransaction, TxEip1559, TxEnvelope},
    eips::eip2718::Encodable2718,
    primitives::{Address, Bytes, TxKind, U256},
    providers::{DynProvider, Provider},
    rpc::types::Filter,
    signers::SignerSync,
    sol_types::{SolCall, SolEvent},
};
use axum::{Router, body::Bytes as Body, http::header, response::IntoResponse, routing::post};
use infernet_contracts::{
    Devnet, DevnetOptions,
    bindings::ExampleSubscriptionConsumer,
    devnet::{self, signer},
};
use infernet_testkit::{ChildGuard, free_port, percentile, wait_healthy, workspace_binary};
use serde_json::{Value, json};

/// `DeliveryReceived(uint32 indexed subscriptionId, uint32 indexed interval, address indexed node, …)`
/// of the example consumers.
mod events {
    alloy::sol! {
        event DeliveryReceived(uint32 indexed subscriptionId, uint32 indexed interval, address indexed node,
            uint16 redundancy, bytes32 containerId, uint256 index);
    }
}

const NODE_KEY: &str = "0x59c6995e998f97a5a0044966f0945389dc9e86dae88c7a8412f4603b6b78690d";

/// JSON-RPC calls seen by a proxy, by method (a batch of n counts n).
#[derive(Default)]
struct Counts {
    by_method: BTreeMap<String, u64>,
}

/// A proxy in front of `upstream` that counts every JSON-RPC call; returns its port.
async fn counting_proxy(upstream: String) -> (u16, Arc<Mutex<Counts>>) {
    let counts = Arc::new(Mutex::new(Counts::default()));
    let http = reqwest::Client::new();
    let c = counts.clone();
    let app = Router::new().route(
        "/",
        post(move |body: Body| {
            let (c, http, upstream) = (c.clone(), http.clone(), upstream.clone());
            async move {
                if let Ok(v) = serde_json::from_slice::<Value>(&body) {
                    let calls: Vec<Value> = match v {
                        Value::Array(a) => a,
                        other => vec![other],
                    };
                    let mut counts = c.lock().expect("counts");
                    for call in calls {
                        let method = call["method"].as_str().unwrap_or("?").to_string();
                        *counts.by_method.entry(method).or_default() += 1;
                    }
                }
                let answer = http
                    .post(&upstream)
                    .header(header::CONTENT_TYPE, "application/json")
                    .body(body)
                    .send()
                    .await
                    .expect("anvil answers")
                    .bytes()
                    .await
                    .expect("anvil body");
                ([(header::CONTENT_TYPE, "application/json")], answer).into_response()
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("addr").port();
    tokio::spawn(async move { axum::serve(listener, app).await.expect("proxy") });
    (port, counts)
}

fn rss_mib(pid: u32) -> f64 {
    infernet_testkit::rss_kib(pid) as f64 / 1024.0
}

struct NodeProcess {
    child: ChildGuard,
    port: u16,
    dir: tempfile::TempDir,
}

impl NodeProcess {
    fn start(devnet: &Devnet, rpc_port: u16) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let port = free_port();
        // Ritual's defaults for the chain: trail 1 block, batches of 500, 1 s between batches,
        // 0.5 s sync period.
        let config = json!({
            "containers": [{"id": "hello-world", "port": free_port(), "process": {"program": "hello-world"}}],
            // A generous rate limit: the benchmark polls /info throughout.
            "server": {"port": port, "rate_limit": {"num_requests": 1000000, "period": 1}},
            "store": {"path": dir.path().join("jobs.db")},
            "log": {"path": dir.path().join("node.log")},
            "forward_stats": false,
            "chain": {
                "enabled": true,
                "rpc_url": format!("http://127.0.0.1:{rpc_port}"),
                "registry_address": devnet.deployment.registry.to_string(),
                "wallet": {"private_key": NODE_KEY}
            }
        });
        let path = dir.path().join("config.json");
        std::fs::write(&path, config.to_string()).expect("config");
        let child = Command::new(workspace_binary("infernet-node"))
            .arg("--config")
            .arg(&path)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("infernet-node starts");
        wait_healthy(port, Duration::from_secs(30));
        Self {
            child: ChildGuard(child),
            port,
            dir,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    async fn state(&self, http: &reqwest::Client) -> Value {
        let info: Value = http
            .get(self.url("/info"))
            .send()
            .await
            .expect("info")
            .json()
            .await
            .expect("info json");
        info["chain"]["state"].clone()
    }

    /// JSON log lines of the node with this message.
    fn log_lines(&self, message: &str) -> Vec<Value> {
        let text = std::fs::read_to_string(self.dir.path().join("node.log")).unwrap_or_default();
        text.lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter(|v| v["message"] == message)
            .collect()
    }
}

/// Waits until `f` holds, polling every 100 ms, for at most `within`.
async fn until<F, Fut>(what: &str, within: Duration, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + within;
    while !f().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Creates `n` subscriptions of the example consumer in as few blocks as possible: signed here
/// with consecutive nonces and sent in JSON-RPC batches of raw transactions.
async fn create_subscriptions(devnet: &Devnet, p: &DynProvider, n: usize, frequency: u32, period: u32) {
    let who = signer(devnet::DEPLOYER);
    let mut nonce = p.get_transaction_count(who.address()).pending().await.expect("nonce");
    let call = ExampleSubscriptionConsumer::createSubscriptionCall {
        containerId: "hello-world".into(),
        frequency,
        period,
        redundancy: 1,
        lazy: false,
        paymentToken: Address::ZERO,
        paymentAmount: U256::ZERO,
        wallet: Address::ZERO,
        verifier: Address::ZERO,
    }
    .abi_encode();
    let http = reqwest::Client::new();
    let target = nonce + n as u64;
    for chunk in (0..n).collect::<Vec<_>>().chunks(500) {
        let batch: Vec<Value> = chunk
            .iter()
            .map(|i| {
                let tx = TxEip1559 {
                    chain_id: 31337,
                    nonce,
                    gas_limit: 300_000,
                    max_fee_per_gas: 20_000_000_000,
                    max_priority_fee_per_gas: 1_000_000_000,
                    to: TxKind::Call(devnet.examples.subscription_consumer),
                    value: U256::ZERO,
                    access_list: Default::default(),
                    input: Bytes::from(call.clone()),
                };
                nonce += 1;
                let sig = who.sign_hash_sync(&tx.signature_hash()).expect("sign");
                let raw = TxEnvelope::from(tx.into_signed(sig)).encoded_2718();
                json!({"jsonrpc": "2.0", "id": i, "method": "eth_sendRawTransaction",
                       "params": [format!("0x{}", alloy::primitives::hex::encode(raw))]})
            })
            .collect();
        let answer: Value = http
            .post(devnet.endpoint())
            .json(&batch)
            .send()
            .await
            .expect("send batch")
            .json()
            .await
            .expect("batch answer");
        assert!(
            answer
                .as_array()
                .is_some_and(|a| a.iter().all(|r| r.get("error").is_none())),
            "a transaction was refused: {answer}"
        );
    }
    until("the subscriptions to be mined", Duration::from_secs(120), || async {
        p.get_transaction_count(who.address()).await.expect("nonce") >= target
    })
    .await;
}

/// Calls per block the node makes while nothing is due, over `blocks` blocks.
async fn idle_calls(p: &DynProvider, counts: &Mutex<Counts>, blocks: u64) -> (f64, BTreeMap<String, f64>) {
    // Start at a block boundary.
    let start_block = p.get_block_number().await.expect("block");
    until("a new block", Duration::from_secs(10), || async {
        p.get_block_number().await.expect("block") > start_block
    })
    .await;
    let first = p.get_block_number().await.expect("block");
    let before = counts.lock().expect("counts").by_method.clone();
    until("the idle window", Duration::from_secs(blocks * 3 + 10), || async {
        p.get_block_number().await.expect("block") >= first + blocks
    })
    .await;
    let after = counts.lock().expect("counts").by_method.clone();
    let per_block: BTreeMap<String, f64> = after
        .iter()
        .map(|(m, n)| {
            (
                m.clone(),
                (n - before.get(m).copied().unwrap_or(0)) as f64 / blocks as f64,
            )
        })
        .filter(|(_, v)| *v > 0.0)
        .collect();
    (per_block.values().sum(), per_block)
}

fn parse_duration(debug: &str) -> Option<Duration> {
    let (number, unit) = debug.split_at(debug.find(|c: char| c.is_ascii_alphabetic() || c == 'µ')?);
    let v: f64 = number.parse().ok()?;
    Some(Duration::from_secs_f64(match unit {
        "s" => v,
        "ms" => v / 1e3,
        "µs" | "us" => v / 1e6,
        "ns" => v / 1e9,
        _ => return None,
    }))
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    infernet_node::install_tls_provider();
    let env = |name: &str, default: u64| std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default);
    let idle_blocks = env("BENCH_IDLE_BLOCKS", 10);
    // Subscriptions tracked in the large case (10,000 in the targets).
    let many = env("BENCH_SUBSCRIPTIONS", 10_000);
    let devnet = Devnet::start(DevnetOptions::default()).await.expect("devnet");
    let p = devnet.provider(signer(devnet::DEPLOYER));
    // Room for thousands of subscription creations per block, then 1 s blocks.
    let _: Value = p
        .raw_request("evm_setBlockGasLimit".into(), (U256::from(4_000_000_000u64),))
        .await
        .expect("gas limit");
    let _: Value = p
        .raw_request("evm_setIntervalMining".into(), (1,))
        .await
        .expect("interval mining");
    let http = reqwest::Client::new();

    // Node A follows the chain while subscriptions accumulate.
    let (proxy_a, counts_a) = counting_proxy(devnet.endpoint()).await;
    let node_a = NodeProcess::start(&devnet, proxy_a);
    until("node A's snapshot sync", Duration::from_secs(30), || async {
        node_a.state(&http).await["snapshot_synced"] == true
    })
    .await;
    let mut idle = Vec::new();
    idle.push((0, idle_calls(&p, &counts_a, idle_blocks).await));
    let tracked = |n: u64| {
        let (node, http) = (&node_a, &http);
        move || async move { node.state(http).await["tracked"]["onchain"] == n }
    };
    // Recurring subscriptions whose first interval is a day away: tracked, never due here.
    create_subscriptions(&devnet, &p, 50, 10, 86_400).await;
    until("50 tracked", Duration::from_secs(60), tracked(50)).await;
    idle.push((50, idle_calls(&p, &counts_a, idle_blocks).await));
    create_subscriptions(&devnet, &p, many as usize - 50, 10, 86_400).await;
    until("all tracked", Duration::from_secs(180), tracked(many)).await;
    idle.push((many, idle_calls(&p, &counts_a, idle_blocks).await));
    let rss_a = rss_mib(node_a.child.id());
    drop(node_a);

    // Node B starts with 10,000 subscriptions on chain: the snapshot sync, with the REST API
    // probed throughout.
    let (proxy_b, _counts_b) = counting_proxy(devnet.endpoint()).await;
    let node_b = NodeProcess::start(&devnet, proxy_b);
    let mut rest = Vec::new();
    loop {
        let t = Instant::now();
        let ok = http
            .get(node_b.url("/info"))
            .send()
            .await
            .is_ok_and(|r| r.status().is_success());
        rest.push((t.elapsed(), ok));
        if !node_b.log_lines("finished snapshot sync").is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let finished = node_b.log_lines("finished snapshot sync");
    let took = finished[0]["took"].as_str().and_then(parse_duration).expect("took");
    let batches = many.div_ceil(500);
    let sleeps = Duration::from_secs(batches - 1);
    let work = took.saturating_sub(sleeps);
    let mut rest_latency: Vec<Duration> = rest.iter().map(|(d, _)| *d).collect();
    rest_latency.sort();
    let rest_failed = rest.iter().filter(|(_, ok)| !ok).count();
    until("all tracked by node B", Duration::from_secs(30), || async {
        node_b.state(&http).await["tracked"]["onchain"] == many
    })
    .await;
    let rss_b = rss_mib(node_b.child.id());

    // 50 subscriptions created in one block, all due together one period later.
    let created_at = p.get_block_number().await.expect("block");
    create_subscriptions(&devnet, &p, 50, 1, 3).await;
    until("50 deliveries", Duration::from_secs(60), || async {
        node_b.state(&http).await["deliveries"]["delivered"].as_u64() >= Some(50)
    })
    .await;
    let logs = p
        .get_logs(
            &Filter::new()
                .address(devnet.examples.subscription_consumer)
                .event_signature(events::DeliveryReceived::SIGNATURE_HASH)
                .from_block(created_at),
        )
        .await
        .expect("logs");
    let mut delivered_in: BTreeMap<u64, usize> = BTreeMap::new();
    for log in &logs {
        *delivered_in.entry(log.block_number.expect("mined")).or_default() += 1;
    }
    // The block that made them due: the first whose timestamp reaches activeAt.
    let first_delivery_block = *delivered_in.keys().next().expect("a delivery block");
    let due_block = {
        let sub_id = logs[0].topics()[1];
        let id = u32::try_from(U256::from_be_bytes(sub_id.0)).expect("id");
        let coordinator =
            infernet_contracts::bindings::EIP712Coordinator::new(devnet.deployment.coordinator, p.clone());
        let active_at = u64::from(coordinator.getSubscription(id).call().await.expect("sub").activeAt);
        let mut n = created_at;
        loop {
            let block = p.get_block_by_number(n.into()).await.expect("block").expect("exists");
            if block.header.timestamp >= active_at {
                break n;
            }
            n += 1;
        }
    };
    let reactions_of = |lines: &[Value]| {
        let mut v: Vec<Duration> = lines
            .iter()
            .filter_map(|l| l["reaction_ms"].as_f64())
            .map(|ms| Duration::from_secs_f64(ms / 1e3))
            .collect();
        v.sort();
        v
    };
    let batch_lines = node_b.log_lines("delivered");
    let reactions = reactions_of(&batch_lines);
    // One subscription due at a time, five times.
    for i in 1..=5u64 {
        create_subscriptions(&devnet, &p, 1, 1, 3).await;
        until("a single delivery", Duration::from_secs(30), || async {
            node_b.state(&http).await["deliveries"]["delivered"].as_u64() >= Some(50 + i)
        })
        .await;
    }
    let single = reactions_of(&node_b.log_lines("delivered")[batch_lines.len()..]);
    let containers: Vec<f64> = node_b
        .log_lines("delivered")
        .iter()
        .filter_map(|l| l["containers_ms"].as_f64())
        .collect();
    let container_avg = containers.iter().sum::<f64>() / containers.len().max(1) as f64;

    println!("chain side on anvil, 1 s blocks, node with Ritual's default chain settings");
    for (n, (total, methods)) in &idle {
        let detail: Vec<String> = methods.iter().map(|(m, v)| format!("{m} {v:.2}")).collect();
        println!(
            "  idle RPC calls per block, {n:>6} tracked: {total:.2}  (target <= 3)  [{}]",
            detail.join(", ")
        );
    }
    println!(
        "  RSS tracking {many} subscriptions: node A {rss_a:.1} MB (synced while following), node B {rss_b:.1} MB (snapshot)  (target <= 40 MB)"
    );
    println!(
        "  snapshot sync of {many}: {:.3} s in all, {} batches, {} s of configured sleep -> node work {:.3} s  (target <= 0.5 s)",
        took.as_secs_f64(),
        batches,
        sleeps.as_secs(),
        work.as_secs_f64()
    );
    println!(
        "  REST during the sync: {} GET /info answered, {} failed, p50 {:.2} ms, max {:.2} ms",
        rest.len() - rest_failed,
        rest_failed,
        percentile(&rest_latency, 0.5).as_secs_f64() * 1e3,
        rest_latency.last().copied().unwrap_or_default().as_secs_f64() * 1e3
    );
    let in_next = delivered_in.get(&(due_block + 1)).copied().unwrap_or(0);
    println!(
        "  50 due in block {due_block}: delivered by block {:?}; {in_next}/50 in the next block (first delivery block {first_delivery_block})  (target: all in the next block)",
        delivered_in
    );
    println!(
        "  reaction from the due block to the transaction's send, containers excluded, all 50 at once: p50 {:.2} ms, max {:.2} ms over {} deliveries (container calls {container_avg:.2} ms on average)  (target <= 20 ms)",
        percentile(&reactions, 0.5).as_secs_f64() * 1e3,
        reactions.last().copied().unwrap_or_default().as_secs_f64() * 1e3,
        reactions.len()
    );
    println!(
        "  reaction, one subscription due at a time: p50 {:.2} ms, max {:.2} ms over {} deliveries  (target <= 20 ms)",
        percentile(&single, 0.5).as_secs_f64() * 1e3,
        single.last().copied().unwrap_or_default().as_secs_f64() * 1e3,
        single.len()
    );
    let ready: Vec<Value> = node_b.log_lines("ready to send").into_iter().take(50).collect();
    let median = |field: &str| {
        let mut v: Vec<f64> = ready.iter().filter_map(|l| l[field].as_f64()).collect();
        v.sort_by(f64::total_cmp);
        v.get(v.len() / 2).copied().unwrap_or(0.0)
    };
    println!(
        "    median breakdown of the 50: checks and inputs {:.2} ms, containers {:.2} ms, simulation {:.2} ms; the rest is the wallet's queue and send",
        median("checks_ms"),
        median("containers_ms"),
        median("simulation_ms")
    );
}
