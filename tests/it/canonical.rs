//! Authorization on the canonical request: what the gateway routes on is exactly what the
//! upstream receives, hosts are canonical, refused targets never reach the upstream, unsafe
//! methods from other sites are refused, and error paths log no query string.

use crate::auth::{auth_gateway, login_json, Jar, PASSWORD};
use crate::harness::*;
use portcullis::gateway::canonical::parse_target;
use portcullis::gateway::routing::prefix_matches;
use proptest::prelude::*;
use proptest::test_runner::{Config as PropConfig, TestCaseError, TestRunner};

/// A gateway with a protected `/admin` route that keeps `;params` out (the default), a public
/// route that keeps them, a protected route on host `intranet.test`, and a public catch-all.
fn layout(up: &Upstream) -> Gateway {
    let dir = tempfile::tempdir().unwrap();
    Gateway::start_in(
        &format!(
            "upstreams:\n  app: {{ addresses: [\"{}\"] }}\nroutes:\n  - {{ host: intranet.test, path_prefix: /, upstream: app }}\n  - {{ path_prefix: /admin/, upstream: app }}\n  - {{ path_prefix: /keep/, upstream: app, auth: public, path_params: keep }}\n  - {{ path_prefix: /, upstream: app, auth: public }}\n",
            up.addr
        ),
        dir,
    )
}

fn send(gw: &Gateway, target: &[u8], host: Option<&str>) -> (u16, String) {
    let mut req = b"GET ".to_vec();
    req.extend_from_slice(target);
    req.extend_from_slice(b" HTTP/1.1\r\n");
    if let Some(h) = host {
        req.extend_from_slice(format!("Host: {h}\r\n").as_bytes());
    }
    req.extend_from_slice(b"Connection: close\r\n\r\n");
    raw(gw.port, &req).unwrap_or((0, String::new()))
}

/// The upstream's answer is `upstream:<port> <url>`; gateway answers never contain it.
fn reached_upstream(text: &str) -> bool {
    text.contains("upstream:")
}

#[test]
fn targets_without_one_meaning_are_refused_before_routing() {
    let up = Upstream::start();
    let gw = layout(&up);
    let refused: &[&[u8]] = &[
        b"admin/secret",
        b"%2Fadmin/secret",
        b"a:/admin/secret",
        b"*",
        b"/admin;x/secret",
        b"/admin;jsessionid=1/secret",
        b"/admin./secret",
        b"/admin%20/secret",
        b"/adm%C4%B1n/secret",
        b"/admin%2fsecret",
        b"/admin%5csecret",
        b"/admin%3bx/secret",
        b"/%252e%252e/admin/secret",
        b"/x/../../admin",
        b"/%C0%AFadmin",
        b"ftp://127.0.0.1/admin/secret",
        b"http://evil.test/admin/secret",
        b"#/admin/secret",
        b"/pub#/../admin/secret",
        b"/admin/secret#",
    ];
    for target in refused {
        let (status, text) = send(&gw, target, Some("127.0.0.1"));
        let shown = String::from_utf8_lossy(target);
        assert_eq!(status, 400, "{shown}: {text}");
        // Whoever refuses it (the routing step or the head reader), the answer is the gateway's.
        assert!(
            text.contains("X-Content-Type-Options: nosniff"),
            "{shown}: {text}"
        );
        assert!(
            !text.to_ascii_lowercase().contains("server: pingora"),
            "{shown}: {text}"
        );
    }
    assert_eq!(up.count(), 0, "a refused target reached the upstream");
    // `OPTIONS *` asks about the server; it is answered here and never forwarded.
    let (status, _) = raw(
        gw.port,
        b"OPTIONS * HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n",
    )
    .unwrap();
    assert_eq!(status, 204);
    assert_eq!(up.count(), 0);
}

#[test]
fn the_upstream_receives_the_path_that_was_authorized() {
    let up = Upstream::start();
    let gw = layout(&up);
    let cases: &[(&str, &str)] = &[
        ("/pub/./x//y/../z?q=1", "/pub/x/z?q=1"),
        ("/%70ub/x", "/pub/x"),
        ("/pub/a%3fb", "/pub/a%3Fb"),
        ("/keep;jsessionid=1/x", "/keep;jsessionid=1/x"),
        ("/keep/..;/pub", "/pub"),
        ("http://127.0.0.1/pub/abs?x", "/pub/abs?x"),
    ];
    for (target, want) in cases {
        let before = up.count();
        let (status, text) = send(&gw, target.as_bytes(), Some("127.0.0.1"));
        assert_eq!(status, 200, "{target}: {text}");
        assert_eq!(up.requests()[before].url, *want, "{target}");
    }
    // Anonymous, every spelling of the protected route is refused or sent to log in.
    for target in [
        "/ADMIN/secret",
        "/pub/../admin/secret",
        "//admin/secret",
        "/Admin/x",
    ] {
        let before = up.count();
        let (status, text) = send(&gw, target.as_bytes(), Some("127.0.0.1"));
        assert_eq!(status, 401, "{target}: {text}");
        assert_eq!(up.count(), before, "{target}");
    }
}

