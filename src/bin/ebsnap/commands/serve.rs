//! `ebsnap serve`: the EBS direct API on a local store, until SIGINT or SIGTERM.

use super::Context;
use crate::exit::{Exit, Failure, Result};
use crate::signals;
use crate::store::{local_dir, open_local_store, StoreSettings};
use ebsnap::server::faults::{FaultSpec, Faults};
use ebsnap::server::{self, Limits, Tls};
use ebsnap::store::local::{Access, LockWait};
use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

mod keys;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Address to listen on.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:9000")]
    listen: SocketAddr,
    /// Accept unsigned requests (no EBSNAP_ACCESS_KEY_ID / EBSNAP_SECRET_ACCESS_KEY).
    #[arg(long)]
    no_auth: bool,
    /// The clients' keys, with their roles and owners (TOML, mode 0600; reloaded on
    /// SIGHUP). EBSNAP_ACCESS_KEY_ID/EBSNAP_SECRET_ACCESS_KEY, if set, add an admin key.
    #[arg(long, value_name = "FILE")]
    keys: Option<std::path::PathBuf>,
    /// Inject faults for testing clients, e.g.
    /// throttle=0.2,error=0.05,reset=0.02,latency-ms=20
    #[arg(long, value_name = "SPEC")]
    faults: Option<FaultSpec>,
    /// Seed of the fault sequence (the same seed, the same faults).
    #[arg(long, value_name = "N", default_value_t = 0)]
    seed: u64,
    #[command(flatten)]
    limits: TimeoutArgs,
    /// Snapshots that may be pending at once (EBS allows 100 per account); a
    /// StartSnapshot beyond gets ConcurrentLimitExceededException.
    #[arg(long, value_name = "N", default_value_t = ebsnap::store::DEFAULT_MAX_PENDING, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..))]
    max_pending: usize,
    #[command(flatten)]
    tls: TlsArgs,
}

/// `serve` over HTTPS.
#[derive(Debug, clap::Args)]
struct TlsArgs {
    /// Serve HTTPS with this PEM certificate chain (the server's certificate first);
    /// needs --tls-key.
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// The PEM private key of --tls-cert, readable by its owner only (0600).
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
}

impl TlsArgs {
    /// The TLS side, if asked for: a bad file stops `serve` before it listens.
    fn load(&self) -> Result<Option<Tls>> {
        let (Some(cert), Some(key)) = (&self.tls_cert, &self.tls_key) else {
            return Ok(None);
        };
        Tls::load(cert, key)
            .map(Some)
            .map_err(|e| Failure::Refused {
                message: e.to_string(),
                exit: Exit::FAILURE,
            })
    }
}

/// How long `serve` waits for slow clients, and how many connections it keeps.
#[derive(Debug, clap::Args)]
struct TimeoutArgs {
    /// Seconds a client has to send a request's head (an idle connection is closed
    /// after as long).
    #[arg(long, value_name = "SECONDS", default_value_t = Limits::HEADER_TIMEOUT_SECS, value_parser = clap::value_parser!(u64).range(1..))]
    header_timeout: u64,
    /// Seconds a client has to send a request's body.
    #[arg(long, value_name = "SECONDS", default_value_t = Limits::BODY_TIMEOUT_SECS, value_parser = clap::value_parser!(u64).range(1..))]
    body_timeout: u64,
    /// Connections open at once; at the limit, the oldest connection on which no
    /// request has passed the signature check is closed to make room.
    #[arg(long, value_name = "N", default_value_t = Limits::MAX_CONNECTIONS, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..))]
    max_connections: usize,
}

impl From<&TimeoutArgs> for Limits {
    fn from(t: &TimeoutArgs) -> Limits {
        Limits {
            header_timeout: Duration::from_secs(t.header_timeout),
            body_timeout: Duration::from_secs(t.body_timeout),
            max_connections: t.max_connections,
        }
    }
}

pub async fn run(args: Args, ctx: &Context) -> Result<Exit> {
    let limits = Limits::from(&args.limits);
    let Some(root) = local_dir(&ctx.location) else {
        return Err(Failure::usage(format!(
            "serve needs a local store directory, not `{}`",
            ctx.location
        )));
    };
    let keys = keys::load(args.keys.clone(), args.no_auth)?;
    let tls = args.tls.load()?;
    // Watching before the URL is printed: a SIGHUP sent as soon as it is reloads.
    if let Some(keys) = &keys {
        keys::reload_on_hangup(keys.clone())?;
    }
    // The server is the store's one writer for as long as it runs: it never waits for
    // the lock. Clients' encrypted snapshots use the same key file as a local backup.
    let settings = StoreSettings {
        lock_wait: LockWait::Fail,
        ..ctx.settings.clone()
    };
    let store = Arc::new(open_local_store(root, Access::Write, &settings)?);
    store.set_max_pending(args.max_pending);
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .map_err(|e| Failure::Refused {
            message: format!("cannot listen on {}: {e}", args.listen),
            exit: Exit::FAILURE,
        })?;
    let addr = listener
        .local_addr()
        .map_err(|e| io_failure("listening on", args.listen, e))?;
    // The first line on stdout is the URL: scripts (and tests) read it to find the port.
    println!(
        "ebsnap serve: listening on {}://{addr} (store {}, auth {})",
        if tls.is_some() { "https" } else { "http" },
        root.display(),
        if keys.is_some() { "SigV4" } else { "off" }
    );
    let _ = std::io::stdout().flush();
    let mut app = server::router_with_keys(store, keys, &limits);
    if let Some(spec) = args.faults {
        eprintln!(
            "ebsnap serve: injecting faults {spec:?} (seed {})",
            args.seed
        );
        app = server::with_faults(app, Faults::new(spec, args.seed));
    }
    server::serve_router_tls(listener, app, &limits, tls, signals::shutdown())
        .await
        .map_err(|e| io_failure("serving on", addr, e))?;
    eprintln!("ebsnap serve: stopped");
    Ok(Exit::SUCCESS)
}

fn io_failure(what: &'static str, addr: SocketAddr, source: std::io::Error) -> Failure {
    Failure::Engine(ebsnap::Error::Target {
        what,
        path: addr.to_string().into(),
        source,
    })
}
