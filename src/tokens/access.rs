//! Access tokens: issue and verify, with a bounded verified-token cache.
//!
//! Verification order: a cheap strict pre-check (size, three base64url segments, bounded
//! header JSON, forbidden header parameters), the key chosen by `kid` only with its own
//! algorithm pinned, then the signature and claims. The cache is keyed by the whole token,
//! an entry never outlives the token's `exp`, and revocation is checked after a hit.

use super::external::ExternalIssuers;
use super::keys::{Keyring, VerifyKey};
use super::revocation::RevocationView;
use crate::clock::SharedClock;
use crate::config::TokensConfig;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jsonwebtoken::Header;
use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// Largest token accepted at all (bytes).
pub const MAX_TOKEN_LEN: usize = 8 * 1024;
/// Largest encoded JOSE header accepted.
const MAX_HEADER_LEN: usize = 1024;

/// Claims of a gateway-issued access token.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AccessClaims {
    pub iss: String,
    pub aud: String,
    pub sub: String,
    pub email: String,
    pub roles: Vec<String>,
    pub sid: String,
    pub jti: String,
    pub iat: u64,
    pub nbf: u64,
    pub exp: u64,
}

/// What a verified token says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    pub sub: String,
    pub email: String,
    pub roles: Vec<String>,
    /// Session (refresh family) id; empty for tokens from external issuers.
    pub sid: String,
    pub jti: String,
    pub exp: u64,
    /// The issuer (ours or a trusted external one).
    pub iss: String,
    /// `sub`, `email` and the roles joined by `,` as header values, built once per verified
    /// token (and cached with it) instead of on every request.
    pub wire: IdentityValues,
}

/// The identity header values the upstream receives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdentityValues {
    pub user: http::HeaderValue,
    pub email: http::HeaderValue,
    pub roles: http::HeaderValue,
}

impl IdentityValues {
    /// A claim that cannot be sent as a header value (control characters) makes the token
    /// invalid: it could not be forwarded faithfully.
    pub fn new(sub: &str, email: &str, roles: &[String]) -> Result<Self, VerifyError> {
        let value = |s: &str| http::HeaderValue::from_str(s).map_err(|_| VerifyError::Invalid);
        Ok(IdentityValues {
            user: value(sub)?,
            email: value(email)?,
            roles: value(&roles.join(","))?,
        })
    }
}

/// Why a token was refused. Clients only learn the error code; logs get the variant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    #[error("malformed token")]
    Malformed,
    #[error("unsupported or forbidden header")]
    BadHeader,
    #[error("unknown key id")]
    UnknownKey,
    #[error("invalid signature or claims")]
    Invalid,
    #[error("expired")]
    Expired,
    #[error("not yet valid")]
    NotYetValid,
    #[error("revoked")]
    Revoked,
}

/// A freshly issued access token.
pub struct IssuedAccess {
    pub token: String,
    pub jti: String,
    pub exp: u64,
}

/// Who a token is for.
pub struct Subject<'a> {
    pub sub: &'a str,
    pub email: &'a str,
    pub roles: &'a [String],
}

/// Issues and verifies access tokens.
pub struct TokenService {
    pub keyring: Keyring,
    pub external: ExternalIssuers,
    pub revocations: Arc<RevocationView>,
    pub clock: SharedClock,
    issuer: String,
    audience: String,
    access_ttl: u64,
    leeway: u64,
    /// `None` when `tokens.cache_size` is 0. At most `cache_size` tokens; an expired entry is
    /// refused on lookup (exp is checked after every hit) and evicted as new tokens come in.
    /// quick_cache, hashed with foldhash (randomly seeded): a hit is a sharded read lock and
    /// one short hash, about a third of what moka's bookkeeping cost per request. Only
    /// verified tokens are inserted, so nobody can choose the keys.
    cache: Option<TokenCache>,
}

type TokenCache = quick_cache::sync::Cache<
    CachedToken,
    Arc<Verified>,
    quick_cache::UnitWeighter,
    foldhash::fast::RandomState,
