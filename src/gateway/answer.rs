//! Writing the gateway's own answers to the client, decorated like proxied ones: the route's
//! security headers, CORS headers where a policy applies, `X-Request-Id`, pending cookies.

use super::wire_name::{set_response, X_REQUEST_ID};
use super::{cors, security_headers};
use super::{AppState, RequestCtx};
use crate::respond::{self, spelled, BodyError, LocalResponse};
use bytes::{Bytes, BytesMut};
use http::header::CONTENT_LENGTH;
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::proxy::Session;
use pingora::{Error, ErrorSource, ErrorType};

/// The headers every answer the gateway writes itself gets, like a proxied one would in
/// `response_filter`: the security headers of its route (or the global ones), and the CORS
/// headers of its route or of `/auth/*` when a `cors` block applies there.
fn decorate(header: &mut ResponseHeader, ctx: &RequestCtx, state: &AppState, req: &RequestHeader) {
    let set = state
        .route_security_headers
        .pick(ctx.route, &state.security_headers);
    security_headers::apply(header, set);
    if let Some(policy) = state.cors.for_answer(ctx.route, ctx.label) {
        cors::apply(header, policy, req, false);
    }
}

/// Write `resp` to the client with the security headers applied. Always returns `Ok(true)`
/// ("answered") for `request_filter`, unless the client is gone.
pub async fn send(
    session: &mut Session,
    ctx: &mut RequestCtx,
    state: &AppState,
    resp: LocalResponse,
) -> pingora::Result<bool> {
    let mut header = ResponseHeader::build(resp.status, Some(resp.headers.len() + 8))?;
    for (name, value) in resp.headers {
        header.append_header(spelled(&name), value)?;
    }
    for value in ctx.set_cookies.drain(..) {
        header.append_header(http::header::SET_COOKIE, value)?;
    }
    // Neither has a body: a 204 must not carry Content-Length (RFC 9110), a 304 needs none.
    if !matches!(resp.status, 204 | 304) {
        header.insert_header(CONTENT_LENGTH, resp.body.len().to_string())?;
    }
    set_response(&mut header, &X_REQUEST_ID, ctx.id.as_str())?;
    decorate(&mut header, ctx, state, session.req_header());
    ctx.local_status = Some(resp.status);
    let head_only = session.req_header().method == http::Method::HEAD;
    let empty = resp.body.is_empty() || head_only;
    session
        .write_response_header(Box::new(header), empty)
        .await?;
    if !empty {
        session.write_response_body(Some(resp.body), true).await?;
    }
    Ok(true)
}

/// Read the whole request body, refusing more than `limit` bytes (checked against
/// `Content-Length` first, then while reading a chunked body).
pub async fn read_body(session: &mut Session, limit: usize) -> Result<Bytes, BodyError> {
    let declared = session
        .req_header()
        .headers
        .get(CONTENT_LENGTH)
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

/// The status for a request Pingora could not proxy (0: the client is gone, nothing to
/// answer), and the answer when none was written yet.
pub async fn fail_to_proxy(
    s: &AppState,
    session: &mut Session,
    e: &Error,
    ctx: &mut RequestCtx,
) -> u16 {
    let code = match e.etype() {
        ErrorType::HTTPStatus(code) => *code,
        _ => match e.esource() {
            ErrorSource::Upstream => 502,
            ErrorSource::Downstream => match e.etype() {
                ErrorType::WriteError | ErrorType::ReadError | ErrorType::ConnectionClosed => 0,
                _ => 400,
            },
            ErrorSource::Internal | ErrorSource::Unset => 500,
        },
    };
    if code > 0 && session.response_written().is_none() {
        let _ = send(session, ctx, s, respond::proxy_failure(code)).await;
    }
    code
}
