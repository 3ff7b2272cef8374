//! Issue and verify: every algorithm, the verified-token cache, revocation after a hit, the
//! pre-check of shape and header.

use super::*;
use crate::clock::ManualClock;
use crate::config::{Algorithm, KeySource, SigningKey};
use crate::secret::Secret;
use crate::tokens::cache::HASHED_TAIL;

const NOW: u64 = 1_800_000_000;

fn service(alg: Algorithm, clock: ManualClock) -> (TokenService, tempfile::TempDir) {
    service_with(alg, clock, "")
}

/// `extra`: more `tokens` keys, e.g. `cache_size: 8, `.
fn service_with(
    alg: Algorithm,
    clock: ManualClock,
    extra: &str,
) -> (TokenService, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let source = if alg == Algorithm::HS256 {
        KeySource::Secret(Secret::new("0123456789abcdef0123456789abcdef".into()))
    } else {
        let (private, _) = crate::tokens::keys::generate(alg).unwrap();
        let p = dir.path().join("k.pem");
        std::fs::write(&p, private).unwrap();
        KeySource::PrivatePem(p)
    };
    let keyring = Keyring::load(&[SigningKey {
        kid: "k1".into(),
        algorithm: alg,
        source,
    }])
    .unwrap();
    let cfg = crate::config::parse(
        &format!(
            "tokens: {{ {extra}issuer: https://gw.test, audience: apps, access_ttl: 60s, leeway: 5s }}\n"
        ),
        "t".as_ref(),
        ".".as_ref(),
        |_| None,
    )
    .unwrap()
    .tokens;
    let svc = TokenService::new(
        &cfg,
        keyring,
        ExternalIssuers::default(),
        Arc::new(RevocationView::new()),
        Arc::new(clock),
    );
    (svc, dir)
}

fn block<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap()
        .block_on(f)
}

/// A token for alice (roles `admin`) in session `sid`.
fn issue(svc: &TokenService, sid: &str) -> IssuedAccess {
    let (sub, email, roles) = subject();
    svc.issue(
        &Subject {
            sub: &sub,
            email: &email,
            roles: &roles,
            auth_time: 0,
            amr: &[],
        },
        sid,
    )
    .unwrap()
}

const ALL: [Algorithm; 4] = [
    Algorithm::EdDSA,
    Algorithm::ES256,
    Algorithm::RS256,
    Algorithm::HS256,
];

fn subject() -> (String, String, Vec<String>) {
    (
        "alice".into(),
        "alice@example.com".into(),
        vec!["admin".into()],
    )
}

#[test]
fn round_trip_every_algorithm_and_expiry_with_injected_clock() {
    for alg in ALL {
        let clock = ManualClock::new(NOW);
        let (svc, _dir) = service(alg, clock.clone());
        let (_, _, roles) = subject();
        let issued = issue(&svc, "sid1");
        let v = block(svc.verify(&issued.token)).unwrap();
        assert_eq!(
            (v.sub.as_str(), v.sid.as_str(), v.roles.clone()),
            ("alice", "sid1", roles.clone()),
            "{alg:?}"
        );
        assert_eq!(v.exp, NOW + 60);
        // Cached: the same Arc comes back.
        assert!(Arc::ptr_eq(&v, &block(svc.verify(&issued.token)).unwrap()));
        clock.advance(64);
        assert!(block(svc.verify(&issued.token)).is_ok(), "inside leeway");
        clock.advance(2);
        assert_eq!(
            block(svc.verify(&issued.token)).unwrap_err(),
            VerifyError::Expired,
            "{alg:?}"
        );
    }
}

#[test]
fn any_single_byte_change_fails() {
    for alg in ALL {
        let (svc, _dir) = service(alg, ManualClock::new(NOW));
        let token = issue(&svc, "sid1").token;
        let bytes = token.as_bytes();
        for i in 0..bytes.len() {
            for replacement in [b'A', b'.', b'x'] {
                if bytes[i] == replacement {
                    continue;
                }
                let mut t = bytes.to_vec();
                t[i] = replacement;
                let t = String::from_utf8(t).unwrap();
                assert!(
                    block(svc.verify_uncached(&t, NOW)).is_err(),
                    "{alg:?}: byte {i} -> {}",
                    replacement as char
                );
            }
        }
    }
}

#[test]
fn identity_values_are_built_once_and_control_characters_refuse_the_token() {
    let (svc, _dir) = service(Algorithm::EdDSA, ManualClock::new(NOW));
    let v = block(svc.verify(&issue(&svc, "sid1").token)).unwrap();
    assert_eq!(v.wire.user, "alice");
    assert_eq!(v.wire.email, "alice@example.com");
    assert_eq!(v.wire.roles, "admin");
    // Validly signed, but `sub` could not be sent upstream as one header: invalid, not a 500.
    let token = svc
        .issue(
            &Subject {
                sub: "mallory\r\nX-Forwarded-User: admin",
                email: "m@example.com",
                roles: &[],
                auth_time: 0,
                amr: &[],
            },
            "sid2",
        )
        .unwrap()
        .token;
    assert_eq!(block(svc.verify(&token)).unwrap_err(), VerifyError::Invalid);
    let roles = ["a".to_string(), "b".to_string()];
    assert_eq!(IdentityValues::new("u", "", &roles).unwrap().roles, "a,b");
}

