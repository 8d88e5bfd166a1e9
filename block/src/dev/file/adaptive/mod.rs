//! Writeback mode's default engine: requests run in the caller's thread while they come one at a
//! time, and are shared with helper threads while several are in flight, so a caller at queue
//! depth uses the machine's other cores for the syscalls while it keeps its own for the block
//! layer.
//!
//! Two modes, switched by what the caller does:
//!
//! - **Inline**: `submit` runs the request (`preadv`/`pwritev`/... on the page cache) and keeps the
//!   result for `poll`, exactly as the in-thread engine: a request costs one syscall, no hand-off.
//!   Requests that run inside `submit` cannot reveal a caller's parallelism, so every
//!   [`PROBE_EVERY`]th request is *held* instead: its first `poll` says pending. A caller with
//!   other requests to make makes one then, and that submit switches the engine to shared mode;
//!   a caller with nothing else to do polls again, and the held request runs there and then
//!   (costing one extra poll per [`PROBE_EVERY`] requests).
//! - **Shared**: `submit` queues the request; `unplug` hands the batch to the process-wide
//!   [`Helpers`](helpers::Helpers) queue, which the helper threads drain, but for a part the caller keeps. `poll`
//!   of a request not yet done runs a kept request, else the request at the front of that
//!   queue, in the caller's thread, so the caller executes requests too whenever it has nothing
//!   else to do. [`CALM_SUBMITS`] submits in a row that find nothing else in flight switch back to
//!   inline mode.
//!
//! Helpers only pay when they get a core: on a machine whose other cores are busy, the caller
//! ends up running the queue itself, with a queue's costs on top. So shared mode watches itself:
//! when the caller ran more than half of a [`WINDOW`] of requests itself, the engine goes back
//! to inline and probes half as often (down to one probe in [`PROBE_EVERY`] × [`MAX_BACKOFF`]
//! requests); a window in which the helpers did their share resets that.
//!
//! The helpers are shared by every file of the process (an image chain is one caller, not one
//! per file, and helpers spinning per file would outnumber the cores): `available_parallelism() -
//! 1` of them (at least one), started on first need. After its last request a helper spins for
//! [`SPIN`](helpers::SPIN) before sleeping, so a steady stream of requests never pays for a wake-up.
//!
//! A hand-off costs what the cores spend moving cache lines between them, so it moves few: the
//! queue is a lock-free ring (`crossbeam-queue`), each slot's status sits on its own cache line,
//! a job is a pointer, an index and (for one segment, nearly every request) the request itself,
//! with no reference count, and nothing else is shared per request.

#![allow(unsafe_code)] // reason: requests carry raw segments from `submit` to whichever thread runs them

use std::cell::{RefCell, UnsafeCell};
use std::task::{Context, Poll};
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::Arc;

use crossbeam_utils::CachePadded;

use super::parking::Parking;
use super::sys::Exec;
use super::{decode_result, encode_result, make_ticket, split_ticket, IovBuf, SlotReq};
use crate::dev::{DeviceError, DeviceRequest, SubmitError, Ticket};

mod helpers;
mod job;

use helpers::helpers;
use job::{Job, MAX_MERGE};

/// In inline mode, one request in this many is held for a poll to see whether the caller has
/// others to make.
const PROBE_EVERY: u32 = 64;
/// Submits in a row with nothing else in flight that end shared mode.
const CALM_SUBMITS: u32 = 16;
/// Shared mode judges itself over this many requests.
const WINDOW: u32 = 256;
/// The most the probe interval grows after shared windows that did not pay.
const MAX_BACKOFF: u32 = 64;
/// A handed-over batch keeps one in this many of its requests back for the caller to run.
const KEEP_DIVISOR: usize = 4;

const FREE: u8 = 0;
/// Submitted, kept back for the probe (not queued).
const HELD: u8 = 1;
const QUEUED: u8 = 2;
const DONE: u8 = 3;

/// The engine of one file.
pub(super) struct Adaptive {
    /// Boxed: queued jobs point at it, so it must not move.
    shared: Box<Shared>,
    /// Caller-side state. One thread drives a device at a time (as every `BlockDevice`; a host
    /// file is `Send`, not `Sync`), so a `RefCell`: a mutex cost two locked instructions on
    /// every submit and poll, and at depth the caller's thread is the bottleneck.
    local: RefCell<Local>,
    /// `local.mode == Mode::Inline`, readable without borrowing `local` ([`Adaptive::runs_now`]).
    inline: AtomicBool,
}

