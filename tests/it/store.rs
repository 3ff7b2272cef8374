//! The store under load and under failure, against the real binary: many clients rotating at
//! once (group commit), a store that stops answering (deadline, 503, readiness, recovery), the
//! grace window to the millisecond, and a crash in the middle of parallel rotations.

use crate::auth::{auth_gateway, login_json, set_cookies, Jar, PASSWORD};
use crate::harness::*;
use crate::store_contract::contract;
use portcullis::store::{RotateOutcome, TokenStore};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Limits far above what the tests send: they measure the store, not the rate limiter.
const RATES: &str = "rate_limits: { login_per_ip: 100000/1m, login_per_account: 100000/1m, login_per_account_ip: 100000/1m, login_per_device: 100000/1m, refresh_per_ip: 100000000/1m }\n";

/// Every request of these tests must be answered within this.
const ANSWER_WITHIN: Duration = Duration::from_secs(2);

/// A keep-alive client for one simulated user; gives up on a request after 5 s.
fn client() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .max_redirects(0)
        .timeout_global(Some(Duration::from_secs(5)))
        .build()
        .new_agent()
}

/// `POST /auth/refresh` with the jar's refresh cookie and CSRF header on `agent`.
fn refresh_on(agent: &ureq::Agent, gw_port: u16, jar: &Jar) -> Result<Resp, ureq::Error> {
    agent
        .post(format!("http://127.0.0.1:{gw_port}/auth/refresh"))
        .header("Cookie", jar.refresh_only())
        .header("X-CSRF-Token", &jar.csrf)
        .send(&b""[..])
        .map(snapshot)
}

fn refresh_cookie(r: &Resp) -> String {
    set_cookies(r)["__Host-pc_refresh"].value.clone()
}

fn with_refresh(jar: &Jar, token: &str) -> Jar {
    let mut j = jar.clone();
    j.refresh = token.to_string();
    j
}

fn signing_key() -> &'static str {
    "  signing_keys:\n    - { kid: ed1, algorithm: EdDSA, private_key_file: keys/ed1.private.pem }\n"
}

