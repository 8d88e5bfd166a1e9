//! virtio-blk as a leaf device, on virtio-drivers' `VirtQueue` (generic over its `Hal` and
//! `Transport`: the kernel brings both).
//!
//! virtio-drivers' own `VirtIOBlk` has a 16-descriptor queue (about five requests in flight
//! without `alloc`) and no discard or write-zeroes, so requests are built here:
//!
//! - **Queue.** `SIZE` descriptors (a power of two; the device must offer at least that many),
//!   `Q` request slots. A request takes a header, its data segments and a status descriptor, so
//!   data segments per request are capped at `SIZE / MIN_IN_FLIGHT - 2` (6 for a 256-entry
//!   queue): at least [`MIN_IN_FLIGHT`] requests fit whatever their shape, and single-segment
//!   requests fill all `Q` slots.
//! - **Slots.** Each slot's header, discard range and status byte live inside this object
//!   ([`wire::SlotMem`]); the kernel identity-maps its memory and the `Hal`'s `share` turns
//!   addresses into what the device sees, as virtio-drivers does.
//! - **Batching.** [`BlockDevice::submit`] publishes a request in the available ring without a
//!   doorbell; [`BlockDevice::unplug`] rings once per batch, and only if the device has not
//!   suppressed notifications (it does while it is already working through the ring). Every
//!   doorbell is a VM exit.
//! - **Completion by polling.** [`VirtioBlk::process_completions`] (also run by every
//!   [`BlockDevice::poll`]) pops used entries in whatever order the device finished them,
//!   records each result in its slot and wakes the slot's waker. An executor that polls devices
//!   when idle turns off [`VirtioBlk::set_wake_on_pending`]; by default a pending poll wakes its
//!   task at once, so any executor works.
//! - **Errors, never panics.** IOERR and UNSUPP statuses, a missing status, a used length the
//!   request cannot have, and a used entry naming no request in flight all become
//!   [`DeviceError`]s. The last means the device broke the protocol: it is reset (which stops
//!   its DMA) and every request in flight fails with [`DeviceError::Io`], as does anything
//!   submitted afterwards.
//! - **Stages.** With the clock given to [`VirtioBlk::new`] (the kernel passes the TSC), each
//!   request's time is split into submit (entry of `submit` to the available-ring publish),
//!   device (publish to the used entry seen) and completion (used entry seen to the `poll` that
//!   returns `Ready`); [`VirtioStats`] sums them, with the most requests held at once.

#![allow(unsafe_code)] // reason: the device reads and writes request memory outside the borrow checker's view (VirtQueue::add/pop_used)

mod config;
#[cfg(test)]
mod tests;
mod wire;

use core::cell::{Cell, RefCell, UnsafeCell};
use core::ptr::{addr_of, addr_of_mut};
use core::task::{Context, Poll, Waker};

use virtio_drivers::queue::VirtQueue;
use virtio_drivers::transport::{DeviceStatus, DeviceType, Transport};
use virtio_drivers::Hal;

pub use config::{Features, Geometry};
use wire::{SlotMem, SECTOR};

use super::{BlockDevice, DeviceError, DeviceFeatures, DeviceInfo, DeviceOp, DeviceRequest, Segment, SubmitError, Ticket, MAX_SERIAL};

/// Requests guaranteed to fit in the queue at once whatever their number of segments.
pub const MIN_IN_FLIGHT: usize = 32;

/// Storage for data segments per request (the reported `max_segments` may be lower).
pub const MAX_SEGMENTS: usize = 8;

/// Largest transfer offered to the io layer when the device sets no tighter limit.
pub const MAX_TRANSFER: u32 = 4 << 20;

/// The request queue's index (virtio-blk without multiqueue has one).
const QUEUE: u16 = 0;

