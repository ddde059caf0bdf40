//! One client: the negotiation, then requests read in order and answered as they
//! finish (reads run concurrently, their replies written whole, one at a time).

use super::proto::{self, Command, Negotiation, Next, Request, Session};
use crate::engine::recover::BlockReader;
use std::io;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, WriteHalf};
use tokio::sync::{Mutex, Semaphore};
use tokio::task::JoinSet;

/// A client has this long to negotiate: one that connects and says nothing does not
/// hold its place for ever.
const NEGOTIATION_TIMEOUT: Duration = Duration::from_secs(60);

/// Bytes of reads in flight on one connection at most (one largest request).
const READ_BUDGET: u32 = proto::MAX_REQUEST;

/// Extents in one block status reply at most.
const MAX_EXTENTS: usize = 4096;

type Writer<S> = Arc<Mutex<WriteHalf<S>>>;

pub(super) async fn connection<S>(stream: S, reader: BlockReader) -> io::Result<()>
where
    S: AsyncRead + AsyncWrite + Send + 'static,
{
    let (mut input, mut output) = tokio::io::split(stream);
    let negotiated = tokio::time::timeout(
        NEGOTIATION_TIMEOUT,
        negotiate(&mut input, &mut output, &reader),
    )
    .await
    .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "negotiation timed out"))??;
    let Some(session) = negotiated else {
        return output.shutdown().await;
    };
    let output = Arc::new(Mutex::new(output));
    let result = transmit(&mut input, &output, session, &reader).await;
    let _ = output.lock().await.shutdown().await;
    result
}

/// The handshake and options; `None` when the client ended them without an export.
async fn negotiate<R, W>(
    input: &mut R,
    output: &mut W,
    reader: &BlockReader,
) -> io::Result<Option<Session>>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    output.write_all(&proto::greeting()).await?;
    let mut flags = [0u8; 4];
    input.read_exact(&mut flags).await?;
    let no_zeroes = proto::client_flags(flags).map_err(invalid)?;
    let name = reader.snapshot().to_string();
    let description = format!("ebsnap snapshot {name} (read-only)");
    let mut negotiation = Negotiation::new(&name, &description, reader.size(), no_zeroes);
    loop {
        let mut head = [0u8; 16];
        input.read_exact(&mut head).await?;
        let header = proto::option_header(&head).map_err(invalid)?;
        let mut data = vec![0u8; header.length as usize];
        input.read_exact(&mut data).await?;
        let mut out = Vec::new();
        let next = negotiation.option(header.option, &data, &mut out);
        output.write_all(&out).await?;
        match next {
            Next::Option => {}
            Next::Transmit(session) => return Ok(Some(session)),
            Next::Close => return Ok(None),
        }
    }
}

/// Requests until the client disconnects; reads run as tasks.
async fn transmit<R, S>(
    input: &mut R,
    output: &Writer<S>,
    session: Session,
    reader: &BlockReader,
) -> io::Result<()>
where
    R: AsyncRead + Unpin,
    S: AsyncWrite + Send + 'static,
{
    let budget = Arc::new(Semaphore::new(READ_BUDGET as usize));
    let mut tasks = JoinSet::new();
    let result = loop {
        let mut raw = [0u8; 28];
        match input.read_exact(&mut raw).await {
            Ok(_) => {}
            // A client that closes without NBD_CMD_DISC is gone all the same.
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => break Ok(()),
            Err(e) => break Err(e),
        }
        let request = proto::request(&raw).map_err(invalid)?;
        match session.command(&request) {
            Command::Disconnect => break Ok(()),
            Command::Refuse { errno, payload } => {
                let mut dropped = input.take(u64::from(payload));
                tokio::io::copy(&mut dropped, &mut tokio::io::sink()).await?;
                let reply = error_reply(
                    &session,
                    request.cookie,
                    errno,
                    "the export is read-only or the request is invalid",
                );
                output.lock().await.write_all(&reply).await?;
            }
            Command::BlockStatus {
                offset,
                length,
                one,
            } => {
                let reply = block_status(reader, request.cookie, offset, length, one);
                output.lock().await.write_all(&reply).await?;
            }
            Command::Read { offset, length } => {
                let permit = budget
                    .clone()
                    .acquire_many_owned(length)
                    .await
                    .expect("never closed");
                let (reader, output) = (reader.clone(), output.clone());
                tasks.spawn(async move {
                    let _permit = permit;
                    read(&reader, &output, &session, &request, offset, length).await
                });
            }
        }
        while let Some(done) = tasks.try_join_next() {
            done.expect("read task panicked")?;
        }
    };
    while let Some(done) = tasks.join_next().await {
        done.expect("read task panicked")?;
    }
    result
}

async fn read<S: AsyncWrite>(
    reader: &BlockReader,
    output: &Writer<S>,
    session: &Session,
    request: &Request,
    offset: u64,
    length: u32,
) -> io::Result<()> {
    let cookie = request.cookie;
    let (head, data) = match reader.read(offset, length as usize).await {
        Ok(data) if session.structured => (proto::read_chunk_head(cookie, offset, length), data),
        Ok(data) => (proto::simple_reply(cookie, 0).to_vec(), data),
        // The reader logged the failure with its snapshot and block.
        Err(e) => (
            error_reply(session, cookie, proto::EIO, &e.to_string()),
            Vec::new(),
        ),
    };
    let mut out = output.lock().await;
    out.write_all(&head).await?;
    out.write_all(&data).await
}

fn block_status(reader: &BlockReader, cookie: u64, offset: u64, length: u32, one: bool) -> Vec<u8> {
    let max = if one { 1 } else { MAX_EXTENTS };
    let extents: Vec<(u32, bool)> = reader
        .extents(offset, u64::from(length), max)
        .into_iter()
        // Within the request, so each fits in 32 bits.
        .map(|e| (e.length as u32, e.data))
        .collect();
    proto::block_status_chunk(cookie, &extents)
}

fn error_reply(session: &Session, cookie: u64, errno: u32, message: &str) -> Vec<u8> {
    if session.structured {
        proto::error_chunk(cookie, errno, message)
    } else {
        proto::simple_reply(cookie, errno).to_vec()
    }
}

fn invalid(e: proto::ProtoError) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e)
}
