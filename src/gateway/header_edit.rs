//! Header edits on the plain `http` map.
//!
//! Pingora's request and response headers keep a second map with the original spelling of
//! every name, and each `insert_header` parses the name again and updates both maps, which
//! also grow on the first insert after Pingora clones them. On the proxied path the gateway
//! adds up to seven request headers and the security headers on every response, so it takes
//! the `http` parts out, edits the one map with names parsed at start-up, and puts them back.
//! Headers then go out with lower-case names (title case for Pingora's few well-known ones),
//! as they do over HTTP/2 and from HAProxy and Envoy; HTTP header names are case-insensitive
//! (RFC 9110, section 5.1).

use http::{HeaderMap, HeaderName};
use pingora::http::{RequestHeader, ResponseHeader};

pub const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
pub const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
pub const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
pub const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Run `edit` on `req`'s header map. The request target is kept byte for byte.
pub fn request<T>(
    req: &mut RequestHeader,
    edit: impl FnOnce(&mut HeaderMap) -> T,
) -> pingora::Result<T> {
    // Origin-form targets round-trip through the URI; any other form (absolute, or not
    // UTF-8) is set again from its raw bytes.
    let raw_target = {
        let from_uri = req.uri.path_and_query().map(|p| p.as_str().as_bytes());
        (from_uri != Some(req.raw_path())).then(|| req.raw_path().to_vec())
    };
    let blank = RequestHeader::from(http::Request::new(()).into_parts().0);
    let mut parts: http::request::Parts = std::mem::replace(req, blank).into();
    let out = edit(&mut parts.headers);
    *req = RequestHeader::from(parts);
    if let Some(target) = raw_target {
        req.set_raw_path(&target)?;
    }
    Ok(out)
}

/// Run `edit` on `resp`'s header map. A non-standard reason phrase is kept.
pub fn response<T>(
    resp: &mut ResponseHeader,
    edit: impl FnOnce(&mut HeaderMap) -> T,
) -> pingora::Result<T> {
    let reason = resp
        .get_reason_phrase()
        .filter(|r| Some(*r) != resp.status.canonical_reason())
        .map(str::to_owned);
    let blank = ResponseHeader::from(http::Response::new(()).into_parts().0);
    let mut parts: http::response::Parts = std::mem::replace(resp, blank).into();
    let out = edit(&mut parts.headers);
    *resp = ResponseHeader::from(parts);
    if reason.is_some() {
        resp.set_reason_phrase(reason.as_deref())?;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn wire_request(req: &RequestHeader) -> String {
        let mut buf = Vec::new();
        req.header_to_h1_wire(&mut buf);
        String::from_utf8(buf).unwrap()
    }

    #[test]
    fn request_edits_keep_method_target_and_other_headers() {
        for target in [
            &b"/a/b?x=1&y=%20"[..],
            b"http://app.test/abs?q",
            b"/caf\xc3\xa9",
            b"/raw\xff",
        ] {
            let mut req = RequestHeader::build("POST", target, None).unwrap();
            req.append_header("Accept", "text/html").unwrap();
            req.append_header("Accept", "*/*").unwrap();
            req.append_header("Host", "app.test").unwrap();
            let before = req.raw_path().to_vec();
            request(&mut req, |h| {
                h.insert(X_REQUEST_ID, HeaderValue::from_static("r1"));
                h.remove("host");
            })
            .unwrap();
            assert_eq!(req.raw_path(), &before[..], "{target:?}");
            assert_eq!(req.method, "POST");
            let accept: Vec<_> = req.headers.get_all("accept").iter().collect();
            assert_eq!(accept, ["text/html", "*/*"]);
            assert_eq!(req.headers.get("x-request-id").unwrap(), "r1");
            assert!(req.headers.get("host").is_none());
            // One map again: every header is written, once.
            let wire = wire_request(&req);
            assert_eq!(wire.matches("\r\n").count(), 3, "{wire}");
            assert!(wire.contains("x-request-id: r1\r\n"), "{wire}");
            // Later inserts through Pingora's API still work.
            req.insert_header("X-Later", "1").unwrap();
            assert!(wire_request(&req).contains("x-later: 1\r\n"));
        }
    }

    #[test]
    fn response_edits_keep_status_and_reason() {
        let mut resp = ResponseHeader::build(299, None).unwrap();
        resp.set_reason_phrase(Some("Mostly Fine")).unwrap();
        resp.append_header("Set-Cookie", "a=1").unwrap();
        response(&mut resp, |h| {
            h.append("set-cookie", HeaderValue::from_static("b=2"));
        })
        .unwrap();
        assert_eq!(resp.status, 299);
        assert_eq!(resp.get_reason_phrase(), Some("Mostly Fine"));
        let cookies: Vec<_> = resp.headers.get_all("set-cookie").iter().collect();
        assert_eq!(cookies, ["a=1", "b=2"]);
        let mut ok = ResponseHeader::build(404, None).unwrap();
        response(&mut ok, |_| ()).unwrap();
        assert_eq!(ok.get_reason_phrase(), Some("Not Found"));
    }
}
