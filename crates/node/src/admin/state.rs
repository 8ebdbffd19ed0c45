//! What the operator set through the admin API, kept across restarts in `infernet-admin.json`
//! beside the node's key: whether the node takes new jobs (serving, paused, draining), the
//! provider's settings, and the containers once the operator changed them. `config.json` is the
//! starting point; what the API set wins until the file is removed. Writes go to a temporary
//! file (mode 0600: it holds the containers' secrets), are synced, then renamed over the old one,
//! so a crash leaves the old state or the new one, never half of either.
//!
//! [`gate`] is the pure decision every new off-chain job passes: paused, draining or outside the
//! provider's hours is a refusal with the reason and, outside the hours, when the node opens.

use std::{
    io::Write,
    path::{Path, PathBuf},
    sync::RwLock,
};

use infernet_types::settings::{Open, Settings};
use jiff::Timestamp;
use serde::{Deserialize, Serialize};

/// Largest state file read.
const MAX_FILE: u64 = 4 << 20;

/// Whether the node takes new jobs, as the operator set it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// Taking jobs.
    #[default]
    Serving,
    /// Not taking new jobs until resumed; running ones go on.
    Paused,
    /// Finishing running jobs, taking no new ones (before maintenance or shutdown).
    Draining,
}

/// The persisted document. Its `Debug` names the containers only: their entries hold secrets.
#[derive(Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Persisted {
    /// Serving, paused or draining.
    #[serde(default)]
    pub mode: Mode,
    /// The provider's settings.
    #[serde(default)]
    pub settings: Settings,
    /// The containers the node runs, as `config.json` entries (secrets included), once the
    /// operator changed them through the API; they replace `config.json`'s.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub containers: Option<Vec<serde_json::Value>>,
}

impl std::fmt::Debug for Persisted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ids: Option<Vec<&str>> = self
            .containers
            .as_ref()
            .map(|entries| entries.iter().map(|e| e["id"].as_str().unwrap_or("?")).collect());
        f.debug_struct("Persisted")
            .field("mode", &self.mode)
            .field("settings", &self.settings)
            .field("containers", &ids)
            .finish()
    }
}

/// Why the admin state could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// The file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The state file.
        path: PathBuf,
        /// What the system said.
        source: std::io::Error,
    },
    /// The file is not a state document.
    #[error("{path}: not an admin state document ({reason}); fix it or remove it to start from config.json")]
    Corrupt {
        /// The state file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
}

/// The admin state and its file.
#[derive(Debug)]
pub struct AdminState {
    path: PathBuf,
    current: RwLock<Persisted>,
}

impl AdminState {
    /// Reads `path`; a missing file is the default state.
    pub fn open(path: PathBuf) -> Result<Self, StateError> {
        let current = match std::fs::metadata(&path) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Persisted::default(),
            Err(source) => return Err(StateError::Io { path, source }),
            Ok(meta) if meta.len() > MAX_FILE => {
                return Err(StateError::Corrupt {
                    path,
                    reason: format!("larger than {MAX_FILE} bytes"),
                });
            }
            Ok(_) => {
                let text = std::fs::read_to_string(&path).map_err(|source| StateError::Io {
                    path: path.clone(),
                    source,
                })?;
                serde_json::from_str(&text).map_err(|e| StateError::Corrupt {
                    path: path.clone(),
                    reason: e.to_string(),
                })?
            }
        };
        Ok(Self {
            path,
            current: RwLock::new(current),
        })
    }

    /// The state file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The state now.
    pub fn get(&self) -> Persisted {
        self.current.read().expect("admin state poisoned").clone()
    }

    /// `read` of the state now, without copying it (the job path asks on every job).
    pub fn with<R>(&self, read: impl FnOnce(&Persisted) -> R) -> R {
        read(&self.current.read().expect("admin state poisoned"))
    }

    /// Changes the state with `change`, written to disk before it takes effect.
    pub fn update(&self, change: impl FnOnce(&mut Persisted)) -> Result<Persisted, StateError> {
        let mut current = self.current.write().expect("admin state poisoned");
        let mut next = current.clone();
        change(&mut next);
        write_atomically(&self.path, &next)?;
        *current = next.clone();
        Ok(next)
    }
}

