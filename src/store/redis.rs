//! Redis backend: the shared engine for several gateway instances.
//!
//! Keys (prefix `pc:`): `fam:<sid>` (Family JSON, expires with the session), `tok:<hash>`
//! (sid), `user:<id>` (set of sids), `rev:j:<jti>` / `rev:s:<sid>` (until, expiring then),
//! `key` (rotation key), `rl:<key>` (sorted set of rate-limit events). Rotation, including
//! the grace window and reuse revocation, is one Lua script, so it is atomic across
//! instances. Every revocation is published on `pc:revocations`; each instance applies it to
//! its in-memory view, and after a reconnect reloads every revocation before it reports ready.

use super::*;
use crate::config::Rate;
use crate::secret::Secret;
use crate::tokens::revocation::RevocationView;
use ::redis::aio::{ConnectionManager, ConnectionManagerConfig};
use ::redis::{AsyncCommands, Script};
use futures_util::StreamExt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

const P: &str = "pc:";
const CHANNEL: &str = "pc:revocations";

/// Revoke one family: mark it, remember the revocation, publish it. Used by both scripts.
const REVOKE_FN: &str = r#"
local function revoke(p, sid, until_)
  local raw = redis.call('GET', p..'fam:'..sid)
  if raw then
    local f = cjson.decode(raw)
    if not f.revoked then
      f.revoked = true
      redis.call('SET', p..'fam:'..sid, cjson.encode(f), 'KEEPTTL')
    end
  end
  local k = p..'rev:s:'..sid
  local prev = tonumber(redis.call('GET', k) or '0')
  if until_ > prev then
    redis.call('SET', k, until_)
    redis.call('EXPIREAT', k, until_ + 1)
  end
  redis.call('PUBLISH', p..'revocations', 's:'..sid..':'..until_)
end
"#;

const ROTATE: &str = r#"
local p, presented, successor = ARGV[1], ARGV[2], ARGV[3]
local now, refresh_ttl, grace = tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6])
local revoke_user, revocation_ttl = ARGV[7], tonumber(ARGV[8])
local sid = redis.call('GET', p..'tok:'..presented)
if not sid then return {'invalid'} end
local raw = redis.call('GET', p..'fam:'..sid)
if not raw then return {'invalid'} end
local f = cjson.decode(raw)
if f.revoked or now >= math.min(f.idle_exp, f.max_exp) then return {'invalid'} end
if f.current == presented then
  f.previous = f.current
  f.current = successor
  f.rotated_at = now
  f.idle_exp = math.min(now + refresh_ttl, f.max_exp)
  local ttl = f.max_exp - now + 1
  local enc = cjson.encode(f)
  redis.call('SET', p..'fam:'..sid, enc, 'EX', ttl)
  redis.call('SET', p..'tok:'..successor, sid, 'EX', ttl)
  return {'rotated', enc, '0'}
end
if f.previous == presented and f.current == successor and now <= f.rotated_at + grace then
  return {'rotated', raw, '1'}
end
local until_ = now + revocation_ttl
local sids
if revoke_user == '1' then sids = redis.call('SMEMBERS', p..'user:'..f.user) else sids = {sid} end
for _, s in ipairs(sids) do revoke(p, s, until_) end
local out = {'reused', f.user}
for _, s in ipairs(sids) do table.insert(out, s) end
return out
"#;

const REVOKE: &str = r#"
local p, kind, until_ = ARGV[1], ARGV[2], tonumber(ARGV[4])
if kind == 's' then
  revoke(p, ARGV[3], until_)
  return {ARGV[3]}
elseif kind == 'u' then
  local sids = redis.call('SMEMBERS', p..'user:'..ARGV[3])
  for _, s in ipairs(sids) do revoke(p, s, until_) end
  return sids
else
  local k = p..'rev:j:'..ARGV[3]
  local prev = tonumber(redis.call('GET', k) or '0')
  if until_ > prev then
    redis.call('SET', k, until_)
    redis.call('EXPIREAT', k, until_ + 1)
  end
  redis.call('PUBLISH', p..'revocations', 'j:'..ARGV[3]..':'..until_)
  return {ARGV[3]}
end
"#;

/// Sliding window: drop old events, count, maybe add one. Returns {allowed, retry_after}.
const RATE: &str = r#"
local k, now, window, limit, add = KEYS[1], tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]), ARGV[4]
redis.call('ZREMRANGEBYSCORE', k, '-inf', now - window)
local n = redis.call('ZCARD', k)
if n >= limit then
  local oldest = tonumber(redis.call('ZRANGE', k, 0, 0, 'WITHSCORES')[2])
  return {0, math.max(1, oldest + window - now)}
end
if add == '1' then
  redis.call('ZADD', k, now, ARGV[5])
  redis.call('EXPIRE', k, window + 1)
end
return {1, 0}
"#;

