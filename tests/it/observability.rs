//! Logs and metrics as a support engineer and an operator read them, from the real binary:
//! each refusal is one line with the user, a reason, the request id and the user agent; a
//! normal run logs no ERROR; each outcome counter moves on the matching request.

use crate::auth::{auth_gateway, login_json, refresh, Jar, PASSWORD};
use crate::harness::*;
use serde_json::json;
use std::time::Duration;

const ROUTES: &str = "upstreams:\n  app: { addresses: [\"{UP}\"], health_check: { interval: 1s } }\nroutes:\n  - { path_prefix: /pub/, upstream: app, auth: public }\n  - { path_prefix: /admin/, upstream: app, roles: [admin] }\n  - { path_prefix: /, upstream: app }\n";

fn routes(up: &Upstream) -> String {
    ROUTES.replace("{UP}", &up.addr.to_string())
}

fn login_as(gw: &Gateway, email: &str, ua: &str) -> Resp {
    let body = json!({"email": email, "password": PASSWORD}).to_string();
    post(
        &gw.url("/auth/login"),
        &[("Content-Type", "application/json"), ("User-Agent", ua)],
        body.as_bytes(),
    )
}

fn bearer_get(gw: &Gateway, path: &str, token: &str, ua: &str) -> Resp {
    let auth = format!("Bearer {token}");
    get(
        &gw.url(path),
        &[("Authorization", &auth), ("User-Agent", ua)],
    )
}

/// The one log line that carries `ua` and `reason`, checked for the user and a request id.
fn one_line(log: &str, ua: &str, reason: &str, user: &str) {
    let lines: Vec<&str> = log
        .lines()
        .filter(|l| l.contains(&format!("\"user_agent\":\"{ua}\"")))
        .filter(|l| l.contains(&format!("\"reason\":\"{reason}\"")))
        .collect();
    assert_eq!(lines.len(), 1, "{ua}/{reason}: {lines:#?}");
    let line: serde_json::Value = serde_json::from_str(lines[0]).unwrap();
    assert_eq!(line["user"], user, "{line}");
    let id = line["request_id"].as_str().unwrap_or_default();
    assert!(id.len() > 8 && id.contains('-'), "{line}");
}

#[test]
fn each_refusal_is_one_line_with_user_reason_request_id_and_user_agent() {
    let up = Upstream::start();
    let gw = auth_gateway(
        &format!("tokens:\n  access_ttl: 1s\n  leeway: 0s\n  signing_keys:\n    - {{ kid: ed1, algorithm: EdDSA, private_key_file: keys/ed1.private.pem }}\n{}", routes(&up)),
        &up,
    );
    // A failed login.
    let body = json!({"email": "alice@example.com", "password": "typo"}).to_string();
    let r = post(
        &gw.url("/auth/login"),
        &[
            ("Content-Type", "application/json"),
            ("User-Agent", "ua-typo"),
        ],
        body.as_bytes(),
    );
    assert_eq!(r.status, 401);
    // A refused role.
    let carol = login_as(&gw, "carol@example.com", "ua-carol").json()["access_token"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(bearer_get(&gw, "/admin/x", &carol, "ua-role").status, 403);
    // A revoked session: carol signs out, her token is refused.
    let r = post(
        &gw.url("/auth/logout"),
        &[("Authorization", &format!("Bearer {carol}"))],
        b"",
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(bearer_get(&gw, "/app", &carol, "ua-revoked").status, 401);
    // An expired session.
    let alice = login_as(&gw, "alice@example.com", "ua-alice").json()["access_token"]
        .as_str()
        .unwrap()
        .to_string();
    std::thread::sleep(Duration::from_millis(2100));
    let r = bearer_get(&gw, "/app", &alice, "ua-expired");
    assert_eq!(r.status, 401);
    assert_eq!(r.json()["error"], "token_expired");

    // The access line is written once the response has gone out.
    std::thread::sleep(Duration::from_millis(200));
    let log = gw.log();
    one_line(&log, "ua-typo", "wrong_password", "alice");
    one_line(&log, "ua-role", "forbidden", "carol");
    one_line(&log, "ua-revoked", "token_revoked", "carol");
    one_line(&log, "ua-expired", "token_expired", "alice");
}

#[test]
fn a_thousand_ordinary_requests_log_no_error() {
    let up = Upstream::start();
    let gw = auth_gateway(&routes(&up), &up);
    let token = login_json(&gw, "alice@example.com", PASSWORD).json()["access_token"]
        .as_str()
        .unwrap()
        .to_string();
    let auth = format!("Bearer {token}");
    let keep_alive = agent();
    for i in 0..1000 {
        let status = match i % 5 {
            0 => get(&gw.url("/pub/page"), &[]).status,
            1 => {
                snapshot(
                    keep_alive
                        .get(&gw.url("/app"))
                        .header("Authorization", &auth)
                        .call()
                        .unwrap(),
                )
                .status
            }
            2 => get(&gw.url("/app"), &[]).status,
            3 => {
                snapshot(
                    keep_alive
                        .get(&gw.url("/admin/x"))
                        .header("Authorization", &auth)
                        .call()
                        .unwrap(),
                )
                .status
            }
            _ => get(&gw.url("/auth/login"), &[]).status,
        };
        assert!(matches!(status, 200 | 401), "request {i}: {status}");
    }
    std::thread::sleep(Duration::from_millis(200));
    let log = gw.log();
    let errors: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("\"level\":\"ERROR\""))
        .collect();
    assert!(errors.is_empty(), "{errors:#?}");
    assert!(!log.contains(".rs:"), "no source paths in the log");
    let access: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("\"target\":\"portcullis::access\""))
        .collect();
    assert!(
        access.len() >= 1001,
        "every request logged: {}",
        access.len()
    );
}

