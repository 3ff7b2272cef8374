//! How many client connections may be open at once, and the open-file limit that bounds it.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Instant;

/// Client connections open at once, over all listeners: `limits.max_connections`, and never
/// more than the open-file limit allows with a descriptor to spare for each one's upstream
/// connection. So accept() does not fail for want of descriptors (Pingora's accept loop logs
/// an error and stops accepting for a second each time), and the clients already in are
/// still proxied. The open-file limit is read again once a second, so a limit changed at run
/// time (`prlimit`) takes effect.
pub struct ConnectionCap {
    configured: usize,
    open: AtomicUsize,
    limit: AtomicUsize,
    /// The open-file limit the current `limit` was worked out for.
    files: AtomicU64,
    /// Seconds since `epoch` when the open-file limit was last read.
    checked_at: AtomicU64,
    /// Closed since the last warning.
    dropped: AtomicU64,
    /// Seconds since `epoch`, plus one, of the last warning (0: none yet).
    warned_at: AtomicU64,
    epoch: Instant,
}

/// A connection within the cap, released when dropped.
pub struct ConnectionSlot(Arc<ConnectionCap>);

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Relaxed);
    }
}

impl ConnectionCap {
    pub fn new(max_connections: usize) -> Arc<Self> {
        Arc::new(ConnectionCap {
            configured: max_connections,
            open: AtomicUsize::new(0),
            limit: AtomicUsize::new(max_connections),
            files: AtomicU64::new(0),
            // Worked out at the first connection, once every service has opened its files.
            checked_at: AtomicU64::new(u64::MAX),
            dropped: AtomicU64::new(0),
            warned_at: AtomicU64::new(0),
            epoch: Instant::now(),
        })
    }

    /// A slot for a new connection, or `None`: over the cap, close it at once.
    pub fn admit(self: &Arc<Self>) -> Option<ConnectionSlot> {
        let now = self.epoch.elapsed().as_secs();
        if self.checked_at.load(Relaxed) != now && self.checked_at.swap(now, Relaxed) != now {
            self.follow_open_file_limit();
        }
        let limit = self.limit.load(Relaxed);
        if self.open.fetch_add(1, Relaxed) < limit {
            return Some(ConnectionSlot(Arc::clone(self)));
        }
        self.open.fetch_sub(1, Relaxed);
        self.dropped.fetch_add(1, Relaxed);
        self.warn_at_most_once_a_second(now, limit);
        None
    }

    pub fn open(&self) -> usize {
        self.open.load(Relaxed)
    }

    /// When the open-file limit has changed: of the descriptors it allows beyond those open
    /// for something else than clients (runtimes, listeners, files), half for clients and
    /// half for their upstream connections.
    fn follow_open_file_limit(&self) {
        let Some(files) = open_file_limit() else {
            return;
        };
        if self.files.swap(files, Relaxed) == files {
            return;
        }
        let in_use = open_descriptors().unwrap_or(0);
        let others = in_use.saturating_sub(self.open() as u64);
        let budget = usize::try_from(files.saturating_sub(others) / 2)
            .unwrap_or(usize::MAX)
            .max(1);
        let limit = self.configured.min(budget);
        self.limit.store(limit, Relaxed);
        if limit < self.configured / 2 {
            tracing::warn!(
                target: "portcullis::limits",
                max_connections = self.configured,
                open_files = files,
                limit,
                "the open-file limit (ulimit -n) allows far fewer client connections than limits.max_connections"
            );
        }
    }

    fn warn_at_most_once_a_second(&self, now: u64, limit: usize) {
        let stamp = now + 1;
        let last = self.warned_at.load(Relaxed);
        if last == stamp
            || self
                .warned_at
                .compare_exchange(last, stamp, Relaxed, Relaxed)
                .is_err()
        {
            return;
        }
        let dropped = self.dropped.swap(0, Relaxed);
        let bound = if limit < self.configured {
            "open-file limit"
        } else {
            "limits.max_connections"
        };
        tracing::warn!(
            target: "portcullis::limits",
            dropped,
            limit,
            bound,
            "client connection limit reached: new connections are closed at once"
        );
    }
}

fn open_file_limit() -> Option<u64> {
    let mut rl = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes only into the struct it is given.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut rl) } != 0
        || rl.rlim_cur == libc::RLIM_INFINITY
    {
        return None;
    }
    Some(rl.rlim_cur)
}

/// How many descriptors the process has open (Linux).
fn open_descriptors() -> Option<u64> {
    let dir = std::fs::read_dir("/proc/self/fd").ok()?;
    Some(dir.count() as u64)
}

/// Raise the soft open-file limit to the hard one, as nginx's `worker_rlimit_nofile` and Go's
/// runtime do: the usual soft default (1024) is far below `limits.max_connections`, while the
/// hard limit rarely is. Nothing here uses `select()`, the reason for the low default.
pub fn raise_open_file_limit() {
    let mut rl = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit read or write only the struct they are given.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut rl) != 0
            || rl.rlim_cur >= rl.rlim_max
            || rl.rlim_max == libc::RLIM_INFINITY
        {
            return;
        }
        rl.rlim_cur = rl.rlim_max;
        if libc::setrlimit(libc::RLIMIT_NOFILE, &rl) != 0 {
            tracing::debug!(target: "portcullis::limits", "could not raise the open-file limit");
        }
    }
}
