//! The second factor: TOTP (RFC 6238: SHA-1, 6 digits, 30 s steps, as authenticator apps
//! expect) with ten single-use recovery codes.
//!
//! Secrets are sealed with AES-256-GCM under `mfa.encryption_key` before they reach the store,
//! bound to their user (the user id is the associated data), so neither the store's files nor
//! a copied record reveal or move one. Recovery codes are stored as keyed hashes only. A code
//! is accepted at most once: the store keeps the newest accepted time step per user and
//! refuses that step and older ones atomically, on every instance.
//!
//! Between the password and the code, a login is carried by the short-lived `pc_mfa` cookie:
//! the user, the session being stepped up (if any), an expiry and a nonce, under an HMAC.

use super::users::User;
use crate::clock::SharedClock;
use crate::config::MfaConfig;
use crate::store::{MfaChange, MfaRecord, SharedStore, StoreError};
use aws_lc_rs::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM, NONCE_LEN};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use totp_rs::{Algorithm, TOTP};

/// Seconds per time step.
const STEP: u64 = 30;
/// Bytes of a new TOTP secret (160 bits, as RFC 4226 recommends).
const SECRET_LEN: usize = 20;
/// Recovery codes handed out at enrolment.
pub const RECOVERY_CODES: usize = 10;
/// How long the password step of a login stays good for its code step.
pub const PENDING_TTL: u64 = 300;
/// Largest `pc_mfa` cookie value looked at.
const MAX_PENDING_LEN: usize = 1024;

/// Why the second factor could not be used.
#[derive(Debug, thiserror::Error)]
pub enum MfaError {
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The stored secret does not open under the configured key (the key changed, or the
    /// record was copied from another user): nothing can be checked against it.
    #[error("a stored second-factor secret does not open with mfa.encryption_key (was the key changed?)")]
    Sealed,
}

/// What a code did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// A code of the authenticator: accepted.
    Code,
    /// A recovery code: accepted, and now used up.
    Recovery,
    /// A valid code already used (its time step, or a newer one, was accepted before).
    Replay,
    /// Wrong, too old, malformed, or no second factor to check it against.
    Wrong,
}

/// What the user typed.
pub enum Entered<'a> {
    Code(&'a str),
    Recovery(&'a str),
}

/// A secret being enrolled, as the enrolment page shows it.
pub struct Enrolment {
    /// Base32, for typing into an app.
    pub secret: String,
    /// The `otpauth://` URI the QR code holds.
    pub uri: String,
}

/// A login between its password step and its code step (the `pc_mfa` cookie).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pending {
    /// The user whose password was right.
    pub user: String,
    /// The session a step-up re-authenticates (`None`: the login starts a new one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sid: Option<String>,
    /// Unix time this stops being accepted.
    pub exp: u64,
    /// Makes every pending login's cookie different.
    pub nonce: String,
}

/// The second factor, configured.
pub struct SecondFactor {
    issuer: String,
    sealing: LessSafeKey,
    /// HMAC key for recovery-code hashes and the `pc_mfa` cookie, derived from the sealing key.
    mac_key: [u8; 32],
    required_roles: Vec<String>,
    store: SharedStore,
    clock: SharedClock,
}

fn hmac(key: &[u8], parts: &[&[u8]]) -> [u8; 32] {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes any key length");
    for p in parts {
        mac.update(&(p.len() as u64).to_be_bytes());
        mac.update(p);
    }
    mac.finalize().into_bytes().into()
}

impl SecondFactor {
    pub fn new(cfg: &MfaConfig, store: SharedStore, clock: SharedClock) -> Self {
        let key = cfg.encryption_key.expose();
        let unbound = UnboundKey::new(&AES_256_GCM, key).expect("a 32-byte AES-256 key");
        SecondFactor {
            issuer: cfg.issuer_name.clone(),
            sealing: LessSafeKey::new(unbound),
            mac_key: hmac(key, &[b"portcullis second factor mac"]),
            required_roles: cfg.required_for_roles.clone(),
            store,
            clock,
        }
    }

    fn now(&self) -> u64 {
        self.clock.now()
    }

