//! The handle users hold (QEMU's `BlockBackend`): a root node, the permissions taken on it,
//! bounds checks, zero detection, in-flight counting and drain, and accounting.

pub mod blocking;
#[cfg(feature = "embedded-sdmmc")] pub mod sdmmc;
mod stats;
#[cfg(feature = "embedded-io")] pub mod stream;

use core::cell::{Cell, RefCell};

pub use stats::{KindStats, OpKind, Stats, BUCKETS, KINDS};

use crate::error::{Error, Result};
use crate::graph::{Attachment, Graph, GraphRef, NodeId, UserId};
use crate::io::{wait_until, zero, RangeOp};
use crate::path::route::ReadRoute;
use crate::path::{flush, request, walk};

/// What to do with writes whose data is all zeros (QEMU's `detect-zeroes`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum DetectZeroes {
    /// Write them as data.
    #[default]
    Off,
    /// Turn them into write-zeroes.
    On,
    /// Turn them into write-zeroes that may deallocate.
    Unmap,
}

/// How a backend is opened.
#[derive(Clone, Copy, Debug)]
pub struct BackendOptions {
    /// Take only read permissions; writes fail with [`Error::ReadOnly`].
    pub read_only: bool,
    /// Zero detection for writes.
    pub detect_zeroes: DetectZeroes,
    /// Monotonic clock in nanoseconds, for latency accounting.
    pub clock: fn() -> u64,
}

fn no_clock() -> u64 {
    0
}

impl Default for BackendOptions {
    fn default() -> Self {
        Self { read_only: false, detect_zeroes: DetectZeroes::Off, clock: no_clock }
    }
}

/// A user's handle on a node.
///
/// Every request future may be dropped at any await point: slots and buffers are released and
/// device requests already submitted are waited for in the destructor. Leaking a request future
/// with `mem::forget` instead of dropping it lets the device write into memory the caller has
/// reused: don't.
pub struct Backend<'g, 'd> {
    graph: GraphRef<'g, 'd>,
    root: NodeId,
    user: UserId,
    opts: BackendOptions,
    stats: RefCell<Stats>,
    in_flight: Cell<u32>,
    quiesce: Cell<u32>,
    /// Writes and write-zeroes flush before they complete (QEMU's backend with its write cache
    /// off: `BDRV_REQ_FUA` emulated by a flush, qemu-io's default).
    write_through: Cell<bool>,
    /// What the graph's shape allows of reads done at once.
    reads: ReadRoute<'d>,
    /// The clock when the last request finished: see [`Backend::last_done`].
    last_done: Cell<u64>,
}

/// A drained section of a [`Backend`]: new requests wait until this is dropped.
pub struct Drained<'b, 'g, 'd> {
    backend: &'b Backend<'g, 'd>,
}

impl Drop for Drained<'_, '_, '_> {
    fn drop(&mut self) {
        let q = &self.backend.quiesce;
        q.set(q.get().saturating_sub(1));
    }
}

/// Counts a request in flight for its lifetime.
struct InFlight<'a>(&'a Cell<u32>);

/// A request let in by [`Backend::admit`]: counted in flight until dropped, timed from `start`.
struct Admitted<'a> {
    _in_flight: InFlight<'a>,
    start: u64,
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.set(self.0.get() - 1);
    }
}

impl<'g, 'd> Backend<'g, 'd> {
    /// Attaches to `root` as a reader that shares everything ([`Attachment::SHARED_READER`]) or
    /// as a writer that shares only reading (QEMU's default): readers attach next to a writer,
    /// a second writer is refused.
    pub fn new<const N: usize, const T: usize>(graph: &'g Graph<'d, N, T>, root: NodeId, opts: BackendOptions) -> Result<Self> {
        if !opts.read_only && !cfg!(feature = "write") {
            return Err(crate::driver::NO_WRITE);
        }
        let graph = graph.handle();
        let attachment = if opts.read_only { Attachment::SHARED_READER } else { Attachment::WRITER };
        let user = graph.attach_user(root, attachment)?;
        Ok(Self {
            graph,
            root,
            user,
            opts,
            stats: RefCell::new(Stats::default()),
            in_flight: Cell::new(0),
            quiesce: Cell::new(0),
            write_through: Cell::new(false),
            reads: ReadRoute::default(),
            last_done: Cell::new(0),
        })
    }

    /// Turns write-through on or off (off by default): with it, a write or write-zeroes
    /// completes only after a flush of the root, and fails if that flush fails (QEMU's
    /// `blk_set_enable_write_cache(false)`; qemu-io's default cache mode).
    pub fn set_write_through(&self, on: bool) {
        self.write_through.set(on);
    }

    /// The root node.
    pub fn root(&self) -> NodeId {
        self.root
    }

    /// The graph.
    pub fn graph(&self) -> GraphRef<'g, 'd> {
        self.graph
    }