/// Why a device could not be brought up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum InitError {
    /// The transport's device is not a block device.
    NotBlock,
    /// The device offers fewer queue entries than `SIZE`.
    QueueTooSmall {
        /// What the device offers.
        offered: u32,
        /// What this build needs.
        wanted: usize,
    },
    /// virtio-drivers failed (configuration space, queue setup, DMA memory).
    Transport(virtio_drivers::Error),
}

impl core::fmt::Display for InitError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::NotBlock => f.write_str("not a block device"),
            Self::QueueTooSmall { offered, wanted } => write!(f, "queue of {offered} entries offered, {wanted} needed"),
            Self::Transport(e) => write!(f, "virtio: {e:?}"),
        }
    }
}

/// Counters and stage timings (in the clock's ticks) since creation or [`VirtioBlk::reset_stats`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct VirtioStats {
    /// Requests published in the available ring.
    pub submitted: u64,
    /// Requests seen complete (successfully or not).
    pub completed: u64,
    /// Completed requests that failed.
    pub errors: u64,
    /// Doorbells rung.
    pub notifies: u64,
    /// Submissions refused with `Busy`.
    pub busy: u64,
    /// Most requests the device held at once.
    pub max_in_flight: u32,
    /// Sum over completed requests of entry of `submit` to the available-ring publish.
    pub submit_ticks: u64,
    /// Sum over completed requests of publish to used entry seen.
    pub device_ticks: u64,
    /// Sum over requests returned `Ready` of used entry seen to that `poll`.
    pub completion_ticks: u64,
    /// Requests returned `Ready` (the count behind `completion_ticks`).
    pub returned: u64,
}

/// How a slot's buffers are laid out in the descriptor chain.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Layout {
    /// Header, data segments (device-writable), status.
    Read,
    /// Header, data segments (device-readable), status.
    Write,
    /// Header, range, status.
    Range,
    /// Header, status.
    Bare,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    Free,
    InFlight,
    Done(Result<(), DeviceError>),
}

#[derive(Clone, Copy)]
struct Slot {
    state: State,
    generation: u16,
    /// Head descriptor: the token the device returns.
    head: u16,
    layout: Layout,
    segments: [Segment; MAX_SEGMENTS],
    nsegs: u8,
    /// Bytes the device may write: data of a read, plus the status byte.
    writable: u64,
    t_submit: u64,
    t_publish: u64,
    t_used: u64,
}

/// `by_head` of a descriptor that heads no request.
const NO_SLOT: u16 = u16::MAX;

const NO_SEGMENT: Segment = Segment { ptr: core::ptr::null_mut(), len: 0 };
const FREE_SLOT: Slot = Slot {
    state: State::Free,
    generation: 0,
    head: 0,
    layout: Layout::Bare,
    segments: [NO_SEGMENT; MAX_SEGMENTS],
    nsegs: 0,
    writable: 0,
    t_submit: 0,
    t_publish: 0,
    t_used: 0,
};

struct Inner<H: Hal, T: Transport, const SIZE: usize, const Q: usize> {
    transport: T,
    queue: VirtQueue<H, SIZE>,
    slots: [Slot; Q],
    wakers: [Option<Waker>; Q],
    /// Free slots (a stack: O(1) submit).
    free: heapless::Vec<u16, Q>,
    /// Slot of each in-flight head descriptor ([`NO_SLOT`] otherwise): O(1) completion.
    by_head: [u16; SIZE],
    stats: VirtioStats,
    in_flight: u32,
    /// Requests published since the last doorbell.
    unnotified: bool,
    /// The device broke the protocol and was reset.
    broken: bool,
}

/// A virtio-blk device with a `SIZE`-entry queue (a power of two, at most the device's maximum)
/// and `Q` request slots.
pub struct VirtioBlk<H: Hal, T: Transport, const SIZE: usize = 256, const Q: usize = 64> {
    info: DeviceInfo,
    geometry: Geometry,
    clock: fn() -> u64,
    wake_on_pending: Cell<bool>,
    zeroed_from: Cell<Option<u64>>,
    inner: RefCell<Inner<H, T, SIZE, Q>>,
    /// Headers, ranges and status bytes the device reads and writes; see [`SlotMem`].
    mem: UnsafeCell<[SlotMem; Q]>,
}

