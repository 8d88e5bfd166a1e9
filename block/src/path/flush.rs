//! Flush and clean close of a whole subgraph: every driver node writes its caches back (or
//! closes cleanly) parents first, then every leaf flushes with generations
//! ([`crate::io::flush`]), so a completed flush means everything completed before it is stable
//! (rule 5 in `docs/ARCHITECTURE.md`).

use super::Stack;
use crate::error::Result;
use crate::io::flush::{below, flush_leaves_in};
use crate::node::NodeId;

/// Flushes `root` and everything below it.
pub(crate) async fn flush(s: &Stack<'_, '_>, root: NodeId) -> Result<()> {
    let order = below(s, root)?;
    for &id in &order {
        if let Some(state) = s.state(id)? {
            state.flush_caches(s, id).await?;
        }
    }
    flush_leaves_in(s, &order).await
}

/// Closes `root` and everything below it cleanly: drivers write back and mark their images
/// clean (parents first), then every leaf flushes.
pub(crate) async fn close(s: &Stack<'_, '_>, root: NodeId) -> Result<()> {
    let order = below(s, root)?;
    for &id in &order {
        if let Some(state) = s.state(id)? {
            state.close(s, id).await?;
        }
    }
    flush_leaves_in(s, &order).await
}
