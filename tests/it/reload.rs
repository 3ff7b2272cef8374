//! Reload without a restart, against the real binary under a steady stream of requests: a
//! changed route, upstream, header value, a new signing key and a new TLS certificate are
//! served to new requests with none failing; a broken config keeps the last good one serving
//! with one error line, and the metrics count both.

use crate::auth::{login_json, users_yaml, PASSWORD};
use crate::harness::*;
use crate::tokens::keygen;
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A self-signed certificate for localhost, written as `name`.pem and `name`.key.pem.
fn certificate(dir: &std::path::Path, name: &str) {
    let ck = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
    std::fs::write(dir.join(format!("{name}.pem")), ck.cert.pem()).unwrap();
    std::fs::write(
        dir.join(format!("{name}.key.pem")),
        ck.signing_key.serialize_pem(),
    )
    .unwrap();
}

/// The serial number of the certificate the TLS listener on `port` serves.
fn served_serial(port: u16) -> Vec<u8> {
    let config = portcullis::probe::any_certificate_config().unwrap();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let mut conn = rustls::ClientConnection::new(config, name).unwrap();
    let mut tcp = TcpStream::connect(("127.0.0.1", port)).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    while conn.is_handshaking() {
        conn.complete_io(&mut tcp).unwrap();
    }
    let leaf = conn.peer_certificates().unwrap()[0].clone();
    let (_, cert) = x509_parser::parse_x509_certificate(&leaf).unwrap();
    cert.raw_serial().to_vec()
}

fn config(tls_port: u16, cert: &str, app: &Upstream, other: &Upstream, v2: bool) -> String {
    let keys = if v2 {
        "    - { kid: ed2, algorithm: EdDSA, private_key_file: keys/ed2.private.pem }\n    - { kid: ed1, algorithm: EdDSA, public_key_file: keys/ed1.public.pem }\n"
    } else {
        "    - { kid: ed1, algorithm: EdDSA, private_key_file: keys/ed1.private.pem }\n"
    };
    let (stream_upstream, extra_route, header) = if v2 {
        (
            "other",
            "  - { path_prefix: /new/, upstream: app, auth: public }\n",
            "two",
        )
    } else {
        ("app", "", "one")
    };
    format!(
        "server:\n  listen: [\"127.0.0.1:{{PORT}}\"]\n  public_url: http://127.0.0.1:{{PORT}}\n  grace_period: 1s\n  tls: {{ listen: [\"127.0.0.1:{tls_port}\"], cert: {cert}.pem, key: {cert}.key.pem }}\n\
         metrics: {{ listen: \"127.0.0.1:{{METRICS}}\" }}\n\
         tokens:\n  signing_keys:\n{keys}\
         users: {{ file: users.yaml }}\n\
         rate_limits: {{ login_per_ip: 1000/1m, login_per_account: 1000/1m, login_per_account_ip: 1000/1m }}\n\
         security_headers:\n  headers:\n    X-Reload-Test: {header}\n\
         upstreams:\n  app: {{ addresses: [\"{}\"] }}\n  other: {{ addresses: [\"{}\"] }}\n\
         routes:\n  - {{ path_prefix: /stream/, upstream: {stream_upstream}, auth: public }}\n{extra_route}  - {{ path_prefix: /, upstream: app }}\n",
        app.addr, other.addr
    )
}

fn metrics(port: u16) -> String {
    get(&format!("http://127.0.0.1:{port}/metrics"), &[]).body
}

