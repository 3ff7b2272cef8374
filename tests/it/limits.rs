//! Client limits enforced before a request reaches routing: the request head's size, count
//! and deadline, the gateway's own answers to heads Pingora would refuse, the connection cap
//! and running out of file descriptors.

use crate::harness::*;
use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

const SEC_HEADERS: &[&str] = &[
    "X-Content-Type-Options: nosniff",
    "Strict-Transport-Security: ",
    "X-Frame-Options: ",
    "Content-Security-Policy: ",
    "Referrer-Policy: ",
];

/// Resident memory of `pid` in KiB.
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS in /proc/PID/status")
}

fn connect(port: u16) -> TcpStream {
    let s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s
}

/// A few ordinary requests, so that the idle figure includes what serving costs anyway.
fn warm_up(gw: &Gateway) -> u64 {
    for _ in 0..20 {
        assert_eq!(raw_get(gw.port, "/warm").unwrap().0, 200);
    }
    thread::sleep(Duration::from_millis(200));
    rss_kib(gw.pid())
}

/// Sample the gateway's memory until every thread is done; the highest figure.
fn peak_rss_while<T>(pid: u32, threads: &[thread::JoinHandle<T>]) -> u64 {
    let mut peak = 0;
    while threads.iter().any(|t| !t.is_finished()) {
        peak = peak.max(rss_kib(pid));
        thread::sleep(Duration::from_millis(50));
    }
    peak
}

/// Send a head one ~1 KB header line every 200 ms and never finish it. Returns the time
/// from the first byte to the gateway's close, and what it answered.
fn trickle(port: u16) -> (Duration, String) {
    let mut s = connect(port);
    s.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let line = format!("X-Pad: {}\r\n", "p".repeat(1000));
    s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n").unwrap();
    let start = Instant::now();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while start.elapsed() < Duration::from_secs(10) {
        if got.is_empty() && s.write_all(line.as_bytes()).is_err() {
            break;
        }
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(_) => break,
        }
    }
    (start.elapsed(), String::from_utf8_lossy(&got).into_owned())
}

#[test]
fn trickled_heads_are_cut_at_the_deadline_and_memory_stays_flat() {
    let up = Upstream::start();
    let gw = Gateway::start(&public_app(
        "limits: { header_timeout: 2s }\nlogging: { format: json, level: info }\n",
        &up,
    ));
    let idle = warm_up(&gw);
    let port = gw.port;
    let clients: Vec<_> = (0..150)
        .map(|_| thread::spawn(move || trickle(port)))
        .collect();
    let peak = peak_rss_while(gw.pid(), &clients);
    let mut slowest = Duration::ZERO;
    for c in clients {
        let (took, answer) = c.join().unwrap();
        assert!(answer.starts_with("HTTP/1.1 408 "), "{answer}");
        assert!(
            answer.contains("X-Content-Type-Options: nosniff"),
            "{answer}"
        );
        assert!(
            took >= Duration::from_millis(1900),
            "closed before the deadline: {took:?}"
        );
        assert!(
            took <= Duration::from_millis(3500),
            "closed long after the deadline: {took:?}"
        );
        slowest = slowest.max(took);
    }
    eprintln!("trickle: idle RSS {idle} KiB, peak {peak} KiB, slowest close {slowest:?}");
    assert!(
        peak < 2 * idle,
        "RSS {peak} KiB under attack, {idle} KiB idle"
    );
    assert_eq!(up.count(), 20, "only the warm-up reached the upstream");
    assert_eq!(raw_get(gw.port, "/after").unwrap().0, 200);
}

