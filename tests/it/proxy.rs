//! Routing, round robin, health checks, security headers, forwarding headers, limits.

use crate::harness::*;
use std::time::Duration;

const SEC_HEADERS: &[&str] = &[
    "strict-transport-security",
    "x-content-type-options",
    "x-frame-options",
    "content-security-policy",
    "referrer-policy",
];

fn assert_security_headers_once(r: &Resp, what: &str) {
    for h in SEC_HEADERS {
        assert_eq!(
            r.header_all(h).len(),
            1,
            "{what}: {h} exactly once in {:?}",
            r.headers
        );
    }
    assert!(r.header("server").is_none(), "{what}: Server removed");
    assert!(
        r.header("x-powered-by").is_none(),
        "{what}: X-Powered-By removed"
    );
}

#[test]
fn routes_by_host_and_prefix_on_segment_boundaries() {
    let (a, b, c) = (Upstream::start(), Upstream::start(), Upstream::start());
    let gw = Gateway::start(&format!(
        r#"upstreams:
  a: {{ addresses: ["{}"] }}
  b: {{ addresses: ["{}"] }}
  c: {{ addresses: ["{}"] }}
routes:
  - {{ host: admin.example, path_prefix: /, upstream: c, auth: public }}
  - {{ path_prefix: /admin, upstream: b, auth: public }}
  - {{ path_prefix: /app/, upstream: a, auth: public }}
"#,
        a.addr, b.addr, c.addr
    ));
    let hit = |path: &str, host: Option<&str>| {
        let mut h = vec![];
        if let Some(host) = host {
            h.push(("Host", host));
        }
        get(&gw.url(path), &h)
    };
    let tag = |u: &Upstream| format!("upstream:{}", u.addr.port());
    assert!(hit("/admin", None).body.starts_with(&tag(&b)));
    assert!(hit("/admin/users?x=1", None).body.starts_with(&tag(&b)));
    assert!(hit("/app/page", None).body.starts_with(&tag(&a)));
    assert!(hit("/app", None).body.starts_with(&tag(&a)));
    assert!(hit("/x", Some("ADMIN.example:8080"))
        .body
        .starts_with(&tag(&c)));
    // /administrator is not under /admin: no route matches it.
    let r = hit("/administrator", None);
    assert_eq!(r.status, 404);
    assert_eq!(r.json()["error"], "not_found");
    assert_security_headers_once(&r, "404");
    assert_eq!(
        b.requests()
            .iter()
            .filter(|r| r.url.starts_with("/administrator"))
            .count(),
        0
    );
    // The query string reaches the upstream untouched.
    assert!(b.requests().iter().any(|r| r.url == "/admin/users?x=1"));
}

#[test]
fn round_robin_over_two_upstreams() {
    let (a, b) = (Upstream::start(), Upstream::start());
    let gw = Gateway::start(&format!(
        "upstreams:\n  app: {{ addresses: [\"{}\", \"{}\"] }}\nroutes:\n  - {{ path_prefix: /, upstream: app, auth: public }}\n",
        a.addr, b.addr
    ));
    for i in 0..10 {
        assert_eq!(get(&gw.url(&format!("/r{i}")), &[]).status, 200);
    }
    assert_eq!(a.count(), 5, "even split");
    assert_eq!(b.count(), 5, "even split");
}

#[test]
fn upstream_down_then_back_without_restart() {
    let mut up = Upstream::start();
    let addr = up.addr;
    let gw = Gateway::start(&format!(
        "health: {{ readiness_requires_upstreams: all }}\nupstreams:\n  app: {{ addresses: [\"{addr}\"], health_check: {{ path: /health, interval: 1s }} }}\nroutes:\n  - {{ path_prefix: /, upstream: app, auth: public }}\n"
    ));
    gw.wait_ready_status(200, Duration::from_secs(5));
    up.stop();
    // Within 3 health intervals readiness names the failing group.
    let body = gw.wait_ready_status(503, Duration::from_secs(3));
    assert!(body.contains("upstream app: no healthy peer"), "{body}");
    let r = get(&gw.url("/page"), &[]);
    assert!(r.status == 502 || r.status == 503, "status {}", r.status);
    assert_security_headers_once(&r, "upstream down");
    assert!(r.json()["error"].is_string());
    let _up = Upstream::start_on(addr);
    gw.wait_ready_status(200, Duration::from_secs(4));
    assert_eq!(get(&gw.url("/page"), &[]).status, 200);
}

