//! Reading a request head off the socket within its limits, and closing a refused
//! connection so that its answer arrives.

use super::check::{check_head, Verdict};
use super::{HeadLimits, Refusal};
use bytes::{BufMut, BytesMut};
use pingora::protocols::Stream;
use pingora::time::fast_timeout::fast_timeout;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The first size of a head buffer: Pingora's, which this buffer replaces.
const HEAD_BUFFER: usize = 4096;
/// How long a refusal may take to write.
const ANSWER_TIME: Duration = Duration::from_secs(2);
/// After a refusal, what the client still sends is read and dropped for this long (or this
/// many bytes) before the socket closes: closing with unread bytes makes the kernel send a
/// reset, which can destroy the answer before the client has read it (nginx's lingering close).
const LINGER_TIME: Duration = Duration::from_secs(2);
const LINGER_BYTES: usize = 4 << 20;

/// How reading a request head ended.
pub enum Head {
    /// A complete head, and whatever followed it, for Pingora's parser.
    Ready(BytesMut),
    /// To be answered with [`LocalAnswers::get`](super::LocalAnswers::get); the buffer is
    /// reused to drain the socket.
    Refused(Refusal, BytesMut),
    /// The client closed or failed mid-head: close without an answer.
    Gone,
}

/// Read the rest of a request head whose first byte is `first`, within `limits`. The deadline
/// runs on Pingora's coarse timer, which costs nothing when the head is already there.
pub async fn read_head(stream: &mut Stream, first: u8, limits: &HeadLimits) -> Head {
    let mut buf = BytesMut::with_capacity(HEAD_BUFFER);
    buf.put_u8(first);
    match fast_timeout(limits.timeout, fill(stream, &mut buf, limits)).await {
        Ok(Verdict::Complete) => Head::Ready(buf),
        Ok(Verdict::Refuse(why)) => Head::Refused(why, buf),
        Ok(Verdict::Partial) => Head::Gone,
        Err(_) => Head::Refused(Refusal::Timeout, buf),
    }
}

/// Read until the head is complete or refused. `Partial`: the client went away.
async fn fill(stream: &mut Stream, buf: &mut BytesMut, limits: &HeadLimits) -> Verdict {
    let mut fresh = 0;
    loop {
        // Parse again only when a line has ended: a client trickling bytes costs one parse
        // per line, not one per read.
        if buf[fresh..].contains(&b'\n') {
            match check_head(buf, limits) {
                Verdict::Partial => {}
                done => return done,
            }
        } else if buf.len() >= limits.max_bytes {
            return Verdict::Refuse(Refusal::TooLarge);
        }
        fresh = buf.len();
        if buf.len() == buf.capacity() {
            // Doubling; the check above stops it at the limit.
            buf.reserve(buf.len());
        }
        match stream.read_buf(buf).await {
            Ok(0) | Err(_) => return Verdict::Partial,
            Ok(_) => {}
        }
    }
}

/// Write `answer`, end the write side, and drain what the client still sends for a moment
/// (see [`LINGER_TIME`]) before the caller drops the connection.
pub async fn refuse(stream: &mut Stream, answer: &[u8], mut buf: BytesMut) {
    let sent = fast_timeout(ANSWER_TIME, async {
        stream.write_all(answer).await?;
        stream.flush().await?;
        AsyncWriteExt::shutdown(stream).await
    })
    .await;
    if !matches!(sent, Ok(Ok(()))) {
        return;
    }
    let drain = async {
        let mut total = 0;
        while total <= LINGER_BYTES {
            buf.clear();
            match stream.read_buf(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => total += n,
            }
        }
    };
    let _ = fast_timeout(LINGER_TIME, drain).await;
}
