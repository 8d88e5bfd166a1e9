//! Making a read-write qcow2 node's metadata stable (`docs/ARCHITECTURE.md` rule 5): flush, the pending
//! frees, and the clean close.
//!
//! A flush writes the node's dirty slices back in dependency order — refcount slices, a flush of
//! the file (every data write completed so far becomes stable with it), L2 and L1 slices — then
//! flushes the file again, so every table change is stable. Only then do the clusters those
//! changes stopped referencing get their refcounts dropped (for guest discards, after a discard
//! passed to the file has completed, so it cannot land on a reallocated cluster): they stay
//! dirty in the cache until the next flush, so a crash in between leaks them at worst. With
//! lazy refcounts the first flush is skipped: the dirty bit tells a reader that refcounts may
//! lag.

use crate::error::Result;
use crate::io::Io;
use crate::node::NodeId;
use crate::io::events::Event;
use crate::io::{child_io, flush};

use super::state::PendingFree;
use super::Qcow2;

impl Qcow2 {
    /// Writes everything back and makes it stable; then applies the frees that were waiting for
    /// it. A no-op on a read-only node.
    pub(crate) async fn flush_caches(&self, io: &Io<'_, '_>, node: NodeId) -> Result<()> {
        if !self.w.writable {
            return Ok(());
        }
        let file = Self::file(io, node)?;
        // Frees whose table changes are in the cache now: the write-back below covers them.
        let frees = core::mem::take(&mut *self.w.pending.borrow_mut());
        let stable = async {
            io.event(node, Event::FlushToOs).await?;
            // Ordered also with lazy refcounts: the flush before the table slices is what makes
            // guest and copy-on-write data stable before an L2 entry points at it (rule 2; QEMU's
            // `perform_cow` makes the L2 cache depend on a flush whatever the refcount mode).
            io.meta.write_back(io, file).await?;
            io.event(node, Event::FlushToDisk).await?;
            flush::flush_leaves(io, file).await
        }
        .await;
        if let Err(e) = stable {
            // Not stable: they wait for the next flush, ahead of frees queued meanwhile (what no
            // longer fits is dropped: a leak, never a early free).
            let mut pending = self.w.pending.borrow_mut();
            let later = core::mem::replace(&mut *pending, frees);
            for f in later {
                let _ = pending.push(f);
            }
            return Err(e);
        }
        self.apply_frees(io, file, &frees).await
    }

    /// Drops the refcounts of freed clusters (their table changes are stable).
    ///
    /// A cluster whose last reference goes is discarded in the file (if asked) *before* its
    /// refcount drops: once the refcount is 0 an allocation may take the cluster and write
    /// there, and a discard still in flight would then punch that new data out (requests in
    /// flight together complete in any order). QEMU gets the same order from its lock:
    /// `update_refcount` issues the discards before an allocation can run.
    async fn apply_frees(&self, io: &Io<'_, '_>, file: NodeId, frees: &[PendingFree]) -> Result<()> {
        let cs = self.cluster_size();
        for f in frees {
            let first = f.host >> self.cluster_bits;
            let last = (f.host + f.len.max(1) - 1) >> self.cluster_bits;
            for c in first..=last {
                self.event_at(io, file, Event::ClusterFree).await?;
                // Refcount 1: this free takes the last reference. Nothing can add one meanwhile
                // (only free clusters are allocated), so the cluster is still ours until the
                // drop below.
                if f.discard && self.refcount(io, file, c * cs).await? == 1 {
                    // Advisory, as QEMU's pass-discard-request: a failure changes nothing.
                    let _ = child_io::discard(io, file, c * cs, cs).await;
                }
                if self.change_refcount(io, file, c, -1).await? != 0 {
                    continue;
                }
                io.meta.forget_range(file, c * cs, (c + 1) * cs);
                // A free cluster is no place to pack compressed payloads into.
                if self.w.compressed_tail.get() >> self.cluster_bits == c {
                    self.w.compressed_tail.set(0);
                }
                if c < self.w.free_hint.get() {
                    self.w.free_hint.set(c);
                }
            }
        }
        Ok(())
    }

    /// Queues a free for after the next flush; runs one first if the list is full.
    pub(crate) async fn free_later(&self, io: &Io<'_, '_>, node: NodeId, free: PendingFree) -> Result<()> {
        loop {
            {
                let mut pending = self.w.pending.borrow_mut();
                if let Some(last) = pending.last_mut() {
                    let contiguous = last.host + last.len == free.host && last.len.is_multiple_of(self.cluster_size());
                    if contiguous && last.discard == free.discard && free.len.is_multiple_of(self.cluster_size()) {
                        last.len += free.len;
                        return Ok(());
                    }
                }
                if pending.push(free).is_ok() {
                    return Ok(());
                }
            }
            self.flush_caches(io, node).await?;
        }
    }

    /// A clean close: everything written back and stable, waiting frees applied and written, the
    /// dirty bit (lazy refcounts) cleared. After it `qemu-img check` finds no leaks.
    pub(crate) async fn close(&self, io: &Io<'_, '_>, node: NodeId) -> Result<()> {
        if !self.w.writable {
            return Ok(());
        }
        // The first round applies the frees, which dirties refcounts; the second writes them.
        self.flush_caches(io, node).await?;
        self.flush_caches(io, node).await?;
        let file = Self::file(io, node)?;
        self.mark_clean(io, file).await
    }
}