#[test]
fn hosts_are_matched_and_forwarded_in_canonical_form() {
    let up = Upstream::start();
    let gw = layout(&up);
    let port = gw.port;
    // Every spelling of the protected host is protected.
    for host in [
        "intranet.test".to_string(),
        "intranet.test.".to_string(),
        "INTRANET.TEST".to_string(),
        "Intranet.Test.:80".to_string(),
        format!("intranet.test.:{port}"),
    ] {
        let (status, text) = send(&gw, b"/x", Some(&host));
        assert_eq!(status, 401, "{host}: {text}");
    }
    // An absolute-form target must name exactly the Host header's host.
    for (target, host) in [
        ("http://intranet.test/x", "intranet.test."),
        ("http://intranet.test./x", "intranet.test"),
        ("http://intranet.test/x", "public.test"),
    ] {
        let (status, _) = send(&gw, target.as_bytes(), Some(host));
        assert_eq!(status, 400, "{target} {host}");
    }
    assert_eq!(up.count(), 0);
    // Hosts that are not DNS names or IP literals, two Host headers, a missing Host, or an
    // absolute-form target naming another host: 400.
    for host in [
        "intranet.test..",
        "intranet..test",
        "intranet.test/x",
        "intranet test",
        "127.1",
        "0x7f.0.0.1",
        "h:99999",
    ] {
        let (status, text) = send(&gw, b"/x", Some(host));
        assert_eq!(status, 400, "{host}: {text}");
    }
    let (status, _) = raw(
        port,
        b"GET /x HTTP/1.1\r\nHost: a.test\r\nHost: intranet.test\r\nConnection: close\r\n\r\n",
    )
    .unwrap();
    assert_eq!(status, 400);
    let (status, _) = send(&gw, b"/x", None);
    assert_eq!(status, 400);
    let (status, _) = send(&gw, b"http://intranet.test/x", Some("public.test"));
    assert_eq!(status, 400);
    assert_eq!(up.count(), 0);
    // The application gets the canonical host.
    let (status, _) = send(&gw, b"/x", Some("Public.Test.:80"));
    assert_eq!(status, 200);
    let seen = up.requests().pop().unwrap();
    assert_eq!(seen.header("host").as_deref(), Some("public.test"));
    assert_eq!(
        seen.header("x-forwarded-host").as_deref(),
        Some("public.test")
    );
    let (status, _) = send(&gw, b"http://public.test:81/x", Some("public.test:81"));
    assert_eq!(status, 200);
    let seen = up.requests().pop().unwrap();
    assert_eq!(seen.url, "/x");
    assert_eq!(seen.header("host").as_deref(), Some("public.test:81"));
}

#[test]
fn cookie_authenticated_unsafe_requests_from_other_sites_are_refused() {
    let up = Upstream::start();
    let gw = auth_gateway("", &up);
    let jar = Jar::from(&login_json(&gw, "carol@example.com", PASSWORD), "__Host-");
    let cookie = jar.cookie_header();
    let origin = gw.url("");
    let origin = origin.trim_end_matches('/');
    let attempt = |method: &str, headers: &[(&str, &str)]| -> u16 {
        let mut req = format!(
            "{method} /app/x HTTP/1.1\r\nHost: 127.0.0.1\r\nCookie: {cookie}\r\nContent-Length: 0\r\nConnection: close\r\n"
        );
        for (k, v) in headers {
            req.push_str(&format!("{k}: {v}\r\n"));
        }
        req.push_str("\r\n");
        raw(gw.port, req.as_bytes()).unwrap().0
    };
    let before = up.count();
    for (method, headers) in [
        (
            "POST",
            vec![
                ("Sec-Fetch-Site", "same-site"),
                ("Origin", "http://evil.127.0.0.1.nip.test"),
            ],
        ),
        ("POST", vec![("Sec-Fetch-Site", "same-site")]),
        ("POST", vec![("Sec-Fetch-Site", "cross-site")]),
        (
            "POST",
            vec![
                ("Sec-Fetch-Site", "same-origin"),
                ("Origin", "http://evil.test"),
            ],
        ),
        ("PROPPATCH", vec![("Origin", "http://evil.test")]),
        ("MOVE", vec![("Sec-Fetch-Site", "cross-site")]),
        ("LOCK", vec![("Origin", "null")]),
    ] {
        assert_eq!(attempt(method, &headers), 403, "{method} {headers:?}");
    }
    assert_eq!(
        up.count(),
        before,
        "a cross-site request reached the upstream"
    );
    assert_eq!(
        attempt(
            "POST",
            &[("Sec-Fetch-Site", "same-origin"), ("Origin", origin)]
        ),
        200
    );
    assert_eq!(
        attempt("PROPPATCH", &[("Sec-Fetch-Site", "same-origin")]),
        200
    );
    assert_eq!(attempt("GET", &[("Sec-Fetch-Site", "cross-site")]), 200);
}

