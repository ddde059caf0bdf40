//! SIGINT and SIGTERM: a clean stop for work that can be resumed, a shutdown for
//! `serve`.

use ebsnap::engine::{self, Stop};
use tokio::signal::unix::{signal, SignalKind};

/// A stop that SIGINT (Ctrl-C) or SIGTERM requests: the work stops issuing requests,
/// lets those in flight finish, saves what a resume needs, and fails with the signal.
/// A second signal exits at once.
pub fn stop_on_signals() -> Stop {
    let stop = Stop::default();
    let watcher = stop.clone();
    tokio::spawn(async move {
        let (Ok(mut int), Ok(mut term)) = (
            signal(SignalKind::interrupt()),
            signal(SignalKind::terminate()),
        ) else {
            tracing::warn!("cannot watch for signals: Ctrl-C will not stop cleanly");
            return;
        };
        loop {
            let number = tokio::select! {
                _ = int.recv() => libc::SIGINT,
                _ = term.recv() => libc::SIGTERM,
            };
            let name = engine::signal_name(number);
            if watcher.requested().is_some() {
                eprintln!("ebsnap: {name} again: exiting now");
                std::process::exit(128 + number);
            }
            eprintln!(
                "ebsnap: {name}: stopping once the requests in flight are done (again to exit now)"
            );
            watcher.request(number);
        }
    });
    stop
}

/// Resolves on SIGINT or SIGTERM: the server then stops accepting and lets requests in
/// flight finish.
pub async fn shutdown() {
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler installs");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}
