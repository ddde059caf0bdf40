//! The config file's schema, all of it (documented in docs/config.md). Every table
//! refuses keys it does not know, so a typo is an error, not a setting ignored.
//!
//! A global setting is one line in the `settings` list of `schema!` below (and its
//! flag in `args::Global`, of the same name and type): it is then valid in
//! `[defaults]` and in every job.
//! A job's own key is one line in the `job` list of `schema!`; the job then has it as
//! `job.keys.NAME` (an `Option`: absent keys are `None`).

use super::values;
use crate::args::{ByteSize, Global};
use ebsnap::store::StoreLocation;
use indexmap::IndexMap;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

/// The whole file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct File {
    #[serde(default)]
    pub defaults: Settings,
    /// In the file's order: `ebsnap run` runs them so.
    #[serde(default)]
    pub jobs: IndexMap<String, toml::Spanned<JobTable>>,
}

/// Declares the schema from two lists: the global settings (valid in `[defaults]` and
/// in a job) and a job's own keys. It makes [`Settings`], [`JobKeys`] and [`JobTable`].
/// (serde's `flatten` would lose the line numbers and the unknown-key check, so the
/// macro writes the settings into the job's table itself.)
macro_rules! schema {
    (
        settings { $($(#[$sattr:meta])* $setting:ident: $sty:ty,)* }
        job { $($(#[$jattr:meta])* $key:ident: $jty:ty,)* }
    ) => {
        /// Global settings, as `[defaults]` or a job gives them; what is not given is
        /// `None`.
        #[derive(Clone, Debug, Default, Deserialize)]
        #[serde(deny_unknown_fields)]
        pub struct Settings {
            $($(#[$sattr])* #[serde(default)] pub $setting: Option<$sty>,)*
        }

        impl Settings {
            /// Fills in what `global` leaves unset (a flag not given) from `self`.
            pub fn fill(&self, global: &mut Global) {
                $(if global.$setting.is_none() {
                    global.$setting = self.$setting.clone();
                })*
            }
        }

        /// What a job says of itself, besides settings.
        #[derive(Clone, Debug, Default)]
        pub struct JobKeys {
            $(pub $key: Option<$jty>,)*
        }

        /// A `[jobs.NAME]` table as written.
        #[derive(Debug, Deserialize)]
        #[serde(deny_unknown_fields)]
        pub struct JobTable {
            $($(#[$jattr])* #[serde(default)] $key: Option<$jty>,)*
            $($(#[$sattr])* #[serde(default)] $setting: Option<$sty>,)*
        }

        impl JobTable {
            /// The job's own keys, and its settings.
            pub fn split(self) -> (JobKeys, Settings) {
                let keys = JobKeys { $($key: self.$key,)* };
                let settings = Settings { $($setting: self.$setting,)* };
                (keys, settings)
            }
        }
    };
}

schema! {
    settings {
        #[serde(deserialize_with = "values::store")]
        store: StoreLocation,
        endpoint_url: String,
        region: String,
        profile: String,
        #[serde(deserialize_with = "values::workers")]
        workers: u16,
        #[serde(deserialize_with = "values::max_rate")]
        max_rate: u32,
        #[serde(deserialize_with = "values::byte_rate")]
        limit_upload: ByteSize,
        #[serde(deserialize_with = "values::byte_rate")]
        limit_download: ByteSize,
        lock_wait: u64,
        metrics_file: PathBuf,
        key_file: PathBuf,
    }
    job {
        source: PathBuf,
        #[serde(deserialize_with = "values::description")]
        description: String,
        tags: BTreeMap<String, String>,
        keep: Keep,
        // Issue 13's consistency keys: the `backup` flags of the same names.
        pre: String,
        post: String,
        #[serde(deserialize_with = "values::seconds")]
        hook_timeout: Duration,
        read_from: PathBuf,
        freeze: Vec<PathBuf>,
        #[serde(deserialize_with = "values::seconds")]
        freeze_timeout: Duration,
        spool: PathBuf,
        #[serde(deserialize_with = "values::byte_size")]
        spool_max: ByteSize,
    }
}

/// A job's retention policy: restic's `--keep-*` options (`ebsnap forget`).
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Keep {
    pub last: Option<u32>,
    pub hourly: Option<u32>,
    pub daily: Option<u32>,
    pub weekly: Option<u32>,
    pub monthly: Option<u32>,
    pub yearly: Option<u32>,
    /// A duration such as `30d` or `1y6m` (checked when the file is read).
    #[serde(default, deserialize_with = "values::duration")]
    pub within: Option<String>,
    /// `KEY=VALUE`: snapshots with this tag are kept.
    #[serde(default, deserialize_with = "values::tags")]
    pub tags: Vec<String>,
}

impl Keep {
    /// Whether the policy keeps nothing by itself (which `forget` refuses).
    pub fn is_empty(&self) -> bool {
        *self == Keep::default()
    }

    /// The policy `forget` applies (the file's values were checked when it was read).
    pub fn policy(&self) -> ebsnap::engine::KeepPolicy {
        ebsnap::engine::KeepPolicy {
            last: self.last,
            hourly: self.hourly,
            daily: self.daily,
            weekly: self.weekly,
            monthly: self.monthly,
            yearly: self.yearly,
            within: self
                .within
                .as_deref()
                .and_then(|w| ebsnap::engine::parse_keep_within(w).ok()),
            tags: self
                .tags
                .iter()
                .filter_map(|t| t.split_once('='))
                .map(|(k, v)| ebsnap::store::Tag::new(k, v))
                .collect(),
        }
    }
}
