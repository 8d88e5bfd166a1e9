//! Named points in the format drivers' metadata paths (QEMU's blkdebug events, with QEMU's
//! names) where a fault-injection filter can make the operation fail. Inert unless a hook is
//! installed with [`crate::Graph::set_event_hook`]: without one, an event costs a branch.

use crate::error::Result;
use crate::node::NodeId;

/// A point in a metadata path.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Event {
    /// An L1 entry is about to change. (Numbered from 1 so that `None::<Event>` is the byte 0:
    /// a metadata cache slot with no event is all zeros and its `static` lands in `.bss`.)
    L1Update = 1,
    /// A larger L1 table: clusters allocated, written, made active.
    L1GrowAllocTable,
    /// See [`Event::L1GrowAllocTable`].
    L1GrowWriteTable,
    /// See [`Event::L1GrowAllocTable`].
    L1GrowActivateTable,
    /// A new L2 table is written (zeroed, or copied from a shared one).
    L2AllocWrite,
    /// A shared L2 table is read to be copied.
    L2AllocCowRead,
    /// A dirty L2 table (slice) is written back from the metadata cache to the file (QEMU's
    /// `qcow2_cache_entry_flush` on the L2 cache): raised right before that write, so a rule on
    /// it fails the write-back itself and the request whose flush or eviction runs it.
    L2Update,
    /// Guest data goes to a data cluster.
    WriteAio,
    /// Copy-on-write reads its source.
    CowRead,
    /// Copy-on-write writes what it read.
    CowWrite,
    /// The refcount table is replaced by a larger one.
    ReftableGrow,
    /// QEMU's name for a refcount entry changing; QEMU 2.x+ never raises it (its refcount
    /// blocks are written back from a cache, which raises [`Event::RefblockUpdatePart`]), and
    /// neither does Strata: a rule naming it is accepted and never fires.
    RefblockUpdate,
    /// A dirty refcount block (slice) is written back from the metadata cache to the file
    /// (QEMU's `qcow2_cache_entry_flush` on the refcount block cache).
    RefblockUpdatePart,
    /// A new refcount block is written.
    RefblockAllocWrite,
    /// A new refcount block is linked from the refcount table.
    RefblockAllocHookup,
    /// The refcount blocks of a grown table are written.
    RefblockAllocWriteBlocks,
    /// A grown refcount table is written.
    RefblockAllocWriteTable,
    /// The header switches to a grown refcount table.
    RefblockAllocSwitchTable,
    /// Host clusters are allocated.
    ClusterAlloc,
    /// A host cluster's refcount drops.
    ClusterFree,
    /// Caches are written back to the file.
    FlushToOs,
    /// The file is flushed to stable storage.
    FlushToDisk,
}

impl Event {
    /// QEMU's name for the event (`blkdebug` rules use these).
    pub fn name(self) -> &'static str {
        match self {
            Event::L1Update => "l1_update",
            Event::L1GrowAllocTable => "l1_grow_alloc_table",
            Event::L1GrowWriteTable => "l1_grow_write_table",
            Event::L1GrowActivateTable => "l1_grow_activate_table",
            Event::L2AllocWrite => "l2_alloc_write",
            Event::L2AllocCowRead => "l2_alloc_cow_read",
            Event::L2Update => "l2_update",
            Event::WriteAio => "write_aio",
            Event::CowRead => "cow_read",
            Event::CowWrite => "cow_write",
            Event::ReftableGrow => "reftable_grow",
            Event::RefblockUpdate => "refblock_update",
            Event::RefblockUpdatePart => "refblock_update_part",
            Event::RefblockAllocWrite => "refblock_alloc_write",
            Event::RefblockAllocHookup => "refblock_alloc_hookup",
            Event::RefblockAllocWriteBlocks => "refblock_alloc_write_blocks",
            Event::RefblockAllocWriteTable => "refblock_alloc_write_table",
            Event::RefblockAllocSwitchTable => "refblock_alloc_switch_table",
            Event::ClusterAlloc => "cluster_alloc",
            Event::ClusterFree => "cluster_free",
            Event::FlushToOs => "flush_to_os",
            Event::FlushToDisk => "flush_to_disk",
        }
    }
}

impl Event {
    /// Every event, in declaration order.
    pub const ALL: [Event; 22] = [
        Event::L1Update,
        Event::L1GrowAllocTable,
        Event::L1GrowWriteTable,
        Event::L1GrowActivateTable,
        Event::L2AllocWrite,
        Event::L2AllocCowRead,
        Event::L2Update,
        Event::WriteAio,
        Event::CowRead,
        Event::CowWrite,
        Event::ReftableGrow,
        Event::RefblockUpdate,
        Event::RefblockUpdatePart,
        Event::RefblockAllocWrite,
        Event::RefblockAllocHookup,
        Event::RefblockAllocWriteBlocks,
        Event::RefblockAllocWriteTable,
        Event::RefblockAllocSwitchTable,
        Event::ClusterAlloc,
        Event::ClusterFree,
        Event::FlushToOs,
        Event::FlushToDisk,
    ];

    /// The event QEMU calls `name`, if Strata raises it.
    pub fn by_name(name: &str) -> Option<Event> {
        Self::ALL.into_iter().find(|e| e.name() == name)
    }
}

/// QEMU's other blkdebug event names: accepted in rules and breakpoints (as QEMU accepts
/// them), never raised by Strata's drivers.
pub const QEMU_ONLY: &[&str] = &[
    "l2_load", "l2_update_compressed", "read_aio", "read_backing_aio", "read_compressed", "write_compressed",
    "vmstate_load", "vmstate_save", "reftable_load", "reftable_update", "refblock_load",
    "refblock_alloc", "cluster_alloc_bytes", "pwritev_rmw_head", "pwritev_rmw_after_head", "pwritev_rmw_tail",
    "pwritev_rmw_after_tail", "pwritev", "pwritev_zero", "pwritev_done", "empty_image_prepare",
    "l1_shrink_write_table", "l1_shrink_free_l2_clusters", "cor_write", "cluster_alloc_space", "none",
];

/// What a fault-injection filter implements: called at every event of every format node; an
/// error fails the operation there (the driver then behaves as if the I/O had failed).
pub trait EventHook {
    /// Event `event` happens at format node `node`.
    fn event(&self, node: NodeId, event: Event) -> Result<()>;
}
