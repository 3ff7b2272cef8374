//! Pruning in short steps: a cursor says where the last step stopped, so that a large
//! database is cleaned a few hundred entries at a time between requests.

use super::trees::{be_u64, decode, unavailable, user_key, Trees};
use crate::store::StoreError;
use std::ops::Bound;
use std::time::Duration;

/// Entries one prune job looks at: short enough that requests queued behind it wait well
/// under a millisecond.
pub(super) const PRUNE_STEP: usize = 256;

/// How long one `prune` call keeps going; the next call resumes where it stopped, so a large
/// database is cleaned over several minutes without ever crowding out requests.
pub(super) const PRUNE_BUDGET: Duration = Duration::from_millis(500);

/// Where a prune goes on: the tree it is in and the last key it looked at.
#[derive(Debug, Clone)]
pub(super) enum PruneCursor {
    Revocations(Option<Vec<u8>>),
    Families(Option<Vec<u8>>),
    Tokens(Option<Vec<u8>>),
    RateLimits(Option<Vec<u8>>),
    KnownDevices(Option<Vec<u8>>),
}

impl Trees {
    /// Look at up to [`PRUNE_STEP`] entries from `at`, forgetting what ended before `now`:
    /// revocations, then sessions (with their user index), then refresh-token hashes whose
    /// session is gone, then throttling counters whose events all left their window, then devices no
    /// longer known. Returns
    /// where to go on, `None` when done.
    pub(super) fn prune_step(
        &self,
        now: u64,
        at: PruneCursor,
    ) -> Result<Option<PruneCursor>, StoreError> {
        let (tree, after) = match &at {
            PruneCursor::Revocations(a) => (&self.revocations, a),
            PruneCursor::Families(a) => (&self.families, a),
            PruneCursor::Tokens(a) => (&self.tokens, a),
            PruneCursor::RateLimits(a) => (&self.rate_limits, a),
            PruneCursor::KnownDevices(a) => (&self.known_devices, a),
        };
        let entries = match after {
            Some(k) => tree.range::<&[u8], _>((Bound::Excluded(k.as_slice()), Bound::Unbounded)),
            None => tree.iter(),
        };
        let mut last = None;
        let mut seen = 0;
        for item in entries.take(PRUNE_STEP) {
            let (k, v) = item.map_err(unavailable)?;
            seen += 1;
            match at {
                PruneCursor::Revocations(_) => {
                    if be_u64(&v) < now {
                        self.revocations.remove(&k).map_err(unavailable)?;
                    }
                }
                PruneCursor::Families(_) => match decode(&v) {
                    Ok(f) if f.expires_at() < now => {
                        self.families.remove(&k).map_err(unavailable)?;
                        self.user_sessions
                            .remove(user_key(&f.user, &f.sid))
                            .map_err(unavailable)?;
                    }
                    Ok(_) => {}
                    // Left for an operator to look at; one bad record must not stop pruning.
                    Err(_) => {
                        tracing::warn!(target: "portcullis::store", "unreadable session record skipped by prune");
                    }
                },
                PruneCursor::Tokens(_) => {
                    if !self.families.contains_key(&v).map_err(unavailable)? {
                        self.tokens.remove(&k).map_err(unavailable)?;
                    }
                }
                PruneCursor::RateLimits(_) => {
                    if be_u64(&v) <= now {
                        self.rate_limits.remove(&k).map_err(unavailable)?;
                    }
                }
                PruneCursor::KnownDevices(_) => {
                    if be_u64(&v) <= now {
                        self.known_devices.remove(&k).map_err(unavailable)?;
                    }
                }
            }
            last = Some(k.to_vec());
        }
        if seen == PRUNE_STEP {
            return Ok(Some(match at {
                PruneCursor::Revocations(_) => PruneCursor::Revocations(last),
                PruneCursor::Families(_) => PruneCursor::Families(last),
                PruneCursor::Tokens(_) => PruneCursor::Tokens(last),
                PruneCursor::RateLimits(_) => PruneCursor::RateLimits(last),
                PruneCursor::KnownDevices(_) => PruneCursor::KnownDevices(last),
            }));
        }
        Ok(match at {
            PruneCursor::Revocations(_) => Some(PruneCursor::Families(None)),
            PruneCursor::Families(_) => Some(PruneCursor::Tokens(None)),
            PruneCursor::Tokens(_) => Some(PruneCursor::RateLimits(None)),
            PruneCursor::RateLimits(_) => Some(PruneCursor::KnownDevices(None)),
            PruneCursor::KnownDevices(_) => None,
        })
    }
}
