//! Readiness speaks for the gateway (store, keys, issuers' JWKS); each upstream's health is
//! listed, and fails readiness only as `health.readiness_requires_upstreams` says. Two
//! upstream groups with TCP health checks, stopped one after the other.

use crate::harness::*;
use serde_json::Value;
use std::time::{Duration, Instant};

/// A gateway in front of `app` and `api`, each checked over TCP every 200 ms. `require`:
/// the `readiness_requires_upstreams` value, or `None` for the default.
fn gateway(require: Option<&str>, app: &Upstream, api: &Upstream) -> Gateway {
    let health = require
        .map(|r| format!("health: {{ readiness_requires_upstreams: {r} }}\n"))
        .unwrap_or_default();
    Gateway::start(&format!(
        "{health}upstreams:\n  app: {{ addresses: [\"{}\"], health_check: {{ interval: 200ms }} }}\n  api: {{ addresses: [\"{}\"], health_check: {{ interval: 200ms }} }}\nroutes:\n  - {{ path_prefix: /api, upstream: api, auth: public }}\n  - {{ path_prefix: /, upstream: app, auth: public }}\n",
        app.addr, api.addr
    ))
}

/// Poll readiness until `app` and `api` report these healthy peers; (status, body).
fn wait_peers(gw: &Gateway, app: u64, api: u64) -> (u16, Value) {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let (status, body) = raw_get(gw.port, "/readyz").unwrap();
        let json: Value = serde_json::from_str(&body).unwrap_or_else(|e| panic!("{e}: {body}"));
        let peers = |name: &str| json["upstreams"][name]["healthy_peers"].as_u64();
        if peers("app") == Some(app) && peers("api") == Some(api) {
            return (status, json);
        }
        assert!(
            Instant::now() < deadline,
            "never app {app}, api {api} healthy peers: {status} {body}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn failing(body: &Value) -> Vec<String> {
    body["failing"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f.as_str().unwrap().to_string())
        .collect()
}

#[test]
fn by_default_a_down_upstream_is_listed_but_the_gateway_is_ready() {
    let (mut app, api) = (Upstream::start(), Upstream::start());
    let gw = gateway(None, &app, &api);
    let (status, _) = wait_peers(&gw, 1, 1);
    assert_eq!(status, 200);
    app.stop();
    let (status, body) = wait_peers(&gw, 0, 1);
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], "ready");
    assert!(failing(&body).is_empty(), "{body}");
    // The routes to the other group are still served.
    assert_eq!(get(&gw.url("/api/x"), &[]).status, 200);
    // The peer coming back is seen and logged, as its going down was.
    let addr = app.addr;
    let _back = Upstream::start_on(addr);
    let (status, _) = wait_peers(&gw, 1, 1);
    assert_eq!(status, 200);
    let log = gw.log();
    let line = |what: &str| {
        log.lines()
            .filter(|l| l.contains(what) && l.contains("\"upstream\":\"app\""))
            .count()
    };
    assert_eq!(line("upstream peer is down"), 1, "{log}");
    assert_eq!(line("upstream peer is up"), 1, "{log}");
    assert!(log.contains(&format!("\"peer\":\"{addr}\"")));
    assert!(!log.contains("\"level\":\"ERROR\""), "{log}");
}

#[test]
fn with_any_readiness_fails_only_when_no_upstream_has_a_healthy_peer() {
    let (mut app, mut api) = (Upstream::start(), Upstream::start());
    let gw = gateway(Some("any"), &app, &api);
    assert_eq!(wait_peers(&gw, 1, 1).0, 200);
    app.stop();
    let (status, body) = wait_peers(&gw, 0, 1);
    assert_eq!(status, 200, "one group still up: {body}");
    api.stop();
    let (status, body) = wait_peers(&gw, 0, 0);
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["status"], "unavailable");
    assert_eq!(
        failing(&body),
        vec!["upstreams: no healthy peer in any of api, app"]
    );
}

#[test]
fn with_all_one_down_upstream_fails_readiness_and_is_named() {
    let (app, mut api) = (Upstream::start(), Upstream::start());
    let gw = gateway(Some("all"), &app, &api);
    assert_eq!(wait_peers(&gw, 1, 1).0, 200);
    api.stop();
    let (status, body) = wait_peers(&gw, 1, 0);
    assert_eq!(status, 503, "{body}");
    assert_eq!(failing(&body), vec!["upstream api: no healthy peer"]);
    assert_eq!(body["store"], "ok");
}

#[test]
fn a_probe_listener_answers_the_probes_and_nothing_else() {
    let app = Upstream::start();
    let probe_port = free_port();
    let gw = Gateway::start(&format!(
        "health: {{ listen: \"127.0.0.1:{probe_port}\" }}\nupstreams:\n  app: {{ addresses: [\"{}\"] }}\nroutes:\n  - {{ path_prefix: /, upstream: app, auth: public }}\n",
        app.addr
    ));
    let (status, body) = raw_get(probe_port, "/healthz").unwrap();
    assert_eq!(status, 200, "{body}");
    let (status, body) = raw_get(probe_port, "/readyz").unwrap();
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("\"upstreams\""), "{body}");
    for path in ["/", "/app", "/auth/login", "/auth/jwks.json"] {
        let (status, _) = raw_get(probe_port, path).unwrap();
        assert_eq!(status, 404, "{path}");
    }
    assert_eq!(app.count(), 0, "nothing reached the application");
    assert_eq!(get(&gw.url("/app"), &[]).status, 200);
    let cfg = gw.config_path.to_string_lossy().into_owned();
    let clash = std::fs::read_to_string(&cfg).unwrap().replace(
        &format!("127.0.0.1:{probe_port}"),
        &format!("127.0.0.1:{}", gw.port),
    );
    std::fs::write(gw.data_dir().join("clash.yaml"), clash).unwrap();
    let (code, _, err) = run_cli(&["check", "-c", "clash.yaml"], gw.data_dir());
    assert_eq!(code, 1);
    assert!(
        err.contains("health.listen") && err.contains("server.listen[0]"),
        "{err}"
    );
}
