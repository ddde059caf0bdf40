//! Where a store is, as a command line names it (`--store`, and any second location a
//! command takes): a local directory, Amazon EBS, or an EBS-compatible endpoint.
//!
//! ```
//! use ebsnap::store::StoreLocation;
//!
//! let ebs: StoreLocation = "ebs:eu-west-1".parse().unwrap();
//! assert_eq!(ebs, StoreLocation::Ebs { region: Some("eu-west-1".into()) });
//! let served: StoreLocation = "ebs+http://127.0.0.1:9000".parse().unwrap();
//! assert_eq!(served, StoreLocation::Endpoint { url: "http://127.0.0.1:9000".into() });
//! // Any other string is a directory; `./ebs` is one named `ebs`.
//! let local: StoreLocation = "./ebs".parse().unwrap();
//! assert_eq!(local, StoreLocation::Local("./ebs".into()));
//! ```

use std::ffi::OsStr;
use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

/// A store's location.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StoreLocation {
    /// A local store: its directory.
    Local(PathBuf),
    /// Amazon EBS (`ebs`, `ebs:REGION`), in the region given, else the AWS
    /// configuration's.
    Ebs { region: Option<String> },
    /// Any EBS-compatible endpoint, such as `ebsnap serve` (`ebs+http://HOST:PORT`,
    /// `ebs+https://…`): its URL, without the `ebs+`.
    Endpoint { url: String },
}

/// Why a string names no store.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum LocationError {
    #[error("the store location is empty")]
    Empty,
    #[error("{0:?} is not an AWS region (ebs:REGION, e.g. ebs:us-east-1)")]
    Region(String),
    #[error("{0:?} is not an http:// or https:// URL with a host (ebs+http://HOST:PORT)")]
    Endpoint(String),
    /// `ebs` followed by something unknown: most likely a typo, so no directory is made
    /// of it.
    #[error("{0:?} is none of ebs, ebs:REGION, ebs+http://HOST:PORT, ebs+https://HOST:PORT (for a directory of that name, write ./{0})")]
    Unknown(String),
}

/// The prefixes of the EBS forms; a relative path that starts with one needs `./`.
const EBS: &str = "ebs";
const EBS_REGION: &str = "ebs:";
const EBS_ENDPOINT: &str = "ebs+";

impl FromStr for StoreLocation {
    type Err = LocationError;

    fn from_str(s: &str) -> Result<Self, LocationError> {
        if s.is_empty() {
            Err(LocationError::Empty)
        } else if s == EBS {
            Ok(StoreLocation::Ebs { region: None })
        } else if let Some(region) = s.strip_prefix(EBS_REGION) {
            parse_region(region).map(|region| StoreLocation::Ebs {
                region: Some(region),
            })
        } else if let Some(url) = s.strip_prefix(EBS_ENDPOINT) {
            parse_endpoint(url).map(|url| StoreLocation::Endpoint { url })
        } else {
            Ok(StoreLocation::Local(s.into()))
        }
    }
}

impl StoreLocation {
    /// As [`FromStr`], and a name that is not UTF-8 is a directory.
    pub fn parse_os(s: &OsStr) -> Result<Self, LocationError> {
        match s.to_str() {
            Some(s) => s.parse(),
            None => Ok(StoreLocation::Local(s.into())),
        }
    }
}

/// Loosely checked: lowercase letters, digits and dashes, as every AWS region is named.
fn parse_region(region: &str) -> Result<String, LocationError> {
    let fits = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-';
    if !region.is_empty() && region.chars().all(fits) {
        Ok(region.to_owned())
    } else {
        Err(LocationError::Region(region.to_owned()))
    }
}

fn parse_endpoint(url: &str) -> Result<String, LocationError> {
    let bad = || LocationError::Endpoint(url.to_owned());
    let uri: http::Uri = url.parse().map_err(|_| bad())?;
    let web = matches!(uri.scheme_str(), Some("http" | "https"));
    if web && uri.host().is_some_and(|h| !h.is_empty()) {
        Ok(url.to_owned())
    } else {
        Err(bad())
    }
}

impl fmt::Display for StoreLocation {
    /// The form that parses back into the same location.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoreLocation::Local(path) => {
                let shown = path.display().to_string();
                let misread = !path.is_absolute()
                    && (shown == EBS
                        || shown.starts_with(EBS_REGION)
                        || shown.starts_with(EBS_ENDPOINT));
                if misread {
                    write!(f, "./{shown}")
                } else {
                    f.write_str(&shown)
                }
            }
            StoreLocation::Ebs { region: None } => f.write_str(EBS),
            StoreLocation::Ebs { region: Some(r) } => write!(f, "{EBS_REGION}{r}"),
            StoreLocation::Endpoint { url } => write!(f, "{EBS_ENDPOINT}{url}"),
        }
    }
}

/// The domains of Amazon's own endpoints, in every partition: standard, FIPS,
/// dual-stack and VPC endpoints all end in one of them.
const AMAZON_DOMAINS: [&str; 3] = ["amazonaws.com", "amazonaws.com.cn", "api.aws"];

