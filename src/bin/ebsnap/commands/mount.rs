//! `ebsnap mount SNAPSHOT DIR`: the snapshot as DIR/disk.img, read-only, through
//! FUSE, until DIR is unmounted or SIGINT or SIGTERM arrives (which unmount it).

use super::Context;
use crate::args::{ReaderArgs, SnapshotArg};
use crate::exit::{Exit, Failure, Result};
use crate::signals;
use ebsnap::engine::recover::{BlockReader, ReaderStats};
use ebsnap::fuse::{self, IMAGE_NAME};
use ebsnap::store::local::Access;
use indicatif::HumanBytes;
use std::path::{Path, PathBuf};
use std::time::Instant;

#[derive(Debug, clap::Args)]
pub struct Args {
    snapshot: SnapshotArg,
    /// An empty directory to mount on: it then holds disk.img.
    dir: PathBuf,
    #[command(flatten)]
    reader: ReaderArgs,
}

#[derive(Debug, serde::Serialize)]
struct MountReport {
    snapshot_id: String,
    mountpoint: String,
    image_bytes: u64,
    #[serde(flatten)]
    stats: ReaderStats,
    seconds: f64,
}

pub async fn run(args: Args, ctx: &Context) -> Result<Exit> {
    let started = Instant::now();
    check_dir(&args.dir)?;
    let store = ctx.open_store(Access::Read).await?;
    let options = args.reader.options(ctx.workers());
    let reader = BlockReader::open(store, &args.snapshot.0, &options).await?;
    let mounted = fuse::mount(reader.clone(), &args.dir, reader.taken())
        .map_err(|e| mount_failed(&args.dir, e))?;
    let dir = args.dir.display();
    ctx.output.note(&format!(
        "{} mounted read-only at {dir}/{IMAGE_NAME} ({}); stop with `fusermount3 -u {dir}` or Ctrl-C",
        reader.snapshot(),
        HumanBytes(reader.size())
    ));
    let mut mounted = mounted;
    tokio::select! {
        _ = signals::shutdown() => {}
        _ = mounted.ended() => {}
    }
    if mounted.detach() {
        // Its users (a loop device) still read: they get their data until they let go.
        eprintln!("ebsnap: {dir} is in use: detached from {dir}, serving its users until they let go (detach the loop device; a signal again to exit now)");
        tokio::select! {
            _ = signals::shutdown() => {}
            _ = mounted.ended() => {}
        }
    }
    mounted.finish().await;
    let report = MountReport {
        snapshot_id: reader.snapshot().to_string(),
        mountpoint: args.dir.display().to_string(),
        image_bytes: reader.size(),
        stats: reader.stats(),
        seconds: started.elapsed().as_secs_f64(),
    };
    ctx.output.result(&text(&report), &report)?;
    Ok(Exit::SUCCESS)
}

/// The mount point must be a directory (FUSE would say less clearly).
fn check_dir(dir: &Path) -> Result<()> {
    match std::fs::metadata(dir) {
        Ok(meta) if meta.is_dir() => Ok(()),
        Ok(_) => Err(Failure::usage(format!(
            "{} is not a directory",
            dir.display()
        ))),
        Err(e) => Err(Failure::usage(format!("{}: {e}", dir.display()))),
    }
}

fn mount_failed(dir: &Path, source: std::io::Error) -> Failure {
    Failure::Engine(ebsnap::Error::Target {
        what: "cannot mount on (is fuse3 installed, with /dev/fuse?)",
        path: dir.to_owned(),
        source,
    })
}

fn text(r: &MountReport) -> String {
    format!(
        "unmounted {} from {}: {} blocks fetched, {} read, in {:.1}s\n",
        r.snapshot_id,
        r.mountpoint,
        r.stats.blocks_fetched,
        HumanBytes(r.stats.bytes_read),
        r.seconds
    )
}
