//! Login, refresh rotation with reuse detection, logout: against the real binary with a real
//! sled database in a temp dir.

use crate::harness::*;
use crate::tokens::keygen;
use serde_json::json;
use std::collections::HashMap;
use std::time::{Duration, Instant};

pub const PASSWORD: &str = "test-only violet lantern staple";

/// A parsed `Set-Cookie`.
#[derive(Debug, Clone)]
pub struct SetCookie {
    pub value: String,
    pub attrs: Vec<String>,
}

impl SetCookie {
    pub fn has(&self, attr: &str) -> bool {
        self.attrs.iter().any(|a| a.eq_ignore_ascii_case(attr))
    }

    pub fn attr(&self, name: &str) -> Option<String> {
        self.attrs.iter().find_map(|a| {
            let (k, v) = a.split_once('=')?;
            k.eq_ignore_ascii_case(name).then(|| v.to_string())
        })
    }
}

pub fn set_cookies(r: &Resp) -> HashMap<String, SetCookie> {
    r.header_all("set-cookie")
        .iter()
        .map(|h| {
            let mut parts = h.split(';').map(str::trim);
            let (name, value) = parts.next().unwrap().split_once('=').unwrap();
            let attrs = parts.map(str::to_string).collect();
            (
                name.to_string(),
                SetCookie {
                    value: value.to_string(),
                    attrs,
                },
            )
        })
        .collect()
}

/// The browser side of one session: the three cookie values.
#[derive(Debug, Clone)]
pub struct Jar {
    pub access: String,
    pub refresh: String,
    pub csrf: String,
    pub prefix: &'static str,
}

impl Jar {
    pub fn from(r: &Resp, prefix: &'static str) -> Jar {
        let c = set_cookies(r);
        Jar {
            access: c[&format!("{prefix}pc_access")].value.clone(),
            refresh: c[&format!("{prefix}pc_refresh")].value.clone(),
            csrf: c[&format!("{prefix}pc_csrf")].value.clone(),
            prefix,
        }
    }

    /// Take rotated cookies from a refresh response.
    pub fn update(&mut self, r: &Resp) {
        let c = set_cookies(r);
        if let Some(a) = c.get(&format!("{}pc_access", self.prefix)) {
            self.access = a.value.clone();
        }
        if let Some(a) = c.get(&format!("{}pc_refresh", self.prefix)) {
            self.refresh = a.value.clone();
        }
    }

    pub fn cookie_header(&self) -> String {
        let p = self.prefix;
        format!(
            "{p}pc_access={}; {p}pc_refresh={}; {p}pc_csrf={}",
            self.access, self.refresh, self.csrf
        )
    }

    pub fn refresh_only(&self) -> String {
        let p = self.prefix;
        format!("{p}pc_refresh={}; {p}pc_csrf={}", self.refresh, self.csrf)
    }
}

pub fn users_yaml() -> String {
    let h = portcullis::auth::password::hash_password(PASSWORD);
    format!(
        "users:\n  alice: {{ email: alice@example.com, password: \"{h}\", roles: [admin, user] }}\n  bob: {{ email: bob@example.com, password: \"{h}\", roles: [user], disabled: true }}\n  carol: {{ email: carol@example.com, password: \"{h}\", roles: [user] }}\n"
    )
}

/// A gateway with an EdDSA key, the users above, and `extra` config lines.
pub fn auth_gateway(extra: &str, up: &Upstream) -> Gateway {
    let dir = tempfile::tempdir().unwrap();
    keygen(dir.path(), "EdDSA", "ed1");
    std::fs::write(dir.path().join("users.yaml"), users_yaml()).unwrap();
    let rate = if extra.contains("rate_limits:") {
        ""
    } else {
        "rate_limits: { login_per_ip: 1000/1m, login_per_account: 1000/1m, login_per_account_ip: 1000/1m, login_per_device: 1000/1m, refresh_per_ip: 1000/1m }\n"
    };
    let tokens = if extra.contains("tokens:") {
        String::new()
    } else {
        "tokens:\n  reuse_grace: 1s\n  signing_keys:\n    - { kid: ed1, algorithm: EdDSA, private_key_file: keys/ed1.private.pem }\n".to_string()
    };
    let routes = if extra.contains("upstreams:") {
        String::new()
    } else {
        format!("upstreams:\n  app: {{ addresses: [\"{}\"] }}\nroutes:\n  - {{ path_prefix: /pub, upstream: app, auth: public }}\n  - {{ path_prefix: /, upstream: app }}\n", up.addr)
    };
    Gateway::start_in(
        &format!("{tokens}users: {{ file: users.yaml }}\n{rate}{extra}{routes}"),
        dir,
    )
}

