//! Redis backend: the shared engine for several gateway instances.
//!
//! Keys (prefix `pc:`): `fam:<sid>` (Family JSON, expires with the session), `tok:<hash>`
//! (sid), `user:<id>` (set of sids), `rev:j:<jti>` / `rev:s:<sid>` (until, expiring then),
//! `key` (rotation key), `rl:<key>` (sorted set of rate-limit events), `mfa:<id>` (the second
//! factor's JSON, its secret sealed; changed by compare-and-set). Rotation, including
//! the grace window and reuse revocation, is one Lua script, so it is atomic across
//! instances. Every revocation is published on `pc:revocations`; each instance applies it to
//! its in-memory view, and after a reconnect reloads every revocation before it reports ready.
//!
//! High availability (`link.rs`): with `store.redis_sentinel` the master is found through
//! Redis Sentinel and found again after a failover. Replication is asynchronous, so a write
//! acknowledged by the master alone can vanish with it; with `store.redis_min_replicas_acked:
//! n` every write a client's credentials depend on (login, rotation, reuse revocation,
//! logout, revocations, the rotation key) is followed by `WAIT n` on its connection before
//! the call returns. Fewer acknowledgements within 500 ms fail the call as unavailable (503):
//! the gateway never hands out a token that the loss of the master could take back. The write
//! itself stays on the master and may still replicate; the client retries with the token it
//! holds, and inside `reuse_grace` gets the very same successor. A replay inside the grace
//! window writes `pc:sync` first, so that its `WAIT` also covers the rotation it replays.
//! Rate-limit events and pruning do not wait: losing a few of them in a failover is harmless.
//! Readiness does not depend on the replicas: access tokens keep working while they are
//! missing, only logins and refreshes fail.

mod link;
mod replicas;
mod scripts;
mod watch;

use super::*;
use crate::config::Rate;
use crate::secret::Secret;
use crate::tokens::revocation::RevocationView;
use ::redis::{AsyncCommands, Script};
use link::{Conn, Link};
use scripts::{COMPARE_AND_SET, RATE, REAUTHENTICATE, REVOKE, REVOKE_FN, ROTATE};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

const P: &str = "pc:";
const CHANNEL: &str = "pc:revocations";

/// Redis-backed store.
pub struct RedisStore {
    /// The way to the current master (fixed, or found through Sentinel).
    link: Arc<Link>,
    /// Replicas that must hold a write before the call that made it returns (0: none).
    min_replicas_acked: u32,
    /// The last `WAIT` got too few acknowledgements (logged once per shortage, not per call).
    short_of_replicas: AtomicBool,
    rotate: Script,
    revoke: Script,
    rate: Script,
    reauthenticate: Script,
    compare_and_set: Script,
    /// The revocation view has been (re)loaded since the last (re)connect.
    synced: AtomicBool,
    /// Unix time of the last successful contact (the watcher pings every second).
    last_ok: AtomicU64,
    /// How long the local revocation view may be trusted without Redis.
    max_staleness: u64,
}

fn unavailable(e: ::redis::RedisError) -> StoreError {
    StoreError::Unavailable(format!("redis: {}", e.kind_str()))
}

trait KindStr {
    fn kind_str(&self) -> String;
}

impl KindStr for ::redis::RedisError {
    /// Error text without anything that could carry the URL or a password.
    fn kind_str(&self) -> String {
        if self.is_timeout() {
            "timed out".into()
        } else if self.is_connection_refusal() || self.is_connection_dropped() || self.is_io_error()
        {
            "connection failed".into()
        } else {
            format!("{:?}", self.kind())
        }
    }
}

/// Every key matching `pattern` (SCAN, so the server is never blocked).
async fn scan_keys(c: &mut Conn, pattern: String) -> Result<Vec<String>, StoreError> {
    let mut keys = Vec::new();
    let mut iter: ::redis::AsyncIter<String> = c.scan_match(pattern).await.map_err(unavailable)?;
    while let Some(k) = iter.next_item().await {
        keys.push(k.map_err(unavailable)?);
    }
    Ok(keys)
}

fn unix_now() -> u64 {
    crate::clock::Clock::now(&crate::clock::SystemClock)
}

impl RedisStore {
    /// The single Redis at `url`, writes acknowledged by it alone.
    pub fn open(url: &Secret<String>, max_staleness: Duration) -> Result<Self, StoreError> {
        Self::open_with(url, max_staleness, None, 0)
    }