/// What the helpers need of a file: its syscalls and its request slots.
struct Shared {
    exec: Arc<Exec>,
    slots: Box<[Slot]>,
}

/// A request slot. The status (written by whoever finishes the request, polled by the caller)
/// and the request (written by the caller, read by whoever runs it; only requests of several
/// segments and the held probe, the others travel in their [`Job`]) sit on cache lines of
/// their own, so neither side's accesses pull the other's line away.
struct Slot {
    status: CachePadded<Status>,
    req: CachePadded<UnsafeCell<SlotReq>>,
    /// The slots whose reads `req` does too (see [`Adaptive::merge_reads`]), finished with it.
    /// Owned as `req` is.
    followers: UnsafeCell<Vec<u16>>,
}

/// What finishing a request writes, together on one cache line: the caller's poll of a
/// finished request pulls one line from the finisher's core, not one for each field.
struct Status {
    /// FREE, HELD, QUEUED or DONE: says who may touch `req` (see `Slot`'s Sync).
    state: AtomicU8,
    result: AtomicU8,
}

// SAFETY: `req` and `followers` are only touched by one thread at a time, as `state` says: the
// caller while the slot is FREE or HELD, or QUEUED with its job still in the caller's batch;
// whoever popped the slot's job while it is QUEUED (the queue's release/acquire orders the
// caller's writes before the popper's reads); the caller again once it has seen DONE (stored
// with release after the popper's last access).
unsafe impl Sync for Slot {}


#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    Inline,
    Shared,
}

/// Caller-side bookkeeping.
struct Local {
    generations: Vec<u16>,
    free: Vec<u16>,
    mode: Mode,
    /// Requests submitted and not yet reported by `poll`.
    outstanding: usize,
    /// Inline mode: submits until the next probe.
    until_probe: u32,
    /// The held request and whether its first poll has happened.
    probe: Option<(u16, bool)>,
    /// Shared mode: submits in a row that found nothing else in flight.
    calm: u32,
    /// Probe interval multiplier (1 to [`MAX_BACKOFF`]).
    backoff: u32,
    /// Shared mode: requests queued in this window, and queued requests (any file's) this
    /// caller ran itself.
    window_queued: u32,
    window_ran: u32,
    counts: EngineCounts,
    /// Shared mode: requests queued since the last `unplug`, handed to the helpers together.
    batch: Vec<Job>,
    /// Queued requests of handed-over batches kept back for this thread to run (see `hand_over`).
    kept: Vec<Job>,
    /// Polls of batched requests since the batch began: once every batched request has been
    /// polled and no `unplug` came, the next poll hands the batch over itself.
    batch_polls: usize,
    /// The iovecs of requests run inside `submit`.
    iov: IovBuf,
    /// Wakers of requests waiting on the helpers.
    parking: Parking,
}

/// Where a file's requests ran (the adaptive engine's).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EngineCounts {
    /// Requests run inside `submit` (or a probe's poll) in the caller's thread.
    pub inline: u64,
    /// Requests queued for the helpers.
    pub queued: u64,
    /// Queued requests (of any file) the caller's thread ran itself while it waited.
    pub ran_by_caller: u64,
    /// Queued reads done by the system call of the read before them (see `merge_reads`).
    pub merged: u64,
}

impl Local {
    /// Shared mode, with a fresh window.
    fn go_shared(&mut self) {
        self.mode = Mode::Shared;
        self.calm = 0;
        self.window_queued = 0;
        self.window_ran = 0;
    }

    /// Inline mode; the next probe after the (backed-off) interval.
    fn go_inline(&mut self) {
        self.mode = Mode::Inline;
        self.until_probe = PROBE_EVERY * self.backoff;
    }
}

