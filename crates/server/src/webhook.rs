//! `POST /hooks/github`: a delivery's body read once, under a memory budget, its
//! signature checked as it streams, then handed to the webhooks.

use crate::{error, AppState, MAX_DELIVERY};
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use kubeci_engine::api::{Backend, Delivery};
use std::sync::Arc;

/// `POST /hooks/github`: the delivery's headers and body, handed to the webhooks. A
/// delivery without a usable signature is refused before its body is read; a body is read
/// once, its signature checked as it arrives, and bodies being read together hold at most
/// [`DELIVERY_BUDGET`] bytes (others wait their turn), so forged deliveries cannot take
/// kubeci's memory.
pub(crate) async fn github_hook<B: Backend>(
    State(state): State<Arc<AppState<B>>>,
    request: axum::extract::Request,
) -> Response {
    let (parts, body) = request.into_parts();
    let header = |name: &str| {
        parts
            .headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let head = Delivery {
        event: header("x-github-event"),
        id: header("x-github-delivery"),
        signature: header("x-hub-signature-256"),
        body: Vec::new(),
        verified: false,
    };
    let answer = |answer: kubeci_engine::api::DeliveryAnswer| {
        (
            StatusCode::from_u16(answer.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            Json(answer.body),
        )
            .into_response()
    };
    let check = match state.webhooks.check_body(&head) {
        Ok(check) => check,
        Err(refusal) => return answer(refusal),
    };
    let declared = header("content-length").and_then(|l| l.parse::<usize>().ok());
    if declared.is_some_and(|l| l > MAX_DELIVERY) {
        return too_large();
    }
    let size = declared.unwrap_or(MAX_DELIVERY);
    let permits = u32::try_from(size.div_ceil(1024).max(1)).unwrap_or(u32::MAX);
    let Ok(_budget) = state.delivery_budget.acquire_many(permits).await else {
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            "shutting-down",
            "kubeci is stopping",
        );
    };
    let (bytes, verified) = match read_body(body, declared, check).await {
        Ok(read) => read,
        Err(refusal) => return refusal,
    };
    let delivery = Delivery {
        body: bytes,
        verified,
        ..head
    };
    answer(state.webhooks.deliver(delivery).await)
}

fn too_large() -> Response {
    error(
        StatusCode::PAYLOAD_TOO_LARGE,
        "payload-too-large",
        format!("a webhook delivery is at most {MAX_DELIVERY} bytes (GitHub's own limit)"),
    )
}

/// Reads a delivery's body (its `Content-Length`, else at most [`MAX_DELIVERY`] bytes) into
/// one buffer, feeding `check` as it arrives: the body, and whether `check` found it
/// genuine.
async fn read_body(
    body: axum::body::Body,
    declared: Option<usize>,
    mut check: Option<Box<dyn kubeci_engine::api::BodyCheck>>,
) -> Result<(Vec<u8>, bool), Response> {
    use futures_util::StreamExt;
    let size = declared.unwrap_or(MAX_DELIVERY);
    let mut bytes: Vec<u8> = Vec::with_capacity(declared.unwrap_or(0));
    let mut stream = body.into_data_stream();
    while let Some(chunk) = stream.next().await {
        let Ok(chunk) = chunk else {
            return Err(error(
                StatusCode::BAD_REQUEST,
                "body-unreadable",
                "the delivery's body could not be read",
            ));
        };
        if bytes.len() + chunk.len() > size.min(MAX_DELIVERY) {
            return Err(too_large());
        }
        if let Some(check) = check.as_mut() {
            check.update(&chunk);
        }
        bytes.extend_from_slice(&chunk);
    }
    Ok((bytes, check.is_some_and(|check| check.finish())))
}
