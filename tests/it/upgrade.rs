//! Zero-downtime upgrade on the embedded sled store, as an operator runs it: `serve --upgrade`
//! next to the running gateway, then SIGQUIT to the old one, under a steady stream of proxied
//! requests and refreshes. No proxied request fails, no session is lost, a store call in
//! between gets at most a short 503, and the new process is left serving.

use crate::auth::{auth_gateway, login_json, Jar, PASSWORD};
use crate::harness::*;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const CONFIG: &str = "server:\n  listen: [\"127.0.0.1:{PORT}\"]\n  grace_period: 2s\ntokens:\n  reuse_grace: 10s\n  signing_keys:\n    - { kid: ed1, algorithm: EdDSA, private_key_file: keys/ed1.private.pem }\nrate_limits: { login_per_ip: 100000/1m, login_per_account: 100000/1m, login_per_account_ip: 100000/1m, login_per_device: 100000/1m, refresh_per_ip: 100000000/1m }\n";

fn client() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .max_redirects(0)
        .timeout_global(Some(Duration::from_secs(10)))
        .build()
        .new_agent()
}

/// What the stream saw.
#[derive(Default)]
struct Seen {
    proxied_ok: AtomicU64,
    refreshed: AtomicU64,
    store_503: AtomicU64,
    /// Milliseconds since the start of the stream of the first and last store 503.
    first_503_ms: AtomicU64,
    last_503_ms: AtomicU64,
    failures: Mutex<Vec<String>>,
}

impl Seen {
    fn fail(&self, what: String) {
        self.failures.lock().unwrap().push(what);
    }
}

fn logout(gw: &Gateway, jar: &Jar) {
    let headers = [
        ("Cookie", jar.cookie_header()),
        ("X-CSRF-Token", jar.csrf.clone()),
    ];
    let headers: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let r = post(&gw.url("/auth/logout"), &headers, b"");
    assert!(r.status < 300, "logout: {} {}", r.status, r.body);
}

/// The session's access token no longer passes.
fn assert_refused(gw: &Gateway, jar: &Jar, why: &str) {
    let bearer = format!("Bearer {}", jar.access);
    let r = get(&gw.url("/app/x"), &[("Authorization", &bearer)]);
    assert_eq!(r.status, 401, "{why}: {}", r.body);
}

