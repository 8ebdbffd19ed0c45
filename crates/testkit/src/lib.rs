//! Helpers shared by the integration tests and benchmarks of the workspace: free loopback ports,
//! the workspace's own binaries, processes killed on drop, and waiting for a server to answer.

use std::{
    io::{Read, Write},
    net::{TcpListener, TcpStream},
    path::PathBuf,
    process::Child,
    time::{Duration, Instant},
};

/// Ports handed out by [`free_port`]: below Linux's ephemeral range (32768–60999 by default),
/// which outgoing connections draw their local ports from.
const PORTS: std::ops::Range<u16> = 10_000..32_000;

/// A free TCP port on 127.0.0.1, for a server a test starts. Not one the kernel picks for a
/// `bind(0)`: such a port, once released, can go to any outgoing connection's local end before
/// the server binds it (tests failed with "Address already in use" that way). Each call gives
/// another port (from a random start per process) that nothing listens on right now.
pub fn free_port() -> u16 {
    use std::{
        hash::{BuildHasher, Hasher},
        sync::{
            LazyLock,
            atomic::{AtomicU32, Ordering},
        },
    };
    const SPAN: u32 = (PORTS.end - PORTS.start) as u32;
    static NEXT: LazyLock<AtomicU32> = LazyLock::new(|| {
        let seed = std::collections::hash_map::RandomState::new().build_hasher().finish();
        AtomicU32::new((seed % u64::from(SPAN)) as u32)
    });
    for _ in 0..SPAN {
        let offset = NEXT.fetch_add(1, Ordering::Relaxed) % SPAN;
        let port = PORTS.start + offset as u16;
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free loopback port in {PORTS:?}")
}

/// A binary of the workspace, next to the running test or bench executable
/// (`target/<profile>/deps/x` → `target/<profile>/name`); fails with the command that builds it.
pub fn workspace_binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("current executable");
    let dir = exe.parent().and_then(|deps| deps.parent()).expect("target directory");
    let path = dir.join(name);
    assert!(
        path.is_file(),
        "{} is missing: build the workspace binaries first (`cargo build --workspace --bins`; `make test` and `make bench` do)",
        path.display()
    );
    path
}

/// A child process, killed and reaped when dropped.
#[derive(Debug)]
pub struct ChildGuard(pub Child);

impl ChildGuard {
    /// The process id.
    pub fn id(&self) -> u32 {
        self.0.id()
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The workspace's `hello-world` service on a free loopback port, once it answers: its port and
/// process.
pub fn hello_world() -> (u16, ChildGuard) {
    let port = free_port();
    let child = ChildGuard(
        std::process::Command::new(workspace_binary("hello-world"))
            .env("HOST", "127.0.0.1")
            .env("PORT", port.to_string())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("hello-world"),
    );
    wait_healthy(port, Duration::from_secs(20));
    (port, child)
}

/// Waits until something accepts TCP connections on `127.0.0.1:port`.
pub fn wait_port(port: u16, within: Duration) {
    let deadline = Instant::now() + within;
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            Instant::now() < deadline,
            "nothing listens on port {port} after {within:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Waits until the server on `port` answers `GET /health` with 200 (a node binds its port before
/// its containers are up, so an open port alone proves little).
pub fn wait_healthy(port: u16, within: Duration) {
    let deadline = Instant::now() + within;
    loop {
        let answered = TcpStream::connect(("127.0.0.1", port)).ok().and_then(|mut s| {
            s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
            s.write_all(b"GET /health HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
                .ok()?;
            let mut head = [0u8; 12];
            s.read_exact(&mut head).ok()?;
            Some(head.starts_with(b"HTTP/1.1 200"))
        });
        if answered == Some(true) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "nothing healthy on port {port} after {within:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The `p` quantile (0.0–1.0) of `sorted` latencies (nearest rank); panics on an empty slice.
pub fn percentile(sorted: &[Duration], p: f64) -> Duration {
    assert!(!sorted.is_empty(), "no samples");
    sorted[((sorted.len() as f64 * p) as usize).min(sorted.len() - 1)]
}

/// Resident set size of process `pid` in KiB (0 when it cannot be read), from `/proc`.
pub fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

/// CPU time (user + system) a process has used so far, from `/proc/<pid>/stat`; zero if it is gone.
pub fn cpu_time(pid: u32) -> Duration {
    let ticks = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            // Fields after the parenthesised command name; utime and stime are fields 14 and 15.
            let rest = s.rsplit_once(')')?.1;
            let fields: Vec<&str> = rest.split_whitespace().collect();
            let user: u64 = fields.get(11)?.parse().ok()?;
            let system: u64 = fields.get(12)?.parse().ok()?;
            Some(user + system)
        })
        .unwrap_or(0);
    // Linux reports these in USER_HZ, which is 100 on every architecture it supports.
    Duration::from_millis(ticks * 10)
}

/// The number in environment variable `name`, or `default` when it is unset or not a number
/// (benchmarks' settings such as `BENCH_SECONDS`).
pub fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|s| s.parse().ok()).unwrap_or(default)
}

/// Writes `secret` (a key) to `path` readable by its owner only, as the binaries require of key
/// files.
pub fn write_secret(path: &std::path::Path, secret: &str) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, secret).expect("write the secret file");
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).expect("chmod 600");
}
