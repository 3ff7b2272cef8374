//! `/auth/*`: the endpoints the gateway answers itself.
//!
//! - `response.rs`: the one place decisions become HTTP responses

pub mod response;

use crate::gateway::{AppState, RequestCtx};
use bytes::{Bytes, BytesMut};
use pingora::proxy::Session;
use response::{send, LocalResponse};

/// Why a request body could not be read.
#[derive(Debug, PartialEq, Eq)]
pub enum BodyError {
    TooLarge,
    Unreadable,
}

/// Read the whole request body, refusing more than `limit` bytes (checked against
/// `Content-Length` first, then while reading a chunked body).
pub async fn read_body(session: &mut Session, limit: usize) -> Result<Bytes, BodyError> {
    let declared = session
        .req_header()
        .headers
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(BodyError::TooLarge);
    }
    let mut buf = BytesMut::new();
    loop {
        match session.read_request_body().await {
            Ok(Some(chunk)) => {
                if buf.len() + chunk.len() > limit {
                    return Err(BodyError::TooLarge);
                }
                buf.extend_from_slice(&chunk);
            }
            Ok(None) => return Ok(buf.freeze()),
            Err(_) => return Err(BodyError::Unreadable),
        }
    }
}

/// Answer a request under `/auth/`.
pub async fn handle(
    state: &AppState,
    session: &mut Session,
    ctx: &mut RequestCtx,
    path: &str,
) -> pingora::Result<bool> {
    // Every endpoint here reads at most a small body: refuse big ones before anything else.
    let resp = match read_body(session, state.config.limits.max_auth_body_bytes).await {
        Err(BodyError::TooLarge) => {
            // The rest of the body is never read: do not reuse the connection.
            session.set_keepalive(None);
            LocalResponse::error(413, "payload_too_large", "the request body is too large")
        }
        Err(BodyError::Unreadable) => {
            LocalResponse::error(400, "bad_request", "the request body could not be read")
        }
        Ok(_body) => LocalResponse::error(404, "not_found", &format!("no endpoint {path}")),
    };
    send(session, ctx, state, resp.no_store()).await
}