pub fn login_json(gw: &Gateway, email: &str, password: &str) -> Resp {
    let body = json!({"email": email, "password": password}).to_string();
    post(
        &gw.url("/auth/login"),
        &[("Content-Type", "application/json")],
        body.as_bytes(),
    )
}

/// A JSON login claiming to come from `xff` (believed only from a trusted proxy).
pub fn login_claiming(gw: &Gateway, xff: &str, email: &str, password: &str) -> Resp {
    let body = json!({"email": email, "password": password}).to_string();
    post(
        &gw.url("/auth/login"),
        &[
            ("Content-Type", "application/json"),
            ("X-Forwarded-For", xff),
        ],
        body.as_bytes(),
    )
}

/// The response clears the refresh cookie (`Max-Age=0`).
pub fn assert_refresh_cleared(r: &Resp, why: &str) {
    assert_eq!(
        set_cookies(r)["__Host-pc_refresh"]
            .attr("Max-Age")
            .as_deref(),
        Some("0"),
        "{why}"
    );
}

pub fn refresh(gw: &Gateway, jar: &Jar) -> Resp {
    post(
        &gw.url("/auth/refresh"),
        &[("Cookie", &jar.refresh_only()), ("X-CSRF-Token", &jar.csrf)],
        b"",
    )
}

pub fn proxied(gw: &Gateway, jar: &Jar) -> Resp {
    get(&gw.url("/app"), &[("Cookie", &jar.cookie_header())])
}

#[test]
fn login_session_refresh_logout_happy_paths_with_exact_cookies() {
    let up = Upstream::start();
    let gw = auth_gateway("", &up);
    let r = login_json(&gw, "Alice@Example.com", PASSWORD);
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.header("cache-control").as_deref(), Some("no-store"));
    let b = r.json();
    assert_eq!(b["token_type"], "Bearer");
    assert_eq!(b["expires_in"], 900);
    assert_eq!(
        b["user"],
        json!({"id": "alice", "email": "alice@example.com", "roles": ["admin", "user"]})
    );
    let c = set_cookies(&r);
    assert_eq!(c.len(), 4, "{c:?}");
    // The device cookie: this browser is now one the account signed in from.
    let device = c["__Host-pc_device"].clone();
    assert!(device.has("HttpOnly") && device.has("Secure"), "{device:?}");
    assert_eq!(device.attr("Max-Age").as_deref(), Some("7776000"));
    let access = &c["__Host-pc_access"];
    assert_eq!(access.value, b["access_token"].as_str().unwrap());
    for (name, http_only, max_age) in [
        ("__Host-pc_access", true, 900u64),
        ("__Host-pc_refresh", true, 7 * 86400),
        ("__Host-pc_csrf", false, 7 * 86400),
    ] {
        let k = &c[name];
        assert_eq!(k.has("HttpOnly"), http_only, "{name}");
        assert!(k.has("Secure"), "{name}");
        assert_eq!(k.attr("Path").as_deref(), Some("/"), "{name}");
        assert_eq!(k.attr("SameSite").as_deref(), Some("Strict"), "{name}");
        assert!(k.attr("Domain").is_none(), "{name}");
        let age: u64 = k.attr("Max-Age").unwrap().parse().unwrap();
        assert!(age <= max_age && age + 5 >= max_age, "{name} Max-Age {age}");
    }
    let refresh_value = c["__Host-pc_refresh"].value.clone();
    assert!(
        refresh_value.len() >= 43 && !refresh_value.contains('.'),
        "opaque, 256 bits: {refresh_value}"
    );
    assert!(
        !r.body.contains(&refresh_value),
        "the refresh token never appears in a body"
    );
    let mut jar = Jar::from(&r, "__Host-");

    // Session info.
    let s = get(
        &gw.url("/auth/session"),
        &[("Cookie", &jar.cookie_header())],
    );
    assert_eq!(s.status, 200, "{}", s.body);
    let sb = s.json();
    assert_eq!(sb["user"]["id"], "alice");
    assert_eq!(sb["warn_before"], 300);
    assert_eq!(sb["banner"], true);
    assert!(sb["idle_expires_at"].as_str() <= sb["session_expires_at"].as_str());
    for k in ["access_expires_at", "session_expires_at", "idle_expires_at"] {
        let t = sb[k].as_str().unwrap();
        assert!(
            t.len() == 20 && t.ends_with('Z') && t.as_bytes()[10] == b'T',
            "{k}: RFC 3339: {t}"
        );
    }
    assert_eq!(get(&gw.url("/auth/session"), &[]).status, 401);

    // A proxied request carries the identity.
    assert_eq!(proxied(&gw, &jar).status, 200);
    let seen = up.requests().pop().unwrap();
    assert_eq!(seen.header("x-forwarded-user").as_deref(), Some("alice"));
    assert_eq!(
        seen.header("x-forwarded-groups").as_deref(),
        Some("admin,user")
    );
    // None of the gateway's cookies reaches the application, the device cookie included.
    let with_device = format!(
        "{}; __Host-pc_device={}; app=1",
        jar.cookie_header(),
        device.value
    );
    assert_eq!(
        get(&gw.url("/app"), &[("Cookie", &with_device)]).status,
        200
    );
    let seen = up.requests().pop().unwrap();
    assert_eq!(seen.header("cookie").as_deref(), Some("app=1"));

    // Refresh rotates both cookies.
    let rr = refresh(&gw, &jar);
    assert_eq!(rr.status, 200, "{}", rr.body);
    assert_eq!(rr.json()["token_type"], "Bearer");
    assert!(rr.json().get("refresh_token").is_none());
    let old = jar.clone();
    jar.update(&rr);
    assert_ne!(jar.refresh, old.refresh);
    assert_ne!(jar.access, old.access);
    assert!(!rr.body.contains(&jar.refresh));
    assert_eq!(proxied(&gw, &jar).status, 200);

    // Logout: cookies cleared, the access token refused at once, the family dead.
    let lo = post(
        &gw.url("/auth/logout"),
        &[
            ("Cookie", &jar.cookie_header()),
            ("X-CSRF-Token", &jar.csrf),
        ],
        b"",
    );
    assert_eq!(lo.status, 200, "{}", lo.body);
    assert_eq!(lo.json(), json!({"ok": true}));
    let cleared = set_cookies(&lo);
    for name in ["__Host-pc_access", "__Host-pc_refresh", "__Host-pc_csrf"] {
        assert_eq!(
            cleared[name].attr("Max-Age").as_deref(),
            Some("0"),
            "{name}"
        );
        assert_eq!(cleared[name].value, "");
    }
    let r = get(
        &gw.url("/app"),
        &[("Authorization", &format!("Bearer {}", jar.access))],
    );
    assert_eq!(r.status, 401);
    assert_eq!(r.json()["error"], "token_revoked");
    assert_eq!(refresh(&gw, &jar).status, 403);
    // Idempotent.
    let again = post(
        &gw.url("/auth/logout"),
        &[
            ("Cookie", &jar.cookie_header()),
            ("X-CSRF-Token", &jar.csrf),
        ],
        b"",
    );
    assert_eq!(again.status, 200);
}