    /// Connect lazily (the gateway starts even while Redis is down, and reports not ready):
    /// to the master the sentinels name when `sentinel` is given (`url` then only supplies
    /// the database and credentials), else to `url`; with `min_replicas_acked` > 0 a write
    /// returns only once that many replicas hold it.
    pub fn open_with(
        url: &Secret<String>,
        max_staleness: Duration,
        sentinel: Option<&crate::config::Sentinel>,
        min_replicas_acked: u32,
    ) -> Result<Self, StoreError> {
        let lanes = if min_replicas_acked > 0 {
            link::DURABLE_LANES
        } else {
            0
        };
        Ok(RedisStore {
            link: Arc::new(Link::new(url, sentinel, lanes)?),
            min_replicas_acked,
            short_of_replicas: AtomicBool::new(false),
            rotate: Script::new(&format!("{REVOKE_FN}{ROTATE}")),
            revoke: Script::new(&format!("{REVOKE_FN}{REVOKE}")),
            rate: Script::new(RATE),
            reauthenticate: Script::new(REAUTHENTICATE),
            compare_and_set: Script::new(COMPARE_AND_SET),
            synced: AtomicBool::new(false),
            last_ok: AtomicU64::new(0),
            max_staleness: max_staleness.as_secs(),
        })
    }

    fn conn(&self) -> Conn {
        Conn(self.link.clone())
    }

    /// Sliding-window rate check (and event, when `add`), shared by every instance.
    pub async fn rate(
        &self,
        key: &str,
        rate: Rate,
        now: u64,
        add: bool,
    ) -> Result<Result<(), u64>, StoreError> {
        let member = format!("{now}:{}", crate::tokens::access::random_id(6));
        let (allowed, retry): (u64, u64) = self
            .rate
            .key(format!("{P}rl:{key}"))
            .arg(now)
            .arg(rate.window.as_secs().max(1))
            .arg(rate.count)
            .arg(if add { "1" } else { "0" })
            .arg(member)
            .invoke_async(&mut self.conn())
            .await
            .map_err(unavailable)?;
        Ok(if allowed == 1 { Ok(()) } else { Err(retry) })
    }
}

