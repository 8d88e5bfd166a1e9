//! What a qcow2 node opened read-write keeps besides its geometry: the allocation lock, where
//! the next free-cluster search starts, clusters waiting to be freed, and the header flags it
//! maintains (dirty, corrupt, autoclear). Also the checks a read-write open makes and the header
//! field writes.
//!
//! **Frees wait.** A cluster that an L2 change stops referencing (a copy-on-write of a shared or
//! compressed cluster, a discard, an unmapping write-zeroes) is put on the pending list, not
//! freed at once: its refcount drops only after the change is stable (written back and
//! flushed), so a crash can never leave a table pointing at a cluster that was reused or whose
//! count is too low (`docs/ARCHITECTURE.md` rules 1 and 3; QEMU orders the same with cache dependencies).
//! The list is fixed-size; when it is full, the writer runs a write-back that empties it.

use core::cell::{Cell, RefCell};

use crate::error::{Error, Result};
use crate::io::Io;
use crate::node::NodeId;
use crate::io::{child_io, flush, wait_until};

use super::header::{autoclear, compat, incompat, Header};
use super::Qcow2;

/// Clusters (runs) waiting to be freed per node before a write-back is forced.
pub const MAX_PENDING_FREES: usize = 64;

/// Header field offsets (`qcow2.txt`, "Header").
pub(crate) mod field {
    /// Virtual size (u64).
    pub const SIZE: u64 = 24;
    /// L1 entries (u32), followed by the L1 offset (u64).
    pub const L1_SIZE: u64 = 36;
    /// Refcount table offset (u64), followed by its clusters (u32).
    pub const REFCOUNT_TABLE: u64 = 48;
    /// Incompatible features (u64).
    pub const INCOMPATIBLE: u64 = 72;
    /// Autoclear features (u64).
    pub const AUTOCLEAR: u64 = 88;
}

/// A run of host clusters to free once the change that dropped them is stable.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct PendingFree {
    /// First host byte (cluster-aligned, or a compressed cluster's first byte).
    pub(crate) host: u64,
    /// Bytes (whole clusters, or a compressed cluster's size).
    pub(crate) len: u64,
    /// Pass a discard down to the file once freed (a guest discard or unmap).
    pub(crate) discard: bool,
}

/// The write state of one qcow2 node.
#[derive(Debug)]
pub struct WriteState {
    /// Opened read-write.
    pub(crate) writable: bool,
    /// Lazy refcounts: the dirty bit stands in for ordered refcount writes.
    pub(crate) lazy: bool,
    /// The incompatible-feature bits as they are on disk now.
    incompatible: Cell<u64>,
    /// A metadata write would have overlapped metadata: every write fails from now on.
    pub(crate) corrupt: Cell<bool>,
    /// The allocation lock: cluster allocation, new tables and refcount blocks.
    pub(crate) alloc_busy: Cell<bool>,
    /// Where the next free-cluster search starts (a cluster index).
    pub(crate) free_hint: Cell<u64>,
    /// Host bytes from here on have never been written since the open: they read as zeros.
    pub(crate) fresh_from: Cell<u64>,
    /// Where the next compressed payload may go: the first free byte after the last one, in a
    /// host cluster compressed payloads share (0: none; QEMU's `free_byte_offset`).
    pub(crate) compressed_tail: Cell<u64>,
    pub(crate) pending: RefCell<heapless::Vec<PendingFree, MAX_PENDING_FREES>>,
    /// Tables the overlap check found clear lately.
    pub(crate) cleared: super::alloc::overlap::Cleared,
}

impl WriteState {
    /// `fresh_from`: where the file reads as zeros to its end (its size, or less when the
    /// device says so: [`crate::dev::BlockDevice::zeroed_from`]).
    pub(crate) fn new(header: &Header, writable: bool, fresh_from: u64) -> Self {
        let cs = header.cluster_size();
        Self {
            writable,
            lazy: header.compatible & compat::LAZY_REFCOUNTS != 0,
            incompatible: Cell::new(header.incompatible),
            corrupt: Cell::new(false),
            alloc_busy: Cell::new(false),
            free_hint: Cell::new(0),
            fresh_from: Cell::new(fresh_from.div_ceil(cs).saturating_mul(cs)),
            compressed_tail: Cell::new(0),
            pending: RefCell::new(heapless::Vec::new()),
            cleared: super::alloc::overlap::Cleared::default(),
        }
    }
}

/// The allocation lock, held for its lifetime.
pub(crate) struct AllocLock<'a>(&'a Cell<bool>);

impl Drop for AllocLock<'_> {
    fn drop(&mut self) {
        self.0.set(false);
    }
}