#[test]
fn megabyte_heads_get_431_at_once_and_memory_stays_flat() {
    let up = Upstream::start();
    let gw = Gateway::start(&public_app("logging: { format: json, level: info }\n", &up));
    let idle = warm_up(&gw);
    // 5 KB lines: under Pingora's 256-header limit, so it would have buffered all of it.
    let mut head = b"GET / HTTP/1.1\r\nHost: x\r\n".to_vec();
    while head.len() < 1_000_000 {
        head.extend_from_slice(format!("X-Pad: {}\r\n", "p".repeat(5000)).as_bytes());
    }
    let head = Arc::new(head);
    let port = gw.port;
    let clients: Vec<_> = (0..150)
        .map(|_| {
            let head = head.clone();
            thread::spawn(move || {
                let mut s = connect(port);
                let start = Instant::now();
                // The gateway answers after 32 KiB and drains the rest; a write error only
                // means it closed first.
                let _ = s.write_all(&head);
                let mut answer = Vec::new();
                let _ = s.read_to_end(&mut answer);
                (
                    start.elapsed(),
                    String::from_utf8_lossy(&answer).into_owned(),
                )
            })
        })
        .collect();
    let peak = peak_rss_while(gw.pid(), &clients);
    let mut slowest = Duration::ZERO;
    for c in clients {
        let (took, answer) = c.join().unwrap();
        assert!(answer.starts_with("HTTP/1.1 431 "), "{answer}");
        assert!(answer.contains("headers_too_large"), "{answer}");
        assert!(
            answer.contains("X-Content-Type-Options: nosniff"),
            "{answer}"
        );
        slowest = slowest.max(took);
    }
    eprintln!("1 MB heads: idle RSS {idle} KiB, peak {peak} KiB, slowest close {slowest:?}");
    assert!(slowest < Duration::from_secs(5), "closed after {slowest:?}");
    assert!(
        peak < 2 * idle,
        "RSS {peak} KiB under attack, {idle} KiB idle"
    );
    assert_eq!(up.count(), 20, "only the warm-up reached the upstream");
    assert_eq!(raw_get(gw.port, "/after").unwrap().0, 200);
}

/// Whether the gateway has closed `s` (EOF or reset) within `limit`.
fn closed(s: &mut TcpStream, limit: Duration) -> bool {
    s.set_read_timeout(Some(limit)).unwrap();
    let mut b = [0u8; 16];
    match s.read(&mut b) {
        Ok(0) => true,
        Ok(_) => false,
        Err(e) => !matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut),
    }
}

fn error_lines(log: &str) -> usize {
    log.lines().filter(|l| l.contains("\"ERROR\"")).count()
}