#[test]
fn logout_all_ends_every_session_and_logout_works_with_an_expired_token() {
    let up = Upstream::start();
    let gw = auth_gateway("", &up);
    let a = Jar::from(&login_json(&gw, "carol@example.com", PASSWORD), "__Host-");
    let b = Jar::from(&login_json(&gw, "carol@example.com", PASSWORD), "__Host-");
    assert_eq!(post(&gw.url("/auth/logout-all"), &[], b"").status, 401);
    let r = post(
        &gw.url("/auth/logout-all"),
        &[("Authorization", &format!("Bearer {}", a.access))],
        b"",
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["sessions_revoked"], 2);
    for jar in [&a, &b] {
        assert_eq!(proxied(&gw, jar).status, 401);
        assert_eq!(refresh(&gw, jar).status, 403);
    }
    // Logout with an access token that has expired (1 s TTL, no leeway).
    let up2 = Upstream::start();
    let gw2 = auth_gateway(
        "tokens:\n  access_ttl: 1s\n  leeway: 0s\n  signing_keys:\n    - { kid: ed1, algorithm: EdDSA, private_key_file: keys/ed1.private.pem }\n",
        &up2,
    );
    let jar = Jar::from(&login_json(&gw2, "carol@example.com", PASSWORD), "__Host-");
    std::thread::sleep(Duration::from_millis(2100));
    assert_eq!(
        get(
            &gw2.url("/app"),
            &[("Authorization", &format!("Bearer {}", jar.access))]
        )
        .json()["error"],
        "token_expired"
    );
    let r = post(
        &gw2.url("/auth/logout"),
        &[("Authorization", &format!("Bearer {}", jar.access))],
        b"",
    );
    assert_eq!(r.status, 200);
    assert_eq!(
        refresh(&gw2, &jar).status,
        403,
        "the family of the expired token is revoked too"
    );
}