impl Qcow2 {
    /// Takes the allocation lock (waiting while another request holds it).
    pub(crate) async fn alloc_lock(&self) -> AllocLock<'_> {
        wait_until(|| !self.w.alloc_busy.get()).await;
        self.w.alloc_busy.set(true);
        AllocLock(&self.w.alloc_busy)
    }

    /// Checks made once a read-write open has read the image: refuses what must not be
    /// written, and clears the autoclear bits Strata does not maintain (all but a raw data file's;
    /// QEMU clears the ones it does not know: their extensions would go stale).
    pub(crate) async fn open_for_writing(&self, io: &Io<'_, '_>, file: NodeId) -> Result<()> {
        let h = &self.header;
        if h.incompatible & incompat::CORRUPT != 0 {
            return Err(Error::BadImage { what: "image is marked corrupt: it opens read-only (qemu-img check -r all repairs it)" });
        }
        if h.incompatible & incompat::DIRTY != 0 {
            return Err(Error::BadImage {
                what: "image is dirty (lazy refcounts not written back): repair it first (qemu-img check -r all) or open it read-only",
            });
        }
        // Strata keeps no bitmaps up to date: their extension must not claim to be
        // (`autoclear::BITMAPS`, unknown bits). A raw external data file stays raw: every data
        // cluster is written at its guest offset and write-zeroes writes the zeros into it too
        // (`data_file.rs`), so `autoclear::DATA_FILE_RAW` is kept, as QEMU keeps it.
        let keep = if self.data_file { h.autoclear & autoclear::DATA_FILE_RAW } else { 0 };
        if h.version >= 3 && h.autoclear != keep {
            self.write_header_u64(io, file, field::AUTOCLEAR, keep).await?;
            flush::flush_leaves(io, file).await?;
        }
        Ok(())
    }

    /// Fails if this node must not be written.
    pub(crate) fn check_writable(&self) -> Result<()> {
        if !self.w.writable {
            return Err(Error::ReadOnly);
        }
        if self.w.corrupt.get() {
            return Err(Error::Corrupt { what: "image marked corrupt during this open: no more writes", offset: 0 });
        }
        Ok(())
    }

    /// With lazy refcounts, sets the dirty bit (stable) before the first write relies on it
    /// (`docs/ARCHITECTURE.md` rule 4).
    pub(crate) async fn mark_dirty(&self, io: &Io<'_, '_>, file: NodeId) -> Result<()> {
        if !self.w.lazy || self.w.incompatible.get() & incompat::DIRTY != 0 {
            return Ok(());
        }
        let _lock = self.alloc_lock().await;
        if self.w.incompatible.get() & incompat::DIRTY != 0 {
            return Ok(());
        }
        let bits = self.w.incompatible.get() | incompat::DIRTY;
        self.write_header_u64(io, file, field::INCOMPATIBLE, bits).await?;
        flush::flush_leaves(io, file).await?;
        self.w.incompatible.set(bits);
        Ok(())
    }

    /// Clears the dirty bit after a complete write-back (a clean close).
    pub(crate) async fn mark_clean(&self, io: &Io<'_, '_>, file: NodeId) -> Result<()> {
        if self.w.incompatible.get() & incompat::DIRTY == 0 {
            return Ok(());
        }
        let bits = self.w.incompatible.get() & !incompat::DIRTY;
        self.write_header_u64(io, file, field::INCOMPATIBLE, bits).await?;
        flush::flush_leaves(io, file).await?;
        self.w.incompatible.set(bits);
        Ok(())
    }

    /// Marks the image corrupt (QEMU's `qcow2_signal_corruption`): the node refuses writes from
    /// now on and the header's corrupt bit is set (best effort). Returns the error to report.
    pub(crate) async fn signal_corruption(
        &self,
        io: &Io<'_, '_>,
        file: NodeId,
        what: &'static str,
        offset: u64,
    ) -> Error {
        self.w.corrupt.set(true);
        let bits = self.w.incompatible.get() | incompat::CORRUPT;
        if self.header.version >= 3 && self.write_header_u64(io, file, field::INCOMPATIBLE, bits).await.is_ok() {
            self.w.incompatible.set(bits);
            let _ = flush::flush_leaves(io, file).await;
        }
        Error::Corrupt { what, offset }
    }

    /// Writes one big-endian u64 header field.
    pub(crate) async fn write_header_u64(&self, io: &Io<'_, '_>, file: NodeId, at: u64, value: u64) -> Result<()> {
        child_io::write(io, file, at, &value.to_be_bytes()).await
    }
}
