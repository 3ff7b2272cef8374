//! `portcullis`: parse the command line, load the config, run.

use clap::Parser;
use portcullis::cli::{Cli, Command};
use portcullis::{config, demo, probe, server, telemetry};
use std::error::Error;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

/// A command's failure: printed as one line naming the file, key or argument, then exit 1.
type Outcome<T = ()> = Result<T, Box<dyn Error>>;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match &cli.command {
        None => serve(&cli, false),
        Some(Command::Serve { upgrade }) => serve(&cli, *upgrade),
        Some(Command::Check) => check(&cli),
        Some(Command::Demo { port }) => run_demo(*port),
        Some(Command::Keygen { alg, kid, out }) => keygen(alg, kid, out),
        Some(Command::HashPassword { password_stdin }) => hash_password(*password_stdin),
        Some(Command::Reload) => reload(&cli),
        Some(Command::Sessions { action }) => sessions(&cli, action),
        Some(Command::Mfa { action }) => mfa(&cli, action),
        Some(Command::Unlock { user, ip }) => unlock(&cli, user.as_deref(), ip.as_deref()),
        Some(Command::Probe { url, timeout }) => {
            match probe::probe(url, Duration::from_secs(*timeout)) {
                Ok(status) if (200..300).contains(&status) => Ok(()),
                Ok(status) => Err(format!("{url}: unhealthy (HTTP {status})").into()),
                Err(e) => Err(e.into()),
            }
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(line) => {
            eprintln!("portcullis: {line}");
            ExitCode::FAILURE
        }
    }
}

fn load(cli: &Cli) -> Outcome<config::Config> {
    Ok(config::load(&cli.config_path())?)
}

fn serve(cli: &Cli, upgrade: bool) -> Outcome {
    let config = load(cli)?;
    run(config, upgrade, Vec::new())
}

fn run(
    config: config::Config,
    upgrade: bool,
    extra_services: Vec<Box<dyn pingora::services::ServiceWithDependents>>,
) -> Outcome {
    telemetry::init(&config.logging);
    for w in &config.warnings {
        tracing::warn!(target: "portcullis::config", "{w}");
    }
    let options = server::BuildOptions {
        upgrade,
        extra_services,
    };
    let built = server::build(Arc::new(config), options)?;
    tracing::info!(target: "portcullis::server", "portcullis started");
    built.run();
    Ok(())
}

fn check(cli: &Cli) -> Outcome {
    let path = cli.config_path();
    let config = load(cli)?;
    server::preflight(&config)?;
    for w in &config.warnings {
        println!("warning: {}: {w}", path.display());
    }
    println!("{}: ok", path.display());
    Ok(())
}

fn sessions(cli: &Cli, action: &portcullis::cli::SessionsCommand) -> Outcome {
    use portcullis::admin_cli::Action;
    use portcullis::cli::SessionsCommand;
    let config = load(cli)?;
    let action = match action {
        SessionsCommand::List { user } => Action::List { user },
        SessionsCommand::Revoke {
            user: Some(user), ..
        } => Action::RevokeUser { user },
        SessionsCommand::Revoke { sid: Some(sid), .. } => Action::RevokeSession { sid },
        SessionsCommand::Revoke { all: true, .. } => Action::RevokeAll,
        SessionsCommand::Revoke { .. } => return Err("give --user ID, --sid SID or --all".into()),
    };
    println!("{}", portcullis::admin_cli::run(&config, action)?);
    Ok(())
}

fn mfa(cli: &Cli, action: &portcullis::cli::MfaCommand) -> Outcome {
    use portcullis::admin_cli::Action;
    use portcullis::cli::MfaCommand;
    let config = load(cli)?;
    let action = match action {
        MfaCommand::Reset { user } => Action::MfaReset { user },
    };
    println!("{}", portcullis::admin_cli::run(&config, action)?);
    Ok(())
}

fn reload(cli: &Cli) -> Outcome {
    let path = cli.config_path();
    let config = load(cli)?;
    server::preflight(&config)?;
    let pid = portcullis::reload::signal_running(&config)?;
    println!("{}: ok; reload signalled to process {pid}", path.display());
    Ok(())
}

