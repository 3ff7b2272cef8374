//! Access-token verification against the real gateway: the attack suite (each case asserts
//! the status and that the upstream received nothing), algorithms, roles, JWKS, key rotation,
//! an independent JOSE implementation, trusted external issuers.

use crate::harness::*;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jsonwebtoken::{Algorithm, EncodingKey};
use serde_json::{json, Value};
use std::path::Path;
use std::time::Duration;

pub const ISS: &str = "https://gw.test";
pub const AUD: &str = "legacy-apps";
pub const HS_SECRET: &str = "0123456789abcdef0123456789abcdef";

/// `portcullis keygen` into `dir`; returns the private PEM.
pub fn keygen(dir: &Path, alg: &str, kid: &str) -> Vec<u8> {
    let (code, out, err) = run_cli(
        &["keygen", "--alg", alg, "--kid", kid, "--out", "keys"],
        dir,
    );
    assert_eq!(code, 0, "keygen {alg}: {err}");
    assert!(
        out.contains(&format!("kid: \"{kid}\", algorithm: {alg}")),
        "{out}"
    );
    std::fs::read(dir.join(format!("keys/{kid}.private.pem"))).unwrap()
}

pub fn b64(v: &Value) -> String {
    URL_SAFE_NO_PAD.encode(serde_json::to_vec(v).unwrap())
}

/// header.payload.signature with arbitrary header and claims.
pub fn forge(header: &Value, claims: &Value, key: Option<(&EncodingKey, Algorithm)>) -> String {
    let msg = format!("{}.{}", b64(header), b64(claims));
    let sig = key
        .map(|(k, a)| jsonwebtoken::crypto::sign(msg.as_bytes(), k, a).unwrap())
        .unwrap_or_default();
    format!("{msg}.{sig}")
}

pub fn claims() -> Value {
    let n = now();
    json!({"iss": ISS, "aud": AUD, "sub": "alice", "email": "alice@example.com", "roles": ["user"],
           "sid": "s1", "jti": "j1", "iat": n, "nbf": n, "exp": n + 300})
}

pub fn header(alg: &str, kid: &str) -> Value {
    json!({"alg": alg, "kid": kid, "typ": "at+jwt"})
}

/// Keys for every algorithm and a gateway using them.
pub struct Setup {
    pub gw: Gateway,
    pub up: Upstream,
    pub ed: EncodingKey,
    pub es: EncodingKey,
    pub rs: EncodingKey,
    pub hs: EncodingKey,
}

impl Setup {
    pub fn start(extra: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let ed = EncodingKey::from_ed_pem(&keygen(dir.path(), "EdDSA", "ed1")).unwrap();
        let es = EncodingKey::from_ec_pem(&keygen(dir.path(), "ES256", "es1")).unwrap();
        let rs = EncodingKey::from_rsa_pem(&keygen(dir.path(), "RS256", "rs1")).unwrap();
        let up = Upstream::start();
        let gw = Gateway::start_in(
            &format!(
                r#"tokens:
  issuer: {ISS}
  audience: {AUD}
  signing_keys:
    - {{ kid: ed1, algorithm: EdDSA, private_key_file: keys/ed1.private.pem }}
    - {{ kid: es1, algorithm: ES256, private_key_file: keys/es1.private.pem }}
    - {{ kid: rs1, algorithm: RS256, private_key_file: keys/rs1.private.pem }}
    - {{ kid: hs1, algorithm: HS256, secret: "{HS_SECRET}" }}
{extra}upstreams:
  app: {{ addresses: ["{}"] }}
routes:
  - {{ path_prefix: /pub, upstream: app, auth: public }}
  - {{ path_prefix: /admin, upstream: app, roles: [admin] }}
  - {{ path_prefix: /, upstream: app }}
"#,
                up.addr
            ),
            dir,
        );
        Setup {
            gw,
            up,
            ed,
            es,
            rs,
            hs: EncodingKey::from_secret(HS_SECRET.as_bytes()),
        }
    }

