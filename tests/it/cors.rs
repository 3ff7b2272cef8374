//! Cross-origin requests and response hardening: preflights answered by the
//! gateway, CORS headers on proxied and local answers, per-route security headers, the
//! default headers on every kind of answer, identity-header variants.

use crate::harness::*;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

const SPA: &str = "https://spa.example";

/// The default security headers and their values.
const DEFAULTS: &[(&str, &str)] = &[
    (
        "strict-transport-security",
        "max-age=63072000; includeSubDomains",
    ),
    ("x-content-type-options", "nosniff"),
    ("x-frame-options", "SAMEORIGIN"),
    (
        "content-security-policy",
        "default-src 'self'; script-src 'self' 'unsafe-inline'; style-src 'self' 'unsafe-inline'; img-src 'self' data:;",
    ),
    ("referrer-policy", "strict-origin-when-cross-origin"),
    ("cross-origin-opener-policy", "same-origin"),
    ("cross-origin-resource-policy", "same-origin"),
    ("origin-agent-cluster", "?1"),
    ("x-dns-prefetch-control", "off"),
    ("x-permitted-cross-domain-policies", "none"),
    ("x-xss-protection", "0"),
];

/// Every default header exactly once with its value, and nothing naming the server.
fn assert_defaults(r: &Resp, what: &str) {
    for (name, value) in DEFAULTS {
        assert_eq!(
            r.header_all(name),
            vec![value.to_string()],
            "{what}: {name} in {:?}",
            r.headers
        );
    }
    assert_eq!(r.header_all("server"), Vec::<String>::new(), "{what}");
    assert!(r.header("x-powered-by").is_none(), "{what}");
    assert!(
        !r.headers
            .iter()
            .any(|(_, v)| v.to_ascii_lowercase().contains("pingora")),
        "{what}: {:?}",
        r.headers
    );
}

fn cors_headers(r: &Resp) -> Vec<(String, String)> {
    r.headers
        .iter()
        .filter(|(k, _)| k.to_ascii_lowercase().starts_with("access-control-"))
        .cloned()
        .collect()
}

fn varies_by_origin(r: &Resp) -> bool {
    r.header_all("vary")
        .iter()
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case("origin"))
}

/// `OPTIONS url` with `headers`.
fn options(url: &str, headers: &[(&str, &str)]) -> Resp {
    let mut req = agent().options(url);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    snapshot(req.call().unwrap_or_else(|e| panic!("OPTIONS {url}: {e}")))
}

/// An upstream that, like many legacy apps, answers every origin with its own permissive
/// CORS headers; counts requests.
struct PermissiveUpstream {
    addr: std::net::SocketAddr,
    hits: Arc<AtomicUsize>,
    _server: HttpServer,
}

impl PermissiveUpstream {
    fn start() -> Self {
        let hits = Arc::new(AtomicUsize::new(0));
        let h = hits.clone();
        let handler: Handler = Arc::new(move |r: &Recorded| {
            h.fetch_add(1, Ordering::SeqCst);
            let headers = [
                ("Access-Control-Allow-Origin", "*"),
                ("Access-Control-Allow-Credentials", "true"),
                ("Access-Control-Expose-Headers", "X-Secret"),
                ("Access-Control-Allow-Methods", "DELETE"),
                ("Vary", "Accept-Encoding"),
            ];
            (
                200,
                headers
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
                format!("permissive {}", r.url),
            )
        });
        let server = HttpServer::start("127.0.0.1:0".parse().unwrap(), handler).unwrap();
        PermissiveUpstream {
            addr: server.addr,
            hits,
            _server: server,
        }
    }

    fn count(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }
}

