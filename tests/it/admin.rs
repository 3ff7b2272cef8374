//! The admin API on its own listener and the `portcullis sessions` and `portcullis mfa` CLI
//! over it, against the real binary: the token is required, sessions are listed and revoked
//! (one, a user's, all), a user's second factor is reset, every call is audited, the public
//! port never serves it, and the CLI says so in one line when the gateway is down.

use crate::auth::{auth_gateway, login_json, refresh, Jar, PASSWORD};
use crate::harness::*;

const TOKEN: &str = "test-only-admin-token-0123456789abcdef";

fn admin_get(port: u16, path: &str, token: Option<&str>) -> Resp {
    let auth = token.map(|t| format!("Bearer {t}"));
    let headers: Vec<(&str, &str)> = auth.iter().map(|a| ("Authorization", a.as_str())).collect();
    get(&format!("http://127.0.0.1:{port}{path}"), &headers)
}

fn admin_call(port: u16, method: &str, path: &str) -> Resp {
    let url = format!("http://127.0.0.1:{port}{path}");
    let auth = format!("Bearer {TOKEN}");
    let r = match method {
        "DELETE" => agent().delete(&url).header("Authorization", &auth).call(),
        _ => agent()
            .post(&url)
            .header("Authorization", &auth)
            .send_empty(),
    };
    snapshot(r.unwrap())
}

fn signed_in(gw: &Gateway, email: &str) -> Jar {
    let r = login_json(gw, email, PASSWORD);
    assert_eq!(r.status, 200, "{}", r.body);
    Jar::from(&r, "__Host-")
}

fn works(gw: &Gateway, jar: &Jar) -> bool {
    let bearer = format!("Bearer {}", jar.access);
    get(&gw.url("/app"), &[("Authorization", &bearer)]).status == 200
}

#[test]
fn the_admin_api_lists_and_revokes_sessions_and_the_cli_drives_it() {
    let up = Upstream::start();
    let admin_port = free_port();
    let secrets = tempfile::tempdir().unwrap();
    let token_file = secrets.path().join("admin.token");
    std::fs::write(&token_file, format!("{TOKEN}\n")).unwrap();
    let mut gw = auth_gateway(
        &format!(
            "admin: {{ listen: \"127.0.0.1:{admin_port}\", token_file: \"{}\" }}\n",
            token_file.display()
        ),
        &up,
    );
    let a1 = signed_in(&gw, "alice@example.com");
    let a2 = signed_in(&gw, "alice@example.com");
    let carol = signed_in(&gw, "carol@example.com");

    for token in [None, Some("wrong-token-wrong-token-wrong-token!")] {
        let r = admin_get(admin_port, "/admin/users/alice/sessions", token);
        assert_eq!(r.status, 401, "{token:?}: {}", r.body);
    }
    let r = admin_get(admin_port, "/admin/users/alice/sessions", Some(TOKEN));
    assert_eq!(r.status, 200, "{}", r.body);
    let sessions = r.json()["sessions"].as_array().unwrap().clone();
    assert_eq!(sessions.len(), 2);
    // Never on the public port.
    let bearer = format!("Bearer {TOKEN}");
    let public = get(
        &gw.url("/admin/users/alice/sessions"),
        &[("Authorization", &bearer)],
    );
    assert_eq!(public.status, 401, "{}", public.body);
    assert_eq!(
        public.json()["error"],
        "invalid_token",
        "a proxied request, refused"
    );
    assert!(public.json().get("sessions").is_none());

    // Revoke one session: its tokens stop at once, the other session stays.
    let sid = sessions[0]["id"].as_str().unwrap();
    let r = admin_call(admin_port, "DELETE", &format!("/admin/sessions/{sid}"));
    assert_eq!(r.status, 200, "{}", r.body);
    let (gone, kept) = if works(&gw, &a1) {
        (&a2, &a1)
    } else {
        (&a1, &a2)
    };
    assert!(!works(&gw, gone) && works(&gw, kept));
    assert_eq!(refresh(&gw, gone).status, 403);
    assert_eq!(
        admin_call(admin_port, "DELETE", "/admin/sessions/nope").status,
        404
    );

    // The CLI: list, revoke a user, revoke everything.
    let cfg = gw.config_path.to_string_lossy().into_owned();
    let dir = gw.data_dir().to_path_buf();
    let (code, out, err) = run_cli(&["sessions", "list", "--user", "alice", "-c", &cfg], &dir);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("1 session(s) of alice") && out.contains("SESSION"),
        "{out}"
    );
    let (code, out, err) = run_cli(&["sessions", "revoke", "--user", "carol", "-c", &cfg], &dir);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("1 session(s) revoked"), "{out}");
    assert!(!works(&gw, &carol));
    let again = signed_in(&gw, "carol@example.com");
    let (code, out, err) = run_cli(&["sessions", "revoke", "--all", "-c", &cfg], &dir);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("2 session(s) revoked"),
        "the kill switch: {out}"
    );
    assert!(!works(&gw, kept) && !works(&gw, &again));
    let audited = gw.log().matches("\"event\":\"admin_call\"").count();
    assert!(audited >= 8, "every call audited: {audited}");

    // The gateway is down: one clear line, non-zero.
    gw.kill();
    let (code, _, err) = run_cli(&["sessions", "list", "--user", "alice", "-c", &cfg], &dir);
    assert_ne!(code, 0);
    assert!(
        err.contains("cannot reach the admin API") && err.lines().count() == 1,
        "{err}"
    );
}