/// Sixteen clients each refresh their own session as fast as they can for
/// `PORTCULLIS_SOAK_SECS` (30 by default) on the default sled store: every answer comes
/// within 2 s, and login, logout and revocation still work afterwards.
#[test]
fn soak_sixteen_clients_rotating_their_own_sessions() {
    let secs: u64 = std::env::var("PORTCULLIS_SOAK_SECS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(30);
    let up = Upstream::start();
    let gw = auth_gateway(RATES, &up);
    let port = gw.port;
    let jars: Vec<Jar> = (0..16)
        .map(|i| {
            let who = if i % 2 == 0 { "alice" } else { "carol" };
            let r = login_json(&gw, &format!("{who}@example.com"), PASSWORD);
            assert_eq!(r.status, 200, "{}", r.body);
            Jar::from(&r, "__Host-")
        })
        .collect();
    let started = Instant::now();
    let end = started + Duration::from_secs(secs);
    let clients: Vec<_> = jars
        .into_iter()
        .map(|mut jar| {
            std::thread::spawn(move || {
                let agent = client();
                let (mut n, mut slowest) = (0u64, Duration::ZERO);
                while Instant::now() < end {
                    let t = Instant::now();
                    let r = refresh_on(&agent, port, &jar).unwrap_or_else(|e| {
                        panic!("refresh {n} failed after {:?}: {e}", t.elapsed())
                    });
                    let took = t.elapsed();
                    assert!(took < ANSWER_WITHIN, "refresh {n} took {took:?}");
                    assert_eq!(r.status, 200, "refresh {n}: {}", r.body);
                    jar.update(&r);
                    slowest = slowest.max(took);
                    n += 1;
                }
                (n, slowest, jar)
            })
        })
        .collect();
    let mut total = 0;
    let mut slowest = Duration::ZERO;
    let mut jars = Vec::new();
    for c in clients {
        let (n, s, jar) = c.join().expect("a client failed");
        assert!(n > 0);
        total += n;
        slowest = slowest.max(s);
        jars.push(jar);
    }
    let elapsed = started.elapsed().as_secs_f64();
    println!(
        "soak: 16 clients, {secs} s: {total} rotations ({:.0}/s), slowest answer {slowest:?}",
        total as f64 / elapsed
    );
    assert!(
        !gw.log().contains("store_timeout"),
        "no store call timed out"
    );

    // Afterwards: a new login, every client's newest token, and a logout that revokes.
    let t = Instant::now();
    let fresh = login_json(&gw, "alice@example.com", PASSWORD);
    assert_eq!(fresh.status, 200, "{}", fresh.body);
    assert!(t.elapsed() < ANSWER_WITHIN);
    let agent = client();
    for jar in &mut jars {
        let r = refresh_on(&agent, port, jar).unwrap();
        assert_eq!(r.status, 200, "{}", r.body);
        jar.update(&r);
    }
    let jar = &jars[0];
    let t = Instant::now();
    let out = post(
        &gw.url("/auth/logout"),
        &[
            ("Cookie", &jar.cookie_header()),
            ("X-CSRF-Token", &jar.csrf),
        ],
        b"",
    );
    assert_eq!(out.status, 200, "{}", out.body);
    assert!(t.elapsed() < ANSWER_WITHIN);
    let r = get(
        &gw.url("/app"),
        &[("Authorization", &format!("Bearer {}", jar.access))],
    );
    assert_eq!(r.status, 401);
    assert_eq!(r.json()["error"], "token_revoked");
    assert_eq!(refresh_on(&agent, port, jar).unwrap().status, 403);
    assert_eq!(
        refresh_on(&agent, port, &jars[1]).unwrap().status,
        200,
        "other sessions live on"
    );
}

/// `INFO server` over RESP: the redis-server's process id.
fn redis_pid(port: u16) -> u32 {
    let text = redis_command(port, &["INFO", "server"]);
    text.lines()
        .find_map(|l| l.strip_prefix("process_id:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no process_id in INFO: {text}"))
}

/// One command over a fresh connection; the raw reply.
fn redis_command(port: u16, args: &[&str]) -> String {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut cmd = format!("*{}\r\n", args.len());
    for a in args {
        cmd.push_str(&format!("${}\r\n{a}\r\n", a.len()));
    }
    s.write_all(cmd.as_bytes()).unwrap();
    let mut buf = vec![0u8; 65536];
    let mut out = Vec::new();
    loop {
        let n = s.read(&mut buf).unwrap_or(0);
        out.extend_from_slice(&buf[..n]);
        if n == 0 || complete_reply(&out) {
            break;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Enough of RESP to know a simple or bulk reply is complete.
fn complete_reply(b: &[u8]) -> bool {
    let Some(end) = b.windows(2).position(|w| w == b"\r\n") else {
        return false;
    };
    match b.first() {
        Some(b'$') => {
            let len: i64 = String::from_utf8_lossy(&b[1..end]).parse().unwrap_or(0);
            len < 0 || b.len() >= end + 2 + len as usize + 2
        }
        _ => true,
    }
}

/// A redis-server frozen with SIGSTOP; thawed (SIGCONT) when dropped, even if the test fails.
struct Frozen(u32);

impl Frozen {
    fn stop(pid: u32) -> Frozen {
        let ok = std::process::Command::new("kill")
            .args(["-STOP", &pid.to_string()])
            .status()
            .unwrap()
            .success();
        assert!(ok);
        Frozen(pid)
    }
}

impl Drop for Frozen {
    fn drop(&mut self) {
        let _ = std::process::Command::new("kill")
            .args(["-CONT", &self.0.to_string()])
            .status();
    }
}

/// A Redis that stops answering (frozen, connections still accepted by the kernel): login and
/// refresh get 503 within `store.timeout` plus slack, readiness names the store, and
/// everything works again without a restart once Redis answers.
#[test]
fn a_redis_that_stops_answering_costs_a_503_not_a_hang() {
    let redis = RedisServer::start();
    let up = Upstream::start();
    let gw = auth_gateway(
        &format!(
            "store: {{ backend: redis, redis_url: \"{}\", timeout: 1s, max_staleness: 30s }}\n{RATES}",
            redis.url()
        ),
        &up,
    );
    gw.wait_ready_status(200, Duration::from_secs(5));
    let r = login_json(&gw, "alice@example.com", PASSWORD);
    assert_eq!(r.status, 200, "{}", r.body);
    let jar = Jar::from(&r, "__Host-");

    let frozen = Frozen::stop(redis_pid(redis.port));
    let slack = Duration::from_millis(800);
    let t = Instant::now();
    let r = login_json(&gw, "carol@example.com", PASSWORD);
    let took = t.elapsed();
    assert_eq!(r.status, 503, "{}", r.body);
    assert!(took < Duration::from_secs(1) + slack, "login took {took:?}");
    let t = Instant::now();
    let r = crate::auth::refresh(&gw, &jar);
    let took = t.elapsed();
    assert_eq!(r.status, 503, "{}", r.body);
    assert_eq!(r.json()["error"], "store_unavailable");
    assert!(
        took < Duration::from_secs(1) + slack,
        "refresh took {took:?}"
    );
    assert!(
        set_cookies(&r).is_empty(),
        "a store outage does not end the session"
    );
    // A proxied request that needs a transparent refresh: 503, and the session is kept.
    let r = get(&gw.url("/app"), &[("Cookie", &jar.refresh_only())]);
    assert_eq!(r.status, 503, "{}", r.body);
    assert!(set_cookies(&r).is_empty(), "the refresh cookie is kept");
    let t = Instant::now();
    let (status, body) = raw_get(gw.port, "/readyz").unwrap();
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("store (redis)"), "{body}");
    assert!(t.elapsed() < Duration::from_secs(1) + slack);
    let log = gw.log();
    assert!(log.contains("\"event\":\"store_timeout\""), "audited");
    assert!(!log.contains(&jar.refresh) && !log.contains(&redis.url()));

    drop(frozen);
    gw.wait_ready_status(200, Duration::from_secs(10));
    let r = login_json(&gw, "carol@example.com", PASSWORD);
    assert_eq!(r.status, 200, "recovered without a restart: {}", r.body);
    let r = crate::auth::refresh(&gw, &jar);
    assert_eq!(r.status, 200, "the session survived the outage: {}", r.body);
}

/// With `reuse_grace: 1s` the parent presented again 800 ms after its rotation still yields
/// the same successor, and 1200 ms after it is reuse (whole seconds would often have let it
/// pass). Times count from when the rotation request was sent, so the margins hold on a busy
/// machine; an attempt whose round trips ate the margin is repeated.
#[test]
fn grace_window_edges_to_the_millisecond() {
    let up = Upstream::start();
    let gw = auth_gateway(RATES, &up);
    let margin = Duration::from_millis(150);
    for attempt in 1..=3 {
        let parent = Jar::from(&login_json(&gw, "alice@example.com", PASSWORD), "__Host-");
        let agent = client();
        let sent = Instant::now();
        let r = refresh_on(&agent, gw.port, &parent).unwrap();
        let rtt = sent.elapsed();
        assert_eq!(r.status, 200, "{}", r.body);
        let successor = refresh_cookie(&r);
        std::thread::sleep(Duration::from_millis(800).saturating_sub(sent.elapsed()));
        let t = Instant::now();
        let replay = refresh_on(&agent, gw.port, &parent).unwrap();
        let replay_rtt = t.elapsed();
        if rtt > margin || replay_rtt > margin {
            eprintln!("attempt {attempt}: round trips {rtt:?} / {replay_rtt:?} too slow to tell the edge; again");
            continue;
        }
        assert_eq!(replay.status, 200, "inside the window: {}", replay.body);
        assert_eq!(refresh_cookie(&replay), successor, "the same successor");
        std::thread::sleep(Duration::from_millis(1200).saturating_sub(sent.elapsed()));
        let late = refresh_on(&agent, gw.port, &parent).unwrap();
        assert_eq!(late.status, 403, "{}", late.body);
        assert_eq!(late.json()["error"], "refresh_token_reused");
        return;
    }
    panic!("the machine was too busy to measure the grace window edges");
}

/// SIGKILL while 16 clients rotate in parallel, restart on the same data: each client's
/// newest token works (as the current one, or as the parent of a rotation that reached the
/// disk just before the crash, inside the grace window: the same successor either way), and
/// any older token is reuse.
#[test]
fn sigkill_during_parallel_rotations_loses_nothing_a_client_holds() {
    let up = Upstream::start();
    let mut gw = auth_gateway(
        &format!(
            "tokens:\n  reuse_grace: 10s\n  on_reuse: revoke_family\n{}{RATES}",
            signing_key()
        ),
        &up,
    );
    let port = gw.port;
    let jars: Vec<Jar> = (0..16)
        .map(|_| Jar::from(&login_json(&gw, "alice@example.com", PASSWORD), "__Host-"))
        .collect();
    let stop = Arc::new(AtomicBool::new(false));
    let clients: Vec<_> = jars
        .into_iter()
        .map(|jar| {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let agent = client();
                let mut held = vec![jar.refresh.clone()];
                let mut jar = jar;
                while !stop.load(Ordering::SeqCst) {
                    let Ok(r) = refresh_on(&agent, port, &jar) else {
                        break; // the gateway is gone
                    };
                    assert_eq!(r.status, 200, "before the crash: {}", r.body);
                    jar.update(&r);
                    held.push(jar.refresh.clone());
                }
                (jar, held)
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(1500));
    gw.kill();
    stop.store(true, Ordering::SeqCst);
    let results: Vec<(Jar, Vec<String>)> = clients.into_iter().map(|c| c.join().unwrap()).collect();
    let rotations: usize = results.iter().map(|(_, h)| h.len() - 1).sum();
    println!("sigkill: {rotations} rotations answered before the kill");
    gw.spawn();
    let agent = client();
    for (i, (jar, held)) in results.iter().enumerate() {
        assert!(held.len() >= 2, "client {i} rotated before the crash");
        let newest = with_refresh(jar, &held[held.len() - 1]);
        let r = refresh_on(&agent, port, &newest).unwrap();
        assert_eq!(
            r.status, 200,
            "client {i}: newest token after the crash: {}",
            r.body
        );
        let next = refresh_cookie(&r);
        let again = refresh_on(&agent, port, &newest).unwrap();
        assert_eq!(again.status, 200, "client {i}: {}", again.body);
        assert_eq!(
            refresh_cookie(&again),
            next,
            "client {i}: same successor inside the grace window"
        );
        let older = with_refresh(jar, &held[held.len() - 2]);
        let r = refresh_on(&agent, port, &older).unwrap();
        assert_eq!(r.status, 403, "client {i}: {}", r.body);
        assert_eq!(r.json()["error"], "refresh_token_reused", "client {i}");
        let r = refresh_on(&agent, port, &with_refresh(jar, &next)).unwrap();
        assert_eq!(r.status, 403, "client {i}: the reused family is dead");
    }
}

/// The grace window to the millisecond on a real redis-server, and a family record as the
/// previous version stored it (whole seconds only) still loads, replays and rotates.
#[test]
fn redis_grace_in_milliseconds_and_records_in_whole_seconds() {
    let redis = RedisServer::start();
    let url = portcullis::secret::Secret::new(redis.url());
    let store = portcullis::store::redis::RedisStore::open(&url, Duration::from_secs(30)).unwrap();
    let rt = portcullis::store::runtime();
    rt.block_on(contract::grace_in_milliseconds(&store, "redis-ms"));

    let t0 = contract::T0;
    let legacy = format!(
        r#"{{"sid":"old","user":"u","created":{t0},"max_exp":{},"idle_exp":{},"current":"b","previous":"a","rotated_at":{t0},"revoked":false}}"#,
        t0 + 1000,
        t0 + 100
    );
    for (k, v) in [
        ("pc:fam:old", legacy.as_str()),
        ("pc:tok:a", "old"),
        ("pc:tok:b", "old"),
    ] {
        assert!(redis_command(redis.port, &["SET", k, v]).starts_with("+OK"));
    }
    let p = contract::policy(false);
    let ms = t0 * 1000;
    let out = rt.block_on(store.rotate("a", "b", ms + 9_999, &p)).unwrap();
    assert!(
        matches!(out, RotateOutcome::Rotated { replay: true, .. }),
        "{out:?}"
    );
    match rt
        .block_on(store.rotate("b", "c", ms + 10_500, &p))
        .unwrap()
    {
        RotateOutcome::Rotated { family, replay } => {
            assert!(!replay);
            assert_eq!(family.rotated_at_ms, Some(ms + 10_500));
            assert_eq!(family.rotated_at, t0 + 10);
        }
        other => panic!("{other:?}"),
    }
    // A record rotated since by the previous version (seconds moved on, milliseconds did not)
    // counts from its whole second.
    let stale = format!(
        r#"{{"sid":"mixed","user":"u","created":{t0},"max_exp":{},"idle_exp":{},"current":"y","previous":"x","rotated_at":{},"rotated_at_ms":{ms},"revoked":false}}"#,
        t0 + 1000,
        t0 + 100,
        t0 + 20
    );
    for (k, v) in [
        ("pc:fam:mixed", stale.as_str()),
        ("pc:tok:x", "mixed"),
        ("pc:tok:y", "mixed"),
    ] {
        assert!(redis_command(redis.port, &["SET", k, v]).starts_with("+OK"));
    }
    let out = rt
        .block_on(store.rotate("x", "y", (t0 + 25) * 1000, &p))
        .unwrap();
    assert!(
        matches!(out, RotateOutcome::Rotated { replay: true, .. }),
        "{out:?}"
    );
}
