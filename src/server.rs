//! The injectable entry point: `build(config)` wires the proxy, TLS, health checks, metrics
//! and the store into a Pingora `Server` without running it, so `serve`, `demo` and tests all
//! start the same thing.

use crate::auth::sessions::{Pruner, Sessions};
use crate::auth::users::{UserDirectory, UsersReloader};
use crate::config::{Config, StoreConfig};
use crate::gateway::client_limits;
use crate::gateway::idle::LeanIdle;
use crate::gateway::upstreams::Upstreams;
use crate::gateway::{AppState, Gateway};
use crate::metrics::MetricsApp;
use crate::store::sled::SledStore;
use crate::store::SharedStore;
use crate::tokens::access::TokenService;
use crate::tokens::external::{ExternalIssuers, JwksRefresher};
use crate::tokens::keys::Keyring;
use crate::tokens::revocation::RevocationView;
use pingora::apps::http_app::HttpServer;
use pingora::listeners::{L4BufferSettings, ListenerConfig};
use pingora::prelude::Opt;
use pingora::server::configuration::ServerConf;
use pingora::server::Server;
use pingora::services::listening::Service;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

/// Why the gateway could not start. Each message names the file or key involved.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
}

/// A built, not yet running, gateway.
pub struct Built {
    pub server: Server,
    pub state: Arc<AppState>,
}

/// Options that are not part of the config file.
#[derive(Default)]
pub struct BuildOptions {
    /// Take over the listening sockets of a running instance (Pingora's zero-downtime upgrade).
    pub upgrade: bool,
    /// Extra services to run in the same server (the demo's bundled upstream).
    pub extra_services: Vec<Box<dyn pingora::services::ServiceWithDependents>>,
}

/// Checks that need files on disk: TLS certificate and key, signing keys. `check` runs these
/// too. Returns the loaded keyring.
pub fn preflight(config: &Config) -> Result<Keyring, String> {
    if let Some(tls) = &config.server.tls {
        check_tls(&config.source, &tls.cert, &tls.key)?;
    }
    let file = config.source.display();
    UserDirectory::load(&config.users_file, config.users_file_required).map_err(|e| {
        if e.starts_with("users.file") {
            format!("{file}: {e}")
        } else {
            e
        }
    })?;
    Keyring::load(&config.tokens.signing_keys).map_err(|e| format!("{file}: {e}"))
}

fn check_tls(source: &Path, cert: &Path, key: &Path) -> Result<(), String> {
    let file = source.display();
    for (k, p) in [("server.tls.cert", cert), ("server.tls.key", key)] {
        if let Err(e) = std::fs::metadata(p) {
            return Err(format!("{file}: {k}: cannot read {}: {e}", p.display()));
        }
    }
    let loaded =
        pingora::tls::load_certs_and_key_files(&cert.to_string_lossy(), &key.to_string_lossy());
    let (certs, private_key) = match loaded {
        Ok(Some(pair)) => pair,
        _ => {
            return Err(format!(
                "{file}: server.tls: {} must hold a PEM certificate and {} a PEM private key",
                cert.display(),
                key.display()
            ))
        }
    };
    pingora::tls::install_default_crypto_provider();
    pingora::tls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(certs, private_key)
        .map_err(|e| format!("{file}: server.tls: certificate and key do not fit together: {e}"))?;
    Ok(())
}

/// Open the configured store.
pub fn open_store(config: &Config) -> Result<SharedStore, StartError> {
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
            Ok(Arc::new(SledStore::open(path, Duration::from_secs(10))?))
        }
        StoreConfig::Redis {
            url,
            max_staleness,
            sentinel,
            min_replicas_acked,
        } => Ok(Arc::new(crate::store::redis::RedisStore::open_with(
            url,
            *max_staleness,
            sentinel.as_ref(),
            *min_replicas_acked,
        )?)),
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
    let keyring = preflight(&config).map_err(StartError::Invalid)?;
    if !options.upgrade {
        check_listeners(&config)?;
    }
    let store = crate::store::deadline::with_deadline(open_store(&config)?, config.store_timeout);
    // Before any listener or connection exists: the usual soft limit (1024) is far below
    // `limits.max_connections`.
    client_limits::raise_open_file_limit();

    let mut conf = ServerConf {
        threads: config.server.threads,
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
    server.bootstrap();

    let (upstreams, health_services) = Upstreams::build(&config)
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
    if store.backend() == "sled" {
        let n = crate::store::runtime().block_on(sessions.load_revocations())?;
        tracing::info!(target: "portcullis::store", revocations = n, "revocations loaded");
    }
    // Shared backends load the view themselves, and again after every reconnect.
    let view = tokens.revocations.clone();
    crate::store::runtime().spawn(async move { store.watch_revocations(view).await });
    server.add_service(pingora::services::background::background_service(
        "users reload",
        UsersReloader(users),
    ));
    server.add_service(pingora::services::background::background_service(
        "prune",
        Pruner(sessions.clone()),
    ));
    let state = Arc::new(AppState::new(config.clone(), upstreams, sessions));
    if !refresher.issuers.is_empty() {
        server.add_service(pingora::services::background::background_service(
            "jwks refresh",
            refresher,
        ));
    }

    let mut http = pingora::proxy::HttpProxy::new(
        Gateway {
            state: state.clone(),
        },
        server.configuration.clone(),
    );
    http.handle_init_modules();
    let mut proxy = Service::new(
        "portcullis".to_string(),
        LeanIdle::new(http, &config, &state.security_headers),
    );
    let l4_buffer = L4BufferSettings::new(
        config.limits.read_buffer_bytes,
        pingora::listeners::DEFAULT_L4_WRITE_BUFFER_SIZE,
    );
    for addr in &config.server.listen {
        proxy.add_listener(ListenerConfig::tcp(addr.to_string()).l4_buffer(l4_buffer));
    }
    if let Some(tls) = &config.server.tls {
        for addr in &tls.listen {
            let settings = pingora::listeners::tls::TlsSettings::intermediate(
                &tls.cert.to_string_lossy(),
                &tls.key.to_string_lossy(),
            )
            .map_err(|e| {
                StartError::Invalid(format!("{}: server.tls: {e}", config.source.display()))
            })?;
            proxy.add_listener(
                ListenerConfig::tcp(addr.to_string())
                    .tls(settings)
                    .l4_buffer(l4_buffer),
            );
        }
    }
    server.add_service(proxy);
    for hs in health_services {
        server.add_service(hs);
    }
    if let Some(addr) = config.metrics_listen {
        let mut metrics = Service::new(
            "metrics".to_string(),
            HttpServer::new_app(MetricsApp {
                state: state.clone(),
            }),
        );
        metrics.add_tcp(&addr.to_string());
        server.add_service(metrics);
    }
    for extra in options.extra_services {
        server.add_boxed_service(extra);
    }
    Ok(Built { server, state })
}
