use super::headers::varies_by_origin;
use super::*;
use http::header::{
    ACCESS_CONTROL_ALLOW_HEADERS, ACCESS_CONTROL_ALLOW_METHODS, ACCESS_CONTROL_MAX_AGE,
};
use pingora::http::ResponseHeader;
use std::time::Duration;

fn cors(origins: &[&str], any: bool, credentials: bool) -> Cors {
    Cors {
        allowed_origins: origins.iter().map(|o| o.to_string()).collect(),
        any_origin: any,
        allow_credentials: credentials,
        allowed_methods: vec![Method::GET, Method::POST, Method::PUT],
        allowed_headers: vec![
            HeaderName::from_static("content-type"),
            HeaderName::from_static("x-csrf-token"),
        ],
        expose_headers: vec![HeaderName::from_static("x-request-id")],
        max_age: Duration::from_secs(600),
    }
}

fn request(method: &str, headers: &[(&str, &str)]) -> RequestHeader {
    let mut r = RequestHeader::build(method, b"/api/x", None).unwrap();
    for (k, v) in headers {
        r.append_header(k.to_string(), *v).unwrap();
    }
    r
}

fn header<'a>(resp: &'a LocalResponse, name: &HeaderName) -> Option<&'a str> {
    resp.headers
        .iter()
        .find(|(n, _)| n == name)
        .and_then(|(_, v)| v.to_str().ok())
}

#[test]
fn origins_compare_exactly_ignoring_case() {
    let p = Policy::new(&cors(&["https://app.example.com"], false, true));
    assert!(p.allows(b"https://app.example.com"));
    assert!(p.allows(b"HTTPS://App.Example.COM"));
    for other in [
        "https://app.example.com:8443",
        "http://app.example.com",
        "https://app.example.com/",
        "https://app.example.com.evil.test",
        "https://evil.app.example.com",
        "https://app.example.co",
        "null",
        "",
    ] {
        assert!(!p.allows(other.as_bytes()), "{other}");
    }
}

#[test]
fn any_origin_never_allows_null_unless_listed() {
    let p = Policy::new(&cors(&[], true, false));
    assert!(p.allows(b"https://anything.test"));
    assert!(!p.allows(b"null"));
    assert!(!p.allows(b"NULL"));
    assert!(!p.allows(b""));
    assert!(!p.allows(b"https://a.test \xff"));
    let listed = Policy::new(&cors(&["null"], false, false));
    assert!(listed.allows(b"null"));
}

#[test]
fn several_origin_headers_are_not_one_allowed_origin() {
    let p = Policy::new(&cors(&["https://a.test"], false, false));
    let one = request("GET", &[("Origin", "https://a.test")]);
    assert_eq!(p.allowed_origin(&one.headers).unwrap(), "https://a.test");
    let two = request(
        "GET",
        &[("Origin", "https://a.test"), ("Origin", "https://a.test")],
    );
    assert!(p.allowed_origin(&two.headers).is_none());
    assert!(p.allowed_origin(&request("GET", &[]).headers).is_none());
}

#[test]
fn preflight_shape() {
    assert!(is_preflight(&request(
        "OPTIONS",
        &[
            ("Origin", "https://a.test"),
            ("Access-Control-Request-Method", "PUT")
        ]
    )));
    assert!(!is_preflight(&request(
        "OPTIONS",
        &[("Origin", "https://a.test")]
    )));
    assert!(!is_preflight(&request(
        "OPTIONS",
        &[("Access-Control-Request-Method", "PUT")]
    )));
    assert!(!is_preflight(&request(
        "GET",
        &[
            ("Origin", "https://a.test"),
            ("Access-Control-Request-Method", "PUT")
        ]
    )));
}

#[test]
fn preflight_answers() {
    let p = Policy::new(&cors(&["https://a.test"], false, true));
    let ok = p.preflight(&request(
        "OPTIONS",
        &[
            ("Origin", "https://a.test"),
            ("Access-Control-Request-Method", "PUT"),
            (
                "Access-Control-Request-Headers",
                "X-CSRF-Token, x-evil,content-type",
            ),
        ],
    ));
    assert_eq!(ok.status, 204);
    assert!(ok.body.is_empty());
    assert_eq!(
        header(&ok, &ACCESS_CONTROL_ALLOW_METHODS),
        Some("GET, POST, PUT")
    );
    assert_eq!(
        header(&ok, &ACCESS_CONTROL_ALLOW_HEADERS),
        Some("X-CSRF-Token, content-type"),
        "only the allowed ones among those asked for"
    );
    assert_eq!(header(&ok, &ACCESS_CONTROL_MAX_AGE), Some("600"));
    // No headers asked for: the configured list.
    let plain = p.preflight(&request(
        "OPTIONS",
        &[
            ("Origin", "https://a.test"),
            ("Access-Control-Request-Method", "GET"),
        ],
    ));
    assert_eq!(
        header(&plain, &ACCESS_CONTROL_ALLOW_HEADERS),
        Some("content-type, x-csrf-token")
    );
    // Only disallowed ones asked for: none granted.
    let evil = p.preflight(&request(
        "OPTIONS",
        &[
            ("Origin", "https://a.test"),
            ("Access-Control-Request-Method", "GET"),
            ("Access-Control-Request-Headers", "x-evil"),
        ],
    ));
    assert_eq!(header(&evil, &ACCESS_CONTROL_ALLOW_HEADERS), None);
    let refused = p.preflight(&request(
        "OPTIONS",
        &[
            ("Origin", "https://b.test"),
            ("Access-Control-Request-Method", "GET"),
        ],
    ));
    assert_eq!(refused.status, 403);
    assert!(!refused
        .headers
        .iter()
        .any(|(n, _)| n.as_str().starts_with("access-control-")));
}

