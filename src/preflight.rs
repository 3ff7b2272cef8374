//! What must hold before the gateway starts, or takes a reloaded config: the files the config
//! names (TLS certificate and key, signing keys, users file, admin token) can be read and fit.
//! `check`, `serve` and a reload run the same checks.

use crate::auth::users::UserDirectory;
use crate::config::Config;
use crate::tokens::keys::Keyring;
use std::path::Path;

/// Why the gateway could not start. Each message names the file or key involved.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
}

/// Checks that need files on disk: TLS certificate and key, signing keys. `check` runs these
/// too. Returns the loaded keyring.
pub fn preflight(config: &Config) -> Result<Keyring, StartError> {
    use crate::auth::users::UsersError;
    if let Some(tls) = &config.server.tls {
        check_tls(&config.source, &tls.cert, &tls.key)?;
    }
    let file = config.source.display();
    let users =
        UserDirectory::load(&config.users_file, config.users_file_required).map_err(|e| {
            StartError::Invalid(match e {
                UsersError::Unreadable { .. } => format!("{file}: {e}"),
                UsersError::Invalid { .. } => e.to_string(),
            })
        })?;
    if config.mfa.is_none() && users.any_mfa_required() {
        return Err(StartError::Invalid(format!(
            "{file}: mfa.encryption_key: users in {} have `mfa: required`, which needs the `mfa` section and its key",
            config.users_file.display()
        )));
    }
    if let Some(admin) = &config.admin {
        crate::gateway::admin::load_token(admin)
            .map_err(|e| StartError::Invalid(format!("{file}: {e}")))?;
    }
    Keyring::load(&config.tokens.signing_keys)
        .map_err(|e| StartError::Invalid(format!("{file}: {e}")))
}

fn check_tls(source: &Path, cert: &Path, key: &Path) -> Result<(), StartError> {
    let file = source.display();
    for (k, p) in [("server.tls.cert", cert), ("server.tls.key", key)] {
        if let Err(e) = std::fs::metadata(p) {
            return Err(StartError::Invalid(format!(
                "{file}: {k}: cannot read {}: {e}",
                p.display()
            )));
        }
    }
    let loaded =
        pingora::tls::load_certs_and_key_files(&cert.to_string_lossy(), &key.to_string_lossy());
    let (certs, private_key) = match loaded {
        Ok(Some(pair)) => pair,
        _ => {
            return Err(StartError::Invalid(format!(
                "{file}: server.tls: {} must hold a PEM certificate and {} a PEM private key",
                cert.display(),
                key.display()
            )))
        }
    };
    pingora::tls::install_default_crypto_provider();
    pingora::tls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(certs, private_key)
        .map_err(|e| {
            StartError::Invalid(format!(
                "{file}: server.tls: certificate and key do not fit together: {e}"
            ))
        })?;
    Ok(())
}
