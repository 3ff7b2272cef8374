//! Wire types: exactly what the YAML file may contain, before any validation.
//!
//! Every struct denies unknown fields so that a typo (`acess_ttl`) is an error at start-up
//! instead of a silently ignored setting. Values that need parsing (durations, addresses,
//! CIDRs, rates) stay strings here; `validate/` turns them into the model and names the
//! key path of anything wrong.

use serde::Deserialize;
use std::collections::BTreeMap;

/// The whole configuration file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    #[serde(default)]
    pub server: ServerFile,
    #[serde(default)]
    pub tokens: TokensFile,
    #[serde(default)]
    pub cookies: CookiesFile,
    #[serde(default)]
    pub users: UsersFile,
    #[serde(default)]
    pub store: StoreFile,
    #[serde(default)]
    pub rate_limits: RateLimitsFile,
    #[serde(default)]
    pub security_headers: SecurityHeadersFile,
    #[serde(default)]
    pub identity_headers: IdentityHeadersFile,
    #[serde(default)]
    pub upstreams: BTreeMap<String, UpstreamFile>,
    #[serde(default)]
    pub routes: Vec<RouteFile>,
    #[serde(default)]
    pub health: HealthFile,
    #[serde(default)]
    pub metrics: Option<MetricsFile>,
    #[serde(default)]
    pub logging: LoggingFile,
    #[serde(default)]
    pub limits: LimitsFile,
    /// Cross-origin policy for `/auth/*`.
    pub cors: Option<CorsFile>,
    #[serde(default)]
    pub client: ClientFile,
    #[serde(default)]
    pub login_page: LoginPageFile,
    #[serde(default)]
    pub sessions: SessionsFile,
    #[serde(default)]
    pub notifications: NotificationsFile,
    pub admin: Option<AdminFile>,
    /// The second factor (off when absent).
    pub mfa: Option<MfaFile>,
}

/// TOTP: the name authenticator apps show, the key sealing the secrets in the store, and
/// the roles that must use it.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MfaFile {
    pub issuer_name: Option<String>,
    pub encryption_key: Option<String>,
    #[serde(default)]
    pub required_for_roles: Vec<String>,
}

/// The admin API's own listener and the file holding its Bearer token.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminFile {
    pub listen: String,
    pub token_file: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SessionsFile {
    pub max_per_user: Option<u32>,
    pub known_device_ttl: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NotificationsFile {
    pub webhook_url: Option<String>,
}

/// The browser client (`/auth/client.js`).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientFile {
    pub warn_before: Option<String>,
    pub banner: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoginPageFile {
    pub title: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerFile {
    pub listen: Option<Vec<String>>,
    pub tls: Option<TlsFile>,
    pub public_url: Option<String>,
    #[serde(default)]
    pub trusted_proxies: Vec<String>,
    pub threads: Option<usize>,
    pub grace_period: Option<String>,
    pub keepalive_timeout: Option<String>,
    #[serde(default)]
    pub redirect_http: bool,
    pub pid_file: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsFile {
    pub listen: Vec<String>,
    pub cert: String,
    pub key: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokensFile {
    pub issuer: Option<String>,
    pub audience: Option<String>,
    pub access_ttl: Option<String>,
    pub refresh_ttl: Option<String>,
    pub session_max_lifetime: Option<String>,
    pub reuse_grace: Option<String>,
    pub on_reuse: Option<String>,
    #[serde(default)]
    pub signing_keys: Vec<SigningKeyFile>,
    #[serde(default)]
    pub trusted_issuers: Vec<TrustedIssuerFile>,
    pub cache_size: Option<u64>,
    pub leeway: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SigningKeyFile {
    pub kid: String,
    pub algorithm: String,
    pub private_key_file: Option<String>,
    pub public_key_file: Option<String>,
    pub secret: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrustedIssuerFile {
    pub issuer: String,
    pub jwks_url: String,
    pub audience: Option<String>,
    pub roles_claim: Option<String>,
    pub refresh_interval: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CookiesFile {
    pub secure: Option<bool>,
    pub same_site: Option<String>,
    pub access_name: Option<String>,
    pub refresh_name: Option<String>,
    pub csrf_name: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UsersFile {
    pub file: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreFile {
    pub backend: Option<String>,
    pub path: Option<String>,
    pub redis_url: Option<String>,
    pub max_staleness: Option<String>,
    pub timeout: Option<String>,
    pub redis_sentinel: Option<SentinelFile>,
    pub redis_min_replicas_acked: Option<u32>,
    pub upgrade_socket: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SentinelFile {
    pub master_name: String,
    pub addresses: Vec<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimitsFile {
    pub login_per_ip: Option<String>,
    pub login_per_account_ip: Option<String>,
    pub login_per_account: Option<String>,
    pub login_per_device: Option<String>,
    pub refresh_per_ip: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecurityHeadersFile {
    pub mode: Option<String>,
    pub headers: Option<BTreeMap<String, String>>,
    pub remove: Option<Vec<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IdentityHeadersFile {
    pub user: Option<String>,
    pub email: Option<String>,
    pub roles: Option<String>,
    pub forward_access_token: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamFile {
    pub addresses: Vec<String>,
    pub health_check: Option<HealthCheckFile>,
    pub connect_timeout: Option<String>,
    pub read_timeout: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HealthCheckFile {
    pub path: Option<String>,
    pub interval: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteFile {
    pub host: Option<String>,
    pub path_prefix: String,
    pub upstream: String,
    pub auth: Option<String>,
    #[serde(default)]
    pub roles: Vec<String>,
    pub path_params: Option<String>,
    pub strict_paths: Option<bool>,
    pub cors: Option<CorsFile>,
    pub security_headers: Option<SecurityHeadersFile>,
    pub inject_client: Option<bool>,
    /// `required`: a code must have been entered in this session.
    pub mfa: Option<String>,
    /// How long ago the user may have proved who they are (`10m`).
    pub max_auth_age: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CorsFile {
    #[serde(default)]
    pub allowed_origins: Vec<String>,
    pub allow_credentials: Option<bool>,
    pub allowed_methods: Option<Vec<String>>,
    pub allowed_headers: Option<Vec<String>>,
    pub expose_headers: Option<Vec<String>>,
    pub max_age: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HealthFile {
    pub liveness_path: Option<String>,
    pub readiness_path: Option<String>,
    pub readiness_requires_upstreams: Option<String>,
    pub listen: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsFile {
    pub listen: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoggingFile {
    pub format: Option<String>,
    pub level: Option<String>,
}

/// Request limits (defaults far below Pingora's own).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsFile {
    pub max_header_bytes: Option<usize>,
    pub max_headers: Option<usize>,
    pub max_auth_body_bytes: Option<usize>,
    pub read_buffer_bytes: Option<usize>,
    pub header_timeout: Option<String>,
    pub max_connections: Option<usize>,
}