    pub fn valid(&self, alg: Algorithm) -> String {
        let (key, kid, name) = match alg {
            Algorithm::EdDSA => (&self.ed, "ed1", "EdDSA"),
            Algorithm::ES256 => (&self.es, "es1", "ES256"),
            Algorithm::RS256 => (&self.rs, "rs1", "RS256"),
            _ => (&self.hs, "hs1", "HS256"),
        };
        forge(&header(name, kid), &claims(), Some((key, alg)))
    }

    pub fn bearer(&self, path: &str, token: &str) -> Resp {
        get(
            &self.gw.url(path),
            &[("Authorization", &format!("Bearer {token}"))],
        )
    }
}

#[test]
fn valid_tokens_of_every_algorithm_pass_with_identity_headers() {
    let s = Setup::start("");
    for alg in [
        Algorithm::EdDSA,
        Algorithm::ES256,
        Algorithm::RS256,
        Algorithm::HS256,
    ] {
        let before = s.up.count();
        let r = s.bearer("/page", &s.valid(alg));
        assert_eq!(r.status, 200, "{alg:?}: {}", r.body);
        let seen = &s.up.requests()[before];
        assert_eq!(seen.header("x-forwarded-user").as_deref(), Some("alice"));
        assert_eq!(
            seen.header("x-forwarded-email").as_deref(),
            Some("alice@example.com")
        );
        assert_eq!(seen.header("x-forwarded-groups").as_deref(), Some("user"));
        // Spelled as configured (the documented defaults), not lower-cased.
        let names: Vec<&str> = seen.headers.iter().map(|(k, _)| k.as_str()).collect();
        for name in [
            "X-Forwarded-User",
            "X-Forwarded-Email",
            "X-Forwarded-Groups",
        ] {
            assert!(names.contains(&name), "{name} in {names:?}");
        }
        assert!(
            seen.header("authorization").is_none(),
            "our bearer token stays with us"
        );
    }
    // The same token in the access cookie works too.
    let t = s.valid(Algorithm::EdDSA);
    let r = get(
        &s.gw.url("/page"),
        &[("Cookie", &format!("__Host-pc_access={t}; theme=dark"))],
    );
    assert_eq!(r.status, 200);
    let seen = s.up.requests().pop().unwrap();
    assert_eq!(
        seen.header("cookie").as_deref(),
        Some("theme=dark"),
        "our cookie stripped upstream"
    );
    // The legacy app's own Basic credentials go through; a Bearer value sent next to them
    // (anyone's token) never reaches the application.
    let r = get(
        &s.gw.url("/page"),
        &[
            ("Cookie", &format!("__Host-pc_access={t}")),
            ("Authorization", "Basic dXNlcjpwYXNz"),
            (
                "Authorization",
                &format!("Bearer {}", s.valid(Algorithm::RS256)),
            ),
        ],
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let seen = s.up.requests().pop().unwrap();
    assert_eq!(seen.header_all("authorization"), ["Basic dXNlcjpwYXNz"]);
    // A Bearer token that is not text: refused, not forwarded.
    let before = s.up.count();
    let (status, _) = raw(
        s.gw.port,
        b"GET /page HTTP/1.1\r\nHost: a\r\nAuthorization: Bearer \xff\xfe.e30.c2ln\r\nConnection: close\r\n\r\n",
    )
    .unwrap();
    assert_eq!(status, 401);
    assert_eq!(s.up.count(), before);
    // The one Bearer value, its header and scheme spelled oddly: the whole header is removed
    // (names are matched without regard to case, in both of Pingora's maps).
    let t = s.valid(Algorithm::ES256);
    let req = format!(
        "GET /page HTTP/1.1\r\nHost: a\r\naUTHORIZATION: bEARER {t}\r\nConnection: close\r\n\r\n"
    );
    let (status, _) = raw(s.gw.port, req.as_bytes()).unwrap();
    assert_eq!(status, 200);
    let seen = s.up.requests().pop().unwrap();
    assert!(
        seen.headers
            .iter()
            .all(|(k, _)| !k.eq_ignore_ascii_case("authorization")),
        "{:?}",
        seen.headers
    );
    assert_eq!(seen.header("x-forwarded-user").as_deref(), Some("alice"));
}

#[test]
fn refusals_spell_their_headers_as_servers_do() {
    let s = Setup::start("");
    let (status, resp) = raw(
        s.gw.port,
        b"GET /page HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
    )
    .unwrap();
    assert_eq!(status, 401);
    assert!(resp.contains("\r\nWWW-Authenticate: Bearer\r\n"), "{resp}");
    assert!(
        resp.contains("\r\nX-Frame-Options: SAMEORIGIN\r\n"),
        "{resp}"
    );
    let (status, resp) = raw(
        s.gw.port,
        b"GET /page HTTP/1.1\r\nHost: a\r\nAccept: text/html\r\nConnection: close\r\n\r\n",
    )
    .unwrap();
    assert_eq!(status, 302);
    assert!(
        resp.contains("\r\nLocation: /auth/login?return_to=%2Fpage\r\n"),
        "{resp}"
    );
}

#[test]
fn roles_are_enforced() {
    let s = Setup::start("");
    let r = s.bearer("/admin/panel", &s.valid(Algorithm::EdDSA));
    assert_eq!(r.status, 403);
    assert_eq!(r.json()["error"], "forbidden");
    let mut c = claims();
    c["roles"] = json!(["user", "admin"]);
    let admin = forge(&header("EdDSA", "ed1"), &c, Some((&s.ed, Algorithm::EdDSA)));
    assert_eq!(s.bearer("/admin/panel", &admin).status, 200);
    assert_eq!(
        s.up.requests()
            .iter()
            .filter(|r| r.url == "/admin/panel")
            .count(),
        1
    );
}

#[test]
fn attack_suite_every_forgery_is_refused_and_nothing_is_forwarded() {
    let s = Setup::start("");
    let n = now();
    let valid = s.valid(Algorithm::EdDSA);
    let parts: Vec<&str> = valid.split('.').collect();
    let ed = Some((&s.ed, Algorithm::EdDSA));
    let with = |f: &dyn Fn(&mut Value)| {
        let mut c = claims();
        f(&mut c);
        forge(&header("EdDSA", "ed1"), &c, ed)
    };
    let with_header = |h: Value| forge(&h, &claims(), ed);
    // The attacker's own Ed25519 key, offered inside the token.
    let attacker_pem = {
        let d = tempfile::tempdir().unwrap();
        keygen(d.path(), "EdDSA", "evil")
    };
    let attacker = EncodingKey::from_ed_pem(&attacker_pem).unwrap();
    let attacker_jwk =
        jsonwebtoken::jwk::Jwk::from_encoding_key(&attacker, Algorithm::EdDSA).unwrap();
    let rs_public = std::fs::read(s.gw.data_dir().join("keys/rs1.public.pem")).unwrap();
    let hs_with_public_key = forge(
        &header("HS256", "rs1"),
        &claims(),
        Some((&EncodingKey::from_secret(&rs_public), Algorithm::HS256)),
    );
    let tampered = {
        let mut c = claims();
        c["roles"] = json!(["admin"]);
        format!("{}.{}.{}", parts[0], b64(&c), parts[2])
    };
    let mut cases: Vec<(String, String)> = vec![
        (
            "alg none".into(),
            forge(&header("none", "ed1"), &claims(), None),
        ),
        (
            "alg NONE".into(),
            forge(&header("NONE", "ed1"), &claims(), None),
        ),
        (
            "alg nOnE".into(),
            forge(&header("nOnE", "ed1"), &claims(), None),
        ),
        (
            "alg none with signature".into(),
            format!(
                "{}.{}",
                forge(&header("none", "ed1"), &claims(), None),
                parts[2]
            ),
        ),
        (
            "null signature".into(),
            format!("{}.{}.", parts[0], parts[1]),
        ),
        (
            "HS256 signed with the RS256 public key".into(),
            hs_with_public_key,
        ),
        (
            "alg switched to RS256 on the EdDSA kid".into(),
            with_header(header("RS256", "ed1")),
        ),
        (
            "embedded jwk".into(),
            forge(
                &json!({"alg": "EdDSA", "kid": "ed1", "typ": "at+jwt", "jwk": attacker_jwk}),
                &claims(),
                Some((&attacker, Algorithm::EdDSA)),
            ),
        ),
        (
            "signed by an unknown key under our kid".into(),
            forge(
                &header("EdDSA", "ed1"),
                &claims(),
                Some((&attacker, Algorithm::EdDSA)),
            ),
        ),
        (
            "kid path traversal".into(),
            with_header(header("EdDSA", "../../../../etc/passwd")),
        ),
        (
            "kid SQL".into(),
            with_header(header("EdDSA", "' OR '1'='1' --")),
        ),
        (
            "kid shell".into(),
            with_header(header("EdDSA", "$(touch /tmp/pwned);`id`|nc")),
        ),
        (
            "kid 10 KB".into(),
            with_header(header("EdDSA", &"k".repeat(10 * 1024))),
        ),
        ("unknown kid".into(), with_header(header("EdDSA", "nope"))),
        (
            "no kid".into(),
            with_header(json!({"alg": "EdDSA", "typ": "at+jwt"})),
        ),
        (
            "expired".into(),
            with(&|c| {
                c["exp"] = json!(n - 120);
                c["iat"] = json!(n - 600);
                c["nbf"] = json!(n - 600);
            }),
        ),
        (
            "nbf in the future".into(),
            with(&|c| c["nbf"] = json!(n + 3600)),
        ),
        (
            "exp as string".into(),
            with(&|c| c["exp"] = json!((n + 300).to_string())),
        ),
        (
            "nbf as string".into(),
            with(&|c| c["nbf"] = json!(n.to_string())),
        ),
        (
            "exp missing".into(),
            with(&|c| {
                c.as_object_mut().unwrap().remove("exp");
            }),
        ),
        (
            "iss missing".into(),
            with(&|c| {
                c.as_object_mut().unwrap().remove("iss");
            }),
        ),
        (
            "aud missing".into(),
            with(&|c| {
                c.as_object_mut().unwrap().remove("aud");
            }),
        ),
        (
            "sub missing".into(),
            with(&|c| {
                c.as_object_mut().unwrap().remove("sub");
            }),
        ),
        ("wrong aud".into(), with(&|c| c["aud"] = json!("other-app"))),
        (
            "wrong iss".into(),
            with(&|c| c["iss"] = json!("https://evil.test")),
        ),
        (
            "wrong typ".into(),
            with_header(json!({"alg": "EdDSA", "kid": "ed1", "typ": "JWT"})),
        ),
        (
            "missing typ".into(),
            with_header(json!({"alg": "EdDSA", "kid": "ed1"})),
        ),
        (
            "crit header".into(),
            with_header(json!({"alg": "EdDSA", "kid": "ed1", "typ": "at+jwt", "crit": ["exp"]})),
        ),
        (
            "five-segment JWE".into(),
            format!(
                "{}.{}.{}.{}.{}",
                b64(&json!({"alg":"RSA-OAEP","enc":"A256GCM","kid":"rs1"})),
                "AAAA",
                "BBBB",
                "CCCC",
                "DDDD"
            ),
        ),
        (
            "whitespace inside".into(),
            format!("{}. {}.{}", parts[0], parts[1], parts[2]),
        ),
        (
            "= padding".into(),
            format!("{}=.{}.{}==", parts[0], parts[1], parts[2]),
        ),
        ("tampered payload, original signature".into(), tampered),
        ("garbage".into(), "not-a-token".into()),
    ];
    // A bit-flip in every part.
    for (i, p) in parts.iter().enumerate() {
        let mut flipped: Vec<String> = parts.iter().map(|s| s.to_string()).collect();
        let mut b = p.as_bytes().to_vec();
        let mid = b.len() / 2;
        b[mid] = if b[mid] == b'A' { b'B' } else { b'A' };
        flipped[i] = String::from_utf8(b).unwrap();
        cases.push((format!("flipped byte in part {i}"), flipped.join(".")));
    }
    for (name, token) in &cases {
        let r = s.bearer("/page", token);
        assert_eq!(r.status, 401, "{name}: {}", r.body);
        let code = r.json()["error"].as_str().unwrap().to_string();
        let want = if name == "expired" {
            "token_expired"
        } else {
            "invalid_token"
        };
        assert_eq!(code, want, "{name}");
        assert_eq!(
            r.header("www-authenticate").as_deref(),
            Some("Bearer error=\"invalid_token\""),
            "{name}"
        );
        assert_eq!(s.up.count(), 0, "{name}: the upstream received something");
    }
    // The same forgeries in the cookie.
    for (name, token) in cases.iter().take(8) {
        let r = get(
            &s.gw.url("/page"),
            &[("Cookie", &format!("__Host-pc_access={token}"))],
        );
        assert_eq!(r.status, 401, "cookie {name}");
    }
    // A 64 KB token: a clear 4xx, never a 500.
    let huge = format!("{}.{}.{}", parts[0], "A".repeat(64 * 1024), parts[2]);
    let r = s.bearer("/page", &huge);
    assert!((400..500).contains(&r.status), "64 KB token: {}", r.status);
    // A token in the query string is ignored.
    let r = get(&s.gw.url(&format!("/page?access_token={valid}")), &[]);
    assert_eq!(r.status, 401);
    assert_eq!(r.json()["error"], "token_required");
    // Two access cookies (cookie tossing) and a garbage cookie.
    let r = get(
        &s.gw.url("/page"),
        &[(
            "Cookie",
            &format!("__Host-pc_access={valid}; __Host-pc_access={valid}"),
        )],
    );
    assert_eq!(r.status, 401, "two access cookies");
    let garbage = b"GET /page HTTP/1.1\r\nHost: x\r\nCookie: __Host-pc_access=%00\xff\x7f\x01garbage\r\nConnection: close\r\n\r\n";
    let (status, _) = raw(s.gw.port, garbage).unwrap();
    assert_eq!(
        status, 400,
        "control bytes in a cookie: refused by the HTTP parser"
    );
    let r = get(
        &s.gw.url("/page"),
        &[("Cookie", "__Host-pc_access=%00%ff~!@$garbage{}")],
    );
    assert_eq!(r.status, 401, "garbage cookie");
    assert_eq!(r.json()["error"], "invalid_token");
    assert_eq!(s.up.count(), 0);
    // And the real token still works: nothing above poisoned a cache.
    assert_eq!(s.bearer("/page", &valid).status, 200);
    assert!(
        !s.gw.log().contains(&valid[valid.len() - 20..]),
        "tokens never reach the log"
    );
}

#[test]
fn jku_and_x5u_are_never_followed() {
    let s = Setup::start("");
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let url = format!("http://{}/keys.json", listener.local_addr().unwrap());
    for param in ["jku", "x5u"] {
        let token = forge(
            &json!({"alg": "EdDSA", "kid": "attacker", "typ": "at+jwt", param: url}),
            &claims(),
            Some((&s.ed, Algorithm::EdDSA)),
        );
        assert_eq!(s.bearer("/page", &token).status, 401, "{param}");
    }
    std::thread::sleep(Duration::from_millis(200));
    assert!(
        listener.accept().is_err(),
        "no connection reached the jku/x5u listener"
    );
    assert_eq!(s.up.count(), 0);
}

#[test]
fn jwks_publishes_public_keys_only() {
    let s = Setup::start("");
    for path in ["/auth/jwks.json", "/.well-known/jwks.json"] {
        let r = get(&s.gw.url(path), &[]);
        assert_eq!(r.status, 200);
        let keys = r.json()["keys"].as_array().unwrap().clone();
        let kids: Vec<&str> = keys.iter().map(|k| k["kid"].as_str().unwrap()).collect();
        assert_eq!(
            kids,
            vec!["ed1", "es1", "rs1"],
            "HS256 secrets are never published"
        );
        for k in &keys {
            assert!(
                k.get("d").is_none() && k.get("k").is_none(),
                "no private parts: {k}"
            );
            assert_eq!(k["use"], "sig");
        }
    }
}

#[test]
fn independent_implementation_verifies_our_tokens() {
    let s = Setup::start("");
    // A token issued by the gateway's own issuing code with the configured key.
    let dir = s.gw.data_dir();
    let cfg = portcullis::config::load(&dir.join("portcullis.yaml")).unwrap();
    let keyring = portcullis::tokens::keys::Keyring::load(&cfg.tokens.signing_keys).unwrap();
    let svc = portcullis::tokens::access::TokenService::new(
        &cfg.tokens,
        keyring,
        Default::default(),
        Default::default(),
        std::sync::Arc::new(portcullis::clock::SystemClock),
    );
    let roles = vec!["user".to_string()];
    let issued = svc
        .issue(
            &portcullis::tokens::access::Subject {
                sub: "alice",
                email: "a@example.com",
                roles: &roles,
                auth_time: 0,
                amr: &[],
            },
            "sid-1",
        )
        .unwrap();
    let script = r#"
import json, sys, urllib.request
import jwt
url, token, iss, aud = sys.argv[1:5]
jwks = json.load(urllib.request.urlopen(url))
kid = jwt.get_unverified_header(token)["kid"]
key = next(k for k in jwks["keys"] if k["kid"] == kid)
claims = jwt.decode(token, jwt.PyJWK(key).key, algorithms=[key["alg"]], audience=aud, issuer=iss)
assert jwt.get_unverified_header(token)["typ"] == "at+jwt"
print(json.dumps(claims))
"#;
    let out = std::process::Command::new("python3")
        .args([
            "-c",
            script,
            &s.gw.url("/.well-known/jwks.json"),
            &issued.token,
            ISS,
            AUD,
        ])
        .output()
        .expect("python3 is needed for this test (apt-get install python3)");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !stderr.contains("No module named"),
        "PyJWT is needed: pip install pyjwt cryptography (scripts/test.sh does this): {stderr}"
    );
    assert!(out.status.success(), "PyJWT rejected our token: {stderr}");
    let claims: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(claims["sub"], "alice");
    assert_eq!(claims["sid"], "sid-1");
    // And the gateway accepts the very same token.
    assert_eq!(s.bearer("/page", &issued.token).status, 200);
}