#[test]
fn form_login_with_csrf_and_return_to() {
    let up = Upstream::start();
    let gw = auth_gateway("", &up);
    let page = get(&gw.url("/auth/login?return_to=%2Fapp%3Fx%3D1"), &[]);
    assert_eq!(page.status, 200);
    assert!(page
        .header("content-type")
        .unwrap()
        .starts_with("text/html"));
    assert_eq!(page.header("cache-control").as_deref(), Some("no-store"));
    assert_eq!(page.header_all("content-security-policy").len(), 1);
    let csrf = set_cookies(&page)["__Host-pc_csrf"].value.clone();
    assert!(page
        .body
        .contains(&format!("name=\"csrf\" value=\"{csrf}\"")));
    assert!(page.body.contains("name=\"return_to\" value=\"/app?x=1\""));
    assert!(
        !page.body.contains("http://") && !page.body.contains("https://"),
        "no external assets"
    );
    let form = |csrf_field: &str, password: &str, return_to: &str| {
        let body: String = form_urlencoded::Serializer::new(String::new())
            .append_pair("email", "alice@example.com")
            .append_pair("password", password)
            .append_pair("csrf", csrf_field)
            .append_pair("return_to", return_to)
            .finish();
        post(
            &gw.url("/auth/login"),
            &[
                ("Content-Type", "application/x-www-form-urlencoded"),
                ("Cookie", &format!("__Host-pc_csrf={csrf}")),
            ],
            body.as_bytes(),
        )
    };
    let r = form(&csrf, PASSWORD, "/app?x=1");
    assert_eq!(r.status, 303, "{}", r.body);
    assert_eq!(r.header("location").as_deref(), Some("/app?x=1"));
    assert_eq!(
        set_cookies(&r).len(),
        4,
        "the session's three and the device cookie"
    );
    assert_eq!(form("forged", PASSWORD, "/").status, 403, "login CSRF");
    let wrong = form(&csrf, "nope", "/app");
    assert_eq!(wrong.status, 200);
    assert!(wrong.body.contains("The email or password is incorrect."));
    assert!(!set_cookies(&wrong).contains_key("__Host-pc_access"));
    for evil in ["https://evil.test/", "//evil.test/x", "/\\evil.test"] {
        assert_eq!(
            form(&csrf, PASSWORD, evil).header("location").as_deref(),
            Some("/"),
            "{evil}"
        );
    }
}

#[test]
fn unknown_wrong_and_disabled_look_the_same_and_take_the_same_time() {
    let up = Upstream::start();
    let gw = auth_gateway("", &up);
    let cases = [
        ("nobody@example.com", PASSWORD),
        ("alice@example.com", "wrong password"),
        ("bob@example.com", PASSWORD),
    ];
    let mut times: Vec<Vec<f64>> = vec![Vec::new(); 3];
    let mut bodies = Vec::new();
    for round in 0..9 {
        for (i, (email, pw)) in cases.iter().enumerate() {
            let t = Instant::now();
            let r = login_json(&gw, email, pw);
            times[i].push(t.elapsed().as_secs_f64());
            assert_eq!(r.status, 401, "{email}");
            if round == 0 {
                bodies.push(r.body.clone());
            }
        }
    }
    assert!(
        bodies.iter().all(|b| b == &bodies[0]),
        "same body: {bodies:?}"
    );
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&bodies[0]).unwrap()["error"],
        "invalid_credentials"
    );
    // The fastest of each case: what the work itself costs. Load on a shared machine only
    // ever adds time, so the minimum tells a cheaper path from noise where a median does not.
    let fastest: Vec<f64> = times
        .iter()
        .map(|t| t.iter().cloned().fold(f64::MAX, f64::min))
        .collect();
    let (min, max) = (
        fastest.iter().cloned().fold(f64::MAX, f64::min),
        fastest.iter().cloned().fold(0.0, f64::max),
    );
    assert!(
        max / min <= 1.5,
        "fastest latencies unknown/wrong/disabled: {fastest:?}"
    );
}

