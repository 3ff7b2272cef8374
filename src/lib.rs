//! portcullis: an authentication gateway on Pingora for legacy web applications.
//!
//! Crate map:
//! - `cli`: command line (serve, check, reload, unlock, demo, probe, ...)
//! - `config`: the YAML file: env substitution, strict wire types, validated model
//! - `server`: `build(config)`: wires everything into a Pingora server without running it
//! - `gateway`: the `ProxyHttp` implementation: request-head limits, the canonical target and
//!   host, routing, header hygiene, CORS, security headers, upstreams
//! - `auth`: the per-request authentication decision
//! - `tokens`: keyring, access JWT issue/verify with cache, external issuers, revocation view
//! - `clock`: injected time
//! - `reload`: SIGHUP and `portcullis reload`: the config file read again and swapped in
//! - `tls`: the served certificate, replaced on reload
//! - `respond`: the one place decisions and errors become HTTP answers
//! - `routes`: the `/auth/*` endpoints
//! - `store`: durable token state behind the `TokenStore` trait (sled now, Redis for scale-out)
//! - `health`: liveness and readiness probes
//! - `metrics`: Prometheus registry and the metrics listener
//! - `telemetry`: JSON/text logs, access and audit lines
//! - `demo`: the bundled demo upstream and config
//! - `preflight`: the checks `check`, `serve` and a reload run on the files a config names
//! - `probe`: the tiny HTTP client behind `portcullis probe`
//! - `secret`: `Secret<T>`, never printed
//! - `admin_cli`: `portcullis sessions`, a client of the admin API
//! - `unlock`: `portcullis unlock`, clearing throttling counters in a stopped store

pub mod admin_cli;
pub mod auth;
pub mod cli;
pub mod clock;
pub mod config;
pub mod demo;
pub mod gateway;
pub mod health;
pub mod metrics;
pub mod preflight;
pub mod probe;
pub mod reload;
pub mod respond;
pub mod routes;
pub mod secret;
pub mod server;
pub mod store;
pub mod telemetry;
pub mod tls;
pub mod tokens;
pub mod unlock;
