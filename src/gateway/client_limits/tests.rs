use super::*;
use crate::gateway::security_headers::Prepared;
use pingora::protocols::Stream;

const LIMITS: HeadLimits = HeadLimits {
    max_bytes: 1024,
    max_headers: 8,
    timeout: Duration::from_secs(10),
};

fn verdict(head: &str) -> Verdict {
    check_head(head.as_bytes(), &LIMITS)
}

const BAD: Verdict = Verdict::Refuse(Refusal::BadRequest);

#[test]
fn complete_partial_and_unparseable_heads() {
    assert_eq!(
        verdict("GET / HTTP/1.1\r\nHost: a\r\n\r\n"),
        Verdict::Complete
    );
    assert_eq!(verdict("GET / HTTP/1.1\nHost: a\n\n"), Verdict::Complete);
    assert_eq!(verdict("GET / HTTP/1.1\r\nHost: a\r\n"), Verdict::Partial);
    assert_eq!(verdict("G"), Verdict::Partial);
    assert_eq!(verdict("GET / HTTP/1.1\r\nBad Header\r\n\r\n"), BAD);
    assert_eq!(verdict("HELLO\r\n\r\n"), BAD);
    let tls_hello = b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n";
    assert_eq!(check_head(tls_hello, &LIMITS), BAD);
    assert_eq!(verdict("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"), BAD);
}

#[test]
fn targets_pingora_escapes_still_pass() {
    assert_eq!(
        verdict("GET /a b HTTP/1.1\r\nHost: a\r\n\r\n"),
        Verdict::Complete
    );
    assert_eq!(
        verdict("GET /x\x01y HTTP/1.1\r\nHost: a\r\n\r\n"),
        Verdict::Complete
    );
    // httparse takes `<`, the `http` crate does not: Pingora refuses it.
    assert_eq!(verdict("GET /x<y HTTP/1.1\r\nHost: a\r\n\r\n"), BAD);
    assert_eq!(
        verdict("GET /a b HTTP/1.1\r\nHost: a\r\n"),
        Verdict::Partial
    );
    // Nothing to escape: refused.
    assert_eq!(verdict("GET / HTTP/9\r\n\r\n"), BAD);
}

#[test]
fn connect_is_refused() {
    assert_eq!(
        verdict("CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n"),
        Verdict::Refuse(Refusal::Connect)
    );
}

#[test]
fn limits_apply_before_the_head_is_complete() {
    let mut many = String::from("GET / HTTP/1.1\r\n");
    for i in 0..9 {
        many.push_str(&format!("X-{i}: v\r\n"));
    }
    assert_eq!(verdict(&many), Verdict::Refuse(Refusal::TooLarge));
    let long = format!("GET / HTTP/1.1\r\nX: {}", "a".repeat(1100));
    assert_eq!(verdict(&long), Verdict::Refuse(Refusal::TooLarge));
    let complete = format!("GET / HTTP/1.1\r\nX: {}\r\n\r\n", "a".repeat(1020));
    assert_eq!(verdict(&complete), Verdict::Refuse(Refusal::TooLarge));
    // A body after a head within the limit does not count.
    let body = format!(
        "POST / HTTP/1.1\r\nContent-Length: 2000\r\n\r\n{}",
        "b".repeat(2000)
    );
    assert_eq!(verdict(&body), Verdict::Complete);
}

#[test]
fn framing_and_host_as_pingora_checks_them() {
    let with = |h: &str| verdict(&format!("POST / HTTP/1.1\r\nHost: a\r\n{h}\r\n\r\n"));
    assert_eq!(
        with("Content-Length: 3\r\nContent-Length: 3"),
        Verdict::Complete
    );
    assert_eq!(with("Content-Length: 3, 3"), Verdict::Complete);
    assert_eq!(with("Content-Length: 3\r\nContent-Length: 4"), BAD);
    assert_eq!(with("Content-Length: +3"), BAD);
    assert_eq!(with("Content-Length: 99999999999999999999999"), BAD);
    assert_eq!(with("Transfer-Encoding: gzip, chunked"), Verdict::Complete);
    assert_eq!(with("Transfer-Encoding: chunked, gzip"), BAD);
    // Transfer-Encoding wins over a bad Content-Length.
    assert_eq!(
        with("Transfer-Encoding: chunked\r\nContent-Length: x"),
        Verdict::Complete
    );
    assert_eq!(
        verdict("POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n"),
        BAD
    );
    assert_eq!(verdict("GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n"), BAD);
    assert_eq!(verdict("GET / HTTP/1.1\r\nHost: u@a\r\n\r\n"), BAD);
    assert_eq!(
        verdict("GET http://a/x HTTP/1.1\r\nHost: a\r\n\r\n"),
        Verdict::Complete
    );
    assert_eq!(verdict("GET http://a/x HTTP/1.1\r\nHost: b\r\n\r\n"), BAD);
    assert_eq!(verdict("GET http://u@a/x HTTP/1.1\r\n\r\n"), BAD);
}

