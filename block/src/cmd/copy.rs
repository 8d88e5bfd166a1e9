//! The one copy loop: copies a guest range from a source [`Backend`] to a [`CopyTarget`],
//! extent by extent, as block status describes the source (QEMU: qemu-img.c's
//! `convert_iteration_sectors` / `convert_co_do_copy`, and the loops under `commit` and
//! `rebase`). `img convert` runs it today; `commit` and `rebase` plug in through
//! [`ExtentPolicy`].
//!
//! It lives in `cmd` (the top layer) because it needs a [`Backend`] (layer 7) for the data and
//! [`crate::path::block_status`] (layer 5) for the extents; nothing below it needs to know a
//! copy exists.
//!
//! # Shape
//!
//! ```text
//! let copy = Copy::new(&src, &dst, None, &policy, &hooks, cfg)?;    // shared state, no I/O
//! join(copy.worker(&mut buf0, &mut []), copy.worker(&mut buf1, &mut [])).await; // any executor
//! let summary = copy.finish()?;                                      // first error, or counts
//! ```
//!
//! - **Workers** (one per request in flight: qemu-img's `-m`) are polled by the caller's
//!   executor, each with its own buffer of at least [`CopyConfig::chunk`] bytes (and a second one
//!   when a policy answers [`Action::CopyIfDiffers`]). Nothing is allocated.
//! - **Claiming** is serial (qemu-img's `s->lock`): one worker at a time asks block status and
//!   takes the next piece, so pieces are claimed in order and never twice.
//! - **Extents → actions**: each source extent (a [`crate::path::Extent`], with the backing
//!   depth where it was found) goes to the [`ExtentPolicy`]: [`Action::Copy`] (read, write the
//!   non-zero runs, treat zero runs as zeros), [`Action::Zero`] (make the range read as zeros:
//!   nothing when [`CopyConfig::target_zeroed`], else `write_zeroes`), [`Action::Skip`] (leave
//!   the target alone) or [`Action::CopyIfDiffers`] (read source and the compare backend, write
//!   only the runs that differ: `rebase`'s safe mode). [`Standard`] is convert's and commit's
//!   policy: with `base_depth: Some(b)`, extents found `b` or more backing links down are left
//!   alone ("copy only what is allocated above base"; convert `-B` is `Some(1)`).
//! - **Host holes**: [`CopyHooks::host_hole`] may say that data on a leaf is a hole of a host
//!   file (SEEK_HOLE); such a piece counts as [`crate::path::ExtentKind::Zero`].
//! - **Alignment** ([`CopyConfig::align`]): a piece longer than its unaligned tail ends on a
//!   multiple of `align` (qemu-img keeps pieces to the source's cluster size). **Units**
//!   ([`CopyConfig::unit`], e.g. a compressed target's cluster): every write covers whole units;
//!   a unit whose pieces disagree is copied whole (reading is always right).
//! - **Zero runs inside data** ([`CopyConfig::sparse`], qemu-img `-S`): aligned runs of that many
//!   zero bytes are not written as data (0: everything read is written).
//! - **Order** ([`CopyConfig::in_order`], qemu-img without `-W`): writes happen in claim order;
//!   reads still overlap.
//! - **Hooks**: [`CopyHooks::claimed`] for progress (called as a piece is claimed, qemu-img counts
//!   a chunk when it starts it) and [`CopyHooks::pace`] before each read for rate limiting
//!   ([`RateLimit`] holds QEMU's `ratelimit` arithmetic for hooks that want it).
//! - **Errors**: the first failure stops every worker at its next claim; [`Copy::finish`] returns
//!   it as a [`CopyError`] naming the operation and the offset (qemu-img's "error while reading
//!   at byte N"). No flush is done here: the caller flushes the target.

use core::cell::{Cell, RefCell};

use crate::backend::Backend;
use crate::error::{Error, Result};
use crate::io::wait_until;
use crate::io::zero::is_zero;
use crate::node::NodeId;
use crate::path::{block_status, Extent, ExtentKind};

/// Most bytes asked for per block-status call.
const STATUS_STEP: u64 = 1 << 40;
/// Compare granularity of [`Action::CopyIfDiffers`] when [`CopyConfig::sparse`] is 0.
const DIFF_GRAIN: u64 = 512;

/// What to do with one piece of the source.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// Read it and write it (zero runs as zeros).
    Copy,
    /// Read it and the compare backend; write the runs that differ.
    CopyIfDiffers,
    /// Make it read as zeros in the target.
    Zero,
    /// Leave the target alone.
    Skip,
}

