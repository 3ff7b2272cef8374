//! The injectable entry point: `build(config)` wires the proxy, TLS, health checks, metrics
//! and the store into a Pingora `Server` without running it, so `serve`, `demo` and tests all
//! start the same thing.

use crate::auth::sessions::{Pruner, Sessions};
use crate::auth::users::UserDirectory;
use crate::auth::users_reload::UsersReloader;
use crate::config::{Config, StoreConfig};
use crate::gateway::client_limits;
use crate::gateway::drain::Drain;
use crate::gateway::idle::LeanIdle;
use crate::gateway::state::Lasting;
use crate::gateway::upstreams::Upstreams;
use crate::gateway::{AppState, Gateway};
use crate::metrics::MetricsApp;
use crate::reload::{ReloadOnHangup, Reloader};
use crate::store::handover::Handover;
use crate::store::SharedStore;
use crate::tls::CertSwitch;
use crate::tokens::access::TokenService;
use crate::tokens::external::{ExternalIssuers, JwksRefresher};
use crate::tokens::revocation::RevocationView;
use arc_swap::ArcSwap;
use pingora::apps::http_app::HttpServer;
use pingora::listeners::{L4BufferSettings, ListenerConfig};
use pingora::prelude::Opt;
use pingora::server::configuration::ServerConf;
use pingora::server::Server;
use pingora::services::listening::Service;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// How long an old process waits, after sending its listening sockets, for the new one to
/// say it has them (Pingora's own wait before it stops accepting is 5 s).
const HANDOVER_WAIT: Duration = Duration::from_secs(5);

pub use crate::preflight::{preflight, StartError};

/// A built, not yet running, gateway.
pub struct Built {
    pub server: Server,
    /// The state the gateway starts with.
    pub state: Arc<AppState>,
    /// Reloads the config file (what SIGHUP does).
    pub reloader: Arc<Reloader>,
    /// Watches the signals while it runs; SIGTERM ends as soon as nothing is in flight.
    pub drain: Drain,
}

impl Built {
    /// Serve until a signal stops the server.
    pub fn run(self) {
        self.server.run(pingora::server::RunArgs {
            shutdown_signal: Box::new(self.drain),
        });
    }
}

/// Options that are not part of the config file.
#[derive(Default)]
pub struct BuildOptions {
    /// Take over the listening sockets of a running instance (Pingora's zero-downtime upgrade).
    pub upgrade: bool,
    /// Extra services to run in the same server (the demo's bundled upstream).
    pub extra_services: Vec<Box<dyn pingora::services::ServiceWithDependents>>,
}

/// Open the configured store. The sled database comes in its hand-over slot: opened now, or,
/// in an upgrade's new process, as soon as the old process lets go of it.
pub fn open_store(
    config: &Config,
    upgrade: bool,
) -> Result<(SharedStore, Option<Arc<Handover>>), StartError> {
    match &config.store {
        StoreConfig::Sled { path } => {
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent).map_err(|e| {
                    StartError::Invalid(format!(
                        "{}: store.path: cannot create {}: {e}",
                        config.source.display(),
                        parent.display()
                    ))
                })?;
            }
            let handover = if upgrade {
                Handover::open_when_released(path)?
            } else {
                Handover::open_now(path, Duration::from_secs(1))?
            };
            Ok((handover.clone(), Some(handover)))
        }
        StoreConfig::Redis {
            url,
            max_staleness,
            sentinel,
            min_replicas_acked,
        } => Ok((
            Arc::new(crate::store::redis::RedisStore::open_with(
                url,
                *max_staleness,
                sentinel.as_ref(),
                *min_replicas_acked,
            )?),
            None,
        )),
    }
}

/// The file a new process creates once it holds the listening sockets: Pingora's hand-over
/// only says the sockets were sent, and the new process may pick them up a second later.
fn taken_marker(upgrade_socket: &Path) -> PathBuf {
    let mut name = upgrade_socket.as_os_str().to_owned();
    name.push(".taken");
    PathBuf::from(name)
}

