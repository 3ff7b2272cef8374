//! Protecting legacy apps: header hygiene, navigation vs API failures, transparent refresh,
//! CSRF for proxied requests, WebSockets.

use crate::auth::{assert_refresh_cleared, auth_gateway, login_json, set_cookies, Jar, PASSWORD};
use crate::harness::*;
use std::io::Write;
use std::net::TcpListener;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[test]
fn spoofed_headers_never_reach_the_upstream_on_protected_and_public_routes() {
    let up = Upstream::start();
    let gw = auth_gateway("", &up);
    let jar = Jar::from(&login_json(&gw, "carol@example.com", PASSWORD), "__Host-");
    let spoofs: &[(&str, &str)] = &[
        ("X-Forwarded-User", "admin"),
        ("x-forwarded-user", "admin2"),
        ("X_Forwarded_User", "admin3"),
        ("X-FORWARDED-EMAIL", "root@example.com"),
        ("x_forwarded_email", "root2@example.com"),
        ("X-Forwarded-Groups", "admin"),
        ("X_FORWARDED_GROUPS", "admin"),
        ("X-Real-IP", "10.0.0.1"),
        ("Forwarded", "for=10.0.0.1;proto=https"),
        ("X-Original-URL", "/admin"),
        ("X-Rewrite-URL", "/admin"),
        ("X-Forwarded-Prefix", "/admin"),
        ("X-Forwarded-Port", "443"),
        ("X_Forwarded_For", "10.0.0.1"),
        ("X-Forwarded-Host", "evil.test"),
    ];
    for (path, cookie) in [("/app", jar.cookie_header()), ("/pub/x", String::new())] {
        let mut headers: Vec<(&str, &str)> = spoofs.to_vec();
        headers.push((
            "Connection",
            "keep-alive, X-Forwarded-User, X-Forwarded-Groups",
        ));
        if !cookie.is_empty() {
            headers.push(("Cookie", &cookie));
        }
        let before = up.count();
        let r = get(&gw.url(path), &headers);
        assert_eq!(r.status, 200, "{path}: {}", r.body);
        let seen = &up.requests()[before];
        let protected = !cookie.is_empty();
        let want_user = if protected {
            vec!["carol".to_string()]
        } else {
            vec![]
        };
        assert_eq!(seen.header_all("x-forwarded-user"), want_user, "{path}");
        let want_groups = if protected {
            vec!["user".to_string()]
        } else {
            vec![]
        };
        assert_eq!(seen.header_all("x-forwarded-groups"), want_groups, "{path}");
        let want_email = if protected {
            vec!["carol@example.com".to_string()]
        } else {
            vec![]
        };
        assert_eq!(seen.header_all("x-forwarded-email"), want_email, "{path}");
        for h in [
            "x_forwarded_user",
            "x_forwarded_email",
            "x_forwarded_groups",
            "x-real-ip",
            "forwarded",
            "x-original-url",
            "x-rewrite-url",
            "x-forwarded-prefix",
            "x-forwarded-port",
            "x_forwarded_for",
        ] {
            assert!(seen.header(h).is_none(), "{path}: {h} reached the upstream");
        }
        assert_eq!(
            seen.header_all("x-forwarded-for"),
            vec!["127.0.0.1".to_string()],
            "{path}"
        );
        assert_eq!(
            seen.header("x-forwarded-host").as_deref(),
            Some(format!("127.0.0.1:{}", gw.port).as_str()),
            "{path}"
        );
        let conn = seen
            .header("connection")
            .unwrap_or_default()
            .to_ascii_lowercase();
        assert!(
            !conn.contains("x-forwarded"),
            "{path}: Connection nominated our header: {conn}"
        );
        assert!(
            seen.header("cookie")
                .unwrap_or_default()
                .find("pc_")
                .is_none(),
            "{path}: our cookies stripped"
        );
    }
}

#[test]
fn upstream_cannot_set_gateway_cookies() {
    let up = Upstream::start();
    let gw = auth_gateway("", &up);
    for name in ["__Host-pc_access", "__host-pc_refresh", "__Host-pc_csrf"] {
        let r = get(&gw.url(&format!("/pub/set-cookie/{name}")), &[]);
        assert_eq!(r.status, 200);
        let cookies = r.header_all("set-cookie");
        assert!(
            cookies.iter().all(|c| !c
                .to_ascii_lowercase()
                .starts_with(&name.to_ascii_lowercase())),
            "{name}: {cookies:?}"
        );
        assert!(
            cookies.iter().any(|c| c.starts_with("app_session=kept")),
            "the app's own cookie passes: {cookies:?}"
        );
    }
}

