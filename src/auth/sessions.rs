//! Sessions: login creates a refresh family, refresh rotates it, logout and
//! logout-all revoke. Refresh tokens are opaque 256-bit values; only their SHA-256 is stored.
//! A successor is HMAC-SHA256(store key, presented token), so every racer inside the grace
//! window derives the very same successor and no second branch of a family can exist.

use super::users::{User, UserDirectory};
use crate::config::{Config, OnReuse};
use crate::store::{Family, Origin, RotateOutcome, RotationPolicy, SharedStore, StoreError};
use crate::tokens::access::{random_id, IssuedAccess, Subject, TokenService, Verified};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use std::sync::Arc;

/// Hex SHA-256 of a refresh token: the only form that is stored.
pub fn token_hash(token: &str) -> String {
    let d = Sha256::digest(token.as_bytes());
    let mut s = String::with_capacity(64);
    for b in d {
        s.push_str(&format!("{b:02x}"));
    }
    s
}

/// A new pair of credentials.
pub struct Issued {
    pub access: IssuedAccess,
    pub refresh: String,
    pub family: Family,
    pub user: Arc<User>,
}

/// One in-flight transparent refresh, shared by every request presenting the same token.
type Flight = Arc<tokio::sync::OnceCell<Result<Arc<Issued>, SharedRefreshError>>>;

/// A refresh outcome shared by every request of one single-flight.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SharedRefreshError {
    Invalid,
    Reused,
    Unavailable,
}

/// Why a refresh failed.
#[derive(Debug, thiserror::Error)]
pub enum RefreshError {
    #[error("refresh token unknown or revoked")]
    Invalid,
    /// The session it belongs to ended (idle or absolute lifetime).
    #[error("refresh token expired")]
    Expired { user: String },
    #[error("refresh token reused")]
    Reused { user: String },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("cannot issue: {0}")]
    Issue(#[from] crate::tokens::access::IssueError),
}

pub struct Sessions {
    /// In-flight transparent refreshes by presented-token hash: one rotation per burst.
    flights: moka::sync::Cache<String, Flight>,
    pub store: SharedStore,
    pub tokens: Arc<TokenService>,
    pub users: Arc<UserDirectory>,
    /// The store-held rotation key, fetched on first use (the store may be down at start).
    key: tokio::sync::OnceCell<[u8; 32]>,
    policy: RotationPolicy,
    refresh_ttl: u64,
    session_max: u64,
    leeway: u64,
    /// `sessions.max_per_user` (0: unlimited).
    max_per_user: u32,
    known_device_ttl: u64,
    notifier: super::notify::Notifier,
}

impl Sessions {
    pub fn new(
        config: &Config,
        store: SharedStore,
        tokens: Arc<TokenService>,
        users: Arc<UserDirectory>,
    ) -> Self {
        let t = &config.tokens;
        Sessions {
            flights: moka::sync::Cache::builder()
                .max_capacity(100_000)
                .time_to_live(std::time::Duration::from_secs(
                    t.reuse_grace.as_secs().clamp(1, 10),
                ))
                .build(),
            key: tokio::sync::OnceCell::new(),
            policy: RotationPolicy {
                refresh_ttl: t.refresh_ttl.as_secs(),
                reuse_grace_ms: u64::try_from(t.reuse_grace.as_millis()).unwrap_or(u64::MAX),
                revoke_user_on_reuse: t.on_reuse == OnReuse::RevokeUser,
                revocation_ttl: t.access_ttl.as_secs() + t.leeway.as_secs() + 1,
            },
            refresh_ttl: t.refresh_ttl.as_secs(),
            session_max: t.session_max_lifetime.as_secs(),
            leeway: t.leeway.as_secs(),
            max_per_user: config.max_sessions_per_user,
            known_device_ttl: config.known_device_ttl.as_secs(),
            notifier: super::notify::Notifier::new(config.webhook_url.clone()),
            store,
            tokens,
            users,
        }
    }

    fn now(&self) -> u64 {
        self.tokens.clock.now()
    }

