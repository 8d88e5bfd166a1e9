//! Running a parsed [`Command`] on a backend: data moves through the caller's buffer in pieces
//! of its size; the report goes to a [`fmt::Write`] as qemu-io prints it.

use core::fmt;

use super::parse::{Command, Fill};
use super::report::Stats;
use crate::backend::Backend;
use crate::error::Error;

/// How a command ended (qemu-io exits 1 if any command failed).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    /// Done (and, for `read -P`, verified).
    Ok,
    /// The request failed or the pattern did not match; the message was printed.
    Failed,
}

/// Runs `cmd` on `backend` with `buf` as the data buffer (requests larger than it are split into
/// pieces of its size), printing qemu-io's lines to `out`; `clock` gives nanoseconds for the
/// statistics line. Errors writing to `out` are ignored.
pub async fn run(
    backend: &Backend<'_, '_>,
    cmd: &Command,
    buf: &mut [u8],
    out: &mut dyn fmt::Write,
    clock: fn() -> u64,
) -> Status {
    let start = clock();
    let (verb, offset, len, quiet, result) = match *cmd {
        Command::Flush => {
            // qemu-io's `flush` ignores the result (`blk_flush(blk); return 0;`): nothing
            // printed, and the run's exit status does not change.
            let _ = backend.flush().await;
            return Status::Ok;
        }
        Command::Read { offset, len, pattern, quiet } => ("read", offset, len, quiet, read(backend, offset, len, pattern, buf).await),
        Command::Write { offset, len, fill: Fill::Zeroes { unmap }, quiet } => {
            ("wrote", offset, len, quiet, backend.write_zeroes(offset, len, unmap).await.map(|()| true))
        }
        Command::Write { offset, len, fill: Fill::Pattern(p), quiet } => ("wrote", offset, len, quiet, write(backend, offset, len, p, buf).await),
        Command::Discard { offset, len, quiet } => ("discard", offset, len, quiet, backend.discard(offset, len).await.map(|()| true)),
    };
    let stats = Stats { bytes: len, ops: 1, ns: clock().saturating_sub(start) };
    match result {
        Err(e) => {
            let _ = writeln!(out, "{} failed: {}", cmd.name(), Errno(&e));
            Status::Failed
        }
        Ok(matched) => {
            if !matched {
                // qemu-io names the request, not the first differing byte.
                let _ = writeln!(out, "Pattern verification failed at offset {offset}, {len} bytes");
            }
            if !quiet {
                let _ = stats.write_report(out, verb, offset);
            }
            if matched {
                Status::Ok
            } else {
                Status::Failed
            }
        }
    }
}

/// Reads `len` bytes at `offset` piece by piece; true if every byte equals `pattern` (or there
/// is none).
async fn read(
    backend: &Backend<'_, '_>,
    offset: u64,
    len: u64,
    pattern: Option<u8>,
    buf: &mut [u8],
) -> Result<bool, Error> {
    let mut matched = true;
    let mut done = 0u64;
    while done < len {
        let piece = piece(buf, len - done)?;
        backend.read(offset + done, piece).await?;
        if let Some(p) = pattern {
            matched &= piece.iter().all(|&b| b == p);
        }
        done += piece.len() as u64;
    }
    if len == 0 {
        backend.read(offset, &mut []).await?;
    }
    Ok(matched)
}

/// Writes `len` bytes of `pattern` at `offset` piece by piece.
async fn write(
    backend: &Backend<'_, '_>,
    offset: u64,
    len: u64,
    pattern: u8,
    buf: &mut [u8],
) -> Result<bool, Error> {
    let fill = buf.len().min(usize::try_from(len).unwrap_or(usize::MAX));
    buf[..fill].fill(pattern);
    let mut done = 0u64;
    while done < len {
        let piece = piece(buf, len - done)?;
        backend.write(offset + done, piece).await?;
        done += piece.len() as u64;
    }
    if len == 0 {
        backend.write(offset, &[]).await?;
    }
    Ok(true)
}

/// The first `min(remaining, buf.len())` bytes of `buf`; an empty buffer is an error.
fn piece(buf: &mut [u8], remaining: u64) -> Result<&mut [u8], Error> {
    if buf.is_empty() {
        return Err(Error::NoSpace { what: "data buffer" });
    }
    let n = buf.len().min(usize::try_from(remaining).unwrap_or(usize::MAX));
    Ok(&mut buf[..n])
}

/// An error as qemu-io prints it (`strerror` of the errno QEMU's block layer would return).
struct Errno<'e>(&'e Error);

impl fmt::Display for Errno<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Error::OutOfRange { .. } | Error::Device(_) => f.write_str("Input/output error"),
            Error::ReadOnly => f.write_str("Operation not permitted"),
            Error::Unsupported(_) => f.write_str("Operation not supported"),
            Error::Injected { errno } => match super::errno::strerror(i32::from(*errno)) {
                Some(text) => f.write_str(text),
                None => write!(f, "Unknown error {errno}"),
            },
            other => write!(f, "{other}"),
        }
    }
}
