//! Which snapshots of one source a retention policy keeps, and why: restic's rules,
//! as pure functions of the snapshots' start times and tags (no I/O, no clock).
//!
//! The snapshots are taken newest first. Each counted policy (`last`, `hourly`, ...)
//! keeps the newest snapshot of each of its last N distinct buckets: the first
//! snapshot seen in a bucket it has not seen yet, until it has kept N. `within` keeps
//! every snapshot started less than that long before the newest one (not before now:
//! a source that stopped being backed up keeps its last snapshots), and `tags` every
//! snapshot carrying one of the tags. What any policy keeps is kept.

use crate::store::{SnapshotInfo, Tag};
use jiff::civil::DateTime;
use jiff::tz::TimeZone;
use jiff::Timestamp;
use std::time::{Duration, SystemTime};

/// How many snapshots of each kind to keep, per source. `None` (or 0) leaves a kind out.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KeepPolicy {
    pub last: Option<u32>,
    pub hourly: Option<u32>,
    pub daily: Option<u32>,
    pub weekly: Option<u32>,
    pub monthly: Option<u32>,
    pub yearly: Option<u32>,
    /// Keep what started within this long of the source's newest snapshot.
    pub within: Option<Duration>,
    /// Keep what carries any of these tags (key and value).
    pub tags: Vec<Tag>,
}

impl KeepPolicy {
    /// Whether the policy keeps nothing of its own. Forgetting with it would remove all
    /// but the newest snapshot of every source, which nobody means: it is refused.
    pub fn is_empty(&self) -> bool {
        self.counted().iter().all(|(_, n)| *n == 0)
            && self.within.is_none_or(|w| w.is_zero())
            && self.tags.is_empty()
    }

    /// The counted policies with their counts, in the order their reasons are listed.
    fn counted(&self) -> [(Bucket, u32); 6] {
        let n = |c: Option<u32>| c.unwrap_or(0);
        [
            (Bucket::Last, n(self.last)),
            (Bucket::Hourly, n(self.hourly)),
            (Bucket::Daily, n(self.daily)),
            (Bucket::Weekly, n(self.weekly)),
            (Bucket::Monthly, n(self.monthly)),
            (Bucket::Yearly, n(self.yearly)),
        ]
    }
}

/// The reason the newest snapshot of a source is always kept with: it is the parent
/// of the source's next backup.
pub const NEWEST_REASON: &str = "newest of its source";

/// A counted policy's bucket: what makes two snapshots fall into the same one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Bucket {
    Last,
    Hourly,
    Daily,
    Weekly,
    Monthly,
    Yearly,
}

impl Bucket {
    /// The bucket of a snapshot started at local time `t`, the `nr`th newest. `Last`
    /// puts every snapshot in a bucket of its own.
    fn key(self, t: DateTime, nr: usize) -> i64 {
        let (y, m, d, h) = (
            i64::from(t.year()),
            i64::from(t.month()),
            i64::from(t.day()),
            i64::from(t.hour()),
        );
        match self {
            Bucket::Last => nr as i64,
            Bucket::Hourly => ((y * 100 + m) * 100 + d) * 100 + h,
            Bucket::Daily => (y * 100 + m) * 100 + d,
            Bucket::Weekly => {
                let week = t.date().iso_week_date();
                i64::from(week.year()) * 100 + i64::from(week.week())
            }
            Bucket::Monthly => y * 100 + m,
            Bucket::Yearly => y,
        }
    }

    fn reason(self) -> &'static str {
        match self {
            Bucket::Last => "last snapshot",
            Bucket::Hourly => "hourly snapshot",
            Bucket::Daily => "daily snapshot",
            Bucket::Weekly => "weekly snapshot",
            Bucket::Monthly => "monthly snapshot",
            Bucket::Yearly => "yearly snapshot",
        }
    }
}

/// One counted policy as the snapshots go by: how many more it keeps, and the bucket
/// of the last one it kept.
struct Counter {
    bucket: Bucket,
    remaining: u32,
    last: Option<i64>,
}

impl Counter {
    /// Whether this policy keeps the snapshot (local time `t`, `nr`th newest).
    fn keeps(&mut self, t: DateTime, nr: usize) -> bool {
        let key = self.bucket.key(t, nr);
        if self.remaining == 0 || self.last == Some(key) {
            return false;
        }
        self.last = Some(key);
        self.remaining -= 1;
        true
    }
}

