//! Listening: connections accepted on TCP or a Unix socket, each served on a task of
//! its own, at most [`MAX_CLIENTS`] at once (more wait to be accepted), until the
//! shutdown future resolves; then the connections are closed.

use super::conn::connection;
use super::ListenAddr;
use crate::engine::recover::BlockReader;
use std::future::Future;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tokio::net::{TcpListener, UnixListener};
use tokio::sync::{OwnedSemaphorePermit as Slot, Semaphore};
use tokio::task::JoinSet;

/// Clients served at once.
pub const MAX_CLIENTS: usize = 16;

/// A bound listening socket.
pub enum Listener {
    Tcp(TcpListener),
    /// The socket's path is removed when the server stops.
    Unix(UnixListener, PathBuf),
}

/// Binds a Unix socket at `path` that is the owner's only from the moment it is there:
/// whoever can connect reads the snapshot (connecting needs write permission on the
/// socket), and bind makes it as the umask says. So it is bound under a staging name
/// beside `path`, made 0600, and only then linked at `path` (a link fails where
/// something is already there: that is never replaced).
fn bind_private(path: &Path) -> io::Result<UnixListener> {
    let mut staging = path.as_os_str().to_owned();
    staging.push(format!(".{}.bind", std::process::id()));
    let staging = PathBuf::from(staging);
    let listener = UnixListener::bind(&staging)?;
    let placed = std::fs::set_permissions(&staging, std::fs::Permissions::from_mode(0o600))
        .and_then(|()| std::fs::hard_link(&staging, path));
    let _ = std::fs::remove_file(&staging);
    placed.map(|()| listener)
}

impl Listener {
    /// Binds `addr`. A Unix socket's path must not exist: what is there is never
    /// removed (it may be someone else's).
    pub async fn bind(addr: &ListenAddr) -> io::Result<Listener> {
        match addr {
            ListenAddr::Tcp(a) => Ok(Listener::Tcp(TcpListener::bind(a).await?)),
            ListenAddr::Unix(path) => {
                let listener = bind_private(path)?;
                Ok(Listener::Unix(listener, path.clone()))
            }
        }
    }

    /// Where it listens (a TCP port of 0 resolved).
    pub fn local_addr(&self) -> io::Result<ListenAddr> {
        match self {
            Listener::Tcp(l) => Ok(ListenAddr::Tcp(l.local_addr()?)),
            Listener::Unix(_, path) => Ok(ListenAddr::Unix(path.clone())),
        }
    }

    /// Accepts one client and serves it on a task of its own, which holds `slot`.
    async fn accept(
        &self,
        reader: &BlockReader,
        slot: Slot,
        clients: &mut JoinSet<()>,
    ) -> io::Result<()> {
        let reader = reader.clone();
        match self {
            Listener::Tcp(l) => {
                let (stream, peer) = l.accept().await?;
                let _ = stream.set_nodelay(true);
                clients.spawn(log_end(connection(stream, reader), peer.to_string(), slot));
            }
            Listener::Unix(l, path) => {
                let (stream, _) = l.accept().await?;
                let peer = path.display().to_string();
                clients.spawn(log_end(connection(stream, reader), peer, slot));
            }
        }
        Ok(())
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        if let Listener::Unix(_, path) = self {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// Serves `reader` to every client that connects, until `shutdown` resolves.
pub async fn serve(
    listener: Listener,
    reader: BlockReader,
    shutdown: impl Future<Output = ()>,
) -> io::Result<()> {
    let slots = Arc::new(Semaphore::new(MAX_CLIENTS));
    let mut clients = JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        let slot = tokio::select! {
            _ = &mut shutdown => break,
            slot = slots.clone().acquire_owned() => slot.expect("never closed"),
        };
        tokio::select! {
            _ = &mut shutdown => break,
            accepted = listener.accept(&reader, slot, &mut clients) => {
                // A failed accept (a client gone already, no descriptors left) is
                // that client's problem, not the server's.
                if let Err(e) = accepted {
                    tracing::warn!("accepting a connection: {e}");
                }
            }
        }
        while clients.try_join_next().is_some() {}
    }
    clients.shutdown().await;
    Ok(())
}

/// Serves one client, holding its slot until it ends.
async fn log_end(connection: impl Future<Output = io::Result<()>>, peer: String, _slot: Slot) {
    tracing::info!("NBD client {peer} connected");
    match connection.await {
        Ok(()) => tracing::info!("NBD client {peer} disconnected"),
        Err(e) => tracing::warn!("NBD client {peer}: {e}"),
    }
}
