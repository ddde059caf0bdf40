//! Requests that ask for unbounded work (tags, filters, repeated ids), text that XML
//! cannot carry, and a StartSnapshot that fails half-way.

use super::load::{form_pairs, pair};
use super::*;

/// `ResourceId.1..n` naming `id`, then the tags.
fn create_tags(ids: &[&str], tags: &[(String, String)]) -> Vec<(String, String)> {
    let mut out = vec![pair("Action", "CreateTags")];
    for (n, id) in ids.iter().enumerate() {
        out.push(pair(format!("ResourceId.{}", n + 1), *id));
    }
    for (n, (k, v)) in tags.iter().enumerate() {
        out.push(pair(format!("Tag.{}.Key", n + 1), k.clone()));
        out.push(pair(format!("Tag.{}.Value", n + 1), v.clone()));
    }
    out
}

fn tags(n: usize, key: impl Fn(usize) -> String) -> Vec<(String, String)> {
    (0..n).map(|i| (key(i), "v".to_owned())).collect()
}

/// Item: 120k tags merged quadratically, thousands of long globs on the async threads,
/// one ResourceId repeated at one fsync each. EC2's limits apply (50 tags, 200 filter
/// values), glob work is capped, and a repeated id is tagged once.
#[test]
fn one_request_cannot_ask_for_unbounded_work() {
    let fx = Fixture::start();
    let id = fx.completed.to_string();
    let long_key = |i: usize| format!("{}{i:03}", "a".repeat(120));
    let over = fx.ec2_call(&create_tags(&[&id], &tags(3000, long_key)));
    over.assert_ec2(400, "TagLimitExceeded");
    // Up to the limit (ebsnap's client keeps a few tags of its own on a snapshot).
    let pending = fx.pending.to_string();
    let many = fx.ec2_call(&create_tags(&[&id, &pending], &tags(45, long_key)));
    assert_eq!(many.status, 200, "{}", many.text());
    for added in 0.. {
        let one_more = [(format!("extra{added}"), String::from("v"))];
        let reply = fx.ec2_call(&create_tags(&[&id], &one_more));
        if reply.status != 200 {
            reply.assert_ec2(400, "TagLimitExceeded");
            break;
        }
        assert!(added < 5, "more than 50 tags on a snapshot");
    }

    // One id, ten thousand times: one metadata write, not ten thousand fsyncs.
    let started = std::time::Instant::now();
    let repeated = vec![id.as_str(); 10_000];
    let reply = fx.ec2_call(&create_tags(&repeated, &tags(1, long_key)));
    assert_eq!(reply.status, 200, "{}", reply.text());
    let took = started.elapsed();
    assert!(
        took < Duration::from_secs(2),
        "CreateTags of one repeated id took {took:?}"
    );

    let mut many = vec![
        pair("Action", "DescribeSnapshots"),
        pair("Filter.1.Name", "tag-key"),
    ];
    for n in 1..=201 {
        many.push(pair(format!("Filter.1.Value.{n}"), "x*"));
    }
    fx.ec2_call(&many).assert_ec2(400, "FilterLimitExceeded");
    // 200 patterns, each costly (quadratic) against every long tag key.
    let hostile = format!("*{}b", "a".repeat(60));
    many.truncate(2 + 200);
    for (_, v) in many.iter_mut().skip(2) {
        v.clone_from(&hostile);
    }
    let worker = std::thread::spawn({
        let (addr, body) = (fx.server.addr.clone(), form(&many));
        move || {
            let req = Req::ec2(&body).header("host", &addr);
            Conn::open(&addr)
                .send_in_background_and_read(Fixture::with_length(req).signed().bytes())
                .reply()
        }
    });
    fx.assert_served("DescribeSnapshots with 200 hostile patterns");
    worker
        .join()
        .unwrap()
        .assert_ec2(400, "FilterLimitExceeded");
    fx.assert_served("after the hostile patterns");
}