/// For each snapshot of one source (in any order), the reasons it is kept: empty for
/// one the policy removes. Buckets are taken in `tz`. The newest snapshot is always
/// kept, with [`NEWEST_REASON`].
pub fn judge(policy: &KeepPolicy, snapshots: &[SnapshotInfo], tz: &TimeZone) -> Vec<Vec<String>> {
    let mut reasons = vec![Vec::new(); snapshots.len()];
    let order = newest_first(snapshots);
    let Some(&newest) = order.first() else {
        return reasons;
    };
    let mut counters: Vec<Counter> = policy
        .counted()
        .into_iter()
        .filter(|(_, n)| *n > 0)
        .map(|(bucket, remaining)| Counter {
            bucket,
            remaining,
            last: None,
        })
        .collect();
    let cutoff = within_cutoff(policy, snapshots[newest].start_time);
    for (nr, &i) in order.iter().enumerate() {
        let s = &snapshots[i];
        let local = local_time(s.start_time, tz);
        let why = &mut reasons[i];
        why.extend(tag_reasons(policy, s));
        if let Some((cutoff, text)) = &cutoff {
            if s.start_time > *cutoff {
                why.push(text.clone());
            }
        }
        for c in &mut counters {
            if c.keeps(local, nr) {
                why.push(c.bucket.reason().to_owned());
            }
        }
    }
    reasons[newest].push(NEWEST_REASON.to_owned());
    reasons
}

/// Indexes of `snapshots`, newest first (by start time, then id: a stable order for
/// snapshots started in the same second).
fn newest_first(snapshots: &[SnapshotInfo]) -> Vec<usize> {
    let mut order: Vec<usize> = (0..snapshots.len()).collect();
    order.sort_by(|&a, &b| {
        let key = |s: &SnapshotInfo| (s.start_time, s.id.clone());
        key(&snapshots[b]).cmp(&key(&snapshots[a]))
    });
    order
}

/// The time after which `within` keeps snapshots, and its reason.
fn within_cutoff(policy: &KeepPolicy, newest: SystemTime) -> Option<(SystemTime, String)> {
    let within = policy.within.filter(|w| !w.is_zero())?;
    // A duration reaching before the epoch keeps everything.
    let cutoff = newest.checked_sub(within).unwrap_or(SystemTime::UNIX_EPOCH);
    Some((cutoff, format!("within {}", format_within(within))))
}

fn tag_reasons<'a>(
    policy: &'a KeepPolicy,
    s: &'a SnapshotInfo,
) -> impl Iterator<Item = String> + 'a {
    policy
        .tags
        .iter()
        .filter(|want| s.tags.contains(want))
        .map(|t| format!("tag {}={}", t.key, t.value))
}

/// The wall-clock time at `t` in `tz`. A time outside jiff's range (years beyond
/// ±9999, which no store reports) is taken as the nearest it can hold.
fn local_time(t: SystemTime, tz: &TimeZone) -> DateTime {
    let ts = Timestamp::try_from(t).unwrap_or(if t < SystemTime::UNIX_EPOCH {
        Timestamp::MIN
    } else {
        Timestamp::MAX
    });
    tz.to_datetime(ts)
}

/// A duration as `--keep-within` takes it: `30d`, `1d12h`, `90m` for a partial hour.
fn format_within(d: Duration) -> String {
    let secs = d.as_secs();
    let (days, hours) = (secs / 86_400, secs % 86_400 / 3600);
    if !secs.is_multiple_of(3600) {
        return humantime::format_duration(d).to_string();
    }
    match (days, hours) {
        (0, h) => format!("{h}h"),
        (d, 0) => format!("{d}d"),
        (d, h) => format!("{d}d{h}h"),
    }
}

/// Parses restic's `--keep-within` syntax: numbers with units `y` (365 days), `m` (30
/// days), `d` and `h`, in any combination: `1y2m3d4h`, `30d`, `36h`.
pub fn parse_keep_within(text: &str) -> Result<Duration, String> {
    let bad = |why: &str| format!("{text:?} is not a duration like 1y2m3d4h: {why}");
    let mut total: u64 = 0;
    let mut number = String::new();
    for c in text.trim().chars() {
        if c.is_ascii_digit() {
            number.push(c);
            continue;
        }
        let unit: u64 = match c {
            'y' => 365 * 86_400,
            'm' => 30 * 86_400,
            'd' => 86_400,
            'h' => 3600,
            _ => return Err(bad(&format!("unknown unit {c:?} (y, m, d or h)"))),
        };
        let n: u64 = number
            .parse()
            .map_err(|_| bad(&format!("no number before {c:?}")))?;
        number.clear();
        total = n
            .checked_mul(unit)
            .and_then(|s| total.checked_add(s))
            .ok_or_else(|| bad("too long"))?;
    }
    if !number.is_empty() {
        return Err(bad(&format!("{number} has no unit")));
    }
    if total == 0 {
        return Err(bad("it is empty or zero"));
    }
    Ok(Duration::from_secs(total))
}

#[cfg(test)]
#[path = "policy_tests.rs"]
mod tests;
