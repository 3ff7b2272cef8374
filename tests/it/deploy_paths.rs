//! Deployment paths next to a TLS listener: `probe` over HTTPS (a HEALTHCHECK for a gateway
//! reached only with TLS) and `server.redirect_http` on the plain listener.

use crate::harness::*;
use std::path::Path;
use std::sync::Arc;

/// A self-signed certificate for localhost and 127.0.0.1 in `dir`; its PEM.
fn certificate(dir: &Path) -> String {
    let ck =
        rcgen::generate_simple_self_signed(vec!["localhost".into(), "127.0.0.1".into()]).unwrap();
    let cert_pem = ck.cert.pem();
    std::fs::write(dir.join("cert.pem"), &cert_pem).unwrap();
    std::fs::write(dir.join("key.pem"), ck.signing_key.serialize_pem()).unwrap();
    cert_pem
}

/// A gateway with a plain and a TLS listener, public at `https://localhost:<tls port>`;
/// `extra` goes at the end of `server:`. Returns the gateway, the TLS port and the PEM.
fn with_tls(up: &Upstream, extra: &str) -> (Gateway, u16, String) {
    let dir = tempfile::tempdir().unwrap();
    let cert_pem = certificate(dir.path());
    let tls_port = free_port();
    let server = format!(
        "server:\n  listen: [\"127.0.0.1:{{PORT}}\"]\n  tls: {{ listen: [\"127.0.0.1:{tls_port}\"], cert: cert.pem, key: key.pem }}\n  public_url: https://localhost:{tls_port}\n{extra}"
    );
    (
        Gateway::start_in(&public_app(&server, up), dir),
        tls_port,
        cert_pem,
    )
}

/// GET over HTTPS, trusting only `cert_pem`.
fn get_tls(url: &str, cert_pem: &str) -> Resp {
    let cert = ureq::tls::Certificate::from_pem(cert_pem.as_bytes()).unwrap();
    let tls = ureq::tls::TlsConfig::builder()
        .root_certs(ureq::tls::RootCerts::Specific(Arc::new(vec![cert])))
        .build();
    let agent = ureq::Agent::config_builder()
        .tls_config(tls)
        .http_status_as_error(false)
        .max_redirects(0)
        .build()
        .new_agent();
    snapshot(
        agent
            .get(url)
            .call()
            .unwrap_or_else(|e| panic!("GET {url}: {e}")),
    )
}

#[test]
fn probe_speaks_https_and_names_failures_in_one_line() {
    let up = Upstream::start();
    let (gw, tls_port, _) = with_tls(&up, "");
    let dir = tempfile::tempdir().unwrap();
    // A self-signed certificate for another name than 127.0.0.1 is fine for a loopback probe.
    let url = format!("https://127.0.0.1:{tls_port}/healthz");
    let (code, _, err) = run_cli(&["probe", "--url", &url], dir.path());
    assert_eq!(code, 0, "{err}");

    let dead = format!("https://127.0.0.1:{}/healthz", free_port());
    let (code, _, err) = run_cli(&["probe", "--url", &dead], dir.path());
    assert_eq!(code, 1, "{err}");
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    assert!(
        err.contains(&dead) && err.contains("cannot connect"),
        "{err}"
    );

    // HTTPS to the plain listener: the handshake is what failed.
    let plain = format!("https://127.0.0.1:{}/healthz", gw.port);
    let (code, _, err) = run_cli(&["probe", "--url", &plain], dir.path());
    assert_eq!(code, 1, "{err}");
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    assert!(err.contains("TLS handshake failed"), "{err}");

    let (code, _, err) = run_cli(&["probe", "--url", "ftp://127.0.0.1/"], dir.path());
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("only http:// and https://"), "{err}");
}

#[test]
fn redirect_http_sends_plain_requests_to_public_url_but_answers_probes() {
    let up = Upstream::start();
    let (gw, tls_port, cert_pem) = with_tls(&up, "  redirect_http: true\n");
    let public = format!("https://localhost:{tls_port}");

    let r = get(&gw.url("/some/path?q=1"), &[]);
    assert_eq!(r.status, 308, "{}", r.body);
    assert_eq!(
        r.header("location").as_deref(),
        Some(format!("{public}/some/path?q=1").as_str())
    );
    // A form post keeps its method on the way to HTTPS: 308, not 301.
    let r = post(&gw.url("/form"), &[], b"a=1");
    assert_eq!(r.status, 308);
    assert_eq!(
        r.header("location").as_deref(),
        Some(format!("{public}/form").as_str())
    );
    // The path is the canonical one.
    let r = get(&gw.url("/a/../b//c"), &[]);
    assert_eq!(r.status, 308);
    assert_eq!(
        r.header("location").as_deref(),
        Some(format!("{public}/b/c").as_str())
    );
    assert_eq!(up.count(), 0, "nothing plain reaches the application");

    // Probes still answer on the plain listener.
    assert_eq!(get(&gw.url("/healthz"), &[]).status, 200);
    let ready = get(&gw.url("/readyz"), &[]);
    assert_eq!(ready.status, 200, "{}", ready.body);

    // The TLS listener serves the application.
    let r = get_tls(
        &format!("https://127.0.0.1:{tls_port}/some/path?q=1"),
        &cert_pem,
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(r.body.starts_with(&format!("upstream:{}", up.addr.port())));
    assert_eq!(up.count(), 1);
}

#[test]
fn without_redirect_http_the_plain_listener_serves_as_before() {
    let up = Upstream::start();
    let (gw, tls_port, cert_pem) = with_tls(&up, "");
    let r = get(&gw.url("/some/path?q=1"), &[]);
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(r.header("location").is_none());
    assert!(r.body.starts_with(&format!("upstream:{}", up.addr.port())));
    let r = get_tls(&format!("https://127.0.0.1:{tls_port}/x"), &cert_pem);
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(up.count(), 2);
}

#[test]
fn redirect_http_needs_an_https_public_url() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("pc.yaml"),
        "server:\n  listen: [\"127.0.0.1:0\"]\n  public_url: http://app.example.com\n  redirect_http: true\nupstreams:\n  app: { addresses: [\"127.0.0.1:9\"] }\nroutes:\n  - { path_prefix: /, upstream: app, auth: public }\n",
    )
    .unwrap();
    let (code, _, err) = run_cli(&["check", "-c", "pc.yaml"], dir.path());
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("pc.yaml") && err.contains("server.redirect_http"),
        "{err}"
    );
}
