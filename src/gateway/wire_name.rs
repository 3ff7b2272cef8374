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

    /// A configured name: `name` parsed from `wire` at config load.
    pub fn new(name: HeaderName, wire: &str) -> Self {
        debug_assert!(name.as_str().eq_ignore_ascii_case(wire));
        WireName {
            name,
            wire: Bytes::copy_from_slice(wire.as_bytes()),
        }
    }
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

        let custom = WireName::new(HeaderName::from_static("x-remote-user"), "X-Remote-USER");
        let mut resp = ResponseHeader::build(200, None).unwrap();
        set_response(&mut resp, &custom, "alice").unwrap();
        let mut wire = Vec::new();
        resp.header_to_h1_wire(&mut wire);
        assert_eq!(wire, b"X-Remote-USER: alice\r\n");
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
