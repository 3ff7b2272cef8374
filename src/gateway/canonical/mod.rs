//! The canonical request: one form of the request target and the host that routing decides
//! on and that the application receives.
//!
//! Servers behind the gateway resolve a target in their own ways: servlet containers drop
//! `;params` from every segment, IIS strips trailing dots and spaces, some frameworks decode
//! twice or fold Unicode case, nginx drops a host's trailing dot. Whatever could resolve to a
//! different resource on some server is either brought to one form here (dot-segments,
//! `//`, unreserved escapes, `;params`, host case, trailing dot, default port) or refused
//! with 400 before any route is chosen. A target that cannot be parsed is an error, never `/`.

mod host;
mod target;
#[cfg(test)]
mod tests;

pub use host::{canonical_host, Host};
pub use target::{parse_target, Target};

/// Why a request target was refused (400).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TargetError {
    #[error("the request target must be an absolute path starting with '/'")]
    NotOriginForm,
    #[error("the request target '*' is only allowed with OPTIONS")]
    Asterisk,
    #[error("the absolute-form request target names another host than the Host header")]
    AuthorityMismatch,
    #[error("the path contains an encoded '/', '\\', ';' or a control character")]
    EncodedSeparator,
    #[error("the path contains a raw '\\', '#' or control character")]
    ForbiddenCharacter,
    #[error("the path contains an invalid percent-escape")]
    BadEscape,
    #[error("the path climbs above the root")]
    AboveRoot,
}

/// Why a host was refused (400).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum HostError {
    #[error("the Host header is missing")]
    Missing,
    #[error("more than one Host header")]
    Repeated,
    #[error("the host is not a valid DNS name or IP address")]
    Invalid,
}

/// A path form some server resolves differently, refused on routes with `strict_paths`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Unusual {
    #[error("a path segment ends in '.' or a space")]
    TrailingDotOrSpace,
    #[error("the path contains non-ASCII characters or escapes")]
    NonAscii,
    #[error("the path contains an encoded percent-escape")]
    DoubleEncoded,
}
