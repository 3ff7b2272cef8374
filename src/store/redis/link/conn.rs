//! The two ways commands reach the master: the shared connection, replaced whenever the
//! master is, and a connection pinned for a write and the `WAIT` that must follow it there.
//! Either reports its failures to the [`Link`], which decides whether the master is lost.

use super::{Link, Live};
use ::redis::aio::{ConnectionLike, MultiplexedConnection};
use ::redis::{Cmd, Pipeline, RedisFuture, Value};
use std::sync::Arc;

/// `out`, once the link has heard of its failure (it decides whether the master is lost).
fn reported<T>(
    link: &Link,
    live: &Arc<Live>,
    carries_wait: bool,
    out: ::redis::RedisResult<T>,
) -> ::redis::RedisResult<T> {
    if let Err(e) = &out {
        link.failed(live, e, carries_wait);
    }
    out
}

/// Commands on the current master's shared connection, whichever master that is by then.
#[derive(Clone)]
pub(in crate::store::redis) struct Conn(pub(in crate::store::redis) Arc<Link>);

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        Box::pin(async move {
            let live = self.0.live().await?;
            let out = live.main.clone().send_packed_command(cmd).await;
            reported(&self.0, &live, false, out)
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
            let mut main = live.main.clone();
            let out = main.send_packed_commands(cmd, offset, count).await;
            reported(&self.0, &live, false, out)
        })
    }

    fn get_db(&self) -> i64 {
        self.0.db
    }
}

/// One connection to one master, kept for a write and the `WAIT` that must follow it there.
/// It never moves to another connection: a failure is reported, and the call fails.
pub(in crate::store::redis) struct Pinned {
    pub(super) link: Arc<Link>,
    pub(super) live: Arc<Live>,
    pub(super) conn: MultiplexedConnection,
    pub(super) carries_wait: bool,
}

impl ConnectionLike for Pinned {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        Box::pin(async move {
            let out = self.conn.send_packed_command(cmd).await;
            reported(&self.link, &self.live, self.carries_wait, out)
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
            reported(&self.link, &self.live, self.carries_wait, out)
        })
    }

    fn get_db(&self) -> i64 {
        self.link.db
    }
}
