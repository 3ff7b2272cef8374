//! Durable token state behind one trait, so that the embedded sled database (default, one
//! gateway process) and Redis (several gateway instances) are interchangeable.
//!
//! The contract every backend keeps (see SPEC sections 4 and 5): a write is durable before the
//! call returns (sled flushed, Redis acknowledged), so the caller may send the response that
//! depends on it.

pub mod sled;

use async_trait::async_trait;
use std::sync::Arc;

/// Why a store call failed. Callers decide between "the store is down" (503, readiness) and
/// everything else.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("store unavailable: {0}")]
    Unavailable(String),
    #[error("store data corrupt: {0}")]
    Corrupt(String),
}

/// The durable state of the gateway.
#[async_trait]
pub trait TokenStore: Send + Sync + 'static {
    /// Short backend name for logs and readiness (`sled`, `redis`).
    fn backend(&self) -> &'static str;

    /// Cheap liveness check used by the readiness probe.
    async fn ping(&self) -> Result<(), StoreError>;
}

pub type SharedStore = Arc<dyn TokenStore>;