impl Adaptive {
    pub(super) fn new(exec: Arc<Exec>, depth: u16, max_segments: usize) -> Self {
        let slots = (0..depth)
            .map(|_| Slot {
                status: CachePadded::new(Status { state: AtomicU8::new(FREE), result: AtomicU8::new(0) }),
                req: CachePadded::new(UnsafeCell::new(SlotReq::new(max_segments))),
                followers: UnsafeCell::new(Vec::with_capacity(MAX_MERGE)),
            })
            .collect();
        Self {
            shared: Box::new(Shared { exec, slots }),
            local: RefCell::new(Local {
                generations: vec![0; usize::from(depth)],
                free: (0..depth).rev().collect(),
                mode: Mode::Inline,
                outstanding: 0,
                until_probe: PROBE_EVERY,
                probe: None,
                calm: 0,
                backoff: 1,
                window_queued: 0,
                window_ran: 0,
                counts: EngineCounts::default(),
                batch: Vec::with_capacity(usize::from(depth)),
                kept: Vec::with_capacity(usize::from(depth)),
                batch_polls: 0,
                iov: IovBuf::with_capacity(max_segments),
                parking: Parking::new(usize::from(depth)),
            }),
            inline: AtomicBool::new(true),
        }
    }

    /// True while requests run inline: a hint (read without borrowing `local`) that
    /// [`Adaptive::rw_now`] would run one.
    pub(super) fn runs_now(&self) -> bool {
        self.inline.load(Ordering::Relaxed)
    }

    /// Whether requests are being shared with the helpers now.
    #[cfg(test)]
    pub(super) fn is_shared(&self) -> bool {
        self.local.borrow().mode == Mode::Shared
    }

    /// Where this file's requests ran so far.
    pub(super) fn counts(&self) -> EngineCounts {
        self.local.borrow().counts
    }

    /// Requests held or queued and not yet done.
    pub(super) fn in_flight(&self) -> usize {
        self.shared.slots.iter().filter(|s| matches!(s.status.state.load(Ordering::Acquire), HELD | QUEUED)).count()
    }

    /// # Safety
    /// As [`crate::dev::BlockDevice::submit`]; `req` is validated.
    pub(super) unsafe fn submit(&self, req: &DeviceRequest<'_>) -> Result<Ticket, SubmitError> {
        let mut guard = self.local.borrow_mut();
        let local = &mut *guard;
        let index = local.free.pop().ok_or(SubmitError::Busy)?;
        let i = usize::from(index);
        local.generations[i] = local.generations[i].wrapping_add(1);
        let ticket = make_ticket(i, local.generations[i]);
        let others = local.outstanding;
        local.outstanding += 1;

        if local.mode == Mode::Inline {
            match local.probe {
                // Another request while the probe is held: the caller has requests in parallel.
                Some((held, _)) => {
                    local.probe = None;
                    if helpers().is_some() {
                        local.go_shared();
                        self.queue(Job::in_slot(&self.shared, held), local);
                    } else {
                        self.run_held(held, local);
                    }
                }
                None => {
                    local.until_probe -= 1;
                    if local.until_probe == 0 {
                        local.until_probe = PROBE_EVERY * local.backoff;
                        local.probe = Some((index, false));
                        self.shared.store(index, req);
                        self.shared.slots[i].status.state.store(HELD, Ordering::Relaxed);
                        return Ok(ticket);
                    }
                }
            }
        } else {
            local.calm = if others == 0 { local.calm + 1 } else { 0 };
            local.window_queued += 1;
            if local.calm >= CALM_SUBMITS {
                local.go_inline();
            } else if local.window_queued >= WINDOW {
                // Did the helpers take their share of the window?
                if local.window_ran > local.window_queued / 2 {
                    local.backoff = (local.backoff * 2).min(MAX_BACKOFF);
                    local.go_inline();
                } else {
                    local.backoff = 1;
                }
                local.window_queued = 0;
                local.window_ran = 0;
            }
        }

        self.inline.store(local.mode == Mode::Inline, Ordering::Relaxed);
        if local.mode == Mode::Shared {
            let job = Job::new(&self.shared, index, req);
            self.queue(job, local);
        } else {
            local.iov.fill(req.segments);
            // SAFETY: the submit contract keeps every segment valid (reads: unaliased) until
            // `poll` reports this ticket, which is after this call returns.
            let result = unsafe { self.shared.exec.execute(req.op, req.offset, req.len, &mut local.iov.0) };
            self.shared.slots[i].finish(result);
            local.counts.inline += 1;
        }
        Ok(ticket)
    }

