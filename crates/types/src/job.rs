//! Jobs as clients and containers see them.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use utoipa::ToSchema;

use crate::{DelegatedRequest, delegated::DelegatedError};

/// Where a job's input comes from or its output goes (`JobLocation` in Ritual's node).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ToSchema)]
#[repr(u8)]
pub enum JobLocation {
    /// On chain (a subscription's input, or a delivery to the Coordinator).
    Onchain = 0,
    /// Off chain (REST clients, or the previous container of a pipeline).
    Offchain = 1,
    /// Streamed back to the REST client as it is produced.
    Stream = 2,
}

impl Serialize for JobLocation {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u8(*self as u8)
    }
}

impl<'de> Deserialize<'de> for JobLocation {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match u8::deserialize(d)? {
            0 => Ok(Self::Onchain),
            1 => Ok(Self::Offchain),
            2 => Ok(Self::Stream),
            other => Err(serde::de::Error::custom(format!(
                "job location must be 0 (on-chain), 1 (off-chain) or 2 (stream), found {other}"
            ))),
        }
    }
}

/// The body the node POSTs to a container's `/service_output`.
///
/// Key order is the one Ritual's node sends; streaming calls omit `requires_proof`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ContainerInput {
    /// Where the input comes from.
    pub source: JobLocation,
    /// Where the output goes.
    pub destination: JobLocation,
    /// The job data (the client's `data`, or the previous container's output).
    pub data: Value,
    /// Whether the job asks for a proof; absent in streaming calls.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requires_proof: Option<bool>,
}

/// One container's contribution to a job: its parsed output or its error.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(untagged)]
pub enum ContainerResult {
    /// The container answered with JSON.
    Output {
        /// Container id.
        container: String,
        /// The container's parsed JSON response.
        output: Value,
    },
    /// The call failed; the pipeline stopped here.
    Error {
        /// Container id.
        container: String,
        /// What went wrong, for the client.
        error: String,
    },
}

impl ContainerResult {
    /// The id of the container this result belongs to.
    pub fn container(&self) -> &str {
        match self {
            Self::Output { container, .. } | Self::Error { container, .. } => container,
        }
    }

    /// Whether this result is an error.
    pub fn is_error(&self) -> bool {
        matches!(self, Self::Error { .. })
    }
}

/// Lifecycle of a job.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum JobStatus {
    /// Accepted and not finished yet.
    Running,
    /// Every container succeeded.
    Success,
    /// A container failed; `result` holds the error.
    Failed,
}

impl JobStatus {
    /// Parses the wire form (`running`, `success`, `failed`).
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "running" => Some(Self::Running),
            "success" => Some(Self::Success),
            "failed" => Some(Self::Failed),
            _ => None,
        }
    }

    /// Whether the job is finished.
    pub fn is_final(self) -> bool {
        !matches!(self, Self::Running)
    }
}

/// A job as `GET /api/jobs?id=…` returns it. Fields in alphabetical order (wire compatibility).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct JobResult {
    /// Job id (a random UUID).
    pub id: String,
    /// Results of every container but the last; omitted unless `intermediate=true` is asked for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub intermediate_results: Option<Vec<ContainerResult>>,
    /// The node's signed [`Receipt`](crate::Receipt) of a finished job, a Nostr event as JSON;
    /// only nodes in a network (with `network.routers`) sign them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub receipt: Option<String>,
    /// The last container's result, or the error that stopped the pipeline; `null` while running.
    pub result: Option<ContainerResult>,
    /// Lifecycle state.
    pub status: JobStatus,
}

impl JobResult {
    /// A job that has been accepted and is running.
    pub fn running(id: impl Into<String>) -> Self {
        Self {
            id: id.into(),
            intermediate_results: Some(Vec::new()),
            receipt: None,
            result: None,
            status: JobStatus::Running,
        }
    }