#[test]
fn unreachable_upstream_is_502_with_security_headers() {
    let dead = format!("127.0.0.1:{}", free_port());
    let gw = Gateway::start(&format!(
        "upstreams:\n  app: {{ addresses: [\"{dead}\"] }}\nroutes:\n  - {{ path_prefix: /, upstream: app, auth: public }}\n"
    ));
    let r = get(&gw.url("/x"), &[]);
    assert_eq!(r.status, 502, "{}", r.body);
    assert_eq!(r.json()["error"], "bad_gateway");
    assert_security_headers_once(&r, "502");
}

#[test]
fn security_headers_set_mode_overrides_and_401_has_them() {
    let up = Upstream::start();
    let gw = Gateway::start(&format!(
        "upstreams:\n  app: {{ addresses: [\"{}\"] }}\nroutes:\n  - {{ path_prefix: /pub, upstream: app, auth: public }}\n  - {{ path_prefix: /, upstream: app }}\n",
        up.addr
    ));
    let r = get(&gw.url("/pub/x"), &[]);
    assert_eq!(r.status, 200);
    assert_security_headers_once(&r, "proxied");
    assert_eq!(
        r.header("x-frame-options").unwrap(),
        "SAMEORIGIN",
        "set overrides DENY"
    );
    let r = get(&gw.url("/private"), &[]);
    assert_eq!(r.status, 401);
    assert_eq!(r.json()["error"], "token_required");
    assert_eq!(r.header("www-authenticate").unwrap(), "Bearer");
    assert!(r.json()["login_url"]
        .as_str()
        .unwrap()
        .starts_with("/auth/login?return_to="));
    assert_security_headers_once(&r, "401");
    assert_eq!(
        up.requests().iter().filter(|q| q.url == "/private").count(),
        0
    );
    // A browser navigation is redirected to the login page instead.
    let r = get(&gw.url("/private?a=1"), &[("Accept", "text/html")]);
    assert_eq!(r.status, 302);
    assert_eq!(
        r.header("location").unwrap(),
        "/auth/login?return_to=%2Fprivate%3Fa%3D1"
    );
    assert_security_headers_once(&r, "302");
}

#[test]
fn security_headers_default_mode_keeps_upstream_values() {
    let up = Upstream::start();
    let gw = Gateway::start(&public_app("security_headers: { mode: default }\n", &up));
    let r = get(&gw.url("/x"), &[]);
    assert_eq!(r.header_all("x-frame-options"), vec!["DENY".to_string()]);
    assert_eq!(
        r.header_all("x-content-type-options"),
        vec!["nosniff".to_string()]
    );
    assert!(r.header("server").is_none() && r.header("x-powered-by").is_none());
}

#[test]
fn forwarding_headers_and_spoofed_identity_on_a_public_route() {
    let up = Upstream::start();
    let gw = Gateway::start(&public_app("", &up));
    let r = get(
        &gw.url("/x"),
        &[
            ("X-Forwarded-For", "6.6.6.6"),
            ("X-Forwarded-User", "admin"),
            ("X_Forwarded_Email", "root@example.com"),
            ("x-forwarded-groups", "admin"),
            ("X-Forwarded-Proto", "https"),
            ("X-Real-IP", "6.6.6.6"),
        ],
    );
    assert_eq!(r.status, 200);
    let seen = &up.requests()[0];
    assert_eq!(
        seen.header_all("x-forwarded-for"),
        vec!["127.0.0.1".to_string()],
        "replaced, untrusted peer"
    );
    assert_eq!(seen.header("x-forwarded-proto").as_deref(), Some("http"));
    assert_eq!(
        seen.header("x-forwarded-host").as_deref(),
        Some(format!("127.0.0.1:{}", gw.port).as_str())
    );
    for h in [
        "x-forwarded-user",
        "x_forwarded_email",
        "x-forwarded-email",
        "x-forwarded-groups",
        "x-real-ip",
    ] {
        assert!(
            seen.header(h).is_none(),
            "{h} must not reach the upstream: {:?}",
            seen.headers
        );
    }
    assert!(gw.log().contains("spoofed_headers_stripped"));
}