#[test]
fn no_query_string_reaches_the_log_on_error_paths() {
    let mut up = Upstream::start();
    let gw = layout(&up);
    let secret = "s3cr3t-query-value";
    // Upstream answers, then the upstream goes away (502), refused targets (400), no route,
    // a protected route (401).
    let (status, _) = send(
        &gw,
        format!("/pub?token={secret}").as_bytes(),
        Some("127.0.0.1"),
    );
    assert_eq!(status, 200);
    up.stop();
    for (target, want) in [
        (format!("/pub/x?token={secret}"), 502),
        (format!("/admin./x?token={secret}"), 400),
        (format!("admin/x?token={secret}"), 400),
        (format!("/admin/x?token={secret}"), 401),
    ] {
        let (status, text) = send(&gw, target.as_bytes(), Some("127.0.0.1"));
        assert_eq!(status, want, "{target}: {text}");
    }
    std::thread::sleep(std::time::Duration::from_millis(300));
    let log = gw.log();
    assert!(
        log.contains("Fail to proxy") || log.contains("502"),
        "{log}"
    );
    assert!(
        !log.contains(secret),
        "a query string reached the log:\n{log}"
    );
}

/// Pieces that generated targets are made of: separators, dot-segments in every spelling,
/// parameters, escapes of every class, the protected prefix in several cases.
const PIECES: &[&str] = &[
    "/",
    "//",
    ".",
    "..",
    "%2e",
    "%2E%2e",
    ";",
    ";x=1",
    "..;",
    "admin",
    "ADMIN",
    "Admin",
    "pub",
    "keep",
    "x",
    "%61dmin",
    "%2f",
    "%5c",
    "%00",
    "%25",
    "%252e",
    "%20",
    " ",
    "\\",
    "?",
    "#",
    "&",
    "=",
    "%3b",
    "%3f",
    "%C4%B1",
    "\u{e9}",
    "%",
    "%zz",
    "~",
    "-",
    "_",
    "*",
    ":",
    "a:",
    "http://",
    "127.0.0.1",
    "@",
];

#[test]
fn generated_targets_reach_the_upstream_only_as_authorized() {
    let up = Upstream::start();
    let gw = layout(&up);
    let target = (
        any::<bool>(),
        prop::collection::vec(prop::sample::select(PIECES), 1..8),
    )
        .prop_map(|(rooted, pieces)| {
            let mut t = if rooted {
                "/".to_string()
            } else {
                String::new()
            };
            for p in pieces {
                t.push_str(p);
            }
            t
        });
    let mut runner = TestRunner::new(PropConfig {
        cases: 300,
        failure_persistence: None,
        ..PropConfig::default()
    });
    runner
        .run(&target, |t| {
            if t.contains(' ') || t.contains('\r') || t.contains('\n') {
                // Not one request target on the wire.
                return Ok(());
            }
            let before = up.count();
            let (status, text) = send(&gw, t.as_bytes(), Some("127.0.0.1"));
            let forwarded = up.requests().get(before).map(|r| r.url.clone());
            let authorized = parse_target(t.as_bytes()).ok();
            let under_admin = |p: &str| prefix_matches("/admin", p);
            match (status, forwarded) {
                (400, None) => Ok(()),
                (401, None) if authorized.as_ref().is_some_and(|a| under_admin(&a.path)) => Ok(()),
                (200, Some(url)) if reached_upstream(&text) => {
                    let a = authorized.ok_or_else(|| {
                        TestCaseError::fail(format!(
                            "{t:?} was forwarded as {url:?} but does not parse"
                        ))
                    })?;
                    let (path, query) = url
                        .split_once('?')
                        .map_or((url.as_str(), None), |(p, q)| (p, Some(q)));
                    // Every route an anonymous client can pass is public, where `;params` are
                    // kept by default.
                    let want = a.with_params.as_deref().unwrap_or(&a.path);
                    prop_assert_eq!(path, want, "{:?}", t);
                    prop_assert_eq!(query, a.query.as_deref(), "{:?}", t);
                    prop_assert!(
                        !under_admin(path),
                        "{:?} reached the protected route as {:?}",
                        t,
                        url
                    );
                    // What arrives is already canonical: no server can take it further.
                    let again = parse_target(path.as_bytes()).map(|b| b.path);
                    prop_assert_eq!(again.as_deref(), Ok(a.path.as_str()), "{:?}", t);
                    Ok(())
                }
                (status, forwarded) => Err(TestCaseError::fail(format!(
                    "{t:?}: status {status}, forwarded {forwarded:?}: {text}"
                ))),
            }
        })
        .unwrap();
}