    /// Runs `req` inline now if `submit` would (inline mode, nothing in flight, no probe due),
    /// with no slot or ticket; `None` otherwise (see [`crate::dev::BlockDevice::rw_now`]).
    ///
    /// # Safety
    /// As [`crate::dev::BlockDevice::rw_now`]; `req` is validated.
    pub(super) unsafe fn rw_now(&self, req: &DeviceRequest<'_>) -> Option<Result<(), DeviceError>> {
        let mut guard = self.local.borrow_mut();
        let local = &mut *guard;
        // The probe's turn (`until_probe` reaching 0) goes through `submit`, which holds it.
        if local.mode != Mode::Inline || local.probe.is_some() || local.outstanding > 0 || local.until_probe <= 1 {
            return None;
        }
        local.until_probe -= 1;
        local.iov.fill(req.segments);
        local.counts.inline += 1;
        // SAFETY: the caller keeps every segment valid (reads: unaliased) during this call.
        Some(unsafe { self.shared.exec.execute(req.op, req.offset, req.len, &mut local.iov.0) })
    }

    /// Queues `job` (its slot FREE or HELD) for the helpers: it joins the batch that the next
    /// `unplug` hands over.
    fn queue(&self, job: Job, local: &mut Local) {
        self.shared.slots[usize::from(job.index)].status.state.store(QUEUED, Ordering::Relaxed);
        local.counts.queued += 1;
        local.batch.push(job);
    }

    /// Ends a submission batch: hands the queued requests to the helpers.
    pub(super) fn unplug(&self) {
        let mut guard = self.local.borrow_mut();
        self.hand_over(&mut guard);
    }

    /// Hands the batch to the helpers (running here what their full queue refuses) and wakes
    /// one if it sleeps.
    ///
    /// One in [`KEEP_DIVISOR`] of the batch (its last requests) is kept back instead, for this
    /// thread to run while it waits (`poll`, `wait_idle`): at depth the caller runs about that
    /// share anyway, and a kept request never goes through the shared queue, whose every push
    /// and pop moves cache lines between cores, and its slot is still in this core's cache. With
    /// the helpers on the machine's other core, QD32 reads ran 1.04× and 1.035× as fast as when
    /// the caller took its share back from the queue (medians of two sets of 11 paired runs; a
    /// third set, in a noisy minute, 0.95×). One in 3: the same as 4; one in 6: 0.985×.
    fn hand_over(&self, local: &mut Local) {
        local.batch_polls = 0;
        if local.batch.is_empty() {
            return;
        }
        let h = helpers();
        let keep = if h.is_some() { local.batch.len() / KEEP_DIVISOR } else { 0 };
        let handed = local.batch.len() - keep;
        let kept_before = local.kept.len();
        local.kept.extend(local.batch.drain(handed..));
        local.counts.merged += self.merge_reads(&mut local.kept, kept_before) + self.merge_reads(&mut local.batch, 0);
        for job in local.batch.drain(..) {
            let refused = match h {
                Some(h) => h.push(job),
                None => Err(job),
            };
            if let Err(job) = refused {
                local.counts.ran_by_caller += job.run();
            }
        }
        if let Some(h) = h {
            h.wake();
        }
    }

    /// Runs the held probe request in this thread.
    fn run_held(&self, index: u16, local: &mut Local) {
        // SAFETY: the slot is HELD: only the caller, which holds `local`, touches its request.
        let r = unsafe { &mut *self.shared.slots[usize::from(index)].req.get() };
        // SAFETY: the request was submitted under the submit contract and has not completed:
        // its segments are still valid.
        let result = unsafe { r.execute(&self.shared.exec) };
        self.shared.slots[usize::from(index)].finish(result);
        local.counts.inline += 1;
    }

