//! The metadata cache: L1, L2 and refcount tables alike, in slices of at most 4 KiB, shared by
//! every qcow2 node of a graph (`docs/ARCHITECTURE.md`, "Resources").
//!
//! **Budget.** The caller gives the graph `slots` ([`CacheSlot`], 4 KiB each) once, with
//! [`crate::Graph::set_metadata_cache`]; the byte budget is `slots.len() * 4 KiB` and never grows.
//! A table is read slice by slice as it is used, so a 16 TiB image with a 256 KiB L1 table opens
//! and reads with a 64 KiB budget; "absurd" tables are those that contradict the header or the
//! file, never those larger than the cache.
//!
//! **Layout.** Slots are grouped in sets of [`WAYS`]; a slice (keyed by the node holding the
//! metadata and the slice's byte offset there) lives in the set its key hashes to and replaces
//! the least recently used clean slot of that set. A lookup touches at most `WAYS` slots, so a
//! cache that holds a whole image costs no more per lookup than a small one.
//!
//! **Concurrency.** One executor thread, many requests: a slot being loaded is marked so and
//! others wait for it instead of reading it twice; data is copied out under a short borrow and no
//! borrow is held across an await. Dropping a loading future gives its slot back (a guard).
//!
//! **Writes.** A changed slice stays in its slot, dirty, tagged with its [`Class`]; a dirty slot
//! is never evicted. [`MetaCache::write_back`] writes a node's dirty slices in dependency order
//! (`docs/ARCHITECTURE.md`, crash consistency): refcount slices, then a flush of the file (which also makes
//! every data write completed so far stable), then table slices. A set with no clean slot left
//! writes back the nodes it holds before it evicts. While a slice is being written it can be read
//! but not changed; changes wait. Dirty slices are written back only by [`MetaCache::write_back`],
//! one at a time per graph.

use core::cell::{Cell, RefCell};
use core::future::poll_fn;
use core::task::Poll;

use miniz_oxide::inflate::core::DecompressorOxide;

use crate::error::{Error, Result};
use crate::io::events::Event;
use crate::io::Io;
use crate::node::{NodeId, Role};
use crate::io::{child_io, wait_for};
use crate::io::zstd::{TakenZstd, ZstdDecoder};

/// Bytes per slot (the largest slice).
pub const SLICE: usize = 4096;

/// Slots per set.
pub const WAYS: usize = 8;

/// What a dirty slice holds, in the order slices are written back. (Numbered from 1 so that
/// `None::<Class>` is the byte 0: see [`CacheSlot::new`].)
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Class {
    /// Refcount table and refcount blocks: stable before anything that points at what they count.
    Refcount = 1,
    /// L2 tables: written after a flush, so the data and refcounts they rely on are stable.
    Table,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum SlotState {
    Empty,
    Loading,
    Ready,
}

/// One cached slice: storage and bookkeeping. Make them with [`CacheSlot::new`] (a `const fn`,
/// so `[const { CacheSlot::new() }; 16]` works in a `static`). An empty slot is all zero bytes
/// (every `None` and `Empty` below is encoded as 0), so such a `static` costs `.bss`, not
/// `.data` in the image file; the unit test `empty_slot_is_zeroes` keeps it so.
pub struct CacheSlot {
    data: RefCell<[u8; SLICE]>,
    key: Cell<Option<(NodeId, u64)>>,
    len: Cell<u32>,
    state: Cell<SlotState>,
    dirty: Cell<Option<Class>>,
    /// When the slot last became dirty (the cache's `dirtied` count then).
    dirty_stamp: Cell<u64>,
    writing: Cell<bool>,
    used: Cell<u64>,
    /// The blkdebug event its write-back raises (QEMU's cache raises one per L2 or refcount
    /// block it writes; L1 and refcount-table entries, which QEMU writes directly, raise none).
    event: Cell<Option<Event>>,
}

impl CacheSlot {
    /// An empty slot.
    pub const fn new() -> Self {
        Self {
            data: RefCell::new([0; SLICE]),
            key: Cell::new(None),
            len: Cell::new(0),
            state: Cell::new(SlotState::Empty),
            dirty: Cell::new(None),
            dirty_stamp: Cell::new(0),
            writing: Cell::new(false),
            used: Cell::new(0),
            event: Cell::new(None),
        }
    }

    fn evictable(&self) -> bool {
        self.state.get() != SlotState::Loading && self.dirty.get().is_none() && !self.writing.get()
    }
}

impl Default for CacheSlot {
    fn default() -> Self {
        Self::new()
    }
}

/// A raw-deflate decoder with its 32 KiB window and an input buffer: what decoding one
/// compressed cluster needs, whatever the cluster size (the output is streamed out of the
/// window). About 60 KiB each; the graph holds as many as the caller gives it
/// ([`crate::Graph::set_decompressors`]), and a request waits for a free one.
#[cfg_attr(not(feature = "compress"), allow(dead_code))] // reason: used only by compressed reads
pub struct Inflater {
    pub(crate) state: RefCell<DecompressorOxide>,
    pub(crate) window: RefCell<[u8; WINDOW]>,
    pub(crate) input: RefCell<[u8; INPUT]>,
    busy: Cell<bool>,
}

/// Deflate window (and the decoder's wrapping output buffer).
pub const WINDOW: usize = 32 * 1024;
/// Compressed bytes read per step.
pub const INPUT: usize = 16 * 1024;

impl Inflater {
    /// An idle decoder.
    pub fn new() -> Self {
        Self {
            state: RefCell::new(DecompressorOxide::new()),
            window: RefCell::new([0; WINDOW]),
            input: RefCell::new([0; INPUT]),
            busy: Cell::new(false),
        }
    }
}

impl Default for Inflater {
    fn default() -> Self {
        Self::new()
    }
}

/// An inflater taken from the pool; given back on drop.
#[cfg_attr(not(feature = "compress"), allow(dead_code))] // reason: used only by compressed reads
pub(crate) struct TakenInflater<'a>(pub(crate) &'a Inflater);

