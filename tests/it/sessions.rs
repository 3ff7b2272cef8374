//! The user's own sessions against the real binary: the list (where and when each began,
//! which one is current), ending one (never another user's), ending all the others.

use crate::auth::{auth_gateway, refresh, Jar, PASSWORD};
use crate::harness::*;
use serde_json::json;

const FIREFOX: &str = "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0";
const CHROME: &str = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0.0.0 Safari/537.36";

fn login_with(gw: &Gateway, email: &str, ua: &str) -> Jar {
    login_from(gw, email, ua, "127.0.0.1")
}

/// A login through the trusted loopback proxy, for the client address `ip`.
fn login_from(gw: &Gateway, email: &str, ua: &str, ip: &str) -> Jar {
    let body = json!({"email": email, "password": PASSWORD}).to_string();
    let r = post(
        &gw.url("/auth/login"),
        &[
            ("Content-Type", "application/json"),
            ("User-Agent", ua),
            ("X-Forwarded-For", ip),
        ],
        body.as_bytes(),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    Jar::from(&r, "__Host-")
}

const TRUSTING: &str = "server:\n  listen: [\"127.0.0.1:{PORT}\"]\n  public_url: http://127.0.0.1:{PORT}\n  grace_period: 1s\n  trusted_proxies: [127.0.0.1/32]\n";

fn list(gw: &Gateway, jar: &Jar) -> Vec<serde_json::Value> {
    let r = get(
        &gw.url("/auth/sessions"),
        &[("Cookie", &jar.cookie_header())],
    );
    assert_eq!(r.status, 200, "{}", r.body);
    r.json()["sessions"].as_array().unwrap().clone()
}

fn delete(gw: &Gateway, jar: &Jar, sid: &str, csrf: bool) -> Resp {
    let cookie = jar.cookie_header();
    let mut headers = vec![("Cookie", cookie.as_str())];
    if csrf {
        headers.push(("X-CSRF-Token", jar.csrf.as_str()));
    }
    let req = agent().delete(&gw.url(&format!("/auth/sessions/{sid}")));
    let req = headers.iter().fold(req, |r, (k, v)| r.header(*k, *v));
    snapshot(req.call().unwrap())
}

#[test]
fn users_see_their_sessions_and_end_one_or_all_the_others() {
    let up = Upstream::start();
    let gw = auth_gateway(TRUSTING, &up);
    assert_eq!(get(&gw.url("/auth/sessions"), &[]).status, 401);
    let laptop = login_from(&gw, "alice@example.com", FIREFOX, "198.51.100.7");
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let desktop = login_from(&gw, "alice@example.com", CHROME, "203.0.113.9");
    let carol = login_with(&gw, "carol@example.com", FIREFOX);

    let seen = list(&gw, &laptop);
    assert_eq!(seen.len(), 2, "{seen:?}");
    assert_eq!(
        seen[0]["device"], "Chrome on Windows 10",
        "newest first: {seen:?}"
    );
    assert_eq!(seen[1]["device"], "Firefox on Linux");
    assert_eq!(seen[0]["current"], false);
    assert_eq!(seen[1]["current"], true);
    assert_eq!(
        seen[0]["ip"], "203.0.113.9",
        "the address as the gateway sees it"
    );
    assert_eq!(seen[1]["ip"], "198.51.100.7");
    for s in &seen {
        for k in ["created_at", "last_used_at", "expires_at"] {
            let t = s[k].as_str().unwrap();
            assert!(t.len() == 20 && t.ends_with('Z'), "{k}: {t}");
        }
    }
    let desktop_sid = seen[0]["id"].as_str().unwrap().to_string();
    // A refresh moves the session's last use.
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let mut laptop = laptop;
    let r = refresh(&gw, &laptop);
    assert_eq!(r.status, 200);
    laptop.update(&r);
    let after = list(&gw, &laptop);
    assert!(
        after[1]["last_used_at"].as_str() > seen[1]["last_used_at"].as_str(),
        "{after:?}"
    );
    assert_eq!(after[1]["created_at"], seen[1]["created_at"]);
    let carol_sid = list(&gw, &carol)[0]["id"].as_str().unwrap().to_string();

    // Another user's session is not there to end; the CSRF header is needed.
    assert_eq!(delete(&gw, &laptop, &carol_sid, true).status, 404);
    assert_eq!(
        get(&gw.url("/app"), &[("Cookie", &carol.cookie_header())]).status,
        200
    );
    assert_eq!(delete(&gw, &laptop, &desktop_sid, false).status, 403);
    let r = delete(&gw, &laptop, &desktop_sid, true);
    assert_eq!(r.status, 200, "{}", r.body);
    let bearer = format!("Bearer {}", desktop.access);
    let gone = get(
        &gw.url("/app"),
        &[("Authorization", &bearer), ("Accept", "application/json")],
    );
    assert_eq!(gone.status, 401);
    assert_eq!(gone.json()["error"], "token_revoked");
    assert_eq!(refresh(&gw, &desktop).status, 403);
    assert_eq!(list(&gw, &laptop).len(), 1);

    // End all the others: two more sessions go, the current one stays.
    let phone = login_with(&gw, "alice@example.com", CHROME);
    let tablet = login_with(&gw, "alice@example.com", FIREFOX);
    let r = post(
        &gw.url("/auth/sessions/revoke-others"),
        &[
            ("Cookie", &laptop.cookie_header()),
            ("X-CSRF-Token", &laptop.csrf),
        ],
        b"",
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["sessions_revoked"], 2);
    for jar in [&phone, &tablet] {
        assert_eq!(refresh(&gw, jar).status, 403);
    }
    let left = list(&gw, &laptop);
    assert_eq!(left.len(), 1);
    assert_eq!(left[0]["current"], true);
    assert_eq!(
        get(&gw.url("/app"), &[("Cookie", &laptop.cookie_header())]).status,
        200
    );
    assert_eq!(list(&gw, &carol).len(), 1, "carol untouched");
}

#[test]
fn a_limit_ends_the_least_recently_used_and_a_new_device_is_announced() {
    let up = Upstream::start();
    let hook = Upstream::start();
    let gw = auth_gateway(
        &format!(
            "sessions: {{ max_per_user: 2 }}\nnotifications: {{ webhook_url: \"http://{}/hook\" }}\n",
            hook.addr
        ),
        &up,
    );
    let first = login_with(&gw, "alice@example.com", FIREFOX);
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let second = login_with(&gw, "alice@example.com", FIREFOX);
    std::thread::sleep(std::time::Duration::from_millis(1100));
    // The first is used again: now the second is the least recently used.
    let mut first = first;
    let r = refresh(&gw, &first);
    assert_eq!(r.status, 200);
    first.update(&r);
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let third = login_with(&gw, "alice@example.com", CHROME);
    assert_eq!(refresh(&gw, &second).status, 403, "evicted");
    let live = list(&gw, &third);
    assert_eq!(live.len(), 2, "{live:?}");
    assert_eq!(
        get(&gw.url("/app"), &[("Cookie", &first.cookie_header())]).status,
        200
    );

    // One notice per new device: the first Firefox sign-in and the first Chrome one.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while hook.count() < 2 {
        assert!(
            std::time::Instant::now() < deadline,
            "webhook got {}",
            hook.count()
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    std::thread::sleep(std::time::Duration::from_millis(300));
    let calls = hook.requests();
    assert_eq!(calls.len(), 2, "{calls:?}");
    for c in &calls {
        assert_eq!(c.method, "POST");
        assert_eq!(c.url, "/hook");
        assert_eq!(
            c.header("content-type").as_deref(),
            Some("application/json")
        );
    }
    let log = gw.log();
    let notices: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("\"event\":\"new_device_login\""))
        .collect();
    assert_eq!(notices.len(), 2, "{notices:?}");
    assert!(notices[0].contains("Firefox on Linux") && notices[1].contains("Chrome on Windows 10"));
    assert_eq!(log.matches("\"event\":\"session_evicted\"").count(), 1);
}

#[test]
fn a_webhook_that_is_down_does_not_slow_the_login() {
    let up = Upstream::start();
    let closed = free_port();
    let gw = auth_gateway(
        &format!("notifications: {{ webhook_url: \"http://127.0.0.1:{closed}/hook\" }}\n"),
        &up,
    );
    let started = std::time::Instant::now();
    login_with(&gw, "alice@example.com", FIREFOX);
    // Delivery would take seconds of retries; the login does not wait for any of it.
    assert!(
        started.elapsed() < std::time::Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    std::thread::sleep(std::time::Duration::from_millis(2500));
    let log = gw.log();
    assert!(
        log.contains("webhook unreachable; notification given up"),
        "{log}"
    );
    assert!(
        !log.contains(&format!("{closed}/hook")),
        "the URL is not logged"
    );
}

#[test]
fn the_account_page_lists_sessions_and_signs_one_out_with_a_plain_form() {
    let up = Upstream::start();
    let gw = auth_gateway("", &up);
    let r = get(&gw.url("/auth/account"), &[]);
    assert_eq!(r.status, 302);
    assert_eq!(
        r.header("location").as_deref(),
        Some("/auth/login?return_to=%2Fauth%2Faccount")
    );
    let laptop = login_with(&gw, "alice@example.com", FIREFOX);
    let desktop = login_with(&gw, "alice@example.com", CHROME);
    let page = get(
        &gw.url("/auth/account"),
        &[("Cookie", &laptop.cookie_header())],
    );
    assert_eq!(page.status, 200, "{}", page.body);
    for text in [
        "Firefox on Linux",
        "Chrome on Windows 10",
        "This browser",
        "Sign out everywhere else",
    ] {
        assert!(page.body.contains(text), "{text}: {}", page.body);
    }
    assert!(!page.body.contains("<script"), "no script needed");
    let other = list(&gw, &laptop)
        .iter()
        .find(|s| s["current"] == false)
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(page
        .body
        .contains(&format!("name=\"sid\" value=\"{other}\"")));
    let form = |csrf: &str| {
        post(
            &gw.url("/auth/account"),
            &[
                ("Cookie", &laptop.cookie_header()),
                ("Content-Type", "application/x-www-form-urlencoded"),
            ],
            format!("csrf={csrf}&action=revoke&sid={other}").as_bytes(),
        )
    };
    assert_eq!(form("forged").status, 403);
    assert_eq!(
        refresh(&gw, &desktop).status,
        200,
        "a forged form ended nothing"
    );
    let r = form(&laptop.csrf);
    assert_eq!(r.status, 303, "{}", r.body);
    assert_eq!(r.header("location").as_deref(), Some("/auth/account"));
    assert_eq!(list(&gw, &laptop).len(), 1);
    assert_eq!(
        get(&gw.url("/app"), &[("Cookie", &laptop.cookie_header())]).status,
        200
    );
}