#[test]
fn rotation_grace_replay_and_reuse_detection() {
    let up = Upstream::start();
    let gw = auth_gateway("", &up);
    let mut jar = Jar::from(&login_json(&gw, "alice@example.com", PASSWORD), "__Host-");
    let t0 = jar.clone();
    let r1 = refresh(&gw, &jar);
    assert_eq!(r1.status, 200);
    jar.update(&r1);
    let t1 = jar.clone();
    // The immediate parent inside the grace window: the identical successor.
    let replay = refresh(&gw, &t0);
    assert_eq!(replay.status, 200, "{}", replay.body);
    assert_eq!(
        set_cookies(&replay)["__Host-pc_refresh"].value,
        t1.refresh,
        "same successor"
    );
    // Rotate again: t0 is now a grandparent; inside the window that is reuse.
    let r2 = refresh(&gw, &jar);
    assert_eq!(r2.status, 200);
    jar.update(&r2);
    let reuse = refresh(&gw, &t0);
    assert_eq!(reuse.status, 403);
    assert_eq!(reuse.json()["error"], "refresh_token_reused");
    assert_refresh_cleared(&reuse, "cookies cleared on 403");
    // The newest token of the family is dead, and so is its access token.
    let newest = refresh(&gw, &jar);
    assert_eq!(newest.status, 403);
    assert_eq!(newest.json()["error"], "invalid_refresh_token");
    let r = proxied(&gw, &jar);
    assert_eq!(r.status, 401);
    assert_eq!(r.json()["error"], "token_revoked");
    assert!(
        gw.log().contains("\"event\":\"refresh_token_reused\""),
        "audit event logged"
    );

    // The parent after the grace window is reuse too.
    let mut jar = Jar::from(&login_json(&gw, "carol@example.com", PASSWORD), "__Host-");
    let parent = jar.clone();
    let r = refresh(&gw, &jar);
    jar.update(&r);
    std::thread::sleep(Duration::from_millis(2100));
    let late = refresh(&gw, &parent);
    assert_eq!(late.status, 403);
    assert_eq!(late.json()["error"], "refresh_token_reused");
    assert_eq!(refresh(&gw, &jar).status, 403, "newest dead");
    assert_eq!(proxied(&gw, &jar).status, 401, "access token dead");
    // Nothing about the tokens reached the log.
    let log = gw.log();
    assert!(!log.contains(&jar.refresh) && !log.contains(&jar.access) && !log.contains(PASSWORD));
}

#[test]
fn fifty_concurrent_refreshes_yield_one_successor() {
    let up = Upstream::start();
    let gw = auth_gateway("", &up);
    let jar = Jar::from(&login_json(&gw, "alice@example.com", PASSWORD), "__Host-");
    let url = gw.url("/auth/refresh");
    let barrier = std::sync::Arc::new(std::sync::Barrier::new(50));
    let handles: Vec<_> = (0..50)
        .map(|_| {
            let (jar, url, barrier) = (jar.clone(), url.clone(), barrier.clone());
            std::thread::spawn(move || {
                barrier.wait();
                post(
                    &url,
                    &[("Cookie", &jar.refresh_only()), ("X-CSRF-Token", &jar.csrf)],
                    b"",
                )
            })
        })
        .collect();
    let mut successors = std::collections::HashSet::new();
    let mut ok = 0;
    for h in handles {
        let r = h.join().unwrap();
        assert!(r.status == 200 || r.status == 403, "{}", r.status);
        if r.status == 200 {
            ok += 1;
            successors.insert(set_cookies(&r)["__Host-pc_refresh"].value.clone());
        }
    }
    assert!(ok >= 1);
    assert_eq!(
        successors.len(),
        1,
        "exactly one distinct successor among {ok} successes"
    );
    // And it works.
    let mut next = jar.clone();
    next.refresh = successors.into_iter().next().unwrap();
    assert_eq!(refresh(&gw, &next).status, 200);
}

#[test]
fn crash_safety_with_sigkill() {
    let up = Upstream::start();
    let mut gw = auth_gateway("", &up);
    let mut jar = Jar::from(&login_json(&gw, "alice@example.com", PASSWORD), "__Host-");
    let rotated = jar.clone();
    let r = refresh(&gw, &jar);
    assert_eq!(r.status, 200);
    jar.update(&r);
    gw.kill(); // SIGKILL right after the response
    gw.spawn();
    std::thread::sleep(Duration::from_millis(2100)); // past the grace window
    let r = refresh(&gw, &jar);
    assert_eq!(
        r.status, 200,
        "the newest token survived the crash: {}",
        r.body
    );
    let mut after = jar.clone();
    after.update(&r);
    let reuse = refresh(&gw, &rotated);
    assert_eq!(
        reuse.json()["error"],
        "refresh_token_reused",
        "the rotated one counts as reuse"
    );

    // Logout, SIGKILL, restart: the logged-out access token is still refused.
    let jar = Jar::from(&login_json(&gw, "carol@example.com", PASSWORD), "__Host-");
    assert_eq!(proxied(&gw, &jar).status, 200);
    let lo = post(
        &gw.url("/auth/logout"),
        &[("Authorization", &format!("Bearer {}", jar.access))],
        b"",
    );
    assert_eq!(lo.status, 200);
    gw.kill();
    gw.spawn();
    let r = get(
        &gw.url("/app"),
        &[("Authorization", &format!("Bearer {}", jar.access))],
    );
    assert_eq!(r.status, 401);
    assert_eq!(r.json()["error"], "token_revoked");
}

