//! Durable token state behind one trait, so that the embedded sled database (default, one
//! gateway process) and Redis (several gateway instances) are interchangeable.
//!
//! The contract every backend keeps:
//! - only SHA-256 hashes of refresh tokens are stored, never the tokens;
//! - a rotation is one atomic compare-and-set: under any number of concurrent calls with the
//!   same parent at most one successor exists;
//! - a write is durable before the call returns (sled flushed, Redis acknowledged), so the
//!   caller may send the response that depends on it.
//!
//! The rotation state machine lives in the backends (a Lua script for Redis); the successor
//! token is derived by the caller (HMAC of the presented token under [`TokenStore::secret`]),
//! so every racer inside the grace window computes the very same successor.
//!
//! Every call the gateway makes goes through [`deadline::WithDeadline`]: a store that stops
//! answering costs a request `store.timeout` and a 503, never a hang.

#[cfg(test)]
pub mod contract;
pub mod deadline;
pub mod handover;
pub mod mfa;
pub mod redis;
pub mod sled;
pub mod writer;

pub use crate::config::Rate;
use crate::tokens::revocation::RevocationView;
use async_trait::async_trait;
pub use mfa::{MfaChange, MfaRecord};
use serde::{Deserialize, Serialize};
use std::sync::{Arc, OnceLock};

/// A long-lived runtime for store work outside Pingora's services: start-up calls and the
/// connections' driver tasks (a temporary runtime would take them down with it).
pub fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("portcullis-store")
            .enable_all()
            .build()
            .expect("a tokio runtime")
    })
}

/// Why a store call failed. Callers decide between "the store is down" (503, readiness) and
/// everything else.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("store unavailable: {0}")]
    Unavailable(String),
    #[error("store data corrupt: {0}")]
    Corrupt(String),
}

/// Put stored revocations into the in-memory view.
pub fn apply_revocations(view: &RevocationView, revocations: &[Revocation]) {
    for r in revocations {
        match r.kind {
            RevocationKind::Jti => view.revoke_jti(&r.id, r.until),
            RevocationKind::Sid => view.revoke_sid(&r.id, r.until),
        }
    }
}

/// A session (refresh-token family) as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Family {
    pub sid: String,
    pub user: String,
    pub created: u64,
    /// Absolute end: `created + session_max_lifetime`.
    pub max_exp: u64,
    /// Idle end: last rotation + `refresh_ttl` (never past `max_exp`).
    pub idle_exp: u64,
    /// Hash of the one refresh token that may rotate now.
    pub current: String,
    /// Hash of its immediate parent (honoured inside the grace window only).
    pub previous: Option<String>,
    /// Unix time (seconds) of the last rotation; kept so that records stay readable by the
    /// previous version (a rolling upgrade or a downgrade).
    pub rotated_at: u64,
    /// The same instant in milliseconds, so that a 10 s grace window lasts 10 s and not up to
    /// 11. Absent in records written before it existed: see [`Family::rotated_ms`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rotated_at_ms: Option<u64>,
    pub revoked: bool,
    /// Where the session began, for the user's session list (absent in older records).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub origin: Option<Origin>,
    /// Unix time the user last proved who they are in this session (the login, or a
    /// step-up since); records may lack it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth_time: Option<u64>,
    /// How they proved it (`pwd`, `otp`), as access tokens of the session say in `amr`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub amr: Vec<String>,
}

/// The browser a session began in: its address, its `User-Agent` (first 256 bytes) and a
/// label read from it ("Firefox on Linux").
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Origin {
    pub ip: String,
    pub user_agent: String,
    pub device: String,
}

impl Family {
    /// The unix time after which the session has ended.
    pub fn expires_at(&self) -> u64 {
        self.idle_exp.min(self.max_exp)
    }

    /// When the user last proved who they are in this session: a record without the time
    /// counts from the session's start.
    pub fn authenticated_at(&self) -> u64 {
        self.auth_time.unwrap_or(self.created)
    }

    /// How they proved it (a record without methods: the password).
    pub fn methods(&self) -> Vec<String> {
        if self.amr.is_empty() {
            vec!["pwd".to_string()]
        } else {
            self.amr.clone()
        }
    }

    /// Whether a code was part of it.
    pub fn otp(&self) -> bool {
        self.amr.iter().any(|m| m == "otp")
    }

    /// When the last rotation happened, in milliseconds. A record that only knows the second
    /// (its writer kept no milliseconds, or kept them for another second) counts from the start of that second, so its grace window is never
    /// longer than the configured one, and at most a second shorter.
    pub fn rotated_ms(&self) -> u64 {
        match self.rotated_at_ms {
            Some(ms) if ms / 1000 == self.rotated_at => ms,
            _ => self.rotated_at.saturating_mul(1000),
        }
    }
}

