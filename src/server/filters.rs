//! DescribeSnapshots' `Filter.N`: parsing them within EC2's limits, and matching their
//! `*`/`?` patterns within a budget of work.
//!
//! Thousands of long patterns cost about 47 ms of CPU per snapshot, on the async
//! threads. So, as EC2 does, a request has at most [`MAX_FILTERS`] filters and
//! [`MAX_FILTER_VALUES`] values in all, each at most [`MAX_FILTER_VALUE`] characters;
//! and the matching of one request may take at most [`GLOB_BUDGET`] steps (the caller
//! runs it off the async threads).

use super::ec2::Params;
use super::error::Ec2Error;
use super::owners;
use crate::store::SnapshotInfo;
use std::cell::Cell;

/// Filters one request may carry (EC2's limit).
pub const MAX_FILTERS: usize = 50;
/// Filter values one request may carry, over all its filters (EC2's limit).
pub const MAX_FILTER_VALUES: usize = 200;
/// Longest filter value accepted (tag values are at most 255 characters).
const MAX_FILTER_VALUE: usize = 1024;
/// Steps of glob matching one DescribeSnapshots may take: some tens of milliseconds of
/// CPU, far more than any listing of thousands of snapshots with ordinary filters needs.
const GLOB_BUDGET: u64 = 20_000_000;

type Result<T> = std::result::Result<T, Ec2Error>;

/// One `Filter.N`: a name and the patterns any of which may match.
pub(super) struct Filter {
    name: String,
    values: Vec<Vec<char>>,
}

fn too_many(what: &str, limit: usize) -> Ec2Error {
    Ec2Error::new(
        "FilterLimitExceeded",
        format!("The request uses too many {what} (at most {limit})"),
    )
}

pub(super) fn filters(params: &Params) -> Result<Vec<Filter>> {
    let mut out = Vec::new();
    let mut values_seen = 0;
    for n in 1.. {
        let Some(name) = params.get(&format!("Filter.{n}.Name")) else {
            break;
        };
        if n > MAX_FILTERS {
            return Err(too_many("filters", MAX_FILTERS));
        }
        let values = params.list(&format!("Filter.{n}.Value"));
        values_seen += values.len();
        if values_seen > MAX_FILTER_VALUES {
            return Err(too_many("filter values", MAX_FILTER_VALUES));
        }
        check_filter(name, &values)?;
        out.push(Filter {
            name: name.to_owned(),
            values: values.iter().map(|v| v.chars().collect()).collect(),
        });
    }
    Ok(out)
}

fn check_filter(name: &str, values: &[&str]) -> Result<()> {
    if values.iter().any(|v| v.chars().count() > MAX_FILTER_VALUE) {
        return Err(Ec2Error::new(
            "InvalidParameterValue",
            format!("filter values are at most {MAX_FILTER_VALUE} characters"),
        ));
    }
    let known = matches!(
        name,
        "snapshot-id"
            | "status"
            | "tag-key"
            | "owner-id"
            | "description"
            | "volume-size"
            | "encrypted"
    ) || name.starts_with("tag:");
    if !known {
        return Err(Ec2Error::new(
            "InvalidParameterValue",
            format!("The filter '{name}' is invalid"),
        ));
    }
    Ok(())
}

/// Glob steps left to a request.
pub(super) struct Budget(Cell<u64>);

impl Budget {
    pub(super) fn new(steps: u64) -> Budget {
        Budget(Cell::new(steps))
    }

    fn spend(&self, steps: u64) -> Result<()> {
        let left = self.0.get().checked_sub(steps).ok_or_else(|| {
            Ec2Error::new(
                "FilterLimitExceeded",
                "The filters take too much work to evaluate: use fewer or simpler patterns",
            )
        })?;
        self.0.set(left);
        Ok(())
    }
}

/// The snapshots every filter matches.
pub(super) fn select(
    snapshots: Vec<SnapshotInfo>,
    filters: &[Filter],
) -> Result<Vec<SnapshotInfo>> {
    let budget = Budget::new(GLOB_BUDGET);
    let mut out = Vec::new();
    for s in snapshots {
        if all_match(filters, &s, &budget)? {
            out.push(s);
        }
    }
    Ok(out)
}

