//! `inject_client: true` against a real Node app: the browser client's tag goes into its HTML
//! pages exactly once (also when `</head>` is split across two chunks), the upstream is asked
//! for no compression, and JSON and images pass byte for byte with their lengths. Also the
//! script itself: served without authentication, with an ETag and 304.

use crate::harness::*;
use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::process::{Child, Command, Stdio};

const TAG: &str = "<script src=\"/auth/client.js\" defer></script>";

/// The Node app of tests/upstreams/node_pages.js, stopped on drop.
struct NodeApp {
    child: Child,
    port: u16,
}

impl NodeApp {
    fn start() -> NodeApp {
        let port = free_port();
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/upstreams/node_pages.js");
        let mut child = Command::new("node")
            .arg(script)
            .arg(port.to_string())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("node: {e}; Node.js is needed: apt-get install nodejs"));
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert!(line.starts_with("listening"), "{line}");
        NodeApp { child, port }
    }
}

impl Drop for NodeApp {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// (status, headers, body bytes) through `agent`, asking for gzip like a browser does.
fn fetch(url: &str, extra: &[(&str, &str)]) -> (u16, Vec<(String, String)>, Vec<u8>) {
    let mut req = agent()
        .get(url)
        .header("Accept-Encoding", "gzip, deflate, br");
    for (k, v) in extra {
        req = req.header(*k, *v);
    }
    let r = req.call().unwrap();
    let status = r.status().as_u16();
    let headers = r
        .headers()
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("").to_string()))
        .collect();
    let mut body = Vec::new();
    r.into_body().into_reader().read_to_end(&mut body).unwrap();
    (status, headers, body)
}

#[test]
fn html_pages_get_the_client_once_and_everything_else_passes_byte_for_byte() {
    let app = NodeApp::start();
    let gw = Gateway::start(&format!(
        "upstreams:\n  legacy: {{ addresses: [\"127.0.0.1:{}\"] }}\nroutes:\n  - {{ path_prefix: /app/, upstream: legacy, auth: public, inject_client: true }}\n  - {{ path_prefix: /, upstream: legacy, auth: public }}\n",
        app.port
    ));
    for path in ["/app/page", "/app/stream"] {
        let (status, headers, body) = fetch(&gw.url(path), &[]);
        assert_eq!(status, 200, "{path}");
        let text = String::from_utf8(body.clone()).unwrap();
        assert_eq!(text.matches(TAG).count(), 1, "{path}: {text}");
        assert!(text.contains(&format!("{TAG}</head>")), "{path}: {text}");
        if let Some(len) = header_values(&headers, "content-length").first() {
            assert_eq!(len.parse::<usize>().unwrap(), body.len(), "{path}");
        }
        assert_eq!(
            header_values(&headers, "x-seen-accept-encoding"),
            ["identity"],
            "{path}: the upstream is asked for an uncompressed page"
        );
    }
    let (_, headers, _) = fetch(&gw.url("/app/page"), &[]);
    assert_eq!(
        header_values(&headers, "etag"),
        ["W/\"v1\""],
        "the page changed: a weak ETag"
    );

    // HTTP/1.0: no chunked encoding, the body ends with the connection.
    let (status, text) = raw(gw.port, b"GET /app/page HTTP/1.0\r\nHost: x\r\n\r\n").unwrap();
    assert_eq!(status, 200);
    assert_eq!(text.matches(TAG).count(), 1, "{text}");

    // Not HTML, or not on an injecting route: byte for byte, with the upstream's length.
    let image: Vec<u8> = (0..=255).collect();
    let (_, headers, body) = fetch(&gw.url("/app/image.png"), &[]);
    assert_eq!(body, image);
    assert_eq!(header_values(&headers, "content-length"), ["256"]);
    let json = br#"{"head":"</head>","n":1}"#.to_vec();
    let (_, headers, body) = fetch(&gw.url("/app/data.json"), &[]);
    assert_eq!(body, json);
    assert_eq!(
        header_values(&headers, "content-length"),
        [json.len().to_string()]
    );
    // The same page on a route without injection is untouched.
    let gw2 = Gateway::start(&format!(
        "upstreams:\n  legacy: {{ addresses: [\"127.0.0.1:{}\"] }}\nroutes:\n  - {{ path_prefix: /, upstream: legacy, auth: public }}\n",
        app.port
    ));
    let (_, headers, body) = fetch(&gw2.url("/app/page"), &[]);
    assert!(!String::from_utf8_lossy(&body).contains(TAG));
    assert_eq!(header_values(&headers, "etag"), ["\"v1\""]);
}

#[test]
fn the_client_script_is_served_without_authentication_and_revalidated_by_etag() {
    let up = Upstream::start();
    let gw = Gateway::start(&format!(
        "upstreams:\n  app: {{ addresses: [\"{}\"] }}\nroutes:\n  - {{ path_prefix: /, upstream: app }}\n",
        up.addr
    ));
    let r = get(&gw.url("/auth/client.js"), &[]);
    assert_eq!(r.status, 200);
    assert_eq!(
        r.header("content-type").as_deref(),
        Some("text/javascript; charset=utf-8")
    );
    assert!(r.body.contains("window.portcullis"), "{}", r.body);
    assert!(!r
        .header("cache-control")
        .unwrap_or_default()
        .contains("no-store"));
    let tag = r.header("etag").expect("an ETag");
    let again = get(&gw.url("/auth/client.js"), &[("If-None-Match", &tag)]);
    assert_eq!(again.status, 304);
    assert!(again.body.is_empty());
    let other = get(
        &gw.url("/auth/client.js"),
        &[("If-None-Match", "\"something-else\"")],
    );
    assert_eq!(other.status, 200);
    assert_eq!(up.count(), 0, "answered by the gateway");
}
