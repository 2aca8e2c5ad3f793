//! What a connection puts on the wire, kept cheap while it idles. tungstenite formats each frame
//! into a buffer that keeps the capacity of the largest frame it ever wrote; one snapshot of a
//! thousand vehicles would stay with the socket for its whole life. So a text message longer
//! than [`FRAGMENT_BYTES`] goes out as fragments of at most that size (RFC 6455 §5.4; clients
//! reassemble them into the one message), and that buffer never outgrows a fragment. Under the
//! protocol, [`Coalesce`] gathers the frames of one wake-up of the session and writes them to
//! the socket together on flush, one `write` for what would otherwise be one per frame, then
//! lets its buffer go.
use std::{
    io,
    pin::Pin,
    task::{ready, Context, Poll},
};

use bytes::Bytes;
use futures_util::{Sink, SinkExt};
use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_tungstenite::{
    tungstenite::{
        protocol::frame::{
            coding::{Data, OpCode},
            Frame,
        },
        Message,
    },
    WebSocketStream,
};

/// A server connection: the upgraded HTTP connection, with writes coalesced.
pub type Socket = WebSocketStream<Coalesce<TokioIo<Upgraded>>>;

/// The largest frame the server writes: longer text messages are fragmented. Small enough that
/// the buffer tungstenite keeps per connection stays small; large enough that most frames (a
/// position, an alert, a chat message) go whole, and a fragment's 4 header bytes are noise.
pub const FRAGMENT_BYTES: usize = 1024;

/// Gathered bytes past this are written before more are taken, so a burst (a snapshot, many
/// frames after a stall) costs at most this much on top of its frames, however large it is.
const COALESCE_LIMIT: usize = 64 * 1024;

/// `text` as the frames of one text message: itself when it fits in [`FRAGMENT_BYTES`],
/// otherwise a text frame and continuation frames, the last one final. The pieces share `text`'s
/// bytes. A fragment may end inside a UTF-8 character: only the whole message must be UTF-8.
pub fn fragments(text: Bytes) -> impl Iterator<Item = Frame> {
    let count = text.len().div_ceil(FRAGMENT_BYTES).max(1);
    (0..count).map(move |i| {
        let start = i * FRAGMENT_BYTES;
        let end = (start + FRAGMENT_BYTES).min(text.len());
        let opcode = if i == 0 { Data::Text } else { Data::Continue };
        Frame::message(text.slice(start..end), OpCode::Data(opcode), i + 1 == count)
    })
}

/// Queues `text` as one text message (in [`fragments`]) without flushing.
pub async fn feed_text<S>(sink: &mut S, text: Bytes) -> Result<(), S::Error>
where
    S: Sink<Message> + Unpin,
{
    for frame in fragments(text) {
        sink.feed(Message::Frame(frame)).await?;
    }
    Ok(())
}

/// A writer that holds what it is given until flushed (or until [`COALESCE_LIMIT`] bytes wait)
/// and then writes it in as few writes as the socket takes, holding no buffer afterwards.
/// Reads pass through.
#[derive(Debug)]
pub struct Coalesce<S> {
    inner: S,
    pending: Vec<u8>,
    /// How much of `pending` the socket has taken.
    written: usize,
}

impl<S> Coalesce<S> {
    pub fn new(inner: S) -> Self {
        Coalesce {
            inner,
            pending: Vec::new(),
            written: 0,
        }
    }

    /// The bytes waiting for a flush, and the memory held for them.
    #[cfg(test)]
    fn held(&self) -> (usize, usize) {
        (self.pending.len() - self.written, self.pending.capacity())
    }
}

impl<S: AsyncWrite + Unpin> Coalesce<S> {
    /// Writes everything gathered, then drops the buffer.
    fn poll_drain(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.written < self.pending.len() {
            let rest = &self.pending[self.written..];
            let n = ready!(Pin::new(&mut self.inner).poll_write(cx, rest))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.written += n;
        }
        self.pending = Vec::new();
        self.written = 0;
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Coalesce<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.pending.len() + buf.len() > COALESCE_LIMIT {
            ready!(this.poll_drain(cx))?;
        }
        this.pending.extend_from_slice(buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_drain(cx))?;
        Pin::new(&mut this.inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_drain(cx))?;
        Pin::new(&mut this.inner).poll_shutdown(cx)
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Coalesce<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_read(cx, buf)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::StreamExt;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio_tungstenite::tungstenite::protocol::Role;

    /// Counts the writes that reach it.
    struct Counted<S> {
        inner: S,
        writes: usize,
    }

    impl<S: AsyncWrite + Unpin> AsyncWrite for Counted<S> {
        fn poll_write(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<io::Result<usize>> {
            let n = ready!(Pin::new(&mut self.inner).poll_write(cx, buf))?;
            self.writes += 1;
            Poll::Ready(Ok(n))
        }

        fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
            Pin::new(&mut self.inner).poll_flush(cx)
        }

        fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
            Pin::new(&mut self.inner).poll_shutdown(cx)
        }
    }

