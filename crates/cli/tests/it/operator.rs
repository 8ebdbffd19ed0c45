//! `infernet operator new|show`: the operator's key file.

use std::{os::unix::fs::PermissionsExt, process::Command};

const BIN: &str = env!("CARGO_BIN_EXE_infernet");

fn operator(args: &[&str], key_file: &std::path::Path) -> std::process::Output {
    Command::new(BIN)
        .arg("operator")
        .args(args)
        .arg("--key-file")
        .arg(key_file)
        .env_remove("INFERNET_OPERATOR_KEY")
        .output()
        .expect("run infernet")
}

#[test]
fn operator_new_writes_a_private_key_and_show_prints_its_npub() {
    let dir = tempfile::tempdir().unwrap();
    let key_file = dir.path().join("keys/operator.nsec");
    let made = operator(&["new"], &key_file);
    assert!(made.status.success(), "{}", String::from_utf8_lossy(&made.stderr));
    let npub = String::from_utf8(made.stdout).unwrap().trim().to_string();
    assert!(npub.starts_with("npub1") && npub.len() == 63, "{npub}");
    let written = std::fs::read_to_string(&key_file).unwrap();
    assert!(written.starts_with("nsec1"), "the file holds the nsec");
    assert!(!npub.contains(written.trim()));
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&key_file), 0o600);
    assert_eq!(mode(key_file.parent().unwrap()), 0o700);

    let shown = operator(&["show", "--json"], &key_file);
    assert!(shown.status.success());
    let shown: serde_json::Value = serde_json::from_slice(&shown.stdout).unwrap();
    assert_eq!(shown["npub"], npub.as_str());
    assert_eq!(shown["hex"].as_str().map(str::len), Some(64));
    assert!(
        !shown.to_string().contains(written.trim()),
        "show never prints the secret"
    );

    // A second `new` never replaces the key.
    let again = operator(&["new"], &key_file);
    assert_eq!(again.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&again.stderr).contains("never overwritten"));
    assert_eq!(std::fs::read_to_string(&key_file).unwrap(), written);

    // A key file others can read is refused, with the fix.
    std::fs::set_permissions(&key_file, std::fs::Permissions::from_mode(0o644)).unwrap();
    let open = operator(&["show"], &key_file);
    assert_eq!(open.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&open.stderr).contains("chmod 600"));
    let missing = operator(&["show"], &dir.path().join("none"));
    assert_eq!(missing.status.code(), Some(1));
}

