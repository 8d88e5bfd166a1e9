//! Reads and writes through a node that checks its file child against a reference
//! ([`crate::driver::Driver::verify_against`], the `blkverify` filter): a read is served by the
//! file child, read again from the reference a bounce buffer at a time and compared, and the
//! first byte that differs fails it with [`Error::Mismatch`]; writes, write-zeroes and discards
//! go to the file child first and then to the reference.

use super::range::range_op as range_op_one;
use super::walk;
use super::write::write as write_one;
use super::Stack;
use crate::error::{Error, Result};
use crate::io::RangeOp;
use crate::node::{NodeId, Role};

/// The two children of verifying node `node`: (under test, reference).
fn children(s: &Stack<'_, '_>, node: NodeId, role: Role, offset: u64, len: u64) -> Result<(NodeId, NodeId)> {
    let here = s.node(node)?;
    if offset.checked_add(len).is_none_or(|end| end > here.size()) {
        return Err(Error::OutOfRange { offset, len, size: here.size() });
    }
    let test = here.child(Role::File).ok_or(Error::BadGraph("blkverify without its test child"))?;
    let reference = here.child(role).ok_or(Error::BadGraph("blkverify without its reference"))?;
    Ok((test, reference))
}

/// Reads `buf` at `offset` through verifying node `node` (reference in `role`).
pub(crate) async fn read(s: &Stack<'_, '_>, node: NodeId, role: Role, offset: u64, buf: &mut [u8]) -> Result<()> {
    let len = buf.len() as u64;
    let (test, reference) = children(s, node, role, offset, len)?;
    walk::read_request(s, test, offset, buf).await?;
    let mut bounce = s.bounce.take_for_copy(1).await?;
    let other = bounce.get(0).ok_or(Error::NoSpace { what: "bounce buffers" })?;
    let mut done = 0usize;
    while done < buf.len() {
        let n = (buf.len() - done).min(other.len());
        walk::read_request(s, reference, offset + done as u64, &mut other[..n]).await?;
        if let Some(i) = buf[done..done + n].iter().zip(&other[..n]).position(|(a, b)| a != b) {
            return Err(Error::Mismatch { offset, len, at: offset + (done + i) as u64 });
        }
        done += n;
    }
    Ok(())
}

/// Writes `buf` at `offset` through verifying node `node`: to the child under test, then to the
/// reference.
pub(crate) async fn write(s: &Stack<'_, '_>, node: NodeId, role: Role, offset: u64, buf: &[u8]) -> Result<()> {
    let (test, reference) = children(s, node, role, offset, buf.len() as u64)?;
    write_one(s, test, offset, buf).await?;
    write_one(s, reference, offset, buf).await
}

/// Runs `op` through verifying node `node` on both children.
pub(crate) async fn range_op(s: &Stack<'_, '_>, node: NodeId, role: Role, offset: u64, len: u64, op: RangeOp) -> Result<()> {
    let (test, reference) = children(s, node, role, offset, len)?;
    range_op_one(s, test, offset, len, op).await?;
    range_op_one(s, reference, offset, len, op).await
}