>;

/// How many trailing bytes of a token the cache hashes: in a compact JWS they are signature
/// bytes, which nobody can choose for a token that verifies.
const HASHED_TAIL: usize = 32;

/// Hash the last [`HASHED_TAIL`] bytes. A lookup still compares the whole token, so a
/// forged token that shares a real one's tail is only a miss; hashing 32 bytes instead of a
/// whole RS256 token saves about 300 instructions per request.
fn hash_tail<H: std::hash::Hasher>(token: &[u8], state: &mut H) {
    state.write(&token[token.len().saturating_sub(HASHED_TAIL)..]);
}

/// A cache key: the whole token, as received.
#[derive(PartialEq, Eq)]
struct CachedToken(Box<[u8]>);

impl std::hash::Hash for CachedToken {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        hash_tail(&self.0, state);
    }
}

/// A lookup by the bytes of a request's token, without copying them.
struct TokenBytes<'a>(&'a [u8]);

impl std::hash::Hash for TokenBytes<'_> {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        hash_tail(self.0, state);
    }
}

impl quick_cache::Equivalent<CachedToken> for TokenBytes<'_> {
    fn equivalent(&self, key: &CachedToken) -> bool {
        *self.0 == *key.0
    }
}

/// Random URL-safe id of `bytes` random bytes.
pub fn random_id(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    rand::fill(&mut buf[..]);
    URL_SAFE_NO_PAD.encode(buf)
}

/// Is `b` in the base64url alphabet or a `.`? Branch-free, so a loop of it vectorizes.
#[inline(always)]
fn jws_byte(b: u8) -> bool {
    ((b | 0x20).wrapping_sub(b'a') < 26)
        | (b.wrapping_sub(b'0') < 10)
        | (b == b'-')
        | (b == b'_')
        | (b == b'.')
}

/// The three segments of a compact JWS: every byte base64url or one of exactly two dots, no
/// segment empty. The bytes are checked 32 at a time into lane-wise accumulators, which the
/// compiler turns into SIMD: about 1,300 instructions for a 730-byte RS256 token, where a
/// table lookup per byte took about 4,500 (measured under callgrind).
fn split_compact(token: &str) -> Option<(&str, &str, &str)> {
    let mut bad = [0u8; 32];
    let mut chunks = token.as_bytes().chunks_exact(32);
    for chunk in &mut chunks {
        for (acc, &b) in bad.iter_mut().zip(chunk) {
            *acc |= u8::from(!jws_byte(b));
        }
    }
    let tail_ok = chunks.remainder().iter().all(|&b| jws_byte(b));
    if !tail_ok || bad != [0u8; 32] {
        return None;
    }
    let (h, rest) = token.split_once('.')?;
    let (p, s) = rest.split_once('.')?;
    let ok = !h.is_empty() && !p.is_empty() && !s.is_empty() && !s.contains('.');
    ok.then_some((h, p, s))
}

/// `true` when the member is present at all, whatever its value (`"jku": null` included).
fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
    serde::de::IgnoredAny::deserialize(d).map(|_| true)
}

/// The JOSE header members we read, borrowed from the decoded header where possible.
/// Duplicate members are refused (RFC 7515 section 4 allows refusing them).
#[derive(Deserialize)]
struct JoseHeader<'a> {
    #[serde(borrow, default)]
    alg: Option<std::borrow::Cow<'a, str>>,
    #[serde(borrow, default)]
    kid: Option<std::borrow::Cow<'a, str>>,
    #[serde(borrow, default)]
    typ: Option<std::borrow::Cow<'a, str>>,
    #[serde(default, deserialize_with = "present")]
    jku: bool,
    #[serde(default, deserialize_with = "present")]
    x5u: bool,
    #[serde(default, deserialize_with = "present")]
    jwk: bool,
    #[serde(default, deserialize_with = "present")]
    x5c: bool,
    #[serde(default, deserialize_with = "present")]
    crit: bool,
}