#[async_trait]
impl TokenStore for RedisStore {
    fn backend(&self) -> &'static str {
        "redis"
    }

    async fn ping(&self) -> Result<(), StoreError> {
        let _: String = ::redis::cmd("PING")
            .query_async(&mut self.conn())
            .await
            .map_err(unavailable)?;
        if !self.synced.load(Ordering::SeqCst) {
            return Err(StoreError::Unavailable(
                "redis: revocation view not synchronised yet".into(),
            ));
        }
        Ok(())
    }

    async fn secret(&self) -> Result<[u8; 32], StoreError> {
        let mut fresh = [0u8; 32];
        rand::fill(&mut fresh[..]);
        // Durable too: a new master without it would derive other successors, and a racer
        // replaying inside the grace window would count as reuse.
        let mut c = self.durable().await?;
        let _: bool = c
            .set_nx(format!("{P}key"), &fresh[..])
            .await
            .map_err(unavailable)?;
        self.acked(&mut c).await?;
        let stored: Vec<u8> = c.get(format!("{P}key")).await.map_err(unavailable)?;
        stored
            .as_slice()
            .try_into()
            .map_err(|_| StoreError::Corrupt("redis: rotation key has the wrong length".into()))
    }

    async fn create_family(&self, f: &Family) -> Result<(), StoreError> {
        let ttl = f.max_exp.saturating_sub(unix_now()).max(1) + 1;
        let json = serde_json::to_string(f).expect("family serializes");
        let mut c = self.durable().await?;
        ::redis::pipe()
            .atomic()
            .set_ex(format!("{P}tok:{}", f.current), &f.sid, ttl)
            .ignore()
            .set_ex(format!("{P}fam:{}", f.sid), json, ttl)
            .ignore()
            .sadd(format!("{P}user:{}", f.user), &f.sid)
            .ignore()
            .query_async::<()>(&mut c)
            .await
            .map_err(unavailable)?;
        self.acked(&mut c).await
    }

    async fn rotate(
        &self,
        presented: &str,
        successor: &str,
        now_ms: u64,
        policy: &RotationPolicy,
    ) -> Result<RotateOutcome, StoreError> {
        let mut c = self.durable().await?;
        let out: Vec<String> = self
            .rotate
            .prepare_invoke()
            .arg(P)
            .arg(presented)
            .arg(successor)
            .arg(now_ms / 1000)
            .arg(policy.refresh_ttl)
            .arg(policy.reuse_grace_ms)
            .arg(if policy.revoke_user_on_reuse {
                "1"
            } else {
                "0"
            })
            .arg(policy.revocation_ttl)
            .arg(now_ms)
            .invoke_async(&mut c)
            .await
            .map_err(unavailable)?;
        let outcome: Result<RotateOutcome, StoreError> = match out.first().map(String::as_str) {
            Some("rotated") => {
                let family: Family =
                    serde_json::from_str(out.get(1).map(String::as_str).unwrap_or(""))
                        .map_err(|e| StoreError::Corrupt(format!("family record: {e}")))?;
                Ok(RotateOutcome::Rotated {
                    family,
                    replay: out.get(2).map(String::as_str) == Some("1"),
                })
            }
            Some("reused") => Ok(RotateOutcome::Reused {
                user: out.get(1).cloned().unwrap_or_default(),
                revoked_sids: out.into_iter().skip(2).collect(),
            }),
            _ => Ok(RotateOutcome::Invalid),
        };
        let outcome = outcome?;
        self.settle(&mut c, &outcome).await?;
        Ok(outcome)
    }

    async fn family_of(&self, token_hash: &str) -> Result<Option<Family>, StoreError> {
        let sid: Option<String> = self
            .conn()
            .get(format!("{P}tok:{token_hash}"))
            .await
            .map_err(unavailable)?;
        match sid {
            Some(sid) => self.family(&sid).await,
            None => Ok(None),
        }
    }

    async fn family(&self, sid: &str) -> Result<Option<Family>, StoreError> {
        let raw: Option<String> = self
            .conn()
            .get(format!("{P}fam:{sid}"))
            .await
            .map_err(unavailable)?;
        raw.map(|r| {
            serde_json::from_str(&r).map_err(|e| StoreError::Corrupt(format!("family record: {e}")))
        })
        .transpose()
    }

    async fn revoke_family(&self, sid: &str, until: u64) -> Result<bool, StoreError> {
        let was = self.family(sid).await?.is_some_and(|f| !f.revoked);
        self.revoke_call("s", sid, until).await?;
        Ok(was)
    }

    async fn remember_device(
        &self,
        user: &str,
        device: &str,
        _now: u64,
        ttl: u64,
    ) -> Result<bool, StoreError> {
        use base64::Engine;
        let device = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(device);
        let previous: Option<String> = ::redis::cmd("SET")
            .arg(format!("{P}dev:{user}:{device}"))
            .arg(1)
            .arg("EX")
            .arg(ttl.max(1))
            .arg("GET")
            .query_async(&mut self.conn())
            .await
            .map_err(unavailable)?;
        Ok(previous.is_some())
    }

    async fn sessions_of(&self, user: &str, now: u64) -> Result<Vec<Family>, StoreError> {
        let mut c = self.conn();
        let sids: Vec<String> = c
            .smembers(format!("{P}user:{user}"))
            .await
            .map_err(unavailable)?;
        let mut out = Vec::new();
        for chunk in sids.chunks(200) {
            let keys: Vec<String> = chunk.iter().map(|s| format!("{P}fam:{s}")).collect();
            let values: Vec<Option<String>> = c.mget(&keys).await.map_err(unavailable)?;
            for v in values.into_iter().flatten() {
                let f: Family = serde_json::from_str(&v)
                    .map_err(|e| StoreError::Corrupt(format!("family record: {e}")))?;
                if !f.revoked && f.expires_at() > now {
                    out.push(f);
                }
            }
        }
        Ok(out)
    }

    async fn revoke_user(&self, user: &str, until: u64) -> Result<Vec<String>, StoreError> {
        self.revoke_call("u", user, until).await
    }

    async fn revoke_jti(&self, jti: &str, until: u64) -> Result<(), StoreError> {
        self.revoke_call("j", jti, until).await.map(|_| ())
    }

    async fn revocations(&self, now: u64) -> Result<Vec<Revocation>, StoreError> {
        let mut c = self.conn();
        let keys = scan_keys(&mut c, format!("{P}rev:*")).await?;
        let mut out = Vec::new();
        for chunk in keys.chunks(500) {
            let values: Vec<Option<u64>> = c.mget(chunk).await.map_err(unavailable)?;
            for (k, v) in chunk.iter().zip(values) {
                let Some(until) = v.filter(|u| *u >= now) else {
                    continue;
                };
                if let Some(r) = k
                    .strip_prefix("pc:rev:")
                    .and_then(|rest| Revocation::from_key(rest, until))
                {
                    out.push(r);
                }
            }
        }
        Ok(out)
    }

    async fn prune(&self, _now: u64) -> Result<(), StoreError> {
        // Every key carries its own expiry; only user sets need their dead members dropped.
        let mut c = self.conn();
        let users = scan_keys(&mut c, format!("{P}user:*")).await?;
        for u in users {
            let sids: Vec<String> = c.smembers(&u).await.map_err(unavailable)?;
            for sid in sids {
                let exists: bool = c
                    .exists(format!("{P}fam:{sid}"))
                    .await
                    .map_err(unavailable)?;
                if !exists {
                    let _: () = c.srem(&u, &sid).await.map_err(unavailable)?;
                }
            }
        }
        Ok(())
    }

    async fn watch_revocations(&self, view: Arc<RevocationView>) {
        // Both run until the process ends.
        tokio::join!(self.link.follow_failovers(), self.watch(&view));
    }

    fn revocations_fresh(&self) -> bool {
        self.synced.load(Ordering::SeqCst)
            || unix_now().saturating_sub(self.last_ok.load(Ordering::SeqCst)) <= self.max_staleness
    }

    async fn rate_limit(
        &self,
        throttle: Throttle<'_>,
        rate: Rate,
        now: u64,
        add: bool,
    ) -> Result<Result<(), u64>, StoreError> {
        self.rate(&throttle.key(), rate, now, add).await
    }

    async fn unlock(&self, unlock: &Unlock) -> Result<u64, StoreError> {
        let pattern = format!("{P}rl:{}*", glob_escape(&unlock.prefix()));
        let mut c = self.conn();
        let keys: Vec<String> = {
            let mut iter = c
                .scan_match::<_, String>(&pattern)
                .await
                .map_err(unavailable)?;
            let mut keys = Vec::new();
            while let Some(k) = iter.next_item().await {
                let k = k.map_err(unavailable)?;
                if k.strip_prefix(&format!("{P}rl:"))
                    .is_some_and(|rest| unlock.matches(rest))
                {
                    keys.push(k);
                }
            }
            keys
        };
        if keys.is_empty() {
            return Ok(0);
        }
        let removed: u64 = c.del(&keys).await.map_err(unavailable)?;
        Ok(removed)
    }

    async fn reauthenticate(
        &self,
        sid: &str,
        auth_time: u64,
        amr: &[String],
    ) -> Result<bool, StoreError> {
        let amr = serde_json::to_string(amr).expect("strings serialize");
        let mut c = self.durable().await?;
        let done: u64 = self
            .reauthenticate
            .key(format!("{P}fam:{sid}"))
            .arg(auth_time)
            .arg(amr)
            .invoke_async(&mut c)
            .await
            .map_err(unavailable)?;
        self.acked(&mut c).await?;
        Ok(done == 1)
    }

    async fn mfa(&self, user: &str) -> Result<Option<MfaRecord>, StoreError> {
        let raw: Option<String> = self
            .conn()
            .get(format!("{P}mfa:{user}"))
            .await
            .map_err(unavailable)?;
        raw.map(|r| {
            serde_json::from_str(&r)
                .map_err(|e| StoreError::Corrupt(format!("second-factor record: {e}")))
        })
        .transpose()
    }

    /// Read, change in Rust ([`MfaChange::apply`]), write back only if nobody wrote in
    /// between; retried a few times when someone did.
    async fn change_mfa(&self, user: &str, change: &MfaChange) -> Result<bool, StoreError> {
        let key = format!("{P}mfa:{user}");
        let mut c = self.durable().await?;
        for _ in 0..8 {
            let raw: Option<String> = c.get(&key).await.map_err(unavailable)?;
            let record = raw
                .as_deref()
                .map(serde_json::from_str::<MfaRecord>)
                .transpose()
                .map_err(|e| StoreError::Corrupt(format!("second-factor record: {e}")))?;
            let (next, accepted) = change.apply(record);
            if !accepted {
                return Ok(false);
            }
            let next = next
                .map(|r| serde_json::to_string(&r).expect("records serialize"))
                .unwrap_or_default();
            let written: u64 = self
                .compare_and_set
                .key(&key)
                .arg(raw.unwrap_or_default())
                .arg(&next)
                .arg(if next.is_empty() { "1" } else { "0" })
                .invoke_async(&mut c)
                .await
                .map_err(unavailable)?;
            if written == 1 {
                self.acked(&mut c).await?;
                return Ok(true);
            }
        }
        Err(StoreError::Unavailable(
            "redis: the second-factor record kept changing".into(),
        ))
    }
}

/// `s` matched literally by a Redis glob pattern.
fn glob_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for ch in s.chars() {
        if matches!(ch, '*' | '?' | '[' | ']' | '\\') {
            out.push('\\');
        }
        out.push(ch);
    }
    out
}
