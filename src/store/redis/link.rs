//! The connection to the current Redis master.
//!
//! With a plain `store.redis_url` the master is that address. With `store.redis_sentinel` it
//! is whichever node the sentinels name (the newest configuration epoch wins: see
//! [`find_master`]), and it is looked up again whenever the connection fails, a write is
//! refused as read-only (the node was demoted), replicas stop acknowledging writes, or a
//! sentinel announces `+switch-master`: after a failover the gateway follows the new master
//! by itself, without a restart or an operator. The URL still gives the database number and
//! the credentials; the sentinels themselves are reached without a password.
//!
//! From a sentinel's `+try-failover` until the new master is announced, writes fail (503)
//! instead of landing on a master that is being replaced ([`Link::failing_over`]): in an
//! operator's failover the old master keeps accepting writes, and a replica not yet moved to
//! the new master would acknowledge them, only to discard them when it moves.
//!
//! Commands share one multiplexed connection ([`Conn`]). Writes whose answer must wait for
//! replicas go over a few connections of their own instead ([`Pinned`]): `WAIT` counts the
//! replicas holding the writes of the connection it is sent on, and blocks that connection
//! until they answer, so it must neither run on a connection that was replaced after the
//! write nor hold up readiness probes, reads and rate limits queued behind it.
//!
//! A reconnection bumps the generation ([`Link::generations`]): the revocation watcher then
//! subscribes on the new master and reloads every revocation before it reports ready again.

use crate::secret::Secret;
use crate::store::StoreError;
use ::redis::aio::{ConnectionLike, MultiplexedConnection};
use ::redis::{
    AsyncConnectionConfig, Client, Cmd, ConnectionAddr, ErrorKind, IntoConnectionInfo, Pipeline,
    RedisConnectionInfo, RedisError, RedisFuture, RedisResult, Role, ServerErrorKind, Value,
};
use arc_swap::ArcSwapOption;
use futures_util::StreamExt;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Opening a TCP connection to a Redis node (or a sentinel) gives up after this long.
const CONNECT_TIMEOUT: Duration = Duration::from_millis(1000);
/// A command without an answer after this long counts as a lost master.
const RESPONSE_TIMEOUT: Duration = Duration::from_millis(1000);
/// Connecting to a sentinel, and its answer, each within this long; the sentinels are asked
/// side by side, so one that is down costs a lookup no more than this.
const SENTINEL_TIMEOUT: Duration = Duration::from_millis(500);
/// Finding the master (asking the sentinels, checking its role) and connecting to it, whole.
/// Below the default `store.timeout` (2 s), so that a lookup that fails by itself is
/// remembered (see [`RETRY_AFTER`]) rather than cut short and started again by every call.
const RESOLVE_TIMEOUT: Duration = Duration::from_millis(1500);
/// After a failed attempt to reach the master, callers get that failure at once for this
/// long instead of each starting an attempt of its own: during a failover every request
/// fails fast (503) while the sentinels are asked at most ten times a second.
const RETRY_AFTER: Duration = Duration::from_millis(100);
/// How long `WAIT` lets replicas take to acknowledge a write before the call fails. A replica
/// on the same network answers within milliseconds; one that takes half a second is not
/// keeping up, and the client is better served by a quick 503 than by a long hang.
pub(super) const WAIT_TIMEOUT_MS: u64 = 500;
/// Connections reserved for writes that wait for replicas: each `WAIT` holds one of them
/// until the replicas answer, so a few let concurrent rotations proceed side by side.
pub(super) const DURABLE_LANES: usize = 4;
/// The sentinel channel that announces a completed failover:
/// `<master-name> <old-ip> <old-port> <new-ip> <new-port>`.
const SWITCH_MASTER: &str = "+switch-master";
/// A sentinel starts failing a master over: `master <master-name> <ip> <port>`.
const TRY_FAILOVER: &str = "+try-failover";
/// A sentinel gave its failover up (same form).
const FAILOVER_ABORTED: [&str; 3] = [
    "-failover-abort-not-elected",
    "-failover-abort-no-good-slave",
    "-failover-abort-slave-timeout",
];
/// Writes wait at most this long for a failover announced as started to end (should the
/// announcement of its end be missed).
const FENCE_LIMIT: Duration = Duration::from_secs(10);

