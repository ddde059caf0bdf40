//! The policies over a year of synthetic start times, in a time zone with daylight
//! saving time (given explicitly as a POSIX TZ string: no tz database, no TZ variable).
//! Each bucket policy is checked against a model computed otherwise: by formatting
//! the local time (strftime) instead of computing bucket numbers.

use super::*;
use crate::store::{SnapshotId, SnapshotStatus};
use jiff::civil::date;
use std::collections::BTreeSet;

/// Central European time: CEST from the last Sunday of March (02:00 -> 03:00) to the
/// last Sunday of October (03:00 -> 02:00).
fn cet() -> TimeZone {
    TimeZone::posix("CET-1CEST,M3.5.0,M10.5.0/3").unwrap()
}

fn snapshot(n: usize, start: Timestamp, tags: Vec<Tag>) -> SnapshotInfo {
    SnapshotInfo {
        id: format!("snap-{n:017x}").parse::<SnapshotId>().unwrap(),
        parent: None,
        status: SnapshotStatus::Completed,
        volume_size_gib: 1,
        block_size: 524_288,
        start_time: SystemTime::from(start),
        description: None,
        tags,
        encrypted: false,
        kms_key_arn: None,
        changed_blocks_count: Some(0),
        aggregate: None,
    }
}

/// One snapshot every `step` from `from` (exclusive of `until`).
fn every(step: jiff::SignedDuration, from: Timestamp, until: Timestamp) -> Vec<SnapshotInfo> {
    let mut out = Vec::new();
    let mut t = from;
    while t < until {
        out.push(snapshot(out.len(), t, Vec::new()));
        t = t.checked_add(step).unwrap();
    }
    out
}

fn local(y: i16, m: i8, d: i8, h: i8) -> Timestamp {
    date(y, m, d)
        .at(h, 0, 0, 0)
        .to_zoned(cet())
        .unwrap()
        .timestamp()
}

fn hourly_year() -> Vec<SnapshotInfo> {
    every(
        jiff::SignedDuration::from_hours(1),
        local(2024, 12, 15, 0),
        local(2025, 12, 15, 0),
    )
}

/// The indexes of the snapshots kept.
fn kept(policy: &KeepPolicy, snapshots: &[SnapshotInfo]) -> BTreeSet<usize> {
    judge(policy, snapshots, &cet())
        .iter()
        .enumerate()
        .filter(|(_, r)| !r.is_empty())
        .map(|(i, _)| i)
        .collect()
}

/// The model: the newest snapshot in each of the `n` newest distinct buckets, a
/// bucket being the local time formatted with `format`. Plus the newest snapshot.
fn model(snapshots: &[SnapshotInfo], format: &str, n: usize) -> BTreeSet<usize> {
    let mut order: Vec<usize> = (0..snapshots.len()).collect();
    order.sort_by_key(|&i| std::cmp::Reverse(snapshots[i].start_time));
    let mut seen = Vec::<String>::new();
    let mut out = BTreeSet::from([order[0]]);
    for i in order {
        let t = Timestamp::try_from(snapshots[i].start_time).unwrap();
        let bucket = t.to_zoned(cet()).strftime(format).to_string();
        if !seen.contains(&bucket) && seen.len() < n {
            seen.push(bucket);
            out.insert(i);
        }
    }
    out
}

fn policy(f: impl FnOnce(&mut KeepPolicy)) -> KeepPolicy {
    let mut p = KeepPolicy::default();
    f(&mut p);
    p
}

#[test]
fn each_bucket_policy_over_a_year_of_hourly_backups_matches_the_model() {
    let year = hourly_year();
    assert_eq!(year.len(), 365 * 24);
    let cases: [(KeepPolicy, &str, usize); 6] = [
        (policy(|p| p.last = Some(5)), "%Y-%m-%d %H:%M:%S %z", 5),
        (policy(|p| p.hourly = Some(48)), "%Y-%m-%d %H", 48),
        (policy(|p| p.daily = Some(7)), "%Y-%m-%d", 7),
        (policy(|p| p.weekly = Some(4)), "%G-%V", 4),
        (policy(|p| p.monthly = Some(12)), "%Y-%m", 12),
        (policy(|p| p.yearly = Some(3)), "%Y", 3),
    ];
    for (p, format, n) in cases {
        let got = kept(&p, &year);
        assert_eq!(got, model(&year, format, n), "{p:?}");
    }
}

