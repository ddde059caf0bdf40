//! The config file (docs/config.md): where it is, reading it, and its errors, each
//! naming the file, the line and the key. The schema itself is in [`schema`].

mod schema;
mod values;

pub use schema::{JobKeys, Keep, Settings};

use crate::args::ByteSize;
use crate::dirs;
use crate::exit::{Failure, Result};
use ebsnap::engine::Consistency;
use ebsnap::store::StoreLocation;
use schema::{File, JobTable};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// A config file, read and checked.
#[derive(Debug, Default)]
pub struct Config {
    pub path: PathBuf,
    pub defaults: Settings,
    /// In the file's order.
    pub jobs: Vec<Job>,
}

/// One `[jobs.NAME]`.
#[derive(Clone, Debug)]
pub struct Job {
    pub name: String,
    /// The file or device to back up (`keys.source`, checked and made absolute).
    pub source: PathBuf,
    /// Everything the job's table says of itself besides its settings, as the schema
    /// declares it: a key added there is here too (`job.keys.NAME`).
    pub keys: JobKeys,
    /// The job's settings, over `[defaults]`.
    pub settings: Settings,
    /// What makes the backup of a live disk consistent (hooks, freeze).
    pub live: Live,
}

/// A job's `pre`, `post`, `hook_timeout`, `read_from`, `freeze`, `freeze_timeout`,
/// `spool` and `spool_max`: the `backup` flags of those names (docs/consistency.md).
#[derive(Clone, Debug, Default)]
pub struct Live {
    pub pre: Option<String>,
    pub post: Option<String>,
    pub hook_timeout: Option<Duration>,
    pub read_from: Option<PathBuf>,
    pub freeze: Vec<PathBuf>,
    pub freeze_timeout: Option<Duration>,
    pub spool: Option<PathBuf>,
    pub spool_max: Option<ByteSize>,
}

impl Live {
    /// The engine's options for job `name`, its store named `store_name`.
    pub fn consistency(&self, name: &str, store_name: String) -> Consistency {
        let default = Consistency::default();
        Consistency {
            pre_hook: self.pre.clone(),
            post_hook: self.post.clone(),
            hook_timeout: self.hook_timeout.unwrap_or(default.hook_timeout),
            job: Some(name.to_owned()),
            store_name: Some(store_name),
            read_from: self.read_from.clone(),
            freeze: self.freeze.clone(),
            freeze_timeout: self.freeze_timeout.unwrap_or(default.freeze_timeout),
            spool_dir: self.spool.clone().unwrap_or_else(dirs::spool_dir),
            spool_max: self.spool_max.map_or(default.spool_max, |s| s.0),
            ..default
        }
    }

    /// The job's keys, paths next to the file as the source's are.
    fn of(keys: &JobKeys, base: &Path) -> Live {
        Live {
            pre: keys.pre.clone(),
            post: keys.post.clone(),
            hook_timeout: keys.hook_timeout,
            read_from: keys.read_from.as_ref().map(|p| base.join(p)),
            freeze: keys.freeze.iter().flatten().map(|p| base.join(p)).collect(),
            freeze_timeout: keys.freeze_timeout,
            spool: keys.spool.as_ref().map(|p| base.join(p)),
            spool_max: keys.spool_max,
        }
    }
}

impl Job {
    /// The job's retention policy; `None`: it keeps every snapshot (no retention step).
    pub fn keep(&self) -> Option<&Keep> {
        self.keys.keep.as_ref()
    }
}

/// The config file to read: `flag` (--config), else $EBSNAP_CONFIG, else the user's
/// ($XDG_CONFIG_HOME/ebsnap/config.toml), else the system's (/etc/ebsnap/config.toml).
/// A file named by the flag or the variable must exist; the default ones are used
/// only where they do.
pub fn load(flag: Option<&Path>) -> Result<Option<Config>> {
    let given = flag
        .map(Path::to_owned)
        .or_else(|| dirs::env_value("EBSNAP_CONFIG").map(PathBuf::from));
    let path = match given {
        Some(path) => path,
        None => match default_paths().into_iter().find(|p| p.exists()) {
            Some(path) => path,
            None => return Ok(None),
        },
    };
    let text = read_trusted(&path)
        .map_err(|e| Failure::usage(format!("config file {}: {e}", path.display())))?;
    parse(&path, &text).map(Some)
}

/// The file's text, if only its reader (or root) can change it. A config names the
/// commands a job runs (`pre`, `post`) and where backups go and what retention
/// deletes, and root runs it from a timer: a file that another user can write would
/// hand them root. Refused as OpenSSH's StrictModes and sudo refuse theirs. Checked
/// on the descriptor read, so the file cannot be swapped between check and read.
fn read_trusted(path: &Path) -> std::io::Result<String> {
    use std::io::Read;
    use std::os::unix::fs::MetadataExt;
    let mut file = std::fs::File::open(path)?;
    let meta = file.metadata()?;
    // SAFETY: geteuid cannot fail and touches no memory.
    let me = unsafe { libc::geteuid() };
    if let Some(why) = untrusted(meta.uid(), meta.mode(), me) {
        return Err(std::io::Error::new(
            std::io::ErrorKind::PermissionDenied,
            why,
        ));
    }
    let mut text = String::new();
    file.read_to_string(&mut text)?;
    Ok(text)
}