impl Drop for TakenInflater<'_> {
    fn drop(&mut self) {
        self.0.busy.set(false);
    }
}

/// Hit and miss counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CacheStats {
    /// Lookups served from the cache.
    pub hits: u64,
    /// Slices read from the image.
    pub misses: u64,
    /// Slices written back.
    pub writebacks: u64,
    /// Slots in the cache.
    pub slots: usize,
}

/// The graph's metadata memory: the slice cache and the decoders.
pub struct MetaCache<'d> {
    slots: &'d [CacheSlot],
    inflaters: &'d [Inflater],
    zstd: &'d [ZstdDecoder<'d>],
    tick: Cell<u64>,
    hits: Cell<u64>,
    misses: Cell<u64>,
    writebacks: Cell<u64>,
    /// A write-back is running (one per graph at a time).
    writing_back: Cell<bool>,
    /// Changes made to slots so far: stamps slots as they become dirty.
    dirtied: Cell<u64>,
}

/// Gives a slot back (empty) if its load was abandoned or failed.
struct LoadGuard<'a> {
    slot: &'a CacheSlot,
    done: bool,
}

impl Drop for LoadGuard<'_> {
    fn drop(&mut self) {
        if !self.done {
            self.slot.key.set(None);
            self.slot.state.set(SlotState::Empty);
        }
    }
}

/// Clears a flag on drop (a write-back or a slice write that ended, or was abandoned).
struct Running<'a>(&'a Cell<bool>);

impl Drop for Running<'_> {
    fn drop(&mut self) {
        self.0.set(false);
    }
}

async fn wait_until_free(flag: &Cell<bool>) {
    crate::io::wait_until(|| !flag.get()).await;
}

/// Returns `Pending` once (waking itself), so other requests run.
async fn yield_now() {
    let mut yielded = false;
    poll_fn(|cx| {
        if yielded {
            Poll::Ready(())
        } else {
            yielded = true;
            cx.waker().wake_by_ref();
            Poll::Pending
        }
    })
    .await
}

impl<'d> MetaCache<'d> {
    /// A cache with no memory: qcow2 opens fail until the graph is given some.
    pub const fn empty() -> Self {
        Self {
            slots: &[],
            inflaters: &[],
            zstd: &[],
            tick: Cell::new(0),
            dirtied: Cell::new(0),
            hits: Cell::new(0),
            misses: Cell::new(0),
            writebacks: Cell::new(0),
            writing_back: Cell::new(false),
        }
    }

    pub(crate) fn set_slots(&mut self, slots: &'d [CacheSlot]) {
        self.slots = slots;
    }

