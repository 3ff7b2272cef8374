//! `store`: the backend (sled or redis), the deadline of its calls and the socket an upgrade
//! hands the listeners over on.

use super::values::{duration_or, one_of, resolve, resolve_path};
use super::{invalid, R};
use crate::config::file::StoreFile;
use crate::config::model::{Sentinel, StoreConfig};
use crate::secret::Secret;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The store, the deadline of every store call and the upgrade socket, which by default sits
/// next to the sled database.
pub(super) fn store(file: &StoreFile, base: &Path) -> R<(StoreConfig, Duration, PathBuf)> {
    let store = match one_of(
        "store.backend",
        file.backend.as_deref(),
        "sled",
        &[("sled", "sled"), ("redis", "redis")],
    )? {
        "redis" => StoreConfig::Redis {
            url: Secret::new(
                file.redis_url
                    .clone()
                    .unwrap_or_else(|| "redis://127.0.0.1:6379/0".into()),
            ),
            max_staleness: duration_or(
                "store.max_staleness",
                &file.max_staleness,
                Duration::from_secs(30),
            )?,
            sentinel: match &file.redis_sentinel {
                None => None,
                Some(s) => {
                    if s.master_name.trim().is_empty() {
                        return invalid("store.redis_sentinel.master_name", "must not be empty");
                    }
                    if s.addresses.is_empty() {
                        return invalid(
                            "store.redis_sentinel.addresses",
                            "at least one sentinel host:port is needed",
                        );
                    }
                    for (i, a) in s.addresses.iter().enumerate() {
                        resolve(&format!("store.redis_sentinel.addresses[{i}]"), a)?;
                    }
                    Some(Sentinel {
                        master_name: s.master_name.clone(),
                        addresses: s.addresses.clone(),
                    })
                }
            },
            min_replicas_acked: file.redis_min_replicas_acked.unwrap_or(0),
        },
        _ => StoreConfig::Sled {
            path: resolve_path(base, file.path.as_deref().unwrap_or("data/portcullis.db")),
        },
    };
    if matches!(store, StoreConfig::Sled { .. })
        && (file.redis_sentinel.is_some() || file.redis_min_replicas_acked.is_some())
    {
        return invalid(
            "store.redis_sentinel",
            "redis_sentinel and redis_min_replicas_acked need store.backend: redis",
        );
    }
    let store_timeout = duration_or("store.timeout", &file.timeout, Duration::from_secs(2))?;
    let upgrade_socket = match (&file.upgrade_socket, &store) {
        (Some(p), _) => resolve_path(base, p),
        (None, StoreConfig::Sled { path }) => path.with_extension("upgrade.sock"),
        (None, StoreConfig::Redis { .. }) => PathBuf::from("/tmp/portcullis_upgrade.sock"),
    };
    Ok((store, store_timeout, upgrade_socket))
}