#[test]
fn key_rotation_overlap_and_removal() {
    let dir = tempfile::tempdir().unwrap();
    let old = EncodingKey::from_ed_pem(&keygen(dir.path(), "EdDSA", "old")).unwrap();
    keygen(dir.path(), "EdDSA", "new");
    let up = Upstream::start();
    let config = |keys: &str| {
        format!(
            "tokens:\n  issuer: {ISS}\n  audience: {AUD}\n  signing_keys:\n{keys}upstreams:\n  app: {{ addresses: [\"{}\"] }}\nroutes:\n  - {{ path_prefix: /, upstream: app }}\n",
            up.addr
        )
    };
    let old_line = "    - { kid: old, algorithm: EdDSA, private_key_file: keys/old.private.pem }\n";
    let new_line = "    - { kid: new, algorithm: EdDSA, private_key_file: keys/new.private.pem }\n";
    let mut gw = Gateway::start_in(&config(old_line), dir);
    let token = forge(
        &header("EdDSA", "old"),
        &claims(),
        Some((&old, Algorithm::EdDSA)),
    );
    let check = |gw: &Gateway| {
        get(
            &gw.url("/x"),
            &[("Authorization", &format!("Bearer {token}"))],
        )
        .status
    };
    assert_eq!(check(&gw), 200);
    // A new signing key in front: the old one still verifies.
    gw.kill();
    gw.rewrite_config(&config(&format!("{new_line}{old_line}")));
    gw.spawn();
    assert_eq!(check(&gw), 200, "old-key token during the overlap");
    let jwks = get(&gw.url("/auth/jwks.json"), &[]).json();
    assert_eq!(jwks["keys"].as_array().unwrap().len(), 2);
    // The old kid removed: its tokens stop working.
    gw.kill();
    gw.rewrite_config(&config(new_line));
    gw.spawn();
    assert_eq!(check(&gw), 401, "removed kid");
}