#[test]
fn wildcard_request_headers_echo_what_was_asked() {
    let mut c = cors(&["https://a.test"], false, false);
    c.allowed_headers = vec![HeaderName::from_static("*")];
    let p = Policy::new(&c);
    let r = p.preflight(&request(
        "OPTIONS",
        &[
            ("Origin", "https://a.test"),
            ("Access-Control-Request-Method", "GET"),
            ("Access-Control-Request-Headers", "x-one,x-two"),
        ],
    ));
    assert_eq!(
        header(&r, &ACCESS_CONTROL_ALLOW_HEADERS),
        Some("x-one, x-two")
    );
}

fn upstream_response() -> ResponseHeader {
    let mut r = ResponseHeader::build(200, None).unwrap();
    r.append_header("Access-Control-Allow-Origin", "*").unwrap();
    r.append_header("access-control-allow-methods", "DELETE")
        .unwrap();
    r.append_header("Vary", "Accept-Encoding").unwrap();
    r.append_header("Content-Type", "text/plain").unwrap();
    r
}

#[test]
fn proxied_answer_to_an_allowed_origin() {
    let p = Policy::new(&cors(&["https://a.test"], false, true));
    let mut resp = upstream_response();
    let req = request("GET", &[("Origin", "https://a.test")]);
    apply(&mut resp, &p, &req, true);
    let h = &resp.headers;
    assert_eq!(
        h.get("access-control-allow-origin").unwrap(),
        "https://a.test"
    );
    assert_eq!(h.get("access-control-allow-credentials").unwrap(), "true");
    assert_eq!(
        h.get("access-control-expose-headers").unwrap(),
        "x-request-id"
    );
    assert!(
        h.get("access-control-allow-methods").is_none(),
        "upstream's dropped"
    );
    let vary: Vec<_> = h.get_all("vary").iter().collect();
    assert_eq!(vary, ["Accept-Encoding", "Origin"]);
    assert_eq!(h.get_all("access-control-allow-origin").iter().count(), 1);
    let mut wire = Vec::new();
    resp.header_to_h1_wire(&mut wire);
    let wire = String::from_utf8(wire).unwrap();
    assert!(wire.contains("\r\nVary: Origin\r\n"), "{wire}");
    assert!(
        wire.contains("Access-Control-Allow-Origin: https://a.test\r\n"),
        "{wire}"
    );
}

#[test]
fn proxied_answer_to_another_origin_has_no_cors_header() {
    let p = Policy::new(&cors(&["https://a.test"], false, true));
    for req in [
        request("GET", &[("Origin", "https://b.test")]),
        request("GET", &[]),
    ] {
        let mut resp = upstream_response();
        apply(&mut resp, &p, &req, true);
        assert!(!resp
            .headers
            .keys()
            .any(|n| n.as_str().starts_with("access-control-")));
        assert!(varies_by_origin(&resp.headers));
    }
}

#[test]
fn vary_is_not_repeated() {
    let p = Policy::new(&cors(&["https://a.test"], false, false));
    let req = request("GET", &[("Origin", "https://a.test")]);
    for existing in ["origin", "Accept, Origin", "*"] {
        let mut resp = ResponseHeader::build(200, None).unwrap();
        resp.append_header("Vary", existing).unwrap();
        apply(&mut resp, &p, &req, true);
        let vary: Vec<_> = resp.headers.get_all("vary").iter().collect();
        assert_eq!(vary, [existing]);
        assert!(resp
            .headers
            .get("access-control-allow-credentials")
            .is_none());
    }
}

#[test]
fn local_answers_keep_the_gateways_preflight_headers() {
    let p = Policy::new(&cors(&["https://a.test"], false, false));
    let req = request(
        "OPTIONS",
        &[
            ("Origin", "https://a.test"),
            ("Access-Control-Request-Method", "GET"),
        ],
    );
    let mut resp = ResponseHeader::build(204, None).unwrap();
    resp.append_header("Access-Control-Max-Age", "600").unwrap();
    apply(&mut resp, &p, &req, false);
    assert_eq!(resp.headers.get("access-control-max-age").unwrap(), "600");
    assert_eq!(
        resp.headers.get("access-control-allow-origin").unwrap(),
        "https://a.test"
    );
    assert!(
        resp.headers.get("access-control-expose-headers").is_none(),
        "nothing to expose on a preflight answer"
    );
}

#[test]
fn policies_pick_the_route_or_auth_block() {
    let mut ps = Policies {
        auth: Some(Policy::new(&cors(&["https://auth.test"], false, false))),
        routes: vec![
            None,
            Some(Policy::new(&cors(&["https://r.test"], false, false))),
        ],
    };
    assert!(ps.for_answer(Some(0), "none").is_none());
    assert!(ps
        .for_answer(Some(1), "none")
        .unwrap()
        .allows(b"https://r.test"));
    assert!(ps.for_answer(Some(7), "none").is_none());
    assert!(ps
        .for_answer(None, "auth")
        .unwrap()
        .allows(b"https://auth.test"));
    assert!(ps.for_answer(None, "probe").is_none());
    let pre = request(
        "OPTIONS",
        &[
            ("Origin", "https://r.test"),
            ("Access-Control-Request-Method", "GET"),
        ],
    );
    assert!(ps.preflight(Some(0), &pre).is_none(), "no cors: as before");
    assert_eq!(ps.preflight(Some(1), &pre).unwrap().status, 204);
    assert_eq!(ps.preflight(None, &pre).unwrap().status, 403);
    assert!(ps.preflight(Some(1), &request("GET", &[])).is_none());
    ps.auth = None;
    assert!(ps.preflight(None, &pre).is_none());
}