/// A gateway with a top-level `cors` for `/auth/*`, a protected `/api` with credentials, a
/// public `/pubapi` in front of an upstream sending its own CORS headers, `/star` with `"*"`,
/// and routes without `cors` (`/plain` in front of the permissive upstream, `/` protected).
fn cors_gateway(up: &Upstream, permissive: &PermissiveUpstream) -> Gateway {
    Gateway::start(&format!(
        r#"cors:
  allowed_origins: ["{SPA}"]
  allow_credentials: true
  allowed_methods: [GET, POST]
  allowed_headers: [Content-Type, X-CSRF-Token]
  max_age: 10m
upstreams:
  app: {{ addresses: ["{app}"] }}
  permissive: {{ addresses: ["{perm}"] }}
routes:
  - path_prefix: /api
    upstream: app
    cors:
      allowed_origins: ["HTTPS://SPA.example", "http://localhost:3000"]
      allow_credentials: true
      allowed_methods: [GET, PUT, DELETE]
      allowed_headers: [Authorization, Content-Type]
      expose_headers: [X-Total-Count, X-Request-Id]
      max_age: 2m
  - path_prefix: /pubapi
    upstream: permissive
    auth: public
    cors: {{ allowed_origins: ["{SPA}"] }}
  - {{ path_prefix: /star, upstream: app, auth: public, cors: {{ allowed_origins: ["*"] }} }}
  - {{ path_prefix: /plain, upstream: permissive, auth: public }}
  - {{ path_prefix: /open, upstream: app, auth: public }}
  - {{ path_prefix: /, upstream: app }}
"#,
        app = up.addr,
        perm = permissive.addr
    ))
}

#[test]
fn preflight_from_an_allowed_origin_is_answered_without_auth_and_never_forwarded() {
    let (up, perm) = (Upstream::start(), PermissiveUpstream::start());
    let gw = cors_gateway(&up, &perm);
    let before = up.count();
    // `/api` requires authentication; the preflight carries no credentials.
    let r = options(
        &gw.url("/api/items/7"),
        &[
            ("Origin", SPA),
            ("Access-Control-Request-Method", "PUT"),
            (
                "Access-Control-Request-Headers",
                "authorization,x-not-allowed",
            ),
        ],
    );
    assert_eq!(r.status, 204, "{:?} {}", r.headers, r.body);
    assert!(r.body.is_empty());
    assert_eq!(r.header_all("access-control-allow-origin"), vec![SPA]);
    assert_eq!(
        r.header("access-control-allow-methods").as_deref(),
        Some("GET, PUT, DELETE")
    );
    assert_eq!(
        r.header("access-control-allow-headers").as_deref(),
        Some("authorization"),
        "only the requested headers that are allowed"
    );
    assert_eq!(r.header("access-control-max-age").as_deref(), Some("120"));
    assert_eq!(
        r.header("access-control-allow-credentials").as_deref(),
        Some("true")
    );
    assert!(varies_by_origin(&r), "{:?}", r.headers);
    assert_defaults(&r, "preflight 204");
    // Without a header list asked for: the configured one.
    let r = options(
        &gw.url("/api/items"),
        &[
            ("Origin", "http://localhost:3000"),
            ("Access-Control-Request-Method", "DELETE"),
        ],
    );
    assert_eq!(r.status, 204);
    assert_eq!(
        r.header_all("access-control-allow-origin"),
        vec!["http://localhost:3000"]
    );
    assert_eq!(
        r.header("access-control-allow-headers").as_deref(),
        Some("authorization, content-type")
    );
    // Origins compare without regard to the case of scheme and host; the answer echoes the
    // origin as the browser sent it.
    let r = options(
        &gw.url("/api/x"),
        &[
            ("Origin", "HTTPS://Spa.Example"),
            ("Access-Control-Request-Method", "GET"),
        ],
    );
    assert_eq!(r.status, 204);
    assert_eq!(
        r.header_all("access-control-allow-origin"),
        vec!["HTTPS://Spa.Example"]
    );
    assert_eq!(up.count(), before, "no preflight reached the upstream");
}

#[test]
fn preflight_from_another_origin_is_403_and_never_forwarded() {
    let (up, perm) = (Upstream::start(), PermissiveUpstream::start());
    let gw = cors_gateway(&up, &perm);
    for origin in [
        "https://evil.example",
        "https://spa.example.evil.example",
        "https://spa.example:8443",
        "http://spa.example",
        "null",
    ] {
        for path in ["/api/items", "/pubapi/x"] {
            let r = options(
                &gw.url(path),
                &[("Origin", origin), ("Access-Control-Request-Method", "GET")],
            );
            assert_eq!(r.status, 403, "{origin} {path}");
            assert_eq!(r.json()["error"], "origin_not_allowed");
            assert_eq!(cors_headers(&r), vec![], "{origin} {path}");
            assert_defaults(&r, "preflight 403");
        }
    }
    assert_eq!(up.count(), 0);
    assert_eq!(perm.count(), 0);
}

