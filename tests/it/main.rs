//! One integration-test binary: every test starts the real gateway binary on an ephemeral
//! loopback port in front of real upstream HTTP servers.

mod harness;

/// The store contract suite, compiled from the library's own source (the library builds it
/// for its unit tests only) next to the store items it names through `super`. A `path` on an
/// inline module names a directory, relative to this file.
#[path = "../../src/store"]
mod store_contract {
    pub use portcullis::store::*;
    pub mod contract;
}

mod admin;
mod auth;
mod browser;
mod canonical;
mod check_warnings;
mod cli;
mod cors;
mod demo;
mod deploy_paths;
mod differential;
mod inject;
mod limits;
mod logout_page;
mod mfa;
mod observability;
mod protect;
mod proxy;
mod readiness;
mod redis;
mod reload;
mod sentinel;
mod sessions;
mod shutdown;
mod store;
mod throttling;
mod tls;
mod tokens;
mod upgrade;