    /// The result once `ticket` is done (or unknown: `Invalid`). While it is not, the waker is
    /// woken at once or kept until the request is seen done ([`Parking`]).
    pub(super) fn poll(&self, ticket: Ticket, cx: &mut Context<'_>) -> Poll<Result<(), DeviceError>> {
        let (index, generation) = split_ticket(ticket);
        let mut guard = self.local.borrow_mut();
        let local = &mut *guard;
        if local.generations.get(index) != Some(&generation) {
            return Poll::Ready(Err(DeviceError::Invalid));
        }
        let slot = &self.shared.slots[index];
        let mut state = slot.status.state.load(Ordering::Acquire);
        if state == HELD {
            match local.probe {
                // First poll of the probe: give the caller a chance to submit something else.
                Some((held, false)) if usize::from(held) == index => {
                    local.probe = Some((held, true));
                    cx.waker().wake_by_ref();
                    return Poll::Pending;
                }
                // Nothing else came: the caller has one request at a time.
                _ => {
                    local.probe = None;
                    self.run_held(index as u16, local);
                    state = DONE;
                }
            }
        }
        if state == QUEUED && !local.batch.is_empty() {
            // Polled before `unplug` ended the batch. Within a batch that is normal (the caller
            // polls each request once as it goes); polled again without an `unplug`, the batch
            // is handed over here rather than left waiting for one.
            local.batch_polls += 1;
            if local.batch_polls > local.batch.len() {
                self.hand_over(local);
            }
        }
        if state == QUEUED && local.batch.is_empty() {
            // Help instead of waiting idle: run a request this caller kept back (see
            // `hand_over`), else, while the helpers have more than they can take at once, the
            // next queued request (any file's). (Not while a batch is being built: the caller
            // has work of its own then.)
            let job = local.kept.pop().or_else(|| helpers().and_then(|h| h.pop_beyond(h.threads)));
            if let Some(job) = job {
                let ran = job.run();
                local.window_ran += ran as u32;
                local.counts.ran_by_caller += ran;
            }
            state = slot.status.state.load(Ordering::Acquire);
        }
        match state {
            DONE => {
                let result = decode_result(slot.status.result.load(Ordering::Relaxed));
                slot.status.state.store(FREE, Ordering::Relaxed);
                local.free.push(index as u16);
                local.outstanding -= 1;
                local.parking.finished(index as u16, |i| self.shared.is_done(i));
                Poll::Ready(result)
            }
            QUEUED => {
                // Handed to the helpers, it finishes without this poll; still in the batch, it
                // needs polls (or an `unplug`) to be handed over.
                let handed_over = local.batch.is_empty();
                local.parking.wait(index as u16, cx, handed_over, |i| self.shared.is_done(i));
                Poll::Pending
            }
            _ => Poll::Ready(Err(DeviceError::Invalid)),
        }
    }

    /// Blocks until the helpers have finished this file's queued requests.
    pub(super) fn wait_idle(&self) {
        self.unplug();
        // The caller's kept requests are this thread's to run.
        loop {
            let kept = self.local.borrow_mut().kept.pop();
            let Some(job) = kept else { break };
            job.run();
        }
        while self.shared.slots.iter().any(|s| s.status.state.load(Ordering::Acquire) == QUEUED) {
            // Run queued requests rather than only wait: this thread may be the only one left
            // that can (the helpers may be busy with other files' requests).
            match helpers().and_then(|h| h.pop_beyond(0)) {
                Some(job) => {
                    job.run();
                }
                None => std::thread::yield_now(),
            }
        }
    }
}

impl Drop for Adaptive {
    fn drop(&mut self) {
        // Helpers write into callers' memory, and jobs point at `shared`, until each queued
        // request is done.
        self.wait_idle();
    }
}

impl Shared {
    fn is_done(&self, index: u16) -> bool {
        self.slots[usize::from(index)].status.state.load(Ordering::Acquire) == DONE
    }

    /// Copies `req` into slot `index`, which the caller owns (FREE or HELD).
    fn store(&self, index: u16, req: &DeviceRequest<'_>) {
        // SAFETY: the caller owns the slot (see `Slot`'s Sync): no other thread touches `req`.
        unsafe { &mut *self.slots[usize::from(index)].req.get() }.fill(req);
    }
}

impl Slot {
    fn finish(&self, result: Result<(), DeviceError>) {
        self.status.result.store(encode_result(result), Ordering::Relaxed);
        self.status.state.store(DONE, Ordering::Release);
    }
}
