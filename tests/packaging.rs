//! What a package installs, checked by the tools that will read it: the systemd units
//! by systemd-analyze, the completions by the shells, the man pages by groff, and
//! [package.metadata.deb]'s assets against the repository and scripts/assets.
//! Building the .deb itself (scripts/package, a release build) is too slow for here.

mod common;

use common::recover::have;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const BIN: &str = env!("CARGO_BIN_EXE_ebsnap");
const ROOT: &str = env!("CARGO_MANIFEST_DIR");
const UNITS: [&str; 2] = ["ebsnap-run.service", "ebsnap-run.timer"];

fn run(cmd: &mut Command) -> Output {
    cmd.output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"))
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// The commands `ebsnap --help` lists, but clap's own `help`.
fn commands() -> Vec<String> {
    let help = stdout(&run(Command::new(BIN).arg("--help")));
    let listed = help
        .lines()
        .skip_while(|l| !l.starts_with("Commands:"))
        .skip(1)
        .take_while(|l| !l.trim().is_empty());
    let names: Vec<String> = listed
        .filter_map(|l| l.split_whitespace().next().map(str::to_owned))
        .filter(|name| name != "help")
        .collect();
    assert!(names.len() > 10, "commands not found in --help: {help}");
    names
}

/// The units as installed, in `dir`, but for ExecStart: systemd-analyze verify
/// refuses a unit whose program is missing, so it runs the binary under test.
fn units_in(dir: &Path) -> Vec<PathBuf> {
    UNITS
        .iter()
        .map(|name| {
            let text = fs::read_to_string(Path::new(ROOT).join("contrib/systemd").join(name))
                .unwrap()
                .replace("ExecStart=/usr/bin/ebsnap ", &format!("ExecStart={BIN} "));
            let path = dir.join(name);
            fs::write(&path, text).unwrap();
            path
        })
        .collect()
}

#[test]
fn units_pass_systemd_analyze_verify() {
    if !have("systemd-analyze", "units_pass_systemd_analyze_verify") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let units = units_in(dir.path());
    assert!(fs::read_to_string(&units[0]).unwrap().contains(BIN));
    let out = run(Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .args(&units));
    // Unknown keys and bad values are warnings with exit 0: any line naming our
    // units fails the test (other units of the host may have complaints of their own).
    let err = stderr(&out);
    let ours: Vec<&str> = err.lines().filter(|l| l.contains("ebsnap")).collect();
    assert!(
        out.status.success() && ours.is_empty(),
        "systemd-analyze verify: {err}"
    );
}

/// systemd's own measure of the sandbox (0 is a locked-down service, 10 an open
/// one): the service keeps what it has (2.1 when written) unless a change says why.
#[test]
fn service_sandbox_keeps_its_exposure_score() {
    if !have(
        "systemd-analyze",
        "service_sandbox_keeps_its_exposure_score",
    ) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let units = units_in(dir.path());
    let out = run(Command::new("systemd-analyze")
        .args(["security", "--offline=yes", "--threshold=25", "--no-pager"])
        .arg(&units[0]));
    if stderr(&out).contains("unrecognized option") {
        eprintln!("SKIPPED service_sandbox_keeps_its_exposure_score: systemd-analyze before 250");
        return;
    }
    assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));
}

/// `Key=Value` lines of a unit file (no sections: ebsnap's keys are unique to one).
fn settings(name: &str) -> Vec<(String, String)> {
    let text = fs::read_to_string(Path::new(ROOT).join("contrib/systemd").join(name)).unwrap();
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .collect()
}

fn setting<'a>(all: &'a [(String, String)], key: &str) -> Option<&'a str> {
    all.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
}

/// What issue 12 asks of the units: a oneshot `ebsnap run`, nightly, persistent,
/// with a randomized delay; and the XDG directories of a system service.
#[test]
fn units_run_the_jobs_nightly() {
    let service = settings(UNITS[0]);
    assert_eq!(setting(&service, "Type"), Some("oneshot"));
    assert_eq!(setting(&service, "ExecStart"), Some("/usr/bin/ebsnap run"));
    let env = setting(&service, "Environment").unwrap();
    for var in [
        "XDG_CONFIG_HOME=/etc",
        "XDG_DATA_HOME=/var/lib",
        "XDG_STATE_HOME=/var/lib",
    ] {
        assert!(env.split_whitespace().any(|v| v == var), "{var} in {env}");
    }
    assert_eq!(setting(&service, "StateDirectory"), Some("ebsnap"));
    let timer = settings(UNITS[1]);
    assert!(setting(&timer, "OnCalendar").is_some());
    assert_eq!(setting(&timer, "Persistent"), Some("true"));
    assert!(setting(&timer, "RandomizedDelaySec").is_some());
    assert_eq!(setting(&timer, "WantedBy"), Some("timers.target"));
}