/// Log each step of a zero-downtime upgrade in the old process, and release the sled
/// database as soon as the new process holds the listening sockets (at the latest when this
/// process stops accepting).
fn follow_upgrade(server: &Server, upgrade_socket: &Path, handover: Option<Arc<Handover>>) {
    use pingora::server::ExecutionPhase;
    use tokio::sync::broadcast::error::RecvError;
    let mut phases = server.watch_execution_phase();
    let socket = upgrade_socket.display().to_string();
    let taken = taken_marker(upgrade_socket);
    let spawned = std::thread::Builder::new()
        .name("portcullis-upgrade".into())
        .spawn(move || loop {
            match phases.blocking_recv() {
                Ok(ExecutionPhase::GracefulUpgradeTransferringFds) => {
                    tracing::info!(target: "portcullis::upgrade", socket = %socket, "SIGQUIT: handing the listening sockets to the new process");
                }
                Ok(ExecutionPhase::GracefulUpgradeCloseTimeout) => {
                    tracing::info!(target: "portcullis::upgrade", "listening sockets sent; serving what still arrives here until the new process has taken them");
                    let deadline = std::time::Instant::now() + HANDOVER_WAIT;
                    while !taken.exists() && std::time::Instant::now() < deadline {
                        std::thread::sleep(Duration::from_millis(5));
                    }
                    if std::fs::remove_file(&taken).is_ok() {
                        tracing::info!(target: "portcullis::upgrade", "the new process has taken the listening sockets");
                    } else {
                        tracing::warn!(target: "portcullis::upgrade", "the new process did not say it took the listening sockets");
                    }
                    if let Some(h) = &handover {
                        h.release();
                    }
                }
                Ok(ExecutionPhase::Terminated) | Err(RecvError::Closed) => return,
                Ok(_) | Err(RecvError::Lagged(_)) => {}
            }
        });
    if let Err(e) = spawned {
        tracing::error!(target: "portcullis::upgrade", error = %e, "cannot follow upgrades: a SIGQUIT would keep the sled database until exit");
    }
}

/// Before Pingora binds (it would only log and exit), prove every address can be bound and
/// name the one that cannot.
fn check_listeners(config: &Config) -> Result<(), StartError> {
    let mut addrs: Vec<(String, std::net::SocketAddr)> = Vec::new();
    for (i, a) in config.server.listen.iter().enumerate() {
        addrs.push((format!("server.listen[{i}]"), *a));
    }
    if let Some(tls) = &config.server.tls {
        for (i, a) in tls.listen.iter().enumerate() {
            addrs.push((format!("server.tls.listen[{i}]"), *a));
        }
    }
    if let Some(m) = config.metrics_listen {
        addrs.push(("metrics.listen".into(), m));
    }
    if let Some(h) = config.health.listen {
        addrs.push(("health.listen".into(), h));
    }
    if let Some(a) = &config.admin {
        addrs.push(("admin.listen".into(), a.listen));
    }
    for (key, addr) in addrs {
        std::net::TcpListener::bind(addr).map_err(|e| {
            StartError::Invalid(format!(
                "{}: {key}: cannot listen on {addr}: {e}",
                config.source.display()
            ))
        })?;
    }
    Ok(())
}