fn no_clock() -> u64 {
    0
}

impl<H: Hal, T: Transport, const SIZE: usize, const Q: usize> VirtioBlk<H, T, SIZE, Q> {
    /// Data segments per request: what leaves room for [`MIN_IN_FLIGHT`] requests.
    const SEGMENTS: usize = {
        let fit = SIZE / MIN_IN_FLIGHT;
        let segs = if fit > 3 { fit - 2 } else { 1 };
        if segs > MAX_SEGMENTS {
            MAX_SEGMENTS
        } else {
            segs
        }
    };

    /// Brings the device up: negotiates features, reads the configuration, sets up the queue
    /// (device-to-driver interrupts off: completion is polled) and asks for the serial. `clock`
    /// times the request stages (any monotonic counter; `None`: no timing).
    pub fn new(mut transport: T, clock: Option<fn() -> u64>) -> Result<Self, InitError> {
        if transport.device_type() != DeviceType::Block {
            return Err(InitError::NotBlock);
        }
        let features = transport.begin_init(config::WANTED);
        let geometry = Geometry::read(&transport, features).map_err(InitError::Transport)?;
        let offered = transport.max_queue_size(QUEUE);
        if (offered as usize) < SIZE {
            transport.set_status(DeviceStatus::FAILED);
            return Err(InitError::QueueTooSmall { offered, wanted: SIZE });
        }
        let mut queue = VirtQueue::<H, SIZE>::new(&mut transport, QUEUE, false, false).map_err(InitError::Transport)?;
        queue.set_dev_notify(false);
        transport.finish_init();
        let mut id = [0u8; wire::ID_BYTES];
        let id_len = get_id(&mut transport, &mut queue, &mut id);
        let depth = (SIZE / (2 + Self::SEGMENTS)).max(Q.min(SIZE / 3)).min(Q).min(u16::MAX as usize) as u16;
        let mut info = geometry.device_info(Self::SEGMENTS as u16, MAX_TRANSFER, depth);
        let serial = core::str::from_utf8(&id[..id_len]).unwrap_or("");
        info = info.with_serial(serial);
        if serial.is_empty() && id_len > 0 {
            // Not UTF-8: keep the bytes; the kernel shows them escaped.
            info.serial[..id_len.min(MAX_SERIAL)].copy_from_slice(&id[..id_len.min(MAX_SERIAL)]);
            info.serial_len = id_len.min(MAX_SERIAL) as u8;
        }
        Ok(Self {
            info,
            geometry,
            clock: clock.unwrap_or(no_clock),
            wake_on_pending: Cell::new(true),
            zeroed_from: Cell::new(None),
            inner: RefCell::new(Inner {
                transport,
                queue,
                slots: [FREE_SLOT; Q],
                wakers: [const { None }; Q],
                free: (0..Q.min(usize::from(NO_SLOT)) as u16).rev().collect(),
                by_head: [NO_SLOT; SIZE],
                stats: VirtioStats::default(),
                in_flight: 0,
                unnotified: false,
                broken: false,
            }),
            mem: UnsafeCell::new([SlotMem::BLANK; Q]),
        })
    }

    /// The configuration the device reported.
    pub fn geometry(&self) -> &Geometry {
        &self.geometry
    }

    /// The serial as raw bytes (GetId; empty if the device has none).
    pub fn serial_bytes(&self) -> &[u8] {
        &self.info.serial[..usize::from(self.info.serial_len).min(MAX_SERIAL)]
    }

    /// Whether a pending [`BlockDevice::poll`] wakes its task at once (the default, right for
    /// any executor) or only when [`VirtioBlk::process_completions`] sees the request done
    /// (for executors that call it when idle: tasks waiting on the device are then not polled
    /// in vain).
    pub fn set_wake_on_pending(&self, wake: bool) {
        self.wake_on_pending.set(wake);
    }

