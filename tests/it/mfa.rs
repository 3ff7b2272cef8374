//! The second factor against the real binary: enrolment and the two-step login with codes
//! computed by an independent TOTP implementation (pyotp), replay, skew and throttling,
//! recovery codes, step-up for routes that want a code or a recent sign-in, secrets sealed at
//! rest (sled and Redis), an account that must enrol first, and malformed input.
//!
//! Codes are computed for explicit times (the previous step is now - 30 s) rather than waited
//! for: the gateway accepts one step of skew either way, and each step at most once per user,
//! so a user has three fresh codes in a step. Only a code of the previous step at sign-in
//! needs a step after the one the enrolment took, and waits for it.

use crate::auth::{set_cookies, Jar, PASSWORD};
use crate::harness::*;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use serde_json::{json, Value};
use std::collections::{BTreeMap, HashSet};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// The test gateways' `mfa.encryption_key` (32 random bytes, test-only), and another key.
const KEY: &str = "dXqR1SrJzzQxgJumzhn7KBpWnELYuAhEUcrawYKUvb4=";
const OTHER_KEY: &str = "uHczXwVG7C+2d3GLSb0eIRr83Ce1JJJcamRwYk6sFnI=";

/// Limits no test reaches, unless it sets its own.
const GENEROUS: &str = "rate_limits: { login_per_ip: 1000/1m, login_per_account: 1000/1m, login_per_account_ip: 1000/1m, login_per_device: 1000/1m, refresh_per_ip: 1000/1m }\n";

/// Seconds per TOTP time step.
const STEP: i64 = 30;