/// Wire everything into a Pingora server.
pub fn build(config: Arc<Config>, options: BuildOptions) -> Result<Built, StartError> {
    let keyring = preflight(&config)?;
    if !options.upgrade {
        check_listeners(&config)?;
    }
    let (store, handover) = open_store(&config, options.upgrade)?;
    let store = crate::store::deadline::with_deadline(store, config.store_timeout);
    // Before any listener or connection exists: the usual soft limit (1024) is far below
    // `limits.max_connections`.
    client_limits::raise_open_file_limit();

    let mut conf = ServerConf {
        threads: config.server.threads,
        // Pingora waits this long after a zero-downtime upgrade's SIGQUIT; SIGTERM is
        // drained by `Drain`, which ends as soon as nothing is in flight.
        grace_period_seconds: Some(config.server.grace_period.as_secs_f64().ceil() as u64),
        graceful_shutdown_timeout_seconds: Some(1),
        // One single-threaded runtime per worker thread, as nginx runs its workers: about 10%
        // less CPU per proxied request here than Tokio's work-stealing scheduler.
        work_stealing: false,
        ..ServerConf::default()
    };
    // `store.upgrade_socket`: next to the sled database by default, so two gateways on one
    // host never hand their sockets to each other.
    conf.upgrade_sock = config.upgrade_socket.to_string_lossy().into_owned();
    let opt = Opt {
        upgrade: options.upgrade,
        ..Opt::default()
    };
    let mut server = Server::new_with_opt_and_conf(opt, conf);
    let taken = taken_marker(&config.upgrade_socket);
    if options.upgrade {
        // Left over from an earlier upgrade, it would tell the old process too early.
        let _ = std::fs::remove_file(&taken);
    }
    server.bootstrap();
    if options.upgrade {
        tracing::info!(target: "portcullis::upgrade", "listening sockets taken over from the previous process");
        if let Err(e) = std::fs::write(&taken, b"") {
            tracing::warn!(target: "portcullis::upgrade", path = %taken.display(), error = %e, "cannot tell the previous process that the sockets are taken; it lets go of the store later");
        }
    }

    let checks = crate::store::runtime().handle().clone();
    let upstreams = Upstreams::build(&config, None, &checks)
        .map_err(|e| StartError::Invalid(format!("{}: upstreams: {e}", config.source.display())))?;
    let external = ExternalIssuers::new(&config.tokens.trusted_issuers);
    let refresher = JwksRefresher {
        issuers: external.issuers.clone(),
    };
    let tokens = Arc::new(TokenService::new(
        &config.tokens,
        keyring,
        external,
        Arc::new(RevocationView::new()),
        Arc::new(crate::clock::SystemClock),
    ));
    let users = Arc::new(
        UserDirectory::load(&config.users_file, config.users_file_required)
            .map_err(|e| StartError::Invalid(format!("{}: {e}", config.source.display())))?,
    );
    if users.is_empty() {
        tracing::warn!(target: "portcullis::users", file = %config.users_file.display(), "no local users: /auth/login will refuse everyone");
    }
    // Store calls before Pingora's runtimes exist run on the store's own long-lived runtime.
    let sessions = Arc::new(Sessions::new(
        &config,
        store.clone(),
        tokens.clone(),
        users.clone(),
    ));
    check_mfa_key(&config, &store)?;
    if let Some(h) = handover.as_ref().filter(|_| !options.upgrade) {
        let n = crate::store::runtime().block_on(sessions.load_revocations())?;
        h.mark_loaded();
        tracing::info!(target: "portcullis::store", revocations = n, "revocations loaded");
    }
    follow_upgrade(&server, &config.upgrade_socket, handover);
    // Shared backends load the view themselves, and again after every reconnect; a sled
    // database opened in the background is loaded once it is open.
    let view = tokens.revocations.clone();
    crate::store::runtime().spawn(async move { store.watch_revocations(view).await });
    let lasting = Lasting::new(&sessions);
    let metrics = lasting.metrics.clone();
    server.add_service(pingora::services::background::background_service(
        "users reload",
        UsersReloader {
            users: users.clone(),
            metrics: metrics.clone(),
            sessions: sessions.clone(),
        },
    ));
    server.add_service(pingora::services::background::background_service(
        "prune",
        Pruner(sessions.clone()),
    ));
    let state = Arc::new(AppState::new(
        config.clone(),
        Arc::new(upstreams),
        sessions,
        &lasting,
    ));
    let live = Arc::new(ArcSwap::new(state.clone()));
    use crate::clock::Clock;
    metrics
        .config_reload_success
        .set(crate::clock::SystemClock.now() as i64);
    if !refresher.issuers.is_empty() {
        server.add_service(pingora::services::background::background_service(
            "jwks refresh",
            refresher,
        ));
    }

    let mut http = pingora::proxy::HttpProxy::new(
        Gateway { live: live.clone() },
        server.configuration.clone(),
    );
    http.handle_init_modules();
    let lean = LeanIdle::new(http, &config, &state.security_headers);
    let drain = Drain::new(lean.connections(), config.server.grace_period);
    let mut proxy = Service::new("portcullis".to_string(), lean);
    let l4_buffer = L4BufferSettings::new(
        config.limits.read_buffer_bytes,
        pingora::listeners::DEFAULT_L4_WRITE_BUFFER_SIZE,
    );
    for addr in &config.server.listen {
        proxy.add_listener(ListenerConfig::tcp(addr.to_string()).l4_buffer(l4_buffer));
    }
    let cert = match &config.server.tls {
        Some(tls) => {
            let loaded = crate::tls::load(&tls.cert, &tls.key).map_err(|e| {
                StartError::Invalid(format!("{}: server.tls: {e}", config.source.display()))
            })?;
            let switch = Arc::new(CertSwitch::new(loaded));
            metrics.tls_expiry.set(switch.not_after());
            Some(switch)
        }
        None => None,
    };
    if let (Some(tls), Some(switch)) = (&config.server.tls, &cert) {
        for addr in &tls.listen {
            // The certificate comes from the switch, which a reload refills.
            let mut settings =
                pingora::listeners::tls::TlsSettings::intermediate("", "").map_err(|e| {
                    StartError::Invalid(format!("{}: server.tls: {e}", config.source.display()))
                })?;
            settings.set_cert_resolver(switch.clone());
            proxy.add_listener(
                ListenerConfig::tcp(addr.to_string())
                    .tls(settings)
                    .l4_buffer(l4_buffer),
            );
        }
    }
    server.add_service(drain.service(proxy));
    let reloader = Arc::new(Reloader::new(live.clone(), cert, users, checks));
    server.add_service(pingora::services::background::background_service(
        "reload",
        ReloadOnHangup(reloader.clone()),
    ));
    crate::reload::write_pid_file(&config.pid_file);
    if let Some(addr) = config.metrics_listen {
        let mut metrics = Service::new(
            "metrics".to_string(),
            HttpServer::new_app(MetricsApp {
                metrics: metrics.clone(),
                gauges: live.clone(),
            }),
        );
        metrics.add_tcp(&addr.to_string());
        server.add_service(metrics);
    }
    if let Some(admin) = &config.admin {
        let token = crate::gateway::admin::load_token(admin)
            .map_err(|e| StartError::Invalid(format!("{}: {e}", config.source.display())))?;
        let mut api = Service::new(
            "admin".to_string(),
            HttpServer::new_app(crate::gateway::admin::AdminApp {
                live: live.clone(),
                token,
            }),
        );
        api.add_tcp(&admin.listen.to_string());
        server.add_service(api);
    }
    if let Some(addr) = config.health.listen {
        let mut probes = Service::new(
            "probes".to_string(),
            HttpServer::new_app(crate::gateway::probes::ProbeApp { live: live.clone() }),
        );
        probes.add_tcp(&addr.to_string());
        server.add_service(probes);
    }
    for extra in options.extra_services {
        server.add_boxed_service(extra);
    }
    Ok(Built {
        server,
        state,
        reloader,
        drain,
    })
}

