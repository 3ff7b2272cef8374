//! The device cookie: an HttpOnly cookie a successful login sets, naming that browser as one
//! the account signed in from. A failed login from such a browser counts against the device,
//! not the account, so a stranger who fails from elsewhere cannot lock the owner's known
//! browser out (OWASP's device cookies). The value is `<device id>.<MAC>`, the MAC binding it
//! to the account under a key derived from the store's secret, so every instance sharing the
//! store recognises it and nobody can make one for an account.

use crate::store::{SharedStore, StoreError};
use crate::tokens::access::random_id;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;

/// How long a browser stays known after its last successful login.
pub const DEVICE_COOKIE_TTL: u64 = 90 * 24 * 3600;

/// Issues and recognises device cookies.
pub struct DeviceCookies {
    store: SharedStore,
    key: tokio::sync::OnceCell<[u8; 32]>,
}

impl DeviceCookies {
    pub fn new(store: SharedStore) -> Self {
        DeviceCookies {
            store,
            key: tokio::sync::OnceCell::new(),
        }
    }

    /// The MAC key: the store's secret, put to this one use.
    async fn key(&self) -> Result<&[u8; 32], StoreError> {
        self.key
            .get_or_try_init(|| async {
                let secret = self.store.secret().await?;
                let mut mac = Hmac::<Sha256>::new_from_slice(&secret)
                    .map_err(|_| StoreError::Corrupt("store secret unusable".into()))?;
                mac.update(b"portcullis device cookie");
                Ok(mac.finalize().into_bytes().into())
            })
            .await
    }

    async fn tag(&self, user: &str, device: &str) -> Result<String, StoreError> {
        let mut mac = Hmac::<Sha256>::new_from_slice(self.key().await?)
            .map_err(|_| StoreError::Corrupt("device key unusable".into()))?;
        mac.update(user.as_bytes());
        mac.update(&[0]);
        mac.update(device.as_bytes());
        Ok(URL_SAFE_NO_PAD.encode(&mac.finalize().into_bytes()[..16]))
    }

    /// The device id in `cookie` when it was issued to `user`.
    pub async fn recognise(&self, cookie: &str, user: &str) -> Result<Option<String>, StoreError> {
        let Some((device, tag)) = cookie.split_once('.') else {
            return Ok(None);
        };
        if device.is_empty() || device.len() > 64 {
            return Ok(None);
        }
        let expected = self.tag(user, device).await?;
        let same =
            expected.len() == tag.len() && bool::from(expected.as_bytes().ct_eq(tag.as_bytes()));
        Ok(same.then(|| device.to_string()))
    }

    /// The cookie value for `user` on this browser: the device it already had, else a new one.
    pub async fn issue(&self, user: &str, known: Option<&str>) -> Result<String, StoreError> {
        let device = known.map(str::to_string).unwrap_or_else(|| random_id(16));
        let tag = self.tag(user, &device).await?;
        Ok(format!("{device}.{tag}"))
    }
}

/// A person's name for the browser `user_agent` names: "Firefox on Linux".
pub fn label(user_agent: &str) -> String {
    let parsed = woothee::parser::Parser::new().parse(user_agent);
    let known = |v: &str| !v.is_empty() && v != "UNKNOWN";
    match parsed {
        Some(r) if known(r.name) && known(r.os) => format!("{} on {}", r.name, r.os),
        Some(r) if known(r.name) => r.name.to_string(),
        _ => "Unknown browser".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::label;

    #[test]
    fn labels_name_the_browser_and_system() {
        assert_eq!(
            label("Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0"),
            "Firefox on Linux"
        );
        assert_eq!(
            label("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0.0.0 Safari/537.36"),
            "Chrome on Windows 10"
        );
        assert_eq!(label("curl/8.5.0"), "HTTP Library");
        assert_eq!(label(""), "Unknown browser");
    }
}