/// The TOTP codes of `secret` (base32) at the unix times `at`, computed by pyotp: an
/// implementation that shares nothing with the gateway's.
fn pyotp(secret: &str, at: &[i64]) -> Vec<String> {
    let script = "import pyotp,sys; t=pyotp.TOTP(sys.argv[1]); print(' '.join(t.at(int(x)) for x in sys.argv[2:]))";
    let out = Command::new("python3")
        .args(["-c", script, secret])
        .args(at.iter().map(i64::to_string))
        .output()
        .unwrap_or_else(|e| {
            panic!("these tests compute codes with python3 and pyotp (pip3 install pyotp): {e}")
        });
    assert!(
        out.status.success(),
        "these tests compute codes with python3 and pyotp: pip3 install pyotp\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let codes: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .map(str::to_string)
        .collect();
    assert_eq!(codes.len(), at.len(), "pyotp printed {codes:?}");
    for c in &codes {
        assert!(c.len() == 6 && c.bytes().all(|b| b.is_ascii_digit()), "{c}");
    }
    codes
}

/// The code of the time step `steps` away from the current one (-1: the previous step). In
/// the last 1.5 s of a step it first waits for the next one, so the gateway checks the code in
/// the step it was computed in.
fn code(secret: &str, steps: i64) -> String {
    let millis = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    let into = millis % (STEP * 1000);
    if into > STEP * 1000 - 1500 {
        std::thread::sleep(Duration::from_millis((STEP * 1000 - into + 50) as u64));
    }
    pyotp(secret, &[now() as i64 + steps * STEP]).remove(0)
}

/// Six digits that are no code of `secret` within two steps of now.
fn wrong_code(secret: &str) -> String {
    let t = now() as i64;
    let near: HashSet<String> = pyotp(secret, &[-2, -1, 0, 1, 2].map(|s| t + s * STEP))
        .into_iter()
        .collect();
    ["000000", "135791", "246802"]
        .into_iter()
        .find(|c| !near.contains(*c))
        .unwrap()
        .to_string()
}

/// Users: alice and carol may use a second factor, dave must.
fn users_yaml() -> String {
    let h = portcullis::auth::password::hash_password(PASSWORD);
    format!(
        "users:\n  alice: {{ email: alice@example.com, password: \"{h}\", roles: [user] }}\n  carol: {{ email: carol@example.com, password: \"{h}\", roles: [user] }}\n  dave: {{ email: dave@example.com, password: \"{h}\", roles: [user], mfa: required }}\n"
    )
}

/// The config of [`mfa_gateway`]; `extra` may replace the token settings and rate limits.
fn config(up: &Upstream, key: &str, extra: &str) -> String {
    let tokens = if extra.contains("tokens:") {
        ""
    } else {
        "tokens:\n  reuse_grace: 1s\n  signing_keys:\n    - { kid: ed1, algorithm: EdDSA, private_key_file: keys/ed1.private.pem }\n"
    };
    let rates = if extra.contains("rate_limits:") {
        ""
    } else {
        GENEROUS
    };
    format!(
        "{tokens}users: {{ file: users.yaml }}\nmfa: {{ issuer_name: Wiki, encryption_key: \"{key}\" }}\n{rates}{extra}upstreams:\n  app: {{ addresses: [\"{}\"] }}\nroutes:\n  - {{ path_prefix: /mfa-only, upstream: app, mfa: required }}\n  - {{ path_prefix: /fresh, upstream: app, max_auth_age: 2s }}\n  - {{ path_prefix: /, upstream: app }}\n",
        up.addr
    )
}

/// A gateway with the second factor on, the users above, and three routes to `up`:
/// `/mfa-only` (a code entered in this session), `/fresh` (a sign-in of the last 2 s), and
/// everything else (signed in).
fn mfa_gateway(up: &Upstream, extra: &str) -> Gateway {
    let dir = tempfile::tempdir().unwrap();
    crate::tokens::keygen(dir.path(), "EdDSA", "ed1");
    std::fs::write(dir.path().join("users.yaml"), users_yaml()).unwrap();
    Gateway::start_in(&config(up, KEY, extra), dir)
}

const NAVIGATE: [(&str, &str); 2] = [("Sec-Fetch-Mode", "navigate"), ("Accept", "text/html")];
const XHR: [(&str, &str); 2] = [("Sec-Fetch-Mode", "cors"), ("Accept", "application/json")];

/// One browser: the cookies it keeps from every answer, sent with every request.
#[derive(Default, Clone)]
struct Browser {
    cookies: BTreeMap<String, String>,
}

impl Browser {
    fn cookie(&self, name: &str) -> Option<&str> {
        self.cookies
            .get(&format!("__Host-{name}"))
            .map(String::as_str)
    }

    fn set_cookie(&mut self, name: &str, value: &str) {
        self.cookies
            .insert(format!("__Host-{name}"), value.to_string());
    }

    fn csrf(&self) -> String {
        self.cookie("pc_csrf").expect("a CSRF cookie").to_string()
    }

    fn cookie_header(&self) -> String {
        self.cookies
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join("; ")
    }

    /// Keep the cookies an answer sets; `Max-Age=0` removes one.
    fn keep(&mut self, r: &Resp) {
        for (name, c) in set_cookies(r) {
            if c.attr("Max-Age").as_deref() == Some("0") {
                self.cookies.remove(&name);
            } else {
                self.cookies.insert(name, c.value);
            }
        }
    }

    fn send(
        &mut self,
        gw: &Gateway,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Resp {
        let url = gw.url(path);
        let cookie = self.cookie_header();
        let mut all = headers.to_vec();
        if !cookie.is_empty() {
            all.push(("Cookie", &cookie));
        }
        let r = match method {
            "GET" => get(&url, &all),
            "POST" => post(&url, &all, body),
            "DELETE" => {
                let req = agent().delete(&url).force_send_body();
                let req = all.iter().fold(req, |r, (k, v)| r.header(*k, *v));
                snapshot(
                    req.send(body)
                        .unwrap_or_else(|e| panic!("DELETE {url}: {e}")),
                )
            }
            _ => unreachable!("{method}"),
        };
        self.keep(&r);
        r
    }

    /// A request of the page's script: JSON, with the CSRF header when the browser has the
    /// cookie.
    fn json(&mut self, gw: &Gateway, method: &str, path: &str, body: &Value) -> Resp {
        let csrf = self.cookie("pc_csrf").unwrap_or("").to_string();
        let headers = [
            ("Content-Type", "application/json"),
            ("Accept", "application/json"),
            ("X-CSRF-Token", csrf.as_str()),
        ];
        self.send(gw, method, path, &headers, body.to_string().as_bytes())
    }

    fn xhr(&mut self, gw: &Gateway, path: &str) -> Resp {
        self.send(gw, "GET", path, &XHR, b"")
    }

    fn navigate(&mut self, gw: &Gateway, path: &str) -> Resp {
        self.send(gw, "GET", path, &NAVIGATE, b"")
    }

    /// The password step of a JSON login.
    fn password(&mut self, gw: &Gateway, email: &str) -> Resp {
        let body = json!({"email": email, "password": PASSWORD});
        self.json(gw, "POST", "/auth/login", &body)
    }

    /// The password step of a step-up of the session this browser holds.
    fn step_up(&mut self, gw: &Gateway, email: &str) -> Resp {
        let body = json!({"email": email, "password": PASSWORD, "step_up": true});
        self.json(gw, "POST", "/auth/login", &body)
    }

    fn code_step(&mut self, gw: &Gateway, body: &Value) -> Resp {
        self.json(gw, "POST", "/auth/login/mfa", body)
    }

    /// Submit the form `id` of `html` (its hidden fields, and `fields`).
    fn submit(&mut self, gw: &Gateway, html: &str, id: &str, fields: &[(&str, &str)]) -> Resp {
        let start = html
            .find(&format!("id=\"{id}\""))
            .unwrap_or_else(|| panic!("no form {id}: {html}"));
        let form_start = html[..start].rfind("<form").unwrap();
        let form = &html[form_start..start + html[start..].find("</form>").unwrap()];
        let attr = |tag: &str, name: &str| -> Option<String> {
            let (_, rest) = tag.split_once(&format!("{name}=\""))?;
            let value = rest.split('"').next()?;
            Some(value.replace("&quot;", "\"").replace("&amp;", "&"))
        };
        let action = attr(form, "action").expect("an action");
        let mut body = form_urlencoded::Serializer::new(String::new());
        for input in form.split("<input").skip(1) {
            if input.contains("type=\"hidden\"") {
                body.append_pair(
                    &attr(input, "name").unwrap(),
                    &attr(input, "value").unwrap(),
                );
            }
        }
        for (k, v) in fields {
            body.append_pair(k, v);
        }
        let headers = [
            ("Content-Type", "application/x-www-form-urlencoded"),
            NAVIGATE[0],
        ];
        self.send(gw, "POST", &action, &headers, body.finish().as_bytes())
    }

    /// The payload of the access token this browser holds.
    fn claims(&self) -> Value {
        claims(self.cookie("pc_access").expect("an access cookie"))
    }
}

/// The payload of a JWT.
fn claims(token: &str) -> Value {
    let payload = token.split('.').nth(1).expect("a JWT");
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap()
}

/// The set cookies' names, without the `__Host-` prefix.
fn cookie_names(r: &Resp) -> Vec<String> {
    let mut names: Vec<String> = set_cookies(r)
        .into_keys()
        .map(|k| k.trim_start_matches("__Host-").to_string())
        .collect();
    names.sort();
    names
}

/// A signed-in browser of `email`, whose account has no second factor yet.
fn signed_in(gw: &Gateway, email: &str) -> Browser {
    let mut b = Browser::default();
    let r = b.password(gw, email);
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(r.json()["access_token"].is_string(), "{}", r.body);
    b
}

/// Enrol the signed-in (or must-enrol) user of `b`: the secret `GET /auth/mfa` shows,
/// confirmed with a code of the previous step. Returns the secret and the answer.
fn enrol(gw: &Gateway, b: &mut Browser) -> (String, Resp) {
    let r = b.xhr(gw, "/auth/mfa");
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["enrolled"], false, "{}", r.body);
    let secret = r.json()["secret"].as_str().unwrap().to_string();
    let r = b.json(
        gw,
        "POST",
        "/auth/mfa/totp",
        &json!({"code": code(&secret, -1)}),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    (secret, r)
}

/// A browser that signed `email` in with a password and a code of step `steps`.
fn two_step_login(gw: &Gateway, email: &str, secret: &str, steps: i64) -> Browser {
    let mut b = Browser::default();
    let r = b.password(gw, email);
    assert_eq!(r.json(), json!({"mfa_required": true}));
    let r = b.code_step(gw, &json!({"code": code(secret, steps)}));
    assert_eq!(r.status, 200, "{}", r.body);
    b
}

/// Another browser holding a copy of the pending-login cookie `copied`, whose login already
/// completed, is refused even with a fresh code of `secret`, and gets no session.
fn assert_copy_refused(gw: &Gateway, copied: &str, secret: &str) {
    let mut copy = Browser::default();
    copy.set_cookie("pc_mfa", copied);
    copy.set_cookie("pc_csrf", "copied-csrf-value-of-32-characters-x");
    let r = copy.code_step(gw, &json!({"code": code(secret, 1)}));
    assert_eq!(
        (r.status, r.json()["error"].clone()),
        (401, json!("mfa_login_expired")),
        "{}",
        r.body
    );
    assert!(copy.cookie("pc_access").is_none());
}

/// Some audit line of `event` holds every one of `needles` (JSON fragments).
fn assert_audited(gw: &Gateway, event: &str, needles: &[&str]) {
    assert!(
        audit(gw, event)
            .iter()
            .any(|l| needles.iter().all(|n| l.contains(n))),
        "no {event} with {needles:?}:\n{}",
        gw.log()
    );
}

/// The gateway's audit lines of `event`.
fn audit(gw: &Gateway, event: &str) -> Vec<String> {
    let needle = format!("\"event\":\"{event}\"");
    gw.log()
        .lines()
        .filter(|l| l.contains(&needle) && l.contains("portcullis::audit"))
        .map(str::to_string)
        .collect()
}

/// The value of one series in the metrics text (0 when absent).
fn metric(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series).and_then(|v| v.trim().parse().ok()))
        .unwrap_or(0.0)
}

