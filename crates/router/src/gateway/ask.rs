//! A job as a client asks the gateway for it, parsed with every error naming its field.

use std::time::Duration;

use axum::body::Bytes;
use serde_json::{Value, json};

use super::callback;
use crate::choose::{Ask, Requirements};

/// A job as a client asks for it.
#[derive(Debug, Clone)]
pub struct JobAsk {
    /// Its containers, in order.
    pub containers: Vec<String>,
    /// Its input.
    pub data: Value,
    /// Passed on to the node.
    pub requires_proof: bool,
    /// What it needs of the host.
    pub requirements: Requirements,
    /// Most it may cost.
    pub max_price: Option<f64>,
    /// Compute seconds priced.
    pub max_seconds: f64,
    /// Time to find a node that accepts it.
    pub deadline: Option<Duration>,
    /// Where its final result is posted.
    pub callback_url: Option<String>,
}

/// Longest `max_seconds` and `deadline_s` taken: a day.
const MAX_SECONDS: f64 = 86_400.0;

/// A job body that cannot be taken: the field (prefixed for a batch item, `[3].max_price`) and
/// what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {problem}")]
pub struct BadField {
    /// Where.
    pub field: String,
    /// What.
    pub problem: String,
}

fn bad_field(at: &str, field: impl std::fmt::Display, problem: impl Into<String>) -> BadField {
    BadField {
        field: format!("{at}{field}"),
        problem: problem.into(),
    }
}

impl JobAsk {
    /// Parses a job body; errors name the field (`at` prefixes it, for batch items).
    pub fn parse(v: &Value, at: &str) -> Result<Self, BadField> {
        let obj = v
            .as_object()
            .ok_or_else(|| bad_field(at, "job", "must be a JSON object"))?;
        const KNOWN: [&str; 8] = [
            "containers",
            "data",
            "requires_proof",
            "requirements",
            "max_price",
            "max_seconds",
            "deadline_s",
            "callback_url",
        ];
        if let Some(k) = obj.keys().find(|k| !KNOWN.contains(&k.as_str())) {
            return Err(bad_field(at, k, format!("unknown field; known: {}", KNOWN.join(", "))));
        }
        let callback_url = match obj.get("callback_url") {
            None | Some(Value::Null) => None,
            Some(Value::String(u)) => {
                Some(callback::check_url(u, true).map_err(|e| bad_field(at, "callback_url", e.to_string()))?)
            }
            Some(_) => return Err(bad_field(at, "callback_url", "must be a URL string")),
        };
        let containers: Vec<String> = match obj.get("containers") {
            Some(Value::Array(items)) if !items.is_empty() && items.len() <= 64 => items
                .iter()
                .enumerate()
                .map(|(i, c)| match c.as_str() {
                    Some(s) if !s.is_empty() && s.len() <= 256 => Ok(s.to_string()),
                    _ => Err(bad_field(
                        at,
                        format!("containers[{i}]"),
                        "must be a container id (a non-empty string)",
                    )),
                })
                .collect::<Result<_, _>>()?,
            _ => return Err(bad_field(at, "containers", "must be a list of 1 to 64 container ids")),
        };
        let number = |name: &str, max: f64| -> Result<Option<f64>, BadField> {
            match obj.get(name) {
                None | Some(Value::Null) => Ok(None),
                Some(v) => match v.as_f64() {
                    Some(x) if x.is_finite() && x >= 0.0 && x <= max => Ok(Some(x)),
                    _ => Err(bad_field(at, name, format!("must be a number from 0 to {max}"))),
                },
            }
        };
        let requirements = match obj.get("requirements") {
            None | Some(Value::Null) => Requirements::default(),
            Some(v) => serde_json::from_value(v.clone()).map_err(|e| bad_field(at, "requirements", e.to_string()))?,
        };
        let max_seconds = number("max_seconds", MAX_SECONDS)?.unwrap_or(60.0);
        let requires_proof = match obj.get("requires_proof") {
            None | Some(Value::Null) => false,
            Some(Value::Bool(b)) => *b,
            Some(_) => return Err(bad_field(at, "requires_proof", "must be true or false")),
        };
        Ok(Self {
            containers,
            data: obj.get("data").cloned().unwrap_or_else(|| json!({})),
            requires_proof,
            requirements,
            max_price: number("max_price", f64::MAX)?,
            max_seconds,
            deadline: match number("deadline_s", MAX_SECONDS)? {
                // No node accepts a job within no time: a client's mistake, said as such.
                Some(d) if d <= 0.0 => return Err(bad_field(at, "deadline_s", "must be more than 0")),
                d => d.map(Duration::from_secs_f64),
            },
            callback_url,
        })
    }

    pub(super) fn as_ask<'a>(&'a self, unit: &'a str) -> Ask<'a> {
        Ask {
            containers: &self.containers,
            requirements: &self.requirements,
            max_price: self.max_price,
            max_seconds: self.max_seconds,
            unit,
        }
    }

    /// The body the node takes.
    pub(super) fn node_body(&self) -> Bytes {
        let mut body = json!({"containers": self.containers, "data": self.data});
        if self.requires_proof {
            body["requires_proof"] = json!(true);
        }
        Bytes::from(body.to_string())
    }
}
