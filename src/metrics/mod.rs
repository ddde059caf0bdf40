//! Prometheus text-format metrics for node_exporter's textfile collector: what the
//! last run of each job (or each command's source) left, for alerting on a host that
//! stopped backing up. The series, their labels and the file's rules are in
//! docs/metrics.md.
//!
//! One file holds the series of many jobs and many cron lines: a run replaces only the
//! series of its own job (in its store), under a lock, and the file is replaced atomically.

mod file;
mod text;

pub use file::{record, update_snapshots};
pub use text::{escape_label_value, Sample, Textfile};

use std::time::{Duration, SystemTime};

/// What a run's series are labelled with; a job in a store is one set of series.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Labels {
    /// The job's name in `ebsnap run`; the source (or target) path outside it.
    pub job: String,
    pub source: String,
    /// The store's location, as `--store` names it.
    pub store: String,
}

impl Labels {
    /// Whether `labels` are those of this run's series: the same job in the same
    /// store. The source is not compared: a job whose source changed (or a restore
    /// whose snapshot could not be described) replaces its old series rather than
    /// leaving them beside the new ones forever.
    pub fn same_run(&self, labels: &[(String, String)]) -> bool {
        let get = |name: &str| labels.iter().find(|(k, _)| k == name).map(|(_, v)| v);
        get("job") == Some(&self.job) && get("store") == Some(&self.store)
    }

    /// As the text format orders them: by name.
    pub fn pairs(&self) -> Vec<(String, String)> {
        vec![
            ("job".to_owned(), self.job.clone()),
            ("source".to_owned(), self.source.clone()),
            ("store".to_owned(), self.store.clone()),
        ]
    }
}

/// One finished run, to be recorded.
#[derive(Clone, Debug)]
pub struct RunRecord {
    pub labels: Labels,
    /// When the run ended.
    pub ended: SystemTime,
    pub duration: Duration,
    /// The process exit code the run's outcome means (0: success).
    pub exit_code: u8,
    pub bytes_written: u64,
    pub blocks_written: u64,
    /// Completed snapshots of the source in the store after the run; `None` when they
    /// could not be counted (the store was out of reach): the last count stays.
    pub snapshots: Option<u64>,
}

/// A gauge family ebsnap writes: its name and its HELP text.
pub struct Family {
    pub name: &'static str,
    pub help: &'static str,
}

pub const LAST_RUN: &str = "ebsnap_last_run_timestamp_seconds";
pub const LAST_SUCCESS: &str = "ebsnap_last_success_timestamp_seconds";
pub const EXIT_CODE: &str = "ebsnap_last_run_exit_code";
pub const DURATION: &str = "ebsnap_last_run_duration_seconds";
pub const BYTES_WRITTEN: &str = "ebsnap_last_run_bytes_written";
pub const BLOCKS_WRITTEN: &str = "ebsnap_last_run_blocks_written";
pub const SNAPSHOTS: &str = "ebsnap_snapshots";

/// Every family, in the order the file lists them. All are gauges.
pub const FAMILIES: [Family; 7] = [
    Family {
        name: LAST_RUN,
        help: "When the last run ended (Unix time), whatever its outcome.",
    },
    Family {
        name: LAST_SUCCESS,
        help: "When the last successful run ended (Unix time); 0: none yet.",
    },
    Family {
        name: EXIT_CODE,
        help: "The exit code of the last run (0: success).",
    },
    Family {
        name: DURATION,
        help: "How long the last run took, in seconds.",
    },
    Family {
        name: BYTES_WRITTEN,
        help: "Bytes the last run wrote (into the store, or onto a restore's target).",
    },
    Family {
        name: BLOCKS_WRITTEN,
        help: "Blocks the last run wrote (into the store, or onto a restore's target).",
    },
    Family {
        name: SNAPSHOTS,
        help: "Completed snapshots of the source in the store, after retention.",
    },
];

impl RunRecord {
    /// This run's samples, taking from `before` (the file's samples of the same label
    /// set) what the run does not know: the last success, and the count if not counted.
    fn samples(&self, before: &Textfile) -> Vec<(&'static str, f64)> {
        let ours = |labels: &[(String, String)]| self.labels.same_run(labels);
        let ended = unix_seconds(self.ended);
        let last_success = if self.exit_code == 0 {
            Some(ended)
        } else {
            before.value(LAST_SUCCESS, ours)
        };
        let snapshots = self
            .snapshots
            .map(|n| n as f64)
            .or_else(|| before.value(SNAPSHOTS, ours));
        let mut samples = vec![
            (LAST_RUN, ended),
            (LAST_SUCCESS, last_success.unwrap_or(0.0)),
            (EXIT_CODE, f64::from(self.exit_code)),
            (DURATION, self.duration.as_secs_f64()),
            (BYTES_WRITTEN, self.bytes_written as f64),
            (BLOCKS_WRITTEN, self.blocks_written as f64),
        ];
        samples.extend(snapshots.map(|n| (SNAPSHOTS, n)));
        samples
    }

    /// `before` with this run's series in place of the old ones of its job.
    pub fn apply(&self, mut before: Textfile) -> Textfile {
        let pairs = self.labels.pairs();
        let samples = self.samples(&before);
        before.remove(|labels| self.labels.same_run(labels));
        for (family, value) in samples {
            before.push(family, Sample::new(pairs.clone(), value));
        }
        before
    }
}

/// Whole seconds since the epoch: what alert rules compare with `time()`.
fn unix_seconds(t: SystemTime) -> f64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs() as f64)
}
