//! WebSockets: upgrades are checked like any request (authentication, then `Origin`), only
//! `Upgrade: websocket` is allowed, and the open connections of a session are closed as soon
//! as the session or its access token is revoked (logout, reuse, logout-all, another instance).
//!
//! Closing works on the upstream socket: `shutdown(2)` ends Pingora's duplex loop, which then
//! closes the client side. The socket's local address is re-checked first, so a descriptor
//! number that was reused for another connection is never touched.

use crate::tokens::revocation::RevocationListener;
use std::collections::HashMap;
use std::mem::ManuallyDrop;
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::os::fd::{FromRawFd, RawFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

struct Conn {
    sid: String,
    jti: String,
    fd: RawFd,
    local: SocketAddr,
}

/// Open upgraded connections by registration id.
#[derive(Default)]
pub struct WsRegistry {
    conns: Mutex<HashMap<u64, Conn>>,
    next: AtomicU64,
}

/// The local address of `fd`, without taking ownership of it.
fn local_addr(fd: RawFd) -> Option<SocketAddr> {
    // SAFETY: the descriptor is borrowed for one call and never closed here (ManuallyDrop).
    let s = ManuallyDrop::new(unsafe { TcpStream::from_raw_fd(fd) });
    s.local_addr().ok()
}

impl WsRegistry {
    /// Track the upstream socket `fd` of an upgraded request of session `sid`.
    pub fn register(&self, sid: &str, jti: &str, fd: RawFd) -> Option<u64> {
        let local = local_addr(fd)?;
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        self.conns.lock().unwrap_or_else(|e| e.into_inner()).insert(
            id,
            Conn {
                sid: sid.to_string(),
                jti: jti.to_string(),
                fd,
                local,
            },
        );
        Some(id)
    }

    pub fn unregister(&self, id: u64) {
        self.conns
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&id);
    }

    pub fn len(&self) -> usize {
        self.conns.lock().map(|c| c.len()).unwrap_or(0)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn close_where(&self, pred: impl Fn(&Conn) -> bool) {
        let conns = self.conns.lock().unwrap_or_else(|e| e.into_inner());
        for (id, c) in conns.iter().filter(|(_, c)| pred(c)) {
            if local_addr(c.fd) != Some(c.local) {
                continue; // the connection is already gone and the number reused
            }
            // SAFETY: as in `local_addr`; shutdown does not close the descriptor.
            let s = ManuallyDrop::new(unsafe { TcpStream::from_raw_fd(c.fd) });
            let _ = s.shutdown(Shutdown::Both);
            tracing::warn!(target: "portcullis::audit", event = "websocket_closed", sid = %c.sid, connection = id, reason = "session revoked");
        }
    }
}

impl RevocationListener for WsRegistry {
    fn revoked_jti(&self, jti: &str) {
        self.close_where(|c| !c.jti.is_empty() && c.jti == jti);
    }

    fn revoked_sid(&self, sid: &str) {
        self.close_where(|c| !c.sid.is_empty() && c.sid == sid);
    }
}
