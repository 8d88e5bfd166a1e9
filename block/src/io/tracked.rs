//! Tracked requests (QEMU's `BdrvTrackedRequest`) in fixed storage.
//!
//! Every request at a leaf is entered here with its node, range and kind, and gets a sequence
//! number (a graph keeps a second table for requests at driver nodes that allocate: qcow2
//! writes and range operations, and reads while it is written). A *serialising* request (a
//! read-modify-write, a qcow2 write over whole clusters; later a copy-on-read) covers an overlap range widened to the alignment it works in; it waits for every earlier
//! overlapping request, and every later overlapping request waits for it. Requests wait only
//! for *earlier* ones, so waiting is cycle-free by construction. Slots release on drop (an
//! abandoned future included) and wake the waiters. A full table is back-pressure: the request
//! waits for a slot before it holds anything else.
//!
//! A read that starts while no serialising request is in the table waits for nothing, and no
//! request waits for it but a serialising one: such a read is only counted, per 64 KiB granule,
//! in a second [`OverlapFilter`] ([`TrackerOf::begin_quiet_read`]), and a serialising request
//! waits while any counted read may overlap it, whenever the read began. A quiet read itself
//! waits for no request, so the waits stay cycle-free. That costs a guest's 4 KiB read of a
//! writable qcow2 image a few counter updates instead of a slot, a conflict check and a release.

use core::cell::{Cell, RefCell};
use core::future::poll_fn;
use core::task::{Poll, Waker};

use crate::node::NodeId;
use crate::io::overlap_filter::{Mark, OverlapFilter};
use crate::io::wait_for;

/// What a tracked request does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReqKind {
    /// Read.
    Read,
    /// Write (data, zeroes).
    Write,
    /// Discard.
    Discard,
    /// Size change.
    Truncate,
}

/// One tracked request (a slot of a [`TrackerOf`]).
pub struct Entry {
    node: NodeId,
    seq: u64,
    kind: ReqKind,
    offset: u64,
    bytes: u64,
    overlap_offset: u64,
    overlap_bytes: u64,
    serialising: bool,
    waker: Option<Waker>,
    /// How the overlap range is counted in the table's [`OverlapFilter`]; `None` while the
    /// filter is off.
    mark: Option<Mark>,
}

/// Tracked-request slots: `S` is `[Option<Entry>; T]` where the graph owns them, and
/// `[Option<Entry>]` ([`Tracker`]) where they are used, so users do not carry `T`.
///
/// The common case is cheap: with no serialising request in the table a plain request's wait
/// is a counter check, releasing wakes nobody unless someone waits, and a free slot is found
/// from a hint (the last one released) rather than by a scan from the start.
pub struct TrackerOf<S: ?Sized> {
    next_seq: Cell<u64>,
    /// Entries marked serialising.
    serialising: Cell<usize>,
    /// Entries with a stored waker.
    waiting: Cell<usize>,
    /// Where to look for a free slot first.
    free_hint: Cell<usize>,
    /// One past the highest slot in use: conflict scans stop there (a big table with a few
    /// requests in flight costs what those few cost).
    high: Cell<usize>,
    /// The overlap ranges in use, counted while a serialising request is in the table (the only
    /// time a conflict scan runs): a request no other one overlaps waits without a scan.
    filter: OverlapFilter,
    /// The ranges of [`QuietRead`]s in flight, and how many there are.
    quiet_reads: OverlapFilter,
    quiet_count: Cell<usize>,
    slots: RefCell<S>,
}

/// The tracked-request table as requests see it.
pub type Tracker = TrackerOf<[Option<Entry>]>;

impl<const T: usize> Default for TrackerOf<[Option<Entry>; T]> {
    fn default() -> Self {
        Self::new()
    }
}

impl<const T: usize> TrackerOf<[Option<Entry>; T]> {
    /// An empty table of `T` slots.
    pub const fn new() -> Self {
        Self {
            next_seq: Cell::new(0),
            serialising: Cell::new(0),
            waiting: Cell::new(0),
            free_hint: Cell::new(0),
            high: Cell::new(0),
            filter: OverlapFilter::new(),
            quiet_reads: OverlapFilter::new(),
            quiet_count: Cell::new(0),
            slots: RefCell::new([const { None }; T]),
        }
    }
}

impl Tracker {

