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
    let audit = |event: &str| audit_lines(&log, event);
    assert_eq!(audit("login").len(), 1, "{log}");
    let logout = audit("logout");
    assert_eq!(logout.len(), 1, "{log}");
    assert!(logout[0].contains("\"user\":\"carol\""), "{}", logout[0]);
    assert!(audit("csrf_blocked").is_empty(), "{log}");
}

// ---- the browser client (/auth/client.js) -------------------------------------------------

/// The application page: plain HTML that loads the client itself (no inline script: the
/// route's CSP allows scripts from the gateway's origin only).
const CLIENT_PAGE: &str = "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>Legacy application</title>\n<script src=\"/auth/client.js\" defer></script></head>\n<body><main><h1>Legacy application</h1>\n<p>Signed in.</p>\n<p><a href=\"/legacy/\">Legacy page</a> <a href=\"/auth/logout\">Sign out</a></p></main>\n</body></html>\n";

/// An unmodified page, served on the `inject_client: true` route.
const LEGACY_PAGE: &str = "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>Legacy page</title></head>\n<body><main><h1>Legacy page</h1>\n<form action=\"/legacy/search\" method=\"get\"><label for=\"q\">Search</label> <input id=\"q\" name=\"q\"> <button type=\"submit\">Go</button></form>\n<p><a id=\"app\" href=\"/app/\">Application</a></p></main>\n</body></html>\n";

/// The route CSP of `/app/`: scripts from the gateway's origin only, no inline code.
const STRICT_CSP: &str =
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:";

/// The upstream of the client tests, recording every request:
/// - `GET /app/`: `CLIENT_PAGE`; `GET /legacy/`: `LEGACY_PAGE`;
/// - `GET /app/vendor/axios.min.js`: axios from the browser tests' node packages;
/// - `GET /app/api/data`: `{"ok":true,"user":<X-Forwarded-User>}`;
/// - `POST /app/api/flaky?id=X`: first call per id 401 `token_expired` (as an application
///   behind the gateway may answer), later ones 200 JSON;
/// - 404 elsewhere.
fn client_upstream() -> (HttpServer, Arc<Mutex<Vec<Recorded>>>) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let rec = seen.clone();
    let flaky = Arc::new(Mutex::new(std::collections::HashSet::new()));
    let axios = std::fs::read_to_string(browser_dir().join("node_modules/axios/dist/axios.min.js"))
        .unwrap_or_default();
    let handler: Handler = Arc::new(move |r: &Recorded| {
        rec.lock().unwrap().push(r.clone());
        let typed = |status: u16, ctype: &str, body: String| {
            (
                status,
                vec![("Content-Type".to_string(), ctype.to_string())],
                body,
            )
        };
        let json = "application/json";
        let user = r.header("x-forwarded-user").unwrap_or_default();
        match (r.method.as_str(), r.url.as_str()) {
            ("GET", "/app/") => typed(200, "text/html; charset=utf-8", CLIENT_PAGE.into()),
            ("GET", "/legacy/") => typed(200, "text/html; charset=utf-8", LEGACY_PAGE.into()),
            ("GET", "/app/vendor/axios.min.js") => typed(200, "text/javascript", axios.clone()),
            ("GET", "/app/api/data") => typed(
                200,
                json,
                serde_json::json!({"ok": true, "user": user}).to_string(),
            ),
            ("POST", url) if url.starts_with("/app/api/flaky?id=") => {
                if flaky.lock().unwrap().insert(url.to_string()) {
                    let body =
                        r#"{"error":"token_expired","message":"the access token has expired"}"#;
                    typed(401, json, body.into())
                } else {
                    typed(
                        200,
                        json,
                        serde_json::json!({"ok": true, "user": user}).to_string(),
                    )
                }
            }
            _ => typed(404, "text/plain", "not found".into()),
        }
    });
    let server = HttpServer::start("127.0.0.1:0".parse().unwrap(), handler).unwrap();
    (server, seen)
}

