//! How the process ends: its exit code, and what a failure prints (README: Exit codes).

use crate::output;
use serde_json::json;
use std::process::ExitCode;

/// An exit code. Each one means one thing to scripts, so they are named here only.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Exit(u8);

impl Exit {
    pub const SUCCESS: Exit = Exit(0);
    /// The work failed; the message says what failed, and on what.
    pub const FAILURE: Exit = Exit(1);
    /// The command line asks for something impossible (clap exits with it as well).
    pub const USAGE: Exit = Exit(2);
    /// Verification found damaged or different data.
    pub const BAD_DATA: Exit = Exit(3);

    /// As shells report a process a signal ended: 130 for SIGINT, 143 for SIGTERM.
    pub fn signal(number: i32) -> Exit {
        Exit(128u8.saturating_add(number as u8))
    }

    /// The number the process exits with (for JSON that reports it).
    pub fn code(self) -> u8 {
        self.0
    }

    /// Success if the check found nothing wrong, else `BAD_DATA`.
    pub fn checked(ok: bool) -> Exit {
        if ok {
            Exit::SUCCESS
        } else {
            Exit::BAD_DATA
        }
    }
}

impl From<Exit> for ExitCode {
    fn from(exit: Exit) -> ExitCode {
        ExitCode::from(exit.0)
    }
}

/// Why a command could not do its work.
#[derive(Debug, thiserror::Error)]
pub enum Failure {
    /// The engine's or the store's error: on stderr, and as the JSON object with --json.
    #[error(transparent)]
    Engine(#[from] ebsnap::Error),
    /// Refused before any work began: on stderr alone, as clap reports usage errors.
    #[error("{message}")]
    Refused { message: String, exit: Exit },
}

pub type Result<T, E = Failure> = std::result::Result<T, E>;

impl From<ebsnap::store::StoreError> for Failure {
    fn from(e: ebsnap::store::StoreError) -> Failure {
        Failure::Engine(e.into())
    }
}

impl Failure {
    /// A refusal with `USAGE`: a command that cannot work with what it was given.
    pub fn usage(message: impl Into<String>) -> Failure {
        Failure::Refused {
            message: message.into(),
            exit: Exit::USAGE,
        }
    }

    pub fn exit(&self) -> Exit {
        match self {
            // One mapping, the engine's: a post-hook is told the same code.
            Failure::Engine(err) => Exit(err.exit_code()),
            Failure::Refused { exit, .. } => *exit,
        }
    }

    /// Says what failed (and, with `json`, prints the error object), and gives the code
    /// to exit with.
    pub fn report(&self, json: bool) -> Exit {
        let exit = self.exit();
        eprintln!("ebsnap: error: {self}");
        if json && matches!(self, Failure::Engine(_)) {
            let mut value = json!({ "error": self.to_string(), "exit_code": exit.0 });
            if let Failure::Engine(e) = self {
                if let Some(code) = e.post_hook_exit_code() {
                    value["post_hook_exit_code"] = code.into();
                }
            }
            // Nothing more to say if stdout is gone as well.
            let _ = output::print_json(&value);
        }
        exit
    }
}
