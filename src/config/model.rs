//! The validated configuration: every value parsed, every path resolved, every reference
//! checked. Nothing here derives `Deserialize`; the only way in is `validate::build`.

use crate::secret::Secret;
use http::{HeaderName, HeaderValue};
use ipnet::IpNet;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// The whole validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// The file it came from (for messages); relative paths were resolved against its directory.
    pub source: PathBuf,
    pub client: ClientConfig,
    /// `sessions.max_per_user` (0: unlimited): a login beyond it ends the least recently used.
    pub max_sessions_per_user: u32,
    /// `sessions.known_device_ttl`: how long a device and network stay known for a user.
    pub known_device_ttl: Duration,
    /// `notifications.webhook_url`: where security events (a new device) are POSTed.
    pub webhook_url: Option<String>,
    /// The admin API (off when absent).
    pub admin: Option<AdminConfig>,
    /// The second factor (off when absent).
    pub mfa: Option<MfaConfig>,
    /// `login_page.title`: names the application on the login page.
    pub login_title: String,
    pub server: ServerConfig,
    pub tokens: TokensConfig,
    pub cookies: CookiesConfig,
    pub users_file: PathBuf,
    /// `users.file` was set explicitly: then a missing file is an error.
    pub users_file_required: bool,
    pub store: StoreConfig,
    /// Deadline of every store call (`store.timeout`): past it the request gets 503.
    pub store_timeout: Duration,
    /// Where the old process hands its listening sockets to the new one on a zero-downtime
    /// upgrade (`store.upgrade_socket`; by default next to the sled database).
    pub upgrade_socket: PathBuf,
    /// Where `serve` writes its pid for `portcullis reload` (`server.pid_file`; by default
    /// next to the sled database).
    pub pid_file: PathBuf,
    pub rate_limits: RateLimits,
    pub security_headers: SecurityHeaders,
    pub identity_headers: IdentityHeaders,
    pub upstreams: BTreeMap<String, UpstreamConfig>,
    pub routes: Vec<Route>,
    pub health: Health,
    pub metrics_listen: Option<SocketAddr>,
    pub logging: Logging,
    pub limits: Limits,
    /// Cross-origin policy for `/auth/*`.
    pub cors: Option<Cors>,
    /// Things an operator probably did not mean; printed at start-up and by `check`.
    pub warnings: Vec<String>,
}

#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub listen: Vec<SocketAddr>,
    pub tls: Option<TlsConfig>,
    /// Scheme and authority users see, without a trailing slash (`https://app.example.com`).
    pub public_url: String,
    /// Peers whose `X-Forwarded-For` is believed.
    pub trusted_proxies: Vec<IpNet>,
    pub threads: usize,
    pub grace_period: Duration,
    /// How long an idle client keep-alive connection stays open (whole seconds).
    pub keepalive_timeout: Duration,
    /// Plain listeners answer 308 to `public_url` (probes excepted), so that users who type
    /// `http://` end up on HTTPS and no session cookie travels in clear text.
    pub redirect_http: bool,
}