/// Does `mfa.encryption_key` open the secrets in the store? A different key is a start-up
/// error naming it. A store that does not answer in time is not: the gateway starts, reports
/// not ready, and the second factor answers 503 until the store is back.
fn check_mfa_key(config: &Config, store: &crate::store::SharedStore) -> Result<(), StartError> {
    let Some(m) = &config.mfa else {
        return Ok(());
    };
    let factor =
        crate::auth::mfa::SecondFactor::new(m, store.clone(), Arc::new(crate::clock::SystemClock));
    let checked = crate::store::runtime()
        .block_on(async { tokio::time::timeout(config.store_timeout, factor.check_key()).await });
    match checked {
        Ok(Ok(())) => Ok(()),
        Ok(Err(crate::auth::mfa::MfaError::Sealed)) => Err(StartError::Invalid(format!(
            "{}: mfa.encryption_key: not the key the second-factor secrets in the store were sealed with (restore the previous key; with a new key every user must enrol again after `portcullis mfa reset`)",
            config.source.display()
        ))),
        Ok(Err(e)) => {
            tracing::warn!(target: "portcullis::mfa", error = %e, "could not check mfa.encryption_key against the store yet");
            Ok(())
        }
        Err(_) => {
            tracing::warn!(target: "portcullis::mfa", "the store did not answer in time to check mfa.encryption_key");
            Ok(())
        }
    }
}
