//! The Container Manager on a real Docker engine, with the locally built `infernet/hello-world:dev`
//! image (`scripts/build-images.sh`; `make test` builds it). Every container a test starts is
//! removed by that test, also when it fails.

use std::{
    process::Command,
    time::{Duration, Instant},
};

use infernet_node::{Node, config};
use serde_json::{Value, json};

use crate::support::{TestNode, client, free_port, get_json, submit, wait_job};

const IMAGE: &str = "infernet/hello-world:dev";

/// Runs `docker args…` and returns its trimmed stdout (empty on failure).
fn docker(args: &[&str]) -> String {
    let out = Command::new("docker")
        .args(args)
        .output()
        .expect("the docker CLI must be installed (`make test` installs docker.io)");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// A unique container id; the container is force-removed when this is dropped.
struct Guard(String);

impl Guard {
    fn new(prefix: &str) -> Self {
        Self(format!("{prefix}-{}", &uuid::Uuid::new_v4().simple().to_string()[..12]))
    }

    fn inspect(&self, format: &str) -> String {
        docker(&["inspect", "-f", format, &self.0])
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = Command::new("docker").args(["rm", "-f", &self.0]).output();
    }
}

fn hello(id: &str, port: u16) -> Value {
    json!({"id": id, "image": IMAGE, "port": port, "description": "hello in Docker"})
}

async fn stop(mut node: TestNode) {
    let running = node.node.take().unwrap();
    running.shutdown();
    tokio::time::timeout(Duration::from_secs(60), running.wait())
        .await
        .expect("node did not stop within 60 s")
        .expect("node stopped with an error");
}

/// Starts a node that is expected to fail at boot; returns the error message.
async fn boot_error(config: Value) -> String {
    let loaded = config::parse(&config.to_string()).unwrap();
    let valid = config::validate(loaded.config, &loaded.unknown_keys).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    match Node::new(valid).start_on(listener).await {
        Ok(node) => {
            node.shutdown();
            panic!("node started, expected a failure");
        }
        Err(e) => e.to_string(),
    }
}

async fn hello_job(node: &TestNode, id: &str) -> Value {
    let job = submit(node, json!({"containers": [id], "data": {"name": "ada"}})).await;
    wait_job(node, &job, false).await
}

#[tokio::test]
async fn container_serves_jobs_on_loopback_and_is_stopped_at_shutdown() {
    let c = Guard::new("it-serve");
    let port = free_port();
    let node = TestNode::start(json!({"containers": [hello(&c.0, port)]})).await;

    let job = hello_job(&node, &c.0).await;
    assert_eq!(job["status"], "success", "{job}");
    assert_eq!(job["result"]["output"]["message"], "hello, world!");

    // Published on 127.0.0.1 only, labelled as the node's.
    let binding = c.inspect("{{json .HostConfig.PortBindings}}");
    assert_eq!(
        serde_json::from_str::<Value>(&binding).unwrap(),
        json!({"3000/tcp": [{"HostIp": "127.0.0.1", "HostPort": port.to_string()}]})
    );
    assert_eq!(c.inspect("{{index .Config.Labels \"infernet.node\"}}"), "1");
    let info: Value = get_json(&client(), node.at("/info")).await;
    assert_eq!(info["container_states"][&c.0]["state"], "running", "{info}");

    stop(node).await;
    assert_eq!(
        c.inspect("{{.State.Running}}"),
        "false",
        "shutdown must stop the container"
    );
}

#[tokio::test]
async fn container_is_reused_when_unchanged_and_recreated_when_config_changes() {
    let c = Guard::new("it-drift");
    let port = free_port();
    let mut spec = hello(&c.0, port);
    spec["env"] = json!({"GREETING_STYLE": "plain"});

    let node = TestNode::start(json!({"containers": [spec.clone()]})).await;
    let first = c.inspect("{{.Id}}");
    assert!(!first.is_empty());
    stop(node).await;

    let node = TestNode::start(json!({"containers": [spec.clone()]})).await;
    assert_eq!(c.inspect("{{.Id}}"), first, "same config: the container is reused");
    stop(node).await;

    spec["env"] = json!({"GREETING_STYLE": "loud"});
    let node = TestNode::start(json!({"containers": [spec]})).await;
    let second = c.inspect("{{.Id}}");
    assert_ne!(second, first, "changed env: the container is recreated");
    assert!(c.inspect("{{json .Config.Env}}").contains("GREETING_STYLE=loud"));
    let job = hello_job(&node, &c.0).await;
    assert_eq!(job["status"], "success", "{job}");
    stop(node).await;
}

#[tokio::test]
async fn killed_container_fails_its_job_and_is_restarted() {
    let c = Guard::new("it-kill");
    let node = TestNode::start(json!({"containers": [hello(&c.0, free_port())]})).await;

    let job = submit(&node, json!({"containers": [&c.0], "data": {"delay_ms": 20000}})).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    docker(&["kill", &c.0]);
    let failed = wait_job(&node, &job, false).await;
    assert_eq!(failed["status"], "failed", "{failed}");
    let error = failed["result"]["error"].as_str().unwrap_or_default();
    assert!(
        error.contains(&format!("container {} call", c.0)) && error.contains("connection closed"),
        "the error names the container and what happened: {failed}"
    );

    // The node notices, restarts it, and serves again.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let info: Value = get_json(&client(), node.at("/info")).await;
        if info["container_states"][&c.0]["state"] == "running" && c.inspect("{{.State.Running}}") == "true" {
            break;
        }
        assert!(Instant::now() < deadline, "container not restarted: {info}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let job = hello_job(&node, &c.0).await;
    assert_eq!(job["status"], "success", "{job}");
    // The restart is counted, for the operator's "container restarting" alert.
    let info: Value = get_json(&client(), node.at("/info")).await;
    assert_eq!(info["container_restarts"][&c.0], 1, "{info}");
    let metrics = client()
        .get(node.at("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains(&format!("infernet_container_restarts_total{{container=\"{}\"}} 1", c.0)),
        "{metrics}"
    );
    stop(node).await;
}

#[tokio::test]
async fn missing_image_is_named_in_the_error() {
    let c = Guard::new("it-missing");
    let image = format!("infernet/does-not-exist-{}:none", uuid::Uuid::new_v4().simple());
    let error = boot_error(json!({
        "startup_wait": 5,
        "containers": [{"id": &c.0, "image": &image, "port": free_port()}]
    }))
    .await;
    assert!(error.contains(&image), "{error}");
    assert!(error.contains("not found"), "{error}");
    assert_eq!(c.inspect("{{.Id}}"), "", "no container is left behind");
}

#[tokio::test]
async fn a_registry_that_stops_answering_fails_the_pull_instead_of_hanging() {
    // A "registry" that takes connections and never says a word (loopback registries are
    // plain-HTTP to the engine, so its pull waits on this one).
    let registry = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = registry.local_addr().unwrap().port();
    let held = std::thread::spawn(move || {
        let mut held = Vec::new();
        for conn in registry.incoming().take(8) {
            held.push(conn);
        }
        held
    });
    let c = Guard::new("it-stall");
    let image = format!("127.0.0.1:{port}/stalled:1");
    let started = Instant::now();
    let error = tokio::time::timeout(
        Duration::from_secs(60),
        boot_error(json!({
            "pull_idle_timeout": 2,
            "containers": [{"id": &c.0, "image": &image, "port": free_port()}]
        })),
    )
    .await
    .expect("the boot gave up on the stalled pull");
    assert!(error.contains("pull_idle_timeout"), "{error}");
    assert!(error.contains(&image) || error.contains(&c.0), "{error}");
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "took {:?}",
        started.elapsed()
    );
    drop(held);
}

#[tokio::test]
async fn gpu_without_a_gpu_runtime_is_a_clear_error() {
    let info = docker(&["info", "-f", "{{json .Runtimes}}"]);
    if info.contains("nvidia") {
        eprintln!("this engine has an NVIDIA runtime; skipping");
        return;
    }
    let c = Guard::new("it-gpu");
    let mut spec = hello(&c.0, free_port());
    spec["gpu"] = json!(true);
    let error = boot_error(json!({"containers": [spec]})).await;
    assert!(error.contains(&c.0), "{error}");
    assert!(
        error.contains("no GPU runtime") && error.contains("gpu: false"),
        "{error}"
    );
    assert_eq!(c.inspect("{{.Id}}"), "", "no container is left behind");
}

#[tokio::test]
async fn service_that_never_answers_is_reported_with_its_logs() {
    let c = Guard::new("it-silent");
    let mut spec = hello(&c.0, free_port());
    // The service listens on another port than 3000, so the published port never answers.
    spec["env"] = json!({"PORT": "3999"});
    let started = Instant::now();
    let error = boot_error(json!({"startup_wait": 3, "containers": [spec]})).await;
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "startup_wait bounds the wait"
    );
    assert!(error.contains(&c.0) && error.contains("not ready"), "{error}");
    assert!(
        error.contains("listening on 0.0.0.0:3999"),
        "last log lines are shown: {error}"
    );
    assert_eq!(c.inspect("{{.State.Running}}"), "false", "it is stopped");
}

#[tokio::test]
async fn unhealthy_container_is_restarted() {
    let c = Guard::new("it-unhealthy");
    let mut spec = hello(&c.0, free_port());
    spec["image"] = json!("infernet/hello-world:unhealthy");
    let node = TestNode::start(json!({"containers": [spec]})).await;
    let first_start = c.inspect("{{.State.StartedAt}}");

    // Its health check fails after ~1 s; the node stops it and starts it again.
    let deadline = Instant::now() + Duration::from_secs(40);
    while c.inspect("{{.State.StartedAt}}") == first_start {
        assert!(Instant::now() < deadline, "unhealthy container was not restarted");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    stop(node).await;
    assert_eq!(c.inspect("{{.State.Running}}"), "false");
}

#[tokio::test]
async fn an_operator_deploys_a_docker_container_and_removing_it_deletes_it() {
    use crate::admin::signed;
    let operator = infernet_identity::Identity::generate();
    let node = TestNode::start(json!({"containers": [], "operator": {"pubkeys": [operator.npub()]}})).await;
    let c = Guard::new("it-admin");
    let (status, answer) = signed(
        &node,
        &operator,
        "POST",
        "/admin/containers",
        Some(&hello(&c.0, free_port())),
    )
    .await;
    assert_eq!(status, 201, "{answer}");
    assert_eq!(c.inspect("{{.State.Running}}"), "true");
    let job = hello_job(&node, &c.0).await;
    assert_eq!(job["result"]["output"]["message"], "hello, world!", "{job}");

    let missing = Guard::new("it-admin-missing");
    let entry = json!({"id": missing.0, "image": "infernet/no-such-image:dev", "port": free_port()});
    let (status, answer) = signed(&node, &operator, "POST", "/admin/containers", Some(&entry)).await;
    assert_eq!(status, 400, "{answer}");
    assert_eq!(answer["problems"][0]["path"], "image", "{answer}");

    let (status, answer) = signed(&node, &operator, "DELETE", &format!("/admin/containers/{}", c.0), None).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(c.inspect("{{.State.Running}}"), "", "the container is deleted");
    stop(node).await;
}

#[tokio::test]
async fn the_providers_limits_are_the_containers_host_config() {
    use crate::admin::signed;
    let operator = infernet_identity::Identity::generate();
    let node = TestNode::start(json!({"containers": [], "operator": {"pubkeys": [operator.npub()]}})).await;
    let c = Guard::new("it-limits");
    let entry = hello(&c.0, free_port());
    let (status, answer) = signed(&node, &operator, "POST", "/admin/containers", Some(&entry)).await;
    assert_eq!(status, 201, "{answer}");
    assert_eq!(c.inspect("{{.HostConfig.NanoCpus}} {{.HostConfig.Memory}}"), "0 0");

    // No GPU here: asking for one is a 400 naming the field.
    let gpus = json!({"limits": {c.0.clone(): {"gpus": 1}}});
    let (status, answer) = signed(&node, &operator, "PUT", "/admin/settings", Some(&gpus)).await;
    assert_eq!(status, 400, "{answer}");
    assert_eq!(answer["problems"][0]["path"], format!("limits.{}.gpus", c.0));

    // CPUs and memory apply when the container is next created: replaced here.
    let limits = json!({"limits": {c.0.clone(): {"cpus": 0.5, "memory_mb": 64}}});
    let (status, answer) = signed(&node, &operator, "PUT", "/admin/settings", Some(&limits)).await;
    assert_eq!(status, 200, "{answer}");
    let path = format!("/admin/containers/{}", c.0);
    let (status, answer) = signed(&node, &operator, "PUT", &path, Some(&entry)).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(
        c.inspect("{{.HostConfig.NanoCpus}} {{.HostConfig.Memory}}"),
        format!("{} {}", 500_000_000, 64 << 20)
    );
    assert_eq!(hello_job(&node, &c.0).await["status"], "success");
    stop(node).await;
}

#[tokio::test]
async fn gpu_limits_are_nvidia_device_requests_for_ids_or_a_count() {
    use infernet_node::containers::docker::DockerRuntime;
    use infernet_types::settings::Gpus;
    let docker = DockerRuntime::connect(None).await.unwrap();
    for (gpus, expected) in [
        (Gpus::Devices(vec![0, 2]), r#""Count":0,"DeviceIDs":["0","2"]"#),
        (Gpus::Count(2), r#""Count":2,"DeviceIDs":null"#),
    ] {
        let c = Guard::new("it-gpus");
        let config = json!({"containers": [hello(&c.0, free_port())]});
        let loaded = config::parse(&config.to_string()).unwrap();
        let mut spec = config::validate(loaded.config, &[]).unwrap().containers.remove(0);
        spec.limits.gpus = Some(gpus);
        docker.create(&spec).await.unwrap();
        let requests = c.inspect("{{json .HostConfig.DeviceRequests}}");
        assert!(requests.contains(r#""Driver":"nvidia""#), "{requests}");
        assert!(requests.contains(expected), "{requests}");
        assert!(requests.contains(r#""Capabilities":[["gpu"]]"#), "{requests}");
    }
}

#[tokio::test]
async fn the_status_reports_the_engine_the_gpus_the_clock_and_the_operators() {
    use crate::admin::signed;
    let operator = infernet_identity::Identity::generate();
    let node = TestNode::start(json!({"containers": [], "operator": {"pubkeys": [operator.npub()]}})).await;
    let before = jiff::Timestamp::now().as_millisecond();
    let (status, answer) = signed(&node, &operator, "GET", "/admin/status", None).await;
    let after = jiff::Timestamp::now().as_millisecond();
    assert_eq!(status, 200, "{answer}");
    let diagnostics = &answer["diagnostics"];
    assert_eq!(diagnostics["docker"]["reachable"], true, "{diagnostics}");
    assert_eq!(
        diagnostics["docker"]["version"].as_str(),
        Some(docker(&["version", "-f", "{{.Server.Version}}"]).as_str())
    );
    // This host has no GPU: said, not failed.
    assert_eq!(diagnostics["gpus"]["host"], json!([]), "{diagnostics}");
    assert_eq!(diagnostics["gpus"]["containers"]["visible"], false);
    assert_eq!(diagnostics["gpus"]["containers"]["reason"], "no GPU on the host");
    let clock = diagnostics["clock"]["unix_ms"].as_i64().unwrap();
    assert!(
        (before..=after).contains(&clock),
        "{clock} not within {before}..={after}"
    );
    assert_eq!(diagnostics["operators"], json!([operator.npub()]));
}
