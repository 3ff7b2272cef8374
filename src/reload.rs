//! Reload without a restart. On SIGHUP (which `portcullis reload` sends to the process named
//! in the pid file) the config file is read again and, when it is valid, routes, upstreams,
//! header policies, CORS, cookies, rate limits, token settings, signing keys and the TLS
//! certificate are swapped in at once for new requests; requests in flight finish with the
//! state they began with. An invalid file changes nothing: one error line, and the failure
//! counted in the metrics. Listeners, threads, the store, the users file's path and trusted
//! issuers are fixed for the life of the process: a change to them is named in a warning.

use crate::auth::sessions::Sessions;
use crate::auth::users::UserDirectory;
use crate::config::Config;
use crate::gateway::upstreams::Upstreams;
use crate::gateway::AppState;
use crate::tls::CertSwitch;
use crate::tokens::access::TokenService;
use arc_swap::ArcSwap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// Rebuilds the gateway's state from its config file.
pub struct Reloader {
    live: Arc<ArcSwap<AppState>>,
    cert: Option<Arc<CertSwitch>>,
    users: Arc<UserDirectory>,
    /// The runtime the upstream health checks run on.
    runtime: tokio::runtime::Handle,
    /// One reload at a time.
    running: Mutex<()>,
}

impl Reloader {
    pub fn new(
        live: Arc<ArcSwap<AppState>>,
        cert: Option<Arc<CertSwitch>>,
        users: Arc<UserDirectory>,
        runtime: tokio::runtime::Handle,
    ) -> Self {
        Reloader {
            live,
            cert,
            users,
            runtime,
            running: Mutex::new(()),
        }
    }

    /// Read the config file again and swap in what it says; the error names what is wrong.
    pub fn reload(&self) -> Result<(), String> {
        let _one = self.running.lock().unwrap_or_else(|e| e.into_inner());
        let current = self.live.load_full();
        let result = self.build(&current);
        current.metrics.reloaded(false, result.is_ok());
        match result {
            Ok((next, cert)) => {
                for w in &next.config.warnings {
                    tracing::warn!(target: "portcullis::config", "{w}");
                }
                for key in fixed_keys_changed(&current.config, &next.config) {
                    tracing::warn!(target: "portcullis::config", key, "changed in the config file, but only a restart applies it; the running value stays");
                }
                if let (Some(switch), Some(cert)) = (&self.cert, cert) {
                    switch.replace(cert);
                    current.metrics.tls_expiry.set(switch.not_after());
                }
                self.live.store(Arc::new(next));
                tracing::info!(target: "portcullis::config", file = %current.config.source.display(), "config reloaded");
                Ok(())
            }
            Err(e) => {
                tracing::error!(target: "portcullis::config", error = %e, "config reload failed; the last good config keeps serving");
                Err(e)
            }
        }
    }

    fn build(
        &self,
        current: &AppState,
    ) -> Result<(AppState, Option<crate::tls::LoadedCert>), String> {
        let mut config = crate::config::load(&current.config.source).map_err(|e| e.to_string())?;
        config.mfa = keep_mfa_key(current.config.mfa.as_ref(), config.mfa.take());
        let keyring = crate::preflight::preflight(&config).map_err(|e| e.to_string())?;
        let cert = match (&config.server.tls, &self.cert) {
            (Some(tls), Some(_)) => Some(
                crate::tls::load(&tls.cert, &tls.key)
                    .map_err(|e| format!("{}: server.tls: {e}", config.source.display()))?,
            ),
            _ => None,
        };
        let upstreams = Upstreams::build(&config, Some(&current.upstreams), &self.runtime)
            .map_err(|e| format!("{}: upstreams: {e}", config.source.display()))?;
        let old = &current.auth.tokens;
        let tokens = Arc::new(TokenService::new(
            &config.tokens,
            keyring,
            old.external.clone(),
            old.revocations.clone(),
            old.clock.clone(),
        ));
        let store = current.auth.store.clone();
        let sessions = Arc::new(Sessions::new(&config, store, tokens, self.users.clone()));
        let state = AppState::new(
            Arc::new(config),
            Arc::new(upstreams),
            sessions,
            &current.lasting,
        );
        Ok((state, cert))
    }
}

/// The second factor's key is checked against the store at start-up only: a reload that turns
/// the second factor on or off, or changes its key, keeps the running key (the other `mfa`
/// settings apply) and says that a restart is needed.
fn keep_mfa_key(
    old: Option<&crate::config::MfaConfig>,
    new: Option<crate::config::MfaConfig>,
) -> Option<crate::config::MfaConfig> {
    let same = match (old, &new) {
        (None, None) => true,
        (Some(o), Some(n)) => o.encryption_key == n.encryption_key,
        _ => false,
    };
    if same {
        return new;
    }
    tracing::warn!(target: "portcullis::config", key = "mfa.encryption_key", "changed in the config file (or the mfa section added or removed), but only a restart applies it, after checking the key against the store; the running value stays");
    match (old, new) {
        (Some(o), Some(n)) => Some(crate::config::MfaConfig {
            encryption_key: o.encryption_key.clone(),
            ..n
        }),
        (old, _) => old.cloned(),
    }
}