/// A user id that the CLI sends percent-encoded (a dot and a hyphen).
const DANA: &str = "dana.o-neil";

/// A gateway with an admin listener on the returned port, the usual users and [`DANA`];
/// `store` is its `store:` line, or empty for the default.
fn admin_gateway(store: &str, up: &Upstream) -> (Gateway, u16) {
    let dir = tempfile::tempdir().unwrap();
    crate::tokens::keygen(dir.path(), "EdDSA", "ed1");
    let hash = portcullis::auth::password::hash_password(PASSWORD);
    let users = format!(
        "{}  {DANA}: {{ email: dana@example.com, password: \"{hash}\" }}\n",
        crate::auth::users_yaml()
    );
    std::fs::write(dir.path().join("users.yaml"), users).unwrap();
    std::fs::write(dir.path().join("admin.token"), format!("{TOKEN}\n")).unwrap();
    let admin_port = free_port();
    let config = format!(
        "{store}tokens:\n  signing_keys:\n    - {{ kid: ed1, algorithm: EdDSA, private_key_file: keys/ed1.private.pem }}\nusers: {{ file: users.yaml }}\nadmin: {{ listen: \"127.0.0.1:{admin_port}\", token_file: \"{{DIR}}/admin.token\" }}\nupstreams:\n  app: {{ addresses: [\"{}\"] }}\nroutes:\n  - {{ path_prefix: /, upstream: app }}\n",
        up.addr
    );
    (Gateway::start_in(&config, dir), admin_port)
}

/// The `mfa_reset` audit lines of the gateway's log: (user, removed).
fn mfa_resets(gw: &Gateway) -> Vec<(String, bool)> {
    gw.log()
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["event"] == "mfa_reset")
        .map(|v| {
            assert_eq!(v["target"], "portcullis::audit", "{v}");
            let user = v["user"].as_str().expect("the user is logged").to_string();
            (user, v["removed"].as_bool().expect("removed is logged"))
        })
        .collect()
}