    #[tokio::test]
    async fn several_writes_go_out_as_one_on_flush_and_the_buffer_is_released() {
        let (near, mut far) = tokio::io::duplex(64 * 1024);
        let mut writer = Coalesce::new(Counted {
            inner: near,
            writes: 0,
        });
        for part in [&b"one,"[..], b"two,", b"three"] {
            writer.write_all(part).await.unwrap();
        }
        assert_eq!(
            writer.inner.writes, 0,
            "nothing is written before the flush"
        );
        assert_eq!(writer.held().0, 13);
        writer.flush().await.unwrap();
        assert_eq!(writer.inner.writes, 1);
        assert_eq!(writer.held(), (0, 0), "an idle writer holds no buffer");
        let mut got = [0; 13];
        far.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"one,two,three");
    }

    #[tokio::test]
    async fn a_slow_reader_gets_everything_in_order_across_partial_writes() {
        // A pipe that holds less than one flush: the writer must wait and resume mid-buffer.
        let (near, mut far) = tokio::io::duplex(100);
        let sent: Vec<u8> = (0..COALESCE_LIMIT * 2 + 7).map(|i| i as u8).collect();
        let reader = tokio::spawn(async move {
            let mut got = Vec::new();
            far.read_to_end(&mut got).await.unwrap();
            got
        });
        let mut writer = Coalesce::new(near);
        for chunk in sent.chunks(1000) {
            writer.write_all(chunk).await.unwrap();
        }
        writer.shutdown().await.unwrap();
        assert_eq!(writer.held(), (0, 0));
        drop(writer);
        assert_eq!(reader.await.unwrap(), sent);
    }

    #[test]
    fn long_text_is_fragmented_and_short_text_is_not() {
        let text = "é".repeat(FRAGMENT_BYTES); // two bytes each: fragments end mid-character
        let frames: Vec<Frame> = fragments(Bytes::from(text.clone())).collect();
        assert_eq!(frames.len(), 2);
        assert_eq!(frames[0].header().opcode, OpCode::Data(Data::Text));
        assert!(!frames[0].header().is_final);
        assert_eq!(frames[1].header().opcode, OpCode::Data(Data::Continue));
        assert!(frames[1].header().is_final);
        assert!(frames.iter().all(|f| f.payload().len() <= FRAGMENT_BYTES));

        for short in ["", "{\"type\":\"pong\"}"] {
            let frames: Vec<Frame> = fragments(Bytes::from(short)).collect();
            assert_eq!(frames.len(), 1);
            assert_eq!(frames[0].header().opcode, OpCode::Data(Data::Text));
            assert!(frames[0].header().is_final);
        }
    }

    #[tokio::test]
    async fn fragmented_messages_arrive_whole_and_in_order() {
        let (server, client) = tokio::io::duplex(4096);
        let mut server =
            WebSocketStream::from_raw_socket(Coalesce::new(server), Role::Server, None).await;
        let mut client = WebSocketStream::from_raw_socket(client, Role::Client, None).await;
        let sent = [
            "ä".repeat(3 * FRAGMENT_BYTES + 5),
            "short".to_owned(),
            "x".repeat(FRAGMENT_BYTES),
        ];
        let writer = {
            let sent = sent.clone();
            tokio::spawn(async move {
                for text in sent {
                    feed_text(&mut server, Bytes::from(text)).await.unwrap();
                }
                server.flush().await.unwrap();
                server
            })
        };
        for text in &sent {
            match client.next().await {
                Some(Ok(Message::Text(got))) => assert_eq!(got.as_str(), text),
                other => panic!("expected a text message, got {other:?}"),
            }
        }
        let server = writer.await.unwrap();
        assert_eq!(server.get_ref().held(), (0, 0));
    }
}