    /// Size of the root node in bytes.
    pub fn size(&self) -> u64 {
        self.graph.node(self.root).map_or(0, |n| n.size())
    }

    /// The clock's reading ([`BackendOptions::clock`]) when the last request finished, 0 before
    /// the first. A caller timing its requests on the same clock reads this right after one
    /// returns instead of reading the clock again (a single-threaded executor finishes no other
    /// request in between).
    pub fn last_done(&self) -> u64 {
        self.last_done.get()
    }

    /// Counters so far.
    pub fn stats(&self) -> Stats {
        *self.stats.borrow()
    }

    /// Requests in flight.
    pub fn in_flight(&self) -> u32 {
        self.in_flight.get()
    }

    /// Reads `buf.len()` bytes at `offset`.
    pub async fn read(&self, offset: u64, buf: &mut [u8]) -> Result<()> {
        let len = buf.len() as u64;
        // Admitted at once unless a drain is on: no future to build on the common path.
        let admitted = match self.admit_now() {
            Some(a) => a,
            None => self.admit().await,
        };
        let result = match self.check_range(offset, len) {
            Ok(()) => {
                let stack = self.graph.stack_ref();
                // A warm read on host files completes here, without the futures below.
                match self.reads.read_now(stack, self.root, offset, buf) {
                    Some(result) => result,
                    None => self.reads.read_queued(stack, self.root, offset, buf).await,
                }
            }
            Err(e) => Err(e),
        };
        self.account(admitted, OpKind::Read, offset, len, result)
    }

    /// Writes `buf` at `offset` (as write-zeroes if it is all zeros and detect-zeroes is on).
    pub async fn write(&self, offset: u64, buf: &[u8]) -> Result<()> {
        let len = buf.len() as u64;
        let admitted = self.admit().await;
        let result = match self.write_admitted(offset, buf).await {
            Ok(()) => self.flush_if_write_through().await,
            Err(e) => Err(e),
        };
        self.account(admitted, OpKind::Write, offset, len, result)
    }

    async fn write_admitted(&self, offset: u64, buf: &[u8]) -> Result<()> {
        let len = buf.len() as u64;
        self.check_write(offset, len)?;
        self.check_probed_raw_header(offset, buf).await?;
        let as_zeroes = match self.opts.detect_zeroes {
            DetectZeroes::Off => None,
            DetectZeroes::On => Some(false),
            DetectZeroes::Unmap => Some(true),
        };
        match as_zeroes {
            Some(unmap) if zero::is_zero(buf) => request::range_op(&self.graph.stack(), self.root, offset, len, RangeOp::WriteZeroes { unmap }).await,
            _ => request::write(&self.graph.stack(), self.root, offset, buf).await,
        }
    }

    /// Refuses a write of `buf` at `offset` into the first [`driver::PROBE_BYTES`] of a probed
    /// raw root that would make them probe as another format (QEMU restricts "write operations
    /// on block 0" of probed raw images the same way). Zeroing and discarding never make a
    /// header, so only data writes are checked. A write covering part of the probe area is
    /// checked against the area as it would read afterwards.
    async fn check_probed_raw_header(&self, offset: u64, buf: &[u8]) -> Result<()> {
        use crate::driver::{self, PROBE_BYTES};
        let node = self.graph.node(self.root)?;
        if !node.probed || node.driver != driver::raw::RAW.name || offset >= PROBE_BYTES as u64 {
            return Ok(());
        }
        let mut head = [0u8; PROBE_BYTES];
        let size = (node.size() as usize).min(PROBE_BYTES);
        let at = offset as usize;
        let covered = buf.len().min(size.saturating_sub(at));
        if at > 0 || covered < size {
            // A probe, not a user's read: no filter copies or compares it.
            walk::read_request(&self.graph.stack(), self.root, 0, &mut head[..size]).await?;
        }
        head[at..at + covered].copy_from_slice(&buf[..covered]);
        if driver::probe(&head[..size]).id == driver::raw::RAW.id {
            Ok(())
        } else {
            Err(Error::ProbedRawHeader)
        }
    }

    /// Makes `len` bytes at `offset` read as zeros; `unmap` allows deallocating them.
    pub async fn write_zeroes(&self, offset: u64, len: u64, unmap: bool) -> Result<()> {
        self.range_op(OpKind::WriteZeroes, offset, len, RangeOp::WriteZeroes { unmap }).await
    }

    /// Discards `len` bytes at `offset` (advisory: the data may or may not read as zeros).
    pub async fn discard(&self, offset: u64, len: u64) -> Result<()> {
        self.range_op(OpKind::Discard, offset, len, RangeOp::Discard).await
    }

