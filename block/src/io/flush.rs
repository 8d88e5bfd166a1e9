//! Flush with generations (QEMU's `write_gen`, `flushed_gen`, `flush_queue`).
//!
//! Flushing a node flushes every leaf below it. At a leaf, a flush with no write completed since
//! the last successful flush returns at once; a flush that finds another one running waits for
//! it and then checks again, so any number of concurrent flushes cost one device flush (two if
//! writes completed in between). Formats with caches (qcow2) write them back before their
//! children flush, parents before children (DESIGN.md rule 5).

use core::cell::Cell;

use crate::dev::{DeviceFeatures, DeviceOp};
use crate::error::{Error, Result};
use crate::graph::{Graph, NodeId, NodeKind, MAX_DEPTH};
use crate::io::leaf::transfer;
use crate::io::wait_until;

/// Flushes `root` and everything below it: format nodes write their caches back (parents
/// first), then every leaf flushes.
pub(crate) async fn flush<const N: usize, const T: usize>(graph: &Graph<'_, N, T>, root: NodeId) -> Result<()> {
    let order = below(graph, root)?;
    for &id in &order {
        if let NodeKind::Format(state) = &graph.node(id)?.kind {
            state.flush_caches(graph, id).await?;
        }
    }
    flush_leaves_in(graph, &order).await
}

/// Closes `root` and everything below it cleanly: formats write back and mark their images
/// clean (parents first), then every leaf flushes.
pub(crate) async fn close<const N: usize, const T: usize>(graph: &Graph<'_, N, T>, root: NodeId) -> Result<()> {
    let order = below(graph, root)?;
    for &id in &order {
        if let NodeKind::Format(state) = &graph.node(id)?.kind {
            state.close(graph, id).await?;
        }
    }
    flush_leaves_in(graph, &order).await
}

/// Flushes every leaf below `root` (and `root` itself if it is one), without asking formats
/// to write back their caches: what a format's own write-back uses on its file child.
pub(crate) async fn flush_leaves<const N: usize, const T: usize>(graph: &Graph<'_, N, T>, root: NodeId) -> Result<()> {
    flush_leaves_in(graph, &below(graph, root)?).await
}

/// Flushes the leaves among `nodes`.
async fn flush_leaves_in<const N: usize, const T: usize>(graph: &Graph<'_, N, T>, nodes: &[NodeId]) -> Result<()> {
    for &id in nodes {
        if let NodeKind::Leaf(_) = graph.node(id)?.kind {
            flush_leaf(graph, id).await?;
        }
    }
    Ok(())
}

/// `root` and every node below it, parents before children, without recursion.
fn below<const N: usize, const T: usize>(graph: &Graph<'_, N, T>, root: NodeId) -> Result<heapless::Vec<NodeId, { 3 * MAX_DEPTH }>> {
    // Breadth-first, parents before children, without recursion.
    // A chain of MAX_DEPTH formats each with a file (and maybe a data file) below it.
    let mut order: heapless::Vec<NodeId, { 3 * MAX_DEPTH }> = heapless::Vec::new();
    order.push(root).map_err(|_| Error::BadGraph("graph too large to flush"))?;
    let mut i = 0;
    while let Some(&id) = order.get(i) {
        i += 1;
        for child in &graph.node(id)?.children {
            if !order.contains(&child.node) {
                order.push(child.node).map_err(|_| Error::BadGraph("graph too large to flush"))?;
            }
        }
    }
    Ok(order)
}

/// Clears a node's `flushing` flag even if the flush future is dropped.
struct Flushing<'a>(&'a Cell<bool>);

impl Drop for Flushing<'_> {
    fn drop(&mut self) {
        self.0.set(false);
    }
}

async fn flush_leaf<const N: usize, const T: usize>(graph: &Graph<'_, N, T>, id: NodeId) -> Result<()> {
    let node = graph.node(id)?;
    let dev = node.device().ok_or(Error::BadGraph("flush_leaf on a format node"))?;
    let state = &node.flush;
    loop {
        let generation = state.write_gen.get();
        if state.flushed_gen.get() >= generation {
            return Ok(());
        }
        if state.flushing.get() {
            // Someone else is flushing: wait for them, then look again.
            wait_until(|| !state.flushing.get()).await;
            continue;
        }
        state.flushing.set(true);
        let _running = Flushing(&state.flushing);
        if dev.info().features.contains(DeviceFeatures::FLUSH) && !node.read_only {
            state.issued.set(state.issued.get() + 1);
            transfer(graph, dev, DeviceOp::Flush, 0, &[]).await?;
        }
        state.flushed_gen.set(state.flushed_gen.get().max(generation));
        return Ok(());
    }
}
