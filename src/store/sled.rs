//! The embedded default store: one sled database in a directory.

use super::{StoreError, TokenStore};
use async_trait::async_trait;
use std::path::Path;
use std::time::{Duration, Instant};

/// sled-backed token store.
pub struct SledStore {
    db: sled::Db,
}

impl SledStore {
    /// Open (or create) the database at `path`.
    ///
    /// sled holds an exclusive file lock; during a zero-downtime upgrade the old process still
    /// holds it while the new one starts, so the open is retried for up to `wait`.
    pub fn open(path: &Path, wait: Duration) -> Result<Self, StoreError> {
        let deadline = Instant::now() + wait;
        loop {
            let result = sled::Config::new()
                .path(path)
                .cache_capacity(64 * 1024 * 1024)
                .mode(sled::Mode::HighThroughput)
                .open();
            match result {
                Ok(db) => return Ok(SledStore { db }),
                Err(sled::Error::Io(e))
                    if e.kind() == std::io::ErrorKind::WouldBlock && Instant::now() < deadline =>
                {
                    std::thread::sleep(Duration::from_millis(100));
                }
                Err(e) => {
                    return Err(StoreError::Unavailable(format!(
                        "cannot open sled database {}: {e}{}",
                        path.display(),
                        if matches!(&e, sled::Error::Io(io) if io.kind() == std::io::ErrorKind::WouldBlock)
                        {
                            " (another process holds it; several gateway processes need store.backend: redis)"
                        } else {
                            ""
                        }
                    )))
                }
            }
        }
    }

    /// The underlying database (for the rotation and revocation trees).
    pub fn db(&self) -> &sled::Db {
        &self.db
    }
}

#[async_trait]
impl TokenStore for SledStore {
    fn backend(&self) -> &'static str {
        "sled"
    }

    async fn ping(&self) -> Result<(), StoreError> {
        // A read of the metadata tree proves the database is open and readable.
        self.db
            .get(b"__ping")
            .map(|_| ())
            .map_err(|e| StoreError::Unavailable(e.to_string()))
    }
}