/// A gateway of [`mfa_gateway`] that also serves metrics, and the port they are on.
fn gateway_with_metrics(up: &Upstream, extra: &str) -> (Gateway, u16) {
    let port = free_port();
    let metrics = format!("metrics: {{ listen: \"127.0.0.1:{port}\" }}\n{extra}");
    (mfa_gateway(up, &metrics), port)
}

/// `portcullis_mfa_total{result}` on the metrics port is `n` for each `(result, n)`.
fn assert_mfa_counts(metrics_port: u16, counts: &[(&str, f64)]) {
    let m = get(&format!("http://127.0.0.1:{metrics_port}/metrics"), &[]).body;
    for (result, n) in counts {
        let series = format!("portcullis_mfa_total{{result=\"{result}\"}}");
        assert_eq!(metric(&m, &series), *n, "{series}\n{m}");
    }
}

fn base32_decode(text: &str) -> Vec<u8> {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    let (mut bits, mut acc, mut out) = (0u32, 0u64, Vec::new());
    for c in text.trim_end_matches('=').bytes() {
        let v = ALPHABET.iter().position(|&a| a == c).expect("base32") as u64;
        acc = (acc << 5) | v;
        bits += 5;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    out
}

/// The ways a secret could be written down: its base32 (either case), its raw bytes, and
/// their base64 and hex.
fn secret_forms(secret: &str) -> Vec<Vec<u8>> {
    let raw = base32_decode(secret);
    assert_eq!(raw.len(), 20, "a 160-bit secret: {secret}");
    let hex: String = raw.iter().map(|b| format!("{b:02x}")).collect();
    vec![
        secret.as_bytes().to_vec(),
        secret.to_lowercase().into_bytes(),
        STANDARD
            .encode(&raw)
            .trim_end_matches('=')
            .as_bytes()
            .to_vec(),
        URL_SAFE_NO_PAD.encode(&raw).into_bytes(),
        hex.into_bytes(),
        raw,
    ]
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// Every file under `dir`, read whole.
fn files_under(dir: &Path) -> Vec<(std::path::PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                todo.push(p);
            } else {
                out.push((p.clone(), std::fs::read(&p).unwrap()));
            }
        }
    }
    out
}

#[test]
fn enrolment_shows_the_secret_once_then_sign_in_takes_a_code_or_a_recovery_code() {
    let up = Upstream::start();
    let (gw, metrics_port) = gateway_with_metrics(&up, "");
    let mut a = signed_in(&gw, "alice@example.com");
    assert_eq!(a.claims()["amr"], json!(["pwd"]));
    let sid = a.claims()["sid"].clone();

    // The enrolment page: a QR code and the secret; the same secret as JSON.
    let page = a.navigate(&gw, "/auth/mfa");
    assert_eq!(page.status, 200, "{}", page.body);
    assert!(page.body.contains("<svg"), "an inline QR code");
    let secret = page
        .body
        .split_once("<code id=\"secret\" data-secret=\"")
        .and_then(|(_, rest)| rest.split_once('"'))
        .map(|(s, _)| s.to_string())
        .expect("the secret in text");
    let r = a.xhr(&gw, "/auth/mfa");
    let j = r.json();
    assert_eq!(j["secret"], secret.as_str());
    assert_eq!(
        (j["enrolled"].clone(), j["required"].clone()),
        (json!(false), json!(false))
    );
    let uri = j["otpauth_uri"].as_str().unwrap();
    assert!(
        uri.starts_with("otpauth://totp/Wiki:alice%40example.com?"),
        "{uri}"
    );
    assert!(
        uri.contains(&format!("secret={secret}")) && uri.contains("issuer=Wiki"),
        "{uri}"
    );

    // Confirming: the CSRF header is needed, a wrong code is refused, a right one turns the
    // second factor on and counts for this session.
    let right = json!({"code": code(&secret, -1)});
    let r = a.send(
        &gw,
        "POST",
        "/auth/mfa/totp",
        &[("Content-Type", "application/json")],
        right.to_string().as_bytes(),
    );
    assert_eq!(r.status, 403, "{}", r.body);
    let r = a.json(
        &gw,
        "POST",
        "/auth/mfa/totp",
        &json!({"code": wrong_code(&secret)}),
    );
    assert_eq!(
        (r.status, r.json()["error"].clone()),
        (401, json!("invalid_code"))
    );
    let r = a.json(&gw, "POST", "/auth/mfa/totp", &right);
    assert_eq!(r.status, 200, "{}", r.body);
    let codes: Vec<String> = r.json()["recovery_codes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap().to_string())
        .collect();
    assert_eq!(codes.len(), 10, "{codes:?}");
    assert_eq!(
        codes.iter().collect::<HashSet<_>>().len(),
        10,
        "distinct: {codes:?}"
    );
    assert_eq!(
        a.claims()["amr"],
        json!(["pwd", "otp"]),
        "the code counts for this session"
    );
    assert_eq!(a.claims()["sid"], sid, "the same session");
    let enrolled = audit(&gw, "mfa_enrolled");
    assert!(
        enrolled.len() == 1 && enrolled[0].contains("\"user\":\"alice\""),
        "{enrolled:?}"
    );

    // Shown once: the page now tells the status, and neither the secret nor the codes.
    let page = a.navigate(&gw, "/auth/mfa");
    assert_eq!(page.status, 200);
    assert!(
        page.body.contains("10 recovery codes left"),
        "{}",
        page.body
    );
    let r = a.xhr(&gw, "/auth/mfa");
    for body in [&page.body, &r.body] {
        assert!(
            !body.contains(&secret) && !body.contains("data-secret") && !body.contains("otpauth"),
            "{body}"
        );
        for c in &codes {
            assert!(!body.contains(c.as_str()), "{body}");
        }
    }
    assert_eq!(r.json()["enrolled"], true);
    assert_eq!(r.json()["recovery_codes_left"], 10);

    // The password alone: only the pending-login cookie (with CSRF and device), no session,
    // no access.
    let mut b = Browser::default();
    let before = now();
    let r = b.password(&gw, "alice@example.com");
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json(), json!({"mfa_required": true}));
    // A password alone makes no browser a known one: the device cookie waits for the code.
    assert_eq!(cookie_names(&r), ["pc_csrf", "pc_mfa"]);
    let pending = &set_cookies(&r)["__Host-pc_mfa"];
    let copied = b.cookie("pc_mfa").expect("the pending login").to_string();
    assert!(pending.has("HttpOnly"), "{:?}", pending.attrs);
    assert_eq!(pending.attr("Max-Age").as_deref(), Some("300"));
    let seen = up.count();
    let r = b.xhr(&gw, "/app");
    assert_eq!(
        (r.status, r.json()["error"].clone()),
        (401, json!("token_required"))
    );
    assert_eq!(up.count(), seen, "nothing reached the application");

    // The code step: without the CSRF header refused; with it, the normal login.
    let now_code = json!({"code": code(&secret, 0)});
    let r = b.send(
        &gw,
        "POST",
        "/auth/login/mfa",
        &[("Content-Type", "application/json")],
        now_code.to_string().as_bytes(),
    );
    assert_eq!(r.status, 403, "{}", r.body);
    let r = b.code_step(&gw, &now_code);
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(
        cookie_names(&r).contains(&"pc_device".to_string()),
        "{:?}",
        cookie_names(&r)
    );
    assert_eq!(r.json()["user"]["id"], "alice");
    assert_eq!(r.json()["token_type"], "Bearer");
    let jar = Jar::from(&r, "__Host-");
    assert_eq!(r.json()["access_token"], jar.access.as_str());
    assert_eq!(
        set_cookies(&r)["__Host-pc_mfa"].attr("Max-Age").as_deref(),
        Some("0")
    );
    let c = claims(&jar.access);
    assert_eq!(c["amr"], json!(["pwd", "otp"]), "{c}");
    let auth_time = c["auth_time"].as_u64().expect("auth_time");
    assert!(auth_time >= before && auth_time <= now(), "{c}");
    assert_eq!(b.xhr(&gw, "/app").status, 200);
    // A copy of that pending login, even with a fresh code, starts no second session.
    assert_copy_refused(&gw, &copied, &secret);
    assert_audited(&gw, "login", &["\"user\":\"alice\"", "\"amr\":\"pwd otp\""]);

    // A recovery code signs in once (typed in capitals, without its dash), then never again.
    let mut c = Browser::default();
    c.password(&gw, "alice@example.com");
    let typed = codes[3].to_uppercase().replace('-', "");
    let r = c.code_step(&gw, &json!({"recovery_code": typed}));
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(c.claims()["amr"], json!(["pwd", "otp"]));
    assert_eq!(c.xhr(&gw, "/app").status, 200);
    let used = audit(&gw, "recovery_code_used");
    assert!(
        used.len() == 1 && used[0].contains("\"user\":\"alice\""),
        "{used:?}"
    );
    let mut d = Browser::default();
    d.password(&gw, "alice@example.com");
    let r = d.code_step(&gw, &json!({"recovery_code": codes[3]}));
    assert_eq!(
        (r.status, r.json()["error"].clone()),
        (401, json!("invalid_code"))
    );
    assert!(d.cookie("pc_access").is_none() && d.cookie("pc_refresh").is_none());
    assert_audited(&gw, "mfa_failed", &["\"reason\":\"wrong_recovery_code\""]);
    assert_eq!(b.xhr(&gw, "/auth/mfa").json()["recovery_codes_left"], 9);

    // Someone who knows only the password: the pending login opens neither the enrolment page
    // nor its endpoints, so it cannot put a secret of its own in place of alice's.
    let mut m = Browser::default();
    assert_eq!(
        m.password(&gw, "alice@example.com").json(),
        json!({"mfa_required": true})
    );
    let r = m.xhr(&gw, "/auth/mfa");
    assert_eq!(r.status, 401, "{}", r.body);
    assert!(!r.body.contains("recovery_codes_left"), "{}", r.body);
    let r = m.navigate(&gw, "/auth/mfa");
    assert_eq!(r.status, 302, "{}", r.body);
    let r = m.json(&gw, "POST", "/auth/mfa/totp", &json!({"code": "123456"}));
    assert_eq!(r.status, 401, "{}", r.body);
    let r = m.json(&gw, "DELETE", "/auth/mfa/totp", &json!({"code": "123456"}));
    assert_eq!(r.status, 401, "{}", r.body);
    assert!(m.cookie("pc_access").is_none() && m.cookie("pc_refresh").is_none());
    assert_eq!(b.xhr(&gw, "/auth/mfa").json()["enrolled"], true);

    assert_mfa_counts(
        metrics_port,
        &[
            ("enrolled", 1.0),
            // alice's code, and the copy's (right, but its login was already used)
            ("success", 2.0),
            ("expired", 1.0),
            ("recovery", 1.0),
            ("wrong_code", 2.0),
        ],
    );
}