    async fn range_op(&self, kind: OpKind, offset: u64, len: u64, op: RangeOp) -> Result<()> {
        let admitted = self.admit().await;
        let result = match self.check_write(offset, len) {
            Ok(()) => request::range_op(&self.graph.stack(), self.root, offset, len, op).await,
            Err(e) => Err(e),
        };
        let result = match result {
            Ok(()) if matches!(op, RangeOp::WriteZeroes { .. }) => self.flush_if_write_through().await,
            other => other,
        };
        self.account(admitted, kind, offset, len, result)
    }

    /// The flush that completes a write in write-through mode.
    async fn flush_if_write_through(&self) -> Result<()> {
        if self.write_through.get() {
            flush::flush(&self.graph.stack(), self.root).await
        } else {
            Ok(())
        }
    }

    /// Makes every write completed before this call stable.
    pub async fn flush(&self) -> Result<()> {
        let admitted = self.admit().await;
        let result = flush::flush(&self.graph.stack(), self.root).await;
        self.account(admitted, OpKind::Flush, 0, 0, result)
    }

    /// Grows the root node to `new_size` bytes (QEMU's `block_resize`; qcow2 only, growing
    /// only). Waits for requests in flight and holds new ones meanwhile.
    pub async fn resize(&self, new_size: u64) -> Result<()> {
        if self.opts.read_only {
            return Err(Error::ReadOnly);
        }
        let _drained = self.drain().await;
        match self.graph.state(self.root)? {
            Some(state) => state.resize(&self.graph.io(), self.root, new_size).await,
            None => Err(Error::Unsupported("resizing a device")),
        }
    }

    /// Closes cleanly: waits for requests in flight, writes every cache back, makes it stable
    /// and marks images clean (qcow2's dirty bit). Dropping a backend without this is a crash as
    /// far as the image is concerned: what was not flushed may be lost (an unflushed qcow2 may
    /// leak clusters), and an image with lazy refcounts stays marked dirty.
    pub async fn close(self) -> Result<()> {
        let _drained = self.drain().await;
        flush::close(&self.graph.stack(), self.root).await
    }

    /// Stops new requests from starting (at once, when called) and waits until none of this
    /// backend's requests is in flight. Requests issued meanwhile wait until the returned guard
    /// is dropped (QEMU's drained section); dropping the future before it completes ends the
    /// drain too. Nests. Requests a node holds (a latency, a throttle) are released while the
    /// drain waits, so it ends (QEMU restarts throttled requests the same way).
    pub fn drain(&self) -> impl core::future::Future<Output = Drained<'_, 'g, 'd>> + '_ {
        self.quiesce.set(self.quiesce.get() + 1);
        let guard = Drained { backend: self };
        async move {
            let _release = self.graph.release_held();
            wait_until(|| self.in_flight.get() == 0).await;
            guard
        }
    }

    /// Starts a submission batch (see [`Graph::plug`]).
    pub fn plug(&self) {
        self.graph.plug();
    }

    /// Ends a submission batch (see [`Graph::unplug`]).
    pub fn unplug(&self) {
        self.graph.unplug();
    }

    fn check_range(&self, offset: u64, len: u64) -> Result<()> {
        let size = self.size();
        match offset.checked_add(len) {
            Some(end) if end <= size => Ok(()),
            _ => Err(Error::OutOfRange { offset, len, size }),
        }
    }

    fn check_write(&self, offset: u64, len: u64) -> Result<()> {
        if self.opts.read_only {
            return Err(Error::ReadOnly);
        }
        self.check_range(offset, len)
    }

    /// Waits out a drain, then counts a request in flight and starts its clock.
    ///
    /// Requests call this and [`Backend::account`] around their body instead of handing the body
    /// to a wrapper: a future passed by value is copied whole (kilobytes) on every request.
    async fn admit(&self) -> Admitted<'_> {
        wait_until(|| self.quiesce.get() == 0).await;
        self.admitted()
    }

    /// [`Backend::admit`] without waiting: `None` while a drain is on.
    fn admit_now(&self) -> Option<Admitted<'_>> {
        (self.quiesce.get() == 0).then(|| self.admitted())
    }

    fn admitted(&self) -> Admitted<'_> {
        self.in_flight.set(self.in_flight.get() + 1);
        Admitted { _in_flight: InFlight(&self.in_flight), start: (self.opts.clock)() }
    }

    /// Records a finished request in the stats and returns its result.
    fn account(&self, admitted: Admitted<'_>, kind: OpKind, offset: u64, len: u64, result: Result<()>) -> Result<()> {
        let now = (self.opts.clock)();
        self.last_done.set(now);
        let latency = now.saturating_sub(admitted.start);
        let mut stats = self.stats.borrow_mut();
        stats.record(kind, len, latency, result.is_ok());
        if result.is_ok() && len > 0 && matches!(kind, OpKind::Write | OpKind::WriteZeroes) {
            stats.wr_highest_offset = stats.wr_highest_offset.max(offset + len);
        }
        result
    }
}

impl Drop for Backend<'_, '_> {
    fn drop(&mut self) {
        self.graph.detach_user(self.user);
    }
}
