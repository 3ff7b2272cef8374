//! The gateway's own 400, 405, 408 and 431 answers to refused heads, carrying the configured
//! security headers rather than Pingora's bare ones.

use super::Refusal;
use crate::gateway::security_headers::{self, Prepared};
use pingora::http::ResponseHeader;

/// The refusals as bytes on the wire, built once: JSON bodies of the documented error shape, the
/// configured security headers, `Connection: close`, and no `Server`.
pub struct LocalAnswers {
    bad_request: Box<[u8]>,
    connect: Box<[u8]>,
    timeout: Box<[u8]>,
    too_large: Box<[u8]>,
}

impl LocalAnswers {
    pub fn new(security_headers: &Prepared) -> Self {
        let sh = security_headers;
        LocalAnswers {
            bad_request: answer(400, "bad_request", "malformed request", None, sh),
            connect: answer(
                405,
                "method_not_allowed",
                "CONNECT is not supported",
                Some(("Allow", "GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS")),
                sh,
            ),
            timeout: answer(
                408,
                "request_timeout",
                "request headers took too long",
                None,
                sh,
            ),
            // The same body as the 431 of `request_filter`.
            too_large: answer(
                431,
                "headers_too_large",
                "request headers are too large",
                None,
                sh,
            ),
        }
    }

    pub fn get(&self, why: Refusal) -> &[u8] {
        match why {
            Refusal::BadRequest => &self.bad_request,
            Refusal::Connect => &self.connect,
            Refusal::Timeout => &self.timeout,
            Refusal::TooLarge => &self.too_large,
        }
    }
}

fn answer(
    status: u16,
    code: &str,
    message: &str,
    extra: Option<(&'static str, &'static str)>,
    security: &Prepared,
) -> Box<[u8]> {
    let body = serde_json::json!({ "error": code, "message": message }).to_string();
    let reason = http::StatusCode::from_u16(status)
        .ok()
        .and_then(|s| s.canonical_reason())
        .unwrap_or("Error");
    let mut out = format!("HTTP/1.1 {status} {reason}\r\n").into_bytes();
    if let Ok(mut h) = ResponseHeader::build(status, Some(8)) {
        // Fixed names and values: these inserts cannot fail.
        let _ = h.insert_header(http::header::CONTENT_TYPE, "application/json");
        let _ = h.insert_header(http::header::CONTENT_LENGTH, body.len().to_string());
        let _ = h.insert_header(http::header::CONNECTION, "close");
        if let Some((name, value)) = extra {
            let _ = h.insert_header(name, value);
        }
        security_headers::apply(&mut h, security);
        h.header_to_h1_wire(&mut out);
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(body.as_bytes());
    out.into_boxed_slice()
}