    /// Now in milliseconds, for rotation times and the grace window (a 10 s window lasts
    /// 10 s, not up to 11). The injected clock counts whole seconds; while it agrees with the
    /// system clock (always, in the running gateway) the milliseconds come from the system
    /// clock, otherwise (a test's hand-moved clock) from the start of the injected second.
    fn now_ms(&self) -> u64 {
        let system = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
            .unwrap_or(0);
        let secs = self.now();
        // Read second: a tick between the two reads leaves them one second apart.
        if secs.abs_diff(system / 1000) <= 1 {
            system.max(secs.saturating_mul(1000))
        } else {
            secs.saturating_mul(1000)
        }
    }

    async fn successor(&self, presented: &str) -> Result<String, StoreError> {
        let key = self.key.get_or_try_init(|| self.store.secret()).await?;
        let mut mac = Hmac::<Sha256>::new_from_slice(key)
            .map_err(|_| StoreError::Corrupt("rotation key unusable".into()))?;
        mac.update(presented.as_bytes());
        Ok(URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes()))
    }

    /// An access token for `user` in session `family`, saying when and how the user last
    /// proved who they are there (a rotation does not make that any fresher).
    fn issue_access(
        &self,
        user: &User,
        family: &Family,
    ) -> Result<IssuedAccess, crate::tokens::access::IssueError> {
        self.tokens.issue(
            &Subject {
                sub: &user.id,
                email: &user.email,
                roles: &user.roles,
                auth_time: family.authenticated_at(),
                amr: &family.methods(),
            },
            &family.sid,
        )
    }

    /// With `sessions.max_per_user`, end the least recently used sessions of `new`'s user
    /// beyond it (never `new` itself). A store failure leaves them: the login stands.
    async fn evict_beyond_limit(&self, new: &Family, now: u64) {
        let max = self.max_per_user as usize;
        if max == 0 {
            return;
        }
        let Ok(mut live) = self.store.sessions_of(&new.user, now).await else {
            return;
        };
        if live.len() <= max {
            return;
        }
        live.retain(|f| f.sid != new.sid);
        live.sort_by_key(|f| (f.rotated_at.max(f.created), f.created));
        let excess = live.len() + 1 - max;
        for f in live.iter().take(excess) {
            if self.revoke_family(&f.sid).await.is_ok() {
                tracing::info!(target: "portcullis::audit", event = "session_evicted", user = %new.user, sid = %f.sid, max_per_user = max);
            }
        }
    }

    /// A sign-in from a device label and network (IPv4 /24, IPv6 /48) the user has not used
    /// within `sessions.known_device_ttl`: audited, and sent to the webhook.
    async fn note_device(&self, family: &Family, now: u64) {
        let Some(origin) = &family.origin else {
            return;
        };
        let network = network_of(&origin.ip);
        let key = format!("{}|{network}", origin.device);
        let ttl = self.known_device_ttl;
        match self
            .store
            .remember_device(&family.user, &key, now, ttl)
            .await
        {
            Ok(true) => {}
            Ok(false) => {
                tracing::warn!(target: "portcullis::audit", event = "new_device_login", user = %family.user, sid = %family.sid, device = %origin.device, client_ip = %origin.ip);
                self.notifier.send(serde_json::json!({
                    "event": "new_device_login",
                    "user": family.user,
                    "device": origin.device,
                    "ip": origin.ip,
                    "at": now,
                }));
            }
            Err(e) => {
                tracing::warn!(target: "portcullis::store", error = %e, "cannot tell whether a device is new; no notice sent");
            }
        }
    }

    /// Seconds the refresh cookie should live for `family`.
    pub fn refresh_max_age(&self, family: &Family) -> u64 {
        family.expires_at().saturating_sub(self.now())
    }

    /// A new session for `user` (after a successful login) in the browser `origin` names,
    /// who proved who they are by `amr` (`pwd`, and `otp` after a code).
    pub async fn login(
        &self,
        user: Arc<User>,
        origin: Origin,
        amr: &[&str],
    ) -> Result<Issued, RefreshError> {
        let now_ms = self.now_ms();
        let now = now_ms / 1000;
        let refresh = random_id(32);
        let family = Family {
            sid: random_id(16),
            user: user.id.clone(),
            created: now,
            max_exp: now + self.session_max,
            idle_exp: now + self.refresh_ttl.min(self.session_max),
            current: token_hash(&refresh),
            previous: None,
            rotated_at: now,
            rotated_at_ms: Some(now_ms),
            revoked: false,
            origin: Some(origin),
            auth_time: Some(now),
            amr: amr.iter().map(|m| m.to_string()).collect(),
        };
        self.store.create_family(&family).await?;
        self.evict_beyond_limit(&family, now).await;
        self.note_device(&family, now).await;
        let access = self
            .issue_access(&user, &family)
            .map_err(RefreshError::Issue)?;
        Ok(Issued {
            access,
            refresh,
            family,
            user,
        })
    }

    /// Rotate `presented`. Durable before this returns.
    pub async fn refresh(&self, presented: &str) -> Result<Issued, RefreshError> {
        if presented.is_empty() || presented.len() > 256 {
            return Err(RefreshError::Invalid);
        }
        let now_ms = self.now_ms();
        let now = now_ms / 1000;
        let successor = self.successor(presented).await?;
        let outcome = self
            .store
            .rotate(
                &token_hash(presented),
                &token_hash(&successor),
                now_ms,
                &self.policy,
            )
            .await?;
        match outcome {
            RotateOutcome::Rotated { family, replay } => {
                let user = match self.users.by_id(&family.user) {
                    Some(u) if !u.disabled => u,
                    _ => {
                        // The account is gone or disabled: end the session too.
                        self.revoke_family(&family.sid).await?;
                        return Err(RefreshError::Invalid);
                    }
                };
                if replay {
                    tracing::info!(target: "portcullis::audit", event = "refresh_grace_replay", sid = %family.sid, user = %family.user);
                }
                let access = self
                    .issue_access(&user, &family)
                    .map_err(RefreshError::Issue)?;
                Ok(Issued {
                    access,
                    refresh: successor,
                    family,
                    user,
                })
            }
            RotateOutcome::Reused { user, revoked_sids } => {
                let until = now + self.policy.revocation_ttl;
                for sid in &revoked_sids {
                    self.tokens.revocations.revoke_sid(sid, until);
                }
                tracing::warn!(
                    target: "portcullis::audit",
                    event = "refresh_token_reused",
                    user = %user,
                    revoked_sessions = revoked_sids.len(),
                    sids = ?revoked_sids,
                );
                Err(RefreshError::Reused { user })
            }
            RotateOutcome::Invalid => {
                // Only to tell an ended session from an unknown token, in logs and metrics.
                let family = self.store.family_of(&token_hash(presented)).await;
                match family {
                    Ok(Some(f)) if !f.revoked && f.expires_at() <= now => {
                        Err(RefreshError::Expired { user: f.user })
                    }
                    _ => Err(RefreshError::Invalid),
                }
            }
        }
    }

    /// [`Sessions::refresh`], once per burst: parallel requests of one page presenting the same
    /// refresh token share a single rotation and its result.
    ///
    /// A flight that failed because the store did not answer is forgotten at once: the next
    /// request tries the store again instead of sharing a stale 503 for the rest of the burst.
    pub async fn refresh_shared(&self, presented: &str) -> Result<Arc<Issued>, SharedRefreshError> {
        let hash = token_hash(presented);
        let cell = self
            .flights
            .get_with(hash.clone(), || Arc::new(tokio::sync::OnceCell::new()));
        let shared = cell.get_or_init(|| async {
            match self.refresh(presented).await {
                Ok(issued) => {
                    tracing::info!(target: "portcullis::audit", event = "transparent_refresh", sid = %issued.family.sid, user = %issued.user.id);
                    Ok(Arc::new(issued))
                }
                Err(RefreshError::Reused { .. }) => Err(SharedRefreshError::Reused),
                Err(RefreshError::Invalid | RefreshError::Expired { .. }) => {
                    Err(SharedRefreshError::Invalid)
                }
                Err(_) => Err(SharedRefreshError::Unavailable),
            }
        });
        let result = shared.await.clone();
        if result.as_ref().err() == Some(&SharedRefreshError::Unavailable) {
            self.flights.invalidate(&hash);
        }
        result
    }

    /// A step-up in session `family`: the user proved who they are again by `amr` now. The
    /// session keeps its id and refresh token; a new access token says so.
    pub async fn reauthenticate(
        &self,
        user: Arc<User>,
        family: &Family,
        amr: &[&str],
    ) -> Result<(IssuedAccess, Family), RefreshError> {
        let now = self.now();
        let amr: Vec<String> = amr.iter().map(|m| m.to_string()).collect();
        if !self.store.reauthenticate(&family.sid, now, &amr).await? {
            return Err(RefreshError::Invalid);
        }
        let mut family = family.clone();
        family.auth_time = Some(now);
        family.amr = amr;
        let access = self
            .issue_access(&user, &family)
            .map_err(RefreshError::Issue)?;
        Ok((access, family))
    }

    /// End session `sid` (its access tokens stop working at once).
    pub async fn revoke_family(&self, sid: &str) -> Result<(), StoreError> {
        let until = self.now() + self.policy.revocation_ttl;
        self.store.revoke_family(sid, until).await?;
        self.tokens.revocations.revoke_sid(sid, until);
        tracing::info!(target: "portcullis::audit", event = "session_revoked", sid = %sid);
        Ok(())
    }

    /// Logout: the access token (even expired) and the refresh family, by whichever is known.
    pub async fn logout(
        &self,
        access: Option<&Verified>,
        refresh: Option<&str>,
    ) -> Result<(), StoreError> {
        if let Some(v) = access {
            let until = v.exp + self.leeway + 1;
            self.store.revoke_jti(&v.jti, until).await?;
            self.tokens.revocations.revoke_jti(&v.jti, until);
            if !v.sid.is_empty() {
                self.revoke_family(&v.sid).await?;
            }
        }
        if let Some(r) = refresh {
            if let Some(f) = self.store.family_of(&token_hash(r)).await? {
                // Usually the access token's own session, revoked just above.
                if access.is_none_or(|v| v.sid != f.sid) {
                    self.revoke_family(&f.sid).await?;
                }
            }
        }
        Ok(())
    }

    /// Every session of `user`.
    pub async fn logout_all(&self, user: &str) -> Result<usize, StoreError> {
        let until = self.now() + self.policy.revocation_ttl;
        let sids = self.store.revoke_user(user, until).await?;
        for sid in &sids {
            self.tokens.revocations.revoke_sid(sid, until);
        }
        tracing::info!(target: "portcullis::audit", event = "all_sessions_revoked", user = %user, sessions = sids.len());
        Ok(sids.len())
    }

    /// Fill the in-memory revocation view from the store (start-up).
    pub async fn load_revocations(&self) -> Result<usize, StoreError> {
        let revs = self.store.revocations(self.now()).await?;
        crate::store::apply_revocations(&self.tokens.revocations, &revs);
        Ok(revs.len())
    }
}