#[test]
fn request_target_and_headers_reach_the_upstream_as_sent() {
    let up = Upstream::start();
    let gw = Gateway::start(&public_app("", &up));
    let target = "/x/a%20b;p=1?q=%2F&q=2&flag";
    let req = format!(
        "GET {target} HTTP/1.1\r\nHost: legacy.test\r\nSOAPAction: \"urn:Get\"\r\n\
         Accept: text/html\r\nAccept: */*\r\nx-lower-case: 1\r\nConnection: close\r\n\r\n"
    );
    let (status, resp) = raw(gw.port, req.as_bytes()).unwrap();
    assert_eq!(status, 200, "{resp}");
    let seen = &up.requests()[0];
    assert_eq!(seen.url, target, "request target byte for byte");
    assert_eq!(
        seen.header_all("accept"),
        ["text/html", "*/*"],
        "order kept"
    );
    assert_eq!(seen.header("soapaction").as_deref(), Some("\"urn:Get\""));
    assert_eq!(
        seen.header("x-forwarded-host").as_deref(),
        Some("legacy.test")
    );
    // Names keep the client's spelling, and the gateway's own are spelled as nginx's
    // `proxy_set_header` would send them: a legacy app may compare names case-sensitively.
    let names: Vec<&str> = seen.headers.iter().map(|(k, _)| k.as_str()).collect();
    for name in [
        "SOAPAction",
        "x-lower-case",
        "X-Forwarded-For",
        "X-Forwarded-Proto",
        "X-Forwarded-Host",
        "X-Request-Id",
    ] {
        assert!(names.contains(&name), "{name} in {names:?}");
    }
    // Coming back: the upstream's names as sent, the security headers as configured.
    assert!(
        resp.contains("\r\nX-Frame-Options: SAMEORIGIN\r\n"),
        "{resp}"
    );
    assert!(
        resp.contains("\r\nX-Content-Type-Options: nosniff\r\n"),
        "{resp}"
    );
}

#[test]
fn trusted_proxy_chain_is_appended() {
    let up = Upstream::start();
    let gw = Gateway::start(&public_app(
        "server:\n  listen: [\"127.0.0.1:{PORT}\"]\n  trusted_proxies: [127.0.0.0/8]\n",
        &up,
    ));
    get(
        &gw.url("/x"),
        &[
            ("X-Forwarded-For", "203.0.113.7"),
            ("X-Forwarded-Proto", "https"),
        ],
    );
    let seen = &up.requests()[0];
    assert_eq!(
        seen.header("x-forwarded-for").as_deref(),
        Some("203.0.113.7, 127.0.0.1")
    );
    assert_eq!(seen.header("x-forwarded-proto").as_deref(), Some("https"));
}

#[test]
fn oversized_headers_431_and_auth_body_413() {
    let up = Upstream::start();
    let gw = Gateway::start(&public_app("", &up));
    let big = "a".repeat(64 * 1024);
    let req = format!("GET / HTTP/1.1\r\nHost: x\r\nX-Big: {big}\r\nConnection: close\r\n\r\n");
    let (status, text) = raw(gw.port, req.as_bytes()).unwrap();
    assert_eq!(status, 431, "{}", &text[..text.len().min(300)]);
    let mut many = String::from("GET / HTTP/1.1\r\nHost: x\r\n");
    for i in 0..150 {
        many.push_str(&format!("X-H{i}: v\r\n"));
    }
    many.push_str("Connection: close\r\n\r\n");
    assert_eq!(raw(gw.port, many.as_bytes()).unwrap().0, 431);
    // Declared too large: refused before reading.
    let body = vec![b'x'; 100 * 1024];
    let r = post(
        &gw.url("/auth/login"),
        &[("Content-Type", "application/json")],
        &body,
    );
    assert_eq!(r.status, 413);
    assert_eq!(r.json()["error"], "payload_too_large");
    // Chunked and too large: refused while reading.
    let mut chunked = String::from("POST /auth/login HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n");
    for _ in 0..40 {
        chunked.push_str(&format!("400\r\n{}\r\n", "y".repeat(1024)));
    }
    chunked.push_str("0\r\n\r\n");
    assert_eq!(raw(gw.port, chunked.as_bytes()).unwrap().0, 413);
    assert_eq!(up.count(), 0, "nothing reached the upstream");
    // The gateway is still healthy afterwards.
    assert_eq!(raw_get(gw.port, "/healthz").unwrap().0, 200);
}