#[test]
fn sixth_failed_login_is_rate_limited_and_xff_does_not_help() {
    let up = Upstream::start();
    let gw = auth_gateway(
        "rate_limits: { login_per_ip: 5/15m, login_per_account: 100/15m, refresh_per_ip: 60/1m }\n",
        &up,
    );
    for i in 0..5 {
        let r = login_claiming(
            &gw,
            &format!("10.0.0.{i}"),
            &format!("x{i}@example.com"),
            "bad",
        );
        assert_eq!(r.status, 401, "attempt {}", i + 1);
    }
    let r = login_claiming(&gw, "10.9.9.9", "alice@example.com", PASSWORD);
    assert_eq!(r.status, 429, "the 6th attempt from this peer: {}", r.body);
    assert_eq!(r.json()["error"], "rate_limited");
    let retry: u64 = r.header("retry-after").unwrap().parse().unwrap();
    assert!(retry > 0 && retry <= 900, "{retry}");

    // Per account: a different gateway, attempts from "many IPs" via a trusted proxy.
    let up2 = Upstream::start();
    let gw2 = auth_gateway(
        "server:\n  listen: [\"127.0.0.1:{PORT}\"]\n  trusted_proxies: [127.0.0.1/32]\nrate_limits: { login_per_ip: 100/15m, login_per_account: 5/15m, refresh_per_ip: 60/1m }\n",
        &up2,
    );
    for i in 0..5 {
        let r = login_claiming(&gw2, &format!("203.0.113.{i}"), "carol@example.com", "bad");
        assert_eq!(r.status, 401);
    }
    let r = login_json(&gw2, "carol@example.com", PASSWORD);
    assert_eq!(
        r.status, 429,
        "a browser unknown to the account waits for the window"
    );
    let log = gw2.log();
    let line = log
        .lines()
        .find(|l| l.contains("\"event\":\"login_throttled\""))
        .expect("a login_throttled audit line");
    assert!(
        line.contains("\"reason\":\"login_per_account\"") && line.contains("\"user\":\"carol\""),
        "{line}"
    );
}

#[test]
fn malformed_input_gets_clear_4xx_never_500() {
    let up = Upstream::start();
    let gw = auth_gateway("", &up);
    let json_ct = [("Content-Type", "application/json")];
    // A 1 MB password: refused from the declared length; the client never gets to send it all.
    let mb = json!({"email": "alice@example.com", "password": "p".repeat(1024 * 1024)}).to_string();
    let head = format!(
        "POST /auth/login HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        mb.len()
    );
    let mut req = head.into_bytes();
    req.extend_from_slice(&mb.as_bytes()[..32 * 1024]);
    assert_eq!(raw(gw.port, &req).unwrap().0, 413);
    let big = format!(
        "{{\"email\":\"a@b\",\"password\":\"x\",\"pad\":\"{}\"}}",
        "x".repeat(100 * 1024)
    );
    assert_eq!(
        post(&gw.url("/auth/login"), &json_ct, big.as_bytes()).status,
        413
    );
    let long_pw = json!({"email": "alice@example.com", "password": "p".repeat(5000)}).to_string();
    assert_eq!(
        post(&gw.url("/auth/login"), &json_ct, long_pw.as_bytes()).status,
        400
    );
    for bad in [
        "",
        "{",
        "[]",
        "{\"email\":1,\"password\":2}",
        "{\"email\":\"a\"}",
        "null",
        "\u{0}\u{1}",
    ] {
        let r = post(&gw.url("/auth/login"), &json_ct, bad.as_bytes());
        assert_eq!(r.status, 400, "{bad:?}: {}", r.body);
        assert_eq!(r.json()["error"], "bad_request");
    }
    for ct in [
        "text/plain",
        "multipart/form-data; boundary=x",
        "application/xml",
    ] {
        let r = post(
            &gw.url("/auth/login"),
            &[("Content-Type", ct)],
            b"{\"email\":\"a\",\"password\":\"b\"}",
        );
        assert_eq!(r.status, 415, "{ct}");
    }
    let jar = Jar::from(&login_json(&gw, "alice@example.com", PASSWORD), "__Host-");
    let r = post(
        &gw.url("/auth/refresh"),
        &[
            ("Cookie", &jar.refresh_only()),
            ("X-CSRF-Token", &jar.csrf),
            ("Content-Type", "text/plain"),
        ],
        b"x",
    );
    assert_eq!(r.status, 415, "refresh refuses simple content types");
    let forms = ["email=%ZZ&password", "&&&==", "csrf=x&email=a%00@b"];
    for f in forms {
        let r = post(
            &gw.url("/auth/login"),
            &[("Content-Type", "application/x-www-form-urlencoded")],
            f.as_bytes(),
        );
        assert!((400..500).contains(&r.status), "{f}: {}", r.status);
    }
    let garbage_cookie = get(
        &gw.url("/auth/session"),
        &[("Cookie", "__Host-pc_access=%%%; __Host-pc_refresh")],
    );
    assert_eq!(garbage_cookie.status, 401);
    let r = post(
        &gw.url("/auth/refresh"),
        &[
            ("Cookie", "__Host-pc_refresh=garbage; __Host-pc_csrf=abc"),
            ("X-CSRF-Token", "abc"),
        ],
        b"",
    );
    assert_eq!(r.status, 403);
    assert_eq!(r.json()["error"], "invalid_refresh_token");
    assert!(!gw.log().contains("panicked"));
    assert_eq!(raw_get(gw.port, "/healthz").unwrap().0, 200);
}