/// Our verdict agrees with Pingora's own reader on every head it is given.
#[tokio::test]
async fn verdicts_agree_with_pingora() {
    let heads = [
        "GET / HTTP/1.1\r\nHost: a\r\n\r\n",
        "GET /a b HTTP/1.1\r\nHost: a\r\n\r\n",
        "GET /a\x01b HTTP/1.1\r\n\r\n",
        "GET /x\"<y> HTTP/1.1\r\nHost: a\r\n\r\n",
        "GET /p?q=\"` HTTP/1.1\r\n\r\n",
        "GET /p`?q HTTP/1.1\r\n\r\n",
        "GET /caf\u{e9}?q={x}|^`\\ HTTP/1.1\r\n\r\n",
        "GET / HTTP/1.1\r\nBad Header\r\n\r\n",
        "HELLO\r\n\r\n",
        "GET / HTTP/9\r\n\r\n",
        "GET http://a/x HTTP/1.1\r\nHost: b\r\n\r\n",
        "GET http://a/x HTTP/1.1\r\nHost: a\r\n\r\n",
        "GET * HTTP/1.1\r\n\r\n",
        "OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n",
        "GET a/b HTTP/1.1\r\n\r\n",
        "GET //a:b@c/ HTTP/1.1\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: a\r\nHost: a\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: a@b\r\n\r\n",
        "POST / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
        "POST / HTTP/1.1\r\nContent-Length: 1,1\r\n\r\n",
        "POST / HTTP/1.1\r\nContent-Length: \r\n\r\n",
        "POST / HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n",
        "POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n",
        "POST / HTTP/1.1\r\nTransfer-Encoding: x, chunked\r\n\r\n",
        "GET / HTTP/1.1\r\nX: a\x7fb\r\n\r\n",
        "GET / HTTP/1.1\r\n X: folded\r\n\r\n",
    ];
    let limits = HeadLimits {
        max_bytes: 1 << 20,
        max_headers: 256,
        timeout: Duration::from_secs(1),
    };
    for head in heads {
        let ours = check_head(head.as_bytes(), &limits);
        let stream: Stream = Box::new(std::io::Cursor::new(head.as_bytes().to_vec()));
        let mut session = pingora::protocols::http::ServerSession::new_http1(stream);
        let theirs = session.read_request().await;
        assert_eq!(
            ours == Verdict::Complete,
            matches!(theirs, Ok(true)),
            "{head:?}: ours {ours:?}, Pingora {theirs:?}"
        );
    }
}

/// The same on heads mutated at random from a few templates (deterministic seed).
#[tokio::test]
async fn mutated_verdicts_agree_with_pingora() {
    let templates: [&[u8]; 6] = [
        b"GET /a?b=c HTTP/1.1\r\nHost: h\r\nX: y\r\n\r\n",
        b"POST /p HTTP/1.0\r\nContent-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n",
        b"GET http://h/x HTTP/1.1\r\nHost: h\r\n\r\n",
        b"PUT /x HTTP/1.1\nContent-Length: 1, 1\n\n",
        b"OPTIONS * HTTP/1.1\r\nHost: u@h:80\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
        b"GET https://h:8443/p?q#f HTTP/1.1\r\nHost: h:8443\r\n\r\n",
    ];
    let alphabet = b" \t\r\n:/?#@,\"<>{}|\\^`%*0129aZ-_.\x00\x01\x7f\x80\xc3\xa9\xff";
    let limits = HeadLimits {
        max_bytes: 1 << 20,
        max_headers: 256,
        timeout: Duration::from_secs(1),
    };
    let mut seed = 0x2545_f491_4f6c_dd1d_u64;
    let mut next = move |n: usize| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        (seed % n as u64) as usize
    };
    for _ in 0..50_000 {
        let mut head = templates[next(templates.len())].to_vec();
        for _ in 0..1 + next(3) {
            let at = next(head.len());
            match next(3) {
                0 => head.insert(at, alphabet[next(alphabet.len())]),
                1 => head[at] = alphabet[next(alphabet.len())],
                _ => {
                    head.remove(at);
                }
            }
        }
        let ours = check_head(&head, &limits);
        let stream: Stream = Box::new(std::io::Cursor::new(head.clone()));
        let mut session = pingora::protocols::http::ServerSession::new_http1(stream);
        let theirs = session.read_request().await;
        // A fragment in the target is refused here on purpose; Pingora drops it silently.
        let line = head.split(|&b| b == b'\n').next().unwrap_or_default();
        // The target as Pingora's fallback reads it: between the first space and the last
        // " HTTP/".
        let start = line.iter().position(|&b| b == b' ');
        let end = line.windows(6).rposition(|w| w == b" HTTP/");
        let fragment = match (start, end) {
            (Some(s), Some(e)) if s < e => line[s..e].contains(&b'#'),
            _ => false,
        };
        assert_eq!(
            ours == Verdict::Complete,
            matches!(theirs, Ok(true)) && !fragment,
            "{:?}: ours {ours:?}, Pingora {theirs:?}",
            String::from_utf8_lossy(&head)
        );
    }
}

