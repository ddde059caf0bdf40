//! The `ebsnap` command: parse, run, print, exit. All the work is in the library.

mod args;
mod output;
mod progress;
mod serve;

use args::{Cli, Command};
use clap::Parser;
use ebsnap::engine::{self, BackupOptions, ParentChoice, RestoreOptions, Stop};
use ebsnap::store::local::{Access, LockWait};
use ebsnap::store::{
    EbsOptions, EbsStore, LocalStore, PacedStore, RetryPolicy, RetryStore, SnapshotStore,
};
use indicatif::HumanBytes;
use serde_json::json;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

/// Exit codes (documented in the README).
pub(crate) const EXIT_FAILURE: u8 = 1;
const EXIT_BAD_DATA: u8 = 3;

fn main() -> ExitCode {
    let cli = Cli::parse(); // usage errors exit with 2
    init_logging(&cli.global);
    let json = cli.global.json;
    match run(cli) {
        Ok(code) => ExitCode::from(code),
        Err(err) => {
            let code = if let Some(signal) = err.interrupted_by() {
                // As shells report a process a signal ended: 130 for SIGINT, 143 for SIGTERM.
                128u8.saturating_add(signal as u8)
            } else if err.is_bad_data() {
                EXIT_BAD_DATA
            } else {
                EXIT_FAILURE
            };
            eprintln!("ebsnap: error: {err}");
            if json {
                let _ = output::print_json(&json!({ "error": err.to_string(), "exit_code": code }));
            }
            ExitCode::from(code)
        }
    }
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

fn run(cli: Cli) -> ebsnap::Result<u8> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime starts");
    runtime.block_on(run_command(cli))
}

/// A stop that SIGINT (Ctrl-C) or SIGTERM requests: the work stops issuing requests,
/// lets those in flight finish, saves what a resume needs, and fails with the signal.
/// A second signal exits at once.
fn stop_on_signals() -> Stop {
    use tokio::signal::unix::{signal, SignalKind};
    let stop = Stop::default();
    let watcher = stop.clone();
    tokio::spawn(async move {
        let (Ok(mut int), Ok(mut term)) = (
            signal(SignalKind::interrupt()),
            signal(SignalKind::terminate()),
        ) else {
            tracing::warn!("cannot watch for signals: Ctrl-C will not stop cleanly");
            return;
        };
        loop {
            let number = tokio::select! {
                _ = int.recv() => libc::SIGINT,
                _ = term.recv() => libc::SIGTERM,
            };
            let name = engine::signal_name(number);
            if watcher.requested().is_some() {
                eprintln!("ebsnap: {name} again: exiting now");
                std::process::exit(128 + number);
            }
            eprintln!(
                "ebsnap: {name}: stopping once the requests in flight are done (again to exit now)"
            );
            watcher.request(number);
        }
    });
    stop
}

/// The store location: --store, else $EBSNAP_STORE, else the XDG data directory.
/// What `--lock-wait` asks for.
fn lock_wait(g: &args::Global) -> LockWait {
    match g.lock_wait {
        None => LockWait::Wait,
        Some(0) => LockWait::Fail,
        Some(secs) => LockWait::Up(std::time::Duration::from_secs(secs)),
    }
}