    /// A finished job from all container results in pipeline order (the last one is the result).
    pub fn finished(id: impl Into<String>, mut results: Vec<ContainerResult>) -> Self {
        let last = results.pop();
        let status = match &last {
            Some(r) if r.is_error() => JobStatus::Failed,
            _ => JobStatus::Success,
        };
        Self {
            id: id.into(),
            intermediate_results: Some(results),
            receipt: None,
            result: last,
            status,
        }
    }

    /// A finished job with an explicit status and no container results (reported by a container).
    pub fn reported(id: impl Into<String>, status: JobStatus) -> Self {
        Self {
            id: id.into(),
            intermediate_results: Some(Vec::new()),
            receipt: None,
            result: None,
            status,
        }
    }
}

/// Deepest nesting of a job's `data` the node accepts (objects and arrays, the outermost object
/// counting as one). A stored job wraps what it holds in a few more levels, and every reader of
/// the store (serde_json, Ritual's Python clients) stops at 128: deeper data would be kept but
/// could never be read back.
pub const MAX_DATA_DEPTH: usize = 100;

/// Whether `value` nests objects and arrays deeper than `limit` levels (a scalar is depth 0).
/// Stops looking as soon as it knows.
pub fn nested_deeper_than(value: &Value, limit: usize) -> bool {
    match value {
        Value::Array(items) => limit == 0 || items.iter().any(|v| nested_deeper_than(v, limit - 1)),
        Value::Object(map) => limit == 0 || map.values().any(|v| nested_deeper_than(v, limit - 1)),
        _ => false,
    }
}

/// `PUT /api/status` body: a container on the node's host reports a job it runs itself.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, ToSchema)]
pub struct StatusReport {
    /// The containers that ran the job.
    pub containers: Vec<String>,
    /// Job id.
    #[schema(min_length = 1)]
    pub id: String,
    /// The job's state.
    pub status: JobStatus,
}

/// `POST /api/jobs` body for an off-chain job.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, ToSchema)]
pub struct JobRequest {
    /// Pipeline of container ids; output of container i is the input of container i+1.
    #[schema(min_items = 1)]
    pub containers: Vec<String>,
    /// Input of the first container (a JSON object).
    #[schema(value_type = Object)]
    pub data: Map<String, Value>,
    /// Ask the last container for a proof.
    #[serde(default)]
    pub requires_proof: Option<bool>,
}

