//! Connection lifetime: keep-alive, the idle timeout, and SIGTERM (in-flight requests
//! finish, idle connections close at once, then the process exits cleanly).

use crate::harness::*;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

/// Wait for the server to close `s`; how long that took.
fn closed_within(s: &mut TcpStream, limit: Duration) -> Duration {
    let start = Instant::now();
    s.set_read_timeout(Some(limit)).unwrap();
    let mut b = [0u8; 64];
    match s.read(&mut b) {
        Ok(0) => start.elapsed(),
        Ok(n) => panic!("unexpected {n} bytes on an idle connection"),
        Err(e) => panic!("connection still open after {limit:?}: {e}"),
    }
}

#[test]
fn keep_alive_serves_split_requests_then_idles_out_and_sigterm_closes_idle_ones() {
    let up = Upstream::start();
    let mut gw = Gateway::start(&public_app(
        "server:\n  listen: [\"127.0.0.1:{PORT}\"]\n  grace_period: 5s\n  keepalive_timeout: 1s\n",
        &up,
    ));
    let request = |path: &str| format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n");
    let mut a = TcpStream::connect(("127.0.0.1", gw.port)).unwrap();
    a.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    // The first byte alone, then the rest: the idle wait reads one byte and puts it back.
    let first = request("/one");
    a.write_all(&first.as_bytes()[..1]).unwrap();
    std::thread::sleep(Duration::from_millis(150));
    a.write_all(&first.as_bytes()[1..]).unwrap();
    let (status, text) = read_response(&mut a).unwrap();
    assert_eq!(status, 200, "{text}");
    // A second request on the same connection.
    a.write_all(request("/two").as_bytes()).unwrap();
    let (status, text) = read_response(&mut a).unwrap();
    assert_eq!(status, 200, "{text}");
    let paths: Vec<String> = up.requests().iter().map(|r| r.url.clone()).collect();
    assert_eq!(paths, vec!["/one", "/two"]);
    // Idle for longer than server.keepalive_timeout: closed by the gateway.
    let took = closed_within(&mut a, Duration::from_secs(4));
    assert!(
        took >= Duration::from_millis(700),
        "closed too early: {took:?}"
    );

    // An idle keep-alive connection is closed at SIGTERM, well before the grace period ends.
    let mut b = TcpStream::connect(("127.0.0.1", gw.port)).unwrap();
    b.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    b.write_all(request("/three").as_bytes()).unwrap();
    assert_eq!(read_response(&mut b).unwrap().0, 200);
    gw.signal("TERM");
    let took = closed_within(&mut b, Duration::from_millis(900));
    assert!(took < Duration::from_millis(900));
    let status = gw.wait_exit(Duration::from_secs(10));
    assert!(status.success(), "clean exit: {status}");
}

#[test]
fn sigterm_lets_an_in_flight_request_finish() {
    let up = Upstream::start();
    let mut gw = Gateway::start(&public_app(
        "server:\n  listen: [\"127.0.0.1:{PORT}\"]\n  grace_period: 3s\n",
        &up,
    ));
    let url = gw.url("/slow?ms=1500");
    let slow = std::thread::spawn(move || get(&url, &[]));
    // Let the request reach the upstream before the signal.
    let deadline = Instant::now() + Duration::from_secs(5);
    while up.count() == 0 {
        assert!(Instant::now() < deadline, "slow request never arrived");
        std::thread::sleep(Duration::from_millis(10));
    }
    gw.signal("TERM");
    let r = slow.join().unwrap();
    assert_eq!(r.status, 200, "in-flight request completed: {}", r.body);
    assert!(r.body.contains("/slow?ms=1500"));
    let status = gw.wait_exit(Duration::from_secs(10));
    assert!(status.success(), "clean exit: {status}");
    // New connections are refused once it has gone.
    assert!(raw_get(gw.port, "/healthz").is_err());
}

/// SIGTERM with a long grace period: the process exits as soon as nothing is in flight, at
/// once when every connection is idle, and right after the one slow request otherwise.
#[test]
fn sigterm_exits_as_soon_as_nothing_is_in_flight() {
    let up = Upstream::start();
    let config = public_app(
        "server:\n  listen: [\"127.0.0.1:{PORT}\"]\n  grace_period: 10s\n",
        &up,
    );

    // Nothing in flight; one idle keep-alive connection.
    let mut gw = Gateway::start(&config);
    let mut idle = TcpStream::connect(("127.0.0.1", gw.port)).unwrap();
    idle.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    idle.write_all(b"GET /idle HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        .unwrap();
    assert_eq!(read_response(&mut idle).unwrap().0, 200);
    let signalled = Instant::now();
    gw.signal("TERM");
    let status = gw.wait_exit(Duration::from_secs(2));
    assert!(status.success(), "clean exit: {status}");
    let took = signalled.elapsed();
    assert!(took < Duration::from_secs(2), "idle exit took {took:?}");

    // One request of 1.5 s in flight.
    let mut gw = Gateway::start(&config);
    let before = up.count();
    let url = gw.url("/slow?ms=1500");
    let slow = std::thread::spawn(move || get(&url, &[]));
    let deadline = Instant::now() + Duration::from_secs(5);
    while up.count() == before {
        assert!(Instant::now() < deadline, "slow request never arrived");
        std::thread::sleep(Duration::from_millis(10));
    }
    let signalled = Instant::now();
    gw.signal("TERM");
    let r = slow.join().unwrap();
    let answered = signalled.elapsed();
    assert_eq!(r.status, 200, "in-flight request completed: {}", r.body);
    let status = gw.wait_exit(Duration::from_secs(5));
    let exited = signalled.elapsed();
    assert!(status.success(), "clean exit: {status}");
    assert!(
        exited < answered + Duration::from_millis(800) && exited < Duration::from_secs(4),
        "answered after {answered:?}, exited after {exited:?}"
    );
    assert!(
        gw.log().contains("nothing in flight: exiting"),
        "{}",
        gw.log()
    );
}