/// Local state (manifests, restore records): $XDG_STATE_HOME/ebsnap, else
/// ~/.local/state/ebsnap.
fn state_dir() -> PathBuf {
    let env = |k: &str| {
        std::env::var_os(k)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    env("XDG_STATE_HOME")
        .or_else(|| env("HOME").map(|h| h.join(".local/state")))
        .unwrap_or_else(|| PathBuf::from(".ebsnap-state"))
        .join("ebsnap")
}

pub(crate) fn store_location(flag: Option<PathBuf>) -> PathBuf {
    let env = |k: &str| {
        std::env::var_os(k)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    flag.or_else(|| env("EBSNAP_STORE"))
        .or_else(|| env("XDG_DATA_HOME").map(|d| d.join("ebsnap/store")))
        .or_else(|| env("HOME").map(|h| h.join(".local/share/ebsnap/store")))
        .unwrap_or_else(|| PathBuf::from("ebsnap-store"))
}

/// Opens the store the global flags name: `ebs`, or a local directory.
async fn open_store(g: &args::Global, access: Access) -> ebsnap::Result<Arc<dyn SnapshotStore>> {
    if g.store.as_deref() == Some(std::path::Path::new("ebs")) {
        let options = EbsOptions {
            region: g.region.clone(),
            profile: g.profile.clone(),
            endpoint_url: g.endpoint_url.clone(),
            ..EbsOptions::default()
        };
        // Block requests are paced (the service's per-snapshot limit); throttling,
        // service errors and the service's short memory lapses right after a start or
        // completion are retried, with backoff.
        let store = EbsStore::connect(&options).await;
        let paced = PacedStore::new(store, max_rate(g, EBS_MAX_RATE), g.workers.into());
        return Ok(Arc::new(RetryStore::new(paced, RetryPolicy::default())));
    }
    let location = store_location(g.store.clone());
    let store = LocalStore::open(&location, access, lock_wait(g))?;
    Ok(match g.max_rate {
        Some(_) => Arc::new(PacedStore::new(store, max_rate(g, 0), g.workers.into())),
        None => Arc::new(store),
    })
}

/// Block requests per second EBS accepts for one snapshot.
const EBS_MAX_RATE: u32 = 1000;

/// The pace block requests keep, if any: what the store is paced to.
fn pace(g: &args::Global) -> Option<u32> {
    let ebs = g.store.as_deref() == Some(std::path::Path::new("ebs"));
    g.max_rate.or(ebs.then_some(EBS_MAX_RATE))
}

fn max_rate(g: &args::Global, default: u32) -> std::num::NonZeroU32 {
    std::num::NonZeroU32::new(g.max_rate.unwrap_or(default)).unwrap_or(std::num::NonZeroU32::MIN)
}

async fn run_command(cli: Cli) -> ebsnap::Result<u8> {
    let g = cli.global;
    let workers = usize::from(g.workers);
    let progress = progress::for_stderr(g.quiet);
    let say = |text: String, value: serde_json::Value| -> ebsnap::Result<()> {
        let printed = if g.json {
            output::print_json(&value)
        } else if g.quiet {
            Ok(())
        } else {
            output::print(&text)
        };
        printed.map_err(|source| ebsnap::Error::Stdout { source })
    };
    match cli.command {
        Command::Backup {
            source,
            description,
            tags,
            encrypted,
            kms_key_id,
            parent,
            full,
            dry_run,
        } => {
            let store = open_store(&g, Access::Write).await?;
            let options = BackupOptions {
                description,
                tags,
                workers,
                max_rate: pace(&g),
                encrypted,
                kms_key_arn: kms_key_id,
                parent: match (parent, full) {
                    (Some(p), _) => ParentChoice::Snapshot(p.0),
                    (None, true) => ParentChoice::Full,
                    (None, false) => ParentChoice::Auto,
                },
                dry_run,
                state_dir: Some(state_dir()),
                lock_wait: lock_wait(&g),
                stop: stop_on_signals(),
            };
            let r = engine::backup(store, &source, &options, &*progress).await?;
            let rate = r.source_bytes as f64 / r.seconds.max(1e-6);
            let text = backup_text(&r, &source, rate);
            say(text, serde_json::to_value(&r).expect("serializable"))?;
        }
        Command::Restore {
            snapshot,
            target,
            force,
            from,
            full,
        } => {
            let store = open_store(&g, Access::Read).await?;
            let options = RestoreOptions {
                force,
                workers,
                max_rate: pace(&g),
                from: from.map(|f| f.0),
                full,
                state_dir: Some(state_dir()),
                lock_wait: lock_wait(&g),
                stop: stop_on_signals(),
            };
            let r = engine::restore(store, &snapshot.0, &target, &options, &*progress).await?;
            let from = r
                .from_snapshot_id
                .as_ref()
                .map_or(String::new(), |f| format!(" (from {f})"));
            let from = match r.resumed_at_block {
                Some(at) => format!("{from} (resumed at block {at})"),
                None => from,
            };
            let text = format!(
                "restored {} to {}{from}: {} blocks fetched, {} written ({}), {} zeroed, in {:.2}s\n",
                r.snapshot_id,
                r.target,
                r.blocks_fetched,
                r.blocks_written,
                HumanBytes(r.bytes_written),
                r.blocks_zeroed,
                r.seconds
            );
            say(text, serde_json::to_value(&r).expect("serializable"))?;
        }
        Command::Snapshots => {
            let store = open_store(&g, Access::Read).await?;
            let all = store.list_snapshots().await?;
            let value =
                json!({ "snapshots": all.iter().map(output::snapshot_json).collect::<Vec<_>>() });
            say(output::snapshot_table(&all), value)?;
        }
        Command::Show { snapshot } => {
            let store = open_store(&g, Access::Read).await?;
            let info = store
                .describe_snapshot(&snapshot.0)
                .await
                .map_err(ebsnap::Error::store(&snapshot.0))?;
            say(
                output::snapshot_details(&info),
                output::snapshot_json(&info),
            )?;
        }
        Command::Diff { first, second } => {
            let store = open_store(&g, Access::Read).await?;
            let r = engine::diff(&*store, &first.0, &second.0).await?;
            let mut text: String = r
                .changed_block_indexes
                .iter()
                .map(|i| format!("{i}\n"))
                .collect();
            if !g.json && !g.quiet {
                eprintln!(
                    "{} blocks differ between {} and {}",
                    r.changed_blocks, r.first_snapshot_id, r.second_snapshot_id
                );
            }
            if g.quiet {
                text.clear();
            }
            say(text, serde_json::to_value(&r).expect("serializable"))?;
        }
        Command::Verify { snapshot, against } => {
            let store = open_store(&g, Access::Read).await?;
            let r =
                engine::verify(store, &snapshot.0, against.as_deref(), workers, &*progress).await?;
            let text = verify_text(&r);
            say(text, serde_json::to_value(&r).expect("serializable"))?;
            return Ok(if r.ok { 0 } else { EXIT_BAD_DATA });
        }
        Command::Delete { snapshots } => return delete(&g, snapshots).await,
        Command::Check { read_data } => {
            if g.store.as_deref() == Some(std::path::Path::new("ebs")) {
                eprintln!("ebsnap: error: check works on a local store (EBS checks its own)");
                return Ok(2);
            }
            let store = LocalStore::open(
                &store_location(g.store.clone()),
                Access::Read,
                lock_wait(&g),
            )?;
            let r = tokio::task::spawn_blocking(move || store.check(read_data))
                .await
                .expect("check panicked")?;
            let mut text = format!(
                "{} snapshots, {} blocks checked{}: {}\n",
                r.snapshots_checked,
                r.blocks_checked,
                if r.data_read { " (data read)" } else { "" },
                if r.ok { "OK" } else { "DAMAGED" }
            );
            for d in &r.damaged {
                let block = d.block.map_or(String::new(), |b| format!(" block {b}"));
                text += &format!("  {}{block}: {}\n", d.snapshot_id, d.problem);
            }
            say(text, serde_json::to_value(&r).expect("serializable"))?;
            return Ok(if r.ok { 0 } else { EXIT_BAD_DATA });
        }
        Command::Serve {
            listen,
            no_auth,
            faults,
            seed,
            limits,
        } => return serve::run(&g, listen, no_auth, faults.map(|f| (f, seed)), &limits).await,
    }
    Ok(0)
}

fn backup_text(r: &engine::BackupReport, source: &std::path::Path, rate: f64) -> String {
    let what = match &r.snapshot_id {
        Some(id) => id.clone(),
        None => "dry run".to_owned(),
    };
    let parent = r
        .parent_snapshot_id
        .as_ref()
        .map_or("a new lineage".to_owned(), |p| format!("child of {p}"));
    let verb = if r.dry_run { "would write" } else { "wrote" };
    let resumed = if r.resumed {
        format!(
            ", resuming an interrupted backup that had put {}",
            r.blocks_resumed
        )
    } else {
        String::new()
    };
    format!(
        "{what} ({parent}{resumed}): {verb} {} blocks ({}); {} unchanged, {} zero, of {} ({} GiB volume) in {:.2}s, read at {}/s\n",
        r.blocks_written,
        HumanBytes(r.bytes_written),
        r.blocks_unchanged,
        r.blocks_zero,
        source.display(),
        r.volume_size_gib,
        r.seconds,
        HumanBytes(rate as u64)
    )
}

fn verify_text(r: &engine::VerifyReport) -> String {
    let mut text = format!("{}: {} blocks checked", r.snapshot_id, r.blocks_checked);
    if !r.bad_blocks.is_empty() {
        text += &format!(", {} bad: blocks {:?}", r.bad_blocks.len(), r.bad_blocks);
    }
    match r.aggregate_ok {
        Some(true) => text += ", aggregate checksum matches",
        Some(false) => text += ", aggregate checksum DOES NOT match",
        None => {}
    }
    if let Some(against) = &r.against {
        if r.size_matches == Some(false) {
            text += &format!(", size differs from {against}");
        }
        if r.different_blocks.is_empty() {
            text += &format!(", identical to {against}");
        } else {
            text += &format!(
                ", {} blocks differ from {against}: {:?}",
                r.different_blocks.len(),
                r.different_blocks
            );
        }
    }
    text + if r.ok { ": OK\n" } else { ": FAILED\n" }
}

/// Deletes each snapshot named; one failure does not stop the others.
async fn delete(g: &args::Global, snapshots: Vec<args::SnapshotArg>) -> ebsnap::Result<u8> {
    let (json, quiet) = (g.json, g.quiet);
    let store = open_store(g, Access::Write).await?;
    let (mut deleted, mut failed) = (Vec::new(), Vec::new());
    for s in snapshots {
        match store.delete_snapshot(&s.0).await {
            Ok(()) => deleted.push(s.0.to_string()),
            Err(e) => {
                eprintln!("ebsnap: error: cannot delete {}: {e}", s.0);
                failed.push(json!({ "snapshot_id": s.0.to_string(), "error": e.to_string() }));
            }
        }
    }
    let value = json!({ "deleted": deleted, "failed": failed });
    let printed = if json {
        output::print_json(&value)
    } else if quiet {
        Ok(())
    } else {
        output::print(
            &deleted
                .iter()
                .map(|d| format!("deleted {d}\n"))
                .collect::<String>(),
        )
    };
    printed.map_err(|source| ebsnap::Error::Stdout { source })?;
    Ok(if failed.is_empty() { 0 } else { EXIT_FAILURE })
}