/// Why a file of owner `uid` and `mode` is not to be trusted by user `me`, if it is not.
fn untrusted(uid: u32, mode: u32, me: u32) -> Option<String> {
    if uid != me && uid != 0 {
        return Some(format!(
            "it belongs to uid {uid}, who could change the commands and stores it names; \
             it must belong to this user or to root"
        ));
    }
    (mode & 0o022 != 0).then(|| {
        format!(
            "it is writable by its group or by others (mode {:03o}), who could change the \
             commands and stores it names: chmod go-w it",
            mode & 0o777
        )
    })
}

fn default_paths() -> Vec<PathBuf> {
    let user = dirs::env_value("XDG_CONFIG_HOME")
        .map(PathBuf::from)
        .or_else(|| dirs::env_value("HOME").map(|h| PathBuf::from(h).join(".config")));
    user.map(|dir| dir.join("ebsnap/config.toml"))
        .into_iter()
        .chain([PathBuf::from("/etc/ebsnap/config.toml")])
        .collect()
}

/// Reads `text`, the contents of the file at `path`.
pub fn parse(path: &Path, text: &str) -> Result<Config> {
    let at = |key: &str, span: Option<std::ops::Range<usize>>, message: &str| {
        let place = span.map_or(String::new(), |s| {
            format!(":{}", ebsnap::tomlfile::line_of(text, s.start))
        });
        let key = if key.is_empty() {
            String::new()
        } else {
            format!(" {key}:")
        };
        Failure::usage(format!(
            "config file {}{place}:{key} {message}",
            path.display()
        ))
    };
    let deserializer =
        toml::Deserializer::parse(text).map_err(|e| at("", e.span(), e.message()))?;
    let file: File = serde_path_to_error::deserialize(deserializer).map_err(|e| {
        let key = ebsnap::tomlfile::key_path(e.path());
        let inner = e.into_inner();
        at(&key, inner.span(), inner.message())
    })?;
    let base = path.parent().unwrap_or(Path::new("."));
    let mut defaults = file.defaults;
    relative_to(base, &mut defaults);
    let mut jobs = Vec::new();
    for (name, table) in file.jobs {
        let span = table.span();
        let job = job(name.clone(), table.into_inner(), base).map_err(|(key, message)| {
            at(&format!("jobs.{name}.{key}"), Some(span.clone()), &message)
        })?;
        jobs.push(job);
    }
    Ok(Config {
        path: path.to_owned(),
        defaults,
        jobs,
    })
}

/// A job from its table; a bad one is the key at fault and why.
fn job(name: String, table: JobTable, base: &Path) -> Result<Job, (&'static str, String)> {
    let (keys, mut settings) = table.split();
    relative_to(base, &mut settings);
    let live = Live::of(&keys, base);
    let source = keys.source.clone().ok_or((
        "source",
        "a job needs a source (source = \"/dev/...\")".to_owned(),
    ))?;
    if keys.keep.as_ref().is_some_and(Keep::is_empty) {
        let message = "an empty policy keeps nothing: give last, hourly, daily, weekly, monthly, yearly, within or tags";
        return Err(("keep", message.to_owned()));
    }
    Ok(Job {
        name,
        live,
        source: base.join(source),
        keys,
        settings,
    })
}

/// A relative path in the file means one next to it, not in whatever directory cron
/// or systemd starts ebsnap in.
fn relative_to(base: &Path, settings: &mut Settings) {
    if let Some(StoreLocation::Local(dir)) = &mut settings.store {
        *dir = base.join(&*dir);
    }
    if let Some(file) = &mut settings.metrics_file {
        *file = base.join(&*file);
    }
    if let Some(file) = &mut settings.key_file {
        *file = base.join(&*file);
    }
}

impl Config {
    /// The jobs `names` names, in the file's order, or all of them if none is named.
    pub fn select(&self, names: &[String]) -> Result<Vec<&Job>> {
        if let Some(unknown) = names
            .iter()
            .find(|n| !self.jobs.iter().any(|j| &j.name == *n))
        {
            let known: Vec<&str> = self.jobs.iter().map(|j| j.name.as_str()).collect();
            return Err(Failure::usage(format!(
                "config file {}: no job named {unknown:?} (its jobs: {})",
                self.path.display(),
                if known.is_empty() {
                    "none".to_owned()
                } else {
                    known.join(", ")
                }
            )));
        }
        Ok(self
            .jobs
            .iter()
            .filter(|j| names.is_empty() || names.contains(&j.name))
            .collect())
    }
}

#[cfg(test)]
mod tests;
