//! `/auth/*`: the endpoints the gateway answers itself.
//!
//! - `login_page.rs`: the HTML form, `return_to` validation
//! - `session_routes.rs`: login (JSON and form), refresh, logout, logout-all, session

pub mod login_page;
pub mod session_routes;

use crate::gateway::answer::send;
use crate::gateway::{AppState, RequestCtx};
use crate::respond::LocalResponse;
use bytes::{Bytes, BytesMut};
use http::header::ALLOW;
use http::{HeaderValue, Method};
use pingora::proxy::Session;

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

fn method_not_allowed(allow: &'static str) -> LocalResponse {
    LocalResponse::error(405, "method_not_allowed", "method not allowed")
        .header(ALLOW, HeaderValue::from_static(allow))
}

/// Answer a request under `/auth/`.
pub async fn handle(
    state: &AppState,
    session: &mut Session,
    ctx: &mut RequestCtx,
    path: &str,
) -> pingora::Result<bool> {
    // A CORS preflight under the top-level `cors` block: answered before any endpoint logic.
    if let Some(r) = state.cors.preflight(None, session.req_header()) {
        return send(session, ctx, state, r.no_store()).await;
    }
    // Every endpoint here reads at most a small body: refuse big ones before anything else.
    let body = match read_body(session, state.config.limits.max_auth_body_bytes).await {
        Err(BodyError::TooLarge) => {
            // The rest of the body is never read: do not reuse the connection.
            session.set_keepalive(None);
            let r = LocalResponse::error(413, "payload_too_large", "the request body is too large");
            return send(session, ctx, state, r.no_store()).await;
        }
        Err(BodyError::Unreadable) => {
            let r = LocalResponse::error(400, "bad_request", "the request body could not be read");
            return send(session, ctx, state, r.no_store()).await;
        }
        Ok(body) => body,
    };
    let method = session.req_header().method.clone();
    let req = session.req_header();
    let resp = match (path, &method) {
        ("/auth/login", &Method::GET) => session_routes::login_page(state, req, ctx),
        ("/auth/login", &Method::POST) => session_routes::login(state, req, ctx, &body).await,
        ("/auth/login", _) => method_not_allowed("GET, POST"),
        ("/auth/refresh", &Method::POST) => session_routes::refresh(state, req, ctx, &body).await,
        ("/auth/logout", &Method::POST) => session_routes::logout(state, req, ctx, &body).await,
        ("/auth/logout-all", &Method::POST) => {
            session_routes::logout_all(state, req, ctx, &body).await
        }
        ("/auth/refresh" | "/auth/logout" | "/auth/logout-all", _) => method_not_allowed("POST"),
        ("/auth/session", &Method::GET) => session_routes::session_info(state, req).await,
        ("/auth/session", _) => method_not_allowed("GET"),
        _ => LocalResponse::error(404, "not_found", "no such endpoint"),
    };
    send(session, ctx, state, resp.no_store()).await
}