#[test]
fn a_second_factor_reset_needs_the_token_and_a_known_user_and_the_cli_drives_it() {
    let up = Upstream::start();
    let (mut gw, admin_port) = admin_gateway("", &up);
    let url = |user: &str| format!("http://127.0.0.1:{admin_port}/admin/users/{user}/mfa");

    for token in [None, Some("wrong-token-wrong-token-wrong-token!")] {
        let mut req = agent().delete(&url("alice"));
        if let Some(t) = token {
            req = req.header("Authorization", &format!("Bearer {t}"));
        }
        let r = snapshot(req.call().unwrap());
        assert_eq!(r.status, 401, "{token:?}: {}", r.body);
        assert!(r.json().get("removed").is_none(), "{}", r.body);
    }
    assert!(
        mfa_resets(&gw).is_empty(),
        "nothing reset without the token"
    );

    let r = admin_call(admin_port, "DELETE", "/admin/users/zed/mfa");
    assert_eq!(r.status, 404, "{}", r.body);
    assert_eq!(r.json()["error"], "not_found", "{}", r.body);
    assert!(r.json().get("removed").is_none());

    let r = admin_call(admin_port, "DELETE", "/admin/users/alice/mfa");
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(
        r.json(),
        serde_json::json!({ "user": "alice", "removed": false })
    );

    // The CLI encodes the id; the gateway decodes it back.
    let cfg = gw.config_path.to_string_lossy().into_owned();
    let dir = gw.data_dir().to_path_buf();
    let (code, out, err) = run_cli(&["mfa", "reset", "--user", DANA, "-c", &cfg], &dir);
    assert_eq!(code, 0, "{err}");
    assert_eq!(out, format!("{DANA} had no second factor\n"));
    let (code, out, err) = run_cli(&["mfa", "reset", "--user", "zed", "-c", &cfg], &dir);
    assert_ne!(code, 0, "{out}");
    assert!(
        err.contains("404") && err.contains("no such user") && err.lines().count() == 1,
        "{err}"
    );

    assert_eq!(
        mfa_resets(&gw),
        vec![("alice".to_string(), false), (DANA.to_string(), false)],
        "each reset of a known user audited once"
    );
    let log = gw.log();
    let calls = log
        .lines()
        .filter(|l| l.contains("\"event\":\"admin_call\"") && l.contains("/mfa"))
        .count();
    assert_eq!(calls, 6, "every call audited, refused ones included");
    assert!(!log.contains(TOKEN), "the admin token is never logged");

    gw.kill();
    let (code, _, err) = run_cli(&["mfa", "reset", "--user", "alice", "-c", &cfg], &dir);
    assert_ne!(code, 0);
    assert!(
        err.contains("cannot reach the admin API") && err.lines().count() == 1,
        "{err}"
    );
}

/// With a second factor in the shared store (put there directly: enrolment has no endpoint
/// here), the reset removes it, says so, and a second reset finds nothing.
#[test]
fn a_reset_removes_the_second_factor_from_the_store() {
    use portcullis::store::{MfaChange, TokenStore};
    let redis = RedisServer::start();
    let up = Upstream::start();
    let store_line = format!(
        "store: {{ backend: redis, redis_url: \"{}\" }}\n",
        redis.url()
    );
    let (gw, admin_port) = admin_gateway(&store_line, &up);
    let url = portcullis::secret::Secret::new(redis.url());
    let store =
        portcullis::store::redis::RedisStore::open(&url, std::time::Duration::from_secs(30))
            .unwrap();
    let rt = portcullis::store::runtime();
    for change in [
        MfaChange::Begin {
            sealed: "sealed-c".into(),
        },
        MfaChange::Confirm {
            sealed: "sealed-c".into(),
            secret: "sealed-c".into(),
            step: 1,
            recovery: vec!["h1".into()],
            at: now(),
        },
    ] {
        assert!(rt.block_on(store.change_mfa("carol", &change)).unwrap());
    }
    rt.block_on(async {
        let begin = MfaChange::Begin {
            sealed: "sealed-a".into(),
        };
        assert!(store.change_mfa("alice", &begin).await.unwrap());
    });

    let r = admin_call(admin_port, "DELETE", "/admin/users/carol/mfa");
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(
        r.json(),
        serde_json::json!({ "user": "carol", "removed": true })
    );
    assert_eq!(rt.block_on(store.mfa("carol")).unwrap(), None, "gone");
    assert!(
        rt.block_on(store.mfa("alice")).unwrap().is_some(),
        "only carol's"
    );

    let cfg = gw.config_path.to_string_lossy().into_owned();
    let dir = gw.data_dir().to_path_buf();
    let (code, out, err) = run_cli(&["mfa", "reset", "--user", "alice", "-c", &cfg], &dir);
    assert_eq!(code, 0, "{err}");
    assert_eq!(out, "second factor removed for alice\n");
    assert_eq!(rt.block_on(store.mfa("alice")).unwrap(), None);
    let (code, out, err) = run_cli(&["mfa", "reset", "--user", "carol", "-c", &cfg], &dir);
    assert_eq!(code, 0, "{err}");
    assert_eq!(out, "carol had no second factor\n");
    let audited = vec![
        ("carol".to_string(), true),
        ("alice".to_string(), true),
        ("carol".to_string(), false),
    ];
    assert_eq!(mfa_resets(&gw), audited);

    // The store is down: 503, and nothing is said to be reset.
    drop(redis);
    let r = admin_call(admin_port, "DELETE", "/admin/users/carol/mfa");
    assert_eq!(r.status, 503, "{}", r.body);
    assert_eq!(r.json()["error"], "store_unavailable", "{}", r.body);
    assert_eq!(mfa_resets(&gw), audited);
}