    pub(crate) fn set_inflaters(&mut self, inflaters: &'d [Inflater]) {
        self.inflaters = inflaters;
    }

    pub(crate) fn set_zstd(&mut self, decoders: &'d [ZstdDecoder<'d>]) {
        self.zstd = decoders;
    }

    /// Slots (budget / 4 KiB).
    pub fn slots(&self) -> usize {
        self.slots.len()
    }

    /// Counters so far.
    pub fn stats(&self) -> CacheStats {
        CacheStats { hits: self.hits.get(), misses: self.misses.get(), writebacks: self.writebacks.get(), slots: self.slots.len() }
    }

    /// Forgets every clean slice of `node` (it was closed, or its file changed underneath).
    pub fn forget(&self, node: NodeId) {
        for slot in self.slots {
            if slot.key.get().is_some_and(|(n, _)| n == node) && slot.evictable() {
                slot.key.set(None);
                slot.state.set(SlotState::Empty);
            }
        }
    }

    /// Forgets clean slices of `node` inside `[start, end)`: a cluster freed or newly allocated
    /// as a table must not be served from what the cache held for its earlier use.
    pub(crate) fn forget_range(&self, node: NodeId, start: u64, end: u64) {
        for slot in self.slots {
            if let Some((n, off)) = slot.key.get() {
                if n == node && off < end && start < off + u64::from(slot.len.get()) && slot.evictable() {
                    slot.key.set(None);
                    slot.state.set(SlotState::Empty);
                }
            }
        }
    }

    /// True if `node` has dirty slices.
    pub fn has_dirty(&self, node: NodeId) -> bool {
        self.slots.iter().any(|s| s.dirty.get().is_some() && s.key.get().is_some_and(|(n, _)| n == node))
    }

    /// True if a slice of `node` starting in `[start, end)` at a multiple of `slice_len` is
    /// cached (the "cached" overlap check: a cluster about to be allocated must not lie on a
    /// table the cache holds). Looks only in the sets those slices hash to, not at every slot.
    pub(crate) fn holds(&self, node: NodeId, start: u64, end: u64, slice_len: u64) -> bool {
        let mut off = start;
        while off < end {
            let key = Some((node, off));
            if self.set_of(node, off).iter().any(|s| s.key.get() == key && s.state.get() != SlotState::Empty) {
                return true;
            }
            off += slice_len.max(1);
        }
        false
    }

    fn set_of(&self, node: NodeId, offset: u64) -> &'d [CacheSlot] {
        let sets = (self.slots.len() / WAYS).max(1);
        // Multiplicative hashing of the slice number and node, reduced to a set by the hash's
        // top bits (which every key bit reaches): neighbouring slices of one table land in
        // different sets, and so do the same slice of different nodes — the layers of a chain
        // keep their tables at the same offsets, and once sets took low bits the node never
        // reached, more layers than ways evicted each other on every read.
        let key = (offset >> 9) ^ u64::from(node.index).wrapping_mul(0xff51_afd7_ed55_8ccd);
        let h = key.wrapping_mul(0x9e37_79b9_7f4a_7c15);
        let set = ((u128::from(h) * sets as u128) >> 64) as usize;
        let start = set * WAYS;
        let end = if set + 1 == sets { self.slots.len() } else { start + WAYS };
        self.slots.get(start..end).unwrap_or(&[])
    }

    // The slot's data stays mutably borrowed while the device fills it: the slot is marked
    // Loading first, so nobody else borrows it (and `try_borrow` would fail, not panic).
    #[allow(clippy::await_holding_refcell_ref)] // reason: exclusive by the Loading protocol above
    /// Runs `f` on the `len` bytes (at most [`SLICE`]) at `offset` of `node` — a slice-aligned
    /// piece of a table — reading them through the cache. Bytes past the end of `node` read as
    /// zeros.
    pub(crate) async fn with_slice<R>(
        &self,
        io: &Io<'_, '_>,
        node: NodeId,
        offset: u64,
        len: usize,
        f: impl FnOnce(&[u8]) -> R,
    ) -> Result<R> {
        if self.slots.is_empty() {
            return Err(Error::NoSpace { what: "metadata cache (Graph::set_metadata_cache)" });
        }
        if len == 0 || len > SLICE {
            return Err(Error::BadGraph("metadata slice larger than a cache slot"));
        }
        let key = Some((node, offset));
        let set = self.set_of(node, offset);
        loop {
            let tick = self.tick.get() + 1;
            self.tick.set(tick);
            if let Some(slot) = set.iter().find(|s| s.key.get() == key) {
                match slot.state.get() {
                    SlotState::Ready if slot.len.get() as usize == len => {
                        let data = self.hit(slot, tick).ok_or(Error::BadGraph("metadata slot busy"))?;
                        return Ok(f(&data[..len]));
                    }
                    SlotState::Loading => {
                        yield_now().await;
                        continue;
                    }
                    _ => {
                        // Same offset, other length: cannot happen for one image; reload.
                        if slot.evictable() {
                            slot.key.set(None);
                            slot.state.set(SlotState::Empty);
                        }
                    }
                }
            }
            let victim = set
                .iter()
                .filter(|s| s.evictable())
                .min_by_key(|s| if s.state.get() == SlotState::Empty { 0 } else { s.used.get() });
            let Some(slot) = victim else {
                // No clean slot: write back the dirty ones (in order), or wait for a loading one.
                match set.iter().find(|s| s.dirty.get().is_some() && !s.writing.get()).and_then(|s| s.key.get()) {
                    Some((dirty_node, _)) => self.write_back(io, dirty_node).await?,
                    None => yield_now().await,
                }
                continue;
            };
            slot.key.set(key);
            slot.state.set(SlotState::Loading);
            slot.len.set(len as u32);
            self.misses.set(self.misses.get() + 1);
            let mut guard = LoadGuard { slot, done: false };
            {
                let mut data = slot.data.try_borrow_mut().map_err(|_| Error::BadGraph("metadata slot busy"))?;
                child_io::read_upto(io, node, offset, &mut data[..len]).await?;
            }
            slot.state.set(SlotState::Ready);
            slot.used.set(tick);
            guard.done = true;
        }
    }

    /// Runs `f` on the slice at `offset` of `node` if it is cached and ready, without loading or
    /// waiting (the walk's synchronous lookups, [`crate::driver::Driver::map_cached`]); `None`
    /// otherwise, and then `f` is not called.
    pub(crate) fn peek<R>(&self, node: NodeId, offset: u64, len: usize, f: impl FnOnce(&[u8]) -> R) -> Option<R> {
        let key = Some((node, offset));
        let slot = self.set_of(node, offset).iter().find(|s| s.key.get() == key)?;
        if slot.state.get() != SlotState::Ready || slot.len.get() as usize != len {
            return None;
        }
        let tick = self.tick.get() + 1;
        self.tick.set(tick);
        let data = self.hit(slot, tick)?;
        Some(f(&data[..len]))
    }

    /// Counts a hit on ready `slot` at `tick` and borrows its data (`None` if it is borrowed
    /// mutably, which the Loading protocol rules out).
    fn hit<'s>(&self, slot: &'s CacheSlot, tick: u64) -> Option<core::cell::Ref<'s, [u8; SLICE]>> {
        slot.used.set(tick);
        self.hits.set(self.hits.get() + 1);
        slot.data.try_borrow().ok()
    }

    /// The big-endian u64 at `offset` of `node` (8-aligned), through the slice of `slice_len`
    /// bytes that holds it.
    pub(crate) async fn read_u64(&self, io: &Io<'_, '_>, node: NodeId, offset: u64, slice_len: usize) -> Result<u64> {
        let start = offset / slice_len as u64 * slice_len as u64;
        let at = (offset - start) as usize;
        self.with_slice(io, node, start, slice_len, |s| {
            s.get(at..at + 8).and_then(|b| b.try_into().ok()).map(u64::from_be_bytes)
        })
        .await?
        .ok_or(Error::BadGraph("table entry across a slice"))
    }

    /// Runs `f` on the slice at `offset` of `node` (as [`MetaCache::with_slice`]) to change it;
    /// the slice becomes dirty in `class` and stays cached until written back. Waits while the
    /// slice is being written.
    ///
    /// The slice is an L2 table's (class [`Class::Table`]) or a refcount block's
    /// ([`Class::Refcount`]): its write-back raises [`Event::L2Update`] or
    /// [`Event::RefblockUpdatePart`] as QEMU's caches do. L1 and refcount-table entries change
    /// through [`MetaCache::write_u64`], which raises none.
    pub(crate) async fn with_slice_mut<R>(
        &self,
        io: &Io<'_, '_>,
        node: NodeId,
        offset: u64,
        len: usize,
        class: Class,
        f: impl FnOnce(&mut [u8]) -> R,
    ) -> Result<R> {
        let event = match class {
            Class::Table => Event::L2Update,
            Class::Refcount => Event::RefblockUpdatePart,
        };
        self.change(io, node, offset, len, class, Some(event), f).await
    }

    /// [`MetaCache::with_slice_mut`], the slice's write-back raising `event`.
    #[allow(clippy::too_many_arguments)] // reason: the slice's key, shape and class, as with_slice_mut's
    async fn change<R>(
        &self,
        io: &Io<'_, '_>,
        node: NodeId,
        offset: u64,
        len: usize,
        class: Class,
        event: Option<Event>,
        f: impl FnOnce(&mut [u8]) -> R,
    ) -> Result<R> {
        loop {
            // Load (or find) it; then change it synchronously, so nothing moves in between.
            self.with_slice(io, node, offset, len, |_| ()).await?;
            let key = Some((node, offset));
            let Some(slot) = self.set_of(node, offset).iter().find(|s| s.key.get() == key && s.state.get() == SlotState::Ready) else {
                continue; // evicted between the load and now: load again
            };
            // A slice being written cannot change; neither can refcounts while a write-back
            // runs: a table written after its flush must not point at a count it did not cover.
            if slot.writing.get() || (class == Class::Refcount && self.writing_back.get()) {
                yield_now().await;
                continue;
            }
            let mut data = slot.data.try_borrow_mut().map_err(|_| Error::BadGraph("metadata slot busy"))?;
            let r = f(&mut data[..len]);
            // A slice holding both kinds (cannot happen: tables and refcount blocks are whole
            // clusters) would be written with the earlier class.
            slot.dirty.set(Some(slot.dirty.get().map_or(class, |c| c.min(class))));
            self.dirtied.set(self.dirtied.get() + 1);
            slot.dirty_stamp.set(self.dirtied.get());
            slot.event.set(event);
            return Ok(r);
        }
    }

    /// Writes every dirty slice of `node` (a format's file child) back, in [`Class`] order with
    /// a flush of `node` before the table slices (`docs/ARCHITECTURE.md` rules 1 and 2). Returns once all of
    /// them are written (not flushed: the caller flushes when it needs them stable).
    #[allow(clippy::await_holding_refcell_ref)] // reason: the slot is marked `writing`, so nobody borrows it mutably meanwhile
    pub(crate) async fn write_back(&self, io: &Io<'_, '_>, node: NodeId) -> Result<()> {
        wait_until_free(&self.writing_back).await;
        self.writing_back.set(true);
        let _running = Running(&self.writing_back);
        for class in [Class::Refcount, Class::Table] {
            // Slots dirtied up to this stamp are covered by the last flush. Writing a slot
            // yields, and other requests run meanwhile: one may complete a data write and then
            // point a table entry at it, in a slot still to be written here. That slot needs a
            // flush of its own, or its entry could reach the disk before the data (rule 2).
            let mut covered: Option<u64> = None;
            for slot in self.slots {
                let Some((n, offset)) = slot.key.get() else { continue };
                if n != node || slot.dirty.get() != Some(class) {
                    continue;
                }
                // A loop: the slot itself may change again while the flush runs.
                while class == Class::Table && covered.is_none_or(|c| slot.dirty_stamp.get() > c) {
                    let stamp = self.dirtied.get();
                    crate::io::flush::flush_file_and_data(io, node).await?;
                    covered = Some(stamp);
                }
                slot.writing.set(true);
                slot.dirty.set(None);
                let _writing = Running(&slot.writing);
                let len = slot.len.get() as usize;
                let result = async {
                    // QEMU raises the event right before the write (after the flush it
                    // depends on): a rule on it fails this write-back.
                    if let Some(event) = slot.event.get() {
                        if io.has_event_hook() {
                            if let Some((format, _)) = io.parents(node).find(|(_, c)| c.role == Role::File) {
                                io.event(format, event).await?;
                            }
                        }
                    }
                    let data = slot.data.try_borrow().map_err(|_| Error::BadGraph("metadata slot busy"))?;
                    child_io::write(io, node, offset, &data[..len]).await
                }
                .await;
                if let Err(e) = result {
                    // Still dirty: a later write-back tries again.
                    slot.dirty.set(Some(class));
                    return Err(e);
                }
                self.writebacks.set(self.writebacks.get() + 1);
            }
        }
        Ok(())
    }

    /// Sets the big-endian u64 at `offset` of `node` (8-aligned) to `value` in the cache, through
    /// the slice of `slice_len` bytes that holds it; the slice becomes dirty in `class`. For the
    /// tables QEMU keeps out of its caches (L1, refcount table): the write-back raises no event.
    pub(crate) async fn write_u64(
        &self,
        io: &Io<'_, '_>,
        node: NodeId,
        offset: u64,
        slice_len: usize,
        class: Class,
        value: u64,
    ) -> Result<()> {
        let start = offset / slice_len as u64 * slice_len as u64;
        let at = (offset - start) as usize;
        self.change(io, node, start, slice_len, class, None, |s| s.get_mut(at..at + 8).map(|b| b.copy_from_slice(&value.to_be_bytes())))
            .await?
            .ok_or(Error::BadGraph("table entry across a slice"))
    }

    /// Takes a free decoder, waiting while all are busy.
    #[cfg_attr(not(feature = "compress"), allow(dead_code))] // reason: used only by compressed reads
    pub(crate) async fn take_inflater(&self) -> Result<TakenInflater<'d>> {
        if self.inflaters.is_empty() {
            return Err(Error::NoSpace { what: "decompressors (Graph::set_decompressors)" });
        }
        let inflater = wait_for(|| self.inflaters.iter().find(|i| !i.busy.get())).await;
        inflater.busy.set(true);
        Ok(TakenInflater(inflater))
    }

    /// Takes a free zstd decoder, waiting while all are busy.
    #[cfg_attr(not(feature = "compress"), allow(dead_code))] // reason: used only by compressed reads
    pub(crate) async fn take_zstd(&self) -> Result<TakenZstd<'d, 'd>> {
        if self.zstd.is_empty() {
            return Err(Error::NoSpace { what: "zstd decoders (Graph::set_zstd_decoders)" });
        }
        let decoder = wait_for(|| self.zstd.iter().find(|d| !d.busy.get())).await;
        decoder.busy.set(true);
        Ok(TakenZstd(decoder))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The fields of an empty slot that are enums hold 0, so `CacheSlot::new()` is all zeroes
    /// (the rest are integers, `false`, a tag-encoded `Option` of plain integers and a
    /// `RefCell`'s unborrowed flag) and a `static` of slots goes to `.bss`.
    #[test]
    #[allow(unsafe_code)] // reason: reads the bytes of field-less enums (every byte initialised)
    fn empty_slot_is_zeroes() {
        assert_eq!(core::mem::size_of::<Option<Class>>(), 1);
        assert_eq!(core::mem::size_of::<Option<Event>>(), 1);
        // SAFETY: both are one fully initialised byte (sizes checked above).
        let (class, event) = unsafe { (core::mem::transmute::<Option<Class>, u8>(None), core::mem::transmute::<Option<Event>, u8>(None)) };
        assert_eq!((class, event, SlotState::Empty as u8), (0, 0, 0));
    }

    /// The same slice of many nodes (a chain's layers keep their tables at the same offsets)
    /// spreads over the sets: no set is asked to hold more of them than it has ways, so a
    /// chain deeper than `WAYS` does not evict its own tables on every read.
    #[test]
    fn layers_at_identical_offsets_do_not_share_a_set() {
        for slots_n in [256usize, 1024] {
            let slots: std::vec::Vec<CacheSlot> = (0..slots_n).map(|_| CacheSlot::new()).collect();
            let mut cache = MetaCache::empty();
            cache.set_slots(&slots);
            for offset in [0u64, 0x3_0000, 0x5_0000, 0x10_0000] {
                let mut per_set = std::collections::HashMap::new();
                for index in 0..32u16 {
                    let set = cache.set_of(NodeId { index, generation: 0 }, offset).as_ptr();
                    *per_set.entry(set).or_insert(0usize) += 1;
                }
                let worst = per_set.values().copied().max().unwrap_or(0);
                assert!(worst < WAYS, "{slots_n} slots, offset {offset:#x}: {worst} of 32 layers in one set");
            }
        }
    }
}
