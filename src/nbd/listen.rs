//! Where the server listens: `HOST:PORT` or `unix:PATH`, and whether that reaches
//! beyond this machine (which needs `--allow-remote`). Parsing only.

use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::path::PathBuf;

/// The default: loopback, NBD's registered port.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:10809";

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ListenAddr {
    Tcp(SocketAddr),
    Unix(PathBuf),
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ListenError {
    #[error("{0:?} is not HOST:PORT or unix:PATH")]
    Malformed(String),
    #[error("{0} is reachable from other machines: pass --allow-remote to listen there (anyone who can connect reads the snapshot)")]
    Remote(SocketAddr),
}

impl std::str::FromStr for ListenAddr {
    type Err = ListenError;

    fn from_str(s: &str) -> Result<ListenAddr, ListenError> {
        if let Some(path) = s.strip_prefix("unix:") {
            if path.is_empty() {
                return Err(ListenError::Malformed(s.to_owned()));
            }
            return Ok(ListenAddr::Unix(PathBuf::from(path)));
        }
        let malformed = || ListenError::Malformed(s.to_owned());
        let mut addrs = s.to_socket_addrs().map_err(|_| malformed())?;
        addrs.next().map(ListenAddr::Tcp).ok_or_else(malformed)
    }
}

impl std::fmt::Display for ListenAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ListenAddr::Tcp(addr) => write!(f, "{addr}"),
            ListenAddr::Unix(path) => write!(f, "unix:{}", path.display()),
        }
    }
}

impl ListenAddr {
    /// Refuses an address other machines can reach, unless `allow_remote`.
    pub fn check(&self, allow_remote: bool) -> Result<(), ListenError> {
        match self {
            ListenAddr::Tcp(addr) if !allow_remote && !is_loopback(addr.ip()) => {
                Err(ListenError::Remote(*addr))
            }
            _ => Ok(()),
        }
    }
}

fn is_loopback(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.is_loopback(),
        IpAddr::V6(v6) => {
            v6.is_loopback() || v6.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_parse_and_only_loopback_is_allowed_without_asking() {
        let parse = |s: &str| s.parse::<ListenAddr>();
        assert_eq!(parse(DEFAULT_LISTEN).unwrap().to_string(), DEFAULT_LISTEN);
        assert!(parse(DEFAULT_LISTEN).unwrap().check(false).is_ok());
        assert!(parse("[::1]:10809").unwrap().check(false).is_ok());
        assert_eq!(
            parse("unix:/run/x.sock").unwrap(),
            ListenAddr::Unix("/run/x.sock".into())
        );
        assert!(parse("unix:/run/x.sock").unwrap().check(false).is_ok());
        let any = parse("0.0.0.0:10809").unwrap();
        assert!(matches!(any.check(false), Err(ListenError::Remote(_))));
        assert!(any.check(true).is_ok());
        for bad in ["", "unix:", "10809", "host-without-port"] {
            assert!(
                matches!(parse(bad), Err(ListenError::Malformed(_))),
                "{bad}"
            );
        }
    }
}
