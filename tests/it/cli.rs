//! `check`, `probe` and start-up errors: one line naming file and key path, exit 1, no panic.

use crate::harness::*;

const VALID: &str = "upstreams:\n  app: { addresses: [\"127.0.0.1:9\"] }\nroutes:\n  - { path_prefix: /, upstream: app }\n";

fn check(text: &str) -> (i32, String, String) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("pc.yaml"), text).unwrap();
    run_cli(&["check", "-c", "pc.yaml"], dir.path())
}

fn assert_one_line_error(text: &str, key: &str, needle: &str) {
    let (code, _out, err) = check(text);
    assert_eq!(code, 1, "exit code for {key}: {err}");
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), 1, "exactly one line: {err}");
    assert!(
        lines[0].starts_with(&format!("portcullis: pc.yaml: {key}: ")),
        "names file and key {key}: {err}"
    );
    assert!(lines[0].contains(needle), "mentions {needle:?}: {err}");
    assert!(!err.contains("panicked"), "{err}");
}

#[test]
fn check_accepts_a_valid_config() {
    let (code, out, err) = check(VALID);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("pc.yaml: ok"), "{out}");
}

#[test]
fn config_errors_name_file_and_key() {
    assert_one_line_error(
        &format!("{VALID}tokens:\n  acess_ttl: 15m\n"),
        "tokens.acess_ttl",
        "unknown field",
    );
    assert_one_line_error(
        &format!("{VALID}tokens:\n  access_ttl: fifteen\n"),
        "tokens.access_ttl",
        "expected a duration like \"15m\", got \"fifteen\"",
    );
    assert_one_line_error(
        &format!("{VALID}  - {{ path_prefix: /x, upstream: legcy }}\n"),
        "routes[1].upstream",
        "unknown upstream \"legcy\"",
    );
    assert_one_line_error(
        &format!("server:\n  listen: [\"127.0.0.1:notaport\"]\n{VALID}"),
        "server.listen[0]",
        "invalid listen address",
    );
    assert_one_line_error(
        &format!("server:\n  tls: {{ listen: [\"127.0.0.1:0\"], cert: missing.pem, key: missing.key }}\n{VALID}"),
        "server.tls.cert",
        "missing.pem",
    );
    assert_one_line_error(
        &format!("{VALID}store: {{ backend: ${{NOT_SET_ANYWHERE}} }}\n"),
        "line 5",
        "NOT_SET_ANYWHERE",
    );
}

#[test]
fn missing_config_file_is_one_clear_line() {
    let dir = tempfile::tempdir().unwrap();
    let (code, _, err) = run_cli(&["check", "-c", "nope.yaml"], dir.path());
    assert_eq!(code, 1);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.starts_with("portcullis: nope.yaml: cannot read config file"),
        "{err}"
    );
    // serve fails the same way, without starting anything.
    let (code, _, err) = run_cli(&["serve", "-c", "nope.yaml"], dir.path());
    assert_eq!(code, 1);
    assert!(err.contains("nope.yaml"), "{err}");
}

#[test]
fn env_substitution_feeds_values() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("pc.yaml"),
        format!("{VALID}tokens:\n  access_ttl: ${{PC_TEST_TTL:-10m}}\n"),
    )
    .unwrap();
    let out = std::process::Command::new(BIN)
        .args(["check", "-c", "pc.yaml"])
        .current_dir(dir.path())
        .env("PC_TEST_TTL", "soon")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        err.contains("tokens.access_ttl") && err.contains("\"soon\""),
        "{err}"
    );
}

#[test]
fn listen_address_in_use_is_named() {
    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = busy.local_addr().unwrap().port();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("pc.yaml"),
        format!("server:\n  listen: [\"127.0.0.1:{port}\"]\n{VALID}"),
    )
    .unwrap();
    let (code, _, err) = run_cli(&["serve", "-c", "pc.yaml"], dir.path());
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("server.listen[0]: cannot listen on"), "{err}");
}

#[test]
fn probe_exit_codes() {
    let up = Upstream::start();
    let gw = Gateway::start(&public_app("", &up));
    let dir = tempfile::tempdir().unwrap();
    let (code, _, err) = run_cli(&["probe", "--url", &gw.url("/healthz")], dir.path());
    assert_eq!(code, 0, "{err}");
    let dead = format!("http://127.0.0.1:{}/healthz", free_port());
    let (code, _, err) = run_cli(&["probe", "--url", &dead], dir.path());
    assert_eq!(code, 1);
    assert!(err.contains("cannot connect"), "{err}");
}

