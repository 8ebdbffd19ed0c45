//! Lax scalar parsing: Ritual's node (pydantic) accepts `"3000"` for a number and `"true"` for a
//! boolean, and its own sample config relies on it, so we do too.

use serde::{Deserialize, Deserializer, de::Error};
use serde_json::Value;

fn number<'de, D: Deserializer<'de>>(d: D, what: &str) -> Result<serde_json::Number, D::Error> {
    match Value::deserialize(d)? {
        Value::Number(n) => Ok(n),
        Value::String(s) => s
            .trim()
            .parse::<serde_json::Number>()
            .map_err(|_| D::Error::custom(format!("expected {what}, found \"{s}\""))),
        other => Err(D::Error::custom(format!(
            "expected {what}, found {}",
            infernet_types::kind_of(&other)
        ))),
    }
}

pub(super) fn u64<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    let n = number(d, "a non-negative whole number")?;
    n.as_u64()
        .ok_or_else(|| D::Error::custom(format!("expected a non-negative whole number, found {n}")))
}

pub(super) fn u16<'de, D: Deserializer<'de>>(d: D) -> Result<u16, D::Error> {
    let n = number(d, "a port number (1-65535)")?;
    n.as_u64()
        .and_then(|v| u16::try_from(v).ok())
        .ok_or_else(|| D::Error::custom(format!("expected a port number (1-65535), found {n}")))
}

pub(super) fn opt_u16<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u16>, D::Error> {
    u16(d).map(Some)
}

pub(super) fn f64<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
    let n = number(d, "a number")?;
    n.as_f64()
        .ok_or_else(|| D::Error::custom(format!("expected a number, found {n}")))
}

pub(super) fn bool<'de, D: Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
    match Value::deserialize(d)? {
        Value::Bool(b) => Ok(b),
        Value::String(s) => match s.trim().to_ascii_lowercase().as_str() {
            "true" | "1" | "yes" | "on" => Ok(true),
            "false" | "0" | "no" | "off" => Ok(false),
            _ => Err(D::Error::custom(format!("expected true or false, found \"{s}\""))),
        },
        Value::Number(n) if n.as_u64() == Some(0) => Ok(false),
        Value::Number(n) if n.as_u64() == Some(1) => Ok(true),
        other => Err(D::Error::custom(format!(
            "expected true or false, found {}",
            infernet_types::kind_of(&other)
        ))),
    }
}