    /// Must `user` use a second factor (`mfa: required`, or a role in `required_for_roles`)?
    pub fn required(&self, user: &User) -> bool {
        user.mfa_required || self.required_by_roles(&user.roles)
    }

    /// Does one of `roles` require a second factor?
    pub fn required_by_roles(&self, roles: &[String]) -> bool {
        !self.required_roles.is_empty() && roles.iter().any(|r| self.required_roles.contains(r))
    }

    /// The stored second factor of `user`.
    pub async fn record(&self, user: &str) -> Result<Option<MfaRecord>, StoreError> {
        self.store.mfa(user).await
    }

    /// Has `user` confirmed a secret?
    pub async fn enrolled(&self, user: &str) -> Result<bool, StoreError> {
        Ok(self.record(user).await?.is_some_and(|r| r.enrolled()))
    }

    /// Seal `secret` for `user` (the associated data binds it to them: a record copied to
    /// another user does not open).
    fn seal(&self, user: &str, secret: &[u8]) -> String {
        self.seal_for(user.as_bytes(), secret)
    }

    fn open(&self, user: &str, sealed: &str) -> Result<Vec<u8>, MfaError> {
        self.open_for(user.as_bytes(), sealed)
    }

    fn seal_for(&self, aad: &[u8], secret: &[u8]) -> String {
        let mut nonce = [0u8; NONCE_LEN];
        rand::fill(&mut nonce[..]);
        let mut sealed = secret.to_vec();
        self.sealing
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(aad),
                &mut sealed,
            )
            .expect("sealing a short secret cannot fail");
        let mut out = nonce.to_vec();
        out.extend_from_slice(&sealed);
        URL_SAFE_NO_PAD.encode(out)
    }

    fn open_for(&self, aad: &[u8], sealed: &str) -> Result<Vec<u8>, MfaError> {
        let raw = URL_SAFE_NO_PAD
            .decode(sealed)
            .map_err(|_| MfaError::Sealed)?;
        if raw.len() <= NONCE_LEN {
            return Err(MfaError::Sealed);
        }
        let (nonce, body) = raw.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| MfaError::Sealed)?;
        let mut body = body.to_vec();
        let plain = self
            .sealing
            .open_in_place(nonce, Aad::from(aad), &mut body)
            .map_err(|_| MfaError::Sealed)?;
        Ok(plain.to_vec())
    }

    fn totp(&self, user: &User, secret: Vec<u8>) -> TOTP {
        // A ':' would split the label where apps split issuer from account.
        let account = user.email.replace(':', "_");
        TOTP::new_unchecked(
            Algorithm::SHA1,
            6,
            1,
            STEP,
            secret,
            Some(self.issuer.clone()),
            account,
        )
    }

    /// The time step whose code `code` is, within one step of now either way; `None` when it
    /// is none of them (or not six digits).
    fn step_of(&self, totp: &TOTP, code: &str) -> Option<u64> {
        let code: String = code.chars().filter(|c| !c.is_whitespace()).collect();
        if code.len() != 6 || !code.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let now = self.now() / STEP;
        let mut found = None;
        // Every candidate is computed and compared, whichever matches.
        for step in [now.saturating_sub(1), now, now + 1] {
            let expected = totp.generate(step * STEP);
            let same: bool =
                subtle::ConstantTimeEq::ct_eq(expected.as_bytes(), code.as_bytes()).into();
            if same {
                found = Some(step);
            }
        }
        found
    }

    /// What a pending secret is sealed with: its user and the one caller it was shown to (a
    /// session id, or a pending login's nonce). Nobody else, not even another session of the
    /// same user, can read it back or confirm it.
    fn pending_aad(user: &str, owner: &str) -> Vec<u8> {
        [user.as_bytes(), b"\0pending\0", owner.as_bytes()].concat()
    }

    /// The secret `user` is enrolling from `owner` (a session id, or a pending login's nonce):
    /// the one shown there before, while it is not confirmed, else a new one, which replaces
    /// whatever another caller was shown.
    pub async fn begin(&self, user: &User, owner: &str) -> Result<Enrolment, MfaError> {
        let aad = Self::pending_aad(&user.id, owner);
        let pending = self.record(&user.id).await?.and_then(|r| r.pending);
        let secret = match pending.map(|p| self.open_for(&aad, &p)) {
            Some(Ok(secret)) => secret,
            // None yet, one shown to another caller, or one that no longer opens: start over.
            _ => {
                let mut secret = vec![0u8; SECRET_LEN];
                rand::fill(&mut secret[..]);
                let sealed = self.seal_for(&aad, &secret);
                self.store
                    .change_mfa(&user.id, &MfaChange::Begin { sealed })
                    .await?;
                secret
            }
        };
        let totp = self.totp(user, secret);
        Ok(Enrolment {
            secret: totp.get_secret_base32(),
            uri: totp.get_url(),
        })
    }

    /// Confirm the secret `owner` is enrolling with a code of it: the recovery codes, shown
    /// once; `None` when the code is wrong (or `owner` is enrolling nothing).
    pub async fn confirm(
        &self,
        user: &User,
        owner: &str,
        code: &str,
    ) -> Result<Option<Vec<String>>, MfaError> {
        let Some(sealed) = self.record(&user.id).await?.and_then(|r| r.pending) else {
            return Ok(None);
        };
        let Ok(secret) = self.open_for(&Self::pending_aad(&user.id, owner), &sealed) else {
            return Ok(None);
        };
        let kept = self.seal(&user.id, &secret);
        let Some(step) = self.step_of(&self.totp(user, secret), code) else {
            return Ok(None);
        };
        let codes: Vec<String> = (0..RECOVERY_CODES).map(|_| recovery_code()).collect();
        let change = MfaChange::Confirm {
            sealed,
            secret: kept,
            step,
            recovery: codes
                .iter()
                .map(|c| self.recovery_hash(&user.id, c))
                .collect(),
            at: self.now(),
        };
        Ok(self
            .store
            .change_mfa(&user.id, &change)
            .await?
            .then_some(codes))
    }

    /// Check what `user` typed; a code or recovery code that is accepted is used up.
    pub async fn verify(&self, user: &User, entered: Entered<'_>) -> Result<Verdict, MfaError> {
        match entered {
            Entered::Code(code) => {
                let Some(sealed) = self.record(&user.id).await?.and_then(|r| r.secret) else {
                    return Ok(Verdict::Wrong);
                };
                let secret = self.open(&user.id, &sealed)?;
                let Some(step) = self.step_of(&self.totp(user, secret), code) else {
                    return Ok(Verdict::Wrong);
                };
                let fresh = self
                    .store
                    .change_mfa(&user.id, &MfaChange::Step(step))
                    .await?;
                Ok(if fresh {
                    Verdict::Code
                } else {
                    Verdict::Replay
                })
            }
            Entered::Recovery(code) => {
                let normal = normalize_recovery(code);
                if normal.len() != RECOVERY_LEN {
                    return Ok(Verdict::Wrong);
                }
                let hash = self.recovery_hash(&user.id, &normal);
                let used = self
                    .store
                    .change_mfa(&user.id, &MfaChange::Recovery(hash))
                    .await?;
                Ok(if used {
                    Verdict::Recovery
                } else {
                    Verdict::Wrong
                })
            }
        }
    }

    /// Does `mfa.encryption_key` open what the store holds? The first start with a key seals a
    /// known value under a reserved id (no user id has a control character); every later
    /// start opens it, so a changed key stops the start instead of locking every enrolled
    /// user out.
    pub async fn check_key(&self) -> Result<(), MfaError> {
        const ID: &str = "\u{0}key-check";
        const VALUE: &[u8] = b"portcullis second factor key check";
        match self.record(ID).await?.and_then(|r| r.pending) {
            Some(sealed) if self.open(ID, &sealed)? == VALUE => Ok(()),
            Some(_) => Err(MfaError::Sealed),
            None => {
                let sealed = self.seal(ID, VALUE);
                self.store
                    .change_mfa(ID, &MfaChange::Begin { sealed })
                    .await?;
                Ok(())
            }
        }
    }

    /// Forget the second factor of `user`; whether there was one.
    pub async fn remove(&self, user: &str) -> Result<bool, StoreError> {
        self.store.change_mfa(user, &MfaChange::Remove).await
    }

    fn recovery_hash(&self, user: &str, code: &str) -> String {
        let normal = normalize_recovery(code);
        URL_SAFE_NO_PAD.encode(hmac(
            &self.mac_key,
            &[b"recovery", user.as_bytes(), normal.as_bytes()],
        ))
    }

    /// A `pc_mfa` cookie value for `pending`.
    pub fn pending_cookie(&self, user: &str, sid: Option<&str>) -> String {
        let pending = Pending {
            user: user.to_string(),
            sid: sid.map(str::to_string),
            exp: self.now() + PENDING_TTL,
            nonce: crate::tokens::access::random_id(16),
        };
        let body = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&pending).expect("serializes"));
        let mac = URL_SAFE_NO_PAD.encode(hmac(&self.mac_key, &[b"pc_mfa", body.as_bytes()]));
        format!("{body}.{mac}")
    }

    /// The login a `pc_mfa` cookie carries, if it is ours, intact and not expired.
    pub fn pending(&self, cookie: &str) -> Option<Pending> {
        if cookie.len() > MAX_PENDING_LEN {
            return None;
        }
        let (body, mac) = cookie.split_once('.')?;
        let expected = URL_SAFE_NO_PAD.encode(hmac(&self.mac_key, &[b"pc_mfa", body.as_bytes()]));
        if !super::cookies::secure_eq(mac, &expected) {
            return None;
        }
        let pending: Pending = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(body).ok()?).ok()?;
        (pending.exp > self.now()).then_some(pending)
    }
}