/// Redis-backed store.
pub struct RedisStore {
    conn: ConnectionManager,
    client: ::redis::Client,
    rotate: Script,
    revoke: Script,
    rate: Script,
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
async fn scan_keys(c: &mut ConnectionManager, pattern: String) -> Result<Vec<String>, StoreError> {
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
    /// Connect lazily (the gateway starts even while Redis is down, and reports not ready).
    pub fn open(url: &Secret<String>, max_staleness: Duration) -> Result<Self, StoreError> {
        let client = ::redis::Client::open(url.expose().as_str()).map_err(|_| {
            StoreError::Unavailable("store.redis_url: not a valid redis:// URL".into())
        })?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_millis(1000)))
            .set_response_timeout(Some(Duration::from_millis(1000)))
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_millis(500));
        let conn = super::runtime()
            .block_on(async { ConnectionManager::new_lazy_with_config(client.clone(), config) })
            .map_err(unavailable)?;
        Ok(RedisStore {
            conn,
            client,
            rotate: Script::new(&format!("{REVOKE_FN}{ROTATE}")),
            revoke: Script::new(&format!("{REVOKE_FN}{REVOKE}")),
            rate: Script::new(RATE),
            synced: AtomicBool::new(false),
            last_ok: AtomicU64::new(0),
            max_staleness: max_staleness.as_secs(),
        })
    }

    fn conn(&self) -> ConnectionManager {
        self.conn.clone()
    }

    async fn revoke_call(
        &self,
        kind: &str,
        id: &str,
        until: u64,
    ) -> Result<Vec<String>, StoreError> {
        self.revoke
            .prepare_invoke()
            .arg(P)
            .arg(kind)
            .arg(id)
            .arg(until)
            .invoke_async(&mut self.conn())
            .await
            .map_err(unavailable)
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

    fn apply(view: &RevocationView, msg: &str) {
        let mut parts = msg.rsplitn(2, ':');
        let (Some(until), Some(rest)) = (parts.next(), parts.next()) else {
            return;
        };
        let Ok(until) = until.parse::<u64>() else {
            return;
        };
        match rest.split_once(':') {
            Some(("s", sid)) => view.revoke_sid(sid, until),
            Some(("j", jti)) => view.revoke_jti(jti, until),
            _ => {}
        }
    }

    /// One subscription lifetime: subscribe, reload every revocation, then apply messages
    /// while pinging; returns when the connection is lost.
    async fn watch_once(&self, view: &RevocationView) -> Result<(), StoreError> {
        let mut pubsub = self.client.get_async_pubsub().await.map_err(unavailable)?;
        pubsub.subscribe(CHANNEL).await.map_err(unavailable)?;
        // Subscribed first, then loaded: nothing published in between is missed.
        for r in self.revocations(unix_now()).await? {
            match r.kind {
                RevocationKind::Jti => view.revoke_jti(&r.id, r.until),
                RevocationKind::Sid => view.revoke_sid(&r.id, r.until),
            }
        }
        self.synced.store(true, Ordering::SeqCst);
        self.last_ok.store(unix_now(), Ordering::SeqCst);
        tracing::info!(target: "portcullis::store", "redis revocation view synchronised");
        let mut messages = pubsub.on_message();
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        loop {
            tokio::select! {
                msg = messages.next() => match msg {
                    Some(m) => {
                        if let Ok(text) = m.get_payload::<String>() {
                            Self::apply(view, &text);
                        }
                    }
                    None => return Err(StoreError::Unavailable("redis: subscription closed".into())),
                },
                _ = tick.tick() => {
                    let pong: Result<String, _> = ::redis::cmd("PING").query_async(&mut self.conn()).await;
                    match pong {
                        Ok(_) => self.last_ok.store(unix_now(), Ordering::SeqCst),
                        Err(e) => return Err(unavailable(e)),
                    }
                }
            }
        }
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
        let mut c = self.conn();
        let _: bool = c
            .set_nx(format!("{P}key"), &fresh[..])
            .await
            .map_err(unavailable)?;
        let stored: Vec<u8> = c.get(format!("{P}key")).await.map_err(unavailable)?;
        stored
            .as_slice()
            .try_into()
            .map_err(|_| StoreError::Corrupt("redis: rotation key has the wrong length".into()))
    }

    async fn create_family(&self, f: &Family) -> Result<(), StoreError> {
        let ttl = f.max_exp.saturating_sub(unix_now()).max(1) + 1;
        let json = serde_json::to_string(f).expect("family serializes");
        ::redis::pipe()
            .atomic()
            .set_ex(format!("{P}tok:{}", f.current), &f.sid, ttl)
            .ignore()
            .set_ex(format!("{P}fam:{}", f.sid), json, ttl)
            .ignore()
            .sadd(format!("{P}user:{}", f.user), &f.sid)
            .ignore()
            .query_async::<()>(&mut self.conn())
            .await
            .map_err(unavailable)
    }

    async fn rotate(
        &self,
        presented: &str,
        successor: &str,
        now: u64,
        policy: &RotationPolicy,
    ) -> Result<RotateOutcome, StoreError> {
        let out: Vec<String> = self
            .rotate
            .prepare_invoke()
            .arg(P)
            .arg(presented)
            .arg(successor)
            .arg(now)
            .arg(policy.refresh_ttl)
            .arg(policy.reuse_grace)
            .arg(if policy.revoke_user_on_reuse {
                "1"
            } else {
                "0"
            })
            .arg(policy.revocation_ttl)
            .invoke_async(&mut self.conn())
            .await
            .map_err(unavailable)?;
        match out.first().map(String::as_str) {
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
        }
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
        loop {
            if let Err(e) = self.watch_once(&view).await {
                if self.synced.swap(false, Ordering::SeqCst) {
                    tracing::error!(target: "portcullis::store", error = %e, "redis connection lost; resynchronising");
                }
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    fn revocations_fresh(&self) -> bool {
        self.synced.load(Ordering::SeqCst)
            || unix_now().saturating_sub(self.last_ok.load(Ordering::SeqCst)) <= self.max_staleness
    }

    async fn rate_limit(
        &self,
        key: &str,
        rate: Rate,
        now: u64,
        add: bool,
    ) -> Option<Result<Result<(), u64>, StoreError>> {
        Some(self.rate(key, rate, now, add).await)
    }
}