#[test]
fn preflight_shaped_options_on_a_route_without_cors_behaves_as_before() {
    let (up, perm) = (Upstream::start(), PermissiveUpstream::start());
    let gw = cors_gateway(&up, &perm);
    let pre = [("Origin", SPA), ("Access-Control-Request-Method", "GET")];
    // Protected route without cors: authentication applies as to any request.
    let r = options(&gw.url("/other"), &pre);
    assert_eq!(r.status, 401, "{}", r.body);
    assert_eq!(r.json()["error"], "token_required");
    assert_eq!(cors_headers(&r), vec![]);
    // Public route without cors: forwarded like any request.
    let r = options(&gw.url("/open/x"), &pre);
    assert_eq!(r.status, 200, "{}", r.body);
    let seen = up.requests();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].method, "OPTIONS");
    assert_eq!(seen[0].header("origin").as_deref(), Some(SPA));
    // An OPTIONS without Access-Control-Request-Method is no preflight even on a cors route:
    // it is authenticated like anything else.
    let r = options(&gw.url("/api/x"), &[("Origin", SPA)]);
    assert_eq!(r.status, 401);
    assert_eq!(r.header_all("access-control-allow-origin"), vec![SPA]);
}

#[test]
fn actual_answers_to_an_allowed_origin_carry_that_origin_and_vary() {
    let (up, perm) = (Upstream::start(), PermissiveUpstream::start());
    let gw = cors_gateway(&up, &perm);
    // A local answer on a cors route (401 for the missing token).
    let r = get(&gw.url("/api/items"), &[("Origin", SPA)]);
    assert_eq!(r.status, 401);
    assert_eq!(r.header_all("access-control-allow-origin"), vec![SPA]);
    assert_eq!(
        r.header_all("access-control-allow-credentials"),
        vec!["true"]
    );
    assert_eq!(
        r.header_all("access-control-expose-headers"),
        vec!["x-total-count, x-request-id"]
    );
    assert!(varies_by_origin(&r));
    assert_defaults(&r, "401 on a cors route");
    // A proxied answer: the upstream's own CORS headers are replaced by the gateway's.
    let r = get(&gw.url("/pubapi/list"), &[("Origin", SPA)]);
    assert_eq!(r.status, 200);
    assert!(r.body.starts_with("permissive /pubapi/list"));
    assert_eq!(
        cors_headers(&r),
        vec![("access-control-allow-origin".to_string(), SPA.to_string())],
        "exact origin; upstream's `*`, credentials, methods and exposed headers gone"
    );
    assert!(varies_by_origin(&r));
    assert!(r
        .header_all("vary")
        .iter()
        .any(|v| v.contains("Accept-Encoding")));
    assert_defaults(&r, "proxied on a cors route");
    // `"*"` without credentials: any origin but `null` gets its own origin back.
    let r = get(&gw.url("/star/x"), &[("Origin", "https://anyone.example")]);
    assert_eq!(r.status, 200);
    assert_eq!(
        cors_headers(&r),
        vec![(
            "access-control-allow-origin".to_string(),
            "https://anyone.example".to_string()
        )]
    );
    let r = get(&gw.url("/star/x"), &[("Origin", "null")]);
    assert_eq!(cors_headers(&r), vec![]);
}