/// Split and check the shape; decode the header into `buf` and read it from there.
fn precheck<'b>(token: &str, buf: &'b mut Vec<u8>) -> Result<JoseHeader<'b>, VerifyError> {
    if token.len() > MAX_TOKEN_LEN {
        return Err(VerifyError::Malformed);
    }
    let (h, _, _) = split_compact(token).ok_or(VerifyError::Malformed)?;
    if h.len() > MAX_HEADER_LEN {
        return Err(VerifyError::BadHeader);
    }
    URL_SAFE_NO_PAD
        .decode_vec(h, buf)
        .map_err(|_| VerifyError::Malformed)?;
    // Not a JSON object (serde would read an array into the struct by position), or a member
    // of the wrong type (`"alg": 5`): refused.
    if buf.trim_ascii_start().first() != Some(&b'{') {
        return Err(VerifyError::BadHeader);
    }
    let header: JoseHeader<'b> = serde_json::from_slice(buf).map_err(|_| VerifyError::BadHeader)?;
    if header.jku || header.x5u || header.jwk || header.x5c || header.crit {
        return Err(VerifyError::BadHeader);
    }
    Ok(header)
}

impl JoseHeader<'_> {
    /// The `alg` and `kid` (both required).
    fn alg_and_kid(&self) -> Result<(&str, &str), VerifyError> {
        let alg = self.alg.as_deref().ok_or(VerifyError::BadHeader)?;
        let kid = self.kid.as_deref().ok_or(VerifyError::UnknownKey)?;
        Ok((alg, kid))
    }
}

impl TokenService {
    pub fn new(
        cfg: &TokensConfig,
        keyring: Keyring,
        external: ExternalIssuers,
        revocations: Arc<RevocationView>,
        clock: SharedClock,
    ) -> Self {
        TokenService {
            keyring,
            external,
            revocations,
            clock,
            issuer: cfg.issuer.clone(),
            audience: cfg.audience.clone(),
            access_ttl: cfg.access_ttl.as_secs(),
            leeway: cfg.leeway.as_secs(),
            cache: (cfg.cache_size > 0).then(|| {
                let n = usize::try_from(cfg.cache_size).unwrap_or(usize::MAX);
                TokenCache::with(
                    n,
                    cfg.cache_size,
                    quick_cache::UnitWeighter,
                    foldhash::fast::RandomState::default(),
                    Default::default(),
                )
            }),
        }
    }

    pub fn access_ttl(&self) -> u64 {
        self.access_ttl
    }

    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    /// Sign a new access token for `who` in session `sid`.
    pub fn issue(&self, who: &Subject<'_>, sid: &str) -> Result<IssuedAccess, String> {
        let signer = self
            .keyring
            .signer
            .as_ref()
            .ok_or("no signing key: tokens.signing_keys has no key with a private part")?;
        let now = self.clock.now();
        let claims = AccessClaims {
            iss: self.issuer.clone(),
            aud: self.audience.clone(),
            sub: who.sub.to_string(),
            email: who.email.to_string(),
            roles: who.roles.to_vec(),
            sid: sid.to_string(),
            jti: random_id(16),
            iat: now,
            nbf: now,
            exp: now + self.access_ttl,
        };
        let mut header = Header::new(signer.algorithm);
        header.kid = Some(signer.kid.clone());
        header.typ = Some("at+jwt".into());
        let token = jsonwebtoken::encode(&header, &claims, &signer.encoding)
            .map_err(|e| format!("signing failed: {e}"))?;
        Ok(IssuedAccess {
            token,
            jti: claims.jti,
            exp: claims.exp,
        })
    }

