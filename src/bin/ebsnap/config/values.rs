//! Values the config file checks as it reads them, so that a bad one is an error at
//! its own line, as a bad flag is a usage error.

use crate::args::ByteSize;
use ebsnap::store::StoreLocation;
use serde::de::{self, Deserializer, Error as _, Unexpected, Visitor};
use serde::Deserialize;
use std::fmt;
use std::time::Duration;

/// `store = "LOCATION"`: the syntax of `--store`.
pub fn store<'de, D: Deserializer<'de>>(d: D) -> Result<Option<StoreLocation>, D::Error> {
    let text = String::deserialize(d)?;
    text.parse().map(Some).map_err(D::Error::custom)
}

/// `workers = N`, as `--workers` takes it: 1 to 1024.
pub fn workers<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u16>, D::Error> {
    let n = i64::deserialize(d)?;
    match u16::try_from(n) {
        Ok(n @ 1..=1024) => Ok(Some(n)),
        _ => Err(D::Error::invalid_value(
            Unexpected::Signed(n),
            &"a number of workers from 1 to 1024",
        )),
    }
}

/// `max_rate = N`: block requests per second, at least 1.
pub fn max_rate<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u32>, D::Error> {
    let n = i64::deserialize(d)?;
    match u32::try_from(n) {
        Ok(n @ 1..) => Ok(Some(n)),
        _ => Err(D::Error::invalid_value(
            Unexpected::Signed(n),
            &"requests per second, at least 1",
        )),
    }
}

/// `limit_upload = "50MiB"` (or a plain number of bytes): bytes per second.
pub fn byte_rate<'de, D: Deserializer<'de>>(d: D) -> Result<Option<ByteSize>, D::Error> {
    d.deserialize_any(ByteRate).map(Some)
}

struct ByteRate;

impl Visitor<'_> for ByteRate {
    type Value = ByteSize;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("bytes per second: a number, or a string such as \"50MiB\"")
    }

    fn visit_i64<E: de::Error>(self, n: i64) -> Result<ByteSize, E> {
        match u64::try_from(n) {
            Ok(n) if n > 0 => Ok(ByteSize(n)),
            _ => Err(E::invalid_value(Unexpected::Signed(n), &self)),
        }
    }

    // As the flag reads it: `50MiB`, `1.5M/s`; 0 refused.
    fn visit_str<E: de::Error>(self, s: &str) -> Result<ByteSize, E> {
        ByteSize::parse_rate(s).map_err(E::custom)
    }
}

/// `description = "..."`: what EBS allows, at most 255 characters.
pub fn description<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    let text = String::deserialize(d)?;
    if text.chars().count() > 255 {
        return Err(D::Error::custom("a description is at most 255 characters"));
    }
    Ok(Some(text))
}

/// `within = "30d"`: a duration as `forget --keep-within` reads it (restic's
/// `1y2m3d4h`: `m` is a month there), so the file and the flag agree.
pub fn duration<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    let text = String::deserialize(d)?;
    ebsnap::engine::parse_keep_within(&text)
        .map_err(|e| D::Error::custom(format!("{text:?} is not a duration (such as 30d): {e}")))?;
    Ok(Some(text))
}

/// `tags = ["KEY=VALUE", ...]`.
pub fn tags<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    let tags = Vec::<String>::deserialize(d)?;
    match tags
        .iter()
        .find(|t| !matches!(t.split_once('='), Some((k, _)) if !k.is_empty()))
    {
        Some(bad) => Err(D::Error::custom(format!("{bad:?} is not KEY=VALUE"))),
        None => Ok(tags),
    }
}

/// `hook_timeout = 300` or `"5m"`: seconds, or a duration as the flag takes it.
pub fn seconds<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Given {
        Seconds(u64),
        Text(String),
    }
    match Given::deserialize(d)? {
        Given::Seconds(secs) => Ok(Some(Duration::from_secs(secs))),
        Given::Text(text) => crate::consistency::parse_duration(&text)
            .map(Some)
            .map_err(|e| D::Error::custom(format!("not a duration (such as 300 or 5m): {e}"))),
    }
}

/// `spool_max = "8G"` (or a plain number of bytes): a size, as `--spool-max` reads it.
pub fn byte_size<'de, D: Deserializer<'de>>(d: D) -> Result<Option<ByteSize>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Given {
        Bytes(u64),
        Text(String),
    }
    match Given::deserialize(d)? {
        Given::Bytes(n) => Ok(Some(ByteSize(n))),
        Given::Text(text) => text.parse().map(Some).map_err(D::Error::custom),
    }
}