#[derive(Debug, Clone)]
pub struct TlsConfig {
    pub listen: Vec<SocketAddr>,
    pub cert: PathBuf,
    pub key: PathBuf,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnReuse {
    RevokeUser,
    RevokeFamily,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Algorithm {
    EdDSA,
    ES256,
    RS256,
    HS256,
}

/// Where a signing or verification key comes from.
#[derive(Debug, Clone)]
pub enum KeySource {
    PrivatePem(PathBuf),
    PublicPem(PathBuf),
    Secret(Secret<String>),
}

#[derive(Debug, Clone)]
pub struct SigningKey {
    pub kid: String,
    pub algorithm: Algorithm,
    pub source: KeySource,
}

#[derive(Debug, Clone)]
pub struct TrustedIssuer {
    pub issuer: String,
    pub jwks_url: String,
    pub audience: String,
    /// Dotted path of the roles claim (`realm_access.roles`).
    pub roles_claim: Vec<String>,
    pub refresh_interval: Duration,
}

#[derive(Debug, Clone)]
pub struct TokensConfig {
    pub issuer: String,
    pub audience: String,
    pub access_ttl: Duration,
    pub refresh_ttl: Duration,
    pub session_max_lifetime: Duration,
    pub reuse_grace: Duration,
    pub on_reuse: OnReuse,
    pub signing_keys: Vec<SigningKey>,
    pub trusted_issuers: Vec<TrustedIssuer>,
    /// Maximum number of verified tokens kept in memory.
    pub cache_size: u64,
    /// Clock-skew allowance for `exp` and `nbf` (at most 30 s).
    pub leeway: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SameSite {
    Strict,
    Lax,
}

#[derive(Debug, Clone)]
pub struct CookiesConfig {
    pub secure: bool,
    pub same_site: SameSite,
    /// Full cookie names, `__Host-` prefix included when `secure`.
    pub access_name: String,
    pub refresh_name: String,
    pub csrf_name: String,
    /// The device cookie a successful login sets (`pc_device`, prefixed like the others).
    pub device_name: String,
    /// The cookie that carries a login between its password and code steps (`pc_mfa`).
    pub mfa_name: String,
}

impl CookiesConfig {
    /// Every cookie the gateway sets: never forwarded upstream, never set by an upstream.
    pub fn ours(&self) -> [&str; 5] {
        [
            &self.access_name,
            &self.refresh_name,
            &self.csrf_name,
            &self.device_name,
            &self.mfa_name,
        ]
    }
}

#[derive(Debug, Clone)]
pub enum StoreConfig {
    Sled {
        path: PathBuf,
    },
    Redis {
        url: Secret<String>,
        /// How long access tokens are still checked against the local revocation view while
        /// Redis is unreachable; after that protected requests fail closed (503).
        max_staleness: Duration,
        /// Find the master through Redis Sentinel instead of `url`'s host (its database
        /// number and credentials still apply).
        sentinel: Option<Sentinel>,
        /// Replicas that must acknowledge a rotation (`WAIT`) before it is answered: an
        /// acknowledged rotation then survives the loss of the master. 0: do not wait.
        min_replicas_acked: u32,
    },
}

/// `store.redis_sentinel`.
#[derive(Debug, Clone)]
pub struct Sentinel {
    pub master_name: String,
    /// `host:port` of each sentinel.
    pub addresses: Vec<String>,
}

/// `count` events per `window`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    pub count: u32,
    pub window: Duration,
}

#[derive(Debug, Clone)]
pub struct RateLimits {
    /// Failed logins from one client address, every account.
    pub login_per_ip: Rate,
    /// Failed logins of one account from one address.
    pub login_per_account_ip: Rate,
    /// Failed logins of one account from browsers without its device cookie.
    pub login_per_account: Rate,
    /// Failed logins of one account from one browser holding its device cookie.
    pub login_per_device: Rate,
    pub refresh_per_ip: Rate,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeaderMode {
    /// Override whatever the upstream sent.
    Set,
    /// Only add a header the upstream did not send.
    Default,
}

#[derive(Debug, Clone)]
pub struct SecurityHeaders {
    pub mode: HeaderMode,
    pub headers: Vec<(HeaderName, HeaderValue)>,
    /// The names of `headers` as configured, in the same order: their spelling on the wire.
    pub wire_names: Vec<String>,
    pub remove: Vec<HeaderName>,
}

#[derive(Debug, Clone)]
pub struct IdentityHeaders {
    pub user: HeaderName,
    pub email: HeaderName,
    pub roles: HeaderName,
    /// `user`, `email` and `roles` as configured: their spelling on the wire (nginx's
    /// `proxy_set_header` sends a name as written, and a legacy application may compare
    /// names case-sensitively).
    pub wire_names: [String; 3],
    pub forward_access_token: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamConfig {
    pub addresses: Vec<SocketAddr>,
    pub health_check: Option<HealthCheck>,
    pub connect_timeout: Duration,
    pub read_timeout: Duration,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthCheck {
    /// HTTP path to GET; `None` means a TCP connect check.
    pub path: Option<String>,
    pub interval: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthMode {
    Required,
    Public,
}

#[derive(Debug, Clone)]
pub struct Route {
    /// Lower-case host without port; `None` matches any host.
    pub host: Option<String>,
    /// Always starts with `/`; trailing `/` removed except for the root.
    pub path_prefix: String,
    pub upstream: String,
    pub auth: AuthMode,
    pub roles: Vec<String>,
    /// What to do with `;params` in path segments (servlet containers drop them).
    pub path_params: PathParams,
    /// Refuse path forms that some server resolves to another resource (segments ending in
    /// `.` or a space, non-ASCII escapes, encoded escapes). `false` lets them through.
    pub strict_paths: bool,
    /// Cross-origin policy of this route; `None` sends no CORS headers.
    pub cors: Option<Cors>,
    /// Replaces the global security headers on this route's answers.
    pub security_headers: Option<SecurityHeaders>,
    /// Insert the browser client's script tag into this route's HTML pages.
    pub inject_client: bool,
    /// `mfa: required`: only sessions that entered a code pass (`otp` in `amr`).
    pub mfa_required: bool,
    /// `max_auth_age`: only sessions whose user proved who they are this recently pass.
    pub max_auth_age: Option<Duration>,
}

/// `mfa`: TOTP second factor.
#[derive(Clone)]
pub struct MfaConfig {
    /// The issuer authenticator apps show next to the account (`issuer_name`).
    pub issuer_name: String,
    /// `encryption_key`: the AEAD key the secrets are sealed with in the store.
    pub encryption_key: crate::secret::Secret<[u8; 32]>,
    /// Users with one of these roles must use a second factor.
    pub required_for_roles: Vec<String>,
}

impl std::fmt::Debug for MfaConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MfaConfig")
            .field("issuer_name", &self.issuer_name)
            .field("encryption_key", &self.encryption_key)
            .field("required_for_roles", &self.required_for_roles)
            .finish()
    }
}

/// `routes[].path_params`: routes always match on the path with every segment's `;params`
/// removed, as servlet containers dispatch; this says what goes upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PathParams {
    /// Forward the path without the parameters.
    Strip,
    /// Forward the parameters as sent (`;jsessionid=` URL rewriting).
    Keep,
    /// Answer 400 to a path that carries any.
    Reject,
}

/// A validated `cors` block.
#[derive(Debug, Clone)]
pub struct Cors {
    /// Lower-case `scheme://host[:port]` origins; `any` is `"*"`.
    pub allowed_origins: Vec<String>,
    pub any_origin: bool,
    pub allow_credentials: bool,
    pub allowed_methods: Vec<http::Method>,
    pub allowed_headers: Vec<HeaderName>,
    pub expose_headers: Vec<HeaderName>,
    pub max_age: Duration,
}

/// The probes: their paths, and what readiness asks of the upstreams.
#[derive(Debug, Clone)]
pub struct Health {
    pub liveness: String,
    pub readiness: String,
    /// `health.readiness_requires_upstreams`.
    pub readiness_requires_upstreams: RequireUpstreams,
    /// `health.listen`: a plain listener that answers only the two probes (for a health check
    /// that must not reach the application or the login, e.g. beside a TLS-only gateway).
    pub listen: Option<std::net::SocketAddr>,
}

/// Whether upstream health makes readiness fail. The gateway itself is ready without any
/// healthy upstream (it still signs users in and answers 503 for the routes it cannot serve),
/// so by default each upstream's health is only listed: a load balancer that took every
/// gateway out of rotation because the application was down would turn a partial outage
/// into a total one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequireUpstreams {
    /// Upstreams never make readiness fail (the default).
    None,
    /// Fail when no upstream has a healthy peer.
    Any,
    /// Fail when some upstream has no healthy peer.
    All,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Json,
    Text,
}

#[derive(Debug, Clone)]
pub struct Logging {
    pub format: LogFormat,
    pub level: String,
}

#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_header_bytes: usize,
    pub max_headers: usize,
    pub max_auth_body_bytes: usize,
    /// Per-connection read buffer of the plain listeners (Pingora's default is 64 KiB, which
    /// every idle keep-alive connection would hold).
    pub read_buffer_bytes: usize,
    /// How long a client may take to send a request's headers, from its first byte.
    pub header_timeout: Duration,
    /// Client connections open at once, over all listeners; more are closed as soon as they
    /// are accepted. Never more than half of what the open-file limit leaves free (each client
    /// may need an upstream connection too).
    pub max_connections: usize,
}

/// The browser client: when it warns before the session ends, and whether it shows a banner.
#[derive(Debug, Clone, Copy)]
pub struct ClientConfig {
    pub warn_before: Duration,
    pub banner: bool,
}

/// `admin`: its listener and the file holding the Bearer token.
#[derive(Debug, Clone)]
pub struct AdminConfig {
    pub listen: SocketAddr,
    pub token_file: PathBuf,
}
