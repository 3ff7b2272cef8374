//! `portcullis unlock --user ID | --ip ADDR`: forget the throttling counters of an account or
//! of a client address, straight in the store. A sled database belongs to one process at a
//! time, so with sled the gateway is stopped first; a Redis store is shared and can be
//! unlocked while the gateways run.

use crate::auth::users::UserDirectory;
use crate::config::{Config, StoreConfig};
use crate::store::{Account, SharedStore, Unlock};
use std::net::IpAddr;
use std::sync::Arc;

/// What to unlock, as typed.
pub enum Target<'a> {
    /// A user id, or the email of a user (or any email an attacker may have tried).
    User(&'a str),
    Ip(&'a str),
}

/// Clear the counters `target` names; returns how many there were.
pub fn unlock(config: &Config, target: Target<'_>) -> Result<u64, String> {
    let wanted = match target {
        Target::User(who) => accounts(config, who)?
            .into_iter()
            .map(Unlock::Account)
            .collect(),
        Target::Ip(ip) => {
            let ip: IpAddr = ip
                .parse()
                .map_err(|_| format!("--ip: {ip:?} is not an IP address"))?;
            vec![Unlock::Ip(ip.to_string())]
        }
    };
    let store = open(config)?;
    crate::store::runtime().block_on(async {
        let mut removed = 0;
        for u in &wanted {
            removed += store
                .unlock(u)
                .await
                .map_err(|e| format!("{}: store: {e}", config.source.display()))?;
        }
        Ok(removed)
    })
}

/// The accounts `who` may name: the user with that id or email, and the email as typed.
fn accounts(config: &Config, who: &str) -> Result<Vec<Account>, String> {
    let who = who.trim();
    if who.is_empty() {
        return Err("--user: empty".into());
    }
    let users = UserDirectory::load(&config.users_file, false)
        .map_err(|e| format!("{}: {e}", config.source.display()))?;
    let mut out = Vec::new();
    if let Some(u) = users.by_id(who).or_else(|| users.by_email(who)) {
        out.push(Account::User(u.id.clone()));
    }
    if who.contains('@') {
        out.push(Account::Email(who.to_string()));
    }
    if out.is_empty() {
        return Err(format!(
            "--user: no user {who:?} in {} (give a user id or an email)",
            config.users_file.display()
        ));
    }
    Ok(out)
}

fn open(config: &Config) -> Result<SharedStore, String> {
    let source = config.source.display();
    match &config.store {
        StoreConfig::Sled { path } => {
            match crate::store::sled::SledStore::try_open(path) {
                Ok(Some(s)) => Ok(Arc::new(s)),
                Ok(None) => Err(format!(
                    "{source}: store.path {} is held by a running gateway: stop it first (a sled database belongs to one process), then unlock",
                    path.display()
                )),
                Err(e) => Err(format!("{source}: store.path: {e}")),
            }
        }
        StoreConfig::Redis {
            url,
            max_staleness,
            sentinel,
            min_replicas_acked,
        } => {
            let _rt = crate::store::runtime().enter();
            crate::store::redis::RedisStore::open_with(
                url,
                *max_staleness,
                sentinel.as_ref(),
                *min_replicas_acked,
            )
            .map(|s| Arc::new(s) as SharedStore)
            .map_err(|e| format!("{source}: store: {e}"))
        }
    }
}
