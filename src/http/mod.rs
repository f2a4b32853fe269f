//! The JSON HTTP API, shaped like ProWebLook's, on the same port as gRPC: routes
//! (`handlers`, `sse`), their bodies (`types`), authentication extractors (`auth`) and
//! the error response (`error`). Routes and the OpenAPI document come from one list.
use std::sync::Arc;

use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::service::ValidationService;

mod auth;
mod error;
mod handlers;
mod sse;
mod types;

pub use types::{ErrorBody, ResultJson};

/// Largest request accepted: 1,000 entries of 256 characters fit with room to spare.
pub const MAX_BODY_BYTES: usize = 1024 * 1024;

#[derive(OpenApi)]
#[openapi(info(
    title = "wavalidate JSON API",
    description = "ProWebLook-compatible WhatsApp number validation, served beside gRPC on the same port."
))]
struct ApiDoc;

async fn not_found() -> Response {
    (
        axum::http::StatusCode::NOT_FOUND,
        Json(ErrorBody {
            error: "no such endpoint: see /openapi.json".into(),
            ..Default::default()
        }),
    )
        .into_response()
}

/// The JSON routes and `/openapi.json`, documenting exactly the routes served.
pub fn router(core: Arc<ValidationService>) -> Router {
    let (router, openapi) = OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(handlers::check_get, handlers::check_post))
        .routes(routes!(handlers::submit))
        .routes(routes!(handlers::poll))
        .routes(routes!(sse::events))
        .routes(routes!(handlers::cancel))
        .routes(routes!(handlers::list))
        .routes(routes!(handlers::balance))
        .split_for_parts();
    let openapi = Arc::new(openapi);
    router
        .route(
            "/openapi.json",
            get(move || {
                let openapi = openapi.clone();
                async move { Json(openapi.as_ref().clone()) }
            }),
        )
        .fallback(not_found)
        .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(core)
}
