//! The refcounts stored in the image: read through the refcount table and its blocks one
//! chunk (4 KiB, or a cluster) at a time, with the last chunk kept, and changed in that chunk
//! by a repair (written back before another chunk is read, and by [`Stored::write_back`]).
//! Lookups follow QEMU's `qcow2_get_refcount`: a cluster past the table, or whose table entry
//! is zero, has refcount 0; a block offset that is not cluster-aligned cannot be read.

use crate::error::{Error, Result};
use crate::io::{child_io, flush, Io};
use crate::node::NodeId;

use super::super::refcount::{entry, set_entry};
use super::layout::Layout;

/// Refcount table entry bits that are the block's offset.
const RT_OFFSET: u64 = !0x1ff;

/// What a lookup found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Lookup {
    /// The stored refcount.
    Count(u64),
    /// The refcount block's offset is not cluster-aligned (QEMU: EIO).
    Unreadable,
}

/// Reader and writer of stored refcounts.
pub(crate) struct Stored<'b> {
    buf: &'b mut [u8],
    /// File offset of the chunk in `buf` (`u64::MAX`: none).
    at: u64,
    dirty: bool,
    /// The last refcount table entry read: (index, entry).
    rt: Option<(u64, u64)>,
    /// Chunk writes made.
    pub(crate) writes: u64,
}

impl<'b> Stored<'b> {
    pub(crate) fn new(buf: &'b mut [u8]) -> Self {
        Self {
            buf,
            at: u64::MAX,
            dirty: false,
            rt: None,
            writes: 0,
        }
    }

    /// Forgets what was read (the refcount structure changed; nothing may be unwritten).
    pub(crate) fn reset(&mut self) {
        self.at = u64::MAX;
        self.dirty = false;
        self.rt = None;
    }

    /// The refcount block holding cluster `k`'s entry (0: none) and the entry's index in it.
    async fn block_of(
        &mut self,
        io: &Io<'_, '_>,
        file: NodeId,
        lay: &Layout,
        k: u64,
    ) -> Result<Option<(u64, u64)>> {
        let index = k >> lay.refblock_bits;
        if index >= lay.rt_entries {
            return Ok(Some((0, 0)));
        }
        let e = match self.rt {
            Some((i, e)) if i == index => e,
            _ => {
                let mut b = [0u8; 8];
                child_io::read_upto(
                    io,
                    file,
                    lay.header.refcount_table_offset + index * 8,
                    &mut b,
                )
                .await?;
                let e = u64::from_be_bytes(b);
                self.rt = Some((index, e));
                e
            }
        };
        let block = e & RT_OFFSET;
        if block & (lay.cs - 1) != 0 {
            return Ok(None);
        }
        Ok(Some((block, k & ((1u64 << lay.refblock_bits) - 1))))
    }

    /// Makes `buf` hold the chunk of block `block` with entry `index`; returns the entry's index
    /// in the chunk.
    async fn load(
        &mut self,
        io: &Io<'_, '_>,
        file: NodeId,
        lay: &Layout,
        block: u64,
        index: u64,
    ) -> Result<u64> {
        let chunk = lay.chunk() as u64;
        let per_chunk = (chunk * 8) >> lay.refcount_order;
        let at = block + index / per_chunk * chunk;
        if at != self.at {
            self.write_back(io, file, lay).await?;
            self.at = u64::MAX;
            child_io::read_upto(io, file, at, &mut self.buf[..chunk as usize]).await?;
            self.at = at;
        }
        Ok(index % per_chunk)
    }

    /// The stored refcount of cluster `k`.
    pub(crate) async fn get(
        &mut self,
        io: &Io<'_, '_>,
        file: NodeId,
        lay: &Layout,
        k: u64,
    ) -> Result<Lookup> {
        let Some((block, index)) = self.block_of(io, file, lay, k).await? else {
            return Ok(Lookup::Unreadable);
        };
        if block == 0 {
            return Ok(Lookup::Count(0));
        }
        let i = self.load(io, file, lay, block, index).await?;
        Ok(Lookup::Count(
            entry(&self.buf[..lay.chunk()], lay.refcount_order, i).unwrap_or(0),
        ))
    }