/// Why a `POST /api/jobs` body was refused (the node answers 400 with this text).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    /// The body is not JSON.
    #[error("request body is not valid JSON: {0}")]
    NotJson(String),
    /// The body is JSON but not an object.
    #[error("expected a JSON object with `containers` and `data`, found {0}")]
    NotAnObject(&'static str),
    /// An off-chain job's field has the wrong shape (the message names its path).
    #[error("invalid job request: {0}")]
    Invalid(String),
    /// An off-chain job names no container.
    #[error("invalid job request: containers: name at least one container")]
    NoContainers,
    /// An off-chain job's `data` nests too deep to be stored and read back.
    #[error("invalid job request: data: nested deeper than {MAX_DATA_DEPTH} levels, the most the node accepts")]
    TooDeep,
    /// A delegated subscription's field is wrong.
    #[error("invalid delegated subscription request: {0}")]
    Delegated(#[from] DelegatedError),
}

impl JobRequest {
    /// The rules the schema cannot say: a pipeline has a container, and `data` can be stored.
    fn check(&self) -> Result<(), RequestError> {
        if self.containers.is_empty() {
            return Err(RequestError::NoContainers);
        }
        if self.data.values().any(|v| nested_deeper_than(v, MAX_DATA_DEPTH - 1)) {
            return Err(RequestError::TooDeep);
        }
        Ok(())
    }
}

/// A parsed `POST /api/jobs` body: an off-chain job or a delegated subscription.
#[derive(Debug, Clone, PartialEq)]
pub enum ParsedJobRequest {
    /// Off-chain job (`containers` + `data`).
    Offchain(JobRequest),
    /// Delegated subscription (`subscription` + `signature` + `data`), parsed in full by
    /// [`DelegatedBody::parse`] once the node knows it can serve one.
    Delegated(DelegatedBody),
}

/// A body recognised as a delegated subscription, not yet parsed in full.
#[derive(Debug, Clone, PartialEq)]
pub struct DelegatedBody {
    text: String,
    /// The `subscription` object as sent.
    pub subscription: Value,
    /// `signature.expiry`, when it is a number.
    pub expiry: Option<u64>,
}

impl DelegatedBody {
    /// The full request, with every field checked and 256-bit integers exact.
    pub fn parse(&self) -> Result<DelegatedRequest, RequestError> {
        Ok(DelegatedRequest::from_json(&self.text)?)
    }
}

impl ParsedJobRequest {
    /// Parses a request body from its JSON text, with an error message naming the offending path.
    ///
    /// Unknown keys are ignored (Ritual's clients send extras); `id` and `ip` in a body are never
    /// honoured, since the node assigns the id and reads the client address from the connection.
    /// An off-chain job names at least one container and its `data` nests at most
    /// [`MAX_DATA_DEPTH`] levels.
    pub fn from_json(text: &str) -> Result<Self, RequestError> {
        let parsed = Self::parse_json(text)?;
        if let Self::Offchain(request) = &parsed {
            request.check()?;
        }
        Ok(parsed)
    }

    fn parse_json(text: &str) -> Result<Self, RequestError> {
        // The common case, a well-formed off-chain job, parses straight from the text (it has
        // `containers`, so it is off-chain either way); anything else, and every error message,
        // takes the way that names the offending path.
        if let Ok(request) = serde_json::from_str::<JobRequest>(text) {
            return Ok(Self::Offchain(request));
        }
        let value: Value = serde_json::from_str(text).map_err(|e| RequestError::NotJson(e.to_string()))?;
        let Value::Object(obj) = &value else {
            return Err(RequestError::NotAnObject(kind_of(&value)));
        };
        if obj.contains_key("containers") || !obj.contains_key("subscription") {
            let request: JobRequest = parse_with_path(value)?;
            return Ok(Self::Offchain(request));
        }
        Ok(Self::Delegated(DelegatedBody {
            text: text.to_string(),
            expiry: obj
                .get("signature")
                .and_then(|s| s.get("expiry"))
                .and_then(Value::as_u64),
            subscription: obj.get("subscription").cloned().unwrap_or(Value::Null),
        }))
    }
}

/// Deserialises with the failing field named (`containers[1]: invalid type: …`).
fn parse_with_path<T: serde::de::DeserializeOwned>(value: Value) -> Result<T, RequestError> {
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        RequestError::Invalid(if path == "." {
            e.inner().to_string()
        } else {
            format!("{path}: {}", e.inner())
        })
    })
}

