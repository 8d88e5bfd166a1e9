//! `embedded-io` over a [`Backend`] (feature `embedded-io`): the node as a byte stream with a
//! position, for code written against `Read + Write + Seek` (file-system crates, loaders,
//! decompressors).
//!
//! [`Stream`] implements the async traits (`embedded-io-async`), [`BlockingStream`] the
//! blocking ones (`embedded-io`, through [`super::blocking`]). Any offset and length work:
//! partial sectors are read-modify-written by the io layer through the graph's bounce buffers
//! (a fixed pool; no heap, nothing sized by the request), so a 3-byte write in the middle of a
//! sector leaves the rest of it as it was. Reads stop at the end of the node (a short read,
//! then 0); writes past the end are short, and a write that starts at the end fails with
//! [`ErrorKind::WriteZero`](embedded_io::ErrorKind::WriteZero). Seeking past the end is allowed
//! (as for files); seeking before 0 is `InvalidInput`.
//!
//! **Code size.** A request future is compiled in every crate that polls it (its `poll` is
//! instantiated where it is used; release builds do not share such instances across crates,
//! and LTO does not merge them). The blocking methods are `#[inline]` so that they, and the
//! backend futures they poll, are compiled in the caller's crate beside the caller's own polls
//! of the same futures: compiled here instead, the read and write paths were linked twice
//! (examples/embed with `stream`: +180 KB of x86_64 text; now +10 KB).

use embedded_io::{ErrorKind, ErrorType, SeekFrom};

use super::blocking::Blocking;
use super::Backend;
use crate::error::Error;

/// A block-layer [`Error`] as an `embedded-io` error.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IoError(pub Error);

impl core::fmt::Display for IoError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        self.0.fmt(f)
    }
}

impl core::error::Error for IoError {}

impl embedded_io::Error for IoError {
    fn kind(&self) -> ErrorKind {
        match self.0 {
            Error::ReadOnly | Error::PermissionConflict { .. } | Error::ProbedRawHeader => ErrorKind::PermissionDenied,
            Error::OutOfRange { .. } => ErrorKind::WriteZero,
            Error::NoSpace { .. } => ErrorKind::OutOfMemory,
            Error::NotFound => ErrorKind::NotFound,
            Error::Unsupported(_) => ErrorKind::Unsupported,
            Error::BadOption { .. } | Error::BadOptions { .. } => ErrorKind::InvalidInput,
            Error::Device(crate::dev::DeviceError::Timeout) => ErrorKind::TimedOut,
            _ => ErrorKind::Other,
        }
    }
}

impl From<Error> for IoError {
    fn from(e: Error) -> Self {
        Self(e)
    }
}

/// The new position for `pos` from `at` in a node of `size` bytes.
fn seek_to(at: u64, size: u64, pos: SeekFrom) -> Result<u64, IoError> {
    let bad = IoError(Error::BadOption { key: "seek", why: "before the start or past 2^64" });
    match pos {
        SeekFrom::Start(p) => Some(p),
        SeekFrom::End(d) => size.checked_add_signed(d),
        SeekFrom::Current(d) => at.checked_add_signed(d),
    }
    .ok_or(bad)
}

/// A byte stream over `backend` (async): reads and writes at a position that advances.
pub struct Stream<'b, 'g, 'd> {
    backend: &'b Backend<'g, 'd>,
    pos: u64,
}

impl<'b, 'g, 'd> Stream<'b, 'g, 'd> {
    /// A stream at offset 0.
    pub fn new(backend: &'b Backend<'g, 'd>) -> Self {
        Self { backend, pos: 0 }
    }

    /// The position.
    pub fn position(&self) -> u64 {
        self.pos
    }

    /// The bytes a transfer of `want` bytes at the position may move (up to the end).
    fn span(&self, want: usize) -> usize {
        let left = self.backend.size().saturating_sub(self.pos);
        usize::try_from(left).map_or(want, |l| l.min(want))
    }