/// A gateway in front of `client_upstream`: `/legacy/` with `inject_client: true`, `/app/`
/// with `STRICT_CSP`; `tokens` and `client` are the config lines of those sections.
fn client_gateway(up: &HttpServer, tokens: &str, client: &str) -> Gateway {
    let dir = tempfile::tempdir().unwrap();
    keygen(dir.path(), "EdDSA", "ed1");
    std::fs::write(dir.path().join("users.yaml"), users_yaml()).unwrap();
    Gateway::start_in(
        &format!(
            "tokens:\n  reuse_grace: 2s\n{tokens}  signing_keys:\n    - {{ kid: ed1, algorithm: EdDSA, private_key_file: keys/ed1.private.pem }}\n\
             users: {{ file: users.yaml }}\n\
             rate_limits: {{ login_per_ip: 1000/1m, login_per_account: 1000/1m, login_per_account_ip: 1000/1m, login_per_device: 1000/1m, refresh_per_ip: 1000/1m }}\n\
             {client}\
             upstreams:\n  app: {{ addresses: [\"{}\"] }}\n\
             routes:\n\
             \x20 - {{ path_prefix: /legacy/, upstream: app, inject_client: true }}\n\
             \x20 - {{ path_prefix: /app/, upstream: app, security_headers: {{ headers: {{ Content-Security-Policy: \"{STRICT_CSP}\" }} }} }}\n\
             \x20 - {{ path_prefix: /, upstream: app }}\n",
            up.addr
        ),
        dir,
    )
}

/// The requests of `seen` whose URL starts with `prefix`.
fn requests_to(seen: &Mutex<Vec<Recorded>>, prefix: &str) -> Vec<Recorded> {
    seen.lock()
        .unwrap()
        .iter()
        .filter(|r| r.url.starts_with(prefix))
        .cloned()
        .collect()
}

/// Protected page -> login page (axe-clean, with and without the session-expired notice)
/// -> back on the page; HttpOnly, SameSite=Strict cookies; the client under a strict CSP;
/// an unmodified page on an `inject_client` route gets the script once and works.
#[test]
fn chromium_client_signs_in_and_runs_on_plain_and_injected_pages() {
    let (up, seen) = client_upstream();
    let gw = client_gateway(&up, "", "");
    let base = gw.url("");
    let result = run_script("client_login.mjs", &[&base, "carol@example.com", PASSWORD]);
    assert_eq!(result["ok"], true, "{result}");
    let step = |name: &str| -> serde_json::Value {
        result["steps"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["name"] == name)
            .unwrap_or_else(|| panic!("no step {name}: {result}"))
            .clone()
    };
    assert_eq!(step("login page")["axe"], serde_json::json!([]), "{result}");
    assert_eq!(
        step("login page, session expired")["notice"],
        true,
        "{result}"
    );
    let signed = step("sign in");
    assert_eq!(
        signed["login"]["url"],
        format!("{base}/auth/login?return_to=%2Fapp%2F").as_str()
    );
    assert_eq!(signed["landed"]["url"], format!("{base}/app/").as_str());
    let cookies = &step("cookies")["cookies"];
    for k in ["access", "refresh"] {
        assert_eq!(cookies[k]["httpOnly"], true, "{cookies}");
        assert_eq!(cookies[k]["sameSite"], "Strict", "{cookies}");
        assert_eq!(cookies[k]["path"], "/", "{cookies}");
    }
    assert_eq!(cookies["csrf"]["httpOnly"], false, "{cookies}");
    let client = step("client on the application page");
    assert_eq!(client["scripts"], 1, "{client}");
    assert_eq!(
        client["api"],
        serde_json::json!(["axios", "fetch", "session", "staySignedIn"]),
        "{client}"
    );
    assert_eq!(client["csp"], STRICT_CSP, "{client}");
    let injected = step("injected page");
    let scripts = injected["scripts"].as_array().unwrap();
    assert_eq!(scripts.len(), 1, "{injected}");
    assert_eq!(scripts[0]["src"], "/auth/client.js", "{injected}");
    assert_eq!(scripts[0]["inHead"], true, "{injected}");
    assert_eq!(result["csp_violations"], serde_json::json!([]), "{result}");
    assert_eq!(
        result["screenshots"].as_array().unwrap().len(),
        4,
        "{result}"
    );

    // The application saw the user, never the gateway's cookies; the injected route's
    // upstream request asked for an uncompressed body.
    let app = requests_to(&seen, "/app/");
    assert!(!app.is_empty());
    for r in &app {
        assert_eq!(
            r.header("x-forwarded-user").as_deref(),
            Some("carol"),
            "{r:?}"
        );
        assert!(
            !r.header("cookie").unwrap_or_default().contains("pc_"),
            "{r:?}"
        );
    }
    let legacy = requests_to(&seen, "/legacy/");
    assert!(!legacy.is_empty());
    for r in &legacy {
        let enc = r.header("accept-encoding").unwrap_or_default();
        assert!(enc.is_empty() || enc == "identity", "{r:?}");
    }
}

