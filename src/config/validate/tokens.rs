//! `tokens`: lifetimes, reuse handling, signing keys and trusted external issuers.

use super::values::{duration, duration_or, one_of, private_key_path, resolve_path, ttl_or};
use super::{invalid, R};
use crate::config::file::{SigningKeyFile, TokensFile};
use crate::config::model::*;
use crate::secret::Secret;
use std::collections::HashSet;
use std::path::Path;
use std::time::Duration;

pub(super) fn tokens(
    t: &TokensFile,
    public_url: &str,
    base: &Path,
    warnings: &mut Vec<String>,
) -> R<TokensConfig> {
    let access_ttl = ttl_or("tokens.access_ttl", &t.access_ttl, Duration::from_secs(900))?;
    let mut longer_than = |key: &str, value: Duration, limit: &str, secs: u64, risk: &str| {
        if value > Duration::from_secs(secs) {
            let value = humantime::format_duration(value);
            warnings.push(format!("{key}: {value} is longer than {limit}; {risk}"));
        }
    };
    longer_than(
        "tokens.access_ttl",
        access_ttl,
        "1h",
        3600,
        "stolen access tokens stay valid that long",
    );
    let reuse_grace = ttl_or(
        "tokens.reuse_grace",
        &t.reuse_grace,
        Duration::from_secs(10),
    )?;
    longer_than(
        "tokens.reuse_grace",
        reuse_grace,
        "60s",
        60,
        "a replayed refresh token is honoured that long",
    );
    let refresh_ttl = ttl_or(
        "tokens.refresh_ttl",
        &t.refresh_ttl,
        Duration::from_secs(7 * 86400),
    )?;
    let session_max_lifetime = ttl_or(
        "tokens.session_max_lifetime",
        &t.session_max_lifetime,
        Duration::from_secs(30 * 86400),
    )?;
    let on_reuse = one_of(
        "tokens.on_reuse",
        t.on_reuse.as_deref(),
        OnReuse::RevokeUser,
        &[
            ("revoke_user", OnReuse::RevokeUser),
            ("revoke_family", OnReuse::RevokeFamily),
        ],
    )?;
    let mut seen = HashSet::new();
    let mut signing_keys = Vec::new();
    for (i, k) in t.signing_keys.iter().enumerate() {
        let key = format!("tokens.signing_keys[{i}]");
        if k.kid.trim().is_empty() {
            return invalid(format!("{key}.kid"), "must not be empty");
        }
        if !seen.insert(k.kid.clone()) {
            return invalid(format!("{key}.kid"), format!("duplicate kid {:?}", k.kid));
        }
        let algorithm = one_of(
            &format!("{key}.algorithm"),
            Some(k.algorithm.as_str()),
            Algorithm::EdDSA,
            &[
                ("EdDSA", Algorithm::EdDSA),
                ("ES256", Algorithm::ES256),
                ("RS256", Algorithm::RS256),
                ("HS256", Algorithm::HS256),
            ],
        )?;
        let sources = [
            k.private_key_file.is_some(),
            k.public_key_file.is_some(),
            k.secret.is_some(),
        ];
        if sources.iter().filter(|s| **s).count() != 1 {
            return invalid(
                key,
                "set exactly one of private_key_file, public_key_file, secret",
            );
        }
        let source = match (algorithm, k) {
            (
                Algorithm::HS256,
                SigningKeyFile {
                    secret: Some(s), ..
                },
            ) => {
                if s.len() < 32 {
                    return invalid(
                        format!("{key}.secret"),
                        "an HS256 secret must be at least 32 bytes",
                    );
                }
                if crate::secret::PUBLISHED_SECRETS.contains(&s.as_str()) {
                    return invalid(
                        format!("{key}.secret"),
                        "is the placeholder published in portcullis's examples: anyone can forge tokens with it; set a random one (e.g. `openssl rand -base64 48`) through ${PORTCULLIS_HS256_SECRET}",
                    );
                }
                KeySource::Secret(Secret::new(s.clone()))
            }
            (Algorithm::HS256, _) => {
                return invalid(
                    format!("{key}.algorithm"),
                    "HS256 takes a `secret`, not a key file",
                )
            }
            (
                _,
                SigningKeyFile {
                    secret: Some(_), ..
                },
            ) => {
                return invalid(
                    format!("{key}.secret"),
                    "only HS256 takes a secret; asymmetric algorithms take key files",
                )
            }
            (
                _,
                SigningKeyFile {
                    private_key_file: Some(p),
                    ..
                },
            ) => KeySource::PrivatePem(private_key_path(
                &format!("{key}.private_key_file"),
                base,
                p,
                warnings,
            )),
            (
                _,
                SigningKeyFile {
                    public_key_file: Some(p),
                    ..
                },
            ) => KeySource::PublicPem(resolve_path(base, p)),
            _ => unreachable!("exactly one source is set"),
        };
        signing_keys.push(SigningKey {
            kid: k.kid.clone(),
            algorithm,
            source,
        });
    }
    let mut trusted_issuers = Vec::new();
    for (i, ti) in t.trusted_issuers.iter().enumerate() {
        let key = format!("tokens.trusted_issuers[{i}]");
        if !(ti.jwks_url.starts_with("http://") || ti.jwks_url.starts_with("https://")) {
            return invalid(
                format!("{key}.jwks_url"),
                format!("expected an http(s) URL, got {:?}", ti.jwks_url),
            );
        }
        trusted_issuers.push(TrustedIssuer {
            issuer: ti.issuer.clone(),
            jwks_url: ti.jwks_url.clone(),
            audience: ti
                .audience
                .clone()
                .or_else(|| t.audience.clone())
                .unwrap_or_else(|| "portcullis".into()),
            roles_claim: ti
                .roles_claim
                .as_deref()
                .unwrap_or("roles")
                .split('.')
                .map(str::to_string)
                .collect(),
            refresh_interval: duration_or(
                &format!("{key}.refresh_interval"),
                &ti.refresh_interval,
                Duration::from_secs(300),
            )?,
        });
    }
    Ok(TokensConfig {
        issuer: t.issuer.clone().unwrap_or_else(|| public_url.to_string()),
        audience: t.audience.clone().unwrap_or_else(|| "portcullis".into()),
        access_ttl,
        refresh_ttl,
        session_max_lifetime,
        reuse_grace,
        on_reuse,
        signing_keys,
        trusted_issuers,
        leeway: match t.leeway.as_deref() {
            None => Duration::from_secs(30),
            Some("0" | "0s") => Duration::ZERO,
            Some(v) => {
                let d = duration("tokens.leeway", v)?;
                if d > Duration::from_secs(30) {
                    return invalid("tokens.leeway", format!("at most 30s, got {v:?}"));
                }
                d
            }
        },
        // 0 disables the verified-token cache (every request checks the signature).
        cache_size: t.cache_size.unwrap_or(100_000),
    })
}
