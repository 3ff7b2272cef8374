//! The browser sign-out page and its form, and the HTML pages a navigation gets when it is
//! refused (a missing role, a cross-site request, an ended session) while other clients keep
//! getting JSON: against the real binary, with a plain HTTP client.

use crate::auth::{login_json, set_cookies, users_yaml, Jar, PASSWORD};
use crate::harness::*;
use crate::tokens::keygen;
use serde_json::json;

const NAV: [(&str, &str); 2] = [("Sec-Fetch-Mode", "navigate"), ("Accept", "text/html")];
const FORM: &str = "application/x-www-form-urlencoded";

/// A gateway with the test users, a public `/pub`, an admin-only `/admin` and everything
/// else behind a login.
fn gateway(up: &Upstream) -> Gateway {
    let dir = tempfile::tempdir().unwrap();
    keygen(dir.path(), "EdDSA", "ed1");
    std::fs::write(dir.path().join("users.yaml"), users_yaml()).unwrap();
    Gateway::start_in(
        &format!(
            "tokens:\n  signing_keys:\n    - {{ kid: ed1, algorithm: EdDSA, private_key_file: keys/ed1.private.pem }}\nusers: {{ file: users.yaml }}\nrate_limits: {{ login_per_ip: 1000/1m, login_per_account: 1000/1m, login_per_account_ip: 1000/1m, login_per_device: 1000/1m, refresh_per_ip: 1000/1m }}\nupstreams:\n  app: {{ addresses: [\"{}\"] }}\nroutes:\n  - {{ path_prefix: /pub, upstream: app, auth: public }}\n  - {{ path_prefix: /admin, upstream: app, roles: [admin] }}\n  - {{ path_prefix: /, upstream: app }}\n",
            up.addr
        ),
        dir,
    )
}

fn login(gw: &Gateway, email: &str) -> Jar {
    let r = login_json(gw, email, PASSWORD);
    assert_eq!(r.status, 200, "{}", r.body);
    Jar::from(&r, "__Host-")
}

fn assert_page(r: &Resp, status: u16, text: &str) {
    assert_eq!(r.status, status, "{}", r.body);
    let ct = r.header("content-type").unwrap_or_default();
    assert!(ct.starts_with("text/html"), "{ct}: {}", r.body);
    assert!(r.body.starts_with("<!doctype html>"), "{}", r.body);
    assert!(r.body.contains(text), "{text:?} in {}", r.body);
    assert!(!r.body.contains("<script") && !r.body.contains("<link"));
}

/// The value of the page's hidden `csrf` field.
fn csrf_field(body: &str) -> String {
    let start = body.find("name=\"csrf\" value=\"").expect("a csrf field") + 19;
    body[start..start + body[start..].find('"').unwrap()].to_string()
}

fn form_logout(gw: &Gateway, cookie: &str, body: &str) -> Resp {
    post(
        &gw.url("/auth/logout"),
        &[("Cookie", cookie), ("Content-Type", FORM)],
        body.as_bytes(),
    )
}

fn bearer(gw: &Gateway, path: &str, jar: &Jar) -> Resp {
    let auth = format!("Bearer {}", jar.access);
    get(&gw.url(path), &[("Authorization", &auth)])
}

#[test]
fn the_sign_out_page_carries_the_csrf_cookie_in_its_form() {
    let up = Upstream::start();
    let gw = gateway(&up);
    // A browser without the CSRF cookie gets one, and the form carries its value.
    let r = get(&gw.url("/auth/logout"), &NAV);
    assert_page(&r, 200, "<form method=\"post\" action=\"/auth/logout\"");
    assert!(r.body.contains("Sign out</button>"), "{}", r.body);
    assert_eq!(r.header("cache-control").as_deref(), Some("no-store"));
    let set = set_cookies(&r);
    let cookie = &set["__Host-pc_csrf"];
    assert!(cookie.value.len() >= 32 && !cookie.has("HttpOnly"));
    assert_eq!(csrf_field(&r.body), cookie.value);
    // A signed-in browser keeps its own CSRF cookie.
    let jar = login(&gw, "carol@example.com");
    let r = get(
        &gw.url("/auth/logout"),
        &[("Cookie", &jar.cookie_header()), NAV[0]],
    );
    assert_page(&r, 200, "Sign out");
    assert_eq!(csrf_field(&r.body), jar.csrf);
    assert!(!set_cookies(&r).contains_key("__Host-pc_csrf"));
}

