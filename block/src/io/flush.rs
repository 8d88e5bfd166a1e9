//! Flush generations at leaves (QEMU's `write_gen`, `flushed_gen`, `flush_queue`).
//!
//! At a leaf, a flush with no write completed since the last successful flush returns at once;
//! a flush that finds another one running waits for it and then checks again, so any number of
//! concurrent flushes cost one device flush (two if writes completed in between). This is what
//! a format's own write-back uses on its file child; a whole flush (drivers' caches first, then
//! leaves) is [`crate::path::flush`].

use core::cell::Cell;

use crate::dev::{DeviceFeatures, DeviceOp};
use crate::error::{Error, Result};
use crate::io::Io;
use crate::node::{NodeId, NodeKind, Perm, Role, MAX_DEPTH};
use crate::io::leaf::transfer;
use crate::io::wait_until;

/// Flushes every leaf below `root` (and `root` itself if it is one), without asking formats
/// to write back their caches: what a format's own write-back uses on its file child.
pub(crate) async fn flush_leaves(io: &Io<'_, '_>, root: NodeId) -> Result<()> {
    flush_leaves_in(io, &below(io, root)?).await
}

/// Flushes every leaf below `file` (a format's file child) and below the data-file child of the
/// format above it, if it has one: what the format's table write-back depends on, as guest data
/// written to an external data file must be stable before a table entry points at it
/// (`docs/ARCHITECTURE.md` rule 2).
pub(crate) async fn flush_file_and_data(io: &Io<'_, '_>, file: NodeId) -> Result<()> {
    flush_leaves(io, file).await?;
    let owner = io.parents(file).find(|(_, c)| c.role == Role::File).map(|(p, _)| p);
    let data = match owner {
        Some(p) => io.node(p)?.child(Role::DataFile),
        None => None,
    };
    match data {
        Some(d) => flush_leaves(io, d).await,
        None => Ok(()),
    }
}

/// Flushes the leaves among `nodes`.
pub(crate) async fn flush_leaves_in(io: &Io<'_, '_>, nodes: &[NodeId]) -> Result<()> {
    if io.has_debug() {
        // A flush passes the blkdebug nodes among them (QEMU's `blkdebug_co_flush`).
        for &id in nodes {
            io.debug_check(id, crate::io::debug::IoType::Flush, 0, 0).await?;
        }
    }
    for &id in nodes {
        if let NodeKind::Leaf(_) = io.node(id)?.kind {
            flush_leaf(io, id).await?;
        }
    }
    Ok(())
}

/// `root` and every node below it that it may write, parents before children, without
/// recursion: as QEMU's `bdrv_co_flush`, only children attached with a write permission are
/// followed. A read-only child (every backing file, every file of a read-only node) has nothing
/// to write back and its leaf nothing to flush, so a backing chain of any depth adds nothing
/// here: the list is the writable top, its file and data file, and the translation nodes
/// between.
pub(crate) fn below(io: &Io<'_, '_>, root: NodeId) -> Result<heapless::Vec<NodeId, { 3 * MAX_DEPTH }>> {
    // Breadth-first, parents before children, without recursion.
    // A stack of MAX_DEPTH writable nodes each with a file (and maybe a data file) below it.
    let mut order: heapless::Vec<NodeId, { 3 * MAX_DEPTH }> = heapless::Vec::new();
    order.push(root).map_err(|_| Error::BadGraph("graph too large to flush"))?;
    let mut i = 0;
    let writes = Perm::WRITE.union(Perm::WRITE_UNCHANGED);
    while let Some(&id) = order.get(i) {
        i += 1;
        for child in &io.node(id)?.children {
            if child.attachment.perm.intersects(writes) && !order.contains(&child.node) {
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

async fn flush_leaf(io: &Io<'_, '_>, id: NodeId) -> Result<()> {
    let node = io.node(id)?;
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
            transfer(io, dev, DeviceOp::Flush, 0, &[]).await?;
        }
        state.flushed_gen.set(state.flushed_gen.get().max(generation));
        return Ok(());
    }
}