#[test]
fn key_problems_refuse_to_start_with_a_clear_line() {
    let dir = tempfile::tempdir().unwrap();
    keygen(dir.path(), "ES256", "ec");
    let base = "upstreams:\n  app: { addresses: [\"127.0.0.1:9\"] }\nroutes:\n  - { path_prefix: /, upstream: app }\n";
    for (keys, key, needle) in [
        ("    - { kid: a, algorithm: EdDSA, private_key_file: keys/ec.private.pem }\n", "tokens.signing_keys[0]", "does not fit algorithm EdDSA"),
        ("    - { kid: a, algorithm: RS256, private_key_file: keys/missing.pem }\n", "tokens.signing_keys[0].private_key_file", "cannot read"),
        ("    - { kid: a, algorithm: none, secret: x }\n", "tokens.signing_keys[0].algorithm", "expected one of"),
        ("    - { kid: a, algorithm: HS256, secret: short }\n", "tokens.signing_keys[0].secret", "at least 32 bytes"),
        ("    - { kid: a, algorithm: ES256, private_key_file: keys/ec.private.pem }\n    - { kid: a, algorithm: ES256, private_key_file: keys/ec.private.pem }\n", "tokens.signing_keys[1].kid", "duplicate kid"),
    ] {
        std::fs::write(dir.path().join("pc.yaml"), format!("tokens:\n  signing_keys:\n{keys}{base}")).unwrap();
        let (code, _, err) = run_cli(&["check", "-c", "pc.yaml"], dir.path());
        assert_eq!(code, 1, "{key}: {err}");
        assert!(err.starts_with(&format!("portcullis: pc.yaml: {key}: ")), "{key}: {err}");
        assert!(err.contains(needle), "{key}: {err}");
        assert_eq!(err.lines().count(), 1, "{err}");
    }
    // keygen never overwrites a key.
    let (code, _, err) = run_cli(
        &["keygen", "--alg", "ES256", "--kid", "ec", "--out", "keys"],
        dir.path(),
    );
    assert_eq!(code, 1);
    assert!(err.contains("refusing to overwrite"), "{err}");
}

