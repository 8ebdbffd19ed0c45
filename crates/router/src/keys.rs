//! API keys the router's operator issues to clients (`infernet-router keys add|list|revoke`, run
//! beside the router's database), and how a request presents one: `Authorization: Bearer ik_…`.
//!
//! A key is `ik_` and 64 hex digits of randomness; the database keeps only its SHA-256, so a
//! stolen database does not give the keys away, and the key is shown once, when it is made. Each
//! key has a public id (16 hex digits) that ledger rows, job listings and `keys revoke` use.
//!
//! Quotas (jobs per minute and per day) are counted in the database
//! ([`Db::charge_api_key`](crate::db::Db::charge_api_key)), so they hold across router replicas
//! sharing one PostgreSQL. Windows are fixed (the calendar minute and day, UTC): a client can
//! run up to twice a quota across the edge of two windows, never more than the quota within one.

use std::fmt;

use axum::http::{HeaderMap, header};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::db::{Db, DbError, api_keys::ApiKey};

/// What every key starts with (tells a key from a NIP-98 `Authorization` and from other
/// services' tokens in a leak scan).
pub const PREFIX: &str = "ik_";

/// A key's public id: 8 bytes, shown as 16 hex digits.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct KeyId([u8; 8]);

impl KeyId {
    /// Parses 16 hex digits.
    pub fn parse(text: &str) -> Option<Self> {
        let mut bytes = [0u8; 8];
        hex::decode_to_slice(text, &mut bytes).ok()?;
        Some(Self(bytes))
    }
}

impl fmt::Display for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl fmt::Debug for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeyId({self})")
    }
}

/// A checked key, as the gateway hands it to handlers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Keyed {
    /// The key's id.
    pub id: KeyId,
    /// Jobs per minute at most.
    pub per_minute: Option<i64>,
    /// Jobs per day at most.
    pub per_day: Option<i64>,
}

/// What is stored of a key: the hex SHA-256 of the whole key text.
pub fn hash(key: &str) -> String {
    hex::encode(Sha256::digest(key.as_bytes()))
}

/// A new key and its row: the key is shown once and never stored.
pub fn issue(label: Option<String>, per_minute: Option<i64>, per_day: Option<i64>, now: i64) -> (String, ApiKey) {
    let secret: [u8; 32] = rand::random();
    let id: [u8; 8] = rand::random();
    let key = format!("{PREFIX}{}", hex::encode(secret));
    let row = ApiKey {
        id: KeyId(id).to_string(),
        hash: hash(&key),
        label,
        per_minute,
        per_day,
        created_at: now,
        revoked_at: None,
    };
    (key, row)
}

/// The bearer token of a request, when it sends `Authorization: Bearer …` (any case of the scheme).
pub fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

/// Why a bearer key was refused.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// Not a key this router issued, or revoked.
    #[error("the API key is unknown or revoked; ask the router's operator for a key (infernet-router keys add)")]
    Unknown,
    /// Its quota is used up.
    #[error("the API key's quota of {limit} jobs per {span} is used up; try again in {retry_after} s")]
    OverQuota {
        /// `minute` or `day`.
        span: &'static str,
        /// The quota.
        limit: i64,
        /// Seconds until the window ends.
        retry_after: u64,
    },
    /// The database failed.
    #[error(transparent)]
    Database(#[from] DbError),
}

/// The key `token` names, when active.
pub async fn check(db: &Db, token: &str) -> Result<Keyed, KeyError> {
    // A token of another shape is not looked up (a bounded cost for garbage).
    if !token.starts_with(PREFIX) || token.len() != PREFIX.len() + 64 {
        return Err(KeyError::Unknown);
    }
    let row = db.active_api_key(&hash(token)).await?.ok_or(KeyError::Unknown)?;
    let id = KeyId::parse(&row.id).ok_or(KeyError::Unknown)?;
    Ok(Keyed {
        id,
        per_minute: row.per_minute,
        per_day: row.per_day,
    })
}

