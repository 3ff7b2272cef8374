//! `portcullis check` on settings that work but are probably not meant (a warning, exit 0)
//! and on a metrics listener that collides with the proxy's (one error line naming both keys).

use crate::harness::*;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

const ROUTES: &str = "upstreams:\n  app: { addresses: [\"127.0.0.1:9\"] }\nroutes:\n  - { path_prefix: /, upstream: app }\n";

fn check_in(dir: &Path, text: &str) -> (i32, String, String) {
    std::fs::write(dir.join("pc.yaml"), text).unwrap();
    run_cli(&["check", "-c", "pc.yaml"], dir)
}

/// The warning lines of a successful check.
fn warnings(dir: &Path, text: &str) -> Vec<String> {
    let (code, out, err) = check_in(dir, text);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("pc.yaml: ok"), "{out}");
    out.lines()
        .filter_map(|l| l.strip_prefix("warning: pc.yaml: "))
        .map(str::to_string)
        .collect()
}

fn chmod(path: &Path, mode: u32) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

#[test]
fn secure_cookies_with_an_http_public_url_warn() {
    let dir = tempfile::tempdir().unwrap();
    let config =
        |url: &str, cookies: &str| format!("server:\n  public_url: {url}\n{cookies}{ROUTES}");
    let w = warnings(dir.path(), &config("http://app.example.com", ""));
    let cookie_warnings: Vec<&String> = w.iter().filter(|l| l.starts_with("cookies.")).collect();
    assert_eq!(cookie_warnings.len(), 1, "{w:?}");
    assert!(
        cookie_warnings[0]
            .starts_with("cookies.secure: true while server.public_url is http://app.example.com: browsers do not send Secure (__Host-) cookies"),
        "{w:?}"
    );
    // Over https, or with plain cookies for local development: nothing to say.
    let w = warnings(dir.path(), &config("https://app.example.com", ""));
    assert!(w.iter().all(|l| !l.starts_with("cookies.")), "{w:?}");
    let w = warnings(
        dir.path(),
        &config("http://127.0.0.1:8080", "cookies: { secure: false }\n"),
    );
    assert!(w.iter().all(|l| !l.starts_with("cookies.")), "{w:?}");
    // Browsers treat the loopback as secure: Secure cookies work there over http.
    for url in [
        "http://127.0.0.1:8080",
        "http://localhost:8080",
        "http://[::1]:8080",
    ] {
        let w = warnings(dir.path(), &config(url, ""));
        assert!(w.iter().all(|l| !l.starts_with("cookies.")), "{url}: {w:?}");
    }
}

#[test]
fn metrics_on_a_proxy_listener_is_one_error_naming_both_keys() {
    let dir = tempfile::tempdir().unwrap();
    let two = "server:\n  listen: [\"127.0.0.1:8080\", \"127.0.0.1:8081\"]\n";
    let wildcard = "server:\n  listen: [\"0.0.0.0:8080\"]\n";
    let tls = "server:\n  listen: [\"127.0.0.1:8080\"]\n  tls: { listen: [\"127.0.0.1:8443\"], cert: c.pem, key: k.pem }\n";
    for (server, metrics, other) in [
        (two, "127.0.0.1:8081", "server.listen[1] (127.0.0.1:8081)"),
        (
            wildcard,
            "127.0.0.1:8080",
            "server.listen[0] (0.0.0.0:8080)",
        ),
        (
            tls,
            "127.0.0.1:8443",
            "server.tls.listen[0] (127.0.0.1:8443)",
        ),
    ] {
        let text = format!("{server}metrics: {{ listen: \"{metrics}\" }}\n{ROUTES}");
        let (code, out, err) = check_in(dir.path(), &text);
        assert_eq!(code, 1, "{out}{err}");
        assert_eq!(err.lines().count(), 1, "one line: {err}");
        assert!(
            err.starts_with(&format!(
                "portcullis: pc.yaml: metrics.listen: {metrics} is also {other}"
            )),
            "{err}"
        );
    }
    // Another port on the same address is fine.
    let text = format!("{two}metrics: {{ listen: \"127.0.0.1:9091\" }}\n{ROUTES}");
    warnings(dir.path(), &text);
}

#[test]
fn private_keys_that_others_can_read_warn() {
    let dir = tempfile::tempdir().unwrap();
    crate::tokens::keygen(dir.path(), "EdDSA", "ed1");
    let ck = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
    std::fs::write(dir.path().join("cert.pem"), ck.cert.pem()).unwrap();
    let tls_key = dir.path().join("key.pem");
    std::fs::write(&tls_key, ck.signing_key.serialize_pem()).unwrap();
    chmod(&tls_key, 0o600);
    let text = format!(
        "server:\n  listen: [\"127.0.0.1:8080\"]\n  tls: {{ listen: [\"127.0.0.1:8443\"], cert: cert.pem, key: key.pem }}\n  public_url: https://localhost:8443\ntokens:\n  signing_keys:\n    - {{ kid: ed1, algorithm: EdDSA, private_key_file: keys/ed1.private.pem }}\n{ROUTES}"
    );
    // keygen writes owner-only keys.
    let w = warnings(dir.path(), &text);
    assert!(w.iter().all(|l| !l.contains("mode")), "{w:?}");

    chmod(&dir.path().join("keys/ed1.private.pem"), 0o640);
    chmod(&tls_key, 0o604);
    let w = warnings(dir.path(), &text);
    let modes: Vec<&String> = w.iter().filter(|l| l.contains("mode")).collect();
    assert_eq!(modes.len(), 2, "{w:?}");
    assert!(
        modes[0].starts_with("server.tls.key: ") && modes[0].contains("key.pem has mode 0604"),
        "{w:?}"
    );
    assert!(
        modes[1].starts_with("tokens.signing_keys[0].private_key_file: ")
            && modes[1].contains("keys/ed1.private.pem has mode 0640: group or others can read this private key; chmod 600 it"),
        "{w:?}"
    );
}
