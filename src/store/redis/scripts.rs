//! The Lua scripts that make each multi-key change one atomic step on the server, whichever
//! instance sends it: rotation with its grace window and reuse revocation, revocation, and
//! the shared rate-limit window.

/// Revoke one family: mark it, remember the revocation, publish it. Used by both scripts.
pub(super) const REVOKE_FN: &str = r#"
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

pub(super) const ROTATE: &str = r#"
local p, presented, successor = ARGV[1], ARGV[2], ARGV[3]
local now, refresh_ttl, grace = tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6])
local revoke_user, revocation_ttl = ARGV[7], tonumber(ARGV[8])
local now_ms = tonumber(ARGV[9])
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
  f.rotated_at_ms = now_ms
  f.idle_exp = math.min(now + refresh_ttl, f.max_exp)
  local ttl = f.max_exp - now + 1
  local enc = cjson.encode(f)
  redis.call('SET', p..'fam:'..sid, enc, 'EX', ttl)
  redis.call('SET', p..'tok:'..successor, sid, 'EX', ttl)
  return {'rotated', enc, '0'}
end
-- grace is in milliseconds; a record without a matching rotated_at_ms (written by an older
-- version) counts from the start of its rotated_at second
local rotated_ms = f.rotated_at_ms
if not rotated_ms or math.floor(rotated_ms / 1000) ~= f.rotated_at then rotated_ms = f.rotated_at * 1000 end
if f.previous == presented and f.current == successor and now_ms <= rotated_ms + grace then
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

pub(super) const REVOKE: &str = r#"
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
pub(super) const RATE: &str = r#"
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

/// A step-up: the session's new authentication time and methods (a JSON array), kept with
/// the session's expiry. Returns 1, or 0 when the session is unknown, revoked or ended.
/// cjson cannot tell an empty array from an empty object and would write `{}`, which no
/// reader accepts as a list (the session could then neither be read nor rotated): an empty
/// list is left out of the record instead, as the gateway's own encoding leaves it out.
pub(super) const REAUTHENTICATE: &str = r#"
local raw = redis.call('GET', KEYS[1])
if not raw then return 0 end
local f = cjson.decode(raw)
local at = tonumber(ARGV[1])
if f.revoked or at >= math.min(f.idle_exp, f.max_exp) then return 0 end
f.auth_time = at
local amr = cjson.decode(ARGV[2])
if next(amr) == nil then f.amr = nil else f.amr = amr end
redis.call('SET', KEYS[1], cjson.encode(f), 'KEEPTTL')
return 1
"#;

/// Compare-and-set of one key: write ARGV[2] (delete when ARGV[3] is '1') only while the key
/// still holds ARGV[1] ('' for absent). Returns 1 when written.
pub(super) const COMPARE_AND_SET: &str = r#"
local now = redis.call('GET', KEYS[1]) or ''
if now ~= ARGV[1] then return 0 end
if ARGV[3] == '1' then redis.call('DEL', KEYS[1]) else redis.call('SET', KEYS[1], ARGV[2]) end
return 1
"#;