/// Decides what happens to each source extent.
pub trait ExtentPolicy {
    /// The action for `ext`, found at guest `offset` of the source.
    fn action(&self, offset: u64, ext: &Extent) -> Action;
}

/// convert's and commit's policy: data is copied, zeros are zeros; with `base_depth: Some(b)`,
/// what the walk found `b` or more backing links down (and ranges no layer has) is left to the
/// target's backing.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Standard {
    /// Depth of the base: extents at this depth or deeper are skipped (`None`: the whole chain
    /// is copied).
    pub base_depth: Option<u16>,
}

impl ExtentPolicy for Standard {
    fn action(&self, _offset: u64, ext: &Extent) -> Action {
        if let Some(base) = self.base_depth {
            if ext.depth >= base || ext.kind == ExtentKind::Hole {
                return Action::Skip;
            }
        }
        match ext.kind {
            ExtentKind::Zero | ExtentKind::Hole => Action::Zero,
            ExtentKind::Data { .. } | ExtentKind::Compressed | ExtentKind::Sink => Action::Copy,
        }
    }
}

/// Where the copy writes.
#[allow(async_fn_in_trait)] // reason: used through generics only, never `dyn`
pub trait CopyTarget {
    /// Writes `data` at `offset`.
    async fn write(&self, offset: u64, data: &[u8]) -> Result<()>;
    /// Makes `len` bytes at `offset` read as zeros (they may be deallocated).
    async fn write_zeroes(&self, offset: u64, len: u64) -> Result<()>;
    /// Copies `len` bytes at `src_offset` of source leaf `src_leaf` to `offset` without the
    /// loop's buffer (copy offloading: `copy_file_range` between host files, QEMU's
    /// `copy_range`). `Ok(false)`: not done, the loop reads and writes instead (the default).
    async fn copy_range(
        &self,
        src_leaf: NodeId,
        src_offset: u64,
        offset: u64,
        len: u64,
    ) -> Result<bool> {
        let _ = (src_leaf, src_offset, offset, len);
        Ok(false)
    }
}

impl CopyTarget for Backend<'_, '_> {
    async fn write(&self, offset: u64, data: &[u8]) -> Result<()> {
        Backend::write(self, offset, data).await
    }
    async fn write_zeroes(&self, offset: u64, len: u64) -> Result<()> {
        Backend::write_zeroes(self, offset, len, true).await
    }
}

/// What the caller hears from the loop. Every method has a default that does nothing.
#[allow(async_fn_in_trait)] // reason: used through generics only, never `dyn`
pub trait CopyHooks {
    /// Whether `[offset, offset + len)` of leaf `leaf` is a hole of a host file, and for how
    /// many bytes that stays so (at least 1, at most `len`); `None`: not known (data).
    fn host_hole(&self, leaf: NodeId, offset: u64, len: u64) -> Option<(bool, u64)> {
        let _ = (leaf, offset, len);
        None
    }
    /// A piece was claimed (progress).
    fn claimed(&self, offset: u64, len: u64, action: Action) {
        let _ = (offset, len, action);
    }
    /// Called before a piece of `len` bytes is read; may wait (rate limit).
    async fn pace(&self, len: u64) {
        let _ = len;
    }
}

/// Hooks that do nothing.
#[derive(Clone, Copy, Debug, Default)]
pub struct NoHooks;
impl CopyHooks for NoHooks {}

/// How the loop cuts and writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CopyConfig {
    /// First guest byte to copy.
    pub start: u64,
    /// End of the range (exclusive; at most the source's size).
    pub end: u64,
    /// Most bytes per read (each worker's buffer holds at least this).
    pub chunk: u64,
    /// Pieces longer than their unaligned tail end on multiples of this (1: no rounding).
    pub align: u64,
    /// Writes cover whole units of this many bytes (1: any length). `chunk` must be a multiple.
    pub unit: u64,
    /// Aligned zero runs of this many bytes inside data are treated as zeros (0: never).
    pub sparse: u64,
    /// The target reads as zeros wherever it was not written (a new image without backing):
    /// zeros need no write.
    pub target_zeroed: bool,
    /// Writes in claim order (qemu-img's default; `-W` turns it off).
    pub in_order: bool,
}