#[test]
fn navigation_gets_a_redirect_api_gets_json_and_return_to_survives_login() {
    let up = Upstream::start();
    let gw = auth_gateway("", &up);
    let nav = get(
        &gw.url("/app/page?tab=2"),
        &[("Sec-Fetch-Mode", "navigate"), ("Accept", "text/html")],
    );
    assert_eq!(nav.status, 302);
    let location = nav.header("location").unwrap();
    assert_eq!(location, "/auth/login?return_to=%2Fapp%2Fpage%3Ftab%3D2");
    for headers in [
        vec![("Sec-Fetch-Mode", "cors"), ("Accept", "text/html")],
        vec![("Accept", "application/json")],
        vec![("X-Requested-With", "XMLHttpRequest")],
    ] {
        let r = get(&gw.url("/app/page"), &headers);
        assert_eq!(r.status, 401, "{headers:?}");
        assert_eq!(r.json()["login_url"], "/auth/login?return_to=%2Fapp%2Fpage");
        assert_eq!(r.header("www-authenticate").as_deref(), Some("Bearer"));
    }
    let r = post(&gw.url("/app/page"), &[("Accept", "text/html")], b"x=1");
    assert_eq!(
        r.status, 401,
        "a POST without Fetch Metadata is not a navigation"
    );
    // Follow the redirect through the form login: back to the original path and query.
    let page = get(&gw.url(&location), &[]);
    let csrf = set_cookies(&page)["__Host-pc_csrf"].value.clone();
    let start = page.body.find("name=\"return_to\" value=\"").unwrap() + 24;
    let return_to = &page.body[start..start + page.body[start..].find('"').unwrap()];
    assert_eq!(return_to, "/app/page?tab=2");
    let body: String = form_urlencoded::Serializer::new(String::new())
        .append_pair("email", "carol@example.com")
        .append_pair("password", PASSWORD)
        .append_pair("csrf", &csrf)
        .append_pair("return_to", return_to)
        .finish();
    let r = post(
        &gw.url("/auth/login"),
        &[
            ("Content-Type", "application/x-www-form-urlencoded"),
            ("Cookie", &format!("__Host-pc_csrf={csrf}")),
        ],
        body.as_bytes(),
    );
    assert_eq!(r.status, 303);
    assert_eq!(r.header("location").as_deref(), Some("/app/page?tab=2"));
    assert_eq!(up.count(), 0, "nothing was forwarded before login");
}

fn short_ttl_gateway(up: &Upstream) -> Gateway {
    auth_gateway(
        "tokens:\n  access_ttl: 1s\n  leeway: 0s\n  reuse_grace: 5s\n  signing_keys:\n    - { kid: ed1, algorithm: EdDSA, private_key_file: keys/ed1.private.pem }\n",
        up,
    )
}

#[test]
fn transparent_refresh_forwards_and_rotates_once_for_a_burst() {
    let up = Upstream::start();
    let gw = short_ttl_gateway(&up);
    let jar = Jar::from(&login_json(&gw, "carol@example.com", PASSWORD), "__Host-");
    std::thread::sleep(Duration::from_millis(2100));
    // One request with an expired access token: forwarded with the identity, new cookies set.
    let r = get(&gw.url("/app"), &[("Cookie", &jar.cookie_header())]);
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(r.body.starts_with("upstream:"));
    let c = set_cookies(&r);
    let new_access = c["__Host-pc_access"].value.clone();
    let new_refresh = c["__Host-pc_refresh"].value.clone();
    assert_ne!(new_access, jar.access);
    assert_ne!(new_refresh, jar.refresh);
    assert_eq!(
        up.requests()[0].header("x-forwarded-user").as_deref(),
        Some("carol")
    );
    assert_eq!(r.header_all("strict-transport-security").len(), 1);

    // A page's burst: 20 parallel requests after expiry share one rotation.
    let mut jar2 = jar.clone();
    jar2.access = new_access;
    jar2.refresh = new_refresh;
    std::thread::sleep(Duration::from_millis(2100));
    let rotations_before = gw
        .log()
        .matches("\"event\":\"transparent_refresh\"")
        .count();
    let barrier = Arc::new(std::sync::Barrier::new(20));
    let handles: Vec<_> = (0..20)
        .map(|i| {
            let (url, cookie, barrier) = (
                gw.url(&format!("/app/asset{i}")),
                jar2.cookie_header(),
                barrier.clone(),
            );
            std::thread::spawn(move || {
                barrier.wait();
                get(&url, &[("Cookie", &cookie)])
            })
        })
        .collect();
    let mut refreshes = std::collections::HashSet::new();
    let mut accesses = std::collections::HashSet::new();
    for h in handles {
        let r = h.join().unwrap();
        assert_eq!(r.status, 200, "{}", r.body);
        let c = set_cookies(&r);
        refreshes.insert(c["__Host-pc_refresh"].value.clone());
        accesses.insert(c["__Host-pc_access"].value.clone());
    }
    assert_eq!(refreshes.len(), 1, "one successor");
    assert_eq!(
        accesses.len(),
        1,
        "one rotation's result shared by the whole burst"
    );
    let rotations = gw
        .log()
        .matches("\"event\":\"transparent_refresh\"")
        .count()
        - rotations_before;
    assert_eq!(rotations, 1, "exactly one rotation");

    // A dead refresh token: the normal failure, and the cookies are cleared.
    let mut dead = jar2.clone();
    dead.refresh = "bogus".into();
    let r = get(&gw.url("/app"), &[("Cookie", &dead.cookie_header())]);
    assert_eq!(r.status, 401);
    assert_eq!(r.json()["error"], "token_expired");
    assert_refresh_cleared(&r, "cookies cleared after a failed transparent refresh");
}