/// The value of one series in the metrics text (0 when absent).
fn value(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series).and_then(|v| v.trim().parse().ok()))
        .unwrap_or(0.0)
}

#[test]
fn outcome_counters_move_on_the_matching_requests() {
    let up = Upstream::start();
    let metrics_port = free_port();
    let gw = auth_gateway(
        &format!(
            "metrics: {{ listen: \"127.0.0.1:{metrics_port}\" }}\nrate_limits: {{ login_per_account_ip: 2/1m, refresh_per_ip: 1000/1m }}\n{}",
            routes(&up)
        ),
        &up,
    );
    let metrics = || get(&format!("http://127.0.0.1:{metrics_port}/metrics"), &[]).body;
    let moved = |before: &str, series: &str, by: f64| {
        let after = metrics();
        assert_eq!(
            value(&after, series) - value(before, series),
            by,
            "{series}\n{after}"
        );
    };

    let m = metrics();
    assert!(m.contains("portcullis_build_info{version=\""), "{m}");
    let ok = login_json(&gw, "alice@example.com", PASSWORD);
    moved(&m, "portcullis_logins_total{result=\"success\"}", 1.0);
    let m = metrics();
    login_json(&gw, "carol@example.com", "typo");
    moved(
        &m,
        "portcullis_logins_total{result=\"invalid_credentials\"}",
        1.0,
    );
    login_json(&gw, "carol@example.com", "typo");
    let m = metrics();
    assert_eq!(login_json(&gw, "carol@example.com", PASSWORD).status, 429);
    moved(&m, "portcullis_logins_total{result=\"rate_limited\"}", 1.0);

    let mut jar = Jar::from(&ok, "__Host-");
    let m = metrics();
    let first = jar.clone();
    let r = refresh(&gw, &jar);
    assert_eq!(r.status, 200);
    jar.update(&r);
    moved(&m, "portcullis_refreshes_total{result=\"success\"}", 1.0);
    let m = metrics();
    let garbage = Jar {
        refresh: "not-a-token".into(),
        ..jar.clone()
    };
    assert_eq!(refresh(&gw, &garbage).status, 403);
    moved(&m, "portcullis_refreshes_total{result=\"invalid\"}", 1.0);
    let m = metrics();
    // The first token again, after the 1 s grace window: reuse ends the session.
    std::thread::sleep(Duration::from_millis(1200));
    let r = refresh(&gw, &first);
    assert_eq!(r.json()["error"], "refresh_token_reused");
    moved(&m, "portcullis_refreshes_total{result=\"reused\"}", 1.0);
    moved(&m, "portcullis_revocations_total{reason=\"reuse\"}", 1.0);

    let m = metrics();
    let r = post(
        &gw.url("/auth/refresh"),
        &[("Cookie", &jar.refresh_only())],
        b"",
    );
    assert_eq!(r.status, 403);
    moved(
        &m,
        "portcullis_csrf_refusals_total{endpoint=\"/auth/refresh\"}",
        1.0,
    );

    let again = Jar::from(&login_json(&gw, "alice@example.com", PASSWORD), "__Host-");
    let m = metrics();
    let r = post(
        &gw.url("/auth/logout"),
        &[
            ("Cookie", &again.cookie_header()),
            ("X-CSRF-Token", &again.csrf),
        ],
        b"",
    );
    assert_eq!(r.status, 200);
    moved(&m, "portcullis_revocations_total{reason=\"logout\"}", 1.0);

    let m = metrics();
    assert_eq!(
        get(&gw.url("/app"), &[("Accept", "application/json")]).status,
        401
    );
    moved(
        &m,
        "portcullis_auth_refusals_total{reason=\"token_required\"}",
        1.0,
    );
    let m = metrics();
    assert!(
        value(&m, "portcullis_request_duration_seconds_count{route=\"/\"}") >= 1.0,
        "{m}"
    );
    assert!(
        value(
            &m,
            "portcullis_request_duration_seconds_count{route=\"auth\"}"
        ) >= 8.0,
        "{m}"
    );
    assert!(
        value(
            &m,
            "portcullis_config_last_reload_success_timestamp_seconds"
        ) > 1.7e9,
        "{m}"
    );
}