#[test]
fn a_code_is_taken_once_within_a_step_of_skew_and_wrong_codes_are_throttled() {
    let up = Upstream::start();
    let (gw, metrics_port) = gateway_with_metrics(
        &up,
        "rate_limits: { login_per_ip: 1000/1m, login_per_account: 3/15m, login_per_account_ip: 1000/1m, login_per_device: 1000/1m, refresh_per_ip: 1000/1m }\n",
    );
    // Alice enrols first: her code of the previous step is tried at the end, once a new step
    // began (the enrolment took the step before).
    let mut a = signed_in(&gw, "alice@example.com");
    let (alice_secret, _) = enrol(&gw, &mut a);
    let enrolled_in = now() as i64 / STEP;

    let mut c = signed_in(&gw, "carol@example.com");
    let (secret, _) = enrol(&gw, &mut c);
    let mut b = Browser::default();
    b.password(&gw, "carol@example.com");
    let current = code(&secret, 0);
    let r = b.code_step(&gw, &json!({"code": current}));
    assert_eq!(r.status, 200, "{}", r.body);

    // The next sign-in: the same code again, a code of three steps ago, a wrong one.
    let r = b.password(&gw, "carol@example.com");
    assert_eq!(r.json(), json!({"mfa_required": true}));
    let old = pyotp(&secret, &[now() as i64 - 3 * STEP]).remove(0);
    for (what, c) in [
        ("replayed", current.clone()),
        ("3 steps old", old),
        ("wrong", wrong_code(&secret)),
    ] {
        let r = b.code_step(&gw, &json!({"code": c}));
        assert_eq!(r.status, 401, "{what}: {}", r.body);
        assert_eq!(r.json()["error"], "invalid_code", "{what}");
    }
    let failed = audit(&gw, "mfa_failed");
    assert!(
        failed.iter().any(|l| l.contains("\"reason\":\"replay\"")),
        "{failed:?}"
    );
    assert!(
        failed
            .iter()
            .any(|l| l.contains("\"reason\":\"wrong_code\"")),
        "{failed:?}"
    );
    // Three failures fill the account's bucket: even the right code of the next step waits.
    let r = b.code_step(&gw, &json!({"code": code(&secret, 1)}));
    assert_eq!(r.status, 429, "{}", r.body);
    assert_eq!(r.json()["error"], "rate_limited");
    let retry: u64 = r.header("retry-after").unwrap().parse().unwrap();
    assert!(retry > 0 && retry <= 900, "{retry}");
    assert!(cookie_names(&r)
        .iter()
        .all(|n| n != "pc_access" && n != "pc_refresh"));
    let limited = audit(&gw, "login_rate_limited");
    assert!(
        limited.len() == 1 && limited[0].contains("\"reason\":\"login_per_account\""),
        "{limited:?}"
    );

    // A code of the previous step is accepted (one step of clock skew): it needs a step after
    // the one Alice's enrolment took, so this waits for the next step when none began yet.
    while now() as i64 / STEP <= enrolled_in {
        std::thread::sleep(Duration::from_millis(100));
    }
    let mut a2 = two_step_login(&gw, "alice@example.com", &alice_secret, -1);
    assert_eq!(a2.claims()["amr"], json!(["pwd", "otp"]));
    assert_eq!(a2.xhr(&gw, "/app").status, 200);

    assert_mfa_counts(
        metrics_port,
        &[
            ("replay", 1.0),
            ("wrong_code", 2.0),
            ("rate_limited", 1.0),
            ("success", 2.0),
        ],
    );
}