/// `tokens.access_ttl: 2s`: a navigation after the expiry is refreshed by the gateway (the
/// cookies rotate); parallel 401s share one refresh through portcullis.fetch and through
/// portcullis.axios on the real axios; a POST is replayed with its body; a refused refresh
/// ends on the login page with the notice.
#[test]
fn chromium_client_refreshes_once_for_parallel_calls() {
    let (up, seen) = client_upstream();
    let gw = client_gateway(&up, "  access_ttl: 2s\n  leeway: 0s\n", "");
    let base = gw.url("");
    let result = run_script(
        "client_refresh.mjs",
        &[&base, "carol@example.com", PASSWORD],
    );
    assert_eq!(result["ok"], true, "{result}");
    let step = |name: &str| -> serde_json::Value {
        result["steps"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["name"] == name)
            .unwrap_or_else(|| panic!("no step {name}: {result}"))
            .clone()
    };
    let nav = step("navigate after expiry");
    assert_eq!(nav["access_rotated"], true, "{nav}");
    assert_eq!(nav["refresh_rotated"], true, "{nav}");
    for name in ["parallel fetch", "parallel axios"] {
        let s = step(name);
        assert_eq!(s["refreshes"], 1, "{s}");
        let results = s["results"].as_array().unwrap();
        assert_eq!(results.len(), 5, "{s}");
        assert!(results.iter().all(|r| r["status"] == 200), "{s}");
    }
    assert_eq!(step("replayed POST")["refreshes"], 1, "{result}");
    assert_eq!(step("axios ejected")["status"], 401, "{result}");
    let refused = step("refused refresh");
    assert_eq!(
        refused["url"],
        format!("{base}/auth/login?return_to=%2Fapp%2F&session_expired=1").as_str(),
        "{refused}"
    );
    assert_eq!(refused["notice"], true, "{refused}");

    // Every upstream request carried the user: none got through unauthenticated.
    for r in requests_to(&seen, "/app/") {
        assert_eq!(
            r.header("x-forwarded-user").as_deref(),
            Some("carol"),
            "{r:?}"
        );
    }
    // The refreshes the browser made (plus the gateway's own for the navigation) are the
    // only rotations; no reuse was detected.
    let log = gw.log();
    assert!(!log.contains("refresh_token_reused"), "{log}");
}

/// Tiny lifetimes (`refresh_ttl: 6s`, `warn_before: 3s`): the expiring event and the banner,
/// whose button refreshes once and moves idle_expires_at; then the expired event and the
/// login page with the notice.
#[test]
fn chromium_client_warns_before_the_session_expires() {
    let (up, _seen) = client_upstream();
    let gw = client_gateway(
        &up,
        "  access_ttl: 2s\n  refresh_ttl: 6s\n  leeway: 0s\n",
        "client: { warn_before: 3s, banner: true }\n",
    );
    let base = gw.url("");
    let result = run_script("client_expiry.mjs", &[&base, "carol@example.com", PASSWORD]);
    assert_eq!(result["ok"], true, "{result}");
    let names = step_names(&result);
    assert_eq!(
        names,
        [
            "session read on load",
            "expiring event",
            "banner",
            "stay signed in",
            "expired"
        ],
        "{result}"
    );
    let expired = &result["steps"][4];
    assert_eq!(expired["expired_events"], 1, "{expired}");
    assert_eq!(expired["refreshes"], 1, "{expired}");
}

/// `client.banner: false`: the same events, no banner.
#[test]
fn chromium_client_fires_events_without_a_banner() {
    let (up, _seen) = client_upstream();
    let gw = client_gateway(
        &up,
        "  access_ttl: 2s\n  refresh_ttl: 6s\n  leeway: 0s\n",
        "client: { warn_before: 3s, banner: false }\n",
    );
    let base = gw.url("");
    let result = run_script(
        "client_expiry.mjs",
        &[&base, "carol@example.com", PASSWORD, "--no-banner"],
    );
    assert_eq!(result["ok"], true, "{result}");
    let names = step_names(&result);
    assert_eq!(
        names,
        [
            "session read on load",
            "expiring event",
            "no banner",
            "expired"
        ],
        "{result}"
    );
}

/// The names of the steps a script reports, in order.
/// The lines of `log` that record `event`.
fn audit_lines(log: &str, event: &str) -> Vec<String> {
    let needle = format!("\"event\":\"{event}\"");
    log.lines()
        .filter(|l| l.contains(&needle))
        .map(str::to_string)
        .collect()
}