    /// Enters a request, waiting for a free slot if the table is full.
    pub async fn begin(&self, node: NodeId, kind: ReqKind, offset: u64, bytes: u64) -> Tracked<'_> {
        wait_for(|| self.try_begin(node, kind, offset, bytes)).await
    }

    /// Enters a request if a slot is free.
    pub fn try_begin(&self, node: NodeId, kind: ReqKind, offset: u64, bytes: u64) -> Option<Tracked<'_>> {
        let mut slots = self.slots.borrow_mut();
        let hint = self.free_hint.get().min(slots.len());
        let index = match slots[hint..].iter().position(Option::is_none) {
            Some(i) => hint + i,
            None => slots[..hint].iter().position(Option::is_none)?,
        };
        self.free_hint.set(index + 1);
        self.high.set(self.high.get().max(index + 1));
        let seq = self.next_seq.get();
        self.next_seq.set(seq + 1);
        slots[index] = Some(Entry {
            node,
            seq,
            kind,
            offset,
            bytes,
            overlap_offset: offset,
            overlap_bytes: bytes,
            serialising: false,
            waker: None,
            mark: self.filter.is_on().then(|| self.filter.add(node, offset, bytes)),
        });
        Some(Tracked { tracker: self, index })
    }

    /// Enters a plain read and waits until it may go on: counted as a [`QuietRead`] while no
    /// serialising request is in the table, else in a slot once no earlier serialising request
    /// it overlaps is in flight.
    pub async fn begin_read(&self, node: NodeId, offset: u64, bytes: u64) -> ReadHold<'_> {
        if let Some(quiet) = self.begin_quiet_read(node, offset, bytes) {
            return ReadHold::Quiet(quiet);
        }
        let tracked = self.begin(node, ReqKind::Read, offset, bytes).await;
        tracked.wait_serialising().await;
        ReadHold::Tracked(tracked)
    }

    /// Counts a read of `[offset, offset + bytes)` of `node` that needs no slot: `None` while a
    /// serialising request is in the table (the read must then take a slot and wait for it, as
    /// [`TrackerOf::begin`] with [`Tracked::wait_serialising`]). Serialising requests entered
    /// later wait until the read is dropped.
    pub fn begin_quiet_read(&self, node: NodeId, offset: u64, bytes: u64) -> Option<QuietRead<'_>> {
        if self.serialising.get() != 0 {
            return None;
        }
        self.quiet_count.set(self.quiet_count.get() + 1);
        Some(QuietRead { tracker: self, mark: self.quiet_reads.add(node, offset, bytes) })
    }

    /// True if a quiet read in flight may overlap `[offset, offset + bytes)` of `node` (any
    /// quiet read may, if the range is too wide to count in buckets).
    fn quiet_read_near(&self, node: NodeId, offset: u64, bytes: u64) -> bool {
        self.quiet_count.get() != 0
            && OverlapFilter::buckets_of(node, offset, bytes).is_none_or(|c| !self.quiet_reads.clear_of(c))
    }

    /// Requests in the table marked serialising (a plain read waits only for those).
    pub fn serialising(&self) -> usize {
        self.serialising.get()
    }

    /// Slots in use.
    pub fn in_use(&self) -> usize {
        self.slots.borrow().iter().filter(|s| s.is_some()).count()
    }

    fn release(&self, index: usize) {
        let mut slots = self.slots.borrow_mut();
        if let Some(entry) = slots.get_mut(index).and_then(Option::take) {
            if let Some(mark) = entry.mark {
                self.filter.remove(mark);
            }
            if entry.serialising {
                self.serialising.set(self.serialising.get() - 1);
                if self.serialising.get() == 0 {
                    // The last serialising request left: no scan can run, so nothing is counted.
                    for e in slots.iter_mut().flatten() {
                        if let Some(mark) = e.mark.take() {
                            self.filter.remove(mark);
                        }
                    }
                    self.filter.set_on(false);
                }
            }
            if entry.waker.is_some() {
                self.waiting.set(self.waiting.get() - 1);
            }
            self.free_hint.set(index);
            let mut high = self.high.get();
            while high > 0 && slots.get(high - 1).is_some_and(Option::is_none) {
                high -= 1;
            }
            self.high.set(high);
        }
        self.wake_waiters(&mut slots);
    }

    /// Wakes every request waiting for another to leave.
    fn wake_waiters(&self, slots: &mut [Option<Entry>]) {
        if self.waiting.get() == 0 {
            return;
        }
        for entry in slots.iter_mut().flatten() {
            if let Some(w) = entry.waker.take() {
                w.wake();
            }
        }
        self.waiting.set(0);
    }
}