#[test]
fn answers_to_other_origins_carry_no_cors_header() {
    let (up, perm) = (Upstream::start(), PermissiveUpstream::start());
    let gw = cors_gateway(&up, &perm);
    for origin in [Some("https://evil.example"), Some("null"), None] {
        let h: Vec<(&str, &str)> = origin.map(|o| ("Origin", o)).into_iter().collect();
        let r = get(&gw.url("/pubapi/x"), &h);
        assert_eq!(r.status, 200);
        assert_eq!(cors_headers(&r), vec![], "{origin:?}: upstream's stripped");
        assert!(varies_by_origin(&r), "{origin:?}");
        let r = get(&gw.url("/api/x"), &h);
        assert_eq!(r.status, 401);
        assert_eq!(cors_headers(&r), vec![], "{origin:?}");
    }
    assert_eq!(perm.count(), 3);
}

#[test]
fn routes_without_cors_pass_the_upstreams_cors_headers_untouched() {
    let (up, perm) = (Upstream::start(), PermissiveUpstream::start());
    let gw = cors_gateway(&up, &perm);
    let r = get(&gw.url("/plain/x"), &[("Origin", "https://evil.example")]);
    assert_eq!(r.status, 200);
    assert_eq!(r.header_all("access-control-allow-origin"), vec!["*"]);
    assert_eq!(
        r.header_all("access-control-allow-credentials"),
        vec!["true"]
    );
    assert_eq!(
        r.header_all("access-control-expose-headers"),
        vec!["X-Secret"]
    );
    assert_eq!(r.header_all("vary"), vec!["Accept-Encoding"]);
}

#[test]
fn auth_endpoints_follow_the_top_level_cors() {
    let (up, perm) = (Upstream::start(), PermissiveUpstream::start());
    let gw = cors_gateway(&up, &perm);
    let r = options(
        &gw.url("/auth/login"),
        &[
            ("Origin", SPA),
            ("Access-Control-Request-Method", "POST"),
            ("Access-Control-Request-Headers", "content-type"),
        ],
    );
    assert_eq!(r.status, 204, "{}", r.body);
    assert_eq!(r.header_all("access-control-allow-origin"), vec![SPA]);
    assert_eq!(
        r.header("access-control-allow-methods").as_deref(),
        Some("GET, POST")
    );
    assert_eq!(
        r.header("access-control-allow-headers").as_deref(),
        Some("content-type")
    );
    assert_eq!(r.header("access-control-max-age").as_deref(), Some("600"));
    assert_eq!(
        r.header("access-control-allow-credentials").as_deref(),
        Some("true")
    );
    assert_eq!(r.header("cache-control").as_deref(), Some("no-store"));
    assert!(varies_by_origin(&r));
    assert_defaults(&r, "auth preflight");
    let r = options(
        &gw.url("/auth/login"),
        &[
            ("Origin", "https://evil.example"),
            ("Access-Control-Request-Method", "POST"),
        ],
    );
    assert_eq!(r.status, 403);
    assert_eq!(cors_headers(&r), vec![]);
    // Actual answers: `/auth/session` without a session is 401, readable by the allowed origin.
    let r = get(&gw.url("/auth/session"), &[("Origin", SPA)]);
    assert_eq!(r.status, 401);
    assert_eq!(r.header_all("access-control-allow-origin"), vec![SPA]);
    assert_eq!(
        r.header_all("access-control-allow-credentials"),
        vec!["true"]
    );
    assert!(r.header("access-control-expose-headers").is_none());
    assert!(varies_by_origin(&r));
    assert_defaults(&r, "auth 401");
    let r = get(
        &gw.url("/auth/session"),
        &[("Origin", "https://evil.example")],
    );
    assert_eq!(r.status, 401);
    assert_eq!(cors_headers(&r), vec![]);
    // The `/api` route's own origins are not the `/auth/*` ones.
    let r = get(
        &gw.url("/auth/session"),
        &[("Origin", "http://localhost:3000")],
    );
    assert_eq!(cors_headers(&r), vec![]);
    assert_eq!(up.count() + perm.count(), 0);
}

#[test]
fn auth_endpoints_without_top_level_cors_answer_preflights_as_before() {
    let up = Upstream::start();
    let gw = Gateway::start(&public_app("", &up));
    let r = options(
        &gw.url("/auth/login"),
        &[("Origin", SPA), ("Access-Control-Request-Method", "POST")],
    );
    assert_eq!(r.status, 405, "{}", r.body);
    assert_eq!(cors_headers(&r), vec![]);
}

