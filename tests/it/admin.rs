//! The admin API on its own listener and the `portcullis sessions` CLI over it, against the
//! real binary: the token is required, sessions are listed and revoked (one, a user's, all),
//! every call is audited, the public port never serves it, and the CLI says so in one line
//! when the gateway is down.

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
