//! `portcullis demo` serves the demo page through the gateway with one command.

use crate::harness::*;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[test]
fn demo_serves_the_legacy_page_through_the_gateway() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut child = Command::new(BIN)
        .args(["demo", "--port", &port.to_string()])
        .current_dir(dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(15);
    let ready = loop {
        if let Ok((200, _)) = raw_get(port, "/readyz") {
            break true;
        }
        if Instant::now() > deadline {
            break false;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let page = if ready {
        Some(get(
            &format!("http://127.0.0.1:{port}/"),
            &[("Accept", "text/html")],
        ))
    } else {
        None
    };
    let _ = child.kill();
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(ready, "demo never became ready: {stdout}");
    assert!(
        stdout.contains(&format!("http://127.0.0.1:{port}/")),
        "prints the URL: {stdout}"
    );
    let page = page.unwrap();
    assert_eq!(page.status, 200, "{}", page.body);
    assert!(page.body.contains("Legacy app"), "{}", page.body);
    assert!(
        page.header("server").is_none(),
        "demo upstream's Server header removed"
    );
    assert!(
        dir.path().join("data/demo.db").exists(),
        "embedded store under data/"
    );
}