#[test]
fn check_refuses_any_origin_with_credentials_naming_the_key() {
    for (text, key) in [
        (
            "cors: { allowed_origins: [\"*\"], allow_credentials: true }\nupstreams:\n  app: { addresses: [\"127.0.0.1:9\"] }\nroutes:\n  - { path_prefix: /, upstream: app }\n",
            "cors.allowed_origins",
        ),
        (
            "upstreams:\n  app: { addresses: [\"127.0.0.1:9\"] }\nroutes:\n  - { path_prefix: /a, upstream: app }\n  - { path_prefix: /, upstream: app, cors: { allowed_origins: [\"https://x.example\", \"*\"], allow_credentials: true } }\n",
            "routes[1].cors.allowed_origins",
        ),
    ] {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("pc.yaml"), text).unwrap();
        let (code, _out, err) = run_cli(&["check", "-c", "pc.yaml"], dir.path());
        assert_eq!(code, 1, "{err}");
        let lines: Vec<&str> = err.lines().collect();
        assert_eq!(lines.len(), 1, "one line: {err}");
        assert!(
            lines[0].starts_with(&format!("portcullis: pc.yaml: {key}: ")),
            "{err}"
        );
        assert!(lines[0].contains("allow_credentials"), "{err}");
        assert!(!err.contains("panicked"), "{err}");
    }
}

#[test]
fn a_routes_security_headers_replace_the_global_ones_on_all_its_answers() {
    let up = Upstream::start();
    let dead = format!("127.0.0.1:{}", free_port());
    let own = "security_headers: { headers: { Content-Security-Policy: \"frame-ancestors https://partner.example\", X-Widget: \"1\" }, remove: [X-Powered-By] }";
    let gw = Gateway::start(&format!(
        "upstreams:\n  app: {{ addresses: [\"{}\"] }}\n  dead: {{ addresses: [\"{dead}\"] }}\nroutes:\n  - {{ path_prefix: /widget/pub, upstream: app, auth: public, {own} }}\n  - {{ path_prefix: /widget/down, upstream: dead, auth: public, {own} }}\n  - {{ path_prefix: /widget, upstream: app, {own} }}\n  - {{ path_prefix: /, upstream: app }}\n",
        up.addr
    ));
    let assert_own = |r: &Resp, what: &str| {
        assert_eq!(
            r.header_all("content-security-policy"),
            vec!["frame-ancestors https://partner.example"],
            "{what}"
        );
        assert_eq!(r.header_all("x-widget"), vec!["1"], "{what}");
        for (name, _) in DEFAULTS {
            if *name != "content-security-policy" && *name != "x-frame-options" {
                assert!(
                    r.header(name).is_none(),
                    "{what}: global {name} not applied"
                );
            }
        }
        assert!(r.header("x-powered-by").is_none(), "{what}");
    };
    // Proxied: the upstream's own X-Frame-Options and Server stay, since this route's set
    // neither sets nor removes them.
    let r = get(&gw.url("/widget/pub/x"), &[]);
    assert_eq!(r.status, 200);
    assert_own(&r, "proxied");
    assert_eq!(r.header_all("x-frame-options"), vec!["DENY"]);
    assert_eq!(r.header_all("server"), vec!["legacy-upstream/1.0"]);
    // Local answers of that route: 401, 302 to login, 502.
    let r = get(&gw.url("/widget/x"), &[]);
    assert_eq!(r.status, 401);
    assert_own(&r, "401");
    assert!(r.header("x-frame-options").is_none());
    let r = get(&gw.url("/widget/x"), &[("Accept", "text/html")]);
    assert_eq!(r.status, 302);
    assert_own(&r, "302");
    let r = get(&gw.url("/widget/down/x"), &[]);
    assert_eq!(r.status, 502, "{}", r.body);
    assert_own(&r, "502");
    // Other routes keep the global set.
    let r = get(&gw.url("/other"), &[]);
    assert_eq!(r.status, 401);
    assert_defaults(&r, "401 elsewhere");
    assert!(r.header("x-widget").is_none());
}