#[test]
fn probes_are_answered_locally_and_metrics_count_requests() {
    let up = Upstream::start();
    let metrics_port = free_port();
    let gw = Gateway::start(&public_app(&format!("metrics: {{ listen: \"127.0.0.1:{metrics_port}\" }}\nhealth: {{ liveness_path: /live, readiness_path: /ready }}\n"), &up));
    let r = get(&gw.url("/live"), &[]);
    assert_eq!(r.status, 200);
    assert_eq!(r.header("cache-control").as_deref(), Some("no-store"));
    let r = get(&gw.url("/ready"), &[]);
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["status"], "ready");
    get(&gw.url("/page"), &[]);
    assert_eq!(
        up.requests()
            .iter()
            .filter(|q| q.url == "/live" || q.url == "/ready")
            .count(),
        0
    );
    let m = get(&format!("http://127.0.0.1:{metrics_port}/metrics"), &[]);
    assert_eq!(m.status, 200);
    // The harness's start-up poll of /healthz is an ordinary proxied request here: 2 in all.
    assert!(
        m.body
            .contains("portcullis_requests_total{route=\"/\",status_class=\"2xx\"} 2"),
        "{}",
        m.body
    );
    assert!(
        m.body
            .contains("portcullis_requests_total{route=\"probe\",status_class=\"2xx\"} 2"),
        "{}",
        m.body
    );
    assert!(
        m.body
            .contains("portcullis_upstream_latency_seconds_count{upstream=\"app\"} 2"),
        "{}",
        m.body
    );
    assert!(
        m.body.contains(&format!(
            "portcullis_upstream_healthy{{address=\"{}\",upstream=\"app\"}} 1",
            up.addr
        )),
        "{}",
        m.body
    );
    // One access-log line per request, with a request id, and no query strings.
    let log = gw.log();
    let access: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("portcullis::access"))
        .collect();
    assert_eq!(access.len(), 4, "{log}");
    assert!(access.iter().all(|l| l.contains("\"request_id\":")));
}

#[test]
fn path_tricks_never_reach_a_protected_path_unauthenticated() {
    let up = Upstream::start();
    let gw = Gateway::start(&format!(
        "upstreams:\n  app: {{ addresses: [\"{}\"] }}\nroutes:\n  - {{ path_prefix: /static/, upstream: app, auth: public }}\n  - {{ path_prefix: /, upstream: app }}\n",
        up.addr
    ));
    for path in [
        "/static/../admin",
        "/static/%2e%2e/admin",
        "/static/%2E%2E/admin",
        "/static/..%2fadmin",
        "/static/..;/admin",
        "/static/.%2e/admin",
        "/static//../admin",
        "/static/%2e%2e%5cadmin",
        "/static/..\\admin",
        "/static/./../admin/",
        "//admin",
        "/STATIC/../admin",
    ] {
        let req = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
        let (status, _) = raw(gw.port, req.as_bytes()).unwrap();
        assert!(status == 400 || status == 401, "{path}: {status}");
    }
    assert_eq!(up.count(), 0, "{:?}", up.requests());
    // A harmless normalization is forwarded as the normalized path.
    let req = "GET /static//a/./b.css HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
    assert_eq!(raw(gw.port, req.as_bytes()).unwrap().0, 200);
    assert_eq!(up.requests()[0].url, "/static/a/b.css");
}
