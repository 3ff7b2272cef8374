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

mod conn;
mod sentinel;

#[cfg(test)]
mod tests;

pub(super) use conn::{Conn, Pinned};

use crate::secret::Secret;
use crate::store::StoreError;
use ::redis::aio::MultiplexedConnection;
use ::redis::{
    AsyncConnectionConfig, Client, ConnectionAddr, ErrorKind, IntoConnectionInfo,
    RedisConnectionInfo, RedisError, RedisResult, Role, ServerErrorKind,
};
use arc_swap::ArcSwapOption;
use sentinel::find_master;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Opening a TCP connection to a Redis node (or a sentinel) gives up after this long.
const CONNECT_TIMEOUT: Duration = Duration::from_millis(1000);
/// A command without an answer after this long counts as a lost master.
const RESPONSE_TIMEOUT: Duration = Duration::from_millis(1000);
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
