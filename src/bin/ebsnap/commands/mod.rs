//! One module a command: its arguments, their conversion into the engine's options, its
//! run, and what it prints. A new command is a new module here and a variant below.

pub mod backup;
pub mod check;
pub mod completions;
pub mod copy;
pub mod delete;
pub mod diff;
pub mod forget;
pub mod manpage;
pub mod mount;
pub mod nbd;
pub mod restore;
pub mod run;
pub mod serve;
pub mod show;
pub mod snapshots;
pub mod verify;

use crate::args::Global;
use crate::config::{Config, Job, Settings};
use crate::exit::{Exit, Result};
use crate::output::Output;
use crate::store::{self, StoreSettings};
use crate::{dirs, progress};
use clap::Subcommand;
use ebsnap::engine::Progress;
use ebsnap::store::local::{Access, LockWait};
use ebsnap::store::{SnapshotStore, StoreLocation};
use std::path::PathBuf;
use std::sync::Arc;

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Back up a disk image or block device into a new snapshot.
    Backup(backup::Args),
    /// Restore a snapshot to a file or block device.
    Restore(restore::Args),
    /// List the store's snapshots.
    Snapshots(snapshots::Args),
    /// Show one snapshot.
    Show(show::Args),
    /// List the blocks that differ between two snapshots of one lineage.
    Diff(diff::Args),
    /// Re-read every block of a snapshot and check it.
    Verify(verify::Args),
    /// Copy snapshots, with their lineage, into another store (incrementally).
    Copy(copy::Args),
    /// Check the local store's structure, and with --read-data every block's data.
    Check(check::Args),
    /// Serve the EBS direct API (and its EC2 calls) over HTTP on a local store.
    Serve(serve::Args),
    /// Delete snapshots; their children stay whole.
    Delete(delete::Args),
    /// Remove the snapshots a retention policy does not keep (--keep-last, --keep-daily, ...).
    Forget(forget::Args),
    /// Mount a snapshot read-only as DIR/disk.img (FUSE), without restoring it.
    Mount(mount::Args),
    /// Serve a snapshot read-only over NBD (qemu, nbdcopy, nbdinfo), without restoring it.
    Nbd(nbd::Args),
    /// Print the shell completion script for bash, zsh or fish (and others).
    Completions(completions::Args),
    /// Write the man pages (ebsnap.1, ebsnap-COMMAND.1) into a directory.
    Manpage(manpage::Args),
    /// Run the config file's jobs (all, or those named), each a backup and its retention.
    Run(run::Args),
}

impl Command {
    pub async fn run(self, ctx: &Context) -> Result<Exit> {
        match self {
            Command::Backup(args) => backup::run(args, ctx).await,
            Command::Restore(args) => restore::run(args, ctx).await,
            Command::Snapshots(args) => snapshots::run(args, ctx).await,
            Command::Show(args) => show::run(args, ctx).await,
            Command::Diff(args) => diff::run(args, ctx).await,
            Command::Verify(args) => verify::run(args, ctx).await,
            Command::Copy(args) => copy::run(args, ctx).await,
            Command::Check(args) => check::run(args, ctx).await,
            Command::Serve(args) => serve::run(args, ctx).await,
            Command::Delete(args) => delete::run(args, ctx).await,
            Command::Forget(args) => forget::run(args, ctx).await,
            Command::Mount(args) => mount::run(args, ctx).await,
            Command::Nbd(args) => nbd::run(args, ctx).await,
            Command::Completions(args) => completions::run(args, ctx).await,
            Command::Manpage(args) => manpage::run(args, ctx).await,
            Command::Run(args) => run::run(args, ctx).await,
        }
    }
}

/// What every command gets besides its own arguments: the global flags, read once.
pub struct Context {
    /// The global flags, with what the config's [defaults] give for those not given.
    pub global: Global,
    /// The flags as given on the command line: `run` lays each job's settings under
    /// them.
    pub flags: Global,
    /// The config file, if there is one.
    pub config: Option<Arc<Config>>,
    /// Where the store is (--store, else its default).
    pub location: StoreLocation,
    pub settings: StoreSettings,
    pub output: Output,
}

impl Context {
    /// The flags given, over the config's [defaults] (command-line flag > [defaults] >
    /// environment or built-in default).
    pub fn new(flags: Global, config: Option<Config>) -> Result<Context> {
        let config = config.map(Arc::new);
        Context::with(flags, config, None)
    }

    /// The context of one of the config's jobs: flag > job > [defaults] > default.
    pub fn for_job(&self, job: &Job) -> Result<Context> {
        Context::with(self.flags.clone(), self.config.clone(), Some(&job.settings))
    }

    fn with(flags: Global, config: Option<Arc<Config>>, job: Option<&Settings>) -> Result<Context> {
        let mut global = flags.clone();
        for settings in job
            .into_iter()
            .chain(config.as_deref().map(|c| &c.defaults))
        {
            settings.fill(&mut global);
        }
        warn_if_config_overrides_env(&flags, &global, config.as_deref());
        let output = Output {
            json: global.json,
            quiet: global.quiet,
        };
        let location = store::location(global.store.take())?;
        let settings = StoreSettings::from(&global);
        Ok(Context {
            global,
            flags,
            config,
            location,
            settings,
            output,
        })
    }

    /// The store, opened for `access`.
    pub async fn open_store(&self, access: Access) -> Result<Arc<dyn SnapshotStore>> {
        store::open_store(&self.location, &self.settings, access).await
    }

    /// Blocks transferred at once (--workers).
    pub fn workers(&self) -> usize {
        self.global.workers()
    }

    /// What --lock-wait asks for.
    pub fn lock_wait(&self) -> LockWait {
        self.global.lock_wait()
    }

    /// Where manifests and restore records live.
    pub fn state_dir(&self) -> Option<PathBuf> {
        Some(dirs::state_dir())
    }

    pub fn progress(&self) -> Box<dyn Progress> {
        progress::for_stderr(self.global.quiet)
    }
}

/// The config file's `store` is used over `$EBSNAP_STORE` (the documented order), but
/// most tools let the environment win: a script that sets the variable and gets the
/// file's store instead is told so on stderr.
fn warn_if_config_overrides_env(flags: &Global, global: &Global, config: Option<&Config>) {
    let (Some(config), Some(store)) = (config, &global.store) else {
        return;
    };
    if flags.store.is_none() && dirs::env_value("EBSNAP_STORE").is_some() {
        tracing::warn!(
            "the store is {store}, from {} (it comes before $EBSNAP_STORE); give --store to choose",
            config.path.display()
        );
    }
}
