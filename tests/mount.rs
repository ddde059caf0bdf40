//! `ebsnap mount` through FUSE, with the real kernel: the image's bytes, an ext4
//! filesystem loop-mounted from it and checked by e2fsck, a damaged block as EIO,
//! and a clean end on SIGTERM or `fusermount3 -u`. On the local store and through
//! `ebsnap serve`. Needs root and /dev/fuse: skips loudly without them.

mod common;

use common::recover::*;
use common::*;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

/// `ebsnap mount ID DIR --json` running, once DIR/disk.img is there.
fn mount(env: &Env, location: &Location, id: &str, dir: &Path) -> Running {
    fs::create_dir_all(dir).unwrap();
    let mut command = location.command(env, &["--json", "mount", id, dir.to_str().unwrap()]);
    command.env("EBSNAP_LOG", "ebsnap=info");
    let mut running = Running::start(command, false);
    let image = dir.join("disk.img");
    running.wait_for("disk.img appears", || is_mounted(dir) && image.exists());
    running
}

/// SIGTERM ends the mount: nothing stays mounted, the process is gone, and its one
/// JSON object says what it did.
fn stop(running: Running, dir: &Path) -> serde_json::Value {
    let (status, stdout) = running.terminate();
    assert!(status.success(), "{status}");
    assert!(!is_mounted(dir), "{} is still mounted", dir.display());
    serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{e}: {stdout:?}"))
}

fn reads_the_image(env: &Env, location: &Location) {
    let image = env.path("image");
    let size = 30 * BLOCK + 5000;
    make_image(
        &image,
        size,
        &[(BLOCK, 4 * BLOCK as usize), (size - 3000, 3000)],
        9,
    );
    let id = location.backup(env, &image);
    let dir = env.path("mnt");
    let running = mount(env, location, &id, &dir);
    let disk = dir.join("disk.img");
    assert_eq!(fs::metadata(&disk).unwrap().len(), size);
    assert_eq!(fs::read(&disk).unwrap(), fs::read(&image).unwrap());
    // Read again: from the cache.
    assert_eq!(fs::read(&disk).unwrap(), fs::read(&image).unwrap());
    assert!(fs::write(&disk, b"x").is_err(), "the image is read-only");
    let report = stop(running, &dir);
    assert_eq!(report["snapshot_id"], id.as_str());
    assert_eq!(report["blocks_fetched"], 5, "{report}");
    assert!(report["bytes_read"].as_u64().unwrap() >= size, "{report}");
    assert!(report["seconds"].as_f64().unwrap() > 0.0);
}

#[test]
fn mount_reads_the_local_store() {
    if !have_fuse("mount_reads_the_local_store") {
        return;
    }
    let env = Env::new();
    reads_the_image(&env, &Location::local(&env));
}

#[test]
fn mount_reads_through_ebsnap_serve() {
    if !have_fuse("mount_reads_through_ebsnap_serve") {
        return;
    }
    let env = Env::new();
    reads_the_image(&env, &Location::served(&env));
}

/// A 64 MiB ext4 image holding one file, written with debugfs (no mount needed).
fn ext4_image(env: &Env) -> Option<(PathBuf, PathBuf)> {
    if !(have("mkfs.ext4", "ext4") && have("debugfs", "ext4") && have("e2fsck", "ext4")) {
        return None;
    }
    let (image, file) = (env.path("ext4.img"), env.path("hello.bin"));
    make_image(&image, 64 << 20, &[], 0);
    let mut data = vec![0u8; 3 * BLOCK as usize + 12345];
    fill_random(&mut data, 77);
    fs::write(&file, &data).unwrap();
    run_ok("mkfs.ext4", &["-q", "-F", image.to_str().unwrap()]);
    let write = format!("write {} hello.bin", file.display());
    run_ok("debugfs", &["-w", "-R", &write, image.to_str().unwrap()]);
    Some((image, file))
}

#[test]
fn an_ext4_backup_loop_mounts_and_checks_clean() {
    if !have_fuse("an_ext4_backup_loop_mounts_and_checks_clean") {
        return;
    }
    let env = Env::new();
    let Some((image, file)) = ext4_image(&env) else {
        return;
    };
    let location = Location::local(&env);
    let id = location.backup(&env, &image);
    let dir = env.path("mnt");
    let running = mount(&env, &location, &id, &dir);
    let disk = dir.join("disk.img");
    run_ok("e2fsck", &["-fn", disk.to_str().unwrap()]);
    let Some(files) = LoopMount::new(&disk, &env.path("fs")) else {
        stop(running, &dir);
        return;
    };
    let restored = fs::read(files.0.join("hello.bin")).unwrap();
    assert!(restored == fs::read(&file).unwrap(), "hello.bin differs");
    // SIGTERM while the loop device holds the image: DIR is detached at once, and
    // the loop device is served until it lets go.
    // SAFETY: a signal to our own child.
    unsafe { libc::kill(running.child.id() as i32, libc::SIGTERM) };
    wait_until("DIR is detached", || !is_mounted(&dir));
    assert!(fs::read(files.0.join("hello.bin")).unwrap() == restored);
    drop(files);
    let report = stop(running, &dir);
    assert!(report["blocks_fetched"].as_u64().unwrap() > 0, "{report}");
}

#[test]
fn a_damaged_block_reads_as_eio() {
    if !have_fuse("a_damaged_block_reads_as_eio") {
        return;
    }
    let env = Env::new();
    let location = Location::local(&env);
    let image = env.dense_image("image", 4, 7);
    let id = location.backup(&env, &image);
    damage(&env.store(), 2);
    let dir = env.path("mnt");
    let running = mount(&env, &location, &id, &dir);
    let err = fs::read(dir.join("disk.img")).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EIO), "{err}");
    assert!(
        running.stderr().contains(&format!("snapshot {id}, block")),
        "{}",
        running.stderr()
    );
    // What is whole still reads.
    let f = fs::File::open(dir.join("disk.img")).unwrap();
    let mut first = vec![0u8; 4096];
    std::os::unix::fs::FileExt::read_exact_at(&f, &mut first, 0).unwrap();
    assert_eq!(first[..], fs::read(&image).unwrap()[..4096]);
    drop(f);
    stop(running, &dir);
}

#[test]
fn fusermount_u_ends_the_mount() {
    if !have_fuse("fusermount_u_ends_the_mount") {
        return;
    }
    let env = Env::new();
    let location = Location::local(&env);
    let image = env.dense_image("image", 2, 5);
    let id = location.backup(&env, &image);
    let dir = env.path("mnt");
    let mut running = mount(&env, &location, &id, &dir);
    run_ok("fusermount3", &["-u", dir.to_str().unwrap()]);
    let status = running.wait();
    assert!(status.success(), "{status}: {}", running.stderr());
    assert!(!is_mounted(&dir));
    let status = Command::new("mountpoint").arg(&dir).status().unwrap();
    assert!(!status.success());
}
