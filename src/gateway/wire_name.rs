//! Header names the gateway adds to every request or response, parsed once with their spelling
//! on the wire, so that adding one parses and allocates nothing (Pingora's `insert_header`
//! does both per call; `vendor/README.md`).

use bytes::Bytes;
use http::{HeaderName, HeaderValue};
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::{ErrorType, OrErr as _};

/// A header name parsed once (`name`) and as it goes out (`wire`).
#[derive(Debug, Clone)]
pub struct WireName {
    pub name: HeaderName,
    pub wire: Bytes,
}

impl WireName {
    /// `lower` in lower case (as `http` stores names), `wire` the same name as sent.
    pub const fn from_static(lower: &'static str, wire: &'static str) -> Self {
        WireName {
            name: HeaderName::from_static(lower),
            wire: Bytes::from_static(wire.as_bytes()),
        }
    }

    /// A configured name: `name` parsed from `wire` at config load. Both are kept in memory
    /// that lives as long as the process ([`leak`]), so that adding the header per request
    /// copies two words instead of counting references atomically.
    pub fn new(name: &HeaderName, wire: &str) -> Self {
        debug_assert!(name.as_str().eq_ignore_ascii_case(wire));
        let lower: &'static str = Box::leak(name.as_str().into());
        WireName {
            // A valid lower-case name already: `from_static` cannot panic on it.
            name: HeaderName::from_static(lower),
            wire: leak(wire.as_bytes()),
        }
    }
}

/// `bytes` copied once into memory that lives as long as the process. A `Bytes` over a
/// `'static` slice is cloned and dropped by copying two words; one over a heap buffer counts
/// references with an atomic operation each time, which on the per-request path is a pipeline
/// stall per header. Only for the handful of configured header names and values, made once
/// when the gateway starts (a few hundred bytes in all).
fn leak(bytes: &[u8]) -> Bytes {
    Bytes::from_static(Box::leak(bytes.into()))
}

/// A configured header value in process-lifetime memory ([`leak`]), so that per-request
/// clones are free.
pub fn static_value(v: &HeaderValue) -> HeaderValue {
    HeaderValue::from_maybe_shared(leak(v.as_bytes())).unwrap_or_else(|_| v.clone())
}

pub const X_FORWARDED_FOR: WireName = WireName::from_static("x-forwarded-for", "X-Forwarded-For");
pub const X_FORWARDED_PROTO: WireName =
    WireName::from_static("x-forwarded-proto", "X-Forwarded-Proto");
pub const X_FORWARDED_HOST: WireName =
    WireName::from_static("x-forwarded-host", "X-Forwarded-Host");
pub const X_REQUEST_ID: WireName = WireName::from_static("x-request-id", "X-Request-Id");

fn value(v: impl TryInto<HeaderValue>) -> pingora::Result<HeaderValue> {
    v.try_into()
        .explain_err(ErrorType::InvalidHTTPHeader, |_| "invalid header value")
}

/// Set `name` on a request to `v` alone (every earlier value is replaced).
pub fn set_request(
    req: &mut RequestHeader,
    name: &WireName,
    v: impl TryInto<HeaderValue>,
) -> pingora::Result<()> {
    req.insert_parsed_header(&name.name, &name.wire, value(v)?)
}

/// Set `name` on a response to `v` alone (every earlier value is replaced).
pub fn set_response(
    resp: &mut ResponseHeader,
    name: &WireName,
    v: impl TryInto<HeaderValue>,
) -> pingora::Result<()> {
    resp.insert_parsed_header(&name.name, &name.wire, value(v)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_parsed_name_goes_out_as_spelled_and_replaces_earlier_values() {
        let mut req = RequestHeader::build("GET", b"/", None).unwrap();
        req.append_header("x-forwarded-for", "10.0.0.1").unwrap();
        req.append_header("X-FORWARDED-FOR", "10.0.0.2").unwrap();
        set_request(&mut req, &X_FORWARDED_FOR, "127.0.0.1").unwrap();
        let all: Vec<_> = req.headers.get_all("x-forwarded-for").iter().collect();
        assert_eq!(all, ["127.0.0.1"]);
        let mut wire = Vec::new();
        req.header_to_h1_wire(&mut wire);
        assert_eq!(wire, b"X-Forwarded-For: 127.0.0.1\r\n");

        let parsed: HeaderName = "X-Remote-USER".parse().unwrap();
        let custom = WireName::new(&parsed, "X-Remote-USER");
        assert_eq!(custom.name, parsed);
        let mut resp = ResponseHeader::build(200, None).unwrap();
        let configured = HeaderValue::from_str("alice; max-age=1").unwrap();
        set_response(&mut resp, &custom, static_value(&configured)).unwrap();
        let mut wire = Vec::new();
        resp.header_to_h1_wire(&mut wire);
        assert_eq!(wire, b"X-Remote-USER: alice; max-age=1\r\n");
        assert_eq!(resp.headers.get("x-remote-user"), Some(&configured));
        assert!(set_response(&mut resp, &custom, "bad\nvalue").is_err());
    }

    #[test]
    fn making_room_keeps_every_header_in_order_and_as_spelled() {
        let mut req = RequestHeader::build("GET", b"/", None).unwrap();
        req.append_header("Host", "app").unwrap();
        req.append_header("cOOkie", "a=1").unwrap();
        req.append_header("cOOkie", "b=2").unwrap();
        req.reserve(8).unwrap();
        for (i, name) in [
            X_FORWARDED_FOR,
            X_FORWARDED_PROTO,
            X_FORWARDED_HOST,
            X_REQUEST_ID,
        ]
        .iter()
        .enumerate()
        {
            set_request(&mut req, name, i.to_string()).unwrap();
        }
        let mut wire = Vec::new();
        req.header_to_h1_wire(&mut wire);
        assert_eq!(
            String::from_utf8(wire).unwrap(),
            "Host: app\r\ncOOkie: a=1\r\ncOOkie: b=2\r\nX-Forwarded-For: 0\r\n\
             X-Forwarded-Proto: 1\r\nX-Forwarded-Host: 2\r\nX-Request-Id: 3\r\n"
        );
    }
}