fn all_match(filters: &[Filter], s: &SnapshotInfo, budget: &Budget) -> Result<bool> {
    for filter in filters {
        if !matches(filter, s, budget)? {
            return Ok(false);
        }
    }
    Ok(true)
}

pub(super) fn matches(filter: &Filter, s: &SnapshotInfo, budget: &Budget) -> Result<bool> {
    let any = |field: &str| -> Result<bool> {
        let text: Vec<char> = field.chars().collect();
        for pattern in &filter.values {
            let (hit, steps) = glob_steps(pattern, &text);
            budget.spend(steps)?;
            if hit {
                return Ok(true);
            }
        }
        Ok(false)
    };
    let any_tag = |pick: &dyn Fn(&crate::store::Tag) -> Option<&str>| -> Result<bool> {
        // The server's own tags are hidden: no filter finds them.
        for field in owners::shown(&s.tags).filter_map(pick) {
            if any(field)? {
                return Ok(true);
            }
        }
        Ok(false)
    };
    match filter.name.as_str() {
        "snapshot-id" => any(s.id.as_str()),
        "status" => any(s.status.as_str()),
        "owner-id" => any(owners::owner_of(s)),
        "description" => any(s.description.as_deref().unwrap_or("")),
        "volume-size" => any(&s.volume_size_gib.to_string()),
        "encrypted" => any(if s.encrypted { "true" } else { "false" }),
        "tag-key" => any_tag(&|t| Some(t.key.as_str())),
        name => {
            let key = name.strip_prefix("tag:").unwrap_or_default();
            any_tag(&|t| (t.key == key).then_some(t.value.as_str()))
        }
    }
}

/// EC2 filter values may use `*` (any run) and `?` (one character).
pub(super) fn glob(pattern: &str, text: &str) -> bool {
    let (p, t): (Vec<char>, Vec<char>) = (pattern.chars().collect(), text.chars().collect());
    glob_steps(&p, &t).0
}

/// Whether `p` matches `t`, and the steps that took. Iterative, with backtracking only
/// to the last `*`: at most about `p.len() * t.len()` steps, and no recursion for a
/// hostile pattern to overflow.
fn glob_steps(p: &[char], t: &[char]) -> (bool, u64) {
    let (mut pi, mut ti, mut steps) = (0, 0, 0u64);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        steps += 1;
        // A `*` is a wildcard first, whatever the text holds: taken as a literal, it
        // would match only a `*` in the text, and `*` would not match `a*b`.
        if pi < p.len() && p[pi] == '*' {
            star = Some((pi, ti));
            pi += 1;
        } else if pi < p.len() && (p[pi] == '?' || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
        } else if let Some((sp, st)) = star {
            pi = sp + 1;
            ti = st + 1;
            star = Some((sp, st + 1));
        } else {
            return (false, steps);
        }
    }
    let rest = p.len() - pi;
    (p[pi..].iter().all(|&c| c == '*'), steps + rest as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filter_globs() {
        assert!(glob("snap-*", "snap-0123"));
        assert!(glob("a?c", "abc"));
        assert!(!glob("a?c", "ac"));
        assert!(glob("*", ""));
        assert!(!glob("ebsnap", "ebsnap:x"));
        assert!(glob("*a*b", "xxaxxb"));
        assert!(!glob("*a*b", "xxaxxc"));
        assert!(glob("a*", "a"));
        // Found by the ec2_form fuzz target: a `*` in the text, under a `*`.
        assert!(glob("*", "*a*b"));
        assert!(glob("a*", "a*"));
        assert!(glob("*b", "*b"));
        assert!(glob("?*", "**"));
        let hostile = "*a".repeat(2000) + "b";
        assert!(
            !glob(&hostile, &"a".repeat(255)),
            "no stack overflow, no blow-up"
        );
    }

    #[test]
    fn the_work_of_matching_is_bounded() {
        let p: Vec<char> = ("*a".repeat(500) + "b").chars().collect();
        let t: Vec<char> = "a".repeat(255).chars().collect();
        let (hit, steps) = glob_steps(&p, &t);
        assert!(!hit);
        let budget = Budget::new(steps * 3);
        for _ in 0..3 {
            budget.spend(steps).unwrap();
        }
        assert!(budget.spend(1).is_err(), "the budget runs out");
    }
}