/// What a read holds while it runs ([`TrackerOf::begin_read`]); released on drop.
#[allow(dead_code)] // reason: the variants are held for their drop, never read
pub enum ReadHold<'t> {
    /// Counted only.
    Quiet(QuietRead<'t>),
    /// In a slot.
    Tracked(Tracked<'t>),
}

/// A read counted by [`TrackerOf::begin_quiet_read`]; uncounted (and waiters woken) on drop.
pub struct QuietRead<'t> {
    tracker: &'t Tracker,
    mark: Mark,
}

impl Drop for QuietRead<'_> {
    fn drop(&mut self) {
        let t = self.tracker;
        t.quiet_reads.remove(self.mark);
        t.quiet_count.set(t.quiet_count.get() - 1);
        t.wake_waiters(&mut t.slots.borrow_mut());
    }
}

/// A request's slot in the table; released (and waiters woken) on drop.
pub struct Tracked<'t> {
    tracker: &'t Tracker,
    index: usize,
}

impl Tracked<'_> {
    /// Makes the request serialising over its range widened to `align` (a power of two).
    pub fn serialise(&self, align: u64) {
        let mut slots = self.tracker.slots.borrow_mut();
        if let Some(Some(e)) = slots.get_mut(self.index) {
            let align = align.max(1);
            let start = e.offset / align * align;
            let end = e.offset.saturating_add(e.bytes).div_ceil(align).saturating_mul(align);
            e.overlap_offset = start;
            e.overlap_bytes = end - start;
            if !e.serialising {
                self.tracker.serialising.set(self.tracker.serialising.get() + 1);
            }
            e.serialising = true;
            let filter = &self.tracker.filter;
            if !filter.is_on() {
                // The first serialising request: every request in the table gets counted.
                filter.set_on(true);
                let high = self.tracker.high.get().min(slots.len());
                for o in slots[..high].iter_mut().flatten() {
                    o.mark = Some(filter.add(o.node, o.overlap_offset, o.overlap_bytes));
                }
                return;
            }
            // Counted again only if that changes its buckets (a 4 KiB write widened to its
            // cluster of up to 64 KiB keeps its one).
            let mark = OverlapFilter::buckets_of(e.node, start, end - start);
            match e.mark {
                Some(old) if old.is_some() && old == mark => {}
                old => {
                    if let Some(old) = old {
                        filter.remove(old);
                    }
                    e.mark = Some(filter.add_mark(mark));
                }
            }
        }
    }

    /// Waits until no earlier overlapping request conflicts with this one (either serialising)
    /// and, if this one is serialising, no [`QuietRead`] it may overlap is in flight.
    pub async fn wait_serialising(&self) {
        poll_fn(|cx| {
            let mut slots = self.tracker.slots.borrow_mut();
            let Some(Some(me)) = slots.get(self.index) else { return Poll::Ready(()) };
            // Only a serialising request on one side makes a conflict.
            if !me.serialising && self.tracker.serialising.get() == 0 {
                return Poll::Ready(());
            }
            let (node, seq, start, end, serialising) =
                (me.node, me.seq, me.overlap_offset, me.overlap_offset + me.overlap_bytes, me.serialising);
            // A serialising request waits for the quiet reads it may overlap, whenever they began.
            let quiet = serialising && self.tracker.quiet_read_near(node, start, end - start);
            // Nothing else in the table overlaps it at all (the filter never misses one): no scan.
            let alone = me.mark.is_some_and(|m| self.tracker.filter.alone(m));
            let conflict = quiet
                || !alone
                    && slots[..self.tracker.high.get().min(slots.len())].iter().flatten().any(|o| {
                        o.node == node
                            && o.seq < seq
                            && (o.serialising || serialising)
                            && o.overlap_offset < end
                            && start < o.overlap_offset + o.overlap_bytes
                    });
            if !conflict {
                return Poll::Ready(());
            }
            if let Some(Some(me)) = slots.get_mut(self.index) {
                if me.waker.replace(cx.waker().clone()).is_none() {
                    self.tracker.waiting.set(self.tracker.waiting.get() + 1);
                }
            }
            Poll::Pending
        })
        .await
    }

    /// True once [`Tracked::serialise`] was called.
    pub fn is_serialising(&self) -> bool {
        self.tracker.slots.borrow().get(self.index).and_then(|e| e.as_ref().map(|e| e.serialising)) == Some(true)
    }

    /// The request's kind.
    pub fn kind(&self) -> Option<ReqKind> {
        self.tracker.slots.borrow().get(self.index).and_then(|e| e.as_ref().map(|e| e.kind))
    }
}

impl Drop for Tracked<'_> {
    fn drop(&mut self) {
        self.tracker.release(self.index);
    }
}

#[cfg(test)]
mod tests;