/// Counts one job against `key`'s quotas at `now` (Unix ms).
pub async fn charge(db: &Db, key: &Keyed, now: i64) -> Result<(), KeyError> {
    match db
        .charge_api_key(&key.id.to_string(), key.per_minute, key.per_day, now)
        .await?
    {
        Ok(()) => Ok(()),
        Err(over) => Err(KeyError::OverQuota {
            span: match over.span {
                crate::db::api_keys::Span::Minute => "minute",
                crate::db::api_keys::Span::Day => "day",
            },
            limit: over.limit,
            retry_after: u64::try_from((over.until - now + 999) / 1000).unwrap_or(1).max(1),
        }),
    }
}

/// What `infernet-router keys …` does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// Issues a key.
    Add {
        /// Jobs per minute at most.
        per_minute: Option<i64>,
        /// Jobs per day at most.
        per_day: Option<i64>,
        /// The operator's note.
        label: Option<String>,
    },
    /// Lists keys (never the keys themselves).
    List,
    /// Revokes a key.
    Revoke {
        /// Its id.
        id: String,
    },
}

/// Why a `keys` command failed.
#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    /// A quota of zero or less.
    #[error("--{flag}: a quota is at least 1 job; leave the flag out for no limit")]
    Quota {
        /// The flag.
        flag: &'static str,
    },
    /// A label too long.
    #[error("--label: at most 200 characters")]
    Label,
    /// `keys revoke` of an id that is not a live key.
    #[error("no active key has the id {0:?}; `infernet-router keys list` shows them")]
    NoSuchKey(String),
    /// The database failed.
    #[error(transparent)]
    Database(#[from] DbError),
}

/// Runs a `keys` command on `db`; its output (JSON) for the terminal.
pub async fn run(db: &Db, command: Command, now: i64) -> Result<Value, CommandError> {
    match command {
        Command::Add {
            per_minute,
            per_day,
            label,
        } => {
            for (flag, quota) in [("per-minute", per_minute), ("per-day", per_day)] {
                if quota.is_some_and(|q| q < 1) {
                    return Err(CommandError::Quota { flag });
                }
            }
            if label.as_ref().is_some_and(|l| l.chars().count() > 200) {
                return Err(CommandError::Label);
            }
            let (key, row) = issue(label, per_minute, per_day, now);
            db.insert_api_key(&row).await?;
            Ok(json!({
                "id": row.id,
                "key": key,
                "label": row.label,
                "per_minute": row.per_minute,
                "per_day": row.per_day,
                "note": "the key is shown this once; only its hash is stored",
            }))
        }
        Command::List => {
            let mut out = Vec::new();
            for k in db.api_keys().await? {
                let (minute, day) = db.api_key_usage(&k.id, now).await?;
                out.push(json!({
                    "id": k.id, "label": k.label, "per_minute": k.per_minute, "per_day": k.per_day,
                    "created_at": k.created_at, "revoked_at": k.revoked_at,
                    "used_this_minute": minute, "used_today": day,
                }));
            }
            Ok(Value::Array(out))
        }
        Command::Revoke { id } => {
            if db.revoke_api_key(&id, now).await? {
                Ok(json!({"id": id, "revoked_at": now}))
            } else {
                Err(CommandError::NoSuchKey(id))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_is_stored_only_as_its_hash_and_its_id_round_trips() {
        let (key, row) = issue(Some("ci".into()), Some(5), None, 1);
        assert!(key.starts_with(PREFIX) && key.len() == 67, "{key}");
        assert_ne!(row.hash, key);
        assert_eq!(row.hash, hash(&key));
        assert!(!row.hash.contains(&key[3..]));
        assert_eq!(KeyId::parse(&row.id).unwrap().to_string(), row.id);
        assert!(KeyId::parse("xyz").is_none());
    }

    #[test]
    fn the_bearer_scheme_is_read_in_any_case() {
        let mut h = HeaderMap::new();
        h.insert(header::AUTHORIZATION, "bearer ik_x".parse().unwrap());
        assert_eq!(bearer(&h), Some("ik_x"));
        h.insert(header::AUTHORIZATION, "Nostr abc".parse().unwrap());
        assert_eq!(bearer(&h), None);
    }
}