fn completion(shell: &str) -> String {
    let out = run(Command::new(BIN).args(["completions", shell]));
    assert!(
        out.status.success(),
        "completions {shell}: {}",
        stderr(&out)
    );
    stdout(&out)
}

#[test]
fn completions_of_each_shell_name_every_command() {
    let commands = commands();
    for shell in ["bash", "zsh", "fish"] {
        let script = completion(shell);
        for command in &commands {
            assert!(script.contains(command.as_str()), "{shell}: no {command}");
        }
    }
}

/// Each script parses in its own shell (zsh and fish where installed).
#[test]
fn completion_scripts_parse() {
    let dir = tempfile::tempdir().unwrap();
    for (shell, check) in [("bash", "-n"), ("zsh", "-n"), ("fish", "--no-execute")] {
        if shell != "bash" && !have(shell, "completion_scripts_parse") {
            continue;
        }
        let path = dir.path().join(shell);
        fs::write(&path, completion(shell)).unwrap();
        let out = run(Command::new(shell).arg(check).arg(&path));
        assert!(out.status.success(), "{shell} {check}: {}", stderr(&out));
    }
}

/// What bash offers after `ebsnap WORDS`, from the generated completion function.
fn bash_completes(words: &[&str]) -> Vec<String> {
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("ebsnap.bash");
    fs::write(&script, completion("bash")).unwrap();
    let line = format!("ebsnap {}", words.join(" "));
    let words_q: Vec<String> = words.iter().map(|w| format!("'{w}'")).collect();
    let program = format!(
        "source '{}'; COMP_WORDS=(ebsnap {}); COMP_CWORD={}; COMP_LINE='{line}'; \
         COMP_POINT={}; _ebsnap ebsnap '{}' '{}'; printf '%s\\n' \"${{COMPREPLY[@]}}\"",
        script.display(),
        words_q.join(" "),
        words.len(),
        line.len(),
        words.last().unwrap(),
        if words.len() > 1 {
            words[words.len() - 2]
        } else {
            "ebsnap"
        },
    );
    let out = run(Command::new("bash").arg("-c").arg(program));
    assert!(out.status.success(), "bash: {}", stderr(&out));
    stdout(&out).lines().map(str::to_owned).collect()
}

#[test]
fn bash_completes_commands_and_their_flags() {
    assert_eq!(bash_completes(&["ba"]), ["backup"]);
    assert_eq!(bash_completes(&["backup", "--desc"]), ["--description"]);
    assert!(bash_completes(&["completions", ""]).contains(&"fish".to_owned()));
}

fn man_pages(dir: &Path) -> Vec<PathBuf> {
    let out = run(Command::new(BIN).arg("-q").arg("manpage").arg(dir));
    assert!(out.status.success(), "manpage: {}", stderr(&out));
    let mut pages: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    pages.sort();
    pages
}

#[test]
fn man_pages_cover_every_command() {
    let dir = tempfile::tempdir().unwrap();
    let pages = man_pages(dir.path());
    let names: Vec<String> = pages
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    let mut expected: Vec<String> = commands().iter().map(|c| format!("ebsnap-{c}.1")).collect();
    expected.push("ebsnap.1".to_owned());
    expected.sort();
    assert_eq!(names, expected);
}

/// groff renders every page without a warning (-ww), and ebsnap.1 holds what an
/// operator looks up: the synopsis, the commands, exit codes, files.
#[test]
fn man_pages_render() {
    if !have("groff", "man_pages_render") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    for page in man_pages(dir.path()) {
        // -P-cbou: plain text, no bold or underline by overstriking or escapes.
        let out = run(Command::new("groff")
            .args(["-man", "-Tutf8", "-ww", "-P-cbou"])
            .arg(&page));
        assert!(
            out.status.success() && out.stderr.is_empty(),
            "groff {}: {}",
            page.display(),
            stderr(&out)
        );
        if page.ends_with("ebsnap.1") {
            let text = stdout(&out);
            for heading in [
                "SYNOPSIS",
                "SUBCOMMANDS",
                "EXIT STATUS",
                "FILES",
                "ebsnap-backup(1)",
            ] {
                assert!(text.contains(heading), "ebsnap.1 has no {heading}:\n{text}");
            }
        }
    }
}

fn manifest() -> toml::Table {
    let text = fs::read_to_string(Path::new(ROOT).join("Cargo.toml")).unwrap();
    text.parse().unwrap()
}

