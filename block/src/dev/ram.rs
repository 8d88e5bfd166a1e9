//! A RAM disk over caller-provided memory, with a device's manners: requests queue up, complete
//! after a configurable number of polls and, if asked, in a shuffled order. Tests use it to make
//! requests really overlap in time; firmware can use it as a scratch disk.
//!
//! Data moves when a request *completes*, not when it is submitted, like real hardware: two
//! overlapping writes in flight land in completion order.

#![allow(unsafe_code)] // reason: data moves through the raw segments of the BlockDevice contract

use core::cell::{Cell, RefCell};
use core::task::{Context, Poll};

use super::{BlockDevice, DeviceError, DeviceFeatures, DeviceInfo, DeviceOp, DeviceRequest, Segment, SubmitError, Ticket};

/// Most segments one request may carry.
pub const RAM_MAX_SEGMENTS: usize = 16;

/// How a [`RamDisk`] schedules completions.
#[derive(Clone, Copy, Debug, Default)]
pub struct RamConfig {
    /// Polls (of any ticket) a request waits before it executes; 0 completes on the first poll.
    pub delay_polls: u32,
    /// If non-zero, requests that are due execute in an order drawn from this seed.
    pub shuffle_seed: u64,
}

/// Counters for tests and benchmarks.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RamStats {
    /// Requests accepted.
    pub submitted: u64,
    /// Flushes executed.
    pub flushes: u64,
    /// Reads executed.
    pub reads: u64,
    /// Writes executed.
    pub writes: u64,
    /// Most requests held at once.
    pub max_in_flight: u32,
}

#[derive(Clone, Copy)]
struct Pending {
    op: DeviceOp,
    offset: u64,
    len: u64,
    segments: [Segment; RAM_MAX_SEGMENTS],
    nsegs: usize,
    wait: u32,
    result: Option<Result<(), DeviceError>>,
}

#[derive(Clone, Copy)]
struct Slot {
    generation: u16,
    pending: Option<Pending>,
}

/// A RAM disk holding at most `Q` requests at once.
pub struct RamDisk<'m, const Q: usize = 64> {
    info: DeviceInfo,
    memory: RefCell<&'m mut [u8]>,
    slots: RefCell<[Slot; Q]>,
    config: RamConfig,
    rng: Cell<u64>,
    stats: Cell<RamStats>,
}

impl<'m, const Q: usize> RamDisk<'m, Q> {
    /// A disk over `memory` (its length, rounded down to `block_size`, is the capacity) with
    /// flush, discard and write-zeroes.
    pub fn new(memory: &'m mut [u8], block_size: u32, config: RamConfig) -> Self {
        let bs = u64::from(block_size.max(1));
        let capacity = memory.len() as u64 / bs * bs;
        let mut info = DeviceInfo::new(capacity, block_size.max(1));
        info.queue_depth = Q.min(u16::MAX as usize) as u16;
        info.max_segments = RAM_MAX_SEGMENTS as u16;
        info.features = DeviceFeatures::FLUSH | DeviceFeatures::DISCARD | DeviceFeatures::WRITE_ZEROES | DeviceFeatures::WRITE_ZEROES_UNMAP;
        Self::with_info(memory, info, config)
    }

    /// A disk with explicit limits and features (`info.capacity` is cut to `memory`'s length, in
    /// whole blocks).
    pub fn with_info(memory: &'m mut [u8], mut info: DeviceInfo, config: RamConfig) -> Self {
        let bs = u64::from(info.block_size.max(1));
        info.capacity = info.capacity.min(memory.len() as u64) / bs * bs;
        info.max_segments = info.max_segments.min(RAM_MAX_SEGMENTS as u16);
        info.queue_depth = info.queue_depth.min(Q.min(u16::MAX as usize) as u16);
        Self {
            info,
            memory: RefCell::new(memory),
            slots: RefCell::new([Slot { generation: 0, pending: None }; Q]),
            config,
            rng: Cell::new(config.shuffle_seed),
            stats: Cell::new(RamStats::default()),
        }
    }

    /// Counters so far.
    pub fn stats(&self) -> RamStats {
        self.stats.get()
    }

    /// Requests currently held.
    pub fn in_flight(&self) -> usize {
        self.slots.borrow().iter().filter(|s| s.pending.is_some_and(|p| p.result.is_none())).count()
    }

