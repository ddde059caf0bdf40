//! Progress as the user sees it: a bar on a terminal, plain periodic lines otherwise
//! (cron and systemd logs), nothing with -q.

use ebsnap::engine::{NoProgress, Progress};
use indicatif::{HumanBytes, ProgressBar, ProgressStyle};
use std::io::IsTerminal;
use std::sync::Mutex;
use std::time::{Duration, Instant};

pub fn for_stderr(quiet: bool) -> Box<dyn Progress> {
    if quiet {
        Box::new(NoProgress)
    } else if std::io::stderr().is_terminal() {
        Box::new(Bar(Mutex::new(None)))
    } else {
        Box::new(Lines(Mutex::new(None)))
    }
}

struct Bar(Mutex<Option<ProgressBar>>);

impl Progress for Bar {
    fn start(&self, what: &str, total: u64) {
        let bar = ProgressBar::new(total);
        let style = ProgressStyle::with_template(
            "{msg} [{bar:30}] {bytes}/{total_bytes} {binary_bytes_per_sec} ETA {eta}",
        )
        .expect("valid template")
        .progress_chars("=> ");
        bar.set_style(style);
        bar.set_message(what.to_owned());
        bar.enable_steady_tick(Duration::from_millis(200));
        *self.0.lock().unwrap() = Some(bar);
    }

    fn set(&self, done: u64) {
        if let Some(bar) = &*self.0.lock().unwrap() {
            bar.set_position(done);
        }
    }

    fn finish(&self) {
        if let Some(bar) = self.0.lock().unwrap().take() {
            bar.finish_and_clear();
        }
    }
}

/// Prints a line every `INTERVAL`, and one at the end.
struct Lines(Mutex<Option<LineState>>);

struct LineState {
    what: String,
    total: u64,
    done: u64,
    started: Instant,
    last: Instant,
}

const INTERVAL: Duration = Duration::from_secs(10);

impl LineState {
    fn print(&self) {
        let secs = self.started.elapsed().as_secs_f64().max(1e-3);
        let rate = self.done as f64 / secs;
        let pct = if self.total == 0 {
            100.0
        } else {
            100.0 * self.done as f64 / self.total as f64
        };
        let eta = if rate > 0.0 {
            (self.total.saturating_sub(self.done)) as f64 / rate
        } else {
            0.0
        };
        eprintln!(
            "ebsnap: {}: {pct:.1}% ({} of {}), {}/s, {:.0}s elapsed, ETA {eta:.0}s",
            self.what,
            HumanBytes(self.done),
            HumanBytes(self.total),
            HumanBytes(rate as u64),
            secs
        );
    }
}

impl Progress for Lines {
    fn start(&self, what: &str, total: u64) {
        let now = Instant::now();
        *self.0.lock().unwrap() = Some(LineState {
            what: what.to_owned(),
            total,
            done: 0,
            started: now,
            last: now,
        });
    }

    fn set(&self, done: u64) {
        if let Some(state) = &mut *self.0.lock().unwrap() {
            state.done = done;
            if state.last.elapsed() >= INTERVAL {
                state.last = Instant::now();
                state.print();
            }
        }
    }

    fn finish(&self) {
        if let Some(state) = self.0.lock().unwrap().take() {
            state.print();
        }
    }
}
