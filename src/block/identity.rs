//! Which source a backup is of, by a name that survives a reboot.
//!
//! `/dev/sdb` can come back as `/dev/sdc`, and another disk can appear at `/dev/sdb`:
//! a device's path says nothing about which disk it is. So a block device is known by
//! a stable id, found in this order:
//! 1. its link in `/dev/disk/by-id` (udev's names from the disk's WWN, serial, model):
//!    a `wwn-` name if there is one, else the first of the others by name;
//! 2. its WWID or serial from sysfs (`wwid:…`, `serial:…`), where udev made no link;
//! 3. for a loop device, which has neither, its backing file, canonical
//!    (`loop:/srv/a.img`, with `@offset` when it starts inside the file, `+size` when
//!    its size is limited);
//! 4. else its path, with a warning: such a device's lineage follows the name.
//!
//! A regular file is known by its absolute path, as before ids existed, so the
//! lineages, manifests and locks of disk images carry over unchanged.

use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

/// Where udev keeps the stable names of disks.
const BY_ID: &str = "/dev/disk/by-id";

/// A source as lineages, manifests, journals and locks know it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SourceIdentity {
    /// The path as given, absolute (not resolved: `/dev/sdb`).
    pub path: String,
    /// What the source is known by: the stable id of a device, or the path of a file.
    pub key: String,
    /// Whether `key` is a device's stable id (not a path that may name another disk).
    pub stable_device_id: bool,
}

impl SourceIdentity {
    /// The identity of what `path` names; `rdev`: its device number, when it is a
    /// block device (from the descriptor opened, so it is the device read).
    pub fn of(path: &Path, rdev: Option<u64>) -> SourceIdentity {
        let given = std::path::absolute(path)
            .unwrap_or_else(|_| path.to_owned())
            .display()
            .to_string();
        let id = rdev.and_then(device_id);
        if rdev.is_some() && id.is_none() {
            tracing::warn!("{given}: no stable id found for this device (no /dev/disk/by-id link, WWID, serial or loop backing file); its lineage follows its path");
        }
        SourceIdentity {
            key: id.clone().unwrap_or_else(|| given.clone()),
            path: given,
            stable_device_id: id.is_some(),
        }
    }

    /// The identity of `path` as it stands now, without opening it (for naming a
    /// source on the command line); a path that is not there names itself.
    pub fn resolve(path: &Path) -> SourceIdentity {
        let rdev = std::fs::metadata(path)
            .ok()
            .filter(|m| m.file_type().is_block_device())
            .map(|m| m.rdev());
        SourceIdentity::of(path, rdev)
    }
}

/// The stable id of block device `rdev`, if it has one.
fn device_id(rdev: u64) -> Option<String> {
    let sysfs = sysfs_dir(rdev);
    by_id_link(Path::new(BY_ID), rdev)
        .or_else(|| sysfs_id(&sysfs))
        .or_else(|| loop_backing(&sysfs))
}

/// `/sys/dev/block/MAJOR:MINOR`, the device's directory in sysfs.
fn sysfs_dir(rdev: u64) -> PathBuf {
    let (major, minor) = (libc::major(rdev), libc::minor(rdev));
    PathBuf::from(format!("/sys/dev/block/{major}:{minor}"))
}

/// The link in `dir` that names device `rdev`, as a path.
fn by_id_link(dir: &Path, rdev: u64) -> Option<String> {
    let names = std::fs::read_dir(dir).ok()?.flatten().filter(|entry| {
        std::fs::metadata(entry.path())
            .is_ok_and(|m| m.file_type().is_block_device() && m.rdev() == rdev)
    });
    let names: Vec<String> = names
        .filter_map(|e| e.file_name().into_string().ok())
        .collect();
    let best = preferred(names)?;
    Some(dir.join(best).display().to_string())
}

/// The name to know a disk by among its by-id names: a `wwn-` one (the disk's world
/// wide name, the same on every bus), else the first by name, so that every run
/// picks the same one.
fn preferred(mut names: Vec<String>) -> Option<String> {
    names.sort();
    let wwn = names.iter().position(|n| n.starts_with("wwn-"));
    match wwn {
        Some(i) => Some(names.swap_remove(i)),
        None => names.into_iter().next(),
    }
}

