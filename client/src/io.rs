//! Adapts a tokio byte stream to hyper's IO traits, and suppresses the empty
//! flushes that madsim turns into messages.
//!
//! Written here rather than taken from hyper-util so the client depends on
//! nothing that could reach the real tokio runtime under `--cfg madsim`, and
//! so the crate stays free of `unsafe`: reads go through a small owned
//! buffer and `ReadBufCursor::put_slice` instead of writing into hyper's
//! uninitialised memory.

use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Bytes moved per read; hyper asks again while data is ready.
const READ_CHUNK_BYTES: usize = 16 * 1024;

/// A stream that hyper can drive (the server's connections use it too).
pub struct HyperIo<S> {
    inner: S,
    chunk: Box<[u8]>,
    /// Bytes were written since the last flush. madsim's `poll_flush` sends a
    /// message even when there is nothing to send and hyper flushes on every
    /// poll, so without this two hyper ends ping-pong empty messages forever.
    unflushed: bool,
}

impl<S> HyperIo<S> {
    pub fn new(inner: S) -> Self {
        HyperIo {
            inner,
            chunk: vec![0; READ_CHUNK_BYTES].into_boxed_slice(),
            unflushed: false,
        }
    }
}

impl<S: AsyncRead + Unpin> hyper::rt::Read for HyperIo<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        mut buf: hyper::rt::ReadBufCursor<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let want = buf.remaining().min(this.chunk.len());
        let mut chunk = ReadBuf::new(&mut this.chunk[..want]);
        ready!(Pin::new(&mut this.inner).poll_read(cx, &mut chunk))?;
        // An empty fill is end-of-stream, which hyper reads the same way.
        buf.put_slice(chunk.filled());
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncWrite + Unpin> hyper::rt::Write for HyperIo<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let written = ready!(Pin::new(&mut this.inner).poll_write(cx, buf))?;
        if written > 0 {
            this.unflushed = true;
        }
        Poll::Ready(Ok(written))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if !this.unflushed {
            return Poll::Ready(Ok(()));
        }
        ready!(Pin::new(&mut this.inner).poll_flush(cx))?;
        this.unflushed = false;
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.unflushed {
            ready!(Pin::new(&mut this.inner).poll_flush(cx))?;
            this.unflushed = false;
        }
        Pin::new(&mut this.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    /// Counts flushes that reach the inner stream.
    #[derive(Default, Clone)]
    struct CountingSink {
        flushes: Arc<Mutex<usize>>,
    }

    impl AsyncWrite for CountingSink {
        fn poll_write(
            self: Pin<&mut Self>,
            _cx: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<io::Result<usize>> {
            Poll::Ready(Ok(buf.len()))
        }
        fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
            *self.flushes.lock().expect("test mutex") += 1;
            Poll::Ready(Ok(()))
        }
        fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    #[tokio::test]
    async fn empty_flushes_do_not_reach_the_stream() {
        use std::future::poll_fn;
        let sink = CountingSink::default();
        let mut io = HyperIo::new(sink.clone());
        let mut io = Pin::new(&mut io);
        use hyper::rt::Write;
        poll_fn(|cx| io.as_mut().poll_flush(cx)).await.unwrap();
        assert_eq!(*sink.flushes.lock().unwrap(), 0);
        poll_fn(|cx| io.as_mut().poll_write(cx, b"x"))
            .await
            .unwrap();
        poll_fn(|cx| io.as_mut().poll_flush(cx)).await.unwrap();
        poll_fn(|cx| io.as_mut().poll_flush(cx)).await.unwrap();
        assert_eq!(*sink.flushes.lock().unwrap(), 1);
    }
}
