use super::target::{already_canonical, decode_path, resolve_segments};
use super::*;
use std::borrow::Cow;

fn path(raw: &str) -> Result<String, TargetError> {
    parse_target(raw.as_bytes()).map(|t| t.path)
}

#[test]
fn normalizes_dot_segments_slashes_and_params() {
    let cases = [
        ("/", "/"),
        ("/a/b", "/a/b"),
        ("/a//b", "/a/b"),
        ("/static/../admin", "/admin"),
        ("/static/%2e%2e/admin", "/admin"),
        ("/static/%2E%2E/admin/", "/admin/"),
        ("/static/..;/admin", "/admin"),
        ("/static/%2e%2e;x/admin", "/admin"),
        ("/./a/./b/.", "/a/b"),
        ("//admin", "/admin"),
        ("/%61dmin", "/admin"),
        ("/a%20b", "/a%20b"),
        ("/a%3fb", "/a%3Fb"),
        ("/admin;x/secret", "/admin/secret"),
        ("/admin;jsessionid=1/secret", "/admin/secret"),
        ("/;x/admin", "/admin"),
        ("/a?x=1", "/a"),
    ];
    for (input, want) in cases {
        assert_eq!(path(input).as_deref(), Ok(want), "{input}");
    }
    let t = parse_target(b"/admin;jsessionid=1/x;y?q=1").unwrap();
    assert_eq!(t.with_params.as_deref(), Some("/admin;jsessionid=1/x;y"));
    assert_eq!(t.query.as_deref(), Some("q=1"));
    assert!(parse_target(b"/a/b").unwrap().with_params.is_none());
}

#[test]
fn the_fast_path_agrees_with_the_full_one() {
    for raw in [
        "/",
        "/a",
        "/a/",
        "/a/b.html",
        "/a.b/c",
        "/.well-known/x",
        "/a/.b",
        "/a/..b/c",
        "/a//b",
        "/a/./b",
        "/a/../b",
        "/a.",
        "/a./b",
        "/a/.",
        "/a/..",
        "/~u/x(1)*,=:@!$&'+",
        "/a-b_c",
        "//",
        "/.",
        "/..",
    ] {
        let fast = already_canonical(raw.as_bytes());
        let full = decode_path(raw.as_bytes())
            .and_then(|(d, u)| resolve_segments(&d).map(|(p, w, t)| (p, w, u.or(t))));
        if fast {
            assert_eq!(full, Ok((raw.to_string(), None, None)), "{raw}");
        }
    }
    assert!(already_canonical(b"/a/b.html") && already_canonical(b"/a/"));
    assert!(
        !already_canonical(b"/a/./b") && !already_canonical(b"/a.") && !already_canonical(b"//")
    );
}

#[test]
fn refuses_targets_without_one_meaning() {
    for bad in [
        "admin/secret",
        "%2Fadmin/secret",
        "a:/admin/secret",
        "/a%2fb",
        "/a%2F..",
        "/..%2f",
        "/a%5cb",
        "/a%00",
        "/a%09b",
        "/a%3bb",
        "/a\\b",
        "/a#b",
        "/%zz",
        "/%2",
        "/..",
        "/a/../..",
        "x",
        "",
        "http:/x",
        "ftp://h/x",
        "http://user@h/x",
        "http:///x",
    ] {
        assert!(parse_target(bad.as_bytes()).is_err(), "{bad:?}");
    }
    assert_eq!(parse_target(b"*"), Err(TargetError::Asterisk));
    assert!(parse_target(b"/a\xff").is_err());
}

#[test]
fn marks_forms_some_server_reads_differently() {
    for (raw, want) in [
        ("/admin./x", Unusual::TrailingDotOrSpace),
        ("/admin%20/x", Unusual::TrailingDotOrSpace),
        ("/admin.../x", Unusual::TrailingDotOrSpace),
        ("/adm%C4%B1n/x", Unusual::NonAscii),
        ("/%C0%AFadmin", Unusual::NonAscii),
        ("/caf\u{e9}", Unusual::NonAscii),
        ("/%252e%252e/admin", Unusual::DoubleEncoded),
    ] {
        assert_eq!(
            parse_target(raw.as_bytes()).unwrap().unusual,
            Some(want),
            "{raw}"
        );
    }
    assert_eq!(parse_target(b"/a.b/c.html").unwrap().unusual, None);
    assert_eq!(parse_target(b"/a%25").unwrap().unusual, None);
}

#[test]
fn absolute_form_keeps_its_authority() {
    let t = parse_target(b"http://Intranet.test./admin?x").unwrap();
    assert_eq!(t.authority.as_deref(), Some("Intranet.test."));
    assert_eq!(t.path, "/admin");
    let t = parse_target(b"HTTPS://h:8443?q").unwrap();
    assert_eq!((t.path.as_str(), t.query.as_deref()), ("/", Some("q")));
}

#[test]
fn hosts_are_canonical() {
    fn ok(raw: &str, tls: bool) -> Host<'_> {
        canonical_host(raw, tls).unwrap()
    }
    assert_eq!(ok("intranet.test", false).full, "intranet.test");
    assert!(matches!(ok("intranet.test", false).full, Cow::Borrowed(_)));
    assert_eq!(ok("Intranet.Test.", false).full, "intranet.test");
    assert_eq!(ok("intranet.test.:8080", false).full, "intranet.test:8080");
    assert_eq!(ok("intranet.test:80", false).full, "intranet.test");
    assert_eq!(ok("intranet.test:443", true).full, "intranet.test");
    assert_eq!(ok("intranet.test:443", false).full, "intranet.test:443");
    assert_eq!(ok("intranet.test:", false).name(), "intranet.test");
    assert_eq!(ok("127.0.0.1:8080", false).name(), "127.0.0.1");
    assert_eq!(ok("[::1]:8080", false).name(), "::1");
    assert_eq!(ok("[::1]", false).full, "[::1]");
    assert_eq!(ok("my_host.local", false).name(), "my_host.local");
    for bad in [
        "",
        ".",
        "intranet.test..",
        "intranet..test",
        "intranet.test/x",
        "intranet.test\0",
        "intranet test",
        "h:x",
        "h:0",
        "h:65536",
        "h:1:2",
        "127.1",
        "0x7f.0.0.1",
        "1.2.3.4.5",
        "-a.test",
        "[::1",
        "[zz]",
        "[::1]x",
        "caf\u{e9}.test",
    ] {
        assert!(canonical_host(bad, false).is_err(), "{bad:?}");
    }
}
