//! Flush and clean close of a whole subgraph: every driver node writes its caches back (or
//! closes cleanly) parents first, then every leaf flushes with generations
//! ([`crate::io::flush`]), so a completed flush means everything completed before it is stable
//! (rule 5 in `docs/ARCHITECTURE.md`).

use super::Stack;
use crate::error::Result;
use crate::io::flush::{below, flush_leaves_in};
use crate::node::NodeId;

/// What each driver node does before the leaves flush.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Step {
    /// Write caches back.
    Flush,
    /// Write back and mark the image clean.
    Close,
}

/// Flushes `root` and everything below it.
pub(crate) async fn flush(s: &Stack<'_, '_>, root: NodeId) -> Result<()> {
    finish(s, root, Step::Flush).await
}

/// Closes `root` and everything below it cleanly: drivers write back and mark their images
/// clean (parents first), then every leaf flushes.
pub(crate) async fn close(s: &Stack<'_, '_>, root: NodeId) -> Result<()> {
    finish(s, root, Step::Close).await
}

async fn finish(s: &Stack<'_, '_>, root: NodeId, step: Step) -> Result<()> {
    let order = below(s, root)?;
    for &id in &order {
        if let Some(state) = s.state(id)? {
            match step {
                Step::Flush => state.flush_caches(s, id).await?,
                Step::Close => state.close(s, id).await?,
            }
        }
    }
    flush_leaves_in(s, &order).await
}
