//! Client connections before Pingora: lean idle keep-alive, the connection cap, and the
//! request head read within its limits (`client_limits/`).
//!
//! Pingora's HTTP/1 loop starts each request of a connection by allocating the whole request
//! future (everything a proxied request may need, about 14 KB) and then waits inside it for
//! the request's first byte, so an idle keep-alive connection holds that memory for as long
//! as it idles. This is the same loop (`ServerApp::process_new` for HTTP/1 in pingora-core),
//! except that it waits for the first byte in a future of a few hundred bytes, then reads the
//! request head itself, within `limits.max_header_bytes`, `limits.max_headers` and
//! `limits.header_timeout`, and only then hands the connection to Pingora with the head as
//! Pingora's parse buffer, so Pingora sees the request unchanged. HTTP/2 and custom protocols
//! keep Pingora's own handling.
//!
//! While waiting, the connection closes when it has been idle for `server.keepalive_timeout`
//! (default 60 s, Pingora's own) and at once when the server starts shutting down, as nginx
//! closes idle keep-alive connections on a graceful stop.

use super::client_limits::{
    read_head, refuse, ConnectionCap, Head, HeadLimits, LocalAnswers, Refusal,
};
use super::security_headers::Prepared;
use crate::config::Config;
use async_trait::async_trait;
use pingora::apps::{HttpPersistentSettings, HttpServerApp, ServerApp};
use pingora::protocols::http::ServerSession;
use pingora::protocols::{Stream, ALPN};
use pingora::server::ShutdownWatch;
use pingora::time::fast_timeout::fast_timeout;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::AsyncReadExt;

pub struct LeanIdle<A> {
    inner: Arc<A>,
    idle_timeout: Duration,
    head: HeadLimits,
    answers: LocalAnswers,
    connections: Arc<ConnectionCap>,
}

impl<A> LeanIdle<A> {
    /// `security_headers`: the global set, for the answers given before any route is known.
    pub fn new(inner: A, config: &Config, security_headers: &Prepared) -> Self {
        let limits = &config.limits;
        LeanIdle {
            inner: Arc::new(inner),
            idle_timeout: config.server.keepalive_timeout,
            head: HeadLimits {
                max_bytes: limits.max_header_bytes,
                max_headers: limits.max_headers,
                timeout: limits.header_timeout,
            },
            answers: LocalAnswers::new(security_headers),
            connections: ConnectionCap::new(limits.max_connections),
        }
    }

    /// The client connections open now: after SIGTERM, those with a request in flight.
    pub fn connections(&self) -> Arc<ConnectionCap> {
        Arc::clone(&self.connections)
    }
}

/// Wait until the client starts a request, then read its head. `Gone` also when the client
/// closed, failed or idled out first, or the server is shutting down.
async fn next_head(
    stream: &mut Stream,
    shutdown: &ShutdownWatch,
    idle_timeout: Duration,
    limits: &HeadLimits,
) -> Head {
    if *shutdown.borrow() {
        return Head::Gone;
    }
    let mut down = shutdown.clone();
    // `changed` can also fire for the initial `false`: only `true` (or a dropped sender) stops.
    let stopping = async move { while down.changed().await.is_ok() && !*down.borrow() {} };
    let request = async {
        let mut first = [0u8; 1];
        // Pingora's coarse timer (10 ms ticks, one shared clock thread): a tokio timer would
        // wake the runtime's driver through an eventfd write on every request.
        match fast_timeout(idle_timeout, stream.read(&mut first)).await {
            Ok(Ok(1)) => read_head(stream, first[0], limits).await,
            _ => Head::Gone,
        }
    };
    // As Pingora does while reading a head: a stopping server drops the connection.
    tokio::select! {
        biased;
        head = request => head,
        _ = stopping => Head::Gone,
    }
}

#[async_trait]
impl<A: HttpServerApp + Send + Sync + 'static> ServerApp for LeanIdle<A> {
    async fn process_new(
        self: &Arc<Self>,
        stream: Stream,
        shutdown: &ShutdownWatch,
    ) -> Option<Stream> {
        // Over the cap: the stream drops here, which closes it.
        let slot = self.connections.admit()?;
        let options = self.inner.server_options();
        let not_h1 = options.is_some_and(|o| o.h2c || o.force_custom)
            || matches!(
                stream.selected_alpn_proto(),
                Some(ALPN::H2) | Some(ALPN::Custom(_))
            );
        if not_h1 {
            let reused = ServerApp::process_new(&self.inner, stream, shutdown).await;
            drop(slot);
            return reused;
        }
        // Pingora's task for a connection is sized for its TLS handshake future (about 9 KB)
        // and would live as long as the connection. The connection moves to a task of its own,
        // sized for this loop only, and Pingora's task ends here.
        let this = Arc::clone(self);
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            let _slot = slot;
            this.serve_h1(stream, &shutdown).await
        });
        None
    }

    async fn cleanup(&self) {
        ServerApp::cleanup(&*self.inner).await
    }
}

impl<A: HttpServerApp + Send + Sync + 'static> LeanIdle<A> {
    /// Pingora's HTTP/1 keep-alive loop, waiting for each request in a small future.
    async fn serve_h1(&self, stream: Stream, shutdown: &ShutdownWatch) {
        let options = self.inner.server_options();
        let reuse_limit = options.and_then(|o| o.keepalive_request_limit);
        let mut first = true;
        let mut next = Some((stream, None::<HttpPersistentSettings>));
        while let Some((mut stream, persistent)) = next.take() {
            let head = match next_head(&mut stream, shutdown, self.idle_timeout, &self.head).await {
                Head::Ready(head) => head,
                Head::Refused(why, buf) => {
                    log_refusal(&stream, why);
                    refuse(&mut stream, self.answers.get(why), buf).await;
                    return;
                }
                Head::Gone => return,
            };
            let mut session = ServerSession::new_http1(stream);
            if first {
                // As Pingora does for a new connection.
                if *shutdown.borrow() {
                    session.set_keepalive(None);
                } else {
                    // Whole seconds, at least one (validated): 0 would mean "forever" here.
                    session.set_keepalive(Some(self.idle_timeout.as_secs().max(1)));
                }
                session.set_keepalive_reuses_remaining(reuse_limit);
                first = false;
            } else if let Some(settings) = persistent {
                settings.apply_to_session(&mut session);
            }
            // Pingora parses the head from this buffer and reads the rest of the request
            // from the stream after it.
            session.set_pipelined_prefix(head);
            next = self
                .inner
                .process_new_http(session, shutdown)
                .await
                .map(|reused| reused.consume());
        }
    }
}

/// Debug only: each line is one client's doing, and a flood of them must not flood the log.
fn log_refusal(stream: &Stream, why: Refusal) {
    if tracing::enabled!(target: "portcullis::limits", tracing::Level::DEBUG) {
        let client = stream
            .get_socket_digest()
            .and_then(|d| d.peer_addr().map(|a| a.to_string()));
        tracing::debug!(
            target: "portcullis::limits",
            status = why.status(),
            reason = ?why,
            client,
            "request head refused before routing"
        );
    }
}