fn step_names(result: &serde_json::Value) -> Vec<&str> {
    result["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect()
}

// ---- the second factor ----------------------------------------------------------------------

/// An upstream that records every request: `APP_PAGE` at `/app/`; at `/admin/page` a page
/// saying how many requests for it the upstream has had and for whom; 404 elsewhere.
fn admin_upstream() -> (HttpServer, Arc<Mutex<Vec<Recorded>>>) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let rec = seen.clone();
    let handler: Handler = Arc::new(move |r: &Recorded| {
        let admin = {
            let mut seen = rec.lock().unwrap();
            seen.push(r.clone());
            seen.iter().filter(|x| x.url == "/admin/page").count()
        };
        let html = |body: String| {
            let headers = vec![(
                "Content-Type".to_string(),
                "text/html; charset=utf-8".to_string(),
            )];
            (200, headers, body)
        };
        match (r.method.as_str(), r.url.as_str()) {
            ("GET", "/app/") => html(APP_PAGE.to_string()),
            ("GET", "/admin/page") => {
                let user = r.header("x-forwarded-user").unwrap_or_default();
                html(format!(
                    "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>Admin page</title></head>\n<body><h1>Admin page</h1>\n<p id=\"seen\">Request {admin} for {user}</p>\n</body></html>\n"
                ))
            }
            _ => {
                let headers = vec![("Content-Type".to_string(), "text/plain".to_string())];
                (404, headers, "not found".to_string())
            }
        }
    });
    let server = HttpServer::start("127.0.0.1:0".parse().unwrap(), handler).unwrap();
    (server, seen)
}

/// Fail, with how to install it, when pyotp (the scripts' independent TOTP) is missing.
fn require_pyotp() {
    let out = Command::new("python3")
        .args(["-c", "import pyotp"])
        .output()
        .expect("python3 is needed for this test (apt-get install python3)");
    assert!(
        out.status.success(),
        "pyotp is needed: pip3 install pyotp (scripts/test.sh installs it): {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The `amr` claim of the access token a request forwarded upstream carries.
fn forwarded_amr(r: &Recorded) -> serde_json::Value {
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine;
    let auth = r.header("authorization").unwrap_or_default();
    let token = auth
        .strip_prefix("Bearer ")
        .unwrap_or_else(|| panic!("no Bearer token upstream: {r:?}"));
    let payload = token.split('.').nth(1).expect("a JWT");
    let claims: serde_json::Value =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).expect("base64url")).unwrap();
    claims["amr"].clone()
}

