//! `ebsnap manpage OUTDIR`: the man pages, ebsnap.1 and one page a command
//! (ebsnap-backup.1, ...), generated from the clap definition. Packages install what
//! scripts/assets makes with it; without a package, `ebsnap manpage
//! ~/.local/share/man/man1` does the same for one user.

use super::Context;
use crate::args::Cli;
use crate::exit::{Exit, Result};
use clap::CommandFactory;
use clap_mangen::roff::{bold, roman, Roff};
use clap_mangen::Man;
use serde_json::json;
use std::fs::OpenOptions;
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Directory to write the pages into (created if missing).
    outdir: PathBuf,
}

/// Writes every page; prints the paths written (with --json: `written`).
pub async fn run(args: Args, ctx: &Context) -> Result<Exit> {
    let written = write_pages(&args.outdir).map_err(|(path, source)| ebsnap::Error::Target {
        what: "writing man page",
        path,
        source,
    })?;
    let shown: Vec<String> = written.iter().map(|p| p.display().to_string()).collect();
    let text: String = shown.iter().map(|p| format!("{p}\n")).collect();
    ctx.output.result(&text, &json!({ "written": shown }))?;
    Ok(Exit::SUCCESS)
}

type PageError = (PathBuf, std::io::Error);

fn write_pages(outdir: &Path) -> Result<Vec<PathBuf>, PageError> {
    std::fs::create_dir_all(outdir).map_err(|e| (outdir.to_owned(), e))?;
    let mut cmd = Cli::command().disable_help_subcommand(true);
    // Built, every command knows its full name (`ebsnap-backup`), which names its page.
    cmd.build();
    let mut written = vec![write_page(outdir, Man::new(cmd.clone()), render_top)?];
    // One level: ebsnap's commands have no subcommands of their own.
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        written.push(write_page(outdir, Man::new(sub.clone()), Man::render)?);
    }
    Ok(written)
}

fn write_page(
    outdir: &Path,
    man: Man,
    render: impl Fn(&Man, &mut dyn Write) -> io::Result<()>,
) -> Result<PathBuf, PageError> {
    let mut page = Vec::new();
    render(&man, &mut page).expect("writing to memory");
    let path = outdir.join(man.get_filename());
    write_public(&path, &page).map_err(|e| (path.clone(), e))?;
    Ok(path)
}

/// Man pages are documentation for everyone, not backup data: 0644 as the umask
/// allows. Still, whatever is at the path (an older page, or a link someone planted)
/// is removed and the page created anew (O_EXCL), never written through a link.
fn write_public(path: &Path, data: &[u8]) -> io::Result<()> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o644)
        .open(path)?;
    file.write_all(data)
}

/// ebsnap.1: clap's sections, then what an operator looks up in a man page and clap
/// does not know: exit codes, environment, files.
fn render_top(man: &Man, w: &mut dyn Write) -> io::Result<()> {
    man.render_title(w)?;
    man.render_name_section(w)?;
    man.render_synopsis_section(w)?;
    man.render_description_section(w)?;
    man.render_options_section(w)?;
    man.render_subcommands_section(w)?;
    operator_sections().to_writer(w)?;
    man.render_version_section(w)
}

fn operator_sections() -> Roff {
    let mut roff = Roff::new();
    section(&mut roff, "EXIT STATUS", EXIT_STATUS);
    section(&mut roff, "ENVIRONMENT", ENVIRONMENT);
    section(&mut roff, "FILES", FILES);
    roff.control("SH", ["SEE ALSO"]);
    roff.text([roman(SEE_ALSO)]);
    roff
}

/// A section of tagged paragraphs: each term in bold, its meaning below.
fn section(roff: &mut Roff, title: &str, entries: &[(&str, &str)]) {
    roff.control("SH", [title]);
    for (term, meaning) in entries {
        roff.control("TP", []);
        roff.text([bold(*term)]);
        roff.text([roman(*meaning)]);
    }
}

// The README's exit code table, which scripts rely on.
const EXIT_STATUS: &[(&str, &str)] = &[
    ("0", "Success."),
    ("1", "Failure; the message on stderr says what failed, and on what (path, block, snapshot)."),
    ("2", "Usage error: unknown command or flag, malformed snapshot id, bad configuration."),
    ("3", "Verification found bad or different data: a block that fails its checksum, a source that differs, a damaged store."),
    ("130, 143", "Stopped by SIGINT or SIGTERM; running the same command again resumes the work."),
];

const ENVIRONMENT: &[(&str, &str)] = &[
    ("EBSNAP_STORE", "The store when --store is not given, in the syntax of --store."),
    ("EBSNAP_CONFIG", "The jobs file of ebsnap run, when --config is not given."),
    ("EBSNAP_LOG", "Log filter (tracing syntax, e.g. ebsnap=debug); overrides -v and -q."),
    ("EBSNAP_NO_DIRECT_IO", "Set to 1: all disk I/O through the page cache (--no-direct-io)."),
    ("EBSNAP_ACCESS_KEY_ID, EBSNAP_SECRET_ACCESS_KEY", "The key pair ebsnap serve accepts signatures from."),
    ("AWS_ENDPOINT_URL, AWS_ENDPOINT_URL_EBS, AWS_ENDPOINT_URL_EC2", "Endpoints for --store ebs; the other AWS_* variables of the standard AWS chain apply too."),
    ("XDG_CONFIG_HOME, XDG_DATA_HOME, XDG_STATE_HOME", "Where the default jobs file, store and local state are (see FILES). The systemd unit sets them to /etc, /var/lib and /var/lib."),
];

const FILES: &[(&str, &str)] = &[
    ("$XDG_CONFIG_HOME/ebsnap/config.toml, /etc/ebsnap/config.toml", "The jobs file of ebsnap run: the first that exists."),
    ("$XDG_DATA_HOME/ebsnap/store (~/.local/share/ebsnap/store)", "The default local store."),
    ("$XDG_STATE_HOME/ebsnap (~/.local/state/ebsnap)", "Local state: manifests of the last backup of each source, upload journals of interrupted backups, restore records."),
];

const SEE_ALSO: &str = "ebsnap-backup(1), ebsnap-restore(1), systemd.timer(5). \
    /usr/share/doc/ebsnap/operations.md: running ebsnap unattended (timers, jobs, retention, monitoring).";