#[test]
fn the_cache_holds_at_most_cache_size_tokens() {
    let (svc, _dir) = service_with(Algorithm::HS256, ManualClock::new(NOW), "cache_size: 8, ");
    let tokens: Vec<String> = (0..200)
        .map(|i| issue(&svc, &format!("s{i}")).token)
        .collect();
    for t in &tokens {
        assert!(block(svc.verify(t)).is_ok());
    }
    let cache = svc.cache.as_ref().unwrap();
    assert!(cache.len() <= 8, "{} cached", cache.len());
    // Evicted tokens still verify (the slow way); a forged one never does.
    assert!(block(svc.verify(&tokens[0])).is_ok());
    assert!(block(svc.verify(&format!("{}x", tokens[1]))).is_err());
}

#[test]
fn a_token_that_shares_a_cached_tokens_hashed_tail_is_not_a_hit() {
    // The cache hashes only the signature's last bytes: a forged token
    // with another payload under a real token's signature has the same hash, and must
    // still be compared whole and verified (and fail).
    let (svc, _dir) = service_with(Algorithm::HS256, ManualClock::new(NOW), "cache_size: 8, ");
    let real = issue(&svc, "sid1").token;
    assert!(block(svc.verify(&real)).is_ok());
    let (head, rest) = real.split_once('.').unwrap();
    let (payload, sig) = rest.split_once('.').unwrap();
    let mut claims: serde_json::Value =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap();
    claims["sub"] = "mallory".into();
    let mut forged_payload = URL_SAFE_NO_PAD.encode(claims.to_string());
    // Same length as the real payload: only the whole comparison tells them apart.
    forged_payload.truncate(payload.len());
    while forged_payload.len() < payload.len() {
        forged_payload.push('A');
    }
    let forged = format!("{head}.{forged_payload}.{sig}");
    assert_eq!(forged.len(), real.len());
    assert_ne!(forged, real);
    let tail = |t: &str| t.as_bytes()[t.len() - HASHED_TAIL..].to_vec();
    assert_eq!(tail(&forged), tail(&real));
    assert!(block(svc.verify(&forged)).is_err());
    // Bytes that are not text are refused, cached or not.
    let mut binary = real.clone().into_bytes();
    binary[0] = 0xff;
    assert_eq!(
        block(svc.verify(&binary[..])).unwrap_err(),
        VerifyError::Malformed
    );
    assert!(block(svc.verify(&real)).is_ok());
}

#[test]
fn revocation_is_checked_after_a_cache_hit() {
    let (svc, _dir) = service(Algorithm::EdDSA, ManualClock::new(NOW));
    let issued = issue(&svc, "sid9");
    assert!(block(svc.verify(&issued.token)).is_ok());
    svc.revocations.revoke_jti(&issued.jti, issued.exp);
    assert_eq!(
        block(svc.verify(&issued.token)).unwrap_err(),
        VerifyError::Revoked
    );
    let other = issue(&svc, "sid9");
    svc.revocations.revoke_sid("sid9", NOW + 100);
    assert_eq!(
        block(svc.verify(&other.token)).unwrap_err(),
        VerifyError::Revoked
    );
}

#[test]
fn precheck_refuses_shapes() {
    for bad in [
        "",
        "a.b",
        "a.b.c.d.e",
        "a.b.",
        "a..c",
        "a b.c.d",
        "YQ==.YQ.YQ",
        &"a".repeat(MAX_TOKEN_LEN + 1),
    ] {
        assert!(precheck(bad, &mut Vec::new()).is_err(), "{bad:.40}");
    }
}

#[test]
fn split_compact_checks_every_byte() {
    assert_eq!(split_compact("a-_.B9.c"), Some(("a-_", "B9", "c")));
    let long = |seg: &str| format!("{}.{seg}.{}", "h".repeat(40), "s".repeat(342));
    assert!(split_compact(&long(&"p".repeat(300))).is_some());
    // A bad byte anywhere, also deep inside a long token (the vectorized part).
    for bad in ["+", "/", "=", " ", "\n", "\0", "é", "."] {
        for at in [0, 17, 150, 299] {
            let mut p = "p".repeat(300);
            p.replace_range(at..at + 1, bad);
            assert_eq!(split_compact(&long(&p)), None, "{bad:?} at {at}");
        }
    }
    for bad in ["", ".", "..", "a.b", "a.b.c.d", ".b.c", "a..c", "a.b."] {
        assert_eq!(split_compact(bad), None, "{bad:?}");
    }
}

#[test]
fn precheck_reads_and_refuses_headers() {
    let tok = |h: &str| format!("{}.e30.c2ln", URL_SAFE_NO_PAD.encode(h));
    let mut buf = Vec::new();
    // An escaped kid is still read (owned, not borrowed).
    let t = tok(r#"{"alg":"RS256","kid":"k\u0031","typ":"at+jwt"}"#);
    let h = precheck(&t, &mut buf).unwrap();
    assert_eq!(h.alg_and_kid().unwrap(), ("RS256", "k1"));
    for bad in [
        r#"{"alg":"RS256","kid":"k","jku":null}"#,
        r#"{"alg":"RS256","kid":"k","crit":[]}"#,
        r#"{"alg":"RS256","kid":"k","x5c":["a"]}"#,
        r#"{"alg":"RS256","alg":"none","kid":"k"}"#,
        r#"{"alg":5,"kid":"k"}"#,
        r#"["alg","RS256"]"#,
    ] {
        assert_eq!(
            precheck(&tok(bad), &mut Vec::new()).err(),
            Some(VerifyError::BadHeader),
            "{bad}"
        );
    }
    let no_kid = tok(r#"{"alg":"RS256"}"#);
    let mut buf = Vec::new();
    let h = precheck(&no_kid, &mut buf).unwrap();
    assert_eq!(h.alg_and_kid().err(), Some(VerifyError::UnknownKey));
}