    /// Declares that the device reads as zeros from byte `at` to its end (what the host
    /// promises for a file it extended for this boot); see [`BlockDevice::zeroed_from`].
    pub fn set_zeroed_from(&self, at: u64) {
        self.zeroed_from.set(Some(at));
    }

    /// Counters so far.
    pub fn stats(&self) -> VirtioStats {
        self.inner.borrow().stats
    }

    /// Zeroes the counters (the in-flight maximum restarts from what is in flight now).
    pub fn reset_stats(&self) {
        let mut inner = self.inner.borrow_mut();
        let held = inner.in_flight;
        inner.stats = VirtioStats { max_in_flight: held, ..VirtioStats::default() };
    }

    /// Requests the device holds now.
    pub fn in_flight(&self) -> u32 {
        self.inner.borrow().in_flight
    }

    /// True once the device broke the protocol and was reset: every request fails.
    pub fn is_broken(&self) -> bool {
        self.inner.borrow().broken
    }

    /// Pops every used entry, records each result in its slot and wakes its waker. Returns how
    /// many requests completed. Wakers are called with the device borrowed: they must not poll
    /// it (executors only mark tasks ready).
    pub fn process_completions(&self) -> usize {
        let mut inner = self.inner.borrow_mut();
        self.reap(&mut inner)
    }

    fn slot_mem(&self, index: usize) -> *mut SlotMem {
        // In bounds: callers pass indices of `slots`, which has Q entries like `mem`.
        self.mem.get().cast::<SlotMem>().wrapping_add(index)
    }

    fn reap(&self, inner: &mut Inner<H, T, SIZE, Q>) -> usize {
        if inner.broken {
            // Reset: nothing in the used ring means anything any more.
            return 0;
        }
        let mut done = 0;
        while let Some(head) = inner.queue.peek_used() {
            let index = usize::from(inner.by_head.get(usize::from(head)).copied().unwrap_or(NO_SLOT));
            let ours = inner.slots.get(index).is_some_and(|s| s.state == State::InFlight && s.head == head);
            if !ours {
                // A used entry naming no request of ours: the device is broken. Reset it so it
                // stops touching memory, then fail everything it held.
                self.fail_all(inner);
                return done;
            }
            inner.by_head[usize::from(head)] = NO_SLOT;
            let mem = self.slot_mem(index);
            let Inner { slots, queue, .. } = &mut *inner;
            let slot = &slots[index];
            // SAFETY: `mem` and the segments are exactly the buffers `submit` added with this
            // head; the caller of `submit` keeps the segments valid until the ticket is
            // reported complete, which happens only after this pop.
            let used = unsafe { with_buffers(mem, slot, |ins, outs| queue.pop_used(head, ins, outs)) };
            let (writable, layout, t_submit, t_publish) = (slot.writable, slot.layout, slot.t_submit, slot.t_publish);
            let now = (self.clock)();
            // SAFETY: the device has returned the chain: nothing writes the status any more.
            let status = unsafe { core::ptr::read_volatile(addr_of!((*mem).status)) };
            let result = match used {
                Err(_) => Err(DeviceError::Io),
                // A used length the request cannot have: more than it offered, or a read that
                // did not fill its buffers.
                Ok(len) if u64::from(len) > writable || (layout == Layout::Read && u64::from(len) != writable) => Err(DeviceError::Io),
                Ok(_) => match status {
                    wire::S_OK => Ok(()),
                    wire::S_UNSUPP => Err(DeviceError::Unsupported),
                    _ => Err(DeviceError::Io),
                },
            };
            let s = &mut inner.slots[index];
            s.state = State::Done(result);
            s.t_used = now;
            inner.in_flight = inner.in_flight.saturating_sub(1);
            let stats = &mut inner.stats;
            stats.completed += 1;
            stats.errors += u64::from(result.is_err());
            stats.submit_ticks += t_publish.wrapping_sub(t_submit);
            stats.device_ticks += now.wrapping_sub(t_publish);
            if let Some(w) = inner.wakers[index].take() {
                w.wake();
            }
            done += 1;
        }
        done
    }