#[test]
fn the_sign_out_form_ends_the_session_and_shows_the_signed_out_page() {
    let up = Upstream::start();
    let gw = gateway(&up);
    let jar = login(&gw, "carol@example.com");
    assert_eq!(bearer(&gw, "/app", &jar).status, 200);
    let page = get(
        &gw.url("/auth/logout"),
        &[("Cookie", &jar.cookie_header()), NAV[0]],
    );
    let body = format!("csrf={}", csrf_field(&page.body));
    let r = form_logout(&gw, &jar.cookie_header(), &body);
    assert_eq!(r.status, 303, "{}", r.body);
    let location = r.header("location").unwrap();
    assert_eq!(location, "/auth/logout?signed_out=1");
    let cleared = set_cookies(&r);
    for name in ["__Host-pc_access", "__Host-pc_refresh", "__Host-pc_csrf"] {
        assert_eq!(
            cleared[name].attr("Max-Age").as_deref(),
            Some("0"),
            "{name}"
        );
    }
    let done = get(&gw.url(&location), &NAV);
    assert_page(&done, 200, "You have signed out");
    assert!(done.body.contains("href=\"/\""), "{}", done.body);
    // The access token is dead at once, the refresh family too.
    let r = bearer(&gw, "/app", &jar);
    assert_eq!(r.status, 401);
    assert_eq!(r.json()["error"], "token_revoked");
    let r = get(&gw.url("/app"), &[("Cookie", &jar.cookie_header())]);
    assert_eq!(r.status, 401);
    assert_eq!(r.json()["error"], "token_revoked");
    // The browser dropped its cookies: a protected navigation goes to the login page.
    let r = get(&gw.url("/app/page"), &NAV);
    assert_eq!(r.status, 302);
    assert_eq!(
        r.header("location").as_deref(),
        Some("/auth/login?return_to=%2Fapp%2Fpage")
    );
    // Audited as the JSON logout is, without a secret in the log.
    let log = gw.log();
    assert!(log.contains("\"event\":\"logout\""), "{log}");
    assert!(!log.contains(&jar.access) && !log.contains(&jar.refresh));

    // A safe return_to comes back on the signed-out page; another site's does not.
    let jar = login(&gw, "carol@example.com");
    let body = format!("csrf={}&return_to=%2Fapp%2Fx%3Fa%3D1", jar.csrf);
    let r = form_logout(&gw, &jar.cookie_header(), &body);
    assert_eq!(r.status, 303, "{}", r.body);
    let location = r.header("location").unwrap();
    assert_eq!(
        location,
        "/auth/logout?signed_out=1&return_to=%2Fapp%2Fx%3Fa%3D1"
    );
    let done = get(&gw.url(&location), &NAV);
    assert_page(&done, 200, "href=\"/app/x?a=1\"");
    let jar = login(&gw, "carol@example.com");
    let body = format!("csrf={}&return_to=https%3A%2F%2Fevil.test%2F", jar.csrf);
    let r = form_logout(&gw, &jar.cookie_header(), &body);
    assert_eq!(
        r.header("location").as_deref(),
        Some("/auth/logout?signed_out=1")
    );
    let done = get(
        &gw.url("/auth/logout?signed_out=1&return_to=//evil.test"),
        &NAV,
    );
    assert!(!done.body.contains("evil.test"), "{}", done.body);
}

#[test]
fn a_sign_out_form_without_the_right_csrf_gets_a_403_page_and_changes_nothing() {
    let up = Upstream::start();
    let gw = gateway(&up);
    let jar = login(&gw, "carol@example.com");
    let wrong = format!("csrf={}x", jar.csrf);
    for body in [wrong.as_str(), "", "csrf="] {
        let r = form_logout(&gw, &jar.cookie_header(), body);
        assert_page(&r, 403, "Request refused");
        assert!(r.header_all("set-cookie").is_empty(), "{body:?}");
    }
    // No CSRF cookie at all: the field cannot match anything.
    let cookie = format!("__Host-pc_access={}", jar.access);
    let r = form_logout(&gw, &cookie, &format!("csrf={}", jar.csrf));
    assert_page(&r, 403, "Request refused");
    assert_eq!(bearer(&gw, "/app", &jar).status, 200, "still signed in");
}

