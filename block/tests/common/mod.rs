//! Helpers shared by the block core's integration tests: a seeded PRNG, aligned memory, a
//! recording device wrapper, hand-polling with a no-op waker and a byte model of a disk.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

use strata_block::dev::{BlockDevice, DeviceInfo, DeviceOp, DeviceRequest, SubmitError, Ticket};
use strata_block::{Graph, NodeId, Result};

/// xorshift64*: small, seeded, good enough for test workloads.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    /// A generator from `seed` (0 is replaced by a constant).
    pub fn new(seed: u64) -> Self {
        Self(if seed == 0 {
            0x9e37_79b9_7f4a_7c15
        } else {
            seed
        })
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// Uniform in `0..n` (`n` > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }

    /// Uniform in `lo..=hi`.
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.below(hi - lo + 1)
    }

    /// True with probability `percent`/100.
    pub fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }

    /// Fills `buf` with random bytes.
    pub fn fill(&mut self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(8) {
            let v = self.next_u64().to_le_bytes();
            chunk.copy_from_slice(&v[..chunk.len()]);
        }
    }
}

/// A `len`-byte slice of `storage` whose address is a multiple of `align` (`storage` must be at
/// least `len + align` long).
pub fn aligned(storage: &mut [u8], len: usize, align: usize) -> &mut [u8] {
    let skip = storage.as_ptr().align_offset(align);
    &mut storage[skip..skip + len]
}

/// A `len`-byte slice whose address is `misalign` bytes past a multiple of `align`.
pub fn misaligned(storage: &mut [u8], len: usize, align: usize, misalign: usize) -> &mut [u8] {
    let skip = storage.as_ptr().align_offset(align) + misalign;
    &mut storage[skip..skip + len]
}

/// Polls `fut` once with a no-op waker.
pub fn poll_once<F: Future + ?Sized>(fut: Pin<&mut F>) -> Poll<F::Output> {
    let mut cx = Context::from_waker(Waker::noop());
    fut.poll(&mut cx)
}

/// Polls `fut` by hand until it completes; panics after `max_polls` (a hang, not a slow test).
pub fn run_bounded<F: Future>(fut: F, max_polls: usize) -> F::Output {
    let mut fut = std::pin::pin!(fut);
    for _ in 0..max_polls {
        if let Poll::Ready(v) = poll_once(fut.as_mut()) {
            return v;
        }
    }
    panic!("future did not complete within {max_polls} polls: a hang");
}

/// Opens `text` on `graph` with a resolver that knows no devices.
pub fn open<const N: usize, const T: usize>(
    graph: &mut Graph<'_, N, T>,
    text: &str,
) -> Result<NodeId> {
    futures::executor::block_on(graph.open(text, &mut |_| None))
}

/// Byte model: zero `[from, to)`.
pub fn zero(model: &mut [u8], from: u64, to: u64) {
    model[from as usize..to as usize].fill(0);
}

/// Byte model of an advisory discard at a device that zeroes discarded ranges: only the part
/// aligned to `granularity` changes.
pub fn discard(model: &mut [u8], from: u64, to: u64, granularity: u64) {
    let (start, stop) = (
        from.div_ceil(granularity) * granularity,
        to / granularity * granularity,
    );
    if start < stop {
        zero(model, start, stop);
    }
}

/// One request as seen by a [`Recorder`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rec {
    /// The operation.
    pub op: DeviceOp,
    /// Byte offset.
    pub offset: u64,
    /// Length.
    pub len: u64,
    /// (address, length) of every segment.
    pub segments: Vec<(usize, usize)>,
    /// The device accepted it.
    pub accepted: bool,
}

/// A device that forwards to another and records every request submitted (accepted or not).
pub struct Recorder<'a> {
    /// The device below.
    pub inner: &'a dyn BlockDevice,
    /// Every submission so far.
    pub log: RefCell<Vec<Rec>>,
    /// Submissions refused as busy.
    pub busy: Cell<u64>,
}

impl<'a> Recorder<'a> {
    /// Wraps `inner`.
    pub fn new(inner: &'a dyn BlockDevice) -> Self {
        Self {
            inner,
            log: RefCell::new(Vec::new()),
            busy: Cell::new(0),
        }
    }

    /// The accepted requests so far, and forgets them.
    pub fn take(&self) -> Vec<Rec> {
        std::mem::take(&mut *self.log.borrow_mut())
            .into_iter()
            .filter(|r| r.accepted)
            .collect()
    }

