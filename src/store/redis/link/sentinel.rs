//! Redis Sentinel: which master the sentinels name, and following the failovers they
//! announce. Lookups ask every sentinel side by side and trust the newest configuration;
//! announcements move the [`Link`] to the new master, and fence writes while one is under way.

use super::{timed_out, Link, Target, CONNECT_TIMEOUT, RESOLVE_TIMEOUT, RESPONSE_TIMEOUT};
use crate::store::redis::KindStr;
use ::redis::{
    AsyncConnectionConfig, Client, ErrorKind, RedisError, RedisResult, ServerErrorKind, Value,
};
use futures_util::StreamExt;
use std::collections::HashMap;
use std::time::{Duration, Instant};

/// Connecting to a sentinel, and its answer, each within this long; the sentinels are asked
/// side by side, so one that is down costs a lookup no more than this.
const SENTINEL_TIMEOUT: Duration = Duration::from_millis(500);
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
pub(super) fn usable_master(fields: &HashMap<String, String>) -> Option<(u64, String, u16)> {
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
pub(super) async fn find_master(master_name: &str, urls: &[String]) -> RedisResult<(String, u16)> {
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
pub(super) fn choose(named: Vec<(u64, String, u16)>) -> Option<(String, u16)> {
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

impl Link {
    /// Replicas stopped acknowledging writes: maybe because this master was replaced and
    /// they follow another one now, unnoticed (a missed announcement, a sentinel cut off). Ask
    /// the sentinels, at most once a second, and move when they name another master.
    pub(in crate::store::redis) async fn check_master(&self) {
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
    pub(in crate::store::redis) async fn follow_failovers(&self) {
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
                        error = %KindStr::kind_str(&e),
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
    pub(in crate::store::redis) fn failing_over(&self) -> bool {
        let now = Instant::now();
        self.fences
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .flatten()
            .any(|until| *until > now)
    }
}
