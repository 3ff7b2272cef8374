//! Login and refresh throttling, counted in the store: shared by every instance with Redis,
//! kept across restarts with sled. A failed login counts in every bucket that applies to it:
//! its client address (generous: an office behind one NAT), the account from that address,
//! and either the browser's device cookie for that account or, without one, the account
//! itself. So one user's typos do not lock out their colleagues, and a stranger failing from
//! many addresses does not lock the account's known browsers out.

use crate::config::{Rate, RateLimits};
use crate::store::{Account, StoreError, Throttle, TokenStore};

/// One counter and its limit; `name` is the config key, for logs and metrics.
#[derive(Debug, Clone, Copy)]
pub struct Bucket<'a> {
    pub throttle: Throttle<'a>,
    pub rate: Rate,
    pub name: &'static str,
}

/// The buckets a login attempt of `account` from `ip` counts in; `device` is the id of the
/// browser's device cookie when it was issued to this account.
pub fn login_buckets<'a>(
    limits: &RateLimits,
    account: &'a Account,
    ip: &'a str,
    device: Option<&'a str>,
) -> [Bucket<'a>; 3] {
    let last = match device {
        Some(d) => Bucket {
            throttle: Throttle::Device(account, d),
            rate: limits.login_per_device,
            name: "login_per_device",
        },
        None => Bucket {
            throttle: Throttle::Account(account),
            rate: limits.login_per_account,
            name: "login_per_account",
        },
    };
    [
        Bucket {
            throttle: Throttle::LoginIp(ip),
            rate: limits.login_per_ip,
            name: "login_per_ip",
        },
        Bucket {
            throttle: Throttle::AccountIp(account, ip),
            rate: limits.login_per_account_ip,
            name: "login_per_account_ip",
        },
        last,
    ]
}

/// The bucket that refreshes from `ip` count in.
pub fn refresh_bucket<'a>(limits: &RateLimits, ip: &'a str) -> Bucket<'a> {
    Bucket {
        throttle: Throttle::RefreshIp(ip),
        rate: limits.refresh_per_ip,
        name: "refresh_per_ip",
    }
}

/// A full bucket: which one, and the seconds until it takes an attempt again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limited {
    pub bucket: &'static str,
    pub retry_after: u64,
}

/// `Ok(Err(..))` when any of `buckets` is full (the longest wait is reported); with `add`,
/// the attempt counts in each bucket that still had room.
pub async fn throttle(
    store: &dyn TokenStore,
    buckets: &[Bucket<'_>],
    now: u64,
    add: bool,
) -> Result<Result<(), Limited>, StoreError> {
    let mut limited: Option<Limited> = None;
    for b in buckets {
        if let Err(retry_after) = store.rate_limit(b.throttle, b.rate, now, add).await? {
            if limited.is_none_or(|l| retry_after > l.retry_after) {
                limited = Some(Limited {
                    bucket: b.name,
                    retry_after,
                });
            }
        }
    }
    Ok(limited.map_or(Ok(()), Err))
}