#[test]
fn buckets_keep_the_newest_of_each_in_local_time() {
    let year = hourly_year();
    let at = |i: usize| {
        Timestamp::try_from(year[i].start_time)
            .unwrap()
            .to_zoned(cet())
    };
    // Each month's newest is its last day at 23:00 local, in winter and in summer.
    let monthly = kept(&policy(|p| p.monthly = Some(12)), &year);
    let hours: BTreeSet<i8> = monthly.iter().map(|&i| at(i).hour()).collect();
    assert_eq!(hours, BTreeSet::from([23]), "{monthly:?}");
    let july = monthly.iter().map(|&i| at(i)).find(|t| t.month() == 7);
    assert_eq!(july.unwrap().day(), 31);
    // The yearly policy keeps the newest of 2025 and the last of 2024: two buckets.
    let yearly: Vec<_> = kept(&policy(|p| p.yearly = Some(3)), &year)
        .into_iter()
        .map(at)
        .collect();
    assert_eq!(yearly.len(), 2);
    assert_eq!(yearly[0].date(), date(2024, 12, 31));
    // Weeks are ISO weeks (Monday to Sunday): each one's newest is a Sunday at 23:00
    // (the year ends on Sunday 2025-12-14 at 23:00).
    let weekly = kept(&policy(|p| p.weekly = Some(10)), &year);
    assert_eq!(weekly.len(), 10);
    for t in weekly.into_iter().map(at) {
        assert_eq!(
            (t.weekday(), t.hour()),
            (jiff::civil::Weekday::Sunday, 23),
            "{t}"
        );
    }
}

#[test]
fn within_keeps_what_started_within_the_duration_of_the_newest() {
    let year = hourly_year();
    let p = policy(|p| p.within = Some(Duration::from_secs(30 * 86_400)));
    let got = kept(&p, &year);
    // Strictly after the cutoff: the snapshot exactly 30 days older goes.
    assert_eq!(got.len(), 30 * 24);
    assert_eq!(*got.first().unwrap(), year.len() - 30 * 24);
    let reasons = judge(&p, &year, &cet());
    assert_eq!(reasons[year.len() - 2], vec!["within 30d"]);
}

#[test]
fn what_any_policy_keeps_is_kept_with_all_its_reasons() {
    let year = hourly_year();
    let parts = [
        policy(|p| p.last = Some(3)),
        policy(|p| p.daily = Some(7)),
        policy(|p| p.weekly = Some(4)),
        policy(|p| p.monthly = Some(12)),
    ];
    let union: BTreeSet<usize> = parts.iter().flat_map(|p| kept(p, &year)).collect();
    let all = policy(|p| {
        (p.last, p.daily, p.weekly, p.monthly) = (Some(3), Some(7), Some(4), Some(12));
    });
    assert_eq!(kept(&all, &year), union);
    let reasons = judge(&all, &year, &cet());
    let newest = year.len() - 1;
    assert_eq!(
        reasons[newest],
        [
            "last snapshot",
            "daily snapshot",
            "weekly snapshot",
            "monthly snapshot",
            NEWEST_REASON
        ]
    );
    // The end of November: kept as the monthly snapshot only.
    let november = year
        .iter()
        .position(|s| s.start_time == SystemTime::from(local(2025, 11, 30, 23)))
        .unwrap();
    assert_eq!(reasons[november], ["weekly snapshot", "monthly snapshot"]);
}

#[test]
fn irregular_backups_fill_the_last_n_buckets_that_have_snapshots() {
    // Gaps of 1 to 97 hours, from a fixed pseudo-random sequence: days without a
    // backup do not count towards --keep-daily.
    let mut t = local(2025, 1, 1, 0);
    let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut irregular = Vec::new();
    while t < local(2026, 1, 1, 0) {
        irregular.push(snapshot(irregular.len(), t, Vec::new()));
        seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
        let gap_minutes = 60 + (seed >> 33) % (96 * 60);
        t = t
            .checked_add(jiff::SignedDuration::from_mins(gap_minutes as i64))
            .unwrap();
    }
    for (p, format, n) in [
        (policy(|p| p.hourly = Some(30)), "%Y-%m-%d %H", 30),
        (policy(|p| p.daily = Some(40)), "%Y-%m-%d", 40),
        (policy(|p| p.weekly = Some(20)), "%G-%V", 20),
        (policy(|p| p.monthly = Some(6)), "%Y-%m", 6),
    ] {
        assert_eq!(kept(&p, &irregular), model(&irregular, format, n), "{p:?}");
    }
    // The input's order does not matter.
    let mut shuffled = irregular.clone();
    shuffled.reverse();
    shuffled.swap(3, 40);
    let p = policy(|p| p.daily = Some(40));
    let ids = |s: &[SnapshotInfo], k: BTreeSet<usize>| -> BTreeSet<SnapshotId> {
        k.into_iter().map(|i| s[i].id.clone()).collect()
    };
    assert_eq!(
        ids(&shuffled, kept(&p, &shuffled)),
        ids(&irregular, kept(&p, &irregular))
    );
}