/// Password sign-in, enrolment on `/auth/mfa` (the secret read off the page, the code from
/// pyotp), ten recovery codes; signed out, an `mfa: required` page needs the password and
/// then a code: the enrolment's code is refused as used, the next step's code lands on the
/// page, which the upstream sees only then, with the user and `amr: [pwd, otp]`.
#[test]
fn chromium_enrols_a_second_factor_and_signs_in_with_a_code() {
    require_pyotp();
    let (up, seen) = admin_upstream();
    let dir = tempfile::tempdir().unwrap();
    keygen(dir.path(), "EdDSA", "ed1");
    std::fs::write(dir.path().join("users.yaml"), users_yaml()).unwrap();
    let gw = Gateway::start_in(
        &format!(
            "tokens:\n  signing_keys:\n    - {{ kid: ed1, algorithm: EdDSA, private_key_file: keys/ed1.private.pem }}\n\
             users: {{ file: users.yaml }}\n\
             rate_limits: {{ login_per_ip: 1000/1m, login_per_account: 1000/1m, login_per_account_ip: 1000/1m, login_per_device: 1000/1m, refresh_per_ip: 1000/1m }}\n\
             mfa: {{ issuer_name: Portcullis tests, encryption_key: MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY= }}\n\
             identity_headers: {{ forward_access_token: true }}\n\
             upstreams:\n  app: {{ addresses: [\"{}\"] }}\n\
             routes:\n\
             \x20 - {{ path_prefix: /admin/, upstream: app, mfa: required }}\n\
             \x20 - {{ path_prefix: /, upstream: app }}\n",
            up.addr
        ),
        dir,
    );
    let base = gw.url("");
    let result = run_script("mfa_enrol.mjs", &[&base, "carol@example.com", PASSWORD]);
    assert_eq!(result["ok"], true, "{result}");
    assert_eq!(
        step_names(&result),
        [
            "sign in with password",
            "admin page without a code",
            "open enrolment page",
            "confirm with a code",
            "continue",
            "follow sign-out link",
            "click sign-out button",
            "open admin page signed out",
            "submit password",
            "used code refused",
            "reload code page",
            "enter next code"
        ],
        "{result}"
    );
    let steps = &result["steps"];
    assert_eq!(
        steps[1]["url"],
        format!("{base}/auth/login?step_up=1&mfa=1&return_to=%2Fadmin%2Fpage").as_str(),
        "{result}"
    );
    assert_eq!(
        steps[2]["otpauth"]["issuer"], "Portcullis tests",
        "{result}"
    );
    assert_eq!(steps[2]["otpauth"]["name"], "carol@example.com", "{result}");
    assert_eq!(steps[3]["recovery_codes"], 10, "{result}");
    assert_eq!(
        steps[7]["url"],
        format!("{base}/auth/login?return_to=%2Fadmin%2Fpage").as_str(),
        "{result}"
    );
    assert_eq!(steps[8]["cookies"], serde_json::json!(["mfa"]), "{result}");
    let landed = &steps[11];
    assert_eq!(
        landed["url"],
        format!("{base}/admin/page").as_str(),
        "{result}"
    );
    assert_eq!(landed["seen"], "Request 1 for carol", "{result}");
    // The login's code is of a later time step than the enrolment's.
    let enrol_step = steps[3]["step"].as_u64().unwrap();
    assert!(landed["step"].as_u64().unwrap() > enrol_step, "{result}");
    assert_eq!(
        result["screenshots"].as_array().unwrap().len(),
        3,
        "{result}"
    );

    // The admin page reached the upstream once, after the code, with the user and a token
    // that says a code was entered; the application page before the enrolment with the
    // password only, after it (the enrolment's code counts for the session) with both.
    let admin = requests_to(&seen, "/admin/");
    assert_eq!(admin.len(), 1, "{admin:?}");
    assert_eq!(
        admin[0].header("x-forwarded-user").as_deref(),
        Some("carol"),
        "{admin:?}"
    );
    assert_eq!(forwarded_amr(&admin[0]), serde_json::json!(["pwd", "otp"]));
    assert!(
        !admin[0]
            .header("cookie")
            .unwrap_or_default()
            .contains("pc_"),
        "{admin:?}"
    );
    let app = requests_to(&seen, "/app/");
    assert_eq!(app.len(), 2, "{app:?}");
    assert_eq!(forwarded_amr(&app[0]), serde_json::json!(["pwd"]));
    assert_eq!(forwarded_amr(&app[1]), serde_json::json!(["pwd", "otp"]));
    assert_eq!(requests_to(&seen, "/auth/").len(), 0);

    // Audited: the enrolment, its step-up of the session, the refused code (a replay while
    // its step was still in the window), and the two logins.
    let log = gw.log();
    let audit = |event: &str| audit_lines(&log, event);
    let enrolled = audit("mfa_enrolled");
    assert_eq!(enrolled.len(), 1, "{log}");
    assert!(
        enrolled[0].contains("\"user\":\"carol\""),
        "{}",
        enrolled[0]
    );
    let step_up = audit("step_up");
    assert_eq!(step_up.len(), 1, "{log}");
    assert!(step_up[0].contains("\"amr\":\"pwd otp\""), "{}", step_up[0]);
    let failed = audit("mfa_failed");
    assert_eq!(failed.len(), 1, "{log}");
    assert!(failed[0].contains("\"stage\":\"login\""), "{}", failed[0]);
    let in_window = steps[9]["now_step"].as_u64().unwrap() <= enrol_step + 1;
    let reason = if in_window { "replay" } else { "wrong_code" };
    assert!(
        failed[0].contains(&format!("\"reason\":\"{reason}\"")),
        "{}",
        failed[0]
    );
    let logins = audit("login");
    assert_eq!(logins.len(), 2, "{log}");
    assert!(logins[0].contains("\"amr\":\"pwd\""), "{}", logins[0]);
    assert!(logins[1].contains("\"amr\":\"pwd otp\""), "{}", logins[1]);
    let password_ok = audit("login_password_ok");
    assert_eq!(password_ok.len(), 1, "{log}");
    assert!(
        password_ok[0].contains("\"next\":\"code\""),
        "{}",
        password_ok[0]
    );
    assert_eq!(audit("logout").len(), 1, "{log}");
    assert!(audit("csrf_blocked").is_empty(), "{log}");
}
