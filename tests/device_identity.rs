//! A block device keeps its lineage across a change of name, and a disk that turns up
//! under an old name starts its own: two loop devices, swapped between runs (issue 12).
//! Needs root and loop devices; skips loudly without them.

mod common;

use common::{Env, BLOCK};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::Command;

/// A loop device attached to an image, detached when dropped.
struct Loop(String);

impl Loop {
    /// Attaches `image` to the first free loop device, or to `device`.
    fn attach(image: &Path, device: Option<&str>) -> Option<Loop> {
        let mut cmd = Command::new("losetup");
        match device {
            Some(d) => cmd.arg(d).arg(image),
            None => cmd.args(["--find", "--show"]).arg(image),
        };
        let out = cmd.output().ok()?;
        if !out.status.success() {
            eprintln!("losetup: {}", String::from_utf8_lossy(&out.stderr));
            return None;
        }
        let name = match device {
            Some(d) => d.to_owned(),
            None => String::from_utf8(out.stdout).ok()?.trim().to_owned(),
        };
        Some(Loop(name))
    }

    fn path(&self) -> &Path {
        Path::new(&self.0)
    }
}

impl Drop for Loop {
    fn drop(&mut self) {
        let _ = Command::new("losetup").arg("-d").arg(&self.0).status();
    }
}

/// Two loop devices, or `None` (said loudly) where this machine has none for us.
fn two_loops(a: &Path, b: &Path) -> Option<(Loop, Loop)> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("SKIPPED: device identity tests need root (losetup)");
        return None;
    }
    let pair = Loop::attach(a, None).zip(Loop::attach(b, None));
    if pair.is_none() {
        eprintln!("SKIPPED: no loop devices to attach");
    }
    pair
}

fn backup(env: &Env, device: &Path) -> serde_json::Value {
    env.json(&["backup", device.to_str().unwrap()])
}

fn tag(env: &Env, id: &str, key: &str) -> String {
    let shown = env.json(&["show", id]);
    let tags = shown["tags"].as_object().cloned().unwrap_or_default();
    tags.get(key)
        .and_then(|v| v.as_str())
        .unwrap_or_else(|| panic!("no tag {key} in {shown}"))
        .to_owned()
}

fn canonical(p: &Path) -> PathBuf {
    std::fs::canonicalize(p).unwrap()
}

#[test]
fn swapped_loop_devices_keep_their_lineages_and_a_new_disk_starts_its_own() {
    let env = Env::new();
    let (a, b) = (
        env.dense_image("a.img", 8, 1),
        env.dense_image("b.img", 8, 2),
    );
    let Some((x, y)) = two_loops(&a, &b) else {
        return;
    };
    let (first_a, first_b) = (backup(&env, x.path()), backup(&env, y.path()));
    let snap_a = first_a["snapshot_id"].as_str().unwrap().to_owned();
    let snap_b = first_b["snapshot_id"].as_str().unwrap().to_owned();
    let a_id = format!("loop:{}", canonical(&a).display());
    assert_eq!(tag(&env, &snap_a, "ebsnap:source"), a_id);
    assert_eq!(tag(&env, &snap_a, "ebsnap:device-id"), a_id);
    assert_eq!(tag(&env, &snap_a, "ebsnap:device-path"), x.0);

    // The "reboot": both go, then come back swapped, and one block of A changes.
    let (xname, yname) = (x.0.clone(), y.0.clone());
    drop((x, y));
    let file = std::fs::OpenOptions::new().write(true).open(&a).unwrap();
    file.write_all_at(&[0xAB; 4096], 3 * BLOCK).unwrap();
    drop(file);
    let y = Loop::attach(&a, Some(&yname)).expect("attach A where B was");
    let x = Loop::attach(&b, Some(&xname)).expect("attach B where A was");

    let again_a = backup(&env, y.path());
    assert_eq!(again_a["parent_snapshot_id"], snap_a.as_str(), "{again_a}");
    assert_eq!(again_a["blocks_written"], 1, "{again_a}");
    let again_b = backup(&env, x.path());
    assert_eq!(again_b["parent_snapshot_id"], snap_b.as_str(), "{again_b}");
    assert_eq!(again_b["blocks_written"], 0, "{again_b}");

    // Another disk under B's old name: a lineage of its own, all of it written.
    drop(x);
    let c = env.dense_image("c.img", 8, 3);
    let x = Loop::attach(&c, Some(&xname)).expect("attach C where B was");
    let new_disk = backup(&env, x.path());
    assert!(new_disk["parent_snapshot_id"].is_null(), "{new_disk}");
    assert_eq!(new_disk["blocks_written"], 8, "{new_disk}");
}