    /// Stores `v` as cluster `k`'s refcount (in the chunk; written back later). False if no
    /// refcount block holds the entry: only a rebuild could store it.
    pub(crate) async fn set(
        &mut self,
        io: &Io<'_, '_>,
        file: NodeId,
        lay: &Layout,
        k: u64,
        v: u64,
    ) -> Result<bool> {
        let Some((block, index)) = self.block_of(io, file, lay, k).await? else {
            return Ok(false);
        };
        if block == 0 {
            return Ok(false);
        }
        let i = self.load(io, file, lay, block, index).await?;
        let chunk = lay.chunk();
        if set_entry(&mut self.buf[..chunk], lay.refcount_order, i, v).is_none() {
            return Ok(false);
        }
        self.dirty = true;
        Ok(true)
    }

    /// True if a refcount block holds cluster `k`'s entry (false also where the table's entry
    /// for it cannot be read).
    pub(crate) async fn covered(&mut self, io: &Io<'_, '_>, file: NodeId, lay: &Layout, k: u64) -> Result<bool> {
        Ok(matches!(self.block_of(io, file, lay, k).await?, Some((block, _)) if block != 0))
    }

    /// Puts a new refcount block at cluster `at` for cluster `k`, whose refcount table entry is
    /// free (QEMU's `alloc_refcount_block`): the block counts itself if it lies in the range it
    /// describes, else its count goes into the block that does; it is written zeroed but for
    /// that count and made stable, then linked into the table, stable too. `at` must be a
    /// cluster the stored refcounts call free. `NoSpace` where QEMU would grow the refcount
    /// table (`k` past it), which this does not.
    pub(crate) async fn add_block(&mut self, io: &Io<'_, '_>, file: NodeId, lay: &Layout, k: u64, at: u64) -> Result<()> {
        let index = k >> lay.refblock_bits;
        if index >= lay.rt_entries {
            return Err(Error::NoSpace { what: "refcount table (growing it during a check is not supported)" });
        }
        let describes_itself = at >> lay.refblock_bits == index;
        if !describes_itself && !self.set(io, file, lay, at, 1).await? {
            return Err(Error::NoSpace { what: "no refcount block covers the new refcount block" });
        }
        self.write_back(io, file, lay).await?;
        let start = at * lay.cs;
        if start + lay.cs > child_io::size(io, file)? {
            child_io::grow(io, file, start + lay.cs)?;
        }
        child_io::write_zeroes(io, file, start, lay.cs).await?;
        if describes_itself {
            // The 8-byte word holding the block's own entry.
            let bit = (at & ((1u64 << lay.refblock_bits) - 1)) << lay.refcount_order;
            let word = bit / 64 * 8;
            let mut w = [0u8; 8];
            set_entry(&mut w, lay.refcount_order, (bit - word * 8) >> lay.refcount_order, 1)
                .ok_or(Error::BadGraph("refcount entry outside its word"))?;
            child_io::write(io, file, start + word, &w).await?;
        }
        flush::flush_leaves(io, file).await?;
        child_io::write(io, file, lay.header.refcount_table_offset + index * 8, &start.to_be_bytes()).await?;
        flush::flush_leaves(io, file).await?;
        self.reset();
        Ok(())
    }

    /// Writes the chunk back if a repair changed it.
    pub(crate) async fn write_back(
        &mut self,
        io: &Io<'_, '_>,
        file: NodeId,
        lay: &Layout,
    ) -> Result<()> {
        if self.dirty && self.at != u64::MAX {
            let chunk = lay.chunk();
            // A block the file ends inside (QEMU writes such files) grows by the write.
            if self.at + chunk as u64 > child_io::size(io, file)? {
                child_io::grow(io, file, self.at + chunk as u64)?;
            }
            child_io::write(io, file, self.at, &self.buf[..chunk]).await?;
            self.writes += 1;
        }
        self.dirty = false;
        Ok(())
    }
}
