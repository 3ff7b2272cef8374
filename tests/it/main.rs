//! One integration-test binary: every test starts the real gateway binary on an ephemeral
//! loopback port in front of real upstream HTTP servers.

mod harness;

mod auth;
mod canonical;
mod cli;
mod cors;
mod demo;
mod differential;
mod limits;
mod protect;
mod proxy;
mod redis;
mod sentinel;
mod shutdown;
mod store;
mod tls;
mod tokens;
mod upgrade;
