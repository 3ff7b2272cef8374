//! Command line: `serve` (default), `check`, `demo`, `probe`.

use clap::{Parser, Subcommand};
use std::path::PathBuf;

#[derive(Debug, Parser)]
#[command(
    name = "portcullis",
    version,
    about = "Authentication gateway for legacy web applications"
)]
pub struct Cli {
    /// Configuration file (default: $PORTCULLIS_CONFIG, then config/portcullis.yaml).
    #[arg(short = 'c', long = "config", global = true, env = "PORTCULLIS_CONFIG")]
    pub config: Option<PathBuf>,

    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the gateway (the default).
    Serve {
        /// Take over the sockets of a running instance (zero-downtime upgrade; then send
        /// SIGQUIT to the old process).
        #[arg(short = 'u', long)]
        upgrade: bool,
    },
    /// Validate the config, keys and users file; exit 0 when usable, 1 otherwise.
    Check,
    /// Gateway + bundled demo upstream + demo user, embedded store under data/.
    Demo {
        #[arg(long, default_value_t = 8080)]
        port: u16,
    },
    /// Print an argon2id PHC string for the users file.
    HashPassword {
        /// Read the password from standard input (for scripts) instead of prompting.
        #[arg(long)]
        password_stdin: bool,
    },
    /// Write a new signing key pair (PKCS#8 private PEM, public PEM) and print the config line.
    Keygen {
        /// EdDSA | ES256 | RS256
        #[arg(long)]
        alg: String,
        /// Key id (`kid`), also the file name stem.
        #[arg(long)]
        kid: String,
        /// Directory for the PEM files (created if missing).
        #[arg(long)]
        out: std::path::PathBuf,
    },
    /// The sessions of the running gateway, through its admin API (`admin` in the config).
    Sessions {
        #[command(subcommand)]
        action: SessionsCommand,
    },
    /// Users' second factors, through the running gateway's admin API (`admin` in the config).
    Mfa {
        #[command(subcommand)]
        action: MfaCommand,
    },
    /// Check the config like `check`, then make the running gateway reload it (SIGHUP to the
    /// process in `server.pid_file`).
    Reload,
    /// Forget the login throttling counters of a user or a client address (with sled: while
    /// the gateway is stopped; with Redis: at any time).
    #[command(group(clap::ArgGroup::new("who").required(true).args(["user", "ip"])))]
    Unlock {
        /// A user id or email.
        #[arg(long)]
        user: Option<String>,
        /// A client IP address.
        #[arg(long)]
        ip: Option<String>,
    },
    /// Exit 0 when the gateway answers its liveness probe (Docker HEALTHCHECK), over http or
    /// https (the certificate is not checked: the probe runs on loopback).
    Probe {
        #[arg(long, default_value = "http://127.0.0.1:8080/healthz")]
        url: String,
        /// Seconds to wait for an answer.
        #[arg(long, default_value_t = 3)]
        timeout: u64,
    },
}

#[derive(Debug, Subcommand)]
pub enum SessionsCommand {
    /// A user's live sessions.
    List {
        #[arg(long)]
        user: String,
    },
    /// End sessions: every session of a user, one session, or every session of everyone.
    #[command(group(clap::ArgGroup::new("which").required(true).args(["user", "sid", "all"])))]
    Revoke {
        #[arg(long)]
        user: Option<String>,
        #[arg(long)]
        sid: Option<String>,
        /// The incident kill switch: every session of every user.
        #[arg(long)]
        all: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum MfaCommand {
    /// Remove a user's second factor (a lost authenticator), so that they can enrol a new one.
    Reset {
        /// The user id (the key in the users file).
        #[arg(long)]
        user: String,
    },
}

impl Cli {
    /// The config path: `-c`, then `$PORTCULLIS_CONFIG`, then the default.
    pub fn config_path(&self) -> PathBuf {
        self.config
            .clone()
            .unwrap_or_else(|| PathBuf::from("config/portcullis.yaml"))
    }
}