/// `infernet admin …` against a real node that trusts the operator's key.
#[test]
fn admin_commands_are_signed_with_the_operators_key_and_obeyed() {
    use infernet_testkit::{ChildGuard, free_port, workspace_binary};
    let dir = tempfile::tempdir().unwrap();
    let key_file = dir.path().join("operator.nsec");
    let made = operator(&["new"], &key_file);
    let npub = String::from_utf8(made.stdout).unwrap().trim().to_string();
    let port = free_port();
    let config = serde_json::json!({
        "manage_containers": false,
        "containers": [{"id": "echo", "port": free_port()}],
        "log": {"path": dir.path().join("node.log")},
        "store": {"path": dir.path().join("jobs.db")},
        "server": {"port": port, "bind": "127.0.0.1"},
        "operator": {"pubkeys": [npub]},
    });
    let config_path = dir.path().join("config.json");
    std::fs::write(&config_path, config.to_string()).unwrap();
    let _node = ChildGuard(
        Command::new(workspace_binary("infernet-node"))
            .arg("--config")
            .arg(&config_path)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    let url = format!("http://127.0.0.1:{port}");
    let admin = |key: &std::path::Path, args: &[&str]| {
        Command::new(BIN)
            .args(["--node", &url, "admin", "--key-file"])
            .arg(key)
            .args(args)
            .output()
            .unwrap()
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let paused = loop {
        let out = admin(&key_file, &["pause"]);
        if out.status.success() || std::time::Instant::now() > deadline {
            break out;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    };
    assert!(paused.status.success(), "{}", String::from_utf8_lossy(&paused.stderr));
    let answer: serde_json::Value = serde_json::from_slice(&paused.stdout).unwrap();
    assert_eq!(answer["mode"], "paused");
    let job = Command::new(BIN)
        .args(["--node", &url, "job", "-c", "echo", "--data", "{}"])
        .output()
        .unwrap();
    assert_eq!(job.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&job.stderr).contains("paused"), "{job:?}");

    let pricing = r#"{"pricing": {"echo": {"per_job": 0.01, "unit": "USD"}}}"#;
    let set = admin(&key_file, &["settings", "--set", pricing]);
    assert!(set.status.success(), "{}", String::from_utf8_lossy(&set.stderr));
    let shown: serde_json::Value = serde_json::from_slice(&admin(&key_file, &["settings"]).stdout).unwrap();
    assert_eq!(shown["pricing"]["echo"]["per_job"], 0.01);

    let stranger = dir.path().join("stranger.nsec");
    assert!(operator(&["new"], &stranger).status.success());
    let refused = admin(&stranger, &["resume"]);
    assert_eq!(refused.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("is not allowed"),
        "{refused:?}"
    );
    let status: serde_json::Value = serde_json::from_slice(&admin(&key_file, &["status"]).stdout).unwrap();
    assert_eq!(status["mode"], "paused", "the stranger changed nothing");

    // The node's log, read remotely: the pause is there; level and time filter it.
    let logs = admin(&key_file, &["logs"]);
    assert!(logs.status.success(), "{}", String::from_utf8_lossy(&logs.stderr));
    let logs: serde_json::Value = serde_json::from_slice(&logs.stdout).unwrap();
    let messages: Vec<&str> = logs["lines"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|l| l["message"].as_str())
        .collect();
    assert!(messages.contains(&"operator changed the node's mode"), "{messages:?}");
    let later = admin(
        &key_file,
        &["logs", "--level", "error", "--since", "2999-01-01T00:00:00Z"],
    );
    let later: serde_json::Value = serde_json::from_slice(&later.stdout).unwrap();
    assert_eq!(later["lines"], serde_json::json!([]));
    let bad = admin(&key_file, &["logs", "--level", "loud"]);
    assert_eq!(bad.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("level"), "{bad:?}");

    // Containers: deployed from an entry file, listed, replaced, removed.
    let ids = |key: &std::path::Path| -> Vec<String> {
        let out = admin(key, &["containers", "list"]);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let listed: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        listed["containers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["entry"]["id"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(ids(&key_file), ["echo"]);
    let entry = dir.path().join("entry.json");
    std::fs::write(
        &entry,
        serde_json::json!({"id": "echo2", "port": free_port()}).to_string(),
    )
    .unwrap();
    let added = admin(&key_file, &["containers", "add", "--file", entry.to_str().unwrap()]);
    assert!(added.status.success(), "{}", String::from_utf8_lossy(&added.stderr));
    assert_eq!(ids(&key_file), ["echo", "echo2"]);
    std::fs::write(
        &entry,
        serde_json::json!({"id": "echo2", "port": free_port(), "description": "moved"}).to_string(),
    )
    .unwrap();
    let replaced = admin(&key_file, &["containers", "replace", "--file", entry.to_str().unwrap()]);
    assert!(
        replaced.status.success(),
        "{}",
        String::from_utf8_lossy(&replaced.stderr)
    );
    let replaced: serde_json::Value = serde_json::from_slice(&replaced.stdout).unwrap();
    assert_eq!(replaced["entry"]["description"], "moved");
    let removed = admin(&key_file, &["containers", "remove", "echo"]);
    assert!(removed.status.success(), "{}", String::from_utf8_lossy(&removed.stderr));
    assert_eq!(ids(&key_file), ["echo2"]);
    let missing = admin(&key_file, &["containers", "remove", "echo"]);
    assert_eq!(missing.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&missing.stderr).contains("no container"),
        "{missing:?}"
    );
}