#[test]
fn out_of_file_descriptors_logs_little_and_recovers_at_once() {
    let up = Upstream::start();
    let gw = Gateway::start(&public_app("logging: { format: json, level: info }\n", &up));
    let status = Command::new("prlimit")
        .args(["--pid", &gw.pid().to_string(), "--nofile=64:64"])
        .status()
        .expect("prlimit (util-linux)");
    assert!(status.success());
    // The gateway reads its open-file limit again once a second.
    thread::sleep(Duration::from_millis(1100));
    let before = gw.log();
    let flood = Instant::now();
    let mut held = Vec::new();
    while flood.elapsed() < Duration::from_secs(3) {
        if let Ok(s) = TcpStream::connect(("127.0.0.1", gw.port)) {
            held.push(s);
        }
        thread::sleep(Duration::from_millis(5));
    }
    let seconds = flood.elapsed().as_secs_f64();
    let during = gw.log();
    let new_lines = &during[before.len()..];
    let count = new_lines.lines().count();
    eprintln!(
        "{} connections in {seconds:.1} s: {count} log lines\n{new_lines}",
        held.len()
    );
    assert!(
        (count as f64) <= 2.0 * seconds + 2.0,
        "{count} log lines in {seconds:.1} s:\n{new_lines}"
    );
    assert_eq!(error_lines(new_lines), 0, "{new_lines}");
    assert!(new_lines.contains("client connection limit reached"));
    // The first connections are still open and served; the later ones were closed at once.
    let mut first = held.remove(0);
    first
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    first
        .write_all(b"GET /held HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    assert_eq!(read_response(&mut first).unwrap().0, 200);
    let mut last = held.pop().unwrap();
    assert!(closed(&mut last, Duration::from_secs(1)));
    // Once they go, a new client is served again at once.
    drop(first);
    drop(held);
    let freed = Instant::now();
    loop {
        if let Ok((200, _)) = raw_get(gw.port, "/healthz") {
            break;
        }
        assert!(
            freed.elapsed() < Duration::from_secs(2),
            "/healthz not back within 2 s"
        );
        thread::sleep(Duration::from_millis(20));
    }
    eprintln!("healthz back after {:?}", freed.elapsed());
}

#[test]
fn connections_over_max_connections_are_closed_at_once() {
    let up = Upstream::start();
    let gw = Gateway::start(&public_app(
        "limits: { max_connections: 4 }\nlogging: { format: json, level: info }\n",
        &up,
    ));
    // The start-up probe's connection may still be closing.
    thread::sleep(Duration::from_millis(100));
    let mut held: Vec<TcpStream> = (0..4).map(|_| connect(gw.port)).collect();
    thread::sleep(Duration::from_millis(100));
    let mut over = connect(gw.port);
    assert!(closed(&mut over, Duration::from_secs(1)), "over the cap");
    assert!(
        !closed(&mut held[0], Duration::from_millis(200)),
        "within the cap"
    );
    let log = gw.log();
    assert!(log.contains("client connection limit reached"), "{log}");
    assert!(log.contains("\"dropped\":1"), "{log}");
    // One leaves: the next is served.
    drop(held.pop());
    thread::sleep(Duration::from_millis(100));
    assert_eq!(raw_get(gw.port, "/healthz").unwrap().0, 200);
}

/// The status line and header lines of a raw answer.
fn head_of(text: &str) -> &str {
    text.split_once("\r\n\r\n").map_or(text, |(h, _)| h)
}

fn assert_ours(text: &str, status: u16) {
    let head = head_of(text);
    assert!(head.starts_with(&format!("HTTP/1.1 {status} ")), "{text}");
    for h in SEC_HEADERS {
        assert_eq!(head.matches(h).count(), 1, "{h} once in {head}");
    }
    assert!(
        !head.to_ascii_lowercase().contains("\r\nserver:"),
        "no Server header: {head}"
    );
    assert!(head.contains("Connection: close"), "{head}");
}

#[test]
fn heads_pingora_would_refuse_get_our_answers() {
    let up = Upstream::start();
    let gw = Gateway::start(&public_app("", &up));
    let cases: &[(&[u8], u16)] = &[
        (b"GET / HTTP/1.1\r\nBad Header\r\n\r\n", 400),
        (b"HELLO\r\n\r\n", 400),
        (b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03\r\n\r\n", 400),
        (
            b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab",
            400,
        ),
        (b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400),
        (
            b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n",
            405,
        ),
    ];
    for (request, status) in cases {
        let (got, text) = raw(gw.port, request).unwrap();
        assert_eq!(
            got,
            *status,
            "{:?}: {text}",
            String::from_utf8_lossy(request)
        );
        assert_ours(&text, *status);
        let body = text.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("");
        let json: serde_json::Value = serde_json::from_str(body).unwrap();
        assert!(json["error"].is_string(), "{body}");
    }
    // Over the header count, before the head is even complete.
    let mut many = String::from("GET / HTTP/1.1\r\nHost: x\r\n");
    for i in 0..120 {
        many.push_str(&format!("X-H{i}: v\r\n"));
    }
    let mut s = connect(gw.port);
    s.write_all(many.as_bytes()).unwrap();
    let (status, text) = read_response(&mut s).unwrap();
    assert_eq!(status, 431, "{text}");
    assert_ours(&text, 431);
    assert_eq!(up.count(), 0, "nothing reached the upstream");
    let log = gw.log();
    assert!(!log.contains("Fail to proxy"), "{log}");
    assert_eq!(error_lines(&log), 0, "{log}");
}

/// SO_LINGER with a zero timeout: closing sends a reset instead of a FIN.
fn reset_on_close(s: &TcpStream) {
    use std::os::fd::AsRawFd;
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: setsockopt reads `linger` for the given length only.
    let rc = unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&linger as *const libc::linger).cast(),
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        )
    };
    assert_eq!(rc, 0);
}