fn wait_for_log(gw: &Gateway, text: &str, limit: Duration) {
    let deadline = Instant::now() + limit;
    while !gw.log().contains(text) {
        assert!(
            Instant::now() < deadline,
            "log never said {text:?}:\n{}",
            gw.log()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Four clients request a protected page and four refresh their sessions, without pause,
/// from before the upgrade until after the old process has exited. With `in_flight`, a slow
/// proxied request is in flight at SIGQUIT and the stream keeps going; without, the stream
/// pauses so that every connection is idle at SIGQUIT.
fn upgrade_under_load(in_flight: bool) {
    let up = Upstream::start();
    let mut gw = auth_gateway(CONFIG, &up);
    let port = gw.port;
    let jars: Vec<Jar> = (0..9)
        .map(|_| {
            let r = login_json(&gw, "alice@example.com", PASSWORD);
            assert_eq!(r.status, 200, "{}", r.body);
            Jar::from(&r, "__Host-")
        })
        .collect();
    // Logged out before the upgrade: refused by the new process too.
    let gone = jars[8].clone();
    logout(&gw, &gone);

    let seen = Arc::new(Seen::default());
    let stop = Arc::new(AtomicBool::new(false));
    let pause = Arc::new(AtomicBool::new(false));
    let idle = Arc::new(AtomicU64::new(0));
    let epoch = Instant::now();
    let mut threads = Vec::new();
    for jar in &jars[..4] {
        let jar = jar.clone();
        let (seen, stop, pause, idle) = (seen.clone(), stop.clone(), pause.clone(), idle.clone());
        threads.push(std::thread::spawn(move || {
            let agent = client();
            while !stop.load(Ordering::SeqCst) {
                if pause.load(Ordering::SeqCst) {
                    idle.fetch_add(1, Ordering::SeqCst);
                    while pause.load(Ordering::SeqCst) {
                        std::thread::sleep(Duration::from_millis(5));
                    }
                }
                let r = agent
                    .get(format!("http://127.0.0.1:{port}/app/page"))
                    .header("Cookie", jar.cookie_header())
                    .call()
                    .map(snapshot);
                match r {
                    Ok(r) if r.status == 200 && r.body.contains("/app/page") => {
                        seen.proxied_ok.fetch_add(1, Ordering::SeqCst);
                    }
                    Ok(r) => seen.fail(format!("proxied: {} {}", r.status, r.body)),
                    Err(e) => seen.fail(format!("proxied: {e}")),
                }
            }
        }));
    }
    let held: Vec<Arc<Mutex<Jar>>> = jars[4..8]
        .iter()
        .map(|j| Arc::new(Mutex::new(j.clone())))
        .collect();
    for jar in &held {
        let jar = jar.clone();
        let (seen, stop, pause, idle) = (seen.clone(), stop.clone(), pause.clone(), idle.clone());
        threads.push(std::thread::spawn(move || {
            let agent = client();
            while !stop.load(Ordering::SeqCst) {
                if pause.load(Ordering::SeqCst) {
                    idle.fetch_add(1, Ordering::SeqCst);
                    while pause.load(Ordering::SeqCst) {
                        std::thread::sleep(Duration::from_millis(5));
                    }
                }
                let current = jar.lock().unwrap().clone();
                let r = agent
                    .post(format!("http://127.0.0.1:{port}/auth/refresh"))
                    .header("Cookie", current.refresh_only())
                    .header("X-CSRF-Token", &current.csrf)
                    .send(&b""[..])
                    .map(snapshot);
                match r {
                    Ok(r) if r.status == 200 => {
                        jar.lock().unwrap().update(&r);
                        seen.refreshed.fetch_add(1, Ordering::SeqCst);
                    }
                    Ok(r) if r.status == 503 => {
                        let ms = epoch.elapsed().as_millis() as u64;
                        if seen.store_503.fetch_add(1, Ordering::SeqCst) == 0 {
                            seen.first_503_ms.store(ms, Ordering::SeqCst);
                        }
                        seen.last_503_ms.fetch_max(ms, Ordering::SeqCst);
                        // The same token again shortly: a rotation that landed anyway gives
                        // the same successor inside the grace window.
                        std::thread::sleep(Duration::from_millis(20));
                    }
                    Ok(r) => seen.fail(format!("refresh: {} {}", r.status, r.body)),
                    Err(e) => seen.fail(format!("refresh: {e}")),
                }
            }
        }));
    }
    std::thread::sleep(Duration::from_millis(800));
    let before = seen.proxied_ok.load(Ordering::SeqCst);
    let refreshed_before = seen.refreshed.load(Ordering::SeqCst);
    assert!(before > 0 && refreshed_before > 0, "the stream runs");

    let mut new = gw.spawn_upgrade();
    wait_for_log(
        &gw,
        "waiting for the previous process to release the sled database",
        Duration::from_secs(10),
    );
    let slow = if in_flight {
        let url = gw.url("/slow?ms=1500");
        let cookie = jars[0].cookie_header();
        let t = std::thread::spawn(move || get(&url, &[("Cookie", &cookie)]));
        let deadline = Instant::now() + Duration::from_secs(5);
        while !up.requests().iter().any(|r| r.url.starts_with("/slow")) {
            assert!(Instant::now() < deadline, "slow request never arrived");
            std::thread::sleep(Duration::from_millis(5));
        }
        Some(t)
    } else {
        idle.store(0, Ordering::SeqCst);
        pause.store(true, Ordering::SeqCst);
        let deadline = Instant::now() + Duration::from_secs(10);
        while idle.load(Ordering::SeqCst) < 8 {
            assert!(Instant::now() < deadline, "the stream did not pause");
            std::thread::sleep(Duration::from_millis(5));
        }
        None
    };
    gw.signal("QUIT");
    if !in_flight {
        std::thread::sleep(Duration::from_millis(300));
        pause.store(false, Ordering::SeqCst);
    }
    if let Some(t) = slow {
        let r = t.join().unwrap();
        assert_eq!(r.status, 200, "in flight at SIGQUIT: {}", r.body);
    }
    let old_exit = gw.wait_exit(Duration::from_secs(20));
    assert!(
        old_exit.success(),
        "the old process exits cleanly: {old_exit}"
    );
    assert!(
        new.try_wait().unwrap().is_none(),
        "the new process is still running:\n{}",
        gw.log()
    );
    gw.child = Some(new);
    // Only the new process is left: the stream goes on against it alone.
    let after_exit = seen.proxied_ok.load(Ordering::SeqCst);
    let refreshed_at_exit = seen.refreshed.load(Ordering::SeqCst);
    std::thread::sleep(Duration::from_millis(800));
    stop.store(true, Ordering::SeqCst);
    for t in threads {
        t.join().unwrap();
    }

    let failures = seen.failures.lock().unwrap().clone();
    let store_503 = seen.store_503.load(Ordering::SeqCst);
    let burst = seen
        .last_503_ms
        .load(Ordering::SeqCst)
        .saturating_sub(seen.first_503_ms.load(Ordering::SeqCst));
    println!(
        "upgrade (in flight: {in_flight}): {} proxied, {} refreshes, {store_503} store 503s over {burst} ms",
        seen.proxied_ok.load(Ordering::SeqCst),
        seen.refreshed.load(Ordering::SeqCst),
    );
    assert!(failures.is_empty(), "failed requests: {failures:?}");
    assert!(
        seen.proxied_ok.load(Ordering::SeqCst) > after_exit,
        "the new process serves proxied requests"
    );
    assert!(
        seen.refreshed.load(Ordering::SeqCst) > refreshed_at_exit,
        "the new process rotates"
    );
    assert!(burst < 2000, "the store was unavailable for {burst} ms");

    // No session lost: every client's newest token rotates on the new process, and its
    // access token passes.
    for (i, jar) in held.iter().enumerate() {
        let jar = jar.lock().unwrap().clone();
        let r = post(
            &gw.url("/auth/refresh"),
            &[("Cookie", &jar.refresh_only()), ("X-CSRF-Token", &jar.csrf)],
            b"",
        );
        assert_eq!(r.status, 200, "client {i}: {}", r.body);
        let mut jar = jar;
        jar.update(&r);
        let r = get(&gw.url("/app/x"), &[("Cookie", &jar.cookie_header())]);
        assert_eq!(r.status, 200, "client {i}: {}", r.body);
    }
    // The logout made before the upgrade holds in the new process.
    assert_refused(&gw, &gone, "revoked before the upgrade");
    // A logout made now ends access at once.
    let jar = jars[0].clone();
    logout(&gw, &jar);
    assert_refused(&gw, &jar, "logged out after the upgrade");
    gw.wait_ready_status(200, Duration::from_secs(5));

    let log = gw.log();
    for step in [
        "SIGQUIT: handing the listening sockets to the new process",
        "listening sockets taken over from the previous process",
        "the new process has taken the listening sockets",
        "sled database released to the new process",
        "sled database opened",
        "revocations loaded; protected routes open",
    ] {
        assert!(log.contains(step), "log says {step:?}:\n{log}");
    }
}

#[test]
fn upgrade_on_sled_with_requests_in_flight_at_sigquit() {
    upgrade_under_load(true);
}

#[test]
fn upgrade_on_sled_with_idle_connections_at_sigquit() {
    upgrade_under_load(false);
}
