//! Launching a local `anvil` chain on 127.0.0.1 for the devnet and for tests.
//!
//! The binary is looked up in this order: env `ANVIL`; the npm package installed by `cd contracts && npm ci`
//! (`contracts/node_modules/@foundry-rs/anvil-linux-amd64/bin/anvil`), searched next to the source tree this
//! crate was built from and above the running executable; `anvil` in `PATH`.

use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use alloy::primitives::{Address, address, b256};
use alloy::signers::local::PrivateKeySigner;

/// Where `npm ci` in `contracts/` puts the anvil binary, relative to the workspace root.
pub const NPM_ANVIL: &str = "contracts/node_modules/@foundry-rs/anvil-linux-amd64/bin/anvil";

/// How long to wait for anvil to print its `Listening on` line.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(30);

/// Private keys of anvil's first accounts (default mnemonic `test test … junk`).
const DEV_KEYS: [alloy::primitives::B256; 4] = [
    b256!("ac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80"),
    b256!("59c6995e998f97a5a0044966f0945389dc9e86dae88c7a8412f4603b6b78690d"),
    b256!("5de4111afa1a4b94908f83103eb1f1706367c2e68ca870fc3fb9a804cdab365a"),
    b256!("7c852118294e51e653712a81e05800f419141751be58f605c371e15141b007a6"),
];

/// Addresses of [`DEV_KEYS`], in the same order.
const DEV_ADDRESSES: [Address; 4] = [
    address!("f39Fd6e51aad88F6F4ce6aB8827279cffFb92266"),
    address!("70997970C51812dc3A010C7d01b50e0d17dc79C8"),
    address!("3C44CdDdB6a900fa2b585dd299e03d12FA4293BC"),
    address!("90F79bf6EB2c4f870365E785982E1f101E93b906"),
];

/// Number of well-known anvil accounts this crate exposes.
pub const DEV_ACCOUNT_COUNT: usize = DEV_KEYS.len();

/// Errors of starting anvil.
#[derive(Debug, thiserror::Error)]
pub enum AnvilError {
    /// No anvil binary was found.
    #[error(
        "anvil not found: set ANVIL=/path/to/anvil, run `cd contracts && npm ci` (installs {NPM_ANVIL}), \
         or put anvil in PATH"
    )]
    NotFound,
    /// The binary could not be started.
    #[error("could not start {path}: {source}")]
    Spawn {
        /// The binary.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// anvil exited or stayed silent before listening.
    #[error("anvil did not start listening: {0}")]
    Startup(String),
}

/// Options for [`Anvil::spawn`].
#[derive(Debug, Clone, Default)]
pub struct Anvil {
    binary: Option<PathBuf>,
    port: u16,
    block_time: Option<u64>,
    args: Vec<String>,
}

impl Anvil {
    /// anvil on a free port of 127.0.0.1, mining on every transaction.
    pub fn new() -> Self {
        Self::default()
    }

    /// Use this binary instead of looking one up.
    pub fn binary(mut self, path: impl Into<PathBuf>) -> Self {
        self.binary = Some(path.into());
        self
    }

    /// Listen on this port (0 = a free one chosen by the OS).
    pub fn port(mut self, port: u16) -> Self {
        self.port = port;
        self
    }

    /// Mine a block every `secs` seconds in addition to mining on transactions.
    pub fn block_time(mut self, secs: Option<u64>) -> Self {
        self.block_time = secs;
        self
    }

    /// Extra command-line argument.
    pub fn arg(mut self, arg: impl Into<String>) -> Self {
        self.args.push(arg.into());
        self
    }