#[test]
fn hourly_buckets_follow_the_wall_clock_across_daylight_saving_changes() {
    let hour = jiff::SignedDuration::from_hours(1);
    // Autumn: 2025-10-26 has 25 hours; 02:00-02:59 comes twice and is one bucket.
    let autumn = every(hour, local(2025, 10, 26, 0), local(2025, 10, 27, 0));
    assert_eq!(autumn.len(), 25);
    let got = kept(&policy(|p| p.hourly = Some(100)), &autumn);
    assert_eq!(got.len(), 24);
    // The first 02:00 (CEST) is the one removed: the second (CET) is newer.
    assert!(!got.contains(&2) && got.contains(&3), "{got:?}");
    // Spring: 2025-03-30 has 23 hours, each its own bucket, and the day is one.
    let spring = every(hour, local(2025, 3, 30, 0), local(2025, 3, 31, 0));
    assert_eq!(spring.len(), 23);
    assert_eq!(kept(&policy(|p| p.hourly = Some(100)), &spring).len(), 23);
    assert_eq!(kept(&policy(|p| p.daily = Some(100)), &spring).len(), 1);
    // Days around both changes: one bucket each, whatever their length.
    let around = every(
        jiff::SignedDuration::from_mins(30),
        local(2025, 3, 28, 0),
        local(2025, 11, 2, 0),
    );
    let days = kept(&policy(|p| p.daily = Some(1000)), &around);
    assert_eq!(days.len(), 4 + 214 + 1, "March 28 to November 1");
    assert_eq!(days, model(&around, "%Y-%m-%d", 1000));
}

#[test]
fn the_newest_is_kept_whatever_the_policy() {
    let tagged = vec![Tag::new("host", "db1")];
    let snapshots = vec![
        snapshot(0, local(2025, 1, 1, 0), tagged.clone()),
        snapshot(1, local(2025, 1, 2, 0), Vec::new()),
        snapshot(2, local(2025, 1, 3, 0), Vec::new()),
    ];
    let p = policy(|p| p.tags = vec![Tag::new("host", "db1"), Tag::new("tier", "gold")]);
    let reasons = judge(&p, &snapshots, &cet());
    assert_eq!(reasons[0], ["tag host=db1"]);
    assert!(reasons[1].is_empty());
    assert_eq!(reasons[2], [NEWEST_REASON]);
    // A tag matches on key and value both.
    let other = policy(|p| p.tags = vec![Tag::new("host", "db2")]);
    assert_eq!(kept(&other, &snapshots), BTreeSet::from([2]));
    assert!(judge(&p, &[], &cet()).is_empty());
}

#[test]
fn a_policy_of_zeros_is_empty() {
    assert!(KeepPolicy::default().is_empty());
    assert!(policy(|p| (p.last, p.daily) = (Some(0), Some(0))).is_empty());
    assert!(policy(|p| p.within = Some(Duration::ZERO)).is_empty());
    assert!(!policy(|p| p.yearly = Some(1)).is_empty());
    assert!(!policy(|p| p.tags = vec![Tag::new("a", "b")]).is_empty());
    assert!(!policy(|p| p.within = Some(Duration::from_secs(3600))).is_empty());
}

#[test]
fn keep_within_durations_parse_as_restic_writes_them() {
    let d = |days: u64, hours: u64| Ok(Duration::from_secs(days * 86_400 + hours * 3600));
    assert_eq!(parse_keep_within("1y2m3d4h"), d(365 + 60 + 3, 4));
    assert_eq!(parse_keep_within("30d"), d(30, 0));
    assert_eq!(parse_keep_within("36h"), d(1, 12));
    assert_eq!(parse_keep_within("2d2d"), d(4, 0));
    for bad in [
        "",
        "0d",
        "5",
        "d",
        "3w",
        "1.5d",
        "-1d",
        "99999999999999999999y",
    ] {
        assert!(parse_keep_within(bad).is_err(), "{bad:?}");
    }
    assert_eq!(format_within(Duration::from_secs(36 * 3600)), "1d12h");
    assert_eq!(format_within(Duration::from_secs(5 * 3600)), "5h");
}