fn wait_for(what: &str, mut ok: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !ok() {
        assert!(Instant::now() < deadline, "waited 10 s for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn reload_swaps_routes_upstreams_headers_keys_and_certificate_without_failing_a_request() {
    let (app, other) = (Upstream::start(), Upstream::start());
    let dir = tempfile::tempdir().unwrap();
    keygen(dir.path(), "EdDSA", "ed1");
    keygen(dir.path(), "EdDSA", "ed2");
    certificate(dir.path(), "first");
    certificate(dir.path(), "second");
    std::fs::write(dir.path().join("users.yaml"), users_yaml()).unwrap();
    let (tls_port, metrics_port) = (free_port(), free_port());
    let with_metrics = |text: String| text.replace("{METRICS}", &metrics_port.to_string());
    let gw = Gateway::start_in(
        &with_metrics(config(tls_port, "first", &app, &other, false)),
        dir,
    );
    let before = login_json(&gw, "alice@example.com", PASSWORD);
    assert_eq!(before.status, 200, "{}", before.body);
    let old_token = before.json()["access_token"].as_str().unwrap().to_string();
    let first_serial = served_serial(tls_port);

    // A steady stream of requests through the whole reload.
    let stop = Arc::new(AtomicBool::new(false));
    let (sent, failed) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let url = gw.url("/stream/x");
    let streams: Vec<_> = (0..2)
        .map(|_| {
            let (stop, sent, failed, url) =
                (stop.clone(), sent.clone(), failed.clone(), url.clone());
            std::thread::spawn(move || {
                let agent = agent();
                while !stop.load(Ordering::SeqCst) {
                    let ok = agent
                        .get(&url)
                        .call()
                        .map(|r| r.status() == 200)
                        .unwrap_or(false);
                    sent.fetch_add(1, Ordering::SeqCst);
                    if !ok {
                        failed.fetch_add(1, Ordering::SeqCst);
                    }
                }
            })
        })
        .collect();
    wait_for("the stream to start", || sent.load(Ordering::SeqCst) > 20);

    // The new config, announced with `portcullis reload` (check, then SIGHUP).
    gw.rewrite_config(&with_metrics(config(
        tls_port, "second", &app, &other, true,
    )));
    let cfg = gw.config_path.to_string_lossy().into_owned();
    let (code, out, err) = run_cli(&["reload", "-c", &cfg], gw.data_dir());
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains(&format!("process {}", gw.pid())), "{out}");
    wait_for("the new route", || {
        get(&gw.url("/new/x"), &[]).status == 200
    });
    let at_reload = sent.load(Ordering::SeqCst);
    wait_for("more requests after the reload", || {
        sent.load(Ordering::SeqCst) > at_reload + 50
    });
    stop.store(true, Ordering::SeqCst);
    for s in streams {
        s.join().unwrap();
    }
    assert_eq!(
        failed.load(Ordering::SeqCst),
        0,
        "no request failed out of {}",
        sent.load(Ordering::SeqCst)
    );

    // The stream's route moved to the other upstream, with the new header value.
    let r = get(&gw.url("/stream/after"), &[]);
    assert_eq!(r.status, 200);
    assert!(
        r.body
            .starts_with(&format!("upstream:{}", other.addr.port())),
        "{}",
        r.body
    );
    assert_eq!(r.header("x-reload-test").as_deref(), Some("two"));
    // The new key signs, the old one still verifies what it signed.
    let jwks = get(&gw.url("/.well-known/jwks.json"), &[]).json();
    let kids: Vec<&str> = jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["kid"].as_str().unwrap())
        .collect();
    assert_eq!(kids, ["ed2", "ed1"]);
    let after = login_json(&gw, "alice@example.com", PASSWORD);
    assert_eq!(after.status, 200);
    let new_token = after.json()["access_token"].as_str().unwrap().to_string();
    let header = jsonwebtoken::decode_header(&new_token).unwrap();
    assert_eq!(header.kid.as_deref(), Some("ed2"));
    for token in [&old_token, &new_token] {
        let r = get(
            &gw.url("/app"),
            &[("Authorization", &format!("Bearer {token}"))],
        );
        assert_eq!(r.status, 200, "{}", r.body);
    }
    // The TLS listener serves the new certificate.
    assert_ne!(served_serial(tls_port), first_serial);
    let m = metrics(metrics_port);
    assert!(
        m.contains("portcullis_config_reloads_total{result=\"success\"} 1"),
        "{m}"
    );

    // A broken config: the last good one keeps serving, one error line, counted.
    std::fs::write(
        &gw.config_path,
        "server:\n  listen: [\"127.0.0.1:1\"]\nroutes: [{ path_prefx: / }]\n",
    )
    .unwrap();
    let errors_before = gw
        .log()
        .lines()
        .filter(|l| l.contains("\"level\":\"ERROR\""))
        .count();
    gw.signal("HUP");
    wait_for("the failure to be counted", || {
        metrics(metrics_port).contains("portcullis_config_reloads_total{result=\"failure\"} 1")
    });
    let r = get(&gw.url("/stream/still"), &[]);
    assert_eq!(r.status, 200);
    assert_eq!(r.header("x-reload-test").as_deref(), Some("two"));
    let log = gw.log();
    let errors: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("\"level\":\"ERROR\""))
        .skip(errors_before)
        .collect();
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(
        errors[0].contains("config reload failed") && errors[0].contains("path_prefx"),
        "{}",
        errors[0]
    );
    // `portcullis reload` refuses the broken file itself, naming it, and signals nothing.
    let (code, _, err) = run_cli(&["reload", "-c", &cfg], gw.data_dir());
    assert_ne!(code, 0);
    assert!(err.contains("path_prefx"), "{err}");
}