#[test]
fn csrf_is_required_for_cookie_authenticated_auth_calls() {
    let up = Upstream::start();
    let gw = auth_gateway("", &up);
    let jar = Jar::from(&login_json(&gw, "alice@example.com", PASSWORD), "__Host-");
    let r = post(
        &gw.url("/auth/refresh"),
        &[("Cookie", &jar.refresh_only())],
        b"",
    );
    assert_eq!(r.status, 403);
    assert_eq!(r.json()["error"], "csrf");
    let r = post(
        &gw.url("/auth/refresh"),
        &[("Cookie", &jar.refresh_only()), ("X-CSRF-Token", "wrong")],
        b"",
    );
    assert_eq!(r.json()["error"], "csrf");
    let r = post(
        &gw.url("/auth/logout"),
        &[("Cookie", &jar.cookie_header())],
        b"",
    );
    assert_eq!(r.status, 403);
    assert_eq!(r.json()["error"], "csrf");
    assert_eq!(
        proxied(&gw, &jar).status,
        200,
        "the refused logout changed nothing"
    );
    let r = post(&gw.url("/auth/refresh"), &[], b"");
    assert_eq!(r.status, 401);
    assert_eq!(r.json()["error"], "refresh_token_required");
}

#[test]
fn users_file_reload_and_invalid_versions() {
    let up = Upstream::start();
    let gw = auth_gateway("", &up);
    let path = gw.data_dir().join("users.yaml");
    assert_eq!(login_json(&gw, "dave@example.com", PASSWORD).status, 401);
    let h = portcullis::auth::password::hash_password(PASSWORD);
    std::fs::write(
        &path,
        format!(
            "{}  dave: {{ email: dave@example.com, password: \"{h}\" }}\n",
            users_yaml()
        ),
    )
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while login_json(&gw, "dave@example.com", PASSWORD).status != 200 {
        assert!(Instant::now() < deadline, "new user never appeared");
        std::thread::sleep(Duration::from_millis(200));
    }
    std::fs::write(&path, "users:\n  broken: { email: nope }\n").unwrap();
    std::thread::sleep(Duration::from_millis(2500));
    assert_eq!(
        login_json(&gw, "dave@example.com", PASSWORD).status,
        200,
        "last good version kept"
    );
    assert!(gw
        .log()
        .contains("users file invalid; keeping the last good version"));
}

