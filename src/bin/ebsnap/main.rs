//! The `ebsnap` command: parse, run, print, exit. All the work is in the library.
//!
//! `main` parses the command line (clap exits with 2 on a usage error), `run` runs the
//! command on a tokio runtime, and a failure is reported once, here, with the exit code
//! that names its kind (README: Exit codes).

mod args;
mod commands;
mod config;
mod consistency;
mod dirs;
mod exit;
mod metrics;
mod output;
mod progress;
mod signals;
mod store;

use args::Cli;
use clap::Parser;
use commands::Context;
use exit::Exit;
use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    // The freeze watchdog (started by a backup with --freeze): before anything else,
    // no runtime, no logging setup; its stderr is ebsnap's.
    if args.get(1).is_some_and(|a| a == ebsnap::WATCHDOG_COMMAND) {
        let code = ebsnap::run_freeze_watchdog(&args[2..]);
        return ExitCode::from(u8::try_from(code).unwrap_or(1));
    }
    let cli = Cli::parse_from(args);
    init_logging(&cli.global);
    let json = cli.global.json;
    match run(cli) {
        Ok(exit) => exit.into(),
        Err(failure) => failure.report(json).into(),
    }
}

fn run(cli: Cli) -> exit::Result<Exit> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime starts");
    ebsnap::set_direct_io(!cli.global.no_direct_io);
    // A config error stops every command before it does anything (exit 2).
    let config = config::load(cli.global.config.as_deref())?;
    let ctx = Context::new(cli.global, config)?;
    runtime.block_on(cli.command.run(&ctx))
}

fn init_logging(global: &args::Global) {
    let level = match (global.quiet, global.verbose) {
        (true, _) => "error",
        (false, 0) => "warn",
        (false, 1) => "info",
        _ => "debug",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("EBSNAP_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(format!("ebsnap={level}")));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .without_time()
        .init();
}