/// Where the master is found.
enum Target {
    Fixed(Client),
    Sentinel {
        master_name: String,
        /// `redis://host:port` of each sentinel.
        urls: Vec<String>,
        /// Database and credentials (from `store.redis_url`) for the node the sentinels name.
        node: RedisConnectionInfo,
    },
}

/// The state behind the lookup lock.
struct Resolver {
    /// The last failed attempt, answered to callers until [`RETRY_AFTER`] has passed.
    failure: Option<(Instant, RedisError)>,
    /// Whether the master was unreachable at the last attempt (to log each outage once).
    down: bool,
    /// When the sentinels were last asked whether the master moved ([`Link::check_master`]).
    checked: Option<Instant>,
}

/// Connections to one master, replaced whole when it is lost.
pub(super) struct Live {
    /// Which connection this is: a new one means a new master, or the same after an outage.
    pub(super) gen: u64,
    /// For the revocation subscription, which needs a connection of its own.
    pub(super) client: Client,
    main: MultiplexedConnection,
    lanes: Vec<MultiplexedConnection>,
    next_lane: AtomicUsize,
    /// `host:port`, for logs (never the URL: it may carry a password).
    addr: String,
}

/// The way to the current master.
pub(super) struct Link {
    target: Target,
    resolver: tokio::sync::Mutex<Resolver>,
    live: ArcSwapOption<Live>,
    /// Completed attempts to connect: a caller that waited for somebody else's attempt takes
    /// its outcome rather than starting another.
    attempts: AtomicU64,
    gens: AtomicU64,
    /// The generation in use, 0 while there is none.
    gen_tx: tokio::sync::watch::Sender<u64>,
    db: i64,
    lanes: usize,
    /// Per sentinel: it announced a failover of the master, writes wait until then.
    fences: std::sync::Mutex<Vec<Option<Instant>>>,
}

fn timed_out(what: &'static str) -> RedisError {
    RedisError::from(std::io::Error::new(std::io::ErrorKind::TimedOut, what))
}

fn config(response_timeout: Duration) -> AsyncConnectionConfig {
    AsyncConnectionConfig::new()
        .set_connection_timeout(Some(CONNECT_TIMEOUT))
        .set_response_timeout(Some(response_timeout))
}

/// What one sentinel knows of the master: its configuration epoch and address, when it
/// considers it usable (`None`: it does not, or does not know the name).
async fn ask_sentinel(url: &str, master_name: &str) -> RedisResult<Option<(u64, String, u16)>> {
    let client = Client::open(url)?;
    let config = AsyncConnectionConfig::new()
        .set_connection_timeout(Some(SENTINEL_TIMEOUT))
        .set_response_timeout(Some(SENTINEL_TIMEOUT));
    let mut c = client
        .get_multiplexed_async_connection_with_config(&config)
        .await?;
    let reply: RedisResult<HashMap<String, String>> = ::redis::cmd("SENTINEL")
        .arg("MASTER")
        .arg(master_name)
        .query_async(&mut c)
        .await;
    let fields = match reply {
        Ok(fields) => fields,
        // "No such master with that name": this sentinel does not watch it (yet).
        Err(e) if e.kind() == ErrorKind::Server(ServerErrorKind::ResponseError) => return Ok(None),
        Err(e) => return Err(e),
    };
    Ok(usable_master(&fields))
}

/// From a `SENTINEL MASTER` answer: (config epoch, ip, port) of a master that is neither
/// known to be down nor being replaced (`failover_in_progress`: the sentinel leading a
/// failover names the old master until the very end, while it still answers as a master).
/// `disconnected` (the sentinel's own link) does not count: a sentinel that has just switched
/// to a new master reports it so until it has connected, and the gateway checks the node's
/// role itself anyway.
fn usable_master(fields: &HashMap<String, String>) -> Option<(u64, String, u16)> {
    let flags: Vec<&str> = fields.get("flags")?.split(',').collect();
    let unusable = |f: &&str| matches!(*f, "s_down" | "o_down" | "failover_in_progress");
    if !flags.contains(&"master") || flags.iter().any(unusable) {
        return None;
    }
    let port = fields.get("port")?.parse().ok()?;
    let epoch = fields
        .get("config-epoch")
        .and_then(|e| e.parse().ok())
        .unwrap_or(0);
    Some((epoch, fields.get("ip")?.clone(), port))
}