#[test]
fn cross_site_unsafe_requests_are_refused_same_origin_pass() {
    let up = Upstream::start();
    let gw = auth_gateway("", &up);
    let jar = Jar::from(&login_json(&gw, "carol@example.com", PASSWORD), "__Host-");
    let cookie = jar.cookie_header();
    let origin = format!("http://127.0.0.1:{}", gw.port);
    let refused: Vec<Vec<(&str, &str)>> = vec![
        vec![("Sec-Fetch-Site", "cross-site")],
        vec![("Sec-Fetch-Site", "cross-site"), ("Origin", &origin)],
        vec![("Origin", "https://evil.test")],
        vec![("Origin", "null")],
    ];
    for extra in &refused {
        for method in ["POST", "PUT", "PATCH", "DELETE"] {
            let mut req = agent()
                .post(&gw.url("/app/transfer"))
                .header("Cookie", &cookie);
            if method != "POST" {
                req = match method {
                    "PUT" => agent()
                        .put(&gw.url("/app/transfer"))
                        .header("Cookie", &cookie),
                    "PATCH" => agent()
                        .patch(&gw.url("/app/transfer"))
                        .header("Cookie", &cookie),
                    _ => agent()
                        .delete(&gw.url("/app/transfer"))
                        .header("Cookie", &cookie)
                        .force_send_body(),
                };
            }
            for (k, v) in extra {
                req = req.header(*k, *v);
            }
            let r = snapshot(req.send(&b"amount=100"[..]).unwrap());
            assert_eq!(r.status, 403, "{method} {extra:?}");
            assert_eq!(r.json()["error"], "csrf");
        }
    }
    assert_eq!(up.count(), 0, "no cross-site request was forwarded");
    assert!(gw.log().contains("\"event\":\"csrf_blocked\""));
    for extra in [
        vec![("Origin", origin.as_str())],
        vec![("Sec-Fetch-Site", "same-origin")],
        vec![],
    ] {
        let mut h = vec![("Cookie", cookie.as_str())];
        h.extend(extra.iter().cloned());
        assert_eq!(
            post(&gw.url("/app/transfer"), &h, b"amount=1").status,
            200,
            "{extra:?}"
        );
    }
    // Bearer-authenticated requests are exempt (no ambient credential).
    let r = post(
        &gw.url("/app/api"),
        &[
            ("Authorization", &format!("Bearer {}", jar.access)),
            ("Sec-Fetch-Site", "cross-site"),
        ],
        b"{}",
    );
    assert_eq!(r.status, 200);
    // Safe methods are not affected.
    assert_eq!(
        get(
            &gw.url("/app/x"),
            &[("Cookie", &cookie), ("Sec-Fetch-Site", "cross-site")]
        )
        .status,
        200
    );
}

/// A WebSocket echo server that counts handshakes.
struct EchoWs {
    addr: std::net::SocketAddr,
    handshakes: Arc<AtomicUsize>,
}

