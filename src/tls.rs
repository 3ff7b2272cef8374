//! The certificate the TLS listeners serve: loaded from the configured files, replaced on a
//! reload without touching the listeners (new handshakes get the new one, open connections
//! keep theirs), and its expiry for the metrics.

use arc_swap::ArcSwap;
use pingora::tls::sign::CertifiedKey;
use pingora::tls::{ClientHello, ResolvesServerCert};
use std::path::Path;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;

/// The served certificate; every handshake asks it.
#[derive(Debug)]
pub struct CertSwitch {
    current: ArcSwap<CertifiedKey>,
    not_after: AtomicI64,
}

/// A certificate chain and its key, checked to fit, with the leaf's expiry (unix seconds).
pub struct LoadedCert {
    key: Arc<CertifiedKey>,
    not_after: i64,
}

/// Read `cert` (PEM chain) and `key` (PEM private key); the error names what is wrong.
pub fn load(cert: &Path, key: &Path) -> Result<LoadedCert, String> {
    let loaded =
        pingora::tls::load_certs_and_key_files(&cert.to_string_lossy(), &key.to_string_lossy());
    let (chain, private) = match loaded {
        Ok(Some(pair)) => pair,
        _ => {
            return Err(format!(
                "{} must hold a PEM certificate and {} a PEM private key",
                cert.display(),
                key.display()
            ))
        }
    };
    pingora::tls::install_default_crypto_provider();
    let provider =
        rustls::crypto::CryptoProvider::get_default().ok_or("no TLS crypto provider installed")?;
    let signer = provider
        .key_provider
        .load_private_key(private)
        .map_err(|e| format!("{}: unusable private key: {e}", key.display()))?;
    let not_after = chain
        .first()
        .and_then(|leaf| x509_parser::parse_x509_certificate(leaf).ok())
        .map(|(_, c)| c.validity().not_after.timestamp())
        .ok_or_else(|| format!("{}: the first certificate cannot be read", cert.display()))?;
    let certified = CertifiedKey::new(chain, signer);
    certified
        .keys_match()
        .map_err(|e| format!("certificate and key do not fit together: {e}"))?;
    Ok(LoadedCert {
        key: Arc::new(certified),
        not_after,
    })
}

impl CertSwitch {
    pub fn new(first: LoadedCert) -> Self {
        CertSwitch {
            not_after: AtomicI64::new(first.not_after),
            current: ArcSwap::new(first.key),
        }
    }

    /// Serve `next` to every handshake from now on.
    pub fn replace(&self, next: LoadedCert) {
        self.current.store(next.key);
        self.not_after.store(next.not_after, Ordering::Relaxed);
    }

    /// When the served certificate expires (unix seconds).
    pub fn not_after(&self) -> i64 {
        self.not_after.load(Ordering::Relaxed)
    }
}

impl ResolvesServerCert for CertSwitch {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.load_full())
    }
}