/// Background service: prune ended sessions and revocations once a minute.
pub struct Pruner(pub Arc<Sessions>);

#[async_trait::async_trait]
impl pingora::services::background::BackgroundService for Pruner {
    async fn start(&self, mut shutdown: pingora::server::ShutdownWatch) {
        let minute = std::time::Duration::from_secs(60);
        crate::clock::every(minute, &mut shutdown, || async {
            let now = self.0.now();
            self.0.tokens.revocations.prune(now);
            if let Err(e) = self.0.store.prune(now).await {
                tracing::warn!(target: "portcullis::store", error = %e, "prune failed");
            }
        })
        .await
    }
}

/// The network an address belongs to for "a new device" (IPv4 /24, IPv6 /48); the text as it
/// is when it is not an address.
fn network_of(ip: &str) -> String {
    use ipnet::{IpNet, Ipv4Net, Ipv6Net};
    match ip.parse::<std::net::IpAddr>() {
        Ok(std::net::IpAddr::V4(v4)) => Ipv4Net::new(v4, 24)
            .map(|n| IpNet::V4(n.trunc()).to_string())
            .unwrap_or_else(|_| ip.to_string()),
        Ok(std::net::IpAddr::V6(v6)) => Ipv6Net::new(v6, 48)
            .map(|n| IpNet::V6(n.trunc()).to_string())
            .unwrap_or_else(|_| ip.to_string()),
        Err(_) => ip.to_string(),
    }
}
