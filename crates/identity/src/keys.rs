//! Keys: an [`Identity`] holds a secret key; a [`PublicKey`] names one in `npub` or 64-hex form.
//!
//! A secret key lives in a file of its own, readable by its owner only (0600): it is written with
//! those permissions, and a key file that others can read is refused when it is loaded, as ssh
//! refuses such a private key.

use std::{
    fmt,
    fs::OpenOptions,
    io::{ErrorKind, Write},
    os::unix::fs::{OpenOptionsExt, PermissionsExt},
    path::{Path, PathBuf},
};

use nostr::{
    nips::nip19::{FromBech32, ToBech32},
    prelude::Keys,
};

pub use nostr::prelude::PublicKey;

/// Longest key file read: an `nsec` is 63 characters, a hex key 64.
const MAX_KEY_FILE: u64 = 4096;

/// Why a key could not be read, parsed or written.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// The text is not a public key. The text itself is not shown (a secret key pasted in the
    /// wrong place must not reach a log), only what it looks like.
    #[error("{0} is not a Nostr public key: use its npub1… form or 64 hex characters")]
    PublicKey(&'static str),
    /// The text is not a secret key (the text itself is never shown).
    #[error("not a Nostr secret key: use its nsec1… form or 64 hex characters")]
    SecretKey,
    /// The key file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The key file.
        path: PathBuf,
        /// What the system said.
        source: std::io::Error,
    },
    /// The key file exists already (and is never overwritten).
    #[error("{0}: a key file is already there; it is never overwritten (remove it yourself to replace it)")]
    Exists(PathBuf),
    /// The key file can be read by other users.
    #[error("{path}: the key file is readable by other users (mode {mode:o}); run `chmod 600 {path}`")]
    Permissions {
        /// The key file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// The key file holds more than a key.
    #[error("{0}: too large for a key file")]
    TooLarge(PathBuf),
}

/// A secret key and what it signs as. `Debug` and `Display` show only the public key.
#[derive(Clone)]
pub struct Identity {
    keys: Keys,
}

impl Identity {
    /// A new random key.
    pub fn generate() -> Self {
        Self { keys: Keys::generate() }
    }

    /// A key from its `nsec1…` or 64-hex text.
    pub fn parse(secret: &str) -> Result<Self, KeyError> {
        Keys::parse(secret.trim())
            .map(|keys| Self { keys })
            .map_err(|_| KeyError::SecretKey)
    }

    /// Reads the key in `path`, refusing a file that other users can read.
    pub fn load(path: &Path) -> Result<Self, KeyError> {
        let io = |source| KeyError::Io {
            path: path.to_path_buf(),
            source,
        };
        let meta = std::fs::metadata(path).map_err(io)?;
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(KeyError::Permissions {
                path: path.to_path_buf(),
                mode,
            });
        }
        if meta.len() > MAX_KEY_FILE {
            return Err(KeyError::TooLarge(path.to_path_buf()));
        }
        let text = std::fs::read_to_string(path).map_err(io)?;
        Self::parse(&text)
    }

    /// Writes a new key to `path` (created with mode 0600; an existing file is never replaced).
    pub fn create(path: &Path) -> Result<Self, KeyError> {
        let identity = Self::generate();
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
            .map_err(|source| match source.kind() {
                ErrorKind::AlreadyExists => KeyError::Exists(path.to_path_buf()),
                _ => KeyError::Io {
                    path: path.to_path_buf(),
                    source,
                },
            })?;
        writeln!(file, "{}", identity.nsec())
            .and_then(|()| file.sync_all())
            .map_err(|source| KeyError::Io {
                path: path.to_path_buf(),
                source,
            })?;
        Ok(identity)
    }

    /// The key in `path`, or a new one written there when there is none. The flag says whether it
    /// was created.
    pub fn load_or_create(path: &Path) -> Result<(Self, bool), KeyError> {
        match Self::create(path) {
            Ok(identity) => Ok((identity, true)),
            Err(KeyError::Exists(_)) => Self::load(path).map(|identity| (identity, false)),
            Err(e) => Err(e),
        }
    }

    /// The public key.
    pub fn public_key(&self) -> PublicKey {
        self.keys.public_key()
    }

    /// The public key as `npub1…`.
    pub fn npub(&self) -> String {
        npub(&self.public_key())
    }

    /// The secret key as `nsec1…`: for writing the key file only.
    pub fn nsec(&self) -> String {
        self.keys
            .secret_key()
            .to_bech32()
            .expect("a 32-byte key always encodes")
    }

    /// The signing keys.
    pub(crate) fn keys(&self) -> &Keys {
        &self.keys
    }
}