fn write_atomically(path: &Path, state: &Persisted) -> Result<(), StateError> {
    let io = |source| StateError::Io {
        path: path.to_path_buf(),
        source,
    };
    let tmp = path.with_extension("json.tmp");
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    // It holds the containers' env and bearer tokens.
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(&tmp).map_err(io)?;
    let json = serde_json::to_vec_pretty(state).expect("the admin state always serialises");
    file.write_all(&json).and_then(|()| file.sync_all()).map_err(io)?;
    std::fs::rename(&tmp, path).map_err(io)?;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        // The rename itself must survive a power loss.
        std::fs::File::open(dir).and_then(|d| d.sync_all()).map_err(io)?;
    }
    Ok(())
}

/// Why the node takes no new off-chain job now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Closed {
    /// Said to the client.
    pub reason: String,
    /// When it opens again, if the schedule says.
    pub available_at: Option<Timestamp>,
}

/// Whether a new off-chain job is taken at `now` (chain jobs: see [`gate_chain`]).
pub fn gate(state: &Persisted, now: Timestamp) -> Result<(), Closed> {
    match state.mode {
        Mode::Paused => {
            return Err(Closed {
                reason: "the node is paused by its operator; try another node".into(),
                available_at: None,
            });
        }
        Mode::Draining => {
            return Err(Closed {
                reason: "the node is draining (finishing its jobs before maintenance); try another node".into(),
                available_at: None,
            });
        }
        Mode::Serving => {}
    }
    match state.settings.availability.as_ref().map(|a| a.at(now)) {
        None | Some(Open { now: true, .. }) => Ok(()),
        Some(Open { next, .. }) => Err(Closed {
            reason: match next {
                Some(at) => format!("the node is outside its provider's hours; it takes jobs again at {at}"),
                None => "the node is outside its provider's hours and has no opening scheduled".into(),
            },
            available_at: next,
        }),
    }
}

/// Whether chain subscriptions are served at `now`: always, unless the schedule is closed and the
/// provider set `chain_outside: false` (paused and draining nodes keep serving paid subscriptions).
pub fn gate_chain(state: &Persisted, now: Timestamp) -> bool {
    match &state.settings.availability {
        Some(a) if !a.chain_outside => a.at(now).now,
        _ => true,
    }
}

#[cfg(test)]
mod tests {
    use infernet_types::settings::Availability;

    use super::*;

    fn closed_weekdays() -> Settings {
        Settings {
            availability: Some(Availability {
                timezone: "UTC".into(),
                weekly: vec![infernet_types::settings::Window {
                    days: vec!["sat".into(), "sun".into()],
                    from: "00:00".into(),
                    to: "24:00".into(),
                }],
                exceptions: vec![],
                chain_outside: false,
            }),
            ..Settings::default()
        }
    }

    #[test]
    fn paused_draining_and_closed_hours_refuse_with_their_reason() {
        let wednesday: Timestamp = "2026-12-02T12:00:00Z".parse().unwrap();
        let saturday: Timestamp = "2026-12-05T00:00:00Z".parse().unwrap();
        let mut state = Persisted::default();
        assert_eq!(gate(&state, wednesday), Ok(()));
        state.mode = Mode::Paused;
        assert!(gate(&state, wednesday).unwrap_err().reason.contains("paused"));
        state.mode = Mode::Draining;
        assert!(gate(&state, wednesday).unwrap_err().reason.contains("draining"));
        state.mode = Mode::Serving;
        state.settings = closed_weekdays();
        let closed = gate(&state, wednesday).unwrap_err();
        assert_eq!(closed.available_at, Some(saturday));
        assert!(closed.reason.contains("2026-12-05T00:00:00Z"), "{}", closed.reason);
        assert_eq!(gate(&state, saturday), Ok(()));
        assert!(!gate_chain(&state, wednesday));
        state.settings.availability.as_mut().unwrap().chain_outside = true;
        assert!(gate_chain(&state, wednesday));
    }

    #[test]
    fn the_state_survives_a_reopen_and_a_corrupt_file_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("infernet-admin.json");
        let state = AdminState::open(path.clone()).unwrap();
        assert_eq!(state.get(), Persisted::default());
        state.update(|s| s.mode = Mode::Draining).unwrap();
        state.update(|s| s.settings = closed_weekdays()).unwrap();
        let again = AdminState::open(path.clone()).unwrap().get();
        assert_eq!(again.mode, Mode::Draining);
        assert_eq!(again.settings, closed_weekdays());
        assert!(!dir.path().join("infernet-admin.json.tmp").exists());

        std::fs::write(&path, "{\"mode\": 7}").unwrap();
        let e = AdminState::open(path).unwrap_err().to_string();
        assert!(e.contains("remove it to start from config.json"), "{e}");
    }
}