#[test]
fn trusted_external_issuer_with_jwks_refetch_and_readiness() {
    let idp_dir = tempfile::tempdir().unwrap();
    let k1 = EncodingKey::from_rsa_pem(&keygen(idp_dir.path(), "RS256", "idp1")).unwrap();
    let k2 = EncodingKey::from_rsa_pem(&keygen(idp_dir.path(), "RS256", "idp2")).unwrap();
    let jwk = |k: &EncodingKey, kid: &str| {
        let mut j = jsonwebtoken::jwk::Jwk::from_encoding_key(k, Algorithm::RS256).unwrap();
        j.common.key_id = Some(kid.into());
        j
    };
    let jwks =
        JsonServer::start(&serde_json::to_string(&json!({"keys": [jwk(&k1, "idp1")]})).unwrap());
    let dead = free_port();
    let up = Upstream::start();
    let gw = Gateway::start(&format!(
        r#"tokens:
  issuer: {ISS}
  audience: {AUD}
  trusted_issuers:
    - {{ issuer: https://idp.test, jwks_url: "http://{}/jwks.json", audience: {AUD}, roles_claim: realm_access.roles }}
upstreams:
  app: {{ addresses: ["{}"] }}
routes:
  - {{ path_prefix: /admin, upstream: app, roles: [admin] }}
"#,
        jwks.addr, up.addr
    ));
    gw.wait_ready_status(200, Duration::from_secs(5));
    let idp_claims = |roles: Value| {
        json!({"iss": "https://idp.test", "aud": AUD, "sub": "bob", "email": "bob@example.com",
               "realm_access": {"roles": roles}, "exp": now() + 300, "iat": now()})
    };
    let idp_token = |k: &EncodingKey, kid: &str, roles: Value| {
        forge(
            &json!({"alg": "RS256", "kid": kid, "typ": "JWT"}),
            &idp_claims(roles),
            Some((k, Algorithm::RS256)),
        )
    };
    let call = |t: &str| {
        get(
            &gw.url("/admin/x"),
            &[("Authorization", &format!("Bearer {t}"))],
        )
    };
    assert_eq!(call(&idp_token(&k1, "idp1", json!(["admin"]))).status, 200);
    assert_eq!(
        up.requests()[0].header("x-forwarded-user").as_deref(),
        Some("bob")
    );
    assert_eq!(
        up.requests()[0].header("x-forwarded-groups").as_deref(),
        Some("admin")
    );
    assert_eq!(
        call(&idp_token(&k1, "idp1", json!(["user"]))).status,
        403,
        "roles from the claim path"
    );
    // The IdP rotates: an unknown kid triggers one refetch.
    *jwks.body.lock().unwrap() =
        serde_json::to_string(&json!({"keys": [jwk(&k1, "idp1"), jwk(&k2, "idp2")]})).unwrap();
    let hits = jwks.hits();
    assert_eq!(
        call(&idp_token(&k2, "idp2", json!(["admin"]))).status,
        200,
        "refetched on unknown kid"
    );
    assert_eq!(jwks.hits(), hits + 1);
    // Unknown kids again within 30 s: no more fetches (no amplification).
    for i in 0..5 {
        assert_eq!(
            call(&idp_token(&k2, &format!("nope{i}"), json!(["admin"]))).status,
            401
        );
    }
    assert_eq!(jwks.hits(), hits + 1, "refetch is rate limited");
    // A token for another issuer signed with the IdP key is refused.
    let mut c = idp_claims(json!(["admin"]));
    c["iss"] = json!(ISS);
    assert_eq!(
        call(&forge(
            &json!({"alg": "RS256", "kid": "idp1"}),
            &c,
            Some((&k1, Algorithm::RS256))
        ))
        .status,
        401
    );
    // `aud` may be a list holding our audience; a list without it, or no `aud`, is refused.
    for (aud, status) in [
        (json!(["other", AUD]), 200),
        (json!(["other"]), 401),
        (Value::Null, 401),
    ] {
        let mut c = idp_claims(json!(["admin"]));
        match aud {
            Value::Null => c.as_object_mut().unwrap().remove("aud"),
            a => c.as_object_mut().unwrap().insert("aud".into(), a),
        };
        let t = forge(
            &json!({"alg": "RS256", "kid": "idp1"}),
            &c,
            Some((&k1, Algorithm::RS256)),
        );
        assert_eq!(call(&t).status, status, "aud {:?}", c.get("aud"));
    }

    // An issuer whose JWKS cannot be loaded makes readiness fail, naming it.
    let gw2 = Gateway::start(&format!(
        "tokens:\n  trusted_issuers:\n    - {{ issuer: https://down.test, jwks_url: \"http://127.0.0.1:{dead}/jwks.json\" }}\nupstreams:\n  app: {{ addresses: [\"{}\"] }}\nroutes:\n  - {{ path_prefix: /, upstream: app }}\n",
        up.addr
    ));
    let body = gw2.wait_ready_status(503, Duration::from_secs(5));
    assert!(body.contains("issuer https://down.test"), "{body}");
}
