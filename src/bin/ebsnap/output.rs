//! What commands print: one JSON object with --json, readable text otherwise.

use crate::exit::{Failure, Result};
use serde::Serialize;
use serde_json::Value;
use std::io::Write;
use std::time::SystemTime;

/// Where a command's result goes, as the global flags say.
#[derive(Clone, Copy, Debug)]
pub struct Output {
    pub json: bool,
    pub quiet: bool,
}

impl Output {
    /// The command's result on stdout: its JSON object with --json, else its text
    /// (nothing with -q).
    pub fn result(&self, text: &str, value: &impl Serialize) -> Result<()> {
        let printed = if self.json {
            // Through a `Value`, whose keys are sorted: the order scripts have seen.
            print_json(&serde_json::to_value(value).expect("serializable"))
        } else if self.quiet {
            Ok(())
        } else {
            print(text)
        };
        printed.map_err(stdout_failed)
    }

    /// A message for the reader, on stderr: none with --json or -q.
    pub fn note(&self, message: &str) {
        if !self.json && !self.quiet {
            eprintln!("{message}");
        }
    }
}

/// A failed write to stdout (not a closed pipe: `print` takes that quietly).
pub fn stdout_failed(source: std::io::Error) -> Failure {
    Failure::Engine(ebsnap::Error::Stdout { source })
}

pub fn timestamp(t: SystemTime) -> String {
    humantime::format_rfc3339_seconds(t).to_string()
}

/// Writes to stdout; a closed pipe (`ebsnap snapshots | head`) is not an error: the
/// command goes on quietly and exits as it would have.
pub fn print(text: &str) -> std::io::Result<()> {
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        other => other,
    }
}

pub fn print_json(value: &Value) -> std::io::Result<()> {
    print(&format!("{value}\n"))
}