    async fn read_at(&mut self, buf: &mut [u8]) -> Result<usize, IoError> {
        let n = self.span(buf.len());
        if n > 0 {
            self.backend.read(self.pos, &mut buf[..n]).await?;
            self.pos += n as u64;
        }
        Ok(n)
    }

    async fn write_at(&mut self, buf: &[u8]) -> Result<usize, IoError> {
        let n = self.span(buf.len());
        if n == 0 && !buf.is_empty() {
            let size = self.backend.size();
            return Err(IoError(Error::OutOfRange { offset: self.pos, len: buf.len() as u64, size }));
        }
        if n > 0 {
            self.backend.write(self.pos, &buf[..n]).await?;
            self.pos += n as u64;
        }
        Ok(n)
    }
}

impl ErrorType for Stream<'_, '_, '_> {
    type Error = IoError;
}

impl embedded_io_async::Read for Stream<'_, '_, '_> {
    async fn read(&mut self, buf: &mut [u8]) -> Result<usize, IoError> {
        self.read_at(buf).await
    }
}

impl embedded_io_async::Write for Stream<'_, '_, '_> {
    async fn write(&mut self, buf: &[u8]) -> Result<usize, IoError> {
        self.write_at(buf).await
    }

    async fn flush(&mut self) -> Result<(), IoError> {
        Ok(self.backend.flush().await?)
    }
}

impl embedded_io_async::Seek for Stream<'_, '_, '_> {
    async fn seek(&mut self, pos: SeekFrom) -> Result<u64, IoError> {
        self.pos = seek_to(self.pos, self.backend.size(), pos)?;
        Ok(self.pos)
    }
}

/// A byte stream over a backend for synchronous callers: each call runs the async one to
/// completion through [`Blocking`] (which pumps the devices while it waits).
pub struct BlockingStream<'b, 'g, 'd, 'p> {
    stream: Stream<'b, 'g, 'd>,
    wait: Blocking<'p>,
}

impl<'b, 'g, 'd, 'p> BlockingStream<'b, 'g, 'd, 'p> {
    /// A stream at offset 0 over `backend`, waiting as `wait` says.
    pub fn new(backend: &'b Backend<'g, 'd>, wait: Blocking<'p>) -> Self {
        Self { stream: Stream::new(backend), wait }
    }

    /// The position.
    pub fn position(&self) -> u64 {
        self.stream.pos
    }
}

impl ErrorType for BlockingStream<'_, '_, '_, '_> {
    type Error = IoError;
}

impl embedded_io::Read for BlockingStream<'_, '_, '_, '_> {
    #[inline] // compiled in the caller's crate: see the module docs
    fn read(&mut self, buf: &mut [u8]) -> Result<usize, IoError> {
        let (stream, wait) = (&mut self.stream, self.wait);
        wait.block_on(async { stream.read_at(buf).await.map_err(|e| e.0) }).map_err(IoError)
    }
}

impl embedded_io::Write for BlockingStream<'_, '_, '_, '_> {
    #[inline] // compiled in the caller's crate: see the module docs
    fn write(&mut self, buf: &[u8]) -> Result<usize, IoError> {
        let (stream, wait) = (&mut self.stream, self.wait);
        wait.block_on(async { stream.write_at(buf).await.map_err(|e| e.0) }).map_err(IoError)
    }

    #[inline] // compiled in the caller's crate: see the module docs
    fn flush(&mut self) -> Result<(), IoError> {
        let backend = self.stream.backend;
        self.wait.block_on(backend.flush()).map_err(IoError)
    }
}

impl embedded_io::Seek for BlockingStream<'_, '_, '_, '_> {
    fn seek(&mut self, pos: SeekFrom) -> Result<u64, IoError> {
        self.stream.pos = seek_to(self.stream.pos, self.stream.backend.size(), pos)?;
        Ok(self.stream.pos)
    }
}
