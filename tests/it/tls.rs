//! HTTPS on the rustls listener with a certificate generated in the test.

use crate::harness::*;
use std::sync::Arc;

#[test]
fn https_listener_serves_with_generated_certificate() {
    let up = Upstream::start();
    let dir = tempfile::tempdir().unwrap();
    let ck =
        rcgen::generate_simple_self_signed(vec!["localhost".into(), "127.0.0.1".into()]).unwrap();
    let cert_pem = ck.cert.pem();
    std::fs::write(dir.path().join("cert.pem"), &cert_pem).unwrap();
    std::fs::write(dir.path().join("key.pem"), ck.signing_key.serialize_pem()).unwrap();
    let tls_port = free_port();
    let gw = Gateway::start_in(
        &public_app(&format!("server:\n  listen: [\"127.0.0.1:{{PORT}}\"]\n  tls: {{ listen: [\"127.0.0.1:{tls_port}\"], cert: cert.pem, key: key.pem }}\n  public_url: https://localhost:{tls_port}\n"), &up),
        dir,
    );
    let cert = ureq::tls::Certificate::from_pem(cert_pem.as_bytes()).unwrap();
    let tls = ureq::tls::TlsConfig::builder()
        .root_certs(ureq::tls::RootCerts::Specific(Arc::new(vec![cert])))
        .build();
    let agent = ureq::Agent::config_builder()
        .tls_config(tls)
        .http_status_as_error(false)
        .build()
        .new_agent();
    let r = snapshot(
        agent
            .get(&format!("https://127.0.0.1:{tls_port}/secure"))
            .call()
            .unwrap(),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(r.body.starts_with(&format!("upstream:{}", up.addr.port())));
    assert_eq!(r.header_all("strict-transport-security").len(), 1);
    let seen = &up.requests()[0];
    assert_eq!(seen.header("x-forwarded-proto").as_deref(), Some("https"));
    // The plain listener keeps working next to it.
    assert_eq!(get(&gw.url("/plain"), &[]).status, 200);
    assert_eq!(
        up.requests()[1].header("x-forwarded-proto").as_deref(),
        Some("http")
    );
}

#[test]
fn broken_certificate_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("cert.pem"), "not a certificate").unwrap();
    std::fs::write(dir.path().join("key.pem"), "not a key").unwrap();
    std::fs::write(
        dir.path().join("pc.yaml"),
        "server:\n  tls: { listen: [\"127.0.0.1:0\"], cert: cert.pem, key: key.pem }\nupstreams:\n  app: { addresses: [\"127.0.0.1:9\"] }\nroutes:\n  - { path_prefix: /, upstream: app }\n",
    )
    .unwrap();
    for cmd in ["check", "serve"] {
        let (code, _, err) = run_cli(&[cmd, "-c", "pc.yaml"], dir.path());
        assert_eq!(code, 1, "{cmd}: {err}");
        assert!(err.contains("pc.yaml: server.tls"), "{cmd}: {err}");
        assert!(!err.contains("panicked"), "{cmd}: {err}");
    }
}
