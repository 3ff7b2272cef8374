//! Password login: the rate limits (per client address and per account), the password check
//! at constant cost for every failure, and the audit lines. The endpoints answer what it
//! decides.

use super::password::{Check, PasswordService, MAX_PASSWORD_LEN};
use super::ratelimit::RateLimiter;
use super::users::{User, UserDirectory};
use super::AuthState;
use std::sync::Arc;

/// What a password login needs besides [`AuthState`].
pub struct PasswordLogin {
    pub users: Arc<UserDirectory>,
    pub passwords: PasswordService,
    /// Login and refresh rate limits (shared windows live in the store when it has them).
    pub limiter: RateLimiter,
}

/// Why a password login did not succeed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum LoginFailure {
    #[error("wrong email or password")]
    Invalid,
    #[error("rate limited for {0} s")]
    RateLimited(u64),
    #[error("too many password checks in progress")]
    Busy,
    #[error("email or password too long")]
    TooLong,
    #[error("the store did not answer")]
    Store,
}

impl PasswordLogin {
    pub fn new(config: &crate::config::Config, users: Arc<UserDirectory>) -> Self {
        let rl = &config.rate_limits;
        let longest = rl
            .login_per_ip
            .window
            .max(rl.login_per_account.window)
            .max(rl.refresh_per_ip.window);
        PasswordLogin {
            users,
            passwords: PasswordService::new(),
            limiter: RateLimiter::new(longest),
        }
    }
}

/// Check the password of `email`, with rate limits and constant cost for every failure.
pub async fn password_login(
    state: &AuthState,
    login: &PasswordLogin,
    client: &str,
    email: &str,
    password: String,
) -> Result<Arc<User>, LoginFailure> {
    if password.len() > MAX_PASSWORD_LEN || email.len() > 320 {
        return Err(LoginFailure::TooLong);
    }
    let now = state.tokens.clock.now();
    let limits = &state.config.rate_limits;
    let ip_key = format!("login_ip:{client}");
    let account_key = format!("login_account:{}", email.trim().to_ascii_lowercase());
    let store = state.store.as_ref();
    let by_ip = login
        .limiter
        .shared(store, &ip_key, limits.login_per_ip, now, false)
        .await;
    let by_account = login
        .limiter
        .shared(store, &account_key, limits.login_per_account, now, false)
        .await;
    let limited = match (by_ip, by_account) {
        (Ok(a), Ok(b)) => a.and(b),
        _ => return Err(LoginFailure::Store),
    };
    if let Err(retry) = limited {
        tracing::warn!(target: "portcullis::audit", event = "login_rate_limited", client_ip = %client, retry_after = retry);
        return Err(LoginFailure::RateLimited(retry));
    }
    let user = login.users.by_email(email);
    let hash = user
        .as_ref()
        .filter(|u| !u.disabled)
        .map(|u| u.password_hash.expose().clone());
    match login.passwords.verify(password, hash).await {
        Check::Match => Ok(user.expect("a match needs a user")),
        Check::Busy => Err(LoginFailure::Busy),
        Check::NoMatch => {
            let hits = async {
                login
                    .limiter
                    .hit_shared(store, &ip_key, limits.login_per_ip, now)
                    .await?;
                login
                    .limiter
                    .hit_shared(store, &account_key, limits.login_per_account, now)
                    .await
            };
            if hits.await.is_err() {
                return Err(LoginFailure::Store);
            }
            tracing::warn!(target: "portcullis::audit", event = "login_failed", client_ip = %client, known_user = user.is_some());
            if let Ok(Err(_)) = login
                .limiter
                .shared(store, &account_key, limits.login_per_account, now, false)
                .await
            {
                tracing::warn!(target: "portcullis::audit", event = "account_locked", user = user.as_ref().map(|u| u.id.as_str()).unwrap_or("(unknown)"), window_secs = limits.login_per_account.window.as_secs());
            }
            Err(LoginFailure::Invalid)
        }
    }
}