#[test]
fn the_json_logout_is_unchanged() {
    let up = Upstream::start();
    let gw = gateway(&up);
    let jar = login(&gw, "carol@example.com");
    let url = gw.url("/auth/logout");
    let cookie = jar.cookie_header();
    // Without the CSRF header: JSON 403, and a body that is neither JSON nor a form: 415.
    let r = post(&url, &[("Cookie", &cookie)], b"");
    assert_eq!(r.status, 403);
    assert_eq!(r.json()["error"], "csrf");
    let r = post(
        &url,
        &[
            ("Cookie", &cookie),
            ("X-CSRF-Token", &jar.csrf),
            ("Content-Type", "text/plain"),
        ],
        b"x",
    );
    assert_eq!(r.status, 415);
    assert_eq!(bearer(&gw, "/app", &jar).status, 200);
    let r = post(
        &url,
        &[
            ("Cookie", &cookie),
            ("X-CSRF-Token", &jar.csrf),
            ("Content-Type", "application/json"),
        ],
        b"{}",
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json(), json!({"ok": true}));
    assert_eq!(set_cookies(&r)["__Host-pc_access"].value, "");
    assert_eq!(bearer(&gw, "/app", &jar).json()["error"], "token_revoked");
    let jar = login(&gw, "carol@example.com");
    let r = post(
        &url,
        &[
            ("Cookie", &jar.cookie_header()),
            ("X-CSRF-Token", &jar.csrf),
        ],
        b"",
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json(), json!({"ok": true}));
    // Bearer-only: no CSRF applies.
    let jar = login(&gw, "carol@example.com");
    let auth = format!("Bearer {}", jar.access);
    let r = post(&url, &[("Authorization", &auth)], b"");
    assert_eq!(r.status, 200, "{}", r.body);
}

#[test]
fn refused_navigations_get_pages_and_other_clients_json() {
    let up = Upstream::start();
    let gw = gateway(&up);
    let carol = login(&gw, "carol@example.com");
    let alice = login(&gw, "alice@example.com");
    let cookie = carol.cookie_header();
    // Without the role: a page for a navigation, JSON otherwise, 403 both.
    for nav in [&NAV[..], &NAV[1..]] {
        let headers = [nav, &[("Cookie", cookie.as_str())]].concat();
        let r = get(&gw.url("/admin/panel"), &headers);
        assert_page(&r, 403, "Access denied");
    }
    let r = get(&gw.url("/admin/panel"), &[("Cookie", &cookie)]);
    assert_eq!(r.status, 403);
    assert_eq!(r.json()["error"], "forbidden");
    let r = get(
        &gw.url("/admin/panel"),
        &[
            ("Cookie", &cookie),
            ("Sec-Fetch-Mode", "cors"),
            ("Accept", "text/html"),
        ],
    );
    assert_eq!(r.json()["error"], "forbidden");
    assert_eq!(bearer(&gw, "/admin/panel", &alice).status, 200);
    // A cross-site form post that navigates: a page; the same from a script: JSON.
    let cross = |mode: &'static str| {
        post(
            &gw.url("/app/save"),
            &[
                ("Cookie", cookie.as_str()),
                ("Sec-Fetch-Site", "cross-site"),
                ("Sec-Fetch-Mode", mode),
                ("Content-Type", FORM),
            ],
            b"x=1",
        )
    };
    assert_page(&cross("navigate"), 403, "Request refused");
    assert_eq!(cross("cors").json()["error"], "csrf");

    // An ended session: a page that offers to sign in again, back to the same place.
    let r = post(
        &gw.url("/auth/logout"),
        &[("Cookie", &cookie), ("X-CSRF-Token", &carol.csrf)],
        b"",
    );
    assert_eq!(r.status, 200, "{}", r.body);
    for nav in [&NAV[..], &NAV[1..]] {
        let headers = [nav, &[("Cookie", cookie.as_str())]].concat();
        let r = get(&gw.url("/app/page?tab=2"), &headers);
        assert_page(&r, 401, "Your session has ended");
        assert!(
            r.body
                .contains("href=\"/auth/login?return_to=%2Fapp%2Fpage%3Ftab%3D2\""),
            "{}",
            r.body
        );
        assert!(r.header("www-authenticate").is_some());
    }
    let r = get(&gw.url("/app/page"), &[("Cookie", &cookie)]);
    assert_eq!(r.status, 401);
    assert_eq!(r.json()["error"], "token_revoked");
    assert_eq!(r.json()["login_url"], "/auth/login?return_to=%2Fapp%2Fpage");
    let r = bearer(&gw, "/app/page", &carol);
    assert_eq!(r.json()["error"], "token_revoked");
}
