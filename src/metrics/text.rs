//! The text exposition format, as far as ebsnap's own file needs it: gauge families
//! with HELP and TYPE lines, samples with quoted, escaped label values.

use super::FAMILIES;
use std::fmt::Write as _;

/// One sample: its labels (sorted by name) and its value.
#[derive(Clone, Debug, PartialEq)]
pub struct Sample {
    pub labels: Vec<(String, String)>,
    pub value: f64,
}

impl Sample {
    pub fn new(mut labels: Vec<(String, String)>, value: f64) -> Sample {
        labels.sort();
        Sample { labels, value }
    }
}

/// The samples of ebsnap's families, each family's in the order they were added.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Textfile {
    families: Vec<(&'static str, Vec<Sample>)>,
}

impl Textfile {
    /// The samples of ebsnap's families in `text`. Lines of other families, and lines
    /// that are not samples, are dropped: the file is ebsnap's alone (node_exporter
    /// reads every `*.prom` file of its directory, so other tools write their own).
    pub fn parse(text: &str) -> Textfile {
        let mut file = Textfile::default();
        for line in text.lines().map(str::trim) {
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            match parse_sample(line) {
                Some((name, sample)) => match FAMILIES.iter().find(|f| f.name == name) {
                    Some(family) => file.push(family.name, sample),
                    None => tracing::warn!("metrics file: dropping a line of {name}"),
                },
                None => tracing::warn!("metrics file: dropping {line:?}: not a sample"),
            }
        }
        file
    }

    pub fn push(&mut self, family: &'static str, sample: Sample) {
        match self.families.iter_mut().find(|(name, _)| *name == family) {
            Some((_, samples)) => samples.push(sample),
            None => self.families.push((family, vec![sample])),
        }
    }

    /// The value of `family` of the first sample whose labels are `ours`.
    pub fn value(&self, family: &str, ours: impl Fn(&[(String, String)]) -> bool) -> Option<f64> {
        self.samples(family)
            .iter()
            .find(|s| ours(&s.labels))
            .map(|s| s.value)
    }

    pub fn samples(&self, family: &str) -> &[Sample] {
        self.families
            .iter()
            .find(|(name, _)| *name == family)
            .map_or(&[], |(_, samples)| samples)
    }

    /// Sets `family` to `value` for every label set of the file's that `matches` (the
    /// label sets of any family), adding the sample where a label set lacks it.
    pub fn set_where(
        &mut self,
        family: &'static str,
        value: f64,
        matches: impl Fn(&[(String, String)]) -> bool,
    ) {
        let mut sets: Vec<Vec<(String, String)>> = Vec::new();
        for (_, samples) in &self.families {
            for s in samples.iter().filter(|s| matches(&s.labels)) {
                if !sets.contains(&s.labels) {
                    sets.push(s.labels.clone());
                }
            }
        }
        for labels in sets {
            self.remove_exact(family, &labels);
            self.push(family, Sample::new(labels, value));
        }
    }

    fn remove_exact(&mut self, family: &str, labels: &[(String, String)]) {
        if let Some((_, samples)) = self.families.iter_mut().find(|(name, _)| *name == family) {
            samples.retain(|s| s.labels != labels);
        }
    }

    /// Drops every sample whose labels are `ours`.
    pub fn remove(&mut self, ours: impl Fn(&[(String, String)]) -> bool) {
        for (_, samples) in &mut self.families {
            samples.retain(|s| !ours(&s.labels));
        }
    }

    /// The file's text: each family that has samples, with its HELP and TYPE lines.
    pub fn render(&self) -> String {
        let mut out = String::new();
        for family in &FAMILIES {
            let samples = self.samples(family.name);
            if samples.is_empty() {
                continue;
            }
            let _ = writeln!(out, "# HELP {} {}", family.name, family.help);
            let _ = writeln!(out, "# TYPE {} gauge", family.name);
            for sample in samples {
                let _ = writeln!(
                    out,
                    "{}{} {}",
                    family.name,
                    render_labels(sample),
                    sample.value
                );
            }
        }
        out
    }
}

fn render_labels(sample: &Sample) -> String {
    if sample.labels.is_empty() {
        return String::new();
    }
    let pairs: Vec<String> = sample
        .labels
        .iter()
        .map(|(k, v)| format!("{k}=\"{}\"", escape_label_value(v)))
        .collect();
    format!("{{{}}}", pairs.join(","))
}

