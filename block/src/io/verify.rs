//! `blkverify` below a format (QEMU: `driver=qcow2,file.driver=blkverify,file.test.…,
//! file.raw.…`): a format's own I/O on its file child — metadata, data it writes through the
//! child — passes the blkverify node by its [`crate::node::Pass`] to the image under test, as
//! [`crate::io::child_io`] sends it; a node whose gate is [`crate::node::Gate::Verify`] has
//! that I/O checked against its reference child ([`crate::node::Role::Reference`], QEMU's
//! `raw`) as QEMU's `blkverify_co_preadv`/`_pwritev` check every request reaching the node:
//!
//! - a read is read again from the reference, a bounce buffer at a time, and the first byte
//!   that differs fails it with [`Error::Mismatch`] (the request's offset and length at the
//!   blkverify node, and the differing byte's offset: QEMU's `blkverify: read offset=…
//!   bytes=… contents mismatch at offset …`);
//! - writes, write-zeroes and discards are repeated on the reference after the image under
//!   test took them, and the reference grows with the image;
//! - flushes go to the image under test only (QEMU: "the raw file is not important").
//!
//! Data reads the walk resolves through such a node are compared the same way
//! ([`crate::path`]'s walk remembers the node it passed). Below a format, the reference must be
//! translation-only down to a leaf (a file, or a raw window over one); the [`crate::path`]
//! version for a blkverify node at the top of a graph reads the reference through the walk.
//!
//! Here: the comparison, given where the reference's bytes are; [`crate::io::child_io`] finds
//! the node on the way and resolves its reference.

use crate::error::{Error, Result};
use crate::io::leaf::{self, Buf};
use crate::io::Io;
use crate::node::NodeId;

/// A verifying node met on a request's way down: its reference child, and the request's offset
/// at the node (where the reference holds the same bytes).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Verifier {
    /// The node's reference child.
    pub(crate) reference: NodeId,
    /// The request's offset at the verifying node.
    pub(crate) offset: u64,
}

/// Compares `buf`, just read at `offset` of a verifying node, with the same bytes of its
/// reference, which lie at `at` of leaf `leaf`.
pub(crate) async fn compare(
    io: &Io<'_, '_>,
    leaf: NodeId,
    at: u64,
    offset: u64,
    buf: &[u8],
) -> Result<()> {
    let len = buf.len() as u64;
    // Taken as a copy takes them: the reference reads' own bounces always find one.
    let mut bounce = io.bounce.take_for_copy(1).await?;
    let other = bounce.get(0).ok_or(Error::NoSpace {
        what: "bounce buffers",
    })?;
    let mut done = 0usize;
    while done < buf.len() {
        let n = (buf.len() - done).min(other.len());
        leaf::rw(io, leaf, at + done as u64, Buf::Read(&mut other[..n])).await?;
        if let Some(i) = buf[done..done + n]
            .iter()
            .zip(&other[..n])
            .position(|(a, b)| a != b)
        {
            return Err(Error::Mismatch {
                offset,
                len,
                at: offset + (done + i) as u64,
            });
        }
        done += n;
    }
    Ok(())
}
