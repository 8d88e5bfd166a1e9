//! A user's requests as they enter the graph at a node: most go straight to the walk
//! ([`super::walk`]), the write executor ([`super::write`]) or range operations
//! ([`super::range`]); through a filter that copies what it reads ([`super::cor`]) or checks
//! its child against a reference ([`super::verify`]), they go there first. Kept apart from the
//! modules it calls so that none of them calls back up.

#[cfg(feature = "copy-on-read")]
use super::cor;
#[cfg(feature = "blkverify")]
use super::verify;
use super::{range, walk, write, Stack};
use crate::error::Result;
use crate::io::RangeOp;
use crate::node::NodeId;

/// Reads `buf` at byte `offset` of `node`.
pub(crate) async fn read(s: &Stack<'_, '_>, node: NodeId, offset: u64, buf: &mut [u8]) -> Result<()> {
    if let Some(state) = s.state(node)? {
        #[cfg(feature = "copy-on-read")]
        if let Some(depth) = state.copy_on_read() {
            return cor::read(s, node, depth, offset, buf).await;
        }
        #[cfg(feature = "blkverify")]
        if let Some(role) = state.verify_against() {
            return verify::read(s, node, role, offset, buf).await;
        }
        let _ = state; // without either filter, only the walk below
    }
    walk::read_request(s, node, offset, buf).await
}

/// [`read`] done at once, with no await, when it can be ([`walk::read_request_now`]); `None`
/// otherwise, and always through a filter that copies or compares what it reads.
pub(crate) fn read_now(s: &Stack<'_, '_>, node: NodeId, offset: u64, buf: &mut [u8]) -> Option<Result<()>> {
    if let Some(state) = s.state(node).ok()? {
        if state.copy_on_read().is_some() || state.verify_against().is_some() {
            return None;
        }
    }
    walk::read_request_now(s, node, offset, buf)
}

/// Writes `buf` at byte `offset` of `node`.
pub(crate) async fn write(s: &Stack<'_, '_>, node: NodeId, offset: u64, buf: &[u8]) -> Result<()> {
    #[cfg(feature = "blkverify")]
    if let Some(role) = s.state(node)?.and_then(|state| state.verify_against()) {
        return verify::write(s, node, role, offset, buf).await;
    }
    write::write(s, node, offset, buf).await
}

/// Runs `op` over `len` bytes at `offset` of `node`.
pub(crate) async fn range_op(s: &Stack<'_, '_>, node: NodeId, offset: u64, len: u64, op: RangeOp) -> Result<()> {
    #[cfg(feature = "blkverify")]
    if let Some(role) = s.state(node)?.and_then(|state| state.verify_against()) {
        return verify::range_op(s, node, role, offset, len, op).await;
    }
    range::range_op(s, node, offset, len, op).await
}