    fn fail_all(&self, inner: &mut Inner<H, T, SIZE, Q>) {
        inner.transport.set_status(DeviceStatus::empty());
        inner.broken = true;
        let now = (self.clock)();
        for (slot, waker) in inner.slots.iter_mut().zip(inner.wakers.iter_mut()) {
            if slot.state == State::InFlight {
                slot.state = State::Done(Err(DeviceError::Io));
                slot.t_used = now;
                inner.stats.completed += 1;
                inner.stats.errors += 1;
                if let Some(w) = waker.take() {
                    w.wake();
                }
            }
        }
        inner.in_flight = 0;
        inner.by_head = [NO_SLOT; SIZE];
    }

    /// [`DeviceInfo::check`], plus what virtio needs on top: no empty or null segment
    /// (virtio-drivers refuses empty buffers), and range operations within `max_transfer`, which
    /// keeps them inside the device's per-segment sector maxima.
    fn validate(&self, req: &DeviceRequest<'_>) -> Result<(), DeviceError> {
        self.info.check(req)?;
        let data = matches!(req.op, DeviceOp::Read | DeviceOp::Write);
        if data && req.segments.iter().any(|s| s.len == 0 || s.ptr.is_null()) {
            return Err(DeviceError::Invalid);
        }
        if !data && req.op != DeviceOp::Flush && req.len > u64::from(self.info.max_transfer) {
            return Err(DeviceError::Invalid);
        }
        Ok(())
    }
}

/// Sends GetId synchronously during bring-up; returns the serial's length (0 if the device has
/// none or refuses). Bounded only by the device answering, as virtio-drivers' own requests.
fn get_id<H: Hal, T: Transport, const SIZE: usize>(transport: &mut T, queue: &mut VirtQueue<H, SIZE>, id: &mut [u8; wire::ID_BYTES]) -> usize {
    let header = wire::Header::new(wire::T_GET_ID, 0);
    let mut status = [wire::S_UNWRITTEN];
    let header_bytes = header_bytes(&header);
    let ok = queue.add_notify_wait_pop(&[header_bytes], &mut [&mut id[..], &mut status[..]], transport).is_ok();
    if !ok || status[0] != wire::S_OK {
        return 0;
    }
    id.iter().position(|&b| b == 0).unwrap_or(wire::ID_BYTES)
}

fn header_bytes(header: &wire::Header) -> &[u8] {
    // SAFETY: `Header` is `repr(C)` plain integers without padding (16 bytes, checked in
    // `wire`); viewing it as bytes is sound for as long as the borrow.
    unsafe { core::slice::from_raw_parts((header as *const wire::Header).cast::<u8>(), wire::HEADER_BYTES) }
}

