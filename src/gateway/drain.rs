//! SIGTERM: stop accepting, close idle connections, and exit as soon as no client connection
//! is left, at the latest after `server.grace_period`.
//!
//! Pingora's graceful terminate broadcasts its shutdown and then always sleeps its whole
//! grace period, however idle the server (`Server::run`). So `Drain` watches the signals
//! itself, through Pingora's `ShutdownSignalWatch` hook. On SIGTERM it stops the proxy through
//! a shutdown watch of its own, which the proxy service was started with (`Drain::service`):
//! the listeners stop accepting and idle keep-alive connections close, as they do on Pingora's
//! broadcast. Once the proxy's open connections (what `ConnectionCap` counts) reach zero, or the
//! grace period has passed, it asks Pingora for a fast shutdown: nothing is left to wait for.
//! After SIGTERM a connection stays open only while a request on it is in flight (or a
//! WebSocket is open): the keep-alive loop ends it as soon as its response is written.
//!
//! SIGQUIT (zero-downtime upgrade) and SIGINT keep Pingora's own handling; Pingora's
//! broadcast on SIGQUIT stops the proxy through the same watch.

use super::client_limits::ConnectionCap;
use async_trait::async_trait;
use pingora::server::{ListenFds, RuntimeOpts, ShutdownSignal, ShutdownSignalWatch, ShutdownWatch};
use pingora::services::{ServiceReadyNotifier, ServiceWithDependents};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::watch;

/// How often the drain looks at the number of open connections.
const POLL: Duration = Duration::from_millis(10);

/// The signal watch of a running gateway (`RunArgs::shutdown_signal`).
pub struct Drain {
    stop: watch::Sender<bool>,
    connections: Arc<ConnectionCap>,
    grace: Duration,
}

impl Drain {
    /// `connections`: the proxy's client connections; `grace`: `server.grace_period`.
    pub fn new(connections: Arc<ConnectionCap>, grace: Duration) -> Self {
        Drain {
            stop: watch::channel(false).0,
            connections,
            grace,
        }
    }

    /// `proxy`, started with the drain's shutdown watch instead of Pingora's.
    pub fn service<S: ServiceWithDependents>(&self, proxy: S) -> Stoppable<S> {
        Stoppable {
            inner: proxy,
            stop: self.stop.clone(),
        }
    }

    /// Stop the proxy; then wait until no client connection is open, the grace period has
    /// passed, or SIGINT asks to stop at once.
    async fn drain(&self, interrupt: &mut tokio::signal::unix::Signal) {
        let started = Instant::now();
        self.stop.send_replace(true);
        tracing::info!(target: "portcullis::server", grace_period = ?self.grace, "SIGTERM: no longer accepting; waiting for the requests in flight");
        let drained = async {
            while self.connections.open() > 0 {
                tokio::time::sleep(POLL).await;
            }
        };
        tokio::select! {
            _ = drained => {
                tracing::info!(target: "portcullis::server", after_ms = started.elapsed().as_millis() as u64, "nothing in flight: exiting");
            }
            _ = tokio::time::sleep(self.grace) => {
                tracing::warn!(target: "portcullis::server", open = self.connections.open(), "grace period over: closing the connections still open");
            }
            _ = interrupt.recv() => {
                tracing::info!(target: "portcullis::server", "SIGINT: exiting at once");
            }
        }
    }
}

#[async_trait]
impl ShutdownSignalWatch for Drain {
    async fn recv(&self) -> ShutdownSignal {
        // As Pingora's own `UnixShutdownSignalWatch`, which this replaces.
        let listen = |kind| signal(kind).expect("install the signal handlers");
        let mut upgrade = listen(SignalKind::quit());
        let mut terminate = listen(SignalKind::terminate());
        let mut interrupt = listen(SignalKind::interrupt());
        tokio::select! {
            _ = upgrade.recv() => ShutdownSignal::GracefulUpgrade,
            _ = interrupt.recv() => ShutdownSignal::FastShutdown,
            _ = terminate.recv() => {
                self.drain(&mut interrupt).await;
                // Drained (or out of time): Pingora's graceful path would sleep the whole
                // grace period again. (Pingora logs this as "SIGINT received".)
                ShutdownSignal::FastShutdown
            }
        }
    }
}

/// A service that stops on the drain's watch, which Pingora's own shutdown also sets.
pub struct Stoppable<S> {
    inner: S,
    stop: watch::Sender<bool>,
}

#[async_trait]
impl<S: ServiceWithDependents> ServiceWithDependents for Stoppable<S> {
    async fn start_service(
        &mut self,
        fds: Option<ListenFds>,
        mut shutdown: ShutdownWatch,
        listeners_per_fd: usize,
        ready_notifier: ServiceReadyNotifier,
    ) {
        let stop = self.stop.clone();
        tokio::spawn(async move {
            if shutdown.wait_for(|down| *down).await.is_ok() {
                stop.send_replace(true);
            }
        });
        let watch = self.stop.subscribe();
        self.inner
            .start_service(fds, watch, listeners_per_fd, ready_notifier)
            .await
    }

    fn name(&self) -> &str {
        self.inner.name()
    }

    fn threads(&self) -> Option<usize> {
        self.inner.threads()
    }

    fn runtime_opts_override(&self, global: &RuntimeOpts) -> Option<RuntimeOpts> {
        self.inner.runtime_opts_override(global)
    }

    fn on_startup_delay(&self, time_waited: Duration) {
        self.inner.on_startup_delay(time_waited)
    }

    fn listen_addresses(&self) -> Option<Vec<String>> {
        self.inner.listen_addresses()
    }
}
