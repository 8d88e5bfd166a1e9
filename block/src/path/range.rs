//! Write-zeroes and discard: down translation-only nodes to a leaf (where [`crate::io::zero`]
//! does them with the device's offloads and fallbacks), or step by step at a driver node,
//! which changes its metadata and asks for zeros as data where its metadata cannot say "zero".

use super::write::{descend, write_planned};
use super::{walk, Stack};
use crate::driver::RangeStep;
use crate::error::{Error, Result};
use crate::io::tracked::ReqKind;
use crate::io::zero::leaf_range_op;
use crate::io::RangeOp;
use crate::node::NodeId;

/// A block of zeros for writing zeros as data.
static ZEROS: [u8; 4096] = [0; 4096];

/// Runs `op` over `len` bytes at `offset` of `node` (a verifying filter's second run aside:
/// [`super::request`]).
pub(crate) async fn range_op(s: &Stack<'_, '_>, node: NodeId, offset: u64, len: u64, op: RangeOp) -> Result<()> {
    let kind = if op == RangeOp::Discard { ReqKind::Discard } else { ReqKind::Write };
    let (node, offset) = descend(s, node, offset, len, kind).await?;
    let Some(state) = s.state(node)? else { return leaf_range_op(s, node, offset, len, op).await };
    if state.admits() {
        state.admit(s, node, kind, offset, len).await?;
    }
    let _request = state.begin_write(s, node, kind, offset, len).await?;
    let end = offset + len;
    let mut pos = offset;
    while pos < end {
        let n = match state.plan_range(s, node, pos, end, op).await? {
            RangeStep::Done { len } => len,
            RangeStep::AsData { len } => {
                zeros_as_data(s, node, pos, pos + len).await?;
                len
            }
        };
        if n == 0 {
            return Err(Error::BadGraph("a driver planned an empty range step"));
        }
        pos += n;
    }
    Ok(())
}

/// Writes zeros as data over `[from, to)` of driver node `node` where it does not read as zeros
/// already (QEMU writes partial units of a write-zeroes this way).
async fn zeros_as_data(s: &Stack<'_, '_>, node: NodeId, from: u64, to: u64) -> Result<()> {
    let to = to.min(s.node(node)?.size());
    if from >= to || walk::reads_zero(s, node, from, to).await? {
        return Ok(());
    }
    let state = s.driver(node)?;
    let mut at = from;
    while at < to {
        let n = ((to - at) as usize).min(ZEROS.len());
        write_planned(s, node, state, at, &ZEROS[..n]).await?;
        at += n as u64;
    }
    Ok(())
}
