//! Runs of empty layers, remembered: a read that falls through a chain of empty overlays (a
//! fresh snapshot chain, layers nothing has written yet) should not pay a lookup per layer on
//! every request. For a node, [`through_empty`] finds the first node below it, along backing
//! links, that is not an empty layer, and keeps the answer in the node's [`Skip`] until the
//! graph's shape changes ([`crate::io::Io::shape_changed`]: nodes or links added or removed, a
//! format node resized, an empty layer written for the first time; emptiness only ever ends).
//!
//! A layer counts as empty when its driver says so ([`crate::driver::Driver::is_empty`]), it is
//! not a translation-only node and it holds no requests ([`crate::driver::Driver::ADMITS`]).

use crate::node::{NodeId, NodeKind, Role};
use crate::path::Stack;

/// A remembered run of empty layers starting at a node.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Skip {
    /// The shape it was computed under.
    shape: u64,
    /// The first node below the run, and how many layers the run has (0: the node itself is
    /// not empty).
    to: NodeId,
    layers: u8,
    /// The smallest size among the run's layers: past it, some layer ends and reads as zeros,
    /// which the step-by-step walk handles.
    min_size: u64,
}

/// Where a read of `len` bytes at `offset` of `node` lands after the empty layers from `node`
/// down: `Some((node below, layers passed))` if at least one layer is passed and the range lies
/// inside every passed layer; `None` to walk step by step.
pub(crate) fn through_empty(s: &Stack<'_, '_>, node: NodeId, offset: u64, len: u64) -> Option<(NodeId, u8)> {
    let slot = s.skips.get(usize::from(node.index))?;
    let shape = s.io.shape.get();
    let skip = match slot.get() {
        Some(k) if k.shape == shape => k,
        _ => {
            let k = compute(s, node, shape);
            slot.set(Some(k));
            k
        }
    };
    (skip.layers > 0 && offset.checked_add(len).is_some_and(|end| end <= skip.min_size)).then_some((skip.to, skip.layers))
}

/// Follows backing links from `node` through empty layers (at most [`crate::node::MAX_DEPTH`]).
fn compute(s: &Stack<'_, '_>, node: NodeId, shape: u64) -> Skip {
    let mut skip = Skip { shape, to: node, layers: 0, min_size: u64::MAX };
    for _ in 0..crate::node::MAX_DEPTH {
        let Ok(here) = s.node(skip.to) else { break };
        let Ok(Some(state)) = s.state(skip.to) else { break };
        let empty = matches!(here.kind, NodeKind::Driver) && here.pass.is_none() && !state.admits() && state.is_empty();
        let Some(backing) = here.child(Role::Backing).filter(|_| empty) else { break };
        skip.to = backing;
        skip.layers += 1;
        skip.min_size = skip.min_size.min(here.size());
    }
    skip
}
