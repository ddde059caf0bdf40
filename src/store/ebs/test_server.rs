//! A plain HTTP/1.1 server on 127.0.0.1:0 for the EBS store's tests: it reads each
//! request (its head and `content-length` body) and answers with bytes the test gives,
//! counting its connections.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;

/// A server that answers every request (its head and `content-length` body read)
/// with `answer`, and counts its connections.
pub(super) async fn answering(answer: Vec<u8>) -> (String, Arc<AtomicUsize>) {
    answering_in_pieces(vec![answer]).await
}

/// The same, with a pause between the answer's pieces.
pub(super) async fn answering_in_pieces(answer: Vec<Vec<u8>>) -> (String, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let accepted = Arc::new(AtomicUsize::new(0));
    let (count, answer) = (accepted.clone(), Arc::new(answer));
    tokio::spawn(async move {
        while let Ok((socket, _)) = listener.accept().await {
            count.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(answer_each(socket, answer.clone()));
        }
    });
    (url, accepted)
}

async fn answer_each(socket: tokio::net::TcpStream, answer: Arc<Vec<Vec<u8>>>) {
    let mut socket = BufReader::new(socket);
    loop {
        let mut body = 0;
        let mut line = String::new();
        while {
            line.clear();
            socket.read_line(&mut line).await.is_ok_and(|n| n > 0) && line != "\r\n"
        } {
            if let Some(n) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                body = n.trim().parse().unwrap();
            }
        }
        if line != "\r\n" {
            return;
        }
        let mut skipped = vec![0; body];
        if socket.read_exact(&mut skipped).await.is_err() {
            return;
        }
        for (i, piece) in answer.iter().enumerate() {
            if i > 0 {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            if socket.get_mut().write_all(piece).await.is_err() {
                return;
            }
        }
    }
}

/// An answer: `head` (its status line and headers), a `content-length` and `body`.
pub(super) fn answer(head: &str, body: &[u8]) -> Vec<u8> {
    let mut answer = format!("{head}\r\ncontent-length: {}\r\n\r\n", body.len()).into_bytes();
    answer.extend_from_slice(body);
    answer
}