/// Item: U+FFFE accepted in a tag made every DescribeSnapshots answer unparsable.
/// Tags and descriptions, in EC2 CreateTags and EBS StartSnapshot, refuse what XML
/// cannot carry, with a modeled error.
#[test]
fn text_xml_cannot_carry_is_refused() {
    let fx = Fixture::start();
    let id = fx.completed.to_string();
    for bad in ["\u{FFFE}", "\u{FFFF}", "a\u{1}b", "\u{1b}[31m"] {
        let as_value = [(String::from("k"), bad.to_owned())];
        let reply = fx.ec2_call(&create_tags(&[&id], &as_value));
        reply.assert_ec2(400, "InvalidParameterValue");
        let as_key = [(format!("k{bad}"), String::from("v"))];
        let reply = fx.ec2_call(&create_tags(&[&id], &as_key));
        reply.assert_ec2(400, "InvalidParameterValue");
        let json = serde_json::json!({"VolumeSize": 1, "Description": format!("d{bad}")});
        let reply = fx.start_raw(&json);
        reply
            .assert_ebs(400, "ValidationException")
            .assert_reason("INVALID_PARAMETER_VALUE");
        let json = serde_json::json!({"VolumeSize": 1, "Tags": [{"Key": "k", "Value": bad}]});
        let reply = fx.start_raw(&json);
        reply
            .assert_ebs(400, "ValidationException")
            .assert_reason("INVALID_PARAMETER_VALUE");
    }
    let ok = fx.ec2_call(&create_tags(
        &[&id],
        &[(String::from("k"), String::from("tab\there"))],
    ));
    assert_eq!(ok.status, 200, "tab, newline and CR are XML: {}", ok.text());
    let listed = fx.ec2_call(&[pair("Action", "DescribeSnapshots")]);
    assert_eq!(listed.status, 200);
    assert!(!listed.text().contains('\u{FFFE}'));
    let snapshots = fx.rt.block_on(fx.client.list_snapshots()).unwrap();
    assert_eq!(snapshots.len(), 2, "no snapshot was started: {snapshots:?}");
}

fn form(pairs: &[(String, String)]) -> String {
    form_pairs(pairs)
}

/// A tmpfs mounted for a test, unmounted when dropped.
struct Tmpfs(PathBuf);

impl Tmpfs {
    /// `None` (said loudly) where mounting is not allowed.
    fn mount(at: PathBuf, size: &str) -> Option<Tmpfs> {
        std::fs::create_dir_all(&at).unwrap();
        let status = std::process::Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0700"),
                "tmpfs",
            ])
            .arg(&at)
            .status();
        if !status.is_ok_and(|s| s.success()) {
            eprintln!("SKIPPED: cannot mount a tmpfs (needs root)");
            return None;
        }
        Some(Tmpfs(at))
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg(&self.0).status();
    }
}

/// Fills the filesystem at `dir` until it has no room left.
fn fill(dir: &Path) {
    let mut f = std::fs::File::create(dir.join("filler")).unwrap();
    let chunk = vec![0xA5u8; 4096];
    while f.write_all(&chunk).is_ok() {}
}

/// Item: a StartSnapshot answered 500 left its files, and showed as pending after a
/// restart. On a full filesystem the start fails, and leaves nothing behind.
#[test]
fn a_failed_start_leaves_nothing_behind() {
    let outer = tempfile::tempdir().unwrap();
    let Some(fs) = Tmpfs::mount(outer.path().join("fs"), "8m") else {
        return;
    };
    let (store, work) = (fs.0.join("store"), outer.path().join("work"));
    std::fs::create_dir_all(&work).unwrap();
    let start = || ServeProcess::start(&store, &work, &work, QUICK);
    let mut server = start();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let client = rt.block_on(server.client());
    let kept = rt
        .block_on(client.start_snapshot(StartSnapshot::new(1)))
        .unwrap()
        .id;
    let files = || {
        let mut names: Vec<_> = std::fs::read_dir(store.join("snapshots"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        names.sort();
        names
    };
    let before = files();
    fill(&fs.0);
    let failed = rt.block_on(client.start_snapshot(StartSnapshot::new(1)));
    assert!(failed.is_err(), "a start on a full filesystem: {failed:?}");
    assert_eq!(files(), before, "the failed start left files");
    std::fs::remove_file(fs.0.join("filler")).unwrap();
    server.stop();
    let server = start();
    let client = rt.block_on(server.client());
    let listed = rt.block_on(client.list_snapshots()).unwrap();
    let ids: Vec<_> = listed.iter().map(|s| s.id.clone()).collect();
    assert_eq!(ids, vec![kept], "only the snapshot that was started");
}
