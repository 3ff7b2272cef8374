//! Login throttling an office and a victim can live with, against the real binary: the
//! four buckets (address, account from an address, account from unknown browsers, a known
//! browser's device cookie), counters that survive a restart, and `portcullis unlock`.

use crate::auth::{auth_gateway, login_claiming, login_json, set_cookies, PASSWORD};
use crate::harness::*;
use serde_json::json;

const TRUSTING: &str = "server:\n  listen: [\"127.0.0.1:{PORT}\"]\n  public_url: http://127.0.0.1:{PORT}\n  grace_period: 1s\n  trusted_proxies: [127.0.0.1/32]\n";

/// A JSON login from `ip` (through the trusted loopback proxy) sending `cookie`.
fn login_from(gw: &Gateway, ip: &str, email: &str, password: &str, cookie: &str) -> Resp {
    let body = json!({"email": email, "password": password}).to_string();
    post(
        &gw.url("/auth/login"),
        &[
            ("Content-Type", "application/json"),
            ("X-Forwarded-For", ip),
            ("Cookie", cookie),
        ],
        body.as_bytes(),
    )
}

#[test]
fn one_users_typos_do_not_lock_out_the_office_behind_one_address() {
    let up = Upstream::start();
    // The shipped defaults: 100 per address, 5 per account and address.
    let gw = auth_gateway("rate_limits: {}\n", &up);
    for i in 0..5 {
        let r = login_json(&gw, "carol@example.com", "typo");
        assert_eq!(r.status, 401, "typo {}: {}", i + 1, r.body);
    }
    let r = login_json(&gw, "carol@example.com", PASSWORD);
    assert_eq!(
        r.status, 429,
        "carol's sixth try from this address waits: {}",
        r.body
    );
    assert_eq!(r.json()["error"], "rate_limited");
    let r = login_json(&gw, "alice@example.com", PASSWORD);
    assert_eq!(
        r.status, 200,
        "a colleague behind the same address signs in: {}",
        r.body
    );
    // An address trying many accounts is still slowed, by the generous per-address bucket.
    let mut gw2 = auth_gateway(
        &format!("{TRUSTING}rate_limits: {{ login_per_ip: 8/15m }}\n"),
        &up,
    );
    for ip in ["192.0.2.1", "192.0.2.2"] {
        for i in 0..8 {
            let r = login_claiming(&gw2, ip, &format!("user{i}@example.com"), "guess");
            assert_eq!(r.status, 401);
        }
        assert_eq!(
            login_claiming(&gw2, ip, "alice@example.com", PASSWORD).status,
            429
        );
    }
    // Unlocking one address leaves the other throttled.
    gw2.kill();
    let cfg = gw2.config_path.to_string_lossy().into_owned();
    let (code, out, err) = run_cli(&["unlock", "--ip", "192.0.2.1", "-c", &cfg], gw2.data_dir());
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains(" 9 throttling counter"),
        "the address and its 8 account pairs: {out}"
    );
    gw2.spawn();
    assert_eq!(
        login_claiming(&gw2, "192.0.2.1", "alice@example.com", PASSWORD).status,
        200
    );
    assert_eq!(
        login_claiming(&gw2, "192.0.2.2", "alice@example.com", PASSWORD).status,
        429
    );
}

