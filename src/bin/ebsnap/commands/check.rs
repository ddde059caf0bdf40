//! `ebsnap check [--read-data]`: the local store's structure, and its data.

use super::Context;
use crate::exit::{Exit, Failure, Result};
use crate::store::{local_dir, open_local_store};
use ebsnap::store::local::{Access, CheckReport};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Read every block and check it against its checksum.
    #[arg(long)]
    read_data: bool,
}

pub async fn run(args: Args, ctx: &Context) -> Result<Exit> {
    let Some(dir) = local_dir(&ctx.location) else {
        return Err(Failure::usage(
            "check works on a local store (EBS checks its own)",
        ));
    };
    let store = open_local_store(dir, Access::Read, &ctx.settings)?;
    let report = tokio::task::spawn_blocking(move || store.check(args.read_data))
        .await
        .expect("check panicked")?;
    if let Some(first) = report.readable_by_others.first() {
        tracing::warn!(
            "the store can be read by other users: {first}{}; make it private with chmod -R go-rwx {}",
            match report.readable_by_others.len() {
                1 => String::new(),
                n => format!(" and {} more", n - 1),
            },
            dir.display()
        );
    }
    ctx.output.result(&text(&report), &report)?;
    Ok(Exit::checked(report.ok))
}

fn text(r: &CheckReport) -> String {
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
    for n in &r.not_read {
        text += &format!("  data not read: {n}\n");
    }
    text
}