/// The master the sentinels name. Asking them in turn and taking the first answer is not
/// enough: sentinels switch to a new master at different moments, and an old master still
/// answers as a master until it is demoted. See [`choose`].
async fn find_master(master_name: &str, urls: &[String]) -> RedisResult<(String, u16)> {
    let answers =
        futures_util::future::join_all(urls.iter().map(|u| ask_sentinel(u, master_name))).await;
    let mut named = Vec::new();
    let mut failure = None;
    for answer in answers {
        match answer {
            Ok(Some(n)) => named.push(n),
            Ok(None) => {}
            Err(e) => failure = Some(e),
        }
    }
    match (choose(named), failure) {
        (Some(master), _) => Ok(master),
        (None, Some(e)) => Err(e),
        (None, None) => Err(RedisError::from((
            ErrorKind::MasterNameNotFoundBySentinel,
            "no sentinel names a master that is up",
        ))),
    }
}

/// Of the masters the sentinels name (config epoch, ip, port; in the configured order of the
/// sentinels): the newest configuration, then the address most of them name, then the first.
fn choose(named: Vec<(u64, String, u16)>) -> Option<(String, u16)> {
    let newest = named.iter().map(|n| n.0).max()?;
    let current: Vec<(String, u16)> = named
        .into_iter()
        .filter(|n| n.0 == newest)
        .map(|(_, ip, port)| (ip, port))
        .collect();
    let votes = |a: &(String, u16)| current.iter().filter(|b| *b == a).count();
    let most = current.iter().map(votes).max()?;
    current.iter().find(|a| votes(a) == most).cloned()
}

/// Whether `e` means the connection no longer reaches a usable master. A timeout on a
/// connection that carries `WAIT` only means the replicas were slow, not that the master is.
fn lost_master(e: &RedisError, carries_wait: bool) -> bool {
    if e.kind() == ErrorKind::Server(ServerErrorKind::ReadOnly) {
        return true;
    }
    if e.is_timeout() {
        return !carries_wait;
    }
    e.is_io_error() || e.is_unrecoverable_error()
}

/// The shared connection and `lanes` reserved ones to the node `client` names; with
/// `check_role`, only if it is a master (one the sentinels just named may not be yet, or no
/// longer).
async fn open(
    client: Client,
    lanes: usize,
    check_role: bool,
) -> RedisResult<(Client, MultiplexedConnection, Vec<MultiplexedConnection>)> {
    let mut main = client
        .get_multiplexed_async_connection_with_config(&config(RESPONSE_TIMEOUT))
        .await?;
    if check_role {
        let role: Role = ::redis::cmd("ROLE").query_async(&mut main).await?;
        if !matches!(role, Role::Primary { .. }) {
            return Err(RedisError::from((
                ErrorKind::MasterNameNotFoundBySentinel,
                "the node the sentinels name is not a master",
            )));
        }
    }
    let lane_timeout = RESPONSE_TIMEOUT + Duration::from_millis(WAIT_TIMEOUT_MS);
    let mut reserved = Vec::with_capacity(lanes);
    for _ in 0..lanes {
        reserved.push(
            client
                .get_multiplexed_async_connection_with_config(&config(lane_timeout))
                .await?,
        );
    }
    Ok((client, main, reserved))
}