/// A head read here goes to Pingora as its parse buffer and reads back unchanged, body
/// bytes included; the connection's later bytes follow.
#[tokio::test]
async fn handed_over_head_reads_back_in_pingora() {
    let wire = b"POST /p HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello".to_vec();
    let mut stream: Stream = Box::new(std::io::Cursor::new(wire[1..].to_vec()));
    let head = match read_head(&mut stream, wire[0], &LIMITS).await {
        Head::Ready(h) => h,
        _ => panic!("head not read"),
    };
    let mut session = pingora::protocols::http::ServerSession::new_http1(stream);
    session.set_pipelined_prefix(head);
    assert!(matches!(session.read_request().await, Ok(true)));
    assert_eq!(session.req_header().uri.path(), "/p");
    let body = session.read_request_body().await.unwrap().unwrap();
    assert_eq!(&body[..], b"hello");
}

#[tokio::test]
async fn refusals_and_a_client_that_leaves() {
    let mut big: Stream = Box::new(std::io::Cursor::new(vec![b'a'; 4000]));
    assert!(matches!(
        read_head(&mut big, b'G', &LIMITS).await,
        Head::Refused(Refusal::TooLarge, _)
    ));
    let mut gone: Stream = Box::new(std::io::Cursor::new(b"ET / HTTP/1.1\r\n".to_vec()));
    assert!(matches!(
        read_head(&mut gone, b'G', &LIMITS).await,
        Head::Gone
    ));
}

#[test]
fn answers_carry_security_headers_and_no_server() {
    let cfg = crate::config::SecurityHeaders {
        mode: crate::config::HeaderMode::Set,
        headers: vec![(
            http::HeaderName::from_static("x-content-type-options"),
            http::HeaderValue::from_static("nosniff"),
        )],
        wire_names: vec!["X-Content-Type-Options".into()],
        remove: vec![http::header::SERVER],
    };
    let answers = LocalAnswers::new(&Prepared::new(&cfg));
    for why in [
        Refusal::BadRequest,
        Refusal::Connect,
        Refusal::Timeout,
        Refusal::TooLarge,
    ] {
        let text = String::from_utf8(answers.get(why).to_vec()).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        assert!(
            head.starts_with(&format!("HTTP/1.1 {} ", why.status())),
            "{head}"
        );
        assert!(
            head.contains("\r\nX-Content-Type-Options: nosniff"),
            "{head}"
        );
        assert!(head.contains(&format!("\r\nContent-Length: {}", body.len())));
        assert!(!head.to_ascii_lowercase().contains("server:"), "{head}");
        assert!(serde_json::from_str::<serde_json::Value>(body).is_ok());
    }
}

#[test]
fn connections_over_the_cap_are_refused_until_one_closes() {
    let cap = ConnectionCap::new(2);
    let a = cap.admit();
    let b = cap.admit();
    assert!(a.is_some() && b.is_some());
    assert!(cap.admit().is_none());
    assert_eq!(cap.open(), 2);
    drop(a);
    assert!(cap.admit().is_some());
    assert_eq!(
        cap.open(),
        1,
        "the slot of a closed connection is free again"
    );
}