/// Keys a running process cannot change, that differ between `old` and `new`.
fn fixed_keys_changed(old: &Config, new: &Config) -> Vec<&'static str> {
    let mut changed = Vec::new();
    let mut check = |key: &'static str, same: bool| {
        if !same {
            changed.push(key);
        }
    };
    check("server.listen", old.server.listen == new.server.listen);
    check(
        "server.tls.listen",
        old.server.tls.as_ref().map(|t| &t.listen) == new.server.tls.as_ref().map(|t| &t.listen),
    );
    check("server.threads", old.server.threads == new.server.threads);
    check(
        "store",
        format!("{:?}", old.store) == format!("{:?}", new.store),
    );
    check("users.file", old.users_file == new.users_file);
    check("metrics.listen", old.metrics_listen == new.metrics_listen);
    check(
        "tokens.trusted_issuers",
        format!("{:?}", old.tokens.trusted_issuers) == format!("{:?}", new.tokens.trusted_issuers),
    );
    changed
}

/// Listens for SIGHUP for the life of the process.
pub struct ReloadOnHangup(pub Arc<Reloader>);

#[async_trait::async_trait]
impl pingora::services::background::BackgroundService for ReloadOnHangup {
    async fn start(&self, mut shutdown: pingora::server::ShutdownWatch) {
        use tokio::signal::unix::{signal, SignalKind};
        let Ok(mut hangups) = signal(SignalKind::hangup()) else {
            tracing::error!(target: "portcullis::config", "cannot listen for SIGHUP: reload needs a restart");
            return;
        };
        loop {
            tokio::select! {
                _ = shutdown.changed() => return,
                got = hangups.recv() => {
                    if got.is_none() {
                        return;
                    }
                    tracing::info!(target: "portcullis::config", "SIGHUP: reloading the config");
                    let reloader = self.0.clone();
                    let _ = tokio::task::spawn_blocking(move || reloader.reload()).await;
                }
            }
        }
    }
}

/// Where `serve` writes its pid, for `portcullis reload`.
pub fn write_pid_file(path: &Path) {
    if let Some(dir) = path.parent() {
        let _ = std::fs::create_dir_all(dir);
    }
    if let Err(e) = std::fs::write(path, format!("{}\n", std::process::id())) {
        tracing::warn!(target: "portcullis::server", path = %path.display(), error = %e, "cannot write the pid file; `portcullis reload` will not find this process (SIGHUP still reloads)");
    }
}

/// `portcullis reload`: check `config` as `check` does, then send SIGHUP to the gateway whose
/// pid is in its pid file. The error says what is wrong in one line.
pub fn signal_running(config: &Config) -> Result<u32, String> {
    let path: PathBuf = config.pid_file.clone();
    let text = std::fs::read_to_string(&path).map_err(|e| {
        format!(
            "server.pid_file {}: {e} (is the gateway running with this config?)",
            path.display()
        )
    })?;
    let pid: i32 = text
        .trim()
        .parse()
        .map_err(|_| format!("server.pid_file {}: not a process id", path.display()))?;
    let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
    if !comm.trim().starts_with("portcullis") {
        return Err(format!(
            "server.pid_file {}: process {pid} is not a running portcullis (stale pid file?)",
            path.display()
        ));
    }
    // SAFETY: kill(2) with a plain signal number has no memory effects.
    if unsafe { libc::kill(pid, libc::SIGHUP) } != 0 {
        return Err(format!(
            "cannot signal process {pid}: {}",
            std::io::Error::last_os_error()
        ));
    }
    Ok(pid as u32)
}

#[cfg(test)]
mod tests {
    use super::keep_mfa_key;
    use crate::config::MfaConfig;
    use crate::secret::Secret;

    fn mfa(key: u8, issuer: &str) -> MfaConfig {
        MfaConfig {
            issuer_name: issuer.into(),
            encryption_key: Secret::new([key; 32]),
            required_for_roles: vec![],
        }
    }

    #[test]
    fn a_reload_never_changes_the_second_factor_key() {
        let kept = keep_mfa_key(Some(&mfa(1, "Old")), Some(mfa(2, "New"))).unwrap();
        assert_eq!(kept.encryption_key.expose(), &[1; 32]);
        assert_eq!(kept.issuer_name, "New", "the other settings apply");
        assert!(keep_mfa_key(None, Some(mfa(2, "New"))).is_none());
        let off = keep_mfa_key(Some(&mfa(1, "Old")), None).unwrap();
        assert_eq!(off.encryption_key.expose(), &[1; 32]);
        let same = keep_mfa_key(Some(&mfa(1, "Old")), Some(mfa(1, "New"))).unwrap();
        assert_eq!(same.issuer_name, "New");
    }
}
