//! `portcullis demo`: one command serves the demo page through the gateway, with a demo user
//! whose credentials it prints.

use crate::harness::*;
use std::io::BufRead;
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
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            let _ = tx.send(line);
        }
    });
    let mut banner = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(15);
    while !banner.iter().any(|l: &String| l.contains("sign in:")) && Instant::now() < deadline {
        if let Ok(l) = rx.recv_timeout(Duration::from_millis(200)) {
            banner.push(l);
        }
    }
    // Ready, and the demo upstream's first health check has passed.
    let ready = loop {
        if let Ok((200, body)) = raw_get(port, "/readyz") {
            if body.contains("\"healthy_peers\":1") {
                break true;
            }
        }
        if Instant::now() > deadline {
            break false;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let result = std::panic::catch_unwind(|| {
        let text = banner.join("\n");
        assert!(ready, "demo never became ready: {text}");
        assert!(
            text.contains(&format!("http://127.0.0.1:{port}/")),
            "prints the URL: {text}"
        );
        let creds = banner
            .iter()
            .find(|l| l.contains("sign in:"))
            .expect("prints credentials");
        let (email, password) = creds
            .split_once("sign in:")
            .unwrap()
            .1
            .trim()
            .split_once(" / ")
            .unwrap();
        // Unauthenticated: the browser is sent to the login page, which renders.
        let base = format!("http://127.0.0.1:{port}");
        let r = get(&format!("{base}/"), &[("Accept", "text/html")]);
        assert_eq!(r.status, 302);
        let login_page = get(&format!("{base}{}", r.header("location").unwrap()), &[]);
        assert_eq!(login_page.status, 200);
        assert!(login_page.body.contains("<form"), "{}", login_page.body);
        // Sign in with the printed credentials, then the legacy page shows who we are.
        let body = serde_json::json!({"email": email, "password": password}).to_string();
        let r = post(
            &format!("{base}/auth/login"),
            &[("Content-Type", "application/json")],
            body.as_bytes(),
        );
        assert_eq!(r.status, 200, "{}", r.body);
        let token = r.json()["access_token"].as_str().unwrap().to_string();
        let page = get(
            &format!("{base}/"),
            &[("Cookie", &format!("pc_access={token}"))],
        );
        assert_eq!(page.status, 200, "{}", page.body);
        assert!(page.body.contains("Legacy app"), "{}", page.body);
        assert!(
            page.body.contains("<th>x-forwarded-user</th><td>demo</td>"),
            "{}",
            page.body
        );
        assert!(
            page.header("server").is_none(),
            "demo upstream's Server header removed"
        );
        // The page loads the browser client (injected once) and its own countdown script.
        let tag = "<script src=\"/auth/client.js\" defer></script>";
        assert_eq!(page.body.matches(tag).count(), 1, "{}", page.body);
        assert!(page
            .body
            .contains("<script src=\"/demo.js\" defer></script>"));
        assert!(page.body.contains("id=\"call-api\""));
        let cookie = format!("pc_access={token}");
        let script = get(&format!("{base}/demo.js"), &[("Cookie", &cookie)]);
        assert!(script.body.contains("portcullis.fetch"), "{}", script.body);
        let api = get(&format!("{base}/api/whoami"), &[("Cookie", &cookie)]);
        assert_eq!(api.json()["x-forwarded-user"], "demo", "{}", api.body);
        let client = get(&format!("{base}/auth/client.js"), &[]);
        assert_eq!(client.status, 200);
        assert!(
            dir.path().join("data/demo.db").exists(),
            "embedded store under data/"
        );
    });
    let _ = child.kill();
    let _ = child.wait();
    if let Err(e) = result {
        std::panic::resume_unwind(e);
    }
}
