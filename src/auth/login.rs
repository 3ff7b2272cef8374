//! Password login: throttling (see [`super::ratelimit`]), the password check at constant
//! cost for every failure, the device cookie of a browser that signed in, and the audit
//! lines. The endpoints answer what it decides.

use super::device::DeviceCookies;
use super::password::{Check, PasswordService, MAX_PASSWORD_LEN};
use super::ratelimit::{login_buckets, throttle};
use super::users::{User, UserDirectory};
use super::AuthState;
use crate::store::{Account, SharedStore};
use std::sync::Arc;

/// What a password login needs besides [`AuthState`].
pub struct PasswordLogin {
    pub users: Arc<UserDirectory>,
    pub passwords: PasswordService,
    pub devices: DeviceCookies,
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

/// One login attempt: what was typed and who sent it.
pub struct Attempt<'a> {
    pub email: &'a str,
    pub password: String,
    /// The client address (or `unknown`).
    pub client: &'a str,
    /// The device cookie the browser sent, if any.
    pub device_cookie: Option<&'a str>,
    pub request_id: &'a str,
    pub user_agent: &'a str,
}

/// A successful password login: the user, and the device cookie value for this browser.
pub struct LoggedIn {
    pub user: Arc<User>,
    pub device_cookie: Option<String>,
}

impl PasswordLogin {
    pub fn new(store: SharedStore, users: Arc<UserDirectory>) -> Self {
        PasswordLogin {
            users,
            passwords: PasswordService::new(),
            devices: DeviceCookies::new(store),
        }
    }
}

/// Check the password of `attempt.email`, throttled, at constant cost for every failure.
pub async fn password_login(
    state: &AuthState,
    login: &PasswordLogin,
    attempt: Attempt<'_>,
) -> Result<LoggedIn, LoginFailure> {
    if attempt.password.len() > MAX_PASSWORD_LEN || attempt.email.len() > 320 {
        return Err(LoginFailure::TooLong);
    }
    let now = state.tokens.clock.now();
    let store = state.store.as_ref();
    let user = login.users.by_email(attempt.email);
    let account = match &user {
        Some(u) => Account::User(u.id.clone()),
        None => Account::Email(attempt.email.to_string()),
    };
    let device = match (&user, attempt.device_cookie) {
        (Some(u), Some(cookie)) => login
            .devices
            .recognise(cookie, &u.id)
            .await
            .map_err(|_| LoginFailure::Store)?,
        _ => None,
    };
    let named = user.as_ref().map_or("(unknown)", |u| u.id.as_str());
    let buckets = login_buckets(
        &state.config.rate_limits,
        &account,
        attempt.client,
        device.as_deref(),
    );
    let (client_ip, request_id, user_agent) =
        (attempt.client, attempt.request_id, attempt.user_agent);
    match throttle(store, &buckets, now, false).await {
        Ok(Ok(())) => {}
        Ok(Err(limited)) => {
            tracing::warn!(target: "portcullis::audit", event = "login_rate_limited", user = named, reason = limited.bucket, retry_after = limited.retry_after, known_device = device.is_some(), client_ip, request_id, user_agent);
            return Err(LoginFailure::RateLimited(limited.retry_after));
        }
        Err(_) => return Err(LoginFailure::Store),
    }
    let hash = user
        .as_ref()
        .filter(|u| !u.disabled)
        .map(|u| u.password_hash.expose().clone());
    match login.passwords.verify(attempt.password, hash).await {
        Check::Match => {
            let user = user.expect("a match needs a user");
            let device_cookie = login.devices.issue(&user.id, device.as_deref()).await.ok();
            Ok(LoggedIn {
                user,
                device_cookie,
            })
        }
        Check::Busy => Err(LoginFailure::Busy),
        Check::NoMatch => {
            let reason = match &user {
                None => "unknown_user",
                Some(u) if u.disabled => "user_disabled",
                Some(_) => "wrong_password",
            };
            tracing::warn!(target: "portcullis::audit", event = "login_failed", user = named, reason, known_device = device.is_some(), client_ip, request_id, user_agent);
            if throttle(store, &buckets, now, true).await.is_err() {
                return Err(LoginFailure::Store);
            }
            // Full now (this failure was the last one it takes)?
            if let Ok(Err(limited)) = throttle(store, &buckets, now, false).await {
                tracing::warn!(target: "portcullis::audit", event = "login_throttled", user = named, reason = limited.bucket, retry_after = limited.retry_after, client_ip, request_id, user_agent);
            }
            Err(LoginFailure::Invalid)
        }
    }
}