#[test]
fn a_stranger_failing_from_many_addresses_does_not_lock_out_the_known_browser() {
    let up = Upstream::start();
    let config =
        format!("{TRUSTING}rate_limits: {{ login_per_account: 5/15m, login_per_device: 3/15m }}\n");
    let mut gw = auth_gateway(&config, &up);

    // Carol signs in once from her browser: it gets the device cookie.
    let r = login_from(&gw, "198.51.100.7", "carol@example.com", PASSWORD, "");
    assert_eq!(r.status, 200, "{}", r.body);
    let cookies = set_cookies(&r);
    let device = &cookies["__Host-pc_device"];
    assert!(
        device.has("HttpOnly") && device.has("Secure"),
        "{:?}",
        device.attrs
    );
    let device_cookie = format!("__Host-pc_device={}", device.value);

    // A stranger fails five times from five addresses.
    for i in 0..5 {
        let r = login_from(
            &gw,
            &format!("203.0.113.{i}"),
            "carol@example.com",
            "guess",
            "",
        );
        assert_eq!(r.status, 401, "attempt {}: {}", i + 1, r.body);
    }
    // The stranger, from a new address, keeps getting slowed, with a wait to honour.
    for ip in ["203.0.113.50", "203.0.113.51"] {
        let r = login_from(&gw, ip, "carol@example.com", PASSWORD, "");
        assert_eq!(r.status, 429, "{}", r.body);
        let retry: u64 = r.header("retry-after").unwrap().parse().unwrap();
        assert!(retry > 0 && retry <= 900, "{retry}");
    }
    // A forged device cookie, or one of another account, is no device cookie.
    let alice = login_from(&gw, "198.51.100.9", "alice@example.com", PASSWORD, "");
    let alice_device = format!(
        "__Host-pc_device={}",
        set_cookies(&alice)["__Host-pc_device"].value
    );
    for forged in ["__Host-pc_device=abc.def", alice_device.as_str()] {
        let r = login_from(&gw, "203.0.113.52", "carol@example.com", PASSWORD, forged);
        assert_eq!(r.status, 429, "{forged}: {}", r.body);
    }
    // Carol's own browser still signs in.
    let r = known_browser(&gw, &device_cookie);
    assert_eq!(
        r.status, 200,
        "the known browser is not locked out: {}",
        r.body
    );

    // Counters survive a restart (even a crash: a failure is on disk before its answer).
    gw.kill();
    gw.spawn();
    let r = login_from(&gw, "203.0.113.53", "carol@example.com", PASSWORD, "");
    assert_eq!(
        r.status, 429,
        "still throttled after the restart: {}",
        r.body
    );
    let r = known_browser(&gw, &device_cookie);
    assert_eq!(r.status, 200, "{}", r.body);

    // The known browser has its own, smaller budget: failures there count against it.
    for _ in 0..3 {
        let r = login_from(
            &gw,
            "198.51.100.7",
            "carol@example.com",
            "typo",
            &device_cookie,
        );
        assert_eq!(r.status, 401);
    }
    let r = known_browser(&gw, &device_cookie);
    assert_eq!(r.status, 429, "{}", r.body);
    let log = gw.log();
    let line = log
        .lines()
        .find(|l| l.contains("\"event\":\"login_rate_limited\"") && l.contains("login_per_device"))
        .expect("a login_rate_limited line naming the device bucket");
    assert!(line.contains("\"user\":\"carol\""), "{line}");

    // Unlock: refused while the gateway holds the sled database, done once it is stopped.
    let cfg = gw.config_path.to_string_lossy().into_owned();
    let (code, _, err) = run_cli(&["unlock", "--user", "carol", "-c", &cfg], gw.data_dir());
    assert_ne!(code, 0);
    assert!(err.contains("stop it first"), "{err}");
    gw.kill();
    let (code, out, err) = run_cli(
        &["unlock", "--user", "carol@example.com", "-c", &cfg],
        gw.data_dir(),
    );
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("unlocked"), "{out}");
    let (code, _, err) = run_cli(&["unlock", "--ip", "not-an-ip", "-c", &cfg], gw.data_dir());
    assert_ne!(code, 0);
    assert!(err.contains("--ip") && err.lines().count() == 1, "{err}");
    gw.spawn();
    let r = login_from(&gw, "203.0.113.54", "carol@example.com", PASSWORD, "");
    assert_eq!(r.status, 200, "unlocked: {}", r.body);
}

/// Carol signing in from her own browser (her address, her device cookie).
fn known_browser(gw: &Gateway, device_cookie: &str) -> Resp {
    login_from(
        gw,
        "198.51.100.7",
        "carol@example.com",
        PASSWORD,
        device_cookie,
    )
}
