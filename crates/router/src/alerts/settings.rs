//! What each operator sets: thresholds, where alerts go (webhooks, direct messages), silences;
//! checked field by field, each problem named by its path.

use serde::{Deserialize, Serialize};

use super::{
    MAX_SILENCES, MAX_WEBHOOKS,
    deliver::Webhook,
    rules::{self, Rules},
};

/// A silence: alerts of `rule` (on `node`, or every node of the operator) are recorded but not
/// sent until `until`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Silence {
    /// One of [`rules::RULES`].
    pub rule: String,
    /// The node (as alerts name it); every node of the operator when absent.
    #[serde(default)]
    pub node: Option<String>,
    /// End of the silence, RFC 3339 (`2026-12-24T00:00:00Z`).
    pub until: String,
}

/// What an operator sets: thresholds, where alerts go, silences.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OperatorSettings {
    /// Thresholds of every rule.
    pub rules: Rules,
    /// `https://…` (generic JSON), `slack:https://…`, `discord:https://…`.
    pub webhooks: Vec<String>,
    /// Silences.
    pub silences: Vec<Silence>,
    /// Alerts as Nostr direct messages to the operator's key, through the router's relays.
    /// Unset: on when the router has relays.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub direct_messages: Option<bool>,
}

/// A bad settings document: the field and what it must be.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{path}: {message}")]
pub struct SettingsError {
    /// Where (`rules.success_rate.threshold`, `webhooks[1]`).
    pub path: String,
    /// What it must be.
    pub message: String,
}

impl OperatorSettings {
    /// Parses and checks a settings document; the first problem is named.
    pub fn parse(body: &[u8], allow_private: bool) -> Result<Self, Vec<SettingsError>> {
        let mut de = serde_json::Deserializer::from_slice(body);
        let settings: Self = serde_path_to_error::deserialize(&mut de).map_err(|e| {
            vec![SettingsError {
                path: match e.path().to_string() {
                    p if p == "." => "(body)".into(),
                    p => p,
                },
                message: e.inner().to_string(),
            }]
        })?;
        let mut problems: Vec<SettingsError> = settings
            .rules
            .problems()
            .into_iter()
            .map(|p| SettingsError {
                path: format!("rules.{}", p.path),
                message: p.message,
            })
            .collect();
        if settings.webhooks.len() > MAX_WEBHOOKS {
            problems.push(SettingsError {
                path: "webhooks".into(),
                message: format!("at most {MAX_WEBHOOKS} webhooks"),
            });
        }
        for (i, w) in settings.webhooks.iter().enumerate() {
            if let Err(e) = Webhook::parse(w, allow_private) {
                problems.push(SettingsError {
                    path: format!("webhooks[{i}]"),
                    message: e.to_string(),
                });
            }
        }
        if settings.silences.len() > MAX_SILENCES {
            problems.push(SettingsError {
                path: "silences".into(),
                message: format!("at most {MAX_SILENCES} silences"),
            });
        }
        for (i, s) in settings.silences.iter().enumerate() {
            if !rules::RULES.contains(&s.rule.as_str()) {
                problems.push(SettingsError {
                    path: format!("silences[{i}].rule"),
                    message: format!("must be one of {}", rules::RULES.join(", ")),
                });
            }
            if s.until.parse::<jiff::Timestamp>().is_err() {
                problems.push(SettingsError {
                    path: format!("silences[{i}].until"),
                    message: "must be an RFC 3339 time such as 2026-12-24T00:00:00Z".into(),
                });
            }
        }
        match problems.is_empty() {
            true => Ok(settings),
            false => Err(problems),
        }
    }

    /// The settings as the API shows them: `direct_messages` as it applies on a router that has
    /// relays (`relays`) or not.
    pub fn shown(mut self, relays: bool) -> Self {
        self.direct_messages = Some(relays && self.direct_messages.unwrap_or(true));
        self
    }

    /// Whether a silence covers `rule` on `node` at `now` (Unix ms).
    pub(super) fn silences(&self, rule: &str, node: &str, now: i64) -> bool {
        self.silences.iter().any(|s| {
            s.rule == rule
                && s.node.as_deref().is_none_or(|n| n == node)
                && s.until
                    .parse::<jiff::Timestamp>()
                    .is_ok_and(|t| t.as_millisecond() > now)
        })
    }
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::*;

    #[test]
    fn settings_problems_name_their_field() {
        let bad = |body: Value| OperatorSettings::parse(body.to_string().as_bytes(), false).unwrap_err();
        assert_eq!(
            bad(json!({"rules": {"success_rate": {"threshold": "high"}}}))[0].path,
            "rules.success_rate.threshold"
        );
        assert_eq!(
            bad(json!({"rules": {"disk": {"percent": 120}}}))[0].path,
            "rules.disk.percent"
        );
        assert_eq!(bad(json!({"webhooks": ["ftp://x"]}))[0].path, "webhooks[0]");
        assert_eq!(bad(json!({"webhooks": ["http://127.0.0.1:9/"]}))[0].path, "webhooks[0]");
        assert_eq!(
            bad(json!({"silences": [{"rule": "nope", "until": "2026-01-01T00:00:00Z"}]}))[0].path,
            "silences[0].rule"
        );
        assert_eq!(
            bad(json!({"silences": [{"rule": "disk", "until": "soon"}]}))[0].path,
            "silences[0].until"
        );
        assert_eq!(bad(json!({"colour": "red"}))[0].path, "colour");
        assert_eq!(bad(json!({"direct_messages": "yes"}))[0].path, "direct_messages");
        let ok = OperatorSettings::parse(
            br#"{"rules": {"offline": {"after_s": 30}}, "webhooks": ["slack:https://hooks.slack.com/x"]}"#,
            false,
        )
        .unwrap();
        assert_eq!(ok.rules.offline.after_s, 30.0);
        assert!(ok.rules.offline.enabled);
        assert_eq!(ok.rules.success_rate, Rules::default().success_rate);
        // Direct messages: on by default where the router has relays, never where it has none.
        assert_eq!(ok.direct_messages, None);
        assert_eq!(ok.clone().shown(true).direct_messages, Some(true));
        assert_eq!(ok.shown(false).direct_messages, Some(false));
        let off = OperatorSettings::parse(br#"{"direct_messages": false}"#, false).unwrap();
        assert_eq!(off.shown(true).direct_messages, Some(false));
    }

    #[test]
    fn a_silence_covers_its_rule_node_and_time() {
        let s = OperatorSettings {
            silences: vec![Silence {
                rule: "disk".into(),
                node: Some("n1:4000".into()),
                until: "2030-01-01T00:00:00Z".into(),
            }],
            ..OperatorSettings::default()
        };
        let now = 1_800_000_000_000;
        assert!(s.silences("disk", "n1:4000", now));
        assert!(!s.silences("disk", "n2:4000", now));
        assert!(!s.silences("memory", "n1:4000", now));
        assert!(!s.silences("disk", "n1:4000", 1_900_000_000_000));
    }
}