/// Calls `f` with the device-readable and device-writable buffer lists of a slot, in the order
/// the descriptor chain holds them.
///
/// # Safety
/// `mem` must point to the slot's [`SlotMem`], not otherwise referenced during the call, and
/// the slot's segments must be valid (readable; for [`Layout::Read`] writable and unaliased)
/// for the call.
unsafe fn with_buffers<R>(mem: *mut SlotMem, slot: &Slot, f: impl for<'a> FnOnce(&'a [&'a [u8]], &'a mut [&'a mut [u8]]) -> R) -> R {
    let mut ins: [&[u8]; MAX_SEGMENTS + 1] = [&[]; MAX_SEGMENTS + 1];
    let mut outs: [&mut [u8]; MAX_SEGMENTS + 1] = Default::default();
    let (mut ni, mut no) = (0, 0);
    let segments = &slot.segments[..usize::from(slot.nsegs).min(MAX_SEGMENTS)];
    // SAFETY: `mem` points to a live SlotMem (caller); the fields are plain bytes.
    ins[0] = unsafe { core::slice::from_raw_parts(addr_of!((*mem).header).cast::<u8>(), wire::HEADER_BYTES) };
    ni += 1;
    match slot.layout {
        Layout::Read => {
            for s in segments {
                // SAFETY: the caller guarantees the segment is valid, writable and unaliased.
                outs[no] = unsafe { core::slice::from_raw_parts_mut(s.ptr, s.len) };
                no += 1;
            }
        }
        Layout::Write => {
            for s in segments {
                // SAFETY: the caller guarantees the segment is valid and readable.
                ins[ni] = unsafe { core::slice::from_raw_parts(s.ptr.cast_const(), s.len) };
                ni += 1;
            }
        }
        Layout::Range => {
            // SAFETY: as the header.
            ins[ni] = unsafe { core::slice::from_raw_parts(addr_of!((*mem).range).cast::<u8>(), wire::RANGE_BYTES) };
            ni += 1;
        }
        Layout::Bare => {}
    }
    // SAFETY: as the header; nothing else references the status byte during the call.
    outs[no] = unsafe { core::slice::from_raw_parts_mut(addr_of_mut!((*mem).status), 1) };
    no += 1;
    f(&ins[..ni], &mut outs[..no])
}

impl<H: Hal, T: Transport, const SIZE: usize, const Q: usize> BlockDevice for VirtioBlk<H, T, SIZE, Q> {
    fn info(&self) -> &DeviceInfo {
        &self.info
    }

    unsafe fn submit(&self, req: &DeviceRequest<'_>) -> Result<Ticket, SubmitError> {
        let t_submit = (self.clock)();
        self.validate(req).map_err(SubmitError::Invalid)?;
        let mut inner = self.inner.borrow_mut();
        if inner.broken {
            return Err(SubmitError::Invalid(DeviceError::Io));
        }
        let Some(&index) = inner.free.last() else {
            inner.stats.busy += 1;
            return Err(SubmitError::Busy);
        };
        let index = usize::from(index);
        let sector = req.offset / SECTOR;
        let (type_, layout) = match req.op {
            DeviceOp::Read => (wire::T_IN, Layout::Read),
            DeviceOp::Write => (wire::T_OUT, Layout::Write),
            DeviceOp::Flush => (wire::T_FLUSH, Layout::Bare),
            DeviceOp::Discard => (wire::T_DISCARD, Layout::Range),
            DeviceOp::WriteZeroes { .. } => (wire::T_WRITE_ZEROES, Layout::Range),
        };
        let nsegs = if matches!(layout, Layout::Read | Layout::Write) { req.segments.len() } else { 0 };
        if inner.queue.available_desc() < 2 + nsegs.max(usize::from(layout == Layout::Range)) {
            inner.stats.busy += 1;
            return Err(SubmitError::Busy);
        }
        let inner = &mut *inner;
        let slot = &mut inner.slots[index];
        let generation = slot.generation.wrapping_add(1);
        let ticket = Ticket((u32::from(generation) << 16) | index as u32);
        slot.generation = generation;
        slot.layout = layout;
        slot.nsegs = nsegs as u8;
        slot.segments[..nsegs].copy_from_slice(&req.segments[..nsegs]);
        slot.writable = 1 + if layout == Layout::Read { req.len } else { 0 };
        slot.t_submit = t_submit;
        slot.t_used = 0;
        if req.op == DeviceOp::Flush && !self.info.features.contains(DeviceFeatures::FLUSH) {
            // No volatile cache: every completed write is already stable.
            slot.state = State::Done(Ok(()));
            inner.free.pop();
            return Ok(ticket);
        }
        let mem = self.slot_mem(index);
        let range = match req.op {
            DeviceOp::Discard | DeviceOp::WriteZeroes { .. } => {
                let unmap = matches!(req.op, DeviceOp::WriteZeroes { unmap: true });
                // Fits: validate capped len at max_transfer, which is within the device's
                // per-segment maxima (see `Geometry::device_info`).
                let sectors = u32::try_from(req.len / SECTOR).map_err(|_| SubmitError::Invalid(DeviceError::Invalid))?;
                wire::Range { sector: sector.to_le(), num_sectors: sectors.to_le(), flags: if unmap { wire::WZ_FLAG_UNMAP.to_le() } else { 0 } }
            }
            _ => wire::Range::default(),
        };
        // SAFETY: the slot is free, so the device holds none of its memory; nothing else
        // references it.
        unsafe {
            mem.write(SlotMem { header: wire::Header::new(type_, sector), range, status: wire::S_UNWRITTEN });
        }
        let queue = &mut inner.queue;
        // SAFETY: the slot memory is ours until the device returns the chain (the slot stays
        // InFlight, so it is not reused); the segments stay valid by `submit`'s contract until
        // `poll` reports this ticket, which happens only after `reap` popped the chain.
        let added = unsafe { with_buffers(mem, slot, |ins, outs| queue.add(ins, outs)) };
        let head = match added {
            Ok(head) => head,
            Err(virtio_drivers::Error::QueueFull) => {
                inner.stats.busy += 1;
                return Err(SubmitError::Busy);
            }
            Err(_) => return Err(SubmitError::Invalid(DeviceError::Invalid)),
        };
        slot.state = State::InFlight;
        slot.head = head;
        slot.t_publish = (self.clock)();
        inner.free.pop();
        if let Some(h) = inner.by_head.get_mut(usize::from(head)) {
            *h = index as u16;
        }
        inner.in_flight += 1;
        inner.unnotified = true;
        let held = inner.in_flight;
        let stats = &mut inner.stats;
        stats.submitted += 1;
        stats.max_in_flight = stats.max_in_flight.max(held);
        Ok(ticket)
    }

    fn poll(&self, ticket: Ticket, cx: &mut Context<'_>) -> Poll<Result<(), DeviceError>> {
        let mut inner = self.inner.borrow_mut();
        self.reap(&mut inner);
        let index = (ticket.0 & 0xffff) as usize;
        let generation = (ticket.0 >> 16) as u16;
        let Some((state, t_used)) = inner.slots.get(index).filter(|s| s.generation == generation).map(|s| (s.state, s.t_used)) else {
            return Poll::Ready(Err(DeviceError::Invalid));
        };
        match state {
            State::Free => Poll::Ready(Err(DeviceError::Invalid)),
            State::Done(result) => {
                let now = (self.clock)();
                inner.slots[index].state = State::Free;
                inner.wakers[index] = None;
                let _ = inner.free.push(index as u16);
                if t_used != 0 {
                    inner.stats.completion_ticks += now.wrapping_sub(t_used);
                    inner.stats.returned += 1;
                }
                Poll::Ready(result)
            }
            State::InFlight => {
                match &mut inner.wakers[index] {
                    Some(w) if w.will_wake(cx.waker()) => {}
                    w => *w = Some(cx.waker().clone()),
                }
                if self.wake_on_pending.get() {
                    cx.waker().wake_by_ref();
                }
                Poll::Pending
            }
        }
    }

    fn zeroed_from(&self) -> Option<u64> {
        self.zeroed_from.get()
    }

    fn unplug(&self) {
        let mut inner = self.inner.borrow_mut();
        if !inner.unnotified {
            return;
        }
        inner.unnotified = false;
        if inner.queue.should_notify() {
            inner.transport.notify(QUEUE);
            inner.stats.notifies += 1;
        }
    }
}

impl<H: Hal, T: Transport, const SIZE: usize, const Q: usize> Drop for VirtioBlk<H, T, SIZE, Q> {
    fn drop(&mut self) {
        // Reset: the device stops using the rings and slot memory, which go away with us.
        // (Nothing is in flight unless a request future was leaked, see `BlockDevice::submit`.)
        let inner = self.inner.get_mut();
        inner.transport.set_status(DeviceStatus::empty());
        inner.transport.queue_unset(QUEUE);
    }
}