impl CopyConfig {
    /// Copy `[0, size)` in 2 MiB chunks, 512-byte alignment, 4 KiB sparse runs, into a zeroed
    /// target, in order.
    pub fn new(size: u64) -> Self {
        Self {
            start: 0,
            end: size,
            chunk: 2 << 20,
            align: 512,
            unit: 1,
            sparse: 4096,
            target_zeroed: true,
            in_order: true,
        }
    }
}

/// Which operation failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CopyOp {
    /// Block status of the source.
    Status,
    /// Reading the source.
    Read,
    /// Reading the compare backend.
    ReadCompare,
    /// Writing data.
    Write,
    /// Writing zeros.
    WriteZeroes,
    /// The configuration or buffers do not fit.
    Config,
}

/// A failed copy: the first error, where it happened.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CopyError {
    /// The operation.
    pub op: CopyOp,
    /// Guest offset of the request.
    pub offset: u64,
    /// The error.
    pub error: Error,
}

impl CopyError {
    /// Wraps a failure of `op` at `offset` (for `map_err`).
    fn at(op: CopyOp, offset: u64) -> impl FnOnce(Error) -> Self {
        move |error| Self { op, offset, error }
    }
}

/// What a finished copy did, in bytes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Summary {
    /// Bytes read from the source.
    pub read: u64,
    /// Bytes written as data.
    pub written: u64,
    /// Bytes written as zeros (`write_zeroes`).
    pub zeroed: u64,
    /// Bytes left alone (skipped, or zeros on a zeroed target).
    pub skipped: u64,
}

/// A claimed piece.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Piece {
    offset: u64,
    len: u64,
    action: Action,
    /// The source leaf and offset the piece's bytes lie at, when they lie in one place.
    leaf: Option<(NodeId, u64)>,
    seq: u64,
}

/// State shared by the workers.
struct Shared {
    next: u64,
    claimed: u64,
    written: u64,
    summary: Summary,
    error: Option<CopyError>,
}

/// One copy (see the module docs).
pub struct Copy<'a, 'g, 'd, T, P, H> {
    src: &'a Backend<'g, 'd>,
    dst: &'a T,
    compare: Option<&'a Backend<'g, 'd>>,
    policy: &'a P,
    hooks: &'a H,
    cfg: CopyConfig,
    shared: RefCell<Shared>,
    busy: Cell<bool>,
}

impl<'a, 'g, 'd, T: CopyTarget, P: ExtentPolicy, H: CopyHooks> Copy<'a, 'g, 'd, T, P, H> {
    /// A copy of `cfg`'s range of `src` into `dst`; `compare` is read where the policy answers
    /// [`Action::CopyIfDiffers`]. Refuses a configuration that cannot work
    /// ([`Error::BadOption`]).
    pub fn new(
        src: &'a Backend<'g, 'd>,
        dst: &'a T,
        compare: Option<&'a Backend<'g, 'd>>,
        policy: &'a P,
        hooks: &'a H,
        cfg: CopyConfig,
    ) -> Result<Self> {
        let bad = |why| Err(Error::BadOption { key: "copy", why });
        if cfg.chunk == 0 || cfg.align == 0 || cfg.unit == 0 {
            return bad("chunk, align and unit must not be 0");
        }
        if !cfg.chunk.is_multiple_of(cfg.unit) {
            return bad("chunk must be a multiple of unit");
        }
        if cfg.end > src.size() || cfg.start > cfg.end {
            return Err(Error::OutOfRange {
                offset: cfg.start,
                len: cfg.end.saturating_sub(cfg.start),
                size: src.size(),
            });
        }
        let shared = Shared {
            next: cfg.start,
            claimed: 0,
            written: 0,
            summary: Summary::default(),
            error: None,
        };
        Ok(Self {
            src,
            dst,
            compare,
            policy,
            hooks,
            cfg,
            shared: RefCell::new(shared),
            busy: Cell::new(false),
        })
    }

    /// The configuration.
    pub fn config(&self) -> &CopyConfig {
        &self.cfg
    }

    /// Counts so far.
    pub fn summary(&self) -> Summary {
        self.shared.borrow().summary
    }

    /// The first error, or the counts. Call after every worker returned.
    pub fn finish(self) -> core::result::Result<Summary, CopyError> {
        let s = self.shared.into_inner();
        match s.error {
            Some(e) => Err(e),
            None => Ok(s.summary),
        }
    }