#[test]
fn clients_that_leave_mid_head_log_no_errors() {
    let up = Upstream::start();
    let gw = Gateway::start(&public_app("logging: { format: json, level: info }\n", &up));
    for partial in [&b"GET / HT"[..], b"GET / HTTP/1.1\r\nHost: x\r\n", b"G"] {
        let mut s = connect(gw.port);
        s.write_all(partial).unwrap();
        thread::sleep(Duration::from_millis(50));
        // A reset rather than a close: unread bytes make the kernel send RST.
        reset_on_close(&s);
        drop(s);
    }
    thread::sleep(Duration::from_millis(300));
    assert_eq!(raw_get(gw.port, "/healthz").unwrap().0, 200);
    let log = gw.log();
    assert_eq!(error_lines(&log), 0, "{log}");
    assert_eq!(up.count(), 0);
}

#[test]
fn keep_alive_split_heads_bodies_and_pipelining_still_work() {
    let up = Upstream::start();
    let gw = Gateway::start(&public_app("limits: { header_timeout: 2s }\n", &up));
    let mut s = connect(gw.port);
    // A head in pieces, well within the deadline.
    for piece in ["GET /one HT", "TP/1.1\r\nHo", "st: x\r\nX-A: 1\r\n", "\r\n"] {
        s.write_all(piece.as_bytes()).unwrap();
        thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(read_response(&mut s).unwrap().0, 200);
    // A body sent after its head, then another request on the same connection.
    s.write_all(b"POST /two HTTP/1.1\r\nHost: x\r\nContent-Length: 11\r\n\r\n")
        .unwrap();
    thread::sleep(Duration::from_millis(100));
    s.write_all(b"hello world").unwrap();
    assert_eq!(read_response(&mut s).unwrap().0, 200);
    // Head and body in one write.
    s.write_all(b"POST /three HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc")
        .unwrap();
    assert_eq!(read_response(&mut s).unwrap().0, 200);
    // Each request's deadline starts with its own first byte: this connection has been open
    // for longer than header_timeout by now.
    thread::sleep(Duration::from_millis(1500));
    s.write_all(b"GET /four HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    assert_eq!(read_response(&mut s).unwrap().0, 200);
    let urls: Vec<String> = up.requests().iter().map(|r| r.url.clone()).collect();
    assert_eq!(urls, ["/one", "/two", "/three", "/four"]);
    let lengths: Vec<Option<String>> = up.requests()[1..3]
        .iter()
        .map(|r| r.header("content-length"))
        .collect();
    assert_eq!(lengths, [Some("11".to_string()), Some("3".to_string())]);

    // Pipelined: two requests in one write. The first is answered; the second is answered
    // too or the connection closes after the first (Pingora does not pipeline), never mixed up.
    let mut p = connect(gw.port);
    p.write_all(b"GET /p1 HTTP/1.1\r\nHost: x\r\n\r\nGET /p2 HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let (status, text) = read_response(&mut p).unwrap();
    assert_eq!(status, 200, "{text}");
    assert!(text.contains("/p1"), "{text}");
    match read_response(&mut p) {
        Ok((0, rest)) => assert!(rest.is_empty(), "{rest}"),
        Ok((status, rest)) => {
            assert_eq!(status, 200, "{rest}");
            assert!(rest.contains("/p2"), "{rest}");
        }
        Err(_) => {}
    }
    let seen: Vec<String> = up.requests()[4..].iter().map(|r| r.url.clone()).collect();
    assert!(seen == ["/p1"] || seen == ["/p1", "/p2"], "{seen:?}");
}
