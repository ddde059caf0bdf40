//! The metrics file on disk: read, merged with one run's series and replaced, under a
//! lock so that cron lines finishing together keep each other's series.

use super::{RunRecord, Textfile};
use crate::sys::{euid, private_options, sync_dir, take_lock, tmp_path, LockKind, LockWait};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// The metrics file is read by node_exporter, which runs as a user of its own: it
/// must be readable by others (what it holds is timings, counts and the names of jobs,
/// sources and stores, no backup data).
const METRICS_MODE: u32 = 0o644;

/// Writes `run`'s series into the file at `path`, keeping the series of every other
/// job (or store) it holds. The file is replaced atomically (a temporary file in the
/// same directory, fsync, rename), so the collector never reads half a file.
pub fn record(path: &Path, run: &RunRecord) -> io::Result<()> {
    update(path, |before| run.apply(before))
}

/// Sets `ebsnap_snapshots` of every job in the file that backs up `source` into
/// `store` to `count`: what a retention run outside `ebsnap run` (`ebsnap forget`)
/// leaves, so the backups' series tell the count after retention.
pub fn update_snapshots(path: &Path, store: &str, source: &str, count: u64) -> io::Result<()> {
    update(path, |mut file| {
        file.set_where(super::SNAPSHOTS, count as f64, |labels| {
            let get = |name: &str| {
                labels
                    .iter()
                    .find(|(k, _)| k == name)
                    .map(|(_, v)| v.as_str())
            };
            get("store") == Some(store) && get("source") == Some(source)
        });
        file
    })
}

/// Reads the file (under its lock), changes it with `change`, and replaces it.
fn update(path: &Path, change: impl FnOnce(Textfile) -> Textfile) -> io::Result<()> {
    let context = |e: io::Error| io::Error::new(e.kind(), format!("{}: {e}", path.display()));
    let _lock = lock(path).map_err(context)?;
    let before = read(path).map_err(context)?;
    let text = change(before).render();
    replace(path, text.as_bytes()).map_err(context)
}

/// The sibling lock file (`NAME.lock`, private: it holds nothing, but it is ours),
/// held exclusively until dropped. Not the metrics file itself: that one is replaced
/// by a rename, and a lock on a replaced file locks nothing.
fn lock(path: &Path) -> io::Result<File> {
    let file = private_options()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(lock_path(path))?;
    ensure_ours(&file, &lock_path(path))?;
    take_lock(&file, LockKind::Exclusive, LockWait::Wait, || {
        tracing::info!("waiting for another ebsnap writing {}", path.display());
    })?;
    Ok(file)
}

/// Refuses a lock file that another user made (in a shared directory such as a 1777
/// one): whoever owns it can hold its lock forever, and every run would hang on it.
fn ensure_ours(file: &File, path: &Path) -> io::Result<()> {
    let owner = file.metadata()?.uid();
    if owner == euid() {
        return Ok(());
    }
    Err(io::Error::new(
        io::ErrorKind::PermissionDenied,
        format!(
            "lock file {} belongs to uid {owner}, not to this user: anyone could hold it \
             and stop every run; remove it, or write the metrics file in a directory \
             only its writers can write",
            path.display()
        ),
    ))
}

fn lock_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".lock");
    path.with_file_name(name)
}

/// The file's samples; none if there is no file yet. A link is not followed.
fn read(path: &Path) -> io::Result<Textfile> {
    let opened = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path);
    let mut text = String::new();
    match opened {
        Ok(mut file) => file.read_to_string(&mut text)?,
        Err(e) if e.kind() == io::ErrorKind::NotFound => 0,
        Err(e) => return Err(e),
    };
    Ok(Textfile::parse(&text))
}

/// Replaces `path` with `bytes`: a new temporary file (`NAME.tmp`, which the collector
/// ignores: it reads `*.prom`), fsync, rename, directory fsync.
fn replace(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let tmp = tmp_path(path);
    let result = (|| {
        let mut file = create_readable(&tmp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        fs::rename(&tmp, path)?;
        sync_dir(
            path.parent()
                .filter(|p| !p.as_os_str().is_empty())
                .unwrap_or(Path::new(".")),
        )
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// A new file, 0644 whatever the umask, created anew (`O_EXCL`, no link followed)
/// after removing whatever was left or planted at `path`.
fn create_readable(path: &Path) -> io::Result<File> {
    match fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    let file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(METRICS_MODE)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)?;
    // The umask may have taken the others' read bit away.
    file.set_permissions(fs::Permissions::from_mode(METRICS_MODE))?;
    Ok(file)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lock_file_another_user_planted_is_refused_not_waited_on() {
        if euid() != 0 {
            eprintln!("SKIPPED: needs root, to give a lock file to another user");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o1777)).unwrap();
        let path = dir.path().join("ebsnap.prom");
        let planted = lock_path(&path);
        File::create(&planted).unwrap();
        std::os::unix::fs::chown(&planted, Some(65534), Some(65534)).unwrap();
        // Its owner could hold its lock for ever; without that, it is refused all the same.
        let run = RunRecord {
            labels: super::super::Labels {
                job: "j".into(),
                source: "/s".into(),
                store: "/st".into(),
            },
            ended: std::time::SystemTime::now(),
            duration: std::time::Duration::from_secs(1),
            exit_code: 0,
            bytes_written: 0,
            blocks_written: 0,
            snapshots: None,
        };
        let err = record(&path, &run).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::PermissionDenied, "{err}");
        assert!(err.to_string().contains("belongs to uid 65534"), "{err}");
        assert!(!path.exists());
    }
}