#[test]
fn routes_wanting_a_code_or_a_recent_sign_in_step_up_the_same_session() {
    let up = Upstream::start();
    // Access tokens of 1 s: the later requests go through the gateway's transparent refresh.
    let gw = mfa_gateway(
        &up,
        "tokens:\n  access_ttl: 1s\n  leeway: 0s\n  reuse_grace: 1s\n  signing_keys:\n    - { kid: ed1, algorithm: EdDSA, private_key_file: keys/ed1.private.pem }\n",
    );
    // Alice signs in with her password (no second factor yet).
    let mut a = signed_in(&gw, "alice@example.com");
    let sid = a.claims()["sid"].clone();

    // The route wants a code this session has not entered.
    let r = a.navigate(&gw, "/mfa-only/page?x=1");
    assert_eq!(r.status, 302, "{}", r.body);
    assert_eq!(
        r.header("location").as_deref(),
        Some("/auth/login?step_up=1&mfa=1&return_to=%2Fmfa-only%2Fpage%3Fx%3D1")
    );
    let r = a.xhr(&gw, "/mfa-only/api");
    assert_eq!(
        (r.status, r.json()["error"].clone()),
        (401, json!("step_up_required"))
    );
    assert_eq!(
        r.json()["login_url"],
        "/auth/login?step_up=1&mfa=1&return_to=%2Fmfa-only%2Fapi"
    );
    assert!(up
        .requests()
        .iter()
        .all(|q| !q.url.starts_with("/mfa-only")));

    // She enrols in this session: its code counts for it, the session stays the same.
    let (secret, _) = enrol(&gw, &mut a);
    let c = a.claims();
    assert_eq!(
        (c["sid"].clone(), c["amr"].clone()),
        (sid.clone(), json!(["pwd", "otp"])),
        "{c}"
    );
    assert_eq!(a.xhr(&gw, "/mfa-only/api").status, 200);

    // A step-up of the enrolled session: the password, then a code; the same session.
    let r = a.step_up(&gw, "alice@example.com");
    assert_eq!(r.json(), json!({"mfa_required": true}), "{}", r.body);
    assert!(
        !cookie_names(&r).contains(&"pc_access".to_string()),
        "{:?}",
        cookie_names(&r)
    );
    let r = a.code_step(&gw, &json!({"code": code(&secret, 0)}));
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(
        !cookie_names(&r).contains(&"pc_refresh".to_string()),
        "the session's refresh token stays"
    );
    let c = a.claims();
    assert_eq!(
        (c["sid"].clone(), c["amr"].clone()),
        (sid.clone(), json!(["pwd", "otp"])),
        "{c}"
    );
    let r = a.xhr(&gw, "/mfa-only/api");
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(audit(&gw, "step_up")
        .iter()
        .any(|l| l.contains("\"amr\":\"pwd otp\"")));

    // A sign-in of the last 2 s: Alice's step-up just now, Carol's fresh login.
    assert_eq!(a.xhr(&gw, "/fresh/api").status, 200);
    let mut c = signed_in(&gw, "carol@example.com");
    let carol_sid = c.claims()["sid"].clone();
    assert_eq!(c.navigate(&gw, "/fresh/page").status, 200);

    // Three seconds on: the access tokens expired, the gateway refreshes them on the way
    // (new cookies), and the sign-in is still too old.
    std::thread::sleep(Duration::from_millis(3100));
    let old_access = a.cookie("pc_access").unwrap().to_string();
    let r = a.xhr(&gw, "/fresh/api");
    assert_eq!(
        (r.status, r.json()["error"].clone()),
        (401, json!("step_up_required")),
        "{}",
        r.body
    );
    let names = cookie_names(&r);
    assert!(
        names.contains(&"pc_access".into()) && names.contains(&"pc_refresh".into()),
        "refreshed on the way: {names:?}"
    );
    let refreshed = a.claims();
    assert_ne!(a.cookie("pc_access").unwrap(), old_access);
    assert_eq!(refreshed["sid"], sid);
    assert_eq!(
        refreshed["amr"],
        json!(["pwd", "otp"]),
        "a refresh keeps how the user signed in"
    );
    assert!(
        now() - refreshed["auth_time"].as_u64().unwrap() >= 3,
        "{refreshed}"
    );
    let r = c.navigate(&gw, "/fresh/page");
    assert_eq!(r.status, 302, "{}", r.body);
    assert_eq!(
        r.header("location").as_deref(),
        Some("/auth/login?step_up=1&return_to=%2Ffresh%2Fpage")
    );
    assert!(
        cookie_names(&r).contains(&"pc_access".into()),
        "refreshed on the way"
    );
    assert_eq!(
        a.xhr(&gw, "/mfa-only/api").status,
        200,
        "no age limit there"
    );

    // Stepping up again, each in the same session as before: Alice the way her browser does,
    // through the pages (the login form, then the code form, back to the page she asked
    // for); Carol, who has no second factor, with her password as JSON.
    let r = a.navigate(&gw, "/fresh/page");
    let login = r.header("location").expect("to the login page");
    let page = a.navigate(&gw, &login);
    assert_eq!(page.status, 200, "{}", page.body);
    let r = a.submit(
        &gw,
        &page.body,
        "login",
        &[("email", "alice@example.com"), ("password", PASSWORD)],
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(a.cookie("pc_mfa").is_some(), "{:?}", cookie_names(&r));
    let r = a.submit(&gw, &r.body, "mfa", &[("code", &code(&secret, 1))]);
    assert_eq!(r.status, 303, "{}", r.body);
    assert_eq!(r.header("location").as_deref(), Some("/fresh/page"));
    assert!(a.cookie("pc_mfa").is_none());
    assert_eq!(a.claims()["sid"], sid);
    assert_eq!(a.navigate(&gw, "/fresh/page").status, 200);
    assert!(now() - a.claims()["auth_time"].as_u64().unwrap() <= 1);
    assert_eq!(a.xhr(&gw, "/fresh/api").status, 200);
    let r = c.step_up(&gw, "carol@example.com");
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(c.claims()["sid"], carol_sid);
    assert_eq!(c.claims()["amr"], json!(["pwd"]));
    assert_eq!(c.navigate(&gw, "/fresh/page").status, 200);
    assert!(audit(&gw, "step_up").len() >= 3, "{}", gw.log());
}

/// No form of `secret` in any of `files`; `what` names where they come from.
fn assert_sealed(files: &[(std::path::PathBuf, Vec<u8>)], secret: &str, what: &str) {
    for form in secret_forms(secret) {
        for (path, bytes) in files {
            assert!(
                !contains(bytes, &form),
                "{what}: {} holds the secret ({})",
                path.display(),
                String::from_utf8_lossy(&form)
            );
        }
    }
}

#[test]
fn secrets_are_sealed_on_disk_and_another_key_stops_the_start() {
    let up = Upstream::start();
    let mut gw = mfa_gateway(&up, "");
    // Alice confirms her secret; Carol only opens the page (a secret being enrolled is stored too).
    let mut a = signed_in(&gw, "alice@example.com");
    let (secret, _) = enrol(&gw, &mut a);
    let mut c = signed_in(&gw, "carol@example.com");
    let pending = c.xhr(&gw, "/auth/mfa").json()["secret"]
        .as_str()
        .unwrap()
        .to_string();
    gw.signal("TERM");
    assert!(gw.wait_exit(Duration::from_secs(10)).success());

    // Every byte the gateway left behind: the sled database, its log, its config.
    let files = files_under(gw.data_dir());
    let store: Vec<_> = files
        .iter()
        .filter(|(p, _)| p.starts_with(gw.data_dir().join("data")))
        .collect();
    assert!(
        store.iter().any(|(_, b)| contains(b, b"alice")),
        "the scan reads the database: {:?}",
        files.iter().map(|(p, _)| p).collect::<Vec<_>>()
    );
    assert_sealed(&files, &secret, "sled");
    assert_sealed(&files, &pending, "sled");

    // Another key over the same database: the start stops, naming the key.
    gw.rewrite_config(&config(&up, OTHER_KEY, ""));
    let out = gw.data_dir().join("other-key.log");
    let log = std::fs::File::create(&out).unwrap();
    let mut child = Command::new(BIN)
        .args(["serve", "-c"])
        .arg(&gw.config_path)
        .env_remove("RUST_LOG")
        .stdout(Stdio::from(log.try_clone().unwrap()))
        .stderr(Stdio::from(log))
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(15);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the gateway started with another mfa.encryption_key");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let text = std::fs::read_to_string(&out).unwrap();
    assert!(!status.success(), "{text}");
    assert!(text.contains("mfa.encryption_key"), "{text}");
    assert!(
        !text.contains(OTHER_KEY) && !text.contains(KEY),
        "no key in the message: {text}"
    );
    assert!(raw_get(gw.port, "/healthz").is_err(), "nothing listens");

    // The right key again: Alice's secret still opens.
    gw.rewrite_config(&config(&up, KEY, ""));
    gw.spawn();
    let mut b = two_step_login(&gw, "alice@example.com", &secret, 0);
    assert_eq!(b.xhr(&gw, "/app").status, 200);
}

#[test]
fn secrets_are_sealed_in_redis() {
    let redis = RedisServer::start();
    let up = Upstream::start();
    let gw = mfa_gateway(
        &up,
        &format!(
            "store: {{ backend: redis, redis_url: \"{}\" }}\n",
            redis.url()
        ),
    );
    let mut a = signed_in(&gw, "alice@example.com");
    let (secret, _) = enrol(&gw, &mut a);
    let pending = signed_in(&gw, "carol@example.com")
        .xhr(&gw, "/auth/mfa")
        .json()["secret"]
        .as_str()
        .unwrap()
        .to_string();
    // Every value of every key, by its type, and the append-only file behind them.
    let client = ::redis::Client::open(redis.url()).unwrap();
    let mut con = client.get_connection().unwrap();
    let keys: Vec<String> = ::redis::cmd("KEYS").arg("*").query(&mut con).unwrap();
    let mut values = Vec::new();
    for k in &keys {
        let kind: String = ::redis::cmd("TYPE").arg(k).query(&mut con).unwrap();
        let read = match kind.as_str() {
            "string" => ::redis::cmd("GET").arg(k).clone(),
            "hash" => ::redis::cmd("HGETALL").arg(k).clone(),
            "set" => ::redis::cmd("SMEMBERS").arg(k).clone(),
            "zset" => ::redis::cmd("ZRANGE")
                .arg(k)
                .arg(0)
                .arg(-1)
                .arg("WITHSCORES")
                .clone(),
            "list" => ::redis::cmd("LRANGE").arg(k).arg(0).arg(-1).clone(),
            "stream" => ::redis::cmd("XRANGE").arg(k).arg("-").arg("+").clone(),
            other => panic!("{k}: a {other} this test cannot read"),
        };
        let v: ::redis::Value = read.query(&mut con).unwrap();
        let mut bytes = k.as_bytes().to_vec();
        flatten(&v, &mut bytes);
        values.push((std::path::PathBuf::from(k), bytes));
    }
    let mfa_key = values
        .iter()
        .find(|(k, _)| k.to_string_lossy().ends_with("mfa:alice"))
        .unwrap_or_else(|| panic!("alice's second factor in Redis: {keys:?}"));
    assert!(mfa_key.1.len() > 40, "a sealed secret is stored");
    assert_sealed(&values, &secret, "Redis");
    assert_sealed(&values, &pending, "Redis");
    let dir: Vec<String> = ::redis::cmd("CONFIG")
        .arg("GET")
        .arg("dir")
        .query(&mut con)
        .unwrap();
    let aof = files_under(Path::new(&dir[1]));
    assert!(
        aof.iter().any(|(_, b)| contains(b, b"mfa:alice")),
        "the append-only file is read"
    );
    assert_sealed(&aof, &secret, "Redis's files");
    assert_sealed(
        &files_under(gw.data_dir()),
        &secret,
        "the gateway's directory",
    );
}

/// Every string in a Redis reply, appended to `out`.
fn flatten(v: &::redis::Value, out: &mut Vec<u8>) {
    use ::redis::Value as V;
    match v {
        V::BulkString(b) => out.extend_from_slice(b),
        V::SimpleString(s) => out.extend_from_slice(s.as_bytes()),
        V::Array(items) | V::Set(items) => items.iter().for_each(|i| flatten(i, out)),
        V::Map(pairs) => pairs.iter().for_each(|(k, v)| {
            flatten(k, out);
            flatten(v, out);
        }),
        _ => {}
    }
    out.push(b'\n');
}

#[test]
fn an_account_that_must_use_a_code_enrols_before_anything_else() {
    let up = Upstream::start();
    let gw = mfa_gateway(&up, "");
    let mut d = Browser::default();
    let r = d.password(&gw, "dave@example.com");
    assert_eq!(r.status, 200, "{}", r.body);
    let j = r.json();
    assert_eq!(
        (j["mfa_required"].clone(), j["enrolment_required"].clone()),
        (json!(true), json!(true)),
        "{j}"
    );
    assert!(j.get("access_token").is_none(), "{j}");
    assert_eq!(cookie_names(&r), ["pc_csrf", "pc_mfa"]);
    assert_eq!(d.xhr(&gw, "/app").status, 401, "no access before enrolment");

    // The pending login opens the enrolment page, which says why.
    let page = d.navigate(&gw, "/auth/mfa");
    assert_eq!(page.status, 200, "{}", page.body);
    assert!(
        page.body.contains("data-secret=") && page.body.contains("requires two-step verification")
    );
    assert_eq!(d.xhr(&gw, "/auth/mfa").json()["required"], true);
    // Enrolling completes the login.
    let (secret, r) = enrol(&gw, &mut d);
    let j = r.json();
    assert_eq!(j["recovery_codes"].as_array().unwrap().len(), 10, "{j}");
    assert_eq!(j["user"]["id"], "dave", "{j}");
    assert_eq!(j["access_token"].as_str(), d.cookie("pc_access"));
    assert!(d.cookie("pc_refresh").is_some() && d.cookie("pc_mfa").is_none());
    assert_eq!(d.claims()["amr"], json!(["pwd", "otp"]));
    let r = d.xhr(&gw, "/app");
    assert_eq!(r.status, 200, "{}", r.body);

    // Dave cannot turn it off, even with a right code.
    let r = d.json(
        &gw,
        "DELETE",
        "/auth/mfa/totp",
        &json!({"code": code(&secret, 0)}),
    );
    assert_eq!(
        (r.status, r.json()["error"].clone()),
        (403, json!("mfa_required")),
        "{}",
        r.body
    );
    assert_eq!(d.xhr(&gw, "/auth/mfa").json()["enrolled"], true);
    // His next sign-in asks for a code, no longer for enrolment.
    let r = Browser::default().password(&gw, "dave@example.com");
    assert_eq!(r.json(), json!({"mfa_required": true}));
}

/// A `pc_mfa` value for `user` as a gateway with `key` would have made it at unix time `at`.
fn pending_cookie(key: &str, user: &str, at: u64) -> String {
    let dir = tempfile::tempdir().unwrap();
    let store: portcullis::store::SharedStore = Arc::new(
        portcullis::store::sled::SledStore::open(dir.path(), Duration::from_secs(5)).unwrap(),
    );
    let key: [u8; 32] = STANDARD.decode(key).unwrap().try_into().unwrap();
    let cfg = portcullis::config::MfaConfig {
        issuer_name: "Wiki".into(),
        encryption_key: portcullis::secret::Secret::new(key),
        required_for_roles: Vec::new(),
    };
    let clock = Arc::new(portcullis::clock::ManualClock::new(at));
    portcullis::auth::mfa::SecondFactor::new(&cfg, store, clock).pending_cookie(user, None)
}

#[test]
fn malformed_codes_bodies_and_pending_cookies_get_a_clear_4xx() {
    let up = Upstream::start();
    let gw = mfa_gateway(&up, "");
    let mut a = signed_in(&gw, "alice@example.com");
    let (secret, _) = enrol(&gw, &mut a);
    let mut b = Browser::default();
    b.password(&gw, "alice@example.com");
    let real = b.cookie("pc_mfa").unwrap().to_string();

    // Codes that cannot be right: refused as codes.
    for bad in [
        "abcdef",
        "1234567",
        "12345",
        "",
        "      ",
        "12 34 5x",
        "１２３４５６",
    ] {
        let r = b.code_step(&gw, &json!({"code": bad}));
        assert_eq!(r.status, 401, "{bad:?}: {}", r.body);
        assert_eq!(r.json()["error"], "invalid_code", "{bad:?}");
    }
    // Bodies that are not the expected JSON object: 400.
    let long = "1".repeat(65);
    let bodies: Vec<String> = [
        json!({"code": 123456}),
        json!({"code": null}),
        json!({"code": ["123456"]}),
        json!({"code": {"value": "123456"}}),
        json!({"recovery_code": true}),
        json!({}),
        json!(["123456"]),
        json!("123456"),
        json!({"code": "123456", "admin": true}),
        json!({"code": long}),
    ]
    .iter()
    .map(Value::to_string)
    .chain([
        "{\"code\": \"123456\"".to_string(),
        "code=123456".to_string(),
        "\u{0}".to_string(),
    ])
    .collect();
    let csrf = b.csrf();
    let cookie = b.cookie_header();
    let headers = [
        ("Content-Type", "application/json"),
        ("X-CSRF-Token", csrf.as_str()),
        ("Cookie", cookie.as_str()),
    ];
    for body in &bodies {
        let r = post(&gw.url("/auth/login/mfa"), &headers, body.as_bytes());
        assert_eq!(r.status, 400, "{body}: {}", r.body);
        assert_eq!(r.json()["error"], "bad_request", "{body}");
        let r = a.send(
            &gw,
            "POST",
            "/auth/mfa/totp",
            &[
                ("Content-Type", "application/json"),
                ("X-CSRF-Token", &a.csrf()),
            ],
            body.as_bytes(),
        );
        assert_eq!(r.status, 400, "enrolment, {body}: {}", r.body);
    }
    let r = a.send(
        &gw,
        "DELETE",
        "/auth/mfa/totp",
        &[
            ("Content-Type", "application/json"),
            ("X-CSRF-Token", &a.csrf()),
        ],
        b"{\"code\": 5}",
    );
    assert_eq!(r.status, 400, "{}", r.body);
    let r = post(
        &gw.url("/auth/login/mfa"),
        &[
            ("Content-Type", "text/plain"),
            ("X-CSRF-Token", &csrf),
            ("Cookie", &cookie),
        ],
        b"123456",
    );
    assert_eq!(r.status, 415, "{}", r.body);
    // A huge body (1 MB declared) is refused from its length; the client never sends it all.
    let huge = format!("{{\"code\": \"{}\"}}", "1".repeat(1024 * 1024));
    let mut req = format!(
        "POST /auth/login/mfa HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nX-CSRF-Token: {csrf}\r\nCookie: {cookie}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        huge.len()
    )
    .into_bytes();
    req.extend_from_slice(&huge.as_bytes()[..32 * 1024]);
    let (status, text) = raw(gw.port, &req).unwrap();
    assert_eq!(status, 413, "{text}");
    assert!(text.contains("payload_too_large"), "{text}");

    // Pending-login cookies that are not one this gateway made for a live login.
    let (body, mac) = real.split_once('.').unwrap();
    let mut claims: Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(body).unwrap()).unwrap();
    claims["user"] = json!("carol");
    let other_user = format!("{}.{mac}", URL_SAFE_NO_PAD.encode(claims.to_string()));
    let mut flipped = mac.as_bytes().to_vec();
    flipped[0] = if flipped[0] == b'A' { b'B' } else { b'A' };
    let flipped = format!("{body}.{}", String::from_utf8(flipped).unwrap());
    let t = now();
    let expired = pending_cookie(KEY, "alice", t - 301);
    let other_key = pending_cookie(OTHER_KEY, "alice", t);
    let right = code(&secret, 0);
    for (what, value) in [
        ("missing", None),
        ("garbage", Some("not-a-cookie".to_string())),
        ("another user, same MAC", Some(other_user)),
        ("a changed MAC", Some(flipped)),
        ("expired", Some(expired)),
        ("another key", Some(other_key)),
        ("too long", Some(format!("{}.{mac}", "a".repeat(2000)))),
    ] {
        let mut forged = b.clone();
        match value {
            Some(v) => forged.set_cookie("pc_mfa", &v),
            None => {
                forged.cookies.remove("__Host-pc_mfa");
            }
        }
        let r = forged.code_step(&gw, &json!({"code": right}));
        assert_eq!(r.status, 401, "{what}: {}", r.body);
        assert_eq!(r.json()["error"], "mfa_login_expired", "{what}");
        assert!(forged.cookie("pc_access").is_none(), "{what}");
    }
    // The form of the code page: no pending login sends it back to the login page; a wrong
    // CSRF field is refused.
    let mut form = b.clone();
    form.cookies.remove("__Host-pc_mfa");
    let r = form.send(
        &gw,
        "POST",
        "/auth/login/mfa",
        &[("Content-Type", "application/x-www-form-urlencoded")],
        format!("code={right}&csrf={csrf}&return_to=%2Fapp").as_bytes(),
    );
    assert_eq!(r.status, 303, "{}", r.body);
    assert!(
        r.header("location").unwrap().starts_with("/auth/login"),
        "{:?}",
        r.header("location")
    );
    let mut form = b.clone();
    let r = form.send(
        &gw,
        "POST",
        "/auth/login/mfa",
        &[("Content-Type", "application/x-www-form-urlencoded")],
        format!("code={right}&csrf=forged").as_bytes(),
    );
    assert_eq!(r.status, 403, "{}", r.body);
    assert!(!gw.log().contains("panicked"), "{}", gw.log());

    // None of that used the code or the pending login up; and a pending login made with the
    // gateway's key 290 s ago is still good.
    let r = b.code_step(&gw, &json!({"code": right}));
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(b.xhr(&gw, "/app").status, 200);
    let mut made = Browser::default();
    made.set_cookie("pc_csrf", &csrf);
    made.set_cookie("pc_mfa", &pending_cookie(KEY, "alice", t - 290));
    let r = made.code_step(&gw, &json!({"code": code(&secret, 1)}));
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(made.xhr(&gw, "/app").status, 200);
}

