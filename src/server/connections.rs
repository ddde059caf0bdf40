//! The open connections, bounded (`serve --max-connections`).
//!
//! Each connection holds a socket, a task and up to [`MAX_HEAD_BYTES`] of head being
//! read, whether or not its client knows the secret: 3000 connections each sending
//! half of a 400 KB header took the server to 1.25 GB. So connections are counted, and
//! at the limit the oldest one that has not yet proven itself (no request on it has
//! passed the signature check) is closed to make room. A genuine client proves itself
//! with its first request, and is not evicted by strangers; a stranger's connections
//! evict only each other.
//!
//! Over TLS, the handshake is the first part of the connection: it happens in the
//! connection's own task, holding its slot, unproven (so evictable), and within the
//! head timeout. A client that stalls mid-handshake or sends garbage is dropped like
//! one that stalls mid-head.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;

/// The most bytes hyper buffers for a request's head (request line and headers; also
/// its read buffer). Far above what any EBS or EC2 client sends (SigV4 heads are about
/// 1 KiB), far below hyper's default of about 400 KB.
pub const MAX_HEAD_BYTES: usize = 64 * 1024;

/// One connection, as the registry and its requests see it.
#[derive(Debug, Default)]
pub(super) struct Mark {
    proven: AtomicBool,
    close: CancellationToken,
}

impl Mark {
    /// Cancelled when the connection is evicted.
    pub(super) fn closed(&self) -> tokio_util::sync::WaitForCancellationFuture<'_> {
        self.close.cancelled()
    }
}

/// Marks the connection a request came on as proven (its request passed the checks).
pub(super) fn mark_proven(extensions: &axum::http::Extensions) {
    if let Some(mark) = extensions.get::<Arc<Mark>>() {
        mark.proven.store(true, Ordering::Relaxed);
    }
}

/// The open connections: a slot each, and who is oldest.
pub(super) struct Connections {
    slots: Arc<Semaphore>,
    open: Mutex<BTreeMap<u64, Arc<Mark>>>,
    next: std::sync::atomic::AtomicU64,
}

/// A connection's place: gives back its slot and leaves the registry when dropped.
pub(super) struct Place {
    connections: Arc<Connections>,
    id: u64,
    pub mark: Arc<Mark>,
    _slot: OwnedSemaphorePermit,
}

impl Drop for Place {
    fn drop(&mut self) {
        self.connections.lock().remove(&self.id);
    }
}

impl Connections {
    pub(super) fn new(max: usize) -> Arc<Connections> {
        Arc::new(Connections {
            slots: Arc::new(Semaphore::new(max)),
            open: Mutex::new(BTreeMap::new()),
            next: Default::default(),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<u64, Arc<Mark>>> {
        self.open.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A place for a new connection: a free slot, or, at the limit, the slot of the
    /// oldest unproven connection once it has closed (or of any that closes first).
    pub(super) async fn admit(self: &Arc<Self>) -> Place {
        let slot = match self.slots.clone().try_acquire_owned() {
            Ok(slot) => slot,
            Err(_) => {
                self.evict_oldest_unproven();
                self.slots
                    .clone()
                    .acquire_owned()
                    .await
                    .expect("never closed")
            }
        };
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let mark = Arc::new(Mark::default());
        self.lock().insert(id, mark.clone());
        Place {
            connections: self.clone(),
            id,
            mark,
            _slot: slot,
        }
    }

    fn evict_oldest_unproven(&self) {
        let open = self.lock();
        let oldest = open
            .values()
            .find(|m| !m.proven.load(Ordering::Relaxed) && !m.close.is_cancelled());
        match oldest {
            Some(mark) => mark.close.cancel(),
            None => tracing::warn!(
                "{} connections are open, all from proven clients: waiting for one to close",
                open.len()
            ),
        }
    }
}

/// How connections are spoken to: HTTP/1.1 with its limits, over TLS if given.
pub(super) struct Protocol {
    pub tls: Option<super::tls::Tls>,
    pub http: hyper::server::conn::http1::Builder,
    /// Also the time a TLS handshake may take.
    pub header_timeout: std::time::Duration,
    /// Cancelled when the server stops: a handshake under way is then abandoned, as
    /// an idle HTTP connection is closed, rather than waited for.
    pub stopping: CancellationToken,
}

/// Serves one accepted connection until it ends, is evicted, or shuts down with the
/// server: the TLS handshake first if there is TLS, then HTTP/1.1.
pub(super) async fn drive(
    stream: tokio::net::TcpStream,
    protocol: Arc<Protocol>,
    app: axum::Router,
    watcher: hyper_util::server::graceful::Watcher,
    place: Place,
) {
    let served = async {
        let http = &protocol.http;
        match &protocol.tls {
            None => serve_http(stream, http, app, watcher).await,
            Some(tls) => {
                let shaken = tokio::select! {
                    shaken = handshake(tls, stream, protocol.header_timeout) => shaken,
                    () = protocol.stopping.cancelled() => return,
                };
                match shaken {
                    Ok(stream) => serve_http(stream, http, app, watcher).await,
                    Err(e) => tracing::debug!("TLS handshake: {e}"),
                }
            }
        }
    };
    tokio::select! {
        () = served => {},
        () = place.mark.closed() => tracing::debug!("closed an unproven connection to make room"),
    }
}

/// A TLS handshake, given as long as a request's head: a client gets no longer to say
/// hello than to ask.
pub(super) async fn handshake<IO>(
    tls: &super::tls::Tls,
    stream: IO,
    timeout: std::time::Duration,
) -> std::io::Result<tokio_rustls::server::TlsStream<IO>>
where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    match tokio::time::timeout(timeout, tls.acceptor.accept(stream)).await {
        Ok(accepted) => accepted,
        Err(_) => Err(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            format!("not finished within {timeout:?}"),
        )),
    }
}

async fn serve_http<IO>(
    io: IO,
    http: &hyper::server::conn::http1::Builder,
    app: axum::Router,
    watcher: hyper_util::server::graceful::Watcher,
) where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let service = hyper_util::service::TowerToHyperService::new(app);
    let connection = http.serve_connection(hyper_util::rt::TokioIo::new(io), service);
    if let Err(e) = watcher.watch(connection).await {
        // Clients that go away, send garbage or time out: theirs to notice.
        tracing::debug!("connection ended: {e}");
    }
}
