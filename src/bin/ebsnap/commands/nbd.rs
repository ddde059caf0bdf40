//! `ebsnap nbd SNAPSHOT [--listen ADDR]`: a read-only NBD server for one snapshot,
//! until SIGINT or SIGTERM.

use super::Context;
use crate::args::{ReaderArgs, SnapshotArg};
use crate::exit::{Exit, Failure, Result};
use crate::{output, signals};
use ebsnap::engine::recover::{BlockReader, ReaderStats};
use ebsnap::nbd::{self, ListenAddr, Listener};
use ebsnap::store::local::Access;
use indicatif::HumanBytes;
use std::time::Instant;

#[derive(Debug, clap::Args)]
pub struct Args {
    snapshot: SnapshotArg,
    /// HOST:PORT, or unix:PATH for a Unix socket (which must not exist yet).
    #[arg(long, value_name = "ADDR", default_value = nbd::DEFAULT_LISTEN)]
    listen: ListenAddr,
    /// Listen on an address other machines can reach: anyone who can connect reads
    /// the snapshot (NBD has no authentication here).
    #[arg(long)]
    allow_remote: bool,
    #[command(flatten)]
    reader: ReaderArgs,
}

#[derive(Debug, serde::Serialize)]
struct NbdReport {
    snapshot_id: String,
    listen: String,
    export_bytes: u64,
    #[serde(flatten)]
    stats: ReaderStats,
    seconds: f64,
}

pub async fn run(args: Args, ctx: &Context) -> Result<Exit> {
    let started = Instant::now();
    args.listen
        .check(args.allow_remote)
        .map_err(|e| Failure::usage(e.to_string()))?;
    let store = ctx.open_store(Access::Read).await?;
    let options = args.reader.options(ctx.workers());
    let reader = BlockReader::open(store, &args.snapshot.0, &options).await?;
    let listener = Listener::bind(&args.listen)
        .await
        .map_err(|e| Failure::Refused {
            message: format!("cannot listen on {}: {e}", args.listen),
            exit: Exit::FAILURE,
        })?;
    let addr = listener.local_addr().map_err(|e| Failure::Refused {
        message: format!("listening on {}: {e}", args.listen),
        exit: Exit::FAILURE,
    })?;
    announce(ctx, &reader, &addr);
    let served = nbd::serve(listener, reader.clone(), signals::shutdown()).await;
    served.map_err(|e| Failure::Refused {
        message: format!("serving on {addr}: {e}"),
        exit: Exit::FAILURE,
    })?;
    let report = NbdReport {
        snapshot_id: reader.snapshot().to_string(),
        listen: addr.to_string(),
        export_bytes: reader.size(),
        stats: reader.stats(),
        seconds: started.elapsed().as_secs_f64(),
    };
    ctx.output.result(&text(&report), &report)?;
    Ok(Exit::SUCCESS)
}

/// The first line says where clients connect: on stdout (scripts and tests read it),
/// or on stderr with --json, whose stdout is the one report at the end.
fn announce(ctx: &Context, reader: &BlockReader, addr: &ListenAddr) {
    let uri = match addr {
        ListenAddr::Tcp(a) => format!("nbd://{a}"),
        ListenAddr::Unix(p) => format!("nbd+unix:///?socket={}", p.display()),
    };
    let line = format!(
        "ebsnap nbd: serving {} ({}, read-only) at {uri}\n",
        reader.snapshot(),
        HumanBytes(reader.size())
    );
    if ctx.output.json {
        eprint!("{line}");
    } else {
        let _ = output::print(&line);
    }
}

fn text(r: &NbdReport) -> String {
    format!(
        "ebsnap nbd: stopped serving {}: {} blocks fetched, {} read, in {:.1}s\n",
        r.snapshot_id,
        r.stats.blocks_fetched,
        HumanBytes(r.stats.bytes_read),
        r.seconds
    )
}