/// What someone who knows the password cannot do around an enrolment: see or confirm the
/// secret another browser is enrolling, keep a password-only session once the account has a
/// second factor, or use a must-enrol login's cookie a second time; and an account that must
/// enter a code reaches none of its own pages without one.
#[test]
fn enrolment_is_bound_to_the_browser_that_was_shown_the_secret() {
    let up = Upstream::start();
    let gw = mfa_gateway(&up, "");

    // Someone with carol's password, signed in before she enrols, asks for a secret first.
    let mut mallory = signed_in(&gw, "carol@example.com");
    let r = mallory.xhr(&gw, "/auth/mfa");
    assert_eq!(r.status, 200, "{}", r.body);
    let theirs = r.json()["secret"].as_str().unwrap().to_string();
    // Carol's own browser is shown another secret, and a code of mallory's does not confirm
    // it for her (nor does carol's code confirm it for mallory).
    let mut carol = signed_in(&gw, "carol@example.com");
    let r = carol.xhr(&gw, "/auth/mfa");
    let hers = r.json()["secret"].as_str().unwrap().to_string();
    assert_ne!(hers, theirs);
    let r = carol.json(
        &gw,
        "POST",
        "/auth/mfa/totp",
        &json!({"code": code(&theirs, 0)}),
    );
    assert_eq!(r.status, 401, "{}", r.body);
    let r = mallory.json(
        &gw,
        "POST",
        "/auth/mfa/totp",
        &json!({"code": code(&hers, 0)}),
    );
    assert_eq!(r.status, 401, "{}", r.body);
    // Carol asks again (mallory's request replaced what she was shown) and confirms.
    let hers = carol.xhr(&gw, "/auth/mfa").json()["secret"]
        .as_str()
        .unwrap()
        .to_string();
    let r = carol.json(
        &gw,
        "POST",
        "/auth/mfa/totp",
        &json!({"code": code(&hers, -1)}),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    // Mallory's password-only session ended with the enrolment; carol's goes on.
    let r = mallory.xhr(&gw, "/app");
    assert_eq!(r.status, 401, "{}", r.body);
    assert_eq!(carol.xhr(&gw, "/app").status, 200);
    assert_audited(
        &gw,
        "sessions_ended",
        &["\"user\":\"carol\"", "\"reason\":\"mfa_enrolled\""],
    );
    // The secret mallory was shown gets nobody in.
    let mut m = Browser::default();
    m.password(&gw, "carol@example.com");
    let r = m.code_step(&gw, &json!({"code": code(&theirs, 0)}));
    assert_eq!(r.status, 401, "{}", r.body);

    // dave must enrol: his pending login completes once, through enrolment.
    let mut dave = Browser::default();
    let r = dave.password(&gw, "dave@example.com");
    assert_eq!(r.json()["enrolment_required"], true, "{}", r.body);
    let copied = dave.cookie("pc_mfa").unwrap().to_string();
    let (secret, r) = enrol(&gw, &mut dave);
    assert!(r.json()["access_token"].is_string(), "{}", r.body);
    assert_copy_refused(&gw, &copied, &secret);

    // alice signs in with a password; then her account is made to require a code: her own
    // pages answer step_up_required until she enrols, as the application does.
    let mut alice = signed_in(&gw, "alice@example.com");
    assert_eq!(alice.xhr(&gw, "/auth/sessions").status, 200);
    let users = users_yaml().replace(
        "alice: { email: alice@example.com, password:",
        "alice: { mfa: required, email: alice@example.com, password:",
    );
    assert_ne!(users, users_yaml());
    std::fs::write(gw.data_dir().join("users.yaml"), users).unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let r = alice.xhr(&gw, "/app");
        if r.status == 401 {
            assert_eq!(r.json()["error"], "step_up_required", "{}", r.body);
            break;
        }
        assert!(Instant::now() < deadline, "the users file was not reloaded");
        std::thread::sleep(Duration::from_millis(200));
    }
    for path in ["/auth/sessions", "/auth/session"] {
        let r = alice.xhr(&gw, path);
        assert_eq!(
            (r.status, r.json()["error"].clone()),
            (401, json!("step_up_required")),
            "{path}: {}",
            r.body
        );
    }
    let r = alice.navigate(&gw, "/auth/account");
    assert_eq!(r.status, 302, "{}", r.body);
    // Enrolment stays open to her session.
    let r = alice.xhr(&gw, "/auth/mfa");
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["required"], true, "{}", r.body);
}
