//! `ebsnap completions SHELL`: the shell's completion script, on stdout.
//!
//! Generated from the same clap definition that parses the command line, so the
//! script never lags behind a new command or flag. Packages install it where each
//! shell looks (scripts/package); by hand: `ebsnap completions bash >
//! /etc/bash_completion.d/ebsnap`.

use super::Context;
use crate::args::Cli;
use crate::exit::{Exit, Result};
use crate::output;
use clap::CommandFactory;
use clap_complete::Shell;
use serde_json::json;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The shell to complete for.
    #[arg(value_enum)]
    shell: Shell,
}

/// Prints the script; with --json, one object holding it (`shell`, `script`).
pub async fn run(args: Args, ctx: &Context) -> Result<Exit> {
    let script = script(args.shell);
    let printed = if ctx.output.json {
        output::print_json(&json!({ "shell": args.shell.to_string(), "script": script }))
    } else {
        // Not through `Output::result`: -q silences messages, not the script asked for.
        output::print(&script)
    };
    printed.map_err(output::stdout_failed)?;
    Ok(Exit::SUCCESS)
}

/// The completion script of `shell`, generated in memory: clap_complete panics on a
/// failed write, and stdout may be a closed pipe.
pub fn script(shell: Shell) -> String {
    let mut buf = Vec::new();
    clap_complete::generate(shell, &mut Cli::command(), "ebsnap", &mut buf);
    String::from_utf8(buf).expect("clap_complete writes UTF-8")
}