/// Characters of a recovery code (lower-case base32: no 0/1/8/9 to misread).
const RECOVERY_ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz234567";
/// Characters in a recovery code, without its dash (50 bits).
const RECOVERY_LEN: usize = 10;

/// `xxxxx-xxxxx` from a CSPRNG.
fn recovery_code() -> String {
    let mut raw = [0u8; RECOVERY_LEN];
    rand::fill(&mut raw[..]);
    let chars: String = raw
        .iter()
        .map(|b| RECOVERY_ALPHABET[usize::from(b & 31)] as char)
        .collect();
    format!("{}-{}", &chars[..5], &chars[5..])
}

/// A recovery code as typed, compared without dashes, spaces or case.
fn normalize_recovery(code: &str) -> String {
    code.chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .map(|c| c.to_ascii_lowercase())
        .take(64)
        .collect()
}

/// The otpauth URI as an SVG QR code, ready to inline in a page.
pub fn qr_svg(uri: &str) -> String {
    let Ok(code) = qrcode::QrCode::new(uri.as_bytes()) else {
        return String::new();
    };
    let svg = code
        .render::<qrcode::render::svg::Color<'_>>()
        .min_dimensions(200, 200)
        .dark_color(qrcode::render::svg::Color("#000000"))
        .light_color(qrcode::render::svg::Color("#ffffff"))
        .build();
    // Inline: without the XML declaration.
    match svg.find("<svg") {
        Some(i) => svg[i..].to_string(),
        None => svg,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn factor() -> SecondFactor {
        let dir = tempfile::tempdir().unwrap();
        let store: SharedStore = std::sync::Arc::new(
            crate::store::sled::SledStore::open(dir.path(), std::time::Duration::from_secs(1))
                .unwrap(),
        );
        std::mem::forget(dir);
        let cfg = MfaConfig {
            issuer_name: "Wiki".into(),
            encryption_key: crate::secret::Secret::new([7u8; 32]),
            required_for_roles: vec!["admin".into()],
        };
        SecondFactor::new(&cfg, store, std::sync::Arc::new(crate::clock::SystemClock))
    }

    fn user(id: &str) -> User {
        User {
            id: id.into(),
            email: format!("{id}@example.com"),
            password_hash: crate::secret::Secret::new(String::new()),
            roles: vec![],
            disabled: false,
            mfa_required: false,
        }
    }

    #[test]
    fn sealed_secrets_open_only_for_their_user() {
        let f = factor();
        let sealed = f.seal("alice", b"0123456789abcdefghij");
        assert_eq!(f.open("alice", &sealed).unwrap(), b"0123456789abcdefghij");
        assert!(matches!(f.open("bob", &sealed), Err(MfaError::Sealed)));
        assert!(
            !sealed.contains("MFRGGZDF"),
            "no plain base32 of the secret"
        );
        assert_ne!(
            f.seal("alice", b"0123456789abcdefghij"),
            sealed,
            "random nonce"
        );
    }

    #[test]
    fn pending_cookies_are_bound_and_unforgeable() {
        let f = factor();
        let c = f.pending_cookie("alice", Some("sid1"));
        let p = f.pending(&c).unwrap();
        assert_eq!((p.user.as_str(), p.sid.as_deref()), ("alice", Some("sid1")));
        let (body, mac) = c.split_once('.').unwrap();
        let forged = URL_SAFE_NO_PAD.encode(
            serde_json::to_vec(&Pending {
                user: "admin".into(),
                ..p
            })
            .unwrap(),
        );
        assert!(f.pending(&format!("{forged}.{mac}")).is_none());
        assert!(f.pending(body).is_none());
        assert!(f.pending("").is_none());
        assert!(f.pending(&"a.".repeat(2000)).is_none());
    }

    #[tokio::test]
    async fn enrol_then_codes_once_and_recovery_once() {
        let f = factor();
        let alice = user("alice");
        let e = f.begin(&alice, "sid-1").await.unwrap();
        assert!(e
            .uri
            .starts_with("otpauth://totp/Wiki:alice%40example.com?secret="));
        assert_eq!(
            f.begin(&alice, "sid-1").await.unwrap().secret,
            e.secret,
            "same until confirmed"
        );
        let secret = totp_rs::Secret::Encoded(e.secret.clone())
            .to_bytes()
            .unwrap();
        let t = f.totp(&alice, secret);
        let now = f.now();
        // Another caller (another session of alice, or someone with her password) neither sees
        // that secret nor can confirm it; asking replaces it, and the first caller must ask again.
        let other = f.begin(&alice, "sid-2").await.unwrap();
        assert_ne!(other.secret, e.secret);
        let stolen = t.generate(now);
        assert_eq!(f.confirm(&alice, "sid-2", &stolen).await.unwrap(), None);
        assert_eq!(f.confirm(&alice, "sid-1", &stolen).await.unwrap(), None);
        let again = f.begin(&alice, "sid-1").await.unwrap();
        assert_ne!(again.secret, e.secret);
        let t = f.totp(
            &alice,
            totp_rs::Secret::Encoded(again.secret.clone())
                .to_bytes()
                .unwrap(),
        );
        assert_eq!(f.confirm(&alice, "sid-1", "000000x").await.unwrap(), None);
        let codes = f
            .confirm(&alice, "sid-1", &t.generate(now - STEP))
            .await
            .unwrap()
            .expect("a code of the previous step confirms");
        assert_eq!(codes.len(), RECOVERY_CODES);
        let distinct: std::collections::HashSet<_> = codes.iter().collect();
        assert_eq!(distinct.len(), RECOVERY_CODES);
        let code = t.generate(now);
        assert_eq!(
            f.verify(&alice, Entered::Code(&code)).await.unwrap(),
            Verdict::Code
        );
        assert_eq!(
            f.verify(&alice, Entered::Code(&code)).await.unwrap(),
            Verdict::Replay
        );
        let old = t.generate(now - 3 * STEP);
        assert_eq!(
            f.verify(&alice, Entered::Code(&old)).await.unwrap(),
            Verdict::Wrong
        );
        let r = codes[3].to_uppercase().replace('-', " ");
        assert_eq!(
            f.verify(&alice, Entered::Recovery(&r)).await.unwrap(),
            Verdict::Recovery
        );
        assert_eq!(
            f.verify(&alice, Entered::Recovery(&r)).await.unwrap(),
            Verdict::Wrong
        );
        assert_eq!(
            f.verify(&user("bob"), Entered::Recovery(&codes[4]))
                .await
                .unwrap(),
            Verdict::Wrong,
            "another user's code"
        );
        assert!(f.remove("alice").await.unwrap());
        assert!(!f.enrolled("alice").await.unwrap());
    }

    #[test]
    fn qr_is_inline_svg() {
        let svg = qr_svg("otpauth://totp/Wiki:a?secret=ABC");
        assert!(svg.starts_with("<svg"), "{}", &svg[..40]);
    }
}
