//! The verified-token cache: a token that verified once is looked up by its bytes on the
//! next request instead of being verified again.
//!
//! At most `tokens.cache_size` tokens. The caller checks `exp` and revocation after every
//! hit, so an entry never outlives its token; expired entries are evicted as new tokens come
//! in. quick_cache, hashed with foldhash (randomly seeded): a hit is a sharded read lock and
//! one short hash, about a third of what moka's bookkeeping cost per request. Only verified
//! tokens are inserted, so nobody can choose the keys.

use super::claims::Verified;
use std::sync::Arc;

/// Verified tokens by their bytes, as received.
pub struct VerifiedCache(
    quick_cache::sync::Cache<
        CachedToken,
        Arc<Verified>,
        quick_cache::UnitWeighter,
        foldhash::fast::RandomState,
    >,
);

/// How many trailing bytes of a token the cache hashes: in a compact JWS they are signature
/// bytes, which nobody can choose for a token that verifies.
pub(super) const HASHED_TAIL: usize = 32;

/// Hash the last [`HASHED_TAIL`] bytes. A lookup still compares the whole token, so a
/// forged token that shares a real one's tail is only a miss; hashing 32 bytes instead of a
/// whole RS256 token saves about 300 instructions per request.
#[inline]
fn hash_tail<H: std::hash::Hasher>(token: &[u8], state: &mut H) {
    state.write(&token[token.len().saturating_sub(HASHED_TAIL)..]);
}

/// A cache key: the whole token, as received.
#[derive(PartialEq, Eq)]
struct CachedToken(Box<[u8]>);

impl std::hash::Hash for CachedToken {
    #[inline]
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        hash_tail(&self.0, state);
    }
}

/// A lookup by the bytes of a request's token, without copying them.
struct TokenBytes<'a>(&'a [u8]);

impl std::hash::Hash for TokenBytes<'_> {
    #[inline]
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        hash_tail(self.0, state);
    }
}

impl quick_cache::Equivalent<CachedToken> for TokenBytes<'_> {
    #[inline]
    fn equivalent(&self, key: &CachedToken) -> bool {
        *self.0 == *key.0
    }
}

impl VerifiedCache {
    /// Room for `size` tokens (more than 0: with `tokens.cache_size: 0` there is no cache).
    pub fn new(size: u64) -> Self {
        let n = usize::try_from(size).unwrap_or(usize::MAX);
        VerifiedCache(quick_cache::sync::Cache::with(
            n,
            size,
            quick_cache::UnitWeighter,
            foldhash::fast::RandomState::default(),
            Default::default(),
        ))
    }

    /// The verified token with exactly these bytes, if cached. The per-request lookup.
    #[inline]
    pub fn get(&self, token: &[u8]) -> Option<Arc<Verified>> {
        self.0.get(&TokenBytes(token))
    }

    /// Remember a token that has just verified.
    #[inline]
    pub fn insert(&self, token: &[u8], verified: Arc<Verified>) {
        self.0.insert(CachedToken(token.into()), verified);
    }

    /// How many tokens are cached.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.0.len()
    }
}