impl fmt::Debug for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Identity({} <secret redacted>)", self.npub())
    }
}

impl fmt::Display for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.npub())
    }
}

/// A public key from its `npub1…` or 64-hex text.
pub fn parse_public_key(text: &str) -> Result<PublicKey, KeyError> {
    let text = text.trim();
    let parsed = if text.starts_with("npub1") {
        PublicKey::from_bech32(text).ok()
    } else if text.len() == 64 {
        PublicKey::from_hex(text).ok()
    } else {
        None
    };
    parsed.ok_or(KeyError::PublicKey(if text.starts_with("nsec1") {
        "a secret key (nsec1…; keep it to yourself)"
    } else if text.is_empty() {
        "an empty value"
    } else {
        "the text given"
    }))
}

/// `key` as `npub1…`.
pub fn npub(key: &PublicKey) -> String {
    key.to_bech32().expect("a 32-byte key always encodes")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn public_keys_read_in_both_forms_and_nothing_else() {
        let identity = Identity::generate();
        let hex = identity.public_key().to_hex();
        assert_eq!(parse_public_key(&identity.npub()).unwrap(), identity.public_key());
        assert_eq!(parse_public_key(&hex).unwrap(), identity.public_key());
        assert_eq!(parse_public_key(&format!(" {hex}\n")).unwrap(), identity.public_key());
        for bad in ["", "npub1xyz", &hex[..63], &identity.nsec(), "zz".repeat(32).as_str()] {
            let e = parse_public_key(bad).unwrap_err().to_string();
            assert!(e.contains("npub1… form or 64 hex"), "{e}");
            assert!(bad.is_empty() || !e.contains(bad), "the input is shown: {e}");
        }
        let e = parse_public_key(&identity.nsec()).unwrap_err().to_string();
        assert!(e.starts_with("a secret key"), "{e}");
    }

    #[test]
    fn secret_keys_round_trip_and_never_show() {
        let identity = Identity::generate();
        let again = Identity::parse(&identity.nsec()).unwrap();
        assert_eq!(again.public_key(), identity.public_key());
        let hex = identity.keys().secret_key().to_secret_hex();
        assert_eq!(Identity::parse(&hex).unwrap().public_key(), identity.public_key());
        let shown = format!("{identity:?} {identity}");
        assert!(!shown.contains(&identity.nsec()) && !shown.contains(&hex), "{shown}");
        assert!(shown.contains(&identity.npub()));
        let e = Identity::parse("nsec1nope").unwrap_err().to_string();
        assert!(!e.contains("nope"), "the rejected text is not echoed: {e}");
    }

    #[test]
    fn key_files_are_private_and_never_overwritten() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("operator.nsec");
        let (created, fresh) = Identity::load_or_create(&path).unwrap();
        assert!(fresh);
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let (loaded, fresh) = Identity::load_or_create(&path).unwrap();
        assert!(!fresh);
        assert_eq!(loaded.public_key(), created.public_key());
        assert!(matches!(Identity::create(&path), Err(KeyError::Exists(_))));

        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let e = Identity::load(&path).unwrap_err().to_string();
        assert!(e.contains("chmod 600"), "{e}");
    }
}