/// Rules of one rotation.
#[derive(Debug, Clone, Copy)]
pub struct RotationPolicy {
    /// Seconds a rotation extends the idle lifetime.
    pub refresh_ttl: u64,
    /// Milliseconds during which the immediate parent still yields the same successor.
    pub reuse_grace_ms: u64,
    /// Revoke every session of the user on reuse (`revoke_user`), or only the family.
    pub revoke_user_on_reuse: bool,
    /// How long a session revocation must be remembered for access tokens: access TTL + leeway.
    pub revocation_ttl: u64,
}

/// What a rotation did. Returned once per rotation and moved straight to its caller: the
/// session stays inline rather than costing an allocation per refresh.
#[derive(Debug, Clone, PartialEq, Eq)]
#[allow(clippy::large_enum_variant)]
pub enum RotateOutcome {
    /// The presented token was current (now rotated), or it is the immediate parent inside the
    /// grace window: the caller hands out the successor it derived.
    Rotated { family: Family, replay: bool },
    /// An already-rotated token outside the rules: these sessions are now revoked.
    Reused {
        user: String,
        revoked_sids: Vec<String>,
    },
    /// Unknown, expired or revoked.
    Invalid,
}

/// A revocation entry: `jti:<id>` or `sid:<id>` until a unix time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Revocation {
    pub kind: RevocationKind,
    pub id: String,
    pub until: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RevocationKind {
    Jti,
    Sid,
}

impl Revocation {
    /// From a stored key `j:<jti>` or `s:<sid>`; `None` for anything else.
    pub fn from_key(key: &str, until: u64) -> Option<Revocation> {
        let (kind, id) = if let Some(id) = key.strip_prefix("j:") {
            (RevocationKind::Jti, id)
        } else {
            (RevocationKind::Sid, key.strip_prefix("s:")?)
        };
        Some(Revocation {
            kind,
            id: id.to_string(),
            until,
        })
    }
}

/// The durable state of the gateway.
#[async_trait]
pub trait TokenStore: Send + Sync + 'static {
    /// Short backend name for logs and readiness (`sled`, `redis`).
    fn backend(&self) -> &'static str;

    /// Cheap liveness check used by the readiness probe.
    async fn ping(&self) -> Result<(), StoreError>;

    /// The store-held key that successor tokens are derived with (created on first use).
    async fn secret(&self) -> Result<[u8; 32], StoreError>;

    /// Store a new session whose first refresh token hashes to `family.current`.
    async fn create_family(&self, family: &Family) -> Result<(), StoreError>;

    /// Rotate the token hashing to `presented` into the one hashing to `successor`, at unix
    /// time `now_ms` (milliseconds: the grace window is measured to the millisecond).
    async fn rotate(
        &self,
        presented: &str,
        successor: &str,
        now_ms: u64,
        policy: &RotationPolicy,
    ) -> Result<RotateOutcome, StoreError>;

    /// The session a refresh token (by hash) belongs to, whatever its state.
    async fn family_of(&self, token_hash: &str) -> Result<Option<Family>, StoreError>;

    /// The session `sid`.
    async fn family(&self, sid: &str) -> Result<Option<Family>, StoreError>;

    /// Revoke session `sid`; access tokens of it are refused until `until`.
    async fn revoke_family(&self, sid: &str, until: u64) -> Result<bool, StoreError>;

    /// Every session of `user` that has not ended at `now` (revoked or expired ones are left
    /// out), in no particular order.
    async fn sessions_of(&self, user: &str, now: u64) -> Result<Vec<Family>, StoreError>;

    /// Note that `user` signed in from `device` (a device label and network) at `now`, for
    /// `ttl` seconds; returns whether it was already known then. Atomic, so it also marks
    /// one-time values as used (a pending second-factor login's nonce): of concurrent calls
    /// with the same key exactly one sees `false`.
    async fn remember_device(
        &self,
        user: &str,
        device: &str,
        now: u64,
        ttl: u64,
    ) -> Result<bool, StoreError>;

    /// Revoke every session of `user`; returns their ids.
    async fn revoke_user(&self, user: &str, until: u64) -> Result<Vec<String>, StoreError>;

    /// Refuse access token `jti` until `until`.
    async fn revoke_jti(&self, jti: &str, until: u64) -> Result<(), StoreError>;

    /// Every revocation still in force at `now` (to fill the in-memory view).
    async fn revocations(&self, now: u64) -> Result<Vec<Revocation>, StoreError>;

    /// Forget sessions and revocations that ended before `now`.
    async fn prune(&self, now: u64) -> Result<(), StoreError>;

    /// Keep `view` current with revocations made by other instances; runs until the process
    /// ends. A single-process backend has nothing to watch.
    async fn watch_revocations(&self, _view: Arc<RevocationView>) {
        std::future::pending::<()>().await
    }

    /// Whether the local revocation view may still be trusted (false once the shared store
    /// has been unreachable for longer than allowed: requests then fail closed).
    fn revocations_fresh(&self) -> bool {
        true
    }

    /// Wait until the local revocation view may be trusted again: `false` when it will not be
    /// without help from outside (the caller then fails closed). Only a store that is being
    /// opened in the background (an upgrade's new process) has something to wait for.
    async fn revocations_loaded(&self) -> bool {
        false
    }

    /// Whether this process has handed the store over to its successor (an upgrade).
    fn handed_over(&self) -> bool {
        false
    }

    /// Count events in the sliding window of `throttle`: `Ok(Err(retry_after))` when it
    /// already holds `rate.count` events; with `add`, one more is recorded when it does not.
    /// Shared by every instance (Redis) and kept across restarts.
    async fn rate_limit(
        &self,
        throttle: Throttle<'_>,
        rate: Rate,
        now: u64,
        add: bool,
    ) -> Result<Result<(), u64>, StoreError>;

    /// Forget every throttling counter `unlock` names; returns how many there were.
    async fn unlock(&self, unlock: &Unlock) -> Result<u64, StoreError>;

    /// Session `sid` was authenticated again (a step-up) at `auth_time` by `amr`: the access
    /// tokens its rotations issue say so from now on. `false` when the session is unknown,
    /// revoked or ended.
    async fn reauthenticate(
        &self,
        sid: &str,
        auth_time: u64,
        amr: &[String],
    ) -> Result<bool, StoreError>;

    /// The second factor of `user`, if any.
    async fn mfa(&self, user: &str) -> Result<Option<MfaRecord>, StoreError>;

    /// Apply `change` to the second factor of `user` atomically (whatever other instances do
    /// at the same time); returns whether it was accepted ([`MfaChange::apply`]).
    async fn change_mfa(&self, user: &str, change: &MfaChange) -> Result<bool, StoreError>;
}