    /// Executes every due request (in shuffled order if configured) and ages the others.
    fn advance(&self) {
        let mut slots = self.slots.borrow_mut();
        let due = |s: &Slot| s.pending.is_some_and(|p| p.result.is_none() && p.wait == 0);
        loop {
            let count = slots.iter().filter(|s| due(s)).count();
            if count == 0 {
                break;
            }
            let pick = if self.config.shuffle_seed == 0 { 0 } else { (self.next_random() % count as u64) as usize };
            let Some(slot) = slots.iter_mut().filter(|s| due(s)).nth(pick) else { break };
            if let Some(p) = slot.pending.as_mut() {
                p.result = Some(self.execute(p));
            }
        }
        for p in slots.iter_mut().filter_map(|s| s.pending.as_mut()) {
            if p.result.is_none() {
                p.wait = p.wait.saturating_sub(1);
            }
        }
    }

    fn execute(&self, p: &Pending) -> Result<(), DeviceError> {
        let mut stats = self.stats.get();
        let mut memory = self.memory.borrow_mut();
        let start = p.offset as usize;
        let end = start + p.len as usize; // validated against capacity at submit
        let range = memory.get_mut(start..end).ok_or(DeviceError::Invalid)?;
        match p.op {
            DeviceOp::Read | DeviceOp::Write => {
                let mut at = 0;
                for seg in &p.segments[..p.nsegs] {
                    let dev = &mut range[at..at + seg.len];
                    // SAFETY: the submitter guarantees each segment is valid (and, for reads,
                    // unaliased) until this request is reported complete, which happens after
                    // this copy. Device memory and caller memory never overlap: `memory` is
                    // borrowed exclusively by this disk.
                    unsafe {
                        if p.op == DeviceOp::Read {
                            core::ptr::copy_nonoverlapping(dev.as_ptr(), seg.ptr, seg.len);
                        } else {
                            core::ptr::copy_nonoverlapping(seg.ptr.cast_const(), dev.as_mut_ptr(), seg.len);
                        }
                    }
                    at += seg.len;
                }
                if p.op == DeviceOp::Read {
                    stats.reads += 1;
                } else {
                    stats.writes += 1;
                }
            }
            DeviceOp::Discard | DeviceOp::WriteZeroes { .. } => range.fill(0),
            DeviceOp::Flush => stats.flushes += 1,
        }
        self.stats.set(stats);
        Ok(())
    }

    fn next_random(&self) -> u64 {
        let mut x = self.rng.get();
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.rng.set(x);
        x
    }
}

impl<const Q: usize> BlockDevice for RamDisk<'_, Q> {
    fn info(&self) -> &DeviceInfo {
        &self.info
    }

    unsafe fn submit(&self, req: &DeviceRequest<'_>) -> Result<Ticket, SubmitError> {
        self.info.check(req).map_err(SubmitError::Invalid)?;
        if req.segments.len() > RAM_MAX_SEGMENTS {
            return Err(SubmitError::Invalid(DeviceError::Invalid));
        }
        let mut slots = self.slots.borrow_mut();
        let Some((index, slot)) = slots.iter_mut().enumerate().find(|(_, s)| s.pending.is_none()) else {
            return Err(SubmitError::Busy);
        };
        let mut segments = [Segment { ptr: core::ptr::null_mut(), len: 0 }; RAM_MAX_SEGMENTS];
        segments[..req.segments.len()].copy_from_slice(req.segments);
        slot.generation = slot.generation.wrapping_add(1);
        slot.pending = Some(Pending {
            op: req.op,
            offset: req.offset,
            len: req.len,
            segments,
            nsegs: req.segments.len(),
            wait: self.config.delay_polls,
            result: None,
        });
        let ticket = Ticket((u32::from(slot.generation) << 16) | index as u32);
        let held = slots.iter().filter(|s| s.pending.is_some()).count() as u32;
        let mut stats = self.stats.get();
        stats.submitted += 1;
        stats.max_in_flight = stats.max_in_flight.max(held);
        self.stats.set(stats);
        Ok(ticket)
    }

    fn poll(&self, ticket: Ticket, cx: &mut Context<'_>) -> Poll<Result<(), DeviceError>> {
        self.advance();
        let mut slots = self.slots.borrow_mut();
        let index = (ticket.0 & 0xffff) as usize;
        let generation = (ticket.0 >> 16) as u16;
        let Some(slot) = slots.get_mut(index).filter(|s| s.generation == generation) else {
            return Poll::Ready(Err(DeviceError::Invalid));
        };
        match slot.pending.and_then(|p| p.result) {
            Some(result) => {
                slot.pending = None;
                Poll::Ready(result)
            }
            None if slot.pending.is_none() => Poll::Ready(Err(DeviceError::Invalid)),
            None => {
                // Polled device: no interrupt will come, so ask to be polled again.
                cx.waker().wake_by_ref();
                Poll::Pending
            }
        }
    }
}