#[test]
fn default_headers_on_every_kind_of_answer_and_no_pingora_server() {
    let up = Upstream::start();
    let dead = format!("127.0.0.1:{}", free_port());
    let gw = Gateway::start(&format!(
        "upstreams:\n  app: {{ addresses: [\"{}\"] }}\n  dead: {{ addresses: [\"{dead}\"] }}\nroutes:\n  - {{ path_prefix: /pub, upstream: app, auth: public }}\n  - {{ path_prefix: /down, upstream: dead, auth: public }}\n  - {{ path_prefix: /private, upstream: app }}\n",
        up.addr
    ));
    let r = get(&gw.url("/pub/x"), &[]);
    assert_eq!(r.status, 200);
    assert_defaults(&r, "proxied");
    let r = get(&gw.url("/private/x"), &[]);
    assert_eq!(r.status, 401);
    assert_eq!(r.json()["error"], "token_required");
    assert_defaults(&r, "401 JSON");
    let r = get(&gw.url("/private/x"), &[("Accept", "text/html")]);
    assert_eq!(r.status, 302);
    assert!(r.header("location").unwrap().starts_with("/auth/login"));
    assert_defaults(&r, "302 to login");
    let r = get(&gw.url("/nowhere"), &[]);
    assert_eq!(r.status, 404);
    assert_defaults(&r, "404 no route");
    let r = get(&gw.url("/down/x"), &[]);
    assert_eq!(r.status, 502);
    assert_eq!(r.json()["error"], "bad_gateway");
    assert_defaults(&r, "502 upstream down");
    let r = get(&gw.url("/auth/session"), &[]);
    assert_eq!(r.status, 401);
    assert_defaults(&r, "auth 401");
    let r = get(&gw.url("/healthz"), &[]);
    assert_eq!(r.status, 200);
    assert_defaults(&r, "probe");
    // On the wire too: no `Server` line at all on the gateway's own answers.
    for path in ["/nowhere", "/down/x", "/private/x"] {
        let (_, text) = raw(
            gw.port,
            format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
                .as_bytes(),
        )
        .unwrap();
        let head = text.split("\r\n\r\n").next().unwrap().to_ascii_lowercase();
        assert!(!head.contains("\r\nserver:"), "{path}: {head}");
    }
}

/// The names a client may try for the identity headers: every punctuation byte a request
/// header name can carry stands for `-`.
#[test]
fn identity_header_variants_with_any_separator_never_reach_the_upstream() {
    let up = Upstream::start();
    let gw = Gateway::start(&public_app("", &up));
    let names = [
        "X.Forwarded.User",
        "x_forwarded.user",
        "X~Forwarded~Email",
        "x+forwarded+groups",
        "X!Forwarded#User",
        "x$forwarded%user",
        "x&forwarded'user",
        "x*forwarded^user",
        "x`forwarded|user",
        "X.Real.IP",
        "x.forwarded.for",
        "X_FORWARDED.HOST",
    ];
    let mut req = String::from("GET /x HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n");
    for n in names {
        req.push_str(&format!("{n}: spoofed\r\n"));
    }
    req.push_str("X-Forwarded-Users: near-miss\r\n\r\n");
    let (status, text) = raw(gw.port, req.as_bytes()).unwrap();
    assert_eq!(status, 200, "{text}");
    let seen = &up.requests()[0];
    for (k, v) in &seen.headers {
        assert_ne!(v, "spoofed", "{k} reached the upstream");
    }
    assert_eq!(
        seen.header("x-forwarded-users").as_deref(),
        Some("near-miss")
    );
    // Names with a space or other separator are not header names at all: the request is
    // refused before any hook, and nothing is forwarded.
    for bad in [
        "x_forwarded user",
        "X-Forwarded-User ",
        "X\tForwarded\tUser",
        "X(Forwarded)User",
        "X/Forwarded/User",
    ] {
        let req = format!(
            "GET /y HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n{bad}: spoofed\r\n\r\n"
        );
        let (status, text) = raw(gw.port, req.as_bytes()).unwrap();
        assert_eq!(status, 400, "{bad:?}: {text}");
    }
    assert_eq!(up.count(), 1);
}