impl Link {
    /// Nothing is connected yet: the gateway starts while Redis is down and reports not ready.
    pub(super) fn new(
        url: &Secret<String>,
        sentinel: Option<&crate::config::Sentinel>,
        lanes: usize,
    ) -> Result<Self, StoreError> {
        let client = Client::open(url.expose().as_str()).map_err(|_| {
            StoreError::Unavailable("store.redis_url: not a valid redis:// URL".into())
        })?;
        let db = client.get_connection_info().redis_settings().db();
        let target = match sentinel {
            None => Target::Fixed(client),
            Some(s) => {
                let urls: Vec<String> =
                    s.addresses.iter().map(|a| format!("redis://{a}")).collect();
                if urls.iter().any(|u| Client::open(u.as_str()).is_err()) {
                    return Err(StoreError::Unavailable(
                        "store.redis_sentinel.addresses: not valid host:port addresses".into(),
                    ));
                }
                Target::Sentinel {
                    master_name: s.master_name.clone(),
                    urls,
                    node: client.get_connection_info().redis_settings().clone(),
                }
            }
        };
        let sentinels = match &target {
            Target::Sentinel { urls, .. } => urls.len(),
            Target::Fixed(_) => 0,
        };
        Ok(Link {
            target,
            resolver: tokio::sync::Mutex::new(Resolver {
                failure: None,
                down: false,
                checked: None,
            }),
            live: ArcSwapOption::empty(),
            attempts: AtomicU64::new(0),
            gens: AtomicU64::new(0),
            gen_tx: tokio::sync::watch::channel(0).0,
            db,
            lanes,
            fences: std::sync::Mutex::new(vec![None; sentinels]),
        })
    }

    /// The generation in use (0 while there is none), and every change of it.
    pub(super) fn generations(&self) -> tokio::sync::watch::Receiver<u64> {
        self.gen_tx.subscribe()
    }

    /// The current master's connections, connecting (through the sentinels) when there are
    /// none.
    pub(super) async fn live(&self) -> RedisResult<Arc<Live>> {
        if let Some(live) = self.live.load_full() {
            return Ok(live);
        }
        let seen = self.attempts.load(Ordering::SeqCst);
        let mut r = self.resolver.lock().await;
        if let Some(live) = self.live.load_full() {
            return Ok(live);
        }
        if let Some((at, e)) = &r.failure {
            if self.attempts.load(Ordering::SeqCst) != seen || at.elapsed() < RETRY_AFTER {
                return Err(e.clone());
            }
        }
        let outcome = match tokio::time::timeout(RESOLVE_TIMEOUT, self.connect()).await {
            Ok(outcome) => outcome,
            Err(_) => Err(timed_out("finding the redis master timed out")),
        };
        self.attempts.fetch_add(1, Ordering::SeqCst);
        match outcome {
            Ok(live) => {
                let live = Arc::new(live);
                tracing::info!(
                    target: "portcullis::store",
                    master = %live.addr,
                    sentinel = matches!(self.target, Target::Sentinel { .. }),
                    "redis master connected"
                );
                r.failure = None;
                r.down = false;
                self.live.store(Some(live.clone()));
                self.gen_tx.send_replace(live.gen);
                Ok(live)
            }
            Err(e) => {
                if !r.down {
                    r.down = true;
                    tracing::warn!(
                        target: "portcullis::store",
                        error = %super::KindStr::kind_str(&e),
                        "redis master unreachable; retrying"
                    );
                }
                r.failure = Some((Instant::now(), e.clone()));
                Err(e)
            }
        }
    }

    async fn connect(&self) -> RedisResult<Live> {
        let (client, check_role) = match &self.target {
            Target::Fixed(client) => (client.clone(), false),
            Target::Sentinel {
                master_name,
                urls,
                node,
            } => {
                let (ip, port) = find_master(master_name, urls).await?;
                let info = ConnectionAddr::Tcp(ip, port)
                    .into_connection_info()?
                    .set_redis_settings(node.clone());
                (Client::open(info)?, true)
            }
        };
        // Each connection's driver task runs where the connection is opened: on the store's
        // long-lived runtime, not on whichever request's runtime happened to need it.
        let (client, main, lanes) = crate::store::runtime()
            .spawn(open(client, self.lanes, check_role))
            .await
            .map_err(|_| {
                RedisError::from(std::io::Error::other("redis connection task failed"))
            })??;
        Ok(Live {
            gen: self.gens.fetch_add(1, Ordering::SeqCst) + 1,
            addr: client.get_connection_info().addr().to_string(),
            client,
            main,
            lanes,
            next_lane: AtomicUsize::new(0),
        })
    }