    /// Starts anvil and waits until it accepts JSON-RPC.
    pub fn spawn(self) -> Result<AnvilInstance, AnvilError> {
        let path = match self.binary {
            Some(p) => p,
            None => find_anvil().ok_or(AnvilError::NotFound)?,
        };
        let mut cmd = Command::new(&path);
        cmd.args(["--host", "127.0.0.1", "--port", &self.port.to_string()]);
        if let Some(secs) = self.block_time {
            cmd.args(["--block-time", &secs.to_string()]);
        }
        // Own process group: a terminal's Ctrl-C reaches only our process, which then stops anvil itself.
        cmd.process_group(0);
        cmd.args(&self.args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        let mut child = cmd.spawn().map_err(|source| AnvilError::Spawn {
            path: path.clone(),
            source,
        })?;
        let Some(stdout) = child.stdout.take() else {
            kill(&mut child);
            return Err(AnvilError::Startup("no stdout".into()));
        };

        // anvil logs every transaction to stdout, so a thread keeps draining it for the process lifetime.
        let (tx, rx) = mpsc::channel();
        let drain = std::thread::Builder::new().name("anvil-stdout".into()).spawn(move || {
            let mut sent = false;
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if !sent && let Some(addr) = line.trim().strip_prefix("Listening on ") {
                    sent = true;
                    let _ = tx.send(addr.trim().to_owned());
                }
                tracing::trace!(target: "anvil", "{line}");
            }
        });
        if let Err(e) = drain {
            kill(&mut child);
            return Err(AnvilError::Startup(format!("could not start the output thread: {e}")));
        }

        let port = match rx.recv_timeout(STARTUP_TIMEOUT) {
            Ok(addr) => addr.rsplit(':').next().and_then(|p| p.parse::<u16>().ok()),
            Err(_) => None,
        };
        let Some(port) = port else {
            let status = child.try_wait().ok().flatten();
            kill(&mut child);
            return Err(AnvilError::Startup(match status {
                Some(status) => format!("{} exited with {status} (port {} in use?)", path.display(), self.port),
                None => format!("no `Listening on` line within {STARTUP_TIMEOUT:?}"),
            }));
        };
        Ok(AnvilInstance { child, port })
    }
}

/// A running anvil; killed (and reaped) when dropped.
#[derive(Debug)]
pub struct AnvilInstance {
    child: Child,
    port: u16,
}

impl AnvilInstance {
    /// The port anvil listens on (127.0.0.1).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The HTTP JSON-RPC endpoint.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The endpoint as a URL.
    pub fn endpoint_url(&self) -> alloy::transports::http::reqwest::Url {
        // The string is built above from a fixed host and a number, so it always parses.
        #[allow(clippy::expect_used)]
        self.endpoint().parse().expect("http://127.0.0.1:<port> is a valid URL")
    }

    /// Process id of anvil.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Chain id anvil uses by default.
    pub fn chain_id(&self) -> u64 {
        31337
    }

    /// `Some(status)` once anvil has exited on its own.
    pub fn try_wait(&mut self) -> std::io::Result<Option<std::process::ExitStatus>> {
        self.child.try_wait()
    }

    /// Stops anvil now (also done on drop).
    pub fn stop(mut self) {
        kill(&mut self.child);
    }
}

impl Drop for AnvilInstance {
    fn drop(&mut self) {
        kill(&mut self.child);
    }
}

fn kill(child: &mut Child) {
    if matches!(child.try_wait(), Ok(None)) {
        let _ = child.kill();
    }
    let _ = child.wait();
}

/// Signer of anvil's default account `index` (0 ≤ index < [`DEV_ACCOUNT_COUNT`]), `None` beyond.
pub fn dev_signer(index: usize) -> Option<PrivateKeySigner> {
    let key = DEV_KEYS.get(index)?;
    PrivateKeySigner::from_bytes(key).ok()
}

/// Address of anvil's default account `index`, `None` beyond [`DEV_ACCOUNT_COUNT`].
pub fn dev_address(index: usize) -> Option<Address> {
    DEV_ADDRESSES.get(index).copied()
}

/// Finds an anvil binary (see the module docs for the order).
pub fn find_anvil() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("ANVIL").filter(|p| !p.is_empty()) {
        return Some(PathBuf::from(p));
    }
    let built_from = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").join(NPM_ANVIL);
    if built_from.is_file() {
        return Some(built_from);
    }
    if let Ok(exe) = std::env::current_exe() {
        for dir in exe.ancestors().skip(1) {
            let candidate = dir.join(NPM_ANVIL);
            if candidate.is_file() {
                return Some(candidate);
            }
        }
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join("anvil"))
        .find(|p| p.is_file())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dev_keys_match_their_addresses() {
        for i in 0..DEV_ACCOUNT_COUNT {
            let signer = dev_signer(i).expect("valid key");
            assert_eq!(Some(signer.address()), dev_address(i), "account {i}");
        }
        assert!(dev_signer(DEV_ACCOUNT_COUNT).is_none());
    }
}