/// Whether `url` is one of Amazon's own endpoints: its host is `amazonaws.com`,
/// `amazonaws.com.cn` or `api.aws`, or a name under one of them, matched label by label
/// (`amazonaws.com.evil.example` and `notamazonaws.com` are not Amazon's).
pub fn is_amazon_endpoint(url: &str) -> bool {
    let Ok(uri) = url.parse::<http::Uri>() else {
        return false;
    };
    let Some(host) = uri.host() else {
        return false;
    };
    let host = host.trim_end_matches('.').to_ascii_lowercase();
    AMAZON_DOMAINS.iter().any(|domain| {
        host.strip_suffix(domain)
            .is_some_and(|rest| rest.is_empty() || rest.ends_with('.'))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parsed(s: &str) -> StoreLocation {
        s.parse().unwrap_or_else(|e| panic!("{s:?}: {e}"))
    }

    #[test]
    fn the_ebs_forms() {
        assert_eq!(parsed("ebs"), StoreLocation::Ebs { region: None });
        assert_eq!(
            parsed("ebs:us-gov-west-1"),
            StoreLocation::Ebs {
                region: Some("us-gov-west-1".into())
            }
        );
        for url in ["http://127.0.0.1:9000", "https://ebs.example:443/prefix"] {
            assert_eq!(
                parsed(&format!("ebs+{url}")),
                StoreLocation::Endpoint { url: url.into() }
            );
        }
    }

    #[test]
    fn anything_else_is_a_directory() {
        for path in [
            "./ebs",
            "/var/backups/ebs",
            "ebsnap-store",
            "store",
            "./ebs:x",
            "e",
        ] {
            assert_eq!(parsed(path), StoreLocation::Local(path.into()));
        }
    }

    #[test]
    fn malformed_ebs_forms_are_refused_not_taken_for_directories() {
        let refused = |s: &str| s.parse::<StoreLocation>().unwrap_err();
        assert_eq!(refused(""), LocationError::Empty);
        for region in ["", "US-EAST-1", "us east 1", "us_east_1"] {
            let e = refused(&format!("ebs:{region}"));
            assert_eq!(e, LocationError::Region(region.into()));
        }
        for url in ["", "ftp://host", "127.0.0.1:9000", "http://", "not a url"] {
            let e = refused(&format!("ebs+{url}"));
            assert_eq!(e, LocationError::Endpoint(url.into()));
        }
        assert!(refused("ebs+").to_string().contains("ebs+http://HOST:PORT"));
    }

    #[test]
    fn display_parses_back() {
        for s in [
            "ebs",
            "ebs:eu-west-1",
            "ebs+http://[::1]:9000",
            "/srv/ebs",
            "./ebs",
        ] {
            assert_eq!(parsed(s).to_string(), s);
        }
        // A directory that would read as an EBS form is shown with `./`.
        for name in ["ebs", "ebs:x", "ebs+http://h"] {
            let local = StoreLocation::Local(name.into());
            assert_eq!(local.to_string(), format!("./{name}"));
            assert_eq!(
                parsed(&local.to_string()),
                StoreLocation::Local(format!("./{name}").into())
            );
        }
    }

    #[test]
    fn a_name_that_is_not_utf8_is_a_directory() {
        use std::os::unix::ffi::OsStrExt;
        let name = OsStr::from_bytes(b"store-\xff");
        assert_eq!(
            StoreLocation::parse_os(name),
            Ok(StoreLocation::Local(name.into()))
        );
        assert_eq!(
            StoreLocation::parse_os(OsStr::new("ebs")),
            Ok(StoreLocation::Ebs { region: None })
        );
    }

    #[test]
    fn amazon_endpoints_are_recognised_by_their_host() {
        for url in [
            "https://ebs.us-east-1.amazonaws.com",
            "https://ebs-fips.us-east-1.amazonaws.com",
            "https://vpce-0123-abcd.ebs.us-east-1.vpce.amazonaws.com",
            "https://ebs.us-east-1.api.aws",
            "https://ebs.cn-north-1.amazonaws.com.cn",
            "https://EBS.US-EAST-1.AMAZONAWS.COM./",
            "https://amazonaws.com",
            "http://ebs.us-east-1.amazonaws.com:8080/path",
        ] {
            assert!(is_amazon_endpoint(url), "{url}");
        }
    }

    #[test]
    fn other_endpoints_are_not_amazon_whatever_their_names_contain() {
        for url in [
            "http://127.0.0.1:9000",
            "http://[::1]:9000",
            "https://amazonaws.com.evil.example",
            "https://notamazonaws.com",
            "https://ebs.us-east-1.amazonaws.com@evil.example",
            "https://evil.example/ebs.us-east-1.amazonaws.com",
            "https://api.aws.example",
            "https://evilapi.aws",
            "not a url",
            "",
        ] {
            assert!(!is_amazon_endpoint(url), "{url}");
        }
    }
}