    /// Drop `live` if it is still the current connection (the next call connects anew);
    /// whether it was.
    fn forget(&self, live: &Arc<Live>) -> bool {
        let prev = self
            .live
            .compare_and_swap(&Some(live.clone()), None::<Arc<Live>>);
        let current = prev.as_ref().is_some_and(|p| Arc::ptr_eq(p, live));
        if current {
            self.gen_tx.send_replace(0);
        }
        current
    }

    /// A command on `live` failed with `e`: when that means the master is gone (or demoted),
    /// drop its connections so that the next call finds the master again.
    fn failed(&self, live: &Arc<Live>, e: &RedisError, carries_wait: bool) {
        if lost_master(e, carries_wait) && self.forget(live) {
            tracing::warn!(
                target: "portcullis::store",
                master = %live.addr,
                error = %super::KindStr::kind_str(e),
                "redis master connection lost; reconnecting"
            );
        }
    }

    /// A sentinel announced `new_master` (`ip:port`): drop the connections to the old one
    /// (which may still answer, demoted) and connect to the new one now, before a request
    /// needs it. Already connected there (a request found it first): nothing to do.
    async fn renew(&self, new_master: &str) {
        {
            let mut r = self.resolver.lock().await;
            r.failure = None;
            if self
                .live
                .load()
                .as_ref()
                .is_some_and(|l| l.addr == new_master)
            {
                return;
            }
            if let Some(old) = self.live.swap(None) {
                self.gen_tx.send_replace(0);
                tracing::warn!(
                    target: "portcullis::store",
                    master = %old.addr,
                    "sentinel announced a new redis master; reconnecting"
                );
            }
        }
        let _ = self.live().await;
    }

    /// Replicas stopped acknowledging writes: maybe because this master was replaced and
    /// they follow another one now, unnoticed (a missed announcement, a sentinel cut off). Ask
    /// the sentinels, at most once a second, and move when they name another master.
    pub(super) async fn check_master(&self) {
        let Target::Sentinel {
            master_name, urls, ..
        } = &self.target
        else {
            return;
        };
        let Some(live) = self.live.load_full() else {
            return;
        };
        {
            let mut r = self.resolver.lock().await;
            if r.checked
                .is_some_and(|at| at.elapsed() < Duration::from_secs(1))
            {
                return;
            }
            r.checked = Some(Instant::now());
        }
        let named = tokio::time::timeout(RESOLVE_TIMEOUT, find_master(master_name, urls)).await;
        let Ok(Ok((ip, port))) = named else {
            return;
        };
        if format!("{ip}:{port}") != live.addr && self.forget(&live) {
            tracing::warn!(
                target: "portcullis::store",
                master = %live.addr,
                "the sentinels name another redis master; reconnecting"
            );
        }
    }