/// JSON type name for error messages.
pub fn kind_of(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn container_input_wire_format_keeps_ritual_key_order() {
        let input = ContainerInput {
            source: JobLocation::Offchain,
            destination: JobLocation::Onchain,
            data: json!({"x": 1}),
            requires_proof: Some(false),
        };
        assert_eq!(
            serde_json::to_string(&input).unwrap(),
            r#"{"source":1,"destination":0,"data":{"x":1},"requires_proof":false}"#
        );
        let stream = ContainerInput {
            requires_proof: None,
            destination: JobLocation::Stream,
            ..input
        };
        assert_eq!(
            serde_json::to_string(&stream).unwrap(),
            r#"{"source":1,"destination":2,"data":{"x":1}}"#
        );
    }

    #[test]
    fn finished_job_splits_intermediate_and_final_results() {
        let a = ContainerResult::Output {
            container: "a".into(),
            output: json!({"v": 1}),
        };
        let b = ContainerResult::Error {
            container: "b".into(),
            error: "boom".into(),
        };
        let job = JobResult::finished("j", vec![a.clone(), b.clone()]);
        assert_eq!(job.status, JobStatus::Failed);
        assert_eq!(job.intermediate_results, Some(vec![a]));
        assert_eq!(job.result, Some(b));
        assert_eq!(
            serde_json::to_value(JobResult::running("j")).unwrap(),
            json!({"id": "j", "intermediate_results": [], "result": null, "status": "running"})
        );
    }

    #[test]
    fn parse_offchain_ignores_id_ip_and_extra_keys() {
        let parsed = ParsedJobRequest::from_json(
            &json!({"containers": ["a"], "data": {}, "id": "evil", "ip": "1.2.3.4", "extra": true}).to_string(),
        )
        .unwrap();
        assert_eq!(
            parsed,
            ParsedJobRequest::Offchain(JobRequest {
                containers: vec!["a".into()],
                data: Map::new(),
                requires_proof: None
            })
        );
    }

    #[test]
    fn parse_errors_name_the_field() {
        let err = ParsedJobRequest::from_json(&json!({"containers": ["a", 3], "data": {}}).to_string())
            .unwrap_err()
            .to_string();
        assert!(err.contains("containers[1]"), "{err}");
        let err = ParsedJobRequest::from_json(&json!({"containers": ["a"], "data": [1]}).to_string())
            .unwrap_err()
            .to_string();
        assert!(err.contains("data"), "{err}");
        let err = ParsedJobRequest::from_json(&json!({"containers": ["a"]}).to_string())
            .unwrap_err()
            .to_string();
        assert!(err.contains("missing field `data`"), "{err}");
        let err = ParsedJobRequest::from_json(&json!([1]).to_string())
            .unwrap_err()
            .to_string();
        assert!(err.contains("found an array"), "{err}");
    }

    /// `depth` levels of `{"a": …}`, the outermost included.
    fn nested(depth: usize) -> Value {
        (1..depth).fold(json!({}), |inner, _| json!({ "a": inner }))
    }

    #[test]
    fn nesting_depth_counts_objects_and_arrays() {
        assert!(!nested_deeper_than(&json!(1), 0));
        assert!(nested_deeper_than(&json!([]), 0));
        assert!(!nested_deeper_than(&json!([]), 1));
        assert!(nested_deeper_than(&json!([[1]]), 1));
        assert!(!nested_deeper_than(&json!({"a": [1], "b": {}}), 2));
        assert!(nested_deeper_than(&nested(5), 4));
        assert!(!nested_deeper_than(&nested(5), 5));
    }

    #[test]
    fn parse_refuses_data_too_deep_to_read_back_and_empty_pipelines() {
        let body = |data: Value| json!({"containers": ["a"], "data": data}).to_string();
        assert!(ParsedJobRequest::from_json(&body(nested(MAX_DATA_DEPTH))).is_ok());
        let err = ParsedJobRequest::from_json(&body(nested(MAX_DATA_DEPTH + 1)))
            .unwrap_err()
            .to_string();
        assert!(err.contains("data: nested deeper than 100 levels"), "{err}");
        let err = ParsedJobRequest::from_json(&json!({"containers": [], "data": {}}).to_string())
            .unwrap_err()
            .to_string();
        assert!(err.contains("containers: name at least one container"), "{err}");
    }

    #[test]
    fn parse_delegated_names_the_bad_field() {
        let parsed = ParsedJobRequest::from_json(
            &json!({"subscription": {"owner": "0x0"}, "signature": {"nonce": 1, "expiry": 9}, "data": {}}).to_string(),
        )
        .unwrap();
        let ParsedJobRequest::Delegated(body) = parsed else {
            panic!("not delegated")
        };
        assert_eq!(body.expiry, Some(9));
        assert_eq!(body.subscription, json!({"owner": "0x0"}));
        let err = body.parse().unwrap_err().to_string();
        assert!(err.contains("subscription.owner"), "{err}");
    }
}