/// The WWID or serial sysfs reports for the device (SCSI, NVMe, virtio), if any.
fn sysfs_id(sysfs: &Path) -> Option<String> {
    let read = |file: &str| {
        let value = std::fs::read_to_string(sysfs.join(file)).ok()?;
        let value = value.trim();
        (!value.is_empty()).then(|| value.to_owned())
    };
    let wwid = read("wwid").or_else(|| read("device/wwid"));
    let serial = || read("serial").or_else(|| read("device/serial"));
    match wwid {
        Some(w) => Some(format!("wwid:{w}")),
        None => serial().map(|s| format!("serial:{s}")),
    }
}

/// `loop:BACKING_FILE` for a loop device (`@OFFSET` added when it does not start at
/// the file's start); `None` for another device, or a backing file since deleted.
fn loop_backing(sysfs: &Path) -> Option<String> {
    let backing = std::fs::read_to_string(sysfs.join("loop/backing_file")).ok()?;
    let backing = backing.trim_end_matches('\n');
    if backing.ends_with(" (deleted)") {
        return None;
    }
    let file = std::fs::canonicalize(backing).unwrap_or_else(|_| backing.into());
    let read = |name: &str| std::fs::read_to_string(sysfs.join(name)).unwrap_or_default();
    let (offset, size) = (read("loop/offset"), read("loop/sizelimit"));
    Some(loop_key(&file, offset.trim(), size.trim()))
}

/// A loop device's slice of its file: two devices over one file at one offset but
/// with different size limits (one a partition, say) are different disks, with
/// lineages (and retention) of their own.
fn loop_key(file: &Path, offset: &str, size: &str) -> String {
    let mut key = format!("loop:{}", file.display());
    if !matches!(offset, "" | "0") {
        key += &format!("@{offset}");
    }
    if !matches!(size, "" | "0") {
        key += &format!("+{size}");
    }
    key
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_world_wide_name_comes_first_then_the_first_name() {
        let names = |n: &[&str]| n.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let wwn = preferred(names(&[
            "ata-DISK_SN1",
            "wwn-0x5000c500a1b2c3d4",
            "scsi-SATA",
        ]));
        assert_eq!(wwn.as_deref(), Some("wwn-0x5000c500a1b2c3d4"));
        let none = preferred(names(&["virtio-b", "ata-DISK_SN1", "scsi-SATA"]));
        assert_eq!(none.as_deref(), Some("ata-DISK_SN1"));
        assert_eq!(preferred(Vec::new()), None);
    }

    #[test]
    fn a_loop_device_is_its_backing_file_and_offset() {
        let file = Path::new("/srv/a.img");
        assert_eq!(loop_key(file, "0", "0"), "loop:/srv/a.img");
        assert_eq!(loop_key(file, "1048576", ""), "loop:/srv/a.img@1048576");
        assert_eq!(loop_key(file, "0", "4194304"), "loop:/srv/a.img+4194304");
        assert_eq!(
            loop_key(file, "512", "4194304"),
            "loop:/srv/a.img@512+4194304"
        );
    }

    #[test]
    fn a_file_is_known_by_its_absolute_path() {
        let dir = tempfile::tempdir().unwrap();
        let image = dir.path().join("a.img");
        std::fs::write(&image, b"x").unwrap();
        let id = SourceIdentity::resolve(&image);
        assert_eq!(id.key, image.display().to_string());
        assert_eq!(id.path, id.key);
        assert!(!id.stable_device_id);
    }

    #[test]
    fn a_link_names_the_device_it_points_at() {
        // /dev/null is a character device: no by-id link is a block device like it.
        let dir = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink("/dev/null", dir.path().join("wwn-0x1")).unwrap();
        let rdev = std::fs::metadata("/dev/null").unwrap().rdev();
        assert_eq!(by_id_link(dir.path(), rdev), None);
    }
}
