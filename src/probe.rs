//! `portcullis probe`: a tiny HTTP/1.1 GET for container health checks, so images need no
//! curl. `http://` and `https://` URLs (the probe talks to a local listener, so a gateway
//! that listens only with TLS can still be checked).

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, ClientConnection, DigitallySignedStruct, SignatureScheme, StreamOwned};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::sync::Arc;
use std::time::Duration;

/// Why no HTTP status came back, printed after the URL that was probed.
#[derive(Debug, thiserror::Error)]
#[error("{url}: {failure}")]
pub struct ProbeError {
    pub url: String,
    pub failure: ProbeFailure,
}

/// The step of the GET that failed.
#[derive(Debug, thiserror::Error)]
pub enum ProbeFailure {
    #[error("only http:// and https:// URLs are supported")]
    NotHttpUrl,
    #[error("cannot resolve {authority}: {source}")]
    Resolve {
        authority: String,
        source: std::io::Error,
    },
    #[error("no address for {0}")]
    NoAddress(String),
    #[error("cannot connect: {0}")]
    Connect(#[source] std::io::Error),
    #[error("{0:?} is not a valid TLS server name")]
    ServerName(String),
    #[error("cannot start TLS: {0}")]
    Tls(#[source] rustls::Error),
    #[error("TLS handshake failed: {0}")]
    Handshake(#[source] std::io::Error),
    #[error("cannot send: {0}")]
    Send(#[source] std::io::Error),
    #[error("no answer: {0}")]
    NoAnswer(#[source] std::io::Error),
    #[error("not an HTTP answer")]
    NotHttpAnswer,
}

/// GET `url`; `Ok(status)` when an HTTP answer came back.
pub fn probe(url: &str, timeout: Duration) -> Result<u16, ProbeError> {
    get(url, timeout).map_err(|failure| ProbeError {
        url: url.to_string(),
        failure,
    })
}

fn get(url: &str, timeout: Duration) -> Result<u16, ProbeFailure> {
    let (tls, rest) = if let Some(rest) = url.strip_prefix("https://") {
        (true, rest)
    } else if let Some(rest) = url.strip_prefix("http://") {
        (false, rest)
    } else {
        return Err(ProbeFailure::NotHttpUrl);
    };
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let (host, has_port) = split_authority(authority);
    let addr = resolve(authority, has_port, if tls { 443 } else { 80 })?;
    let mut tcp = TcpStream::connect_timeout(&addr, timeout).map_err(ProbeFailure::Connect)?;
    tcp.set_read_timeout(Some(timeout)).ok();
    tcp.set_write_timeout(Some(timeout)).ok();
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {authority}\r\n\
         User-Agent: portcullis-probe\r\nConnection: close\r\n\r\n"
    );
    if !tls {
        return exchange(tcp, &request);
    }
    let name = ServerName::try_from(host.to_string())
        .map_err(|_| ProbeFailure::ServerName(host.to_string()))?;
    let config = any_certificate_config().map_err(ProbeFailure::Tls)?;
    let mut conn = ClientConnection::new(config, name).map_err(ProbeFailure::Tls)?;
    // Handshake first, so that a listener that does not speak TLS is named as such rather
    // than as a failure to send the request.
    while conn.is_handshaking() {
        conn.complete_io(&mut tcp)
            .map_err(ProbeFailure::Handshake)?;
    }
    exchange(StreamOwned::new(conn, tcp), &request)
}

/// The host (without brackets around an IPv6 address) and whether a port follows it.
fn split_authority(authority: &str) -> (&str, bool) {
    if let Some(rest) = authority.strip_prefix('[') {
        if let Some((host, tail)) = rest.split_once(']') {
            return (host, tail.starts_with(':'));
        }
    }
    match authority.rsplit_once(':') {
        Some((host, _)) => (host, true),
        None => (authority, false),
    }
}

fn resolve(authority: &str, has_port: bool, default_port: u16) -> Result<SocketAddr, ProbeFailure> {
    let with_port = if has_port {
        authority.to_string()
    } else {
        format!("{authority}:{default_port}")
    };
    with_port
        .to_socket_addrs()
        .map_err(|source| ProbeFailure::Resolve {
            authority: authority.to_string(),
            source,
        })?
        .next()
        .ok_or_else(|| ProbeFailure::NoAddress(authority.to_string()))
}

/// Send the request and read the status from the start of the answer.
fn exchange(mut stream: impl Read + Write, request: &str) -> Result<u16, ProbeFailure> {
    stream
        .write_all(request.as_bytes())
        .map_err(ProbeFailure::Send)?;
    let mut head = [0u8; 64];
    let mut read = 0;
    while read < 12 {
        match stream.read(&mut head[read..]) {
            Ok(0) => break,
            Ok(n) => read += n,
            Err(e) => return Err(ProbeFailure::NoAnswer(e)),
        }
    }
    let line = String::from_utf8_lossy(&head[..read]);
    line.split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .filter(|_| line.starts_with("HTTP/1."))
        .ok_or(ProbeFailure::NotHttpAnswer)
}

/// A client configuration that accepts any server certificate.
///
/// The probe is a health check on loopback (Docker HEALTHCHECK): nobody sits between it and
/// the gateway, and the gateway's certificate names its public host (or is self-signed), not
/// `127.0.0.1`. What is checked is that the listener completes a handshake and answers, not
/// who it is. The handshake's own signatures are still verified.
pub fn any_certificate_config() -> Result<Arc<ClientConfig>, rustls::Error> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyCertificate(provider)))
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// Trusts every certificate; see [`any_certificate_config`] for why that is enough here.
#[derive(Debug)]
struct AnyCertificate(Arc<CryptoProvider>);

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn authority_host_and_port() {
        assert_eq!(split_authority("127.0.0.1:8443"), ("127.0.0.1", true));
        assert_eq!(split_authority("localhost"), ("localhost", false));
        assert_eq!(split_authority("[::1]:8443"), ("::1", true));
        assert_eq!(split_authority("[::1]"), ("::1", false));
    }

    #[test]
    fn other_schemes_are_refused() {
        let e = probe("ftp://127.0.0.1/", Duration::from_secs(1)).unwrap_err();
        assert!(matches!(e.failure, ProbeFailure::NotHttpUrl), "{e}");
    }
}