    /// Follow the failovers the sentinels announce, each sentinel on a subscription of its
    /// own (the one leading a failover announces its start); runs until the process ends.
    /// Without Sentinel there is nothing to follow.
    pub(super) async fn follow_failovers(&self) {
        let Target::Sentinel {
            master_name, urls, ..
        } = &self.target
        else {
            return std::future::pending().await;
        };
        let followers = urls.iter().enumerate().map(|(i, url)| async move {
            loop {
                if let Err(e) = self.follow(i, url, master_name).await {
                    tracing::debug!(
                        target: "portcullis::store",
                        sentinel = %url.trim_start_matches("redis://"),
                        error = %super::KindStr::kind_str(&e),
                        "sentinel subscription ended; subscribing again"
                    );
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        });
        futures_util::future::join_all(followers).await;
    }

    async fn follow(&self, sentinel: usize, url: &str, master_name: &str) -> RedisResult<()> {
        let client = Client::open(url)?;
        let pubsub = tokio::time::timeout(CONNECT_TIMEOUT, client.get_async_pubsub())
            .await
            .map_err(|_| timed_out("connecting to a sentinel timed out"))??;
        let (mut sink, mut messages) = pubsub.split();
        sink.subscribe(&[SWITCH_MASTER, TRY_FAILOVER][..]).await?;
        sink.subscribe(&FAILOVER_ABORTED[..]).await?;
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        loop {
            tokio::select! {
                msg = messages.next() => {
                    let Some(msg) = msg else {
                        return Err(timed_out("sentinel subscription closed"));
                    };
                    let text: String = msg.get_payload().unwrap_or_default();
                    let fields: Vec<&str> = text.split(' ').collect();
                    match (msg.get_channel_name(), &fields[..]) {
                        (SWITCH_MASTER, [name, _, _, ip, port]) if *name == master_name => {
                            self.renew(&format!("{ip}:{port}")).await;
                            self.fence_all(false);
                        }
                        (TRY_FAILOVER, ["master", name, ..]) if *name == master_name => {
                            tracing::warn!(
                                target: "portcullis::store",
                                sentinel = %url.trim_start_matches("redis://"),
                                "a redis failover started; logins and refreshes wait for it (503)"
                            );
                            self.fence(sentinel, true);
                        }
                        (aborted, ["master", name, ..])
                            if *name == master_name && FAILOVER_ABORTED.contains(&aborted) =>
                        {
                            self.fence(sentinel, false);
                        }
                        _ => {}
                    }
                }
                // A sentinel that stopped answering (without closing the connection) is
                // subscribed to again.
                _ = tick.tick() => {
                    tokio::time::timeout(RESPONSE_TIMEOUT, sink.ping::<Value>())
                        .await
                        .map_err(|_| timed_out("sentinel ping timed out"))??;
                }
            }
        }
    }

    /// Writes wait while `sentinel` fails the master over (at most [`FENCE_LIMIT`]).
    fn fence(&self, sentinel: usize, on: bool) {
        let mut fences = self.fences.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(slot) = fences.get_mut(sentinel) {
            *slot = on.then(|| Instant::now() + FENCE_LIMIT);
        }
    }

    fn fence_all(&self, on: bool) {
        for i in 0..self.fences.lock().map_or(0, |f| f.len()) {
            self.fence(i, on);
        }
    }

    /// A sentinel is failing the master over: a write now could land on the old master after
    /// a replica was promoted, be acknowledged by another replica still following it, and be
    /// discarded when that replica follows the new master. Writes wait (503) until the new
    /// master is announced.
    pub(super) fn failing_over(&self) -> bool {
        let now = Instant::now();
        self.fences
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .flatten()
            .any(|until| *until > now)
    }

    /// A connection for one write and the `WAIT` after it: one of the reserved ones when
    /// writes wait for replicas, else the shared one.
    pub(super) async fn pinned(self: &Arc<Self>) -> RedisResult<Pinned> {
        let live = self.live().await?;
        let (conn, carries_wait) = if live.lanes.is_empty() {
            (live.main.clone(), false)
        } else {
            let i = live.next_lane.fetch_add(1, Ordering::Relaxed) % live.lanes.len();
            (live.lanes[i].clone(), true)
        };
        Ok(Pinned {
            link: self.clone(),
            live,
            conn,
            carries_wait,
        })
    }
}

/// Commands on the current master's shared connection, whichever master that is by then.
#[derive(Clone)]
pub(super) struct Conn(pub(super) Arc<Link>);

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        Box::pin(async move {
            let live = self.0.live().await?;
            let out = live.main.clone().send_packed_command(cmd).await;
            if let Err(e) = &out {
                self.0.failed(&live, e, false);
            }
            out
        })
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        cmd: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        Box::pin(async move {
            let live = self.0.live().await?;
            let out = live
                .main
                .clone()
                .send_packed_commands(cmd, offset, count)
                .await;
            if let Err(e) = &out {
                self.0.failed(&live, e, false);
            }
            out
        })
    }

    fn get_db(&self) -> i64 {
        self.0.db
    }
}

/// One connection to one master, kept for a write and the `WAIT` that must follow it there.
/// It never moves to another connection: a failure is reported, and the call fails.
pub(super) struct Pinned {
    link: Arc<Link>,
    live: Arc<Live>,
    conn: MultiplexedConnection,
    carries_wait: bool,
}