#[test]
fn shipped_configs_pass_check() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    for name in ["portcullis.example.yaml", "portcullis.yaml"] {
        // Their signing secret comes from the environment, as an operator would provide it.
        let out = std::process::Command::new(BIN)
            .args(["check", "-c", &format!("config/{name}")])
            .current_dir(root)
            .env_remove("PORTCULLIS_CONFIG")
            .env(
                "PORTCULLIS_HS256_SECRET",
                "an-operator-secret-of-48-random-bytes-0123456789",
            )
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(0), "config/{name}: {err}");
    }
}

#[test]
fn a_second_process_on_the_same_sled_database_is_refused_clearly() {
    let up = Upstream::start();
    let gw = Gateway::start(&public_app("", &up));
    // Same data directory, another port: sled's lock is exclusive.
    let text = std::fs::read_to_string(&gw.config_path)
        .unwrap()
        .replace(&gw.port.to_string(), &free_port().to_string());
    std::fs::write(gw.data_dir().join("second.yaml"), text).unwrap();
    let (code, _, err) = run_cli(&["serve", "-c", "second.yaml"], gw.data_dir());
    assert_eq!(code, 1, "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains("another process holds it")
            && err.contains("serve --upgrade")
            && err.contains("store.backend: redis"),
        "{err}"
    );
    // The first gateway is unaffected.
    assert_eq!(get(&gw.url("/x"), &[]).status, 200);
}

/// The shipped example configuration, run as an operator would: the placeholder secret and
/// the example users' published password are refused by `check` and `serve`, one line each
/// naming the key.
#[test]
fn published_secrets_and_passwords_are_refused() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("config");
    let dir = tempfile::tempdir().unwrap();
    let example = std::fs::read_to_string(root.join("portcullis.example.yaml")).unwrap();
    std::fs::write(dir.path().join("pc.yaml"), &example).unwrap();
    std::fs::copy(
        root.join("users.example.yaml"),
        dir.path().join("users.example.yaml"),
    )
    .unwrap();
    let run = |args: &[&str], secret: Option<&str>| {
        let mut cmd = std::process::Command::new(BIN);
        cmd.args(args)
            .current_dir(dir.path())
            .env_remove("PORTCULLIS_CONFIG");
        match secret {
            Some(s) => cmd.env("PORTCULLIS_HS256_SECRET", s),
            None => cmd.env_remove("PORTCULLIS_HS256_SECRET"),
        };
        let out = cmd.output().unwrap();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    // No secret in the environment: the variable is required.
    let (code, err) = run(&["check", "-c", "pc.yaml"], None);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("PORTCULLIS_HS256_SECRET"), "{err}");
    // Every secret ever published with the examples, through the variable.
    for published in portcullis::secret::PUBLISHED_SECRETS {
        for cmd in ["check", "serve"] {
            let (code, err) = run(&[cmd, "-c", "pc.yaml"], Some(published));
            assert_eq!(code, 1, "{cmd}: {err}");
            assert_eq!(err.lines().count(), 1, "{cmd}: one line: {err}");
            assert!(
                err.contains("tokens.signing_keys[0].secret: is the placeholder"),
                "{cmd}: {err}"
            );
            assert!(!err.contains(published), "the secret is echoed: {err}");
        }
    }
    // A random secret: the shipped example is valid (its users hold no known password).
    let (code, err) = run(
        &["check", "-c", "pc.yaml"],
        Some("a-random-secret-nobody-published-0123456789"),
    );
    assert_eq!(code, 0, "{err}");
    // The example users' published password, as it shipped and hashed anew.
    for hash in [
        portcullis::secret::PUBLISHED_PASSWORD_HASHES[0].to_string(),
        portcullis::auth::password::hash_password(portcullis::secret::PUBLISHED_PASSWORDS[0]),
    ] {
        std::fs::write(
            dir.path().join("users.example.yaml"),
            format!("users:\n  alice: {{ email: alice@example.com, password: \"{hash}\", roles: [admin] }}\n"),
        )
        .unwrap();
        for cmd in ["check", "serve"] {
            let (code, err) = run(
                &[cmd, "-c", "pc.yaml"],
                Some("a-random-secret-nobody-published-0123456789"),
            );
            assert_eq!(code, 1, "{cmd}: {err}");
            assert_eq!(err.lines().count(), 1, "{cmd}: one line: {err}");
            assert!(
                err.contains("users.alice.password: is a password published"),
                "{cmd}: {err}"
            );
        }
    }
}