/// One throttling counter: whose failed attempts it counts. Accounts are the user id of a
/// known user, else the typed email (so an unknown address is throttled like a known one).
#[derive(Debug, Clone, Copy)]
pub enum Throttle<'a> {
    /// Failed logins from one client address, every account.
    LoginIp(&'a str),
    /// Failed logins of one account from one address.
    AccountIp(&'a Account, &'a str),
    /// Failed logins of one account from browsers without its device cookie.
    Account(&'a Account),
    /// Failed logins of one account from one browser holding its device cookie.
    Device(&'a Account, &'a str),
    /// Refreshes from one client address.
    RefreshIp(&'a str),
}

/// Who a login names: a known user (by id) or only an email.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Account {
    User(String),
    Email(String),
}

impl Account {
    /// Unambiguous in a key whatever the id holds.
    fn encoded(&self) -> String {
        use base64::Engine;
        let raw = match self {
            Account::User(id) => format!("id:{id}"),
            Account::Email(e) => format!("email:{}", e.trim().to_lowercase()),
        };
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw)
    }
}

impl Throttle<'_> {
    /// The stored key. `|` separates parts; addresses and device ids never hold one.
    pub fn key(&self) -> String {
        match self {
            Throttle::LoginIp(ip) => format!("ip|{ip}"),
            Throttle::AccountIp(a, ip) => format!("acct|{}|ip|{ip}", a.encoded()),
            Throttle::Account(a) => format!("acct|{}", a.encoded()),
            Throttle::Device(a, d) => format!("acct|{}|dev|{d}", a.encoded()),
            Throttle::RefreshIp(ip) => format!("refresh|ip|{ip}"),
        }
    }
}

/// Which throttling counters to forget: every counter of an account, or of a client address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Unlock {
    Account(Account),
    Ip(String),
}

impl Unlock {
    /// Does the stored counter `key` belong to what is unlocked?
    pub fn matches(&self, key: &str) -> bool {
        match self {
            Unlock::Account(a) => {
                let prefix = format!("acct|{}", a.encoded());
                key.strip_prefix(&prefix)
                    .is_some_and(|rest| rest.is_empty() || rest.starts_with('|'))
            }
            Unlock::Ip(ip) => key == format!("ip|{ip}") || key.ends_with(&format!("|ip|{ip}")),
        }
    }

    /// The key prefix every match starts with (`""` when matches can be anywhere).
    pub fn prefix(&self) -> String {
        match self {
            Unlock::Account(a) => format!("acct|{}", a.encoded()),
            Unlock::Ip(_) => String::new(),
        }
    }
}

pub type SharedStore = Arc<dyn TokenStore>;
