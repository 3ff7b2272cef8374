//! Configuration: one YAML file, strict and validated before anything starts.
//!
//! - `env.rs`: `${VAR}` / `${VAR:-default}` substitution on the raw text
//! - `file.rs`: serde wire types (`deny_unknown_fields`)
//! - `validate/`: wire -> model, a file per section; every error names its key path
//! - `model.rs`: the validated types the rest of the gateway uses

pub mod env;
pub mod file;
pub mod model;
pub mod validate;

pub use model::*;

use std::fmt;
use std::path::{Path, PathBuf};

/// A configuration problem, printed as one line: `FILE: KEY: what is wrong`.
#[derive(Debug)]
pub struct ConfigError {
    pub file: PathBuf,
    /// Dotted key path such as `tokens.access_ttl`; empty when the problem is the file itself.
    pub key: String,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.key.is_empty() {
            write!(f, "{}: {}", self.file.display(), self.message)
        } else {
            write!(f, "{}: {}: {}", self.file.display(), self.key, self.message)
        }
    }
}

impl std::error::Error for ConfigError {}

impl ConfigError {
    pub fn new(file: &Path, key: impl Into<String>, message: impl Into<String>) -> Self {
        ConfigError {
            file: file.to_path_buf(),
            key: key.into(),
            message: message.into(),
        }
    }
}

/// Read, substitute, parse and validate the file at `path`.
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| ConfigError::new(path, "", format!("cannot read config file: {e}")))?;
    let base = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    parse(&text, path, base, |name| std::env::var(name).ok())
}

/// Parse configuration text. `source` is only used in messages; `base` resolves relative paths.
pub fn parse(
    text: &str,
    source: &Path,
    base: &Path,
    env: impl Fn(&str) -> Option<String>,
) -> Result<Config, ConfigError> {
    let text = env::substitute(text, env)
        .map_err(|(line, msg)| ConfigError::new(source, format!("line {line}"), msg))?;
    let deserializer = serde_yaml::Deserializer::from_str(&text);
    let wire: file::FileConfig = match serde_path_to_error::deserialize(deserializer) {
        Ok(w) => w,
        Err(e) => {
            let key = e.path().to_string();
            let key = if key == "." { String::new() } else { key };
            let inner = e.into_inner();
            let location = inner
                .location()
                .map(|l| format!(" (line {}, column {})", l.line(), l.column()))
                .unwrap_or_default();
            let message = inner.to_string();
            // serde_yaml appends its own "at line X column Y"; keep one location only.
            let mut message = message
                .split(" at line ")
                .next()
                .unwrap_or(&message)
                .to_string();
            // serde_yaml may prefix the parent path itself; the key is printed once, by us.
            if let Some((prefix, rest)) = message.split_once(": ") {
                if !prefix.contains(' ') && key.starts_with(prefix) {
                    message = rest.to_string();
                }
            }
            return Err(ConfigError::new(
                source,
                key,
                format!("{message}{location}"),
            ));
        }
    };
    validate::build(wire, source, base).map_err(|i| ConfigError::new(source, i.key, i.message))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_str(text: &str) -> Result<Config, ConfigError> {
        parse(text, Path::new("test.yaml"), Path::new("/etc/pc"), |_| None)
    }

    const MINIMAL: &str = "upstreams:\n  app: { addresses: [\"127.0.0.1:9000\"] }\nroutes:\n  - { path_prefix: /, upstream: app }\n";

    #[test]
    fn minimal_config_gets_spec_defaults() {
        let c = parse_str(MINIMAL).unwrap();
        assert_eq!(c.tokens.access_ttl.as_secs(), 900);
        assert_eq!(c.tokens.refresh_ttl.as_secs(), 7 * 86400);
        assert_eq!(c.cookies.access_name, "__Host-pc_access");
        assert_eq!(c.health.liveness, "/healthz");
        assert_eq!(c.security_headers.headers.len(), 11);
        let route = &c.routes[0];
        assert_eq!(route.path_params, PathParams::Reject);
        assert!(route.strict_paths && route.cors.is_none() && route.security_headers.is_none());
        assert_eq!(c.limits.header_timeout.as_secs(), 10);
        assert_eq!(c.users_file, Path::new("/etc/pc/users.yaml"));
    }

    #[test]
    fn unknown_key_names_its_path() {
        let e = parse_str("tokens:\n  acess_ttl: 15m\n").unwrap_err();
        assert_eq!(e.key, "tokens.acess_ttl");
        assert!(e.message.contains("acess_ttl"), "{e}");
        assert!(
            e.to_string()
                .starts_with("test.yaml: tokens.acess_ttl: unknown field"),
            "{e}"
        );
    }

    #[test]
    fn bad_duration_names_key_and_value() {
        let e = parse_str("tokens:\n  access_ttl: fifteen\n").unwrap_err();
        assert_eq!(
            e.to_string(),
            "test.yaml: tokens.access_ttl: expected a duration like \"15m\", got \"fifteen\""
        );
    }

    #[test]
    fn unknown_upstream_names_route_index() {
        let text = format!("{MINIMAL}  - {{ path_prefix: /x, upstream: legcy }}\n");
        let e = parse_str(&text).unwrap_err();
        assert_eq!(e.key, "routes[1].upstream");
        assert!(e.message.contains("\"legcy\""));
    }

    #[test]
    fn invalid_listen_address() {
        let e = parse_str("server:\n  listen: [\"nope:80\"]\n").unwrap_err();
        assert_eq!(e.key, "server.listen[0]");
    }

    #[test]
    fn rates_and_short_ttls() {
        let c =
            parse_str("rate_limits:\n  login_per_ip: 3/1m\ntokens:\n  access_ttl: 1s\n").unwrap();
        assert_eq!(c.rate_limits.login_per_ip.count, 3);
        assert_eq!(c.tokens.access_ttl.as_secs(), 1);
        assert!(parse_str("rate_limits:\n  login_per_ip: five\n").is_err());
        assert!(parse_str("tokens:\n  access_ttl: 500ms\n").is_err());
    }

    #[test]
    fn insecure_cookies_have_no_prefix_and_long_ttl_warns() {
        let c = parse_str("cookies: { secure: false }\ntokens: { access_ttl: 2h }\n").unwrap();
        assert_eq!(c.cookies.refresh_name, "pc_refresh");
        assert!(c
            .warnings
            .iter()
            .any(|w| w.starts_with("tokens.access_ttl")));
    }

    #[test]
    fn readiness_requires_upstreams_defaults_to_none() {
        let c = parse_str(MINIMAL).unwrap();
        assert_eq!(
            c.health.readiness_requires_upstreams,
            RequireUpstreams::None
        );
        let c = parse_str(&format!(
            "health: {{ readiness_requires_upstreams: all }}\n{MINIMAL}"
        ))
        .unwrap();
        assert_eq!(c.health.readiness_requires_upstreams, RequireUpstreams::All);
        let e = parse_str("health: { readiness_requires_upstreams: some }\n").unwrap_err();
        assert_eq!(e.key, "health.readiness_requires_upstreams");
        assert!(e.message.contains("none | any | all"), "{e}");
    }

    #[test]
    fn hs256_secret_must_be_long() {
        let e = parse_str(
            "tokens:\n  signing_keys:\n    - { kid: a, algorithm: HS256, secret: short }\n",
        )
        .unwrap_err();
        assert_eq!(e.key, "tokens.signing_keys[0].secret");
    }
}