/// A label value as the text format quotes it: backslash, double quote and line feed
/// escaped.
pub fn escape_label_value(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

/// `name{labels} value [timestamp]`; `None` if the line is not one.
fn parse_sample(line: &str) -> Option<(&str, Sample)> {
    let name_end = line.find(|c: char| c == '{' || c.is_whitespace())?;
    let (name, mut rest) = line.split_at(name_end);
    let mut labels = Vec::new();
    if let Some(inner) = rest.strip_prefix('{') {
        let (parsed, after) = parse_labels(inner)?;
        labels = parsed;
        rest = after;
    }
    let value = rest.split_whitespace().next()?.parse().ok()?;
    Some((name, Sample::new(labels, value)))
}

/// The labels after a `{`, through its `}`, and what follows.
fn parse_labels(mut s: &str) -> Option<(Vec<(String, String)>, &str)> {
    let mut labels = Vec::new();
    loop {
        s = s.trim_start().trim_start_matches(',').trim_start();
        if let Some(after) = s.strip_prefix('}') {
            return Some((labels, after));
        }
        let (name, after) = s.split_once('=')?;
        let (value, after) = parse_quoted(after.trim_start().strip_prefix('"')?)?;
        labels.push((name.trim().to_owned(), value));
        s = after;
    }
}

/// A label value after its opening quote, unescaped, and what follows its closing one.
fn parse_quoted(s: &str) -> Option<(String, &str)> {
    let mut value = String::new();
    let mut chars = s.char_indices();
    while let Some((i, c)) = chars.next() {
        match c {
            '"' => return Some((value, &s[i + 1..])),
            '\\' => match chars.next()?.1 {
                'n' => value.push('\n'),
                other => value.push(other),
            },
            c => value.push(c),
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(job: &str) -> Vec<(String, String)> {
        vec![
            ("job".into(), job.into()),
            ("source".into(), "/dev/sdb".into()),
            ("store".into(), "/srv/ebsnap".into()),
        ]
    }

    #[test]
    fn what_is_rendered_parses_back_with_escapes() {
        let mut file = Textfile::default();
        let odd = "a \"quoted\" \\ back\nslash";
        file.push(
            super::super::LAST_RUN,
            Sample::new(labels(odd), 1764590000.0),
        );
        file.push(super::super::DURATION, Sample::new(labels("b"), 1.25));
        let text = file.render();
        assert!(
            text.contains(r#"job="a \"quoted\" \\ back\nslash""#),
            "{text}"
        );
        assert_eq!(Textfile::parse(&text), file);
    }

    #[test]
    fn a_count_is_set_for_every_job_of_the_source() {
        let mut file = Textfile::default();
        let other = vec![
            ("job".into(), "x".into()),
            ("source".into(), "/dev/other".into()),
        ];
        file.push(super::super::LAST_RUN, Sample::new(labels("a"), 1.0));
        file.push(super::super::SNAPSHOTS, Sample::new(labels("b"), 9.0));
        file.push(super::super::SNAPSHOTS, Sample::new(other.clone(), 9.0));
        file.set_where(super::super::SNAPSHOTS, 3.0, |l| {
            l.contains(&("source".into(), "/dev/sdb".into()))
        });
        assert_eq!(
            file.value(super::super::SNAPSHOTS, |l| l == labels("a")),
            Some(3.0)
        );
        assert_eq!(
            file.value(super::super::SNAPSHOTS, |l| l == labels("b")),
            Some(3.0)
        );
        assert_eq!(
            file.value(super::super::SNAPSHOTS, |l| l == other),
            Some(9.0)
        );
        assert_eq!(file.samples(super::super::SNAPSHOTS).len(), 3);
    }

    #[test]
    fn foreign_and_broken_lines_are_dropped() {
        let text = "node_load1 3\nebsnap_snapshots{job=\"x\" 3\nebsnap_snapshots{job=\"y\"} 4 1700000000000\n";
        let file = Textfile::parse(text);
        let only = [("job".to_owned(), "y".to_owned())];
        assert_eq!(
            file.value(super::super::SNAPSHOTS, |l| l == only),
            Some(4.0)
        );
        assert_eq!(file.samples(super::super::SNAPSHOTS).len(), 1);
    }
}
