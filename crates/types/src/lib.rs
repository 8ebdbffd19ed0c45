//! Wire types and protocol facts of Infernet, with no I/O.
//!
//! Everything here is what clients, containers and contracts observe: the JSON shapes of the REST
//! API and of the container contract (`POST /service_output`), and the on-chain container-id hash.
//! Field order in the structs is alphabetical where it reaches a client, because Ritual's node
//! answers with sorted keys and some clients compare bodies textually.

mod container_id;
mod delegated;
mod hardware;
mod job;
pub mod link;
mod receipt;
pub mod settings;
mod subscription;

pub use container_id::{container_set_hash, container_set_string};
pub use delegated::{DelegateSignature, DelegatedError, DelegatedRequest};
pub use hardware::{GpuModel, Hardware};
pub use job::{
    ContainerInput, ContainerResult, DelegatedBody, JobLocation, JobRequest, JobResult, JobStatus, MAX_DATA_DEPTH,
    ParsedJobRequest, RequestError, StatusReport, kind_of, nested_deeper_than,
};
pub use receipt::{RECEIPT_MAC_TRAILER, RECEIPT_SUBJECT, RECEIPT_TRAILER, RECEIPT_TRAILERS, Receipt};
pub use subscription::{CANCELLED, Subscription};