impl EchoWs {
    fn start() -> Self {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let handshakes = Arc::new(AtomicUsize::new(0));
        let h = handshakes.clone();
        std::thread::spawn(move || {
            for stream in l.incoming().flatten() {
                let h = h.clone();
                std::thread::spawn(move || {
                    let Ok(mut ws) = tungstenite::accept(stream) else {
                        return;
                    };
                    h.fetch_add(1, Ordering::SeqCst);
                    while let Ok(msg) = ws.read() {
                        if msg.is_text() || msg.is_binary() {
                            let _ = ws.send(msg);
                        }
                    }
                });
            }
        });
        EchoWs { addr, handshakes }
    }
}

fn ws_connect(
    port: u16,
    headers: &[(&str, &str)],
) -> Result<tungstenite::WebSocket<std::net::TcpStream>, String> {
    use tungstenite::client::IntoClientRequest;
    let mut req = format!("ws://127.0.0.1:{port}/ws")
        .into_client_request()
        .unwrap();
    for (k, v) in headers {
        req.headers_mut().insert(
            http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
            http::HeaderValue::from_str(v).unwrap(),
        );
    }
    let stream = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    match tungstenite::client(req, stream) {
        Ok((ws, _)) => Ok(ws),
        Err(tungstenite::HandshakeError::Failure(tungstenite::Error::Http(r))) => {
            Err(format!("http {}", r.status().as_u16()))
        }
        Err(e) => Err(e.to_string()),
    }
}

#[test]
fn websockets_are_authenticated_origin_checked_and_closed_on_logout() {
    let echo = EchoWs::start();
    let dir = tempfile::tempdir().unwrap();
    crate::tokens::keygen(dir.path(), "EdDSA", "ed1");
    std::fs::write(dir.path().join("users.yaml"), crate::auth::users_yaml()).unwrap();
    let gw = Gateway::start_in(
        &format!(
            "tokens:\n  signing_keys:\n    - {{ kid: ed1, algorithm: EdDSA, private_key_file: keys/ed1.private.pem }}\nusers: {{ file: users.yaml }}\nupstreams:\n  ws: {{ addresses: [\"{}\"] }}\nroutes:\n  - {{ path_prefix: /, upstream: ws }}\n",
            echo.addr
        ),
        dir,
    );
    let origin = format!("http://127.0.0.1:{}", gw.port);
    // Unauthenticated: refused, nothing forwarded.
    assert_eq!(
        ws_connect(gw.port, &[("Origin", &origin)]).unwrap_err(),
        "http 401"
    );
    let jar = Jar::from(&login_json(&gw, "carol@example.com", PASSWORD), "__Host-");
    let cookie = jar.cookie_header();
    // A foreign Origin: refused even with a valid session (cross-site WebSocket hijacking).
    assert_eq!(
        ws_connect(
            gw.port,
            &[("Cookie", &cookie), ("Origin", "https://evil.test")]
        )
        .unwrap_err(),
        "http 403"
    );
    assert_eq!(
        ws_connect(gw.port, &[("Cookie", &cookie)]).unwrap_err(),
        "http 403",
        "no Origin"
    );
    assert_eq!(
        echo.handshakes.load(Ordering::SeqCst),
        0,
        "nothing reached the upstream"
    );
    // h2c upgrades are refused.
    let (status, _) = raw(gw.port, format!("GET / HTTP/1.1\r\nHost: x\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQAoAAAAAIAAAAA\r\nCookie: {cookie}\r\n\r\n").as_bytes()).unwrap();
    assert_eq!(status, 400);
    // Authenticated and same-origin: an echo session works.
    let mut ws = ws_connect(gw.port, &[("Cookie", &cookie), ("Origin", &origin)]).unwrap();
    ws.send(tungstenite::Message::text("hello")).unwrap();
    assert_eq!(ws.read().unwrap().into_text().unwrap().as_str(), "hello");
    assert_eq!(echo.handshakes.load(Ordering::SeqCst), 1);
    // Logout closes it within 1 s.
    let lo = post(
        &gw.url("/auth/logout"),
        &[("Cookie", &cookie), ("X-CSRF-Token", &jar.csrf)],
        b"",
    );
    assert_eq!(lo.status, 200);
    let t = Instant::now();
    let closed = loop {
        match ws.read() {
            Ok(tungstenite::Message::Close(_)) | Err(_) => break t.elapsed(),
            Ok(_) => continue,
        }
    };
    assert!(closed < Duration::from_secs(1), "closed after {closed:?}");
    assert!(gw.log().contains("\"event\":\"websocket_closed\""));
    let _ = std::io::stdout().flush();
}