#[test]
fn a_removed_or_disabled_user_loses_every_session_within_two_seconds() {
    let up = Upstream::start();
    let gw = auth_gateway("", &up);
    let path = gw.data_dir().join("users.yaml");
    let alice = Jar::from(&login_json(&gw, "alice@example.com", PASSWORD), "__Host-");
    let carol = Jar::from(&login_json(&gw, "carol@example.com", PASSWORD), "__Host-");
    let alice_bearer = format!("Bearer {}", alice.access);
    assert_eq!(
        get(&gw.url("/app"), &[("Authorization", &alice_bearer)]).status,
        200
    );
    // alice disabled, carol removed.
    let h = portcullis::auth::password::hash_password(PASSWORD);
    std::fs::write(
        &path,
        format!("users:\n  alice: {{ email: alice@example.com, password: \"{h}\", roles: [admin], disabled: true }}\n"),
    )
    .unwrap();
    let changed = Instant::now();
    let json = [("Accept", "application/json")];
    loop {
        let a = get(
            &gw.url("/app"),
            &[("Authorization", &alice_bearer), json[0]],
        );
        let c = get(
            &gw.url("/app"),
            &[
                ("Authorization", &format!("Bearer {}", carol.access)),
                json[0],
            ],
        );
        if a.status == 401 && c.status == 401 {
            assert_eq!(a.json()["error"], "token_revoked");
            break;
        }
        assert!(
            changed.elapsed() < Duration::from_millis(2500),
            "still served: {} {}",
            a.status,
            c.status
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // Their refresh tokens are dead too.
    for jar in [&alice, &carol] {
        assert_eq!(refresh(&gw, jar).status, 403);
    }
    let log = gw.log();
    for user in ["alice", "carol"] {
        assert!(
            log.lines()
                .any(|l| l.contains("\"event\":\"user_sessions_ended\"")
                    && l.contains(&format!("\"user\":\"{user}\""))),
            "{log}"
        );
    }
}

#[test]
fn hash_password_cli() {
    let dir = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(BIN)
        .args(["hash-password", "--password-stdin"])
        .current_dir(dir.path())
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            use std::io::Write;
            c.stdin.take().unwrap().write_all(b"s3cret pw\n")?;
            c.wait_with_output()
        })
        .unwrap();
    assert!(out.status.success());
    let phc = String::from_utf8(out.stdout).unwrap();
    assert!(phc.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{phc}");
    let h = argon2::PasswordHash::new(phc.trim()).unwrap();
    use argon2::PasswordVerifier;
    assert!(argon2::Argon2::default()
        .verify_password(b"s3cret pw", &h)
        .is_ok());
}

/// Every 401 the gateway answers itself carries a `WWW-Authenticate` challenge: each `/auth`
/// endpoint that can refuse with 401, and the proxy in front of a protected route.
#[test]
fn every_local_401_carries_a_challenge() {
    let up = Upstream::start();
    let gw = auth_gateway("", &up);
    let json = [("Content-Type", "application/json")];
    let bad_bearer = [("Authorization", "Bearer not-a-token")];
    let cases: Vec<(&str, Resp)> = vec![
        (
            "login with a wrong password",
            login_json(&gw, "alice@example.com", "wrong password"),
        ),
        (
            "refresh without a refresh cookie",
            post(&gw.url("/auth/refresh"), &json, b""),
        ),
        (
            "logout-all without a token",
            post(&gw.url("/auth/logout-all"), &json, b""),
        ),
        (
            "logout-all with a bad token",
            post(&gw.url("/auth/logout-all"), &bad_bearer, b""),
        ),
        (
            "session without a token",
            get(&gw.url("/auth/session"), &[]),
        ),
        (
            "session with a bad token",
            get(&gw.url("/auth/session"), &bad_bearer),
        ),
        ("proxy without a token", get(&gw.url("/app"), &[])),
        ("proxy with a bad token", get(&gw.url("/app"), &bad_bearer)),
    ];
    for (what, r) in cases {
        assert_eq!(r.status, 401, "{what}: {}", r.body);
        let challenge = r.header("www-authenticate");
        assert!(
            challenge
                .as_deref()
                .is_some_and(|c| c.starts_with("Bearer")),
            "{what}: WWW-Authenticate {challenge:?}"
        );
        if what.contains("bad token") {
            assert_eq!(
                challenge.as_deref(),
                Some("Bearer error=\"invalid_token\""),
                "{what}"
            );
        }
    }
    assert_eq!(up.count(), 0, "nothing reached the application");
}

#[test]
fn the_login_page_names_the_app_and_says_when_a_session_expired() {
    let up = Upstream::start();
    let gw = auth_gateway(
        "login_page: { title: Payroll }\nclient: { warn_before: 2m, banner: false }\n",
        &up,
    );
    let r = get(&gw.url("/auth/login?return_to=/app&session_expired=1"), &[]);
    assert_eq!(r.status, 200);
    assert!(
        r.body.contains("<title>Payroll</title>") && r.body.contains("<h1>Payroll</h1>"),
        "{}",
        r.body
    );
    assert!(
        r.body
            .contains("role=\"status\">Your session has expired. Please sign in again.</p>"),
        "{}",
        r.body
    );
    assert!(r.body.contains("name=\"return_to\" value=\"/app\""));
    let plain = get(&gw.url("/auth/login"), &[]);
    assert!(!plain.body.contains("session has expired"));
    // A failed form login announces its error and puts the focus on the password.
    let jar = Jar::from(&login_json(&gw, "alice@example.com", PASSWORD), "__Host-");
    let s = get(
        &gw.url("/auth/session"),
        &[("Cookie", &jar.cookie_header())],
    )
    .json();
    assert_eq!(s["warn_before"], 120);
    assert_eq!(s["banner"], false);
    for bad in [
        "login_page: { title: \"\" }\n",
        "client: { warn_before: soon }\n",
    ] {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("pc.yaml"), bad).unwrap();
        let (code, _, err) = run_cli(&["check", "-c", "pc.yaml"], dir.path());
        assert_eq!(code, 1, "{bad}");
        assert!(
            err.contains("login_page.title") || err.contains("client.warn_before"),
            "{err}"
        );
    }
}