    /// The bytes [`Action::Copy`] and [`Action::CopyIfDiffers`] would claim, without copying
    /// (a progress line's total). Reads metadata only.
    pub async fn bytes_to_copy(&self) -> core::result::Result<u64, CopyError> {
        let mut pos = self.cfg.start;
        let mut total = 0;
        while pos < self.cfg.end {
            let (action, n, _) = self.piece(pos).await?;
            if matches!(action, Action::Copy | Action::CopyIfDiffers) {
                total += n;
            }
            pos += n;
        }
        Ok(total)
    }

    /// Runs one worker until the range is done or a worker failed. `buf` holds at least
    /// [`CopyConfig::chunk`] bytes; `cmp` as much where [`Action::CopyIfDiffers`] can happen
    /// (else it may be empty). Errors are kept for [`Copy::finish`].
    pub async fn worker(&self, buf: &mut [u8], cmp: &mut [u8]) {
        if (buf.len() as u64) < self.cfg.chunk {
            self.fail(
                CopyOp::Config,
                0,
                Error::NoSpace {
                    what: "copy buffer smaller than the chunk",
                },
            );
            return;
        }
        loop {
            let piece = match self.claim().await {
                Ok(Some(p)) => p,
                Ok(None) => return,
                Err(e) => {
                    self.fail(e.op, e.offset, e.error);
                    return;
                }
            };
            if let Err(e) = self.run(piece, buf, cmp).await {
                self.fail(e.op, e.offset, e.error);
                // Later pieces must not wait for this one's turn.
                self.turn_done(piece);
                return;
            }
        }
    }

    fn fail(&self, op: CopyOp, offset: u64, error: Error) {
        let mut s = self.shared.borrow_mut();
        if s.error.is_none() {
            s.error = Some(CopyError { op, offset, error });
        }
    }

    /// The next piece to work on (skipped pieces are consumed here), or `None` at the end or
    /// after a failure.
    async fn claim(&self) -> core::result::Result<Option<Piece>, CopyError> {
        wait_until(|| !self.busy.get()).await;
        self.busy.set(true);
        let _guard = Unbusy(&self.busy);
        loop {
            let (at, failed) = {
                let s = self.shared.borrow();
                (s.next, s.error.is_some())
            };
            if failed || at >= self.cfg.end {
                return Ok(None);
            }
            let (action, n, leaf) = self.piece(at).await?;
            let mut s = self.shared.borrow_mut();
            let n = match action {
                // A chunk ends on a unit boundary (after a start inside a unit too).
                Action::Copy | Action::CopyIfDiffers => n.min(self.cfg.chunk - at % self.cfg.unit),
                Action::Zero | Action::Skip => n,
            };
            s.next = at + n;
            let zero_needs_write = action == Action::Zero && !self.cfg.target_zeroed;
            if action == Action::Skip || (action == Action::Zero && !zero_needs_write) {
                s.summary.skipped += n;
                continue;
            }
            let seq = s.claimed;
            s.claimed += 1;
            drop(s);
            self.hooks.claimed(at, n, action);
            return Ok(Some(Piece {
                offset: at,
                len: n,
                action,
                leaf,
                seq,
            }));
        }
    }

    /// The action and length at `pos` (aligned, whole units).
    async fn piece(
        &self,
        pos: u64,
    ) -> core::result::Result<(Action, u64, Option<(NodeId, u64)>), CopyError> {
        let end = self.cfg.end;
        let (action, n, leaf) = self.raw_piece(pos, end - pos).await?;
        let n = trim(pos, n, self.cfg.align);
        let unit = self.cfg.unit;
        if unit <= 1 {
            return Ok((action, n, leaf));
        }
        // Whole units: every piece so far ended on a unit boundary (or at `start`).
        let unit_end = (pos - pos % unit).saturating_add(unit).min(end);
        if pos + n >= unit_end {
            let covered = if pos + n >= end {
                end - pos
            } else {
                (pos + n) - (pos + n) % unit - pos
            };
            return Ok((action, covered.max(unit_end - pos), None));
        }
        // A short piece: the unit is copied whole unless every piece in it agrees.
        let mut at = pos + n;
        while at < unit_end {
            let (a, m, _) = self.raw_piece(at, unit_end - at).await?;
            if a != action {
                return Ok((Action::Copy, unit_end - pos, None));
            }
            at += m;
        }
        Ok((action, unit_end - pos, None))
    }

