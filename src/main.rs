//! `portcullis`: parse the command line, load the config, run.

use clap::Parser;
use portcullis::cli::{Cli, Command};
use portcullis::{config, demo, probe, server, telemetry};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match &cli.command {
        None => serve(&cli, false),
        Some(Command::Serve { upgrade }) => serve(&cli, *upgrade),
        Some(Command::Check) => check(&cli),
        Some(Command::Demo { port }) => run_demo(*port),
        Some(Command::Probe { url, timeout }) => {
            match probe::probe(url, Duration::from_secs(*timeout)) {
                Ok(status) if (200..300).contains(&status) => Ok(()),
                Ok(status) => Err(format!("{url}: unhealthy (HTTP {status})")),
                Err(e) => Err(e),
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

fn load(cli: &Cli) -> Result<config::Config, String> {
    config::load(&cli.config_path()).map_err(|e| e.to_string())
}

fn serve(cli: &Cli, upgrade: bool) -> Result<(), String> {
    let config = load(cli)?;
    run(config, upgrade, Vec::new())
}

fn run(
    config: config::Config,
    upgrade: bool,
    extra_services: Vec<Box<dyn pingora::services::ServiceWithDependents>>,
) -> Result<(), String> {
    telemetry::init(&config.logging);
    for w in &config.warnings {
        tracing::warn!(target: "portcullis::config", "{w}");
    }
    let options = server::BuildOptions {
        upgrade,
        extra_services,
    };
    let built = server::build(Arc::new(config), options).map_err(|e| e.to_string())?;
    tracing::info!(target: "portcullis::server", "portcullis started");
    built.server.run(pingora::server::RunArgs::default());
    Ok(())
}

fn check(cli: &Cli) -> Result<(), String> {
    let path = cli.config_path();
    let config = load(cli)?;
    server::preflight(&config)?;
    for w in &config.warnings {
        println!("warning: {}: {w}", path.display());
    }
    println!("{}: ok", path.display());
    Ok(())
}

fn run_demo(port: u16) -> Result<(), String> {
    let upstream = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map_err(|e| format!("demo: cannot find a free port for the demo upstream: {e}"))?;
    let text = demo::demo_config(port, upstream.port());
    let config = config::parse(&text, "demo".as_ref(), ".".as_ref(), |n| {
        std::env::var(n).ok()
    })
    .map_err(|e| e.to_string())?;
    println!("portcullis demo");
    println!("  open:      http://127.0.0.1:{port}/");
    println!("  store:     data/demo.db");
    println!("  stop with: Ctrl-C");
    let demo = Box::new(demo::demo_service(&upstream.to_string()));
    run(config, false, vec![demo])
}