    /// Every submission (refused ones too), and forgets them.
    pub fn take_all(&self) -> Vec<Rec> {
        std::mem::take(&mut *self.log.borrow_mut())
    }
}

impl BlockDevice for Recorder<'_> {
    fn info(&self) -> &DeviceInfo {
        self.inner.info()
    }

    unsafe fn submit(&self, req: &DeviceRequest<'_>) -> std::result::Result<Ticket, SubmitError> {
        // SAFETY: the request is forwarded unchanged, so the caller's guarantee about its
        // segments (valid until the ticket is polled Ready) carries over to the inner device;
        // `poll` forwards to the same device.
        let result = unsafe { self.inner.submit(req) };
        if result == Err(SubmitError::Busy) {
            self.busy.set(self.busy.get() + 1);
        } else {
            self.log.borrow_mut().push(Rec {
                op: req.op,
                offset: req.offset,
                len: req.len,
                segments: req
                    .segments
                    .iter()
                    .map(|s| (s.ptr as usize, s.len))
                    .collect(),
                accepted: result.is_ok(),
            });
        }
        result
    }

    fn poll(
        &self,
        ticket: Ticket,
        cx: &mut Context<'_>,
    ) -> Poll<std::result::Result<(), strata_block::dev::DeviceError>> {
        self.inner.poll(ticket, cx)
    }

    fn unplug(&self) {
        self.inner.unplug();
    }
}

/// Wraps a future and records, in a shared list, the moment it is first polled.
pub struct FirstPoll<'a, F> {
    /// The wrapped future.
    pub fut: Pin<Box<F>>,
    /// This future's index.
    pub index: usize,
    /// Where first polls are recorded.
    pub order: &'a RefCell<Vec<usize>>,
    /// Already recorded.
    pub seen: bool,
}

impl<F: Future> Future for FirstPoll<'_, F> {
    type Output = F::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        if !self.seen {
            self.seen = true;
            self.order.borrow_mut().push(self.index);
        }
        self.fut.as_mut().poll(cx)
    }
}

/// A device that forwards to another and makes chosen operations fail with
/// [`strata_block::dev::DeviceError::Io`] when they complete (after the device below is done
/// with the memory).
pub struct Faulty<'a> {
    /// The device below.
    pub inner: &'a dyn BlockDevice,
    /// Which operations fail: matched by `matches(op)`.
    pub fail: Cell<fn(DeviceOp) -> bool>,
    /// How many more failures to inject.
    pub remaining: Cell<u32>,
    ops: RefCell<std::collections::HashMap<Ticket, DeviceOp>>,
}

impl<'a> Faulty<'a> {
    /// Wraps `inner`; nothing fails until [`Faulty::fail_next`].
    pub fn new(inner: &'a dyn BlockDevice) -> Self {
        Self {
            inner,
            fail: Cell::new(|_| false),
            remaining: Cell::new(0),
            ops: RefCell::default(),
        }
    }

    /// The next `n` operations matching `which` fail.
    pub fn fail_next(&self, which: fn(DeviceOp) -> bool, n: u32) {
        self.fail.set(which);
        self.remaining.set(n);
    }
}

impl BlockDevice for Faulty<'_> {
    fn info(&self) -> &DeviceInfo {
        self.inner.info()
    }

    unsafe fn submit(&self, req: &DeviceRequest<'_>) -> std::result::Result<Ticket, SubmitError> {
        // SAFETY: forwarded unchanged; `poll` forwards every poll of the ticket to the same
        // device and reports completion only after it does, so the caller's guarantee holds.
        let ticket = unsafe { self.inner.submit(req) }?;
        self.ops.borrow_mut().insert(ticket, req.op);
        Ok(ticket)
    }

    fn poll(
        &self,
        ticket: Ticket,
        cx: &mut Context<'_>,
    ) -> Poll<std::result::Result<(), strata_block::dev::DeviceError>> {
        let result = std::task::ready!(self.inner.poll(ticket, cx));
        let op = self.ops.borrow_mut().remove(&ticket);
        match op {
            Some(op) if result.is_ok() && self.remaining.get() > 0 && (self.fail.get())(op) => {
                self.remaining.set(self.remaining.get() - 1);
                Poll::Ready(Err(strata_block::dev::DeviceError::Io))
            }
            _ => Poll::Ready(result),
        }
    }

    fn unplug(&self) {
        self.inner.unplug();
    }
}
