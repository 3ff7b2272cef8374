//! Lean idle keep-alive connections.
//!
//! Pingora's HTTP/1 loop starts each request of a connection by allocating the whole request
//! future (everything a proxied request may need, about 14 KB) and then waits inside it for
//! the request's first byte, so an idle keep-alive connection holds that memory for as long
//! as it idles. This is the same loop (`ServerApp::process_new` for HTTP/1 in pingora-core),
//! except that it waits for the first byte in a future of a few hundred bytes and only then
//! hands the connection to Pingora. The byte is read through the stream and put back
//! (`Stream::rewind`), so Pingora sees the request unchanged. HTTP/2 and custom protocols
//! keep Pingora's own handling.
//!
//! While waiting, the connection closes when it has been idle for `server.keepalive_timeout`
//! (default 60 s, Pingora's own) and at once when the server starts shutting down, as nginx
//! closes idle keep-alive connections on a graceful stop.

use async_trait::async_trait;
use pingora::apps::{HttpPersistentSettings, HttpServerApp, ServerApp};
use pingora::protocols::http::ServerSession;
use pingora::protocols::{Stream, ALPN};
use pingora::server::ShutdownWatch;
use pingora::time::fast_timeout::fast_timeout;
use std::sync::Arc;
use std::time::Duration;

pub struct LeanIdle<A> {
    inner: Arc<A>,
    idle_timeout: Duration,
}

impl<A> LeanIdle<A> {
    pub fn new(inner: A, idle_timeout: Duration) -> Self {
        LeanIdle {
            inner: Arc::new(inner),
            idle_timeout,
        }
    }
}

/// Wait until the client sends something. `false`: it closed, failed, idled out, or the
/// server is shutting down.
async fn wait_for_request(
    stream: &mut Stream,
    shutdown: &ShutdownWatch,
    idle_timeout: Duration,
) -> bool {
    if *shutdown.borrow() {
        return false;
    }
    let mut down = shutdown.clone();
    // `changed` can also fire for the initial `false`: only `true` (or a dropped sender) stops.
    let stopping = async move { while down.changed().await.is_ok() && !*down.borrow() {} };
    let mut first = [0u8; 1];
    tokio::select! {
        // `try_peek` reads one byte and rewinds it; streams that cannot peek (TLS) answer
        // `false` at once and go straight to Pingora, as before.
        // Pingora's coarse timer (10 ms ticks, one shared clock thread): a tokio timer would
        // wake the runtime's driver through an eventfd write on every request.
        peeked = fast_timeout(idle_timeout, stream.try_peek(&mut first)) => {
            matches!(peeked, Ok(Ok(_)))
        }
        _ = stopping => false,
    }
}

#[async_trait]
impl<A: HttpServerApp + Send + Sync + 'static> ServerApp for LeanIdle<A> {
    async fn process_new(
        self: &Arc<Self>,
        stream: Stream,
        shutdown: &ShutdownWatch,
    ) -> Option<Stream> {
        let options = self.inner.server_options();
        let not_h1 = options.is_some_and(|o| o.h2c || o.force_custom)
            || matches!(
                stream.selected_alpn_proto(),
                Some(ALPN::H2) | Some(ALPN::Custom(_))
            );
        if not_h1 {
            return ServerApp::process_new(&self.inner, stream, shutdown).await;
        }
        // Pingora's task for a connection is sized for its TLS handshake future (about 9 KB)
        // and would live as long as the connection. The connection moves to a task of its own,
        // sized for this loop only, and Pingora's task ends here.
        let this = Arc::clone(self);
        let shutdown = shutdown.clone();
        tokio::spawn(async move { this.serve_h1(stream, &shutdown).await });
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
            if !wait_for_request(&mut stream, shutdown, self.idle_timeout).await {
                return;
            }
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
            next = self
                .inner
                .process_new_http(session, shutdown)
                .await
                .map(|reused| reused.consume());
        }
    }
}
