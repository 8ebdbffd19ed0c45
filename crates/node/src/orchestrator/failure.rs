//! Why a container call failed, in the words a job's error gives its client.

use std::time::Duration;

use hyper::StatusCode;
use infernet_types::MAX_DATA_DEPTH;

use super::{
    Target,
    http::{CallError, Endpoint},
};

/// Longest error body excerpt put in a job error.
const EXCERPT: usize = 512;

/// Why a container call failed. Its text is the job's error, as clients read it.
#[derive(Debug, Clone, thiserror::Error)]
pub enum CallFailure {
    /// The job names a container this node does not have.
    #[error("container {id} is not configured on this node")]
    Unknown {
        /// Container id.
        id: String,
    },
    /// No connection could be made.
    #[error("container {id} is unreachable at {url}: {cause}")]
    Unreachable {
        /// Container id.
        id: String,
        /// Where it was called.
        url: String,
        /// The root cause.
        cause: String,
    },
    /// The call broke after the connection was made.
    #[error("container {id} call to {url} failed: {cause}")]
    Broken {
        /// Container id.
        id: String,
        /// Where it was called.
        url: String,
        /// The root cause.
        cause: String,
    },
    /// No (whole) answer within the container's timeout.
    #[error("container {id} did not answer within {}s", .timeout.as_secs_f64())]
    TimedOut {
        /// Container id.
        id: String,
        /// `containers[].timeout`.
        timeout: Duration,
    },
    /// A streaming container went silent for its timeout.
    #[error("container {id} sent nothing for {}s; stream abandoned", .timeout.as_secs_f64())]
    Silent {
        /// Container id.
        id: String,
        /// `containers[].timeout`.
        timeout: Duration,
    },
    /// A non-2xx answer.
    #[error("container {id} answered HTTP {status}: {excerpt}")]
    Refused {
        /// Container id.
        id: String,
        /// The answer's status code.
        status: u16,
        /// The start of its body.
        excerpt: String,
    },
    /// A 2xx answer whose body is not JSON.
    #[error("container {id} answered with a body that is not JSON: {excerpt}")]
    NotJson {
        /// Container id.
        id: String,
        /// The start of its body.
        excerpt: String,
    },
    /// More output than the container may send in one call.
    #[error(
        "container {id} sent more than {limit} bytes, the most one call may return (containers[].max_output_size); the call was dropped"
    )]
    TooLarge {
        /// Container id.
        id: String,
        /// `containers[].max_output_size`.
        limit: usize,
    },
    /// The node-wide budget for large answers is in use by other calls.
    #[error(
        "container {id} answered more than the node can buffer while other jobs use its buffer ({budget} bytes, server.max_buffered_bytes); the call was dropped: retry shortly"
    )]
    OverBudget {
        /// Container id.
        id: String,
        /// `server.max_buffered_bytes`.
        budget: u64,
    },
    /// A chain job found every slot of the container taken (`max_jobs`) for the container's
    /// whole timeout.
    #[error(
        "container {id} ran its max_jobs ({max_jobs}) jobs at once for {}s (containers[].timeout) and no slot came free; the job was not run", .waited.as_secs_f64()
    )]
    NoSlot {
        /// Container id.
        id: String,
        /// The container's `max_jobs`.
        max_jobs: u32,
        /// How long the job waited: `containers[].timeout`.
        waited: Duration,
    },
    /// JSON nested deeper than a stored job may hold.
    #[error("container {id} answered JSON nested deeper than {MAX_DATA_DEPTH} levels, more than the node can store")]
    TooDeep {
        /// Container id.
        id: String,
    },
}

impl CallFailure {
    pub(super) fn of(e: CallError, target: &Target, url: &Endpoint) -> Self {
        let (id, url) = (target.id.clone(), url.to_string());
        match e {
            CallError::Connect(cause) => Self::Unreachable { id, url, cause },
            CallError::Failed(cause) => Self::Broken { id, url, cause },
            CallError::TooLarge(limit) => Self::TooLarge { id, limit },
            CallError::OverBudget(budget) => Self::OverBudget { id, budget },
        }
    }

    /// A non-2xx answer with `body`.
    pub(super) fn refused(id: &str, status: StatusCode, body: &[u8]) -> Self {
        Self::Refused {
            id: id.to_string(),
            status: status.as_u16(),
            excerpt: excerpt(body),
        }
    }
}

/// The start of `body`, for an error message.
pub(super) fn excerpt(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(&body[..body.len().min(EXCERPT)]);
    let text = text.trim();
    if body.len() > EXCERPT {
        format!("{text}…")
    } else {
        text.to_string()
    }
}
