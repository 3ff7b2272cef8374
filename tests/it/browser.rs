//! Real-browser tests: headless Chromium, driven by the node scripts in tests/browser
//! (playwright-core, the system Chromium), against the real gateway binary in front of a
//! plain upstream. A missing browser or missing node packages fail the test, with the
//! command that installs them.

use crate::auth::{users_yaml, PASSWORD};
use crate::harness::*;
use crate::tokens::keygen;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The node package of the browser scripts.
fn browser_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser")
}

/// Where the scripts save their screenshots: target/screenshots (git-ignored).
fn screenshot_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("target/screenshots")
}

/// The Chromium binary: `$CHROMIUM`, else the first usual name on PATH (the scripts look
/// the same way; the one found here is handed to them).
fn chromium() -> PathBuf {
    if let Some(p) = std::env::var_os("CHROMIUM").filter(|p| !p.is_empty()) {
        let p = PathBuf::from(p);
        assert!(
            p.is_file(),
            "CHROMIUM={} is not a file: unset it to use the system Chromium (apt-get install chromium)",
            p.display()
        );
        return p;
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    let dirs: Vec<PathBuf> = std::iter::once(PathBuf::from("/usr/bin"))
        .chain(std::env::split_paths(&path))
        .collect();
    for name in ["chromium", "chromium-browser", "google-chrome"] {
        for dir in &dirs {
            let candidate = dir.join(name);
            if candidate.is_file() {
                return candidate;
            }
        }
    }
    panic!(
        "the browser tests need Chromium: apt-get install chromium (scripts/test.sh installs it), \
         or set CHROMIUM to a Chromium binary"
    );
}

/// Fail, with how to install them, when node or the node packages are missing.
fn require_node_packages() {
    let node = Command::new("node").arg("--version").output();
    assert!(
        node.is_ok_and(|o| o.status.success()),
        "the browser tests need node: apt-get install nodejs"
    );
    assert!(
        browser_dir()
            .join("node_modules/playwright-core/package.json")
            .is_file(),
        "the browser tests need their node packages: PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci --prefix tests/browser \
         (scripts/test.sh installs them)"
    );
}

/// Run `node tests/browser/<script> args...` to completion (at most 90 s; the scripts stop
/// themselves after at most 75 s) and return the JSON line it printed. Fails the test when the
/// script exits non-zero, with its output.
fn run_script(script: &str, args: &[&str]) -> serde_json::Value {
    let chromium = chromium();
    require_node_packages();
    let out_dir = tempfile::tempdir().unwrap();
    let (out_path, err_path) = (out_dir.path().join("stdout"), out_dir.path().join("stderr"));
    let started = Instant::now();
    let mut child = Command::new("node")
        .arg(browser_dir().join(script))
        .args(args)
        .env("CHROMIUM", &chromium)
        .env("SCREENSHOT_DIR", screenshot_dir())
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&out_path).unwrap())
        .stderr(std::fs::File::create(&err_path).unwrap())
        .spawn()
        .expect("start node");
    let deadline = started + Duration::from_secs(90);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break Some(status);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let stdout = std::fs::read_to_string(&out_path).unwrap_or_default();
    let stderr = std::fs::read_to_string(&err_path).unwrap_or_default();
    eprintln!(
        "{script} ({:.1} s):\n{stdout}{stderr}",
        started.elapsed().as_secs_f64()
    );
    let status = status.unwrap_or_else(|| panic!("{script} did not end within 90 s"));
    assert!(
        status.success(),
        "{script} failed ({status}):\n{stderr}\n{stdout}"
    );
    let line = stdout
        .lines()
        .rev()
        .find(|l| l.starts_with('{'))
        .unwrap_or_else(|| panic!("{script} printed no JSON line:\n{stdout}"));
    serde_json::from_str(line).unwrap_or_else(|e| panic!("{script}: {e}: {line}"))
}

/// The legacy application page: plain HTML, no script, a link to the sign-out page.
const APP_PAGE: &str = "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>Legacy application</title></head>\n<body><h1>Legacy application</h1>\n<p>Signed in.</p>\n<p><a href=\"/auth/logout\">Sign out</a></p>\n</body></html>\n";