impl ConnectionLike for Pinned {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        Box::pin(async move {
            let out = self.conn.send_packed_command(cmd).await;
            if let Err(e) = &out {
                self.link.failed(&self.live, e, self.carries_wait);
            }
            out
        })
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        cmd: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        Box::pin(async move {
            let out = self.conn.send_packed_commands(cmd, offset, count).await;
            if let Err(e) = &out {
                self.link.failed(&self.live, e, self.carries_wait);
            }
            out
        })
    }

    fn get_db(&self) -> i64 {
        self.link.db
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_counts_as_a_lost_master() {
        let io = |kind| RedisError::from(std::io::Error::new(kind, "test"));
        let readonly = RedisError::from((ErrorKind::Server(ServerErrorKind::ReadOnly), "READONLY"));
        let script = RedisError::from((ErrorKind::Server(ServerErrorKind::ResponseError), "ERR"));
        // Demoted, refused, reset: find the master again, whatever the connection carries.
        for carries_wait in [false, true] {
            assert!(lost_master(&readonly, carries_wait));
            assert!(lost_master(
                &io(std::io::ErrorKind::ConnectionRefused),
                carries_wait
            ));
            assert!(lost_master(
                &io(std::io::ErrorKind::ConnectionReset),
                carries_wait
            ));
            assert!(
                !lost_master(&script, carries_wait),
                "an error of the command itself"
            );
        }
        // A slow answer means a frozen or unreachable master, unless replicas were awaited.
        assert!(lost_master(&io(std::io::ErrorKind::TimedOut), false));
        assert!(!lost_master(&io(std::io::ErrorKind::TimedOut), true));
    }

    #[test]
    fn only_a_master_that_is_up_counts() {
        let answer = |flags: &str| {
            let fields: HashMap<String, String> = [
                ("name", "m"),
                ("ip", "10.0.0.7"),
                ("port", "6380"),
                ("flags", flags),
                ("config-epoch", "4"),
            ]
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
            usable_master(&fields)
        };
        assert_eq!(answer("master"), Some((4, "10.0.0.7".into(), 6380)));
        assert!(answer("master,disconnected").is_some(), "just switched to");
        for down in [
            "master,s_down",
            "master,s_down,o_down",
            "master,failover_in_progress",
            "slave",
        ] {
            assert_eq!(answer(down), None, "{down}");
        }
        assert_eq!(usable_master(&HashMap::new()), None, "no answer at all");
    }

    #[test]
    fn the_newest_configuration_then_the_most_named_master_wins() {
        let n = |epoch, port| (epoch, "127.0.0.1".to_string(), port);
        let at = |port| Some(("127.0.0.1".to_string(), port));
        assert_eq!(choose(vec![]), None);
        assert_eq!(choose(vec![n(1, 7000), n(2, 7001), n(1, 7000)]), at(7001));
        assert_eq!(choose(vec![n(2, 7000), n(2, 7001), n(2, 7001)]), at(7001));
        assert_eq!(choose(vec![n(2, 7000), n(2, 7001)]), at(7000));
    }

    #[test]
    fn the_url_gives_the_database_and_sentinels_need_host_port() {
        let url = Secret::new("redis://:pw@unused.invalid/3".to_string());
        let sentinel = crate::config::Sentinel {
            master_name: "m".into(),
            addresses: vec!["127.0.0.1:26379".into(), "[::1]:26380".into()],
        };
        let link = Link::new(&url, Some(&sentinel), 0).unwrap();
        assert_eq!(link.db, 3);
        let Target::Sentinel {
            master_name,
            urls,
            node,
        } = &link.target
        else {
            panic!("sentinel target");
        };
        assert_eq!(master_name, "m");
        assert_eq!(urls, &["redis://127.0.0.1:26379", "redis://[::1]:26380"]);
        assert_eq!((node.db(), node.password()), (3, Some("pw")));
        let Err(StoreError::Unavailable(e)) = Link::new(&Secret::new("nope".into()), None, 0)
        else {
            panic!("a bad URL is refused");
        };
        assert!(!e.contains("nope"), "{e}");
    }
}