    /// The policy's action for the extent at `pos`, at most `len` bytes (at least 1).
    async fn raw_piece(
        &self,
        pos: u64,
        len: u64,
    ) -> core::result::Result<(Action, u64, Option<(NodeId, u64)>), CopyError> {
        let graph = self.src.graph();
        let mut ext = block_status(&graph.stack(), self.src.root(), pos, len.min(STATUS_STEP))
            .await
            .map_err(CopyError::at(CopyOp::Status, pos))?;
        ext.len = ext.len.clamp(1, len);
        let mut at_leaf = None;
        if let ExtentKind::Data { leaf, offset, .. } = ext.kind {
            at_leaf = Some((leaf, offset));
            if let Some((hole, h)) = self.hooks.host_hole(leaf, offset, ext.len) {
                ext.len = h.clamp(1, ext.len);
                if hole {
                    ext.kind = ExtentKind::Zero;
                    at_leaf = None;
                }
            }
        }
        Ok((self.policy.action(pos, &ext), ext.len, at_leaf))
    }

    async fn run(
        &self,
        p: Piece,
        buf: &mut [u8],
        cmp: &mut [u8],
    ) -> core::result::Result<(), CopyError> {
        let len = p.len as usize;
        match p.action {
            Action::Skip => {}
            Action::Zero => {
                self.my_turn(p).await;
                self.zero(p.offset, p.len).await?;
            }
            Action::Copy => {
                self.hooks.pace(p.len).await;
                if let Some((leaf, at)) = p.leaf {
                    self.my_turn(p).await;
                    let done = self
                        .dst
                        .copy_range(leaf, at, p.offset, p.len)
                        .await
                        .map_err(CopyError::at(CopyOp::Write, p.offset))?;
                    if done {
                        let mut s = self.shared.borrow_mut();
                        s.summary.read += p.len;
                        s.summary.written += p.len;
                        drop(s);
                        self.turn_done(p);
                        return Ok(());
                    }
                }
                let data = &mut buf[..len];
                self.src
                    .read(p.offset, data)
                    .await
                    .map_err(CopyError::at(CopyOp::Read, p.offset))?;
                self.shared.borrow_mut().summary.read += p.len;
                self.my_turn(p).await;
                self.write_runs(p.offset, data, None).await?;
            }
            Action::CopyIfDiffers => {
                let Some(compare) = self.compare else {
                    return Err(CopyError {
                        op: CopyOp::Config,
                        offset: p.offset,
                        error: Error::BadOption {
                            key: "copy",
                            why: "CopyIfDiffers without a compare backend",
                        },
                    });
                };
                if cmp.len() < len {
                    return Err(CopyError {
                        op: CopyOp::Config,
                        offset: p.offset,
                        error: Error::NoSpace {
                            what: "compare buffer smaller than the chunk",
                        },
                    });
                }
                self.hooks.pace(p.len).await;
                let data = &mut buf[..len];
                let other = &mut cmp[..len];
                self.src
                    .read(p.offset, data)
                    .await
                    .map_err(CopyError::at(CopyOp::Read, p.offset))?;
                compare
                    .read(p.offset, other)
                    .await
                    .map_err(CopyError::at(CopyOp::ReadCompare, p.offset))?;
                self.shared.borrow_mut().summary.read += p.len;
                self.my_turn(p).await;
                self.write_runs(p.offset, data, Some(other)).await?;
            }
        }
        self.turn_done(p);
        Ok(())
    }

    /// Waits until every earlier piece was written (in-order mode).
    async fn my_turn(&self, p: Piece) {
        if self.cfg.in_order {
            wait_until(|| {
                let s = self.shared.borrow();
                s.written >= p.seq || s.error.is_some()
            })
            .await;
        }
    }

    fn turn_done(&self, p: Piece) {
        let mut s = self.shared.borrow_mut();
        if s.written == p.seq {
            s.written = p.seq + 1;
        }
    }

    async fn zero(&self, offset: u64, len: u64) -> core::result::Result<(), CopyError> {
        if self.cfg.target_zeroed {
            self.shared.borrow_mut().summary.skipped += len;
            return Ok(());
        }
        self.dst
            .write_zeroes(offset, len)
            .await
            .map_err(|error| CopyError {
                op: CopyOp::WriteZeroes,
                offset,
                error,
            })?;
        self.shared.borrow_mut().summary.zeroed += len;
        Ok(())
    }