/// An upstream that records every request and serves `APP_PAGE` at `/app/`, 404 elsewhere.
fn app_upstream() -> (HttpServer, Arc<Mutex<Vec<Recorded>>>) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let rec = seen.clone();
    let handler: Handler = Arc::new(move |r: &Recorded| {
        rec.lock().unwrap().push(r.clone());
        if r.method == "GET" && r.url == "/app/" {
            let headers = vec![(
                "Content-Type".to_string(),
                "text/html; charset=utf-8".to_string(),
            )];
            (200, headers, APP_PAGE.to_string())
        } else {
            let headers = vec![("Content-Type".to_string(), "text/plain".to_string())];
            (404, headers, "not found".to_string())
        }
    });
    let server = HttpServer::start("127.0.0.1:0".parse().unwrap(), handler).unwrap();
    (server, seen)
}

/// The test users behind a login for everything.
fn gateway(up: &HttpServer) -> Gateway {
    let dir = tempfile::tempdir().unwrap();
    keygen(dir.path(), "EdDSA", "ed1");
    std::fs::write(dir.path().join("users.yaml"), users_yaml()).unwrap();
    Gateway::start_in(
        &format!(
            "tokens:\n  signing_keys:\n    - {{ kid: ed1, algorithm: EdDSA, private_key_file: keys/ed1.private.pem }}\nusers: {{ file: users.yaml }}\nrate_limits: {{ login_per_ip: 1000/1m, login_per_account: 1000/1m, refresh_per_ip: 1000/1m }}\nupstreams:\n  app: {{ addresses: [\"{}\"] }}\nroutes:\n  - {{ path_prefix: /, upstream: app }}\n",
            up.addr
        ),
        dir,
    )
}

#[test]
fn chromium_signs_out_by_the_plain_html_form() {
    let (up, seen) = app_upstream();
    let gw = gateway(&up);
    let base = gw.url("");
    let result = run_script("logout_form.mjs", &[&base, "carol@example.com", PASSWORD]);
    assert_eq!(result["ok"], true, "{result}");
    let steps = result["steps"].as_array().unwrap();
    let names: Vec<&str> = steps.iter().map(|s| s["name"].as_str().unwrap()).collect();
    assert_eq!(
        names,
        [
            "open protected page",
            "submit login form",
            "follow sign-out link",
            "click sign-out button",
            "open protected page again"
        ],
        "{result}"
    );
    let login = format!("{base}/auth/login?return_to=%2Fapp%2F");
    assert_eq!(steps[0]["url"], login.as_str(), "{result}");
    assert_eq!(steps[1]["url"], format!("{base}/app/").as_str());
    assert_eq!(steps[1]["redirects"][0]["status"], 303);
    assert_eq!(steps[3]["redirects"][0]["status"], 303);
    assert_eq!(
        steps[3]["url"],
        format!("{base}/auth/logout?signed_out=1").as_str()
    );
    // Signed in, the browser held the gateway's three cookies; signed out, none of them.
    let ours = |step: &serde_json::Value| -> Vec<String> {
        step["cookies"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|c| c.as_str())
            .filter(|c| c.contains("pc_access") || c.contains("pc_refresh"))
            .map(str::to_string)
            .collect()
    };
    assert_eq!(ours(&steps[1]).len(), 2, "{result}");
    assert_eq!(ours(&steps[3]), Vec::<String>::new(), "{result}");
    let final_url = result["final_url"].as_str().unwrap();
    assert!(final_url.starts_with(&login), "{final_url}");

    // The application was reached once, signed in, with the user's identity; the redirects
    // before the login and after the sign-out never reached it.
    let app: Vec<Recorded> = seen
        .lock()
        .unwrap()
        .iter()
        .filter(|r| r.url.starts_with("/app"))
        .cloned()
        .collect();
    assert_eq!(app.len(), 1, "{app:?}");
    assert_eq!(
        app[0].header("x-forwarded-user").as_deref(),
        Some("carol"),
        "{app:?}"
    );
    // The gateway's cookies never go upstream.
    let cookie = app[0].header("cookie").unwrap_or_default();
    assert!(!cookie.contains("pc_"), "{cookie}");

    // The form login and the form sign-out are audited, the sign-out with the user it ended.
    let log = gw.log();
    let audit = |event: &str| {
        log.lines()
            .filter(|l| l.contains(&format!("\"event\":\"{event}\"")))
            .map(str::to_string)
            .collect::<Vec<_>>()
    };
    assert_eq!(audit("login").len(), 1, "{log}");
    let logout = audit("logout");
    assert_eq!(logout.len(), 1, "{log}");
    assert!(logout[0].contains("\"user\":\"carol\""), "{}", logout[0]);
    assert!(audit("csrf_blocked").is_empty(), "{log}");
}
