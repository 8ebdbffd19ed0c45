//! The OpenAPI document, generated from the handlers and types.

use axum::Json;
use utoipa::OpenApi;

/// OpenAPI description of the node's REST API.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "Infernet node",
        description = "Off-chain jobs, results and node status (Ritual Infernet 1.4 compatible)"
    ),
    paths(
        super::info::health,
        super::info::info,
        super::info::resources,
        super::jobs::create,
        super::jobs::batch,
        super::jobs::stream,
        super::jobs::results,
        super::jobs::cancel,
        super::jobs::status,
    ),
    components(schemas(
        infernet_types::JobRequest,
        infernet_types::JobResult,
        infernet_types::JobStatus,
        infernet_types::ContainerResult,
        infernet_types::ContainerInput,
        infernet_types::StatusReport,
        super::jobs::JobsAnswer,
    ))
)]
pub struct ApiDoc;

/// `GET /openapi.json`.
pub(super) async fn document() -> Json<utoipa::openapi::OpenApi> {
    Json(ApiDoc::openapi())
}