    /// Writes `data` (at guest `offset`) run by run: zero runs as zeros, the rest as data;
    /// with `other`, only runs that differ from it.
    async fn write_runs(
        &self,
        offset: u64,
        data: &[u8],
        other: Option<&[u8]>,
    ) -> core::result::Result<(), CopyError> {
        let grain = match (other.is_some(), self.cfg.sparse) {
            (true, 0) => DIFF_GRAIN,
            (_, s) => s,
        };
        let mut at = 0usize;
        while at < data.len() {
            let (kind, end) = next_run(data, other, offset, at, grain);
            let pos = offset + at as u64;
            let n = (end - at) as u64;
            match kind {
                Run::Same => self.shared.borrow_mut().summary.skipped += n,
                Run::Zero => self.zero(pos, n).await?,
                Run::Data => {
                    self.dst
                        .write(pos, &data[at..end])
                        .await
                        .map_err(CopyError::at(CopyOp::Write, pos))?;
                    self.shared.borrow_mut().summary.written += n;
                }
            }
            at = end;
        }
        Ok(())
    }
}

/// Clears the claiming flag when the claim ends (or its future is dropped).
struct Unbusy<'a>(&'a Cell<bool>);
impl Drop for Unbusy<'_> {
    fn drop(&mut self) {
        self.0.set(false);
    }
}

/// `n` bytes from `pos`, ending on a multiple of `align` when the piece is longer than its
/// unaligned tail (as qemu-img's pieces do).
fn trim(pos: u64, n: u64, align: u64) -> u64 {
    let tail = (pos + n) % align.max(1);
    if n > tail {
        n - tail
    } else {
        n
    }
}

/// What a run of a read chunk is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Run {
    /// Equal to the compare data: nothing to write.
    Same,
    /// All zeros (a sparse run).
    Zero,
    /// Data to write.
    Data,
}

/// The run of `data` from index `at`: its kind and end index. `data` starts at guest `offset`;
/// runs are made of `grain`-byte blocks aligned to the guest (0: the whole rest is one data
/// run); neighbouring blocks of the same kind join.
fn next_run(data: &[u8], other: Option<&[u8]>, offset: u64, at: usize, grain: u64) -> (Run, usize) {
    if grain == 0 {
        return match other {
            Some(o) if o.get(at..) == data.get(at..) => (Run::Same, data.len()),
            _ => (Run::Data, data.len()),
        };
    }
    let block = |i: usize| -> (Run, usize) {
        let to_boundary = (grain - (offset + i as u64) % grain) as usize;
        let end = (i + to_boundary).min(data.len());
        let part = &data[i..end];
        let kind = match other {
            Some(o) if o.get(i..end) == Some(part) => Run::Same,
            Some(_) => Run::Data,
            None if is_zero(part) => Run::Zero,
            None => Run::Data,
        };
        (kind, end)
    };
    let (kind, mut end) = block(at);
    while end < data.len() {
        let (k, e) = block(end);
        if k != kind {
            break;
        }
        end = e;
    }
    (kind, end)
}

/// QEMU's `RateLimit` (include/qemu/ratelimit.h): a quota of bytes per time slice; past it, the
/// caller waits until the slice ends. Pure arithmetic over a caller's clock reading.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RateLimit {
    slice_quota: u64,
    slice_ns: u64,
    slice_end_ns: u64,
    dispatched: u64,
}

impl RateLimit {
    /// `bytes_per_sec` over slices of `slice_ns` (QEMU's block jobs use 100 ms).
    pub fn new(bytes_per_sec: u64, slice_ns: u64) -> Self {
        let slice_ns = slice_ns.max(1);
        let quota = (u128::from(bytes_per_sec) * u128::from(slice_ns) / 1_000_000_000).max(1);
        Self {
            slice_quota: u64::try_from(quota).unwrap_or(u64::MAX),
            slice_ns,
            slice_end_ns: 0,
            dispatched: 0,
        }
    }

    /// Nanoseconds to wait before sending `n` more bytes at time `now_ns` (0: go now, and the
    /// bytes count against the slice). The first request of a slice always goes, so a request
    /// larger than the quota is not held for ever; past the quota, wait for the slice's end.
    pub fn delay_ns(&mut self, now_ns: u64, n: u64) -> u64 {
        if self.slice_end_ns < now_ns {
            // The previous slice ended: start a new one.
            self.slice_end_ns = now_ns.saturating_add(self.slice_ns);
            self.dispatched = 0;
        }
        if self.dispatched == 0 || self.dispatched.saturating_add(n) <= self.slice_quota {
            self.dispatched = self.dispatched.saturating_add(n);
            return 0;
        }
        self.slice_end_ns - now_ns
    }
}

#[cfg(test)]
mod tests;
