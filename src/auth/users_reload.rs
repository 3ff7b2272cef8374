//! The users file, kept current: polled once a second, each reload counted in the metrics. A
//! user removed from the file or disabled in it loses every session at once (their access
//! tokens stop working too).

use super::users::{Reload, UserDirectory};
use std::sync::Arc;

/// The background service.
pub struct UsersReloader {
    pub users: Arc<UserDirectory>,
    pub metrics: Arc<crate::metrics::Metrics>,
    pub sessions: Arc<super::sessions::Sessions>,
}

#[async_trait::async_trait]
impl pingora::services::background::BackgroundService for UsersReloader {
    async fn start(&self, mut shutdown: pingora::server::ShutdownWatch) {
        let second = std::time::Duration::from_secs(1);
        crate::clock::every(second, &mut shutdown, || async {
            let dir = self.users.clone();
            match tokio::task::spawn_blocking(move || dir.reload_if_changed()).await {
                Ok(Reload::Loaded { ended }) => {
                    self.metrics.reloaded(true, true);
                    for user in ended {
                        self.end_sessions(&user).await;
                    }
                }
                Ok(Reload::Invalid) => self.metrics.reloaded(true, false),
                _ => {}
            }
        })
        .await
    }
}

impl UsersReloader {
    async fn end_sessions(&self, user: &str) {
        match self.sessions.logout_all(user).await {
            Ok(n) => {
                self.metrics
                    .revocations
                    .with_label_values(&["user_removed"])
                    .inc();
                tracing::warn!(target: "portcullis::audit", event = "user_sessions_ended", user, sessions = n, reason = "removed_or_disabled");
            }
            Err(e) => {
                tracing::error!(target: "portcullis::users", user, error = %e, "cannot end the sessions of a removed or disabled user; retried at the next change of the users file");
            }
        }
    }
}
