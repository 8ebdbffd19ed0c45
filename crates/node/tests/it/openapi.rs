//! The API as documented: an OpenAPI property-based checker (schemathesis, every check) runs
//! against a node and must find nothing.

use std::process::Command;

use serde_json::json;

use crate::support::{TestNode, hello_world_config};

/// Test cases per operation and phase: enough to cover every documented answer, few enough that
/// the run takes seconds.
const MAX_EXAMPLES: &str = "25";

/// `python3 -m schemathesis.cli`, installed with pip when missing; `None` (with the reason
/// printed) when there is no Python or pip to run it with.
fn schemathesis() -> Option<Command> {
    let python = |args: &[&str]| {
        Command::new("python3")
            .args(args)
            .output()
            .ok()
            .filter(|o| o.status.success())
    };
    if python(&["--version"]).is_none() || python(&["-m", "pip", "--version"]).is_none() {
        println!("skipped: python3 with pip is needed to run schemathesis (scripts/install-test-deps.sh installs it)");
        return None;
    }
    if python(&["-m", "schemathesis.cli", "--version"]).is_none() {
        let installed = python(&["-m", "pip", "install", "--quiet", "schemathesis"]);
        assert!(installed.is_some(), "pip install schemathesis failed");
    }
    let mut command = Command::new("python3");
    command.args(["-m", "schemathesis.cli"]);
    Some(command)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_node_answers_as_its_openapi_document_says() {
    let Some(mut schemathesis) = schemathesis() else { return };
    let mut config = hello_world_config();
    config["server"] = json!({"rate_limit": {"num_requests": 1_000_000, "period": 1}});
    let node = TestNode::start(config).await;
    let reports = tempfile::tempdir().unwrap();
    let settings = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/schemathesis.toml");
    schemathesis
        .args(["--config-file", settings, "run", &node.at("/openapi.json")])
        .args(["--checks", "all", "--max-examples", MAX_EXAMPLES])
        .args(["--seed", "1", "--request-timeout", "10", "--workers", "1"])
        .arg("--report-dir")
        .arg(reports.path())
        // It keeps state in `.schemathesis/` of its working directory.
        .current_dir(reports.path())
        .env("NO_COLOR", "1");
    let out = tokio::task::spawn_blocking(move || schemathesis.output())
        .await
        .unwrap()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    println!("{stdout}");
    assert!(
        out.status.success(),
        "schemathesis found the node answering other than its OpenAPI document says:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