    /// Verify `token` (cached), then check revocation. Takes bytes as they came in the
    /// header: a cache hit needs no UTF-8 check, since only tokens that verified (and so were
    /// text) are cached.
    pub async fn verify(
        &self,
        token: &(impl AsRef<[u8]> + ?Sized),
    ) -> Result<Arc<Verified>, VerifyError> {
        let token = token.as_ref();
        let now = self.clock.now();
        let verified = match self.cache.as_ref().and_then(|c| c.get(&TokenBytes(token))) {
            Some(v) => v,
            None => {
                tracing::debug!(target: "portcullis::tokens", "verified-token cache miss");
                let text = std::str::from_utf8(token).map_err(|_| VerifyError::Malformed)?;
                let v = Arc::new(self.verify_uncached(text, now).await?);
                if let Some(c) = &self.cache {
                    c.insert(CachedToken(token.into()), v.clone());
                }
                v
            }
        };
        if verified.exp + self.leeway < now {
            return Err(VerifyError::Expired);
        }
        if self
            .revocations
            .is_revoked(&verified.jti, &verified.sid, now)
        {
            return Err(VerifyError::Revoked);
        }
        Ok(verified)
    }

    /// Full verification without the cache (also used by the benchmark).
    pub async fn verify_uncached(&self, token: &str, now: u64) -> Result<Verified, VerifyError> {
        let mut buf = Vec::new();
        let header = precheck(token, &mut buf)?;
        let (alg, kid) = header.alg_and_kid()?;
        if let Some(key) = self.keyring.verifiers.get(kid) {
            let typ = header.typ.as_deref();
            if !matches!(typ, Some(t) if t.eq_ignore_ascii_case("at+jwt") || t.eq_ignore_ascii_case("application/at+jwt"))
            {
                return Err(VerifyError::BadHeader);
            }
            return self.verify_own(token, key, alg, now, true);
        }
        self.external
            .verify(token, kid, alg, now, self.leeway)
            .await
    }

    /// Signature and claims of one of our own tokens, ignoring `exp`/`nbf` and revocation:
    /// logout must work with an expired access token.
    pub fn verify_ignoring_time(&self, token: &str) -> Result<Verified, VerifyError> {
        let mut buf = Vec::new();
        let header = precheck(token, &mut buf)?;
        let (alg, kid) = header.alg_and_kid()?;
        let key = self
            .keyring
            .verifiers
            .get(kid)
            .ok_or(VerifyError::UnknownKey)?;
        self.verify_own(token, key, alg, 0, false)
    }

    fn verify_own(
        &self,
        token: &str,
        key: &VerifyKey,
        alg: &str,
        now: u64,
        check_time: bool,
    ) -> Result<Verified, VerifyError> {
        // The key's own algorithm, never the token's choice.
        if alg != key.alg_name {
            return Err(VerifyError::BadHeader);
        }
        // Signature with the key parsed at start-up, then the claims, deserialized once. Every
        // claim of `AccessClaims` is required (exp, nbf, iat, iss, aud, sub and ours).
        let payload = key.jws.verify(token)?;
        let c: AccessClaims = serde_json::from_slice(&payload).map_err(|_| VerifyError::Invalid)?;
        if c.iss != self.issuer || c.aud != self.audience {
            return Err(VerifyError::Invalid);
        }
        if check_time {
            check_times(c.exp, Some(c.nbf), now, self.leeway)?;
        }
        if c.sub.is_empty() || c.jti.is_empty() || c.sid.is_empty() {
            return Err(VerifyError::Invalid);
        }
        let wire = IdentityValues::new(&c.sub, &c.email, &c.roles)?;
        Ok(Verified {
            wire,
            sub: c.sub,
            email: c.email,
            roles: c.roles,
            sid: c.sid,
            jti: c.jti,
            exp: c.exp,
            iss: c.iss,
        })
    }
}

/// `exp` and `nbf` against `now` with `leeway` seconds of clock skew.
pub fn check_times(exp: u64, nbf: Option<u64>, now: u64, leeway: u64) -> Result<(), VerifyError> {
    if exp + leeway < now {
        return Err(VerifyError::Expired);
    }
    if nbf.is_some_and(|nbf| nbf > now + leeway) {
        return Err(VerifyError::NotYetValid);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;
    use crate::config::{Algorithm, KeySource, SigningKey};
    use crate::secret::Secret;

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
            let (private, _) = super::super::keys::generate(alg).unwrap();
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
}