fn deb_metadata() -> toml::Table {
    let package = manifest()["package"].as_table().unwrap().clone();
    package["metadata"]["deb"].as_table().unwrap().clone()
}

/// Whether `pattern` (a path whose last part may hold one `*`) names a file.
fn matches_a_file(pattern: &Path) -> bool {
    let name = pattern.file_name().unwrap().to_string_lossy().into_owned();
    let Some((prefix, suffix)) = name.split_once('*') else {
        return pattern.is_file();
    };
    let Ok(entries) = fs::read_dir(pattern.parent().unwrap()) else {
        return false;
    };
    entries.filter_map(|e| e.ok()).any(|e| {
        let n = e.file_name().to_string_lossy().into_owned();
        n.starts_with(prefix) && n.ends_with(suffix) && e.path().is_file()
    })
}

/// Every asset of the package is in the repository, or is made by the release build
/// (target/release/ebsnap) or by scripts/assets, run here with this build's binary.
#[test]
fn deb_assets_exist_or_are_generated() {
    let generated = tempfile::tempdir().unwrap();
    let out = run(Command::new("bash")
        .arg(Path::new(ROOT).join("scripts/assets"))
        .arg(BIN)
        .arg(generated.path()));
    assert!(out.status.success(), "scripts/assets: {}", stderr(&out));
    let deb = deb_metadata();
    let assets = deb["assets"].as_array().unwrap();
    let mut dests = Vec::new();
    for asset in assets {
        let [source, dest, mode] = &asset.as_array().unwrap()[..] else {
            panic!("asset {asset} is not [source, dest, mode]")
        };
        let source = source.as_str().unwrap();
        let path = if source == "target/release/ebsnap" {
            PathBuf::from(BIN)
        } else if let Some(made) = source.strip_prefix("target/assets/") {
            generated.path().join(made)
        } else {
            Path::new(ROOT).join(source)
        };
        assert!(
            matches_a_file(&path),
            "asset {source}: {} missing",
            path.display()
        );
        assert!(["644", "755"].contains(&mode.as_str().unwrap()), "{asset}");
        dests.push(dest.as_str().unwrap().to_owned());
    }
    for expected in [
        "usr/bin/",
        "usr/share/man/man1/",
        "usr/share/bash-completion/completions/ebsnap",
        "usr/share/zsh/vendor-completions/_ebsnap",
        "usr/share/fish/vendor_completions.d/ebsnap.fish",
        "usr/share/doc/ebsnap/examples/config.toml",
    ] {
        assert!(
            dests.iter().any(|d| d == expected),
            "no asset installs {expected}"
        );
    }
}

/// cargo-deb finds the units by name in unit-scripts (contrib/systemd).
#[test]
fn deb_installs_both_units() {
    let deb = deb_metadata();
    let units = deb["systemd-units"].as_table().unwrap();
    let dir = Path::new(ROOT).join(units["unit-scripts"].as_str().unwrap());
    let name = units["unit-name"].as_str().unwrap();
    for unit in UNITS {
        assert!(unit.starts_with(name) && dir.join(unit).is_file(), "{unit}");
    }
    // Installing or upgrading the package must never start a backup.
    for key in ["enable", "start", "restart-after-upgrade"] {
        assert_eq!(units[key].as_bool(), Some(false), "{key}");
    }
}

/// The example config is TOML of issue 12's shape: [defaults] and jobs, each with a
/// source. (Whether `ebsnap run` accepts every key is the jobs tests' to say.)
#[test]
fn example_config_has_jobs_with_sources() {
    let text = fs::read_to_string(Path::new(ROOT).join("contrib/config.toml")).unwrap();
    let config: toml::Table = text.parse().unwrap();
    assert!(config["defaults"].is_table());
    let jobs = config["jobs"].as_table().unwrap();
    assert!(jobs.len() >= 2);
    for (name, job) in jobs {
        assert!(job["source"].is_str(), "job {name} has no source");
    }
}

/// `ebsnap manpage` may run as root into a shared directory: a link planted at a
/// page's path is replaced by the page, and what it pointed to stays as it was.
#[test]
fn man_pages_replace_a_planted_link() {
    let dir = tempfile::tempdir().unwrap();
    let victim = dir.path().join("victim");
    fs::write(&victim, "keep me").unwrap();
    let pages = dir.path().join("man1");
    fs::create_dir(&pages).unwrap();
    std::os::unix::fs::symlink(&victim, pages.join("ebsnap.1")).unwrap();
    man_pages(&pages);
    assert_eq!(fs::read_to_string(&victim).unwrap(), "keep me");
    let page = fs::symlink_metadata(pages.join("ebsnap.1")).unwrap();
    assert!(page.is_file(), "ebsnap.1 is a regular file");
}
