//! The pre-hook and post-hook around a backup.
//!
//! A pre-hook that fails (or passes `--hook-timeout`, or is stopped by a signal)
//! stops the backup before anything is started. The post-hook runs once the pre-hook
//! has started, whatever happened next: after a success, a failure or a signal, with
//! `EBSNAP_STATUS` saying which. It is not stopped by the signal that stopped the
//! backup (a second one exits ebsnap at once; the hook, in its own process group,
//! runs on).

use super::{BackupOptions, BackupReport};
use crate::engine::hooks::{Hook, HookEnd};
use crate::engine::{Error, Result};
use std::future::Future;
use std::path::Path;

/// Runs `backup` between the hooks `options` names.
pub(super) async fn with_hooks(
    store_identity: String,
    path: &Path,
    options: &BackupOptions,
    backup: impl Future<Output = Result<BackupReport>>,
) -> Result<BackupReport> {
    let c = &options.consistency;
    let env = hook_env(store_identity, path, options);
    if let Some(command) = &c.pre_hook {
        let hook = Hook {
            name: "pre-hook",
            command,
            env: &env,
            timeout: c.hook_timeout,
        };
        let end = hook.run(Some(&options.stop)).await;
        if !end.succeeded() {
            let error = match (&end, options.stop.requested()) {
                (HookEnd::Stopped, Some(signal)) => Error::Interrupted { signal },
                _ => Error::Hook {
                    hook: "pre-hook",
                    command: command.clone(),
                    why: end.describe(c.hook_timeout),
                },
            };
            let result = Err(error);
            let code = post_hook(options, &env, &result).await;
            return with_code(result, code);
        }
    }
    let result = backup.await;
    let code = post_hook(options, &env, &result).await;
    with_code(result, code)
}

/// The result, saying what the post-hook exited with (in the report, or the error).
fn with_code(result: Result<BackupReport>, code: Option<i32>) -> Result<BackupReport> {
    let Some(code) = code else { return result };
    match result {
        Ok(mut report) => {
            report.post_hook_exit_code = Some(code);
            Ok(report)
        }
        Err(e) => Err(Error::AfterPostHook {
            source: Box::new(e),
            post_hook_exit_code: code,
        }),
    }
}

/// What every hook is told.
fn hook_env(store_identity: String, path: &Path, options: &BackupOptions) -> Vec<(String, String)> {
    let c = &options.consistency;
    let source = std::path::absolute(path).unwrap_or_else(|_| path.to_owned());
    let mut env = vec![
        ("EBSNAP_SOURCE".into(), source.display().to_string()),
        (
            "EBSNAP_STORE".into(),
            c.store_name.clone().unwrap_or(store_identity),
        ),
    ];
    if let Some(job) = &c.job {
        env.push(("EBSNAP_JOB".into(), job.clone()));
    }
    if let Some(read_from) = &c.read_from {
        env.push(("EBSNAP_READ_FROM".into(), read_from.display().to_string()));
    }
    env
}

/// The pending snapshot a failed backup keeps for a rerun, if it keeps one.
fn kept(e: &Error) -> String {
    match e {
        Error::Resumable { snapshot, .. } => snapshot.to_string(),
        _ => String::new(),
    }
}

/// Runs the post-hook, if there is one, telling it how the backup ended; returns its
/// exit code. Its failure is logged here; the caller decides what it costs.
async fn post_hook(
    options: &BackupOptions,
    env: &[(String, String)],
    result: &Result<BackupReport>,
) -> Option<i32> {
    let c = &options.consistency;
    let command = c.post_hook.as_ref()?;
    let (status, snapshot, code) = match result {
        Ok(r) => ("ok", r.snapshot_id.clone().unwrap_or_default(), 0),
        Err(e) if e.interrupted_by().is_some() => ("interrupted", kept(e), e.exit_code()),
        Err(e) => ("failed", kept(e), e.exit_code()),
    };
    let mut env = env.to_vec();
    env.push(("EBSNAP_STATUS".into(), status.into()));
    env.push(("EBSNAP_SNAPSHOT_ID".into(), snapshot));
    env.push(("EBSNAP_EXIT_CODE".into(), code.to_string()));
    let hook = Hook {
        name: "post-hook",
        command,
        env: &env,
        timeout: c.hook_timeout,
    };
    let end = hook.run(None).await;
    if !end.succeeded() {
        tracing::error!("post-hook `{command}` {}", end.describe(c.hook_timeout));
    }
    Some(end.code())
}
