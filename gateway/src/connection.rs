//! The limits on a client connection, so a slow or stalled client cannot
//! hold the server's sockets: how long a request head may take (also the
//! keep-alive idle limit), how long a body or response may go without a
//! byte moving, and how many connections are open at once.

use std::future::Future;
use std::io::{self, IoSlice};
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use hyper::body::Frame;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

/// File descriptors kept for the store (segment files, fjall's tables and
/// journals) and the node's own work, when capping connections to the
/// process's descriptor limit.
const RESERVED_DESCRIPTORS: u64 = 256;

type Written = Poll<io::Result<usize>>;
type BoxError = Box<dyn std::error::Error + Send + Sync>;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionLimits {
    /// A connection must send a complete request head within this time of
    /// opening or of its previous response; an idle keep-alive connection
    /// is closed after it.
    pub header_timeout: Duration,
    /// A request body that sends nothing, or a response the client does not
    /// read, for this long ends its connection.
    pub stall_timeout: Duration,
    /// Connections served at once; more wait in the listen backlog.
    pub max_connections: usize,
}

impl Default for ConnectionLimits {
    fn default() -> Self // A
    {
        ConnectionLimits {
            header_timeout: Duration::from_secs(30),
            stall_timeout: Duration::from_secs(60),
            max_connections: 4096,
        }
    }
}

/// Raise the soft limit on open files to the hard limit, as Go's runtime
/// does for every server, and return the soft limit then in force.
pub fn raise_descriptor_limit() -> Option<u64> // A
{
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit writes one rlimit into the struct we own.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return None;
    }
    if limit.rlim_cur < limit.rlim_max {
        let raised = libc::rlimit { rlim_cur: limit.rlim_max, rlim_max: limit.rlim_max };
        // SAFETY: setrlimit reads one rlimit we own.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
            limit = raised;
        }
    }
    Some(limit.rlim_cur)
}

/// The connection cap a process can honour: `wanted`, or fewer when the
/// descriptor limit would run out first.
pub fn connection_cap(wanted: usize, descriptors: Option<u64>) -> usize // A
{
    match descriptors {
        Some(limit) => wanted.min(limit.saturating_sub(RESERVED_DESCRIPTORS).max(16) as usize),
        None => wanted,
    }
}

/// A deadline that only runs while its owner waits on the peer; progress
/// pushes it back without touching the timer (one clock read per poll).
struct StallClock {
    timeout: Duration,
    sleep: Pin<Box<Sleep>>,
    /// When the owner started waiting, if it is waiting.
    waiting_since: Option<Instant>,
}

impl StallClock {
    fn new(timeout: Duration) -> Self // A
    {
        StallClock { timeout, sleep: Box::pin(tokio::time::sleep(timeout)), waiting_since: None }
    }

    fn progressed(&mut self) // A
    {
        self.waiting_since = None;
    }

    /// Called when the peer has nothing for us: `true` once it has had
    /// nothing for the whole timeout.
    fn stalled(&mut self, cx: &mut Context<'_>) -> bool // A
    {
        let since = *self.waiting_since.get_or_insert_with(Instant::now);
        let deadline = since + self.timeout;
        if self.sleep.deadline() != deadline {
            self.sleep.as_mut().reset(deadline);
        }
        self.sleep.as_mut().poll(cx).is_ready()
    }
}

/// A socket whose writes fail once the client has taken nothing for the
/// stall timeout (a client that stopped reading its response).
pub struct StallGuard<IO> {
    io: IO,
    writes: StallClock,
}

impl<IO> StallGuard<IO> {
    pub fn new(io: IO, timeout: Duration) -> Self // A
    {
        StallGuard { io, writes: StallClock::new(timeout) }
    }

    fn write_progress<T>(&mut self, cx: &mut Context<'_>, polled: Poll<io::Result<T>>) -> Poll<io::Result<T>> // A
    {
        match polled {
            Poll::Pending if self.writes.stalled(cx) => {
                Poll::Ready(Err(io::Error::new(io::ErrorKind::TimedOut, "the client stopped reading")))
            }
            Poll::Pending => Poll::Pending,
            ready => {
                self.writes.progressed();
                ready
            }
        }
    }
}

impl<IO: AsyncRead + Unpin> AsyncRead for StallGuard<IO> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> // A
    {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for StallGuard<IO> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Written // A
    {
        let polled = Pin::new(&mut self.io).poll_write(cx, buf);
        self.write_progress(cx, polled)
    }

    fn poll_write_vectored(mut self: Pin<&mut Self>, cx: &mut Context<'_>, bufs: &[IoSlice<'_>]) -> Written // A
    {
        let polled = Pin::new(&mut self.io).poll_write_vectored(cx, bufs);
        self.write_progress(cx, polled)
    }

    fn is_write_vectored(&self) -> bool // A
    {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> // A
    {
        let polled = Pin::new(&mut self.io).poll_flush(cx);
        self.write_progress(cx, polled)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> // A
    {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

/// The client sent no byte of its body for the stall timeout.
#[derive(Debug, thiserror::Error)]
#[error("the client sent no part of its request body for {0:?}")]
pub struct BodyStalled(Duration);

/// A request body that fails once the client has sent nothing for the
/// stall timeout (a client that started a body and stopped).
pub struct StallTimedBody<B> {
    body: Pin<Box<B>>,
    frames: StallClock,
}

impl<B> StallTimedBody<B> {
    pub fn new(body: B, timeout: Duration) -> Self // A
    {
        StallTimedBody { body: Box::pin(body), frames: StallClock::new(timeout) }
    }
}

impl<B> hyper::body::Body for StallTimedBody<B>
where
    B: hyper::body::Body<Data = Bytes>,
    B::Error: std::error::Error + Send + Sync + 'static,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> // A
    {
        let this = &mut *self;
        match this.body.as_mut().poll_frame(cx) {
            Poll::Pending => {
                if this.frames.stalled(cx) {
                    return Poll::Ready(Some(Err(Box::new(BodyStalled(this.frames.timeout)))));
                }
                Poll::Pending
            }
            Poll::Ready(frame) => {
                this.frames.progressed();
                Poll::Ready(frame.map(|frame| frame.map_err(Into::into)))
            }
        }
    }

    fn is_end_stream(&self) -> bool // A
    {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint // A
    {
        self.body.size_hint()
    }
}