fn unlock(cli: &Cli, user: Option<&str>, ip: Option<&str>) -> Outcome {
    use portcullis::unlock::Target;
    let config = load(cli)?;
    let target = match (user, ip) {
        (Some(u), _) => Target::User(u),
        (None, Some(ip)) => Target::Ip(ip),
        (None, None) => return Err("give --user ID or --ip ADDR".into()),
    };
    let removed = portcullis::unlock::unlock(&config, target)?;
    println!("unlocked: {removed} throttling counter(s) cleared");
    Ok(())
}

fn hash_password(from_stdin: bool) -> Outcome {
    use std::io::{BufRead, Read};
    let mut password = String::new();
    if from_stdin {
        std::io::stdin()
            .read_to_string(&mut password)
            .map_err(|e| format!("cannot read the password from stdin: {e}"))?;
    } else {
        eprint!("Password (input is shown; use --password-stdin in scripts): ");
        std::io::stdin()
            .lock()
            .read_line(&mut password)
            .map_err(|e| format!("cannot read the password: {e}"))?;
    }
    let password = password.strip_suffix('\n').unwrap_or(&password);
    let password = password.strip_suffix('\r').unwrap_or(password);
    if password.is_empty() {
        return Err("the password is empty".into());
    }
    if password.len() > portcullis::auth::password::MAX_PASSWORD_LEN {
        return Err(format!(
            "the password is longer than {} bytes",
            portcullis::auth::password::MAX_PASSWORD_LEN
        )
        .into());
    }
    println!("{}", portcullis::auth::password::hash_password(password));
    Ok(())
}

fn keygen(alg: &str, kid: &str, out: &std::path::Path) -> Outcome {
    let algorithm = match alg {
        "EdDSA" => config::Algorithm::EdDSA,
        "ES256" => config::Algorithm::ES256,
        "RS256" => config::Algorithm::RS256,
        "HS256" => config::Algorithm::HS256,
        other => {
            return Err(format!("--alg: expected EdDSA | ES256 | RS256, got {other:?}").into())
        }
    };
    if kid.is_empty()
        || !kid
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
    {
        return Err(
            format!("--kid: use letters, digits, '.', '_' and '-' only, got {kid:?}").into(),
        );
    }
    let (private, public) = portcullis::tokens::keys::generate(algorithm)?;
    std::fs::create_dir_all(out)
        .map_err(|e| format!("--out: cannot create {}: {e}", out.display()))?;
    let private_path = out.join(format!("{kid}.private.pem"));
    let public_path = out.join(format!("{kid}.public.pem"));
    for p in [&private_path, &public_path] {
        if p.exists() {
            return Err(format!(
                "{}: already exists; refusing to overwrite a key",
                p.display()
            )
            .into());
        }
    }
    write_private(&private_path, private.as_bytes())?;
    std::fs::write(&public_path, public).map_err(|e| format!("{}: {e}", public_path.display()))?;
    println!(
        "wrote {} (keep secret) and {}",
        private_path.display(),
        public_path.display()
    );
    println!("add to tokens.signing_keys (first key with a private part signs):");
    println!(
        "    - {{ kid: \"{kid}\", algorithm: {alg}, private_key_file: {} }}",
        private_path.display()
    );
    Ok(())
}

fn write_private(path: &std::path::Path, data: &[u8]) -> Outcome {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    f.write_all(data)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(())
}

fn run_demo(port: u16) -> Outcome {
    let upstream = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map_err(|e| format!("demo: cannot find a free port for the demo upstream: {e}"))?;
    let password = demo::prepare(std::path::Path::new("data"))?;
    let text = demo::demo_config(port, upstream.port());
    let config = config::parse(&text, "demo".as_ref(), ".".as_ref(), |n| {
        std::env::var(n).ok()
    })?;
    println!("portcullis demo");
    println!("  open:      http://127.0.0.1:{port}/");
    println!("  sign in:   {} / {password}", demo::DEMO_EMAIL);
    println!("  store:     data/demo.db");
    println!("  stop with: Ctrl-C");
    let demo = Box::new(demo::demo_service(&upstream.to_string()));
    run(config, false, vec![demo])
}
