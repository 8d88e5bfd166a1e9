//! Queue mode on io_uring: `submit` writes an SQE, `unplug` makes one `io_uring_enter` for the
//! batch, `poll` submits anything left and reaps the CQ. Short transfers are resubmitted for the
//! rest; refused fallocate modes fall back to [`Exec`]'s synchronous path.

#![allow(unsafe_code)] // reason: io_uring SQEs carry raw pointers into callers' memory

use std::io;
use std::sync::{Arc, Mutex};

use io_uring::{cqueue, opcode, squeue, types, IoUring};

use super::failure::op_name;
use super::sys::{self, Exec};
use super::{lock_unpoisoned, make_ticket, split_ticket, IovBuf};
use crate::dev::{DeviceError, DeviceOp, DeviceRequest, SubmitError, Ticket};

pub(super) struct Uring {
    inner: Mutex<Inner>,
}

struct Inner {
    ring: IoUring,
    exec: Arc<Exec>,
    slots: Vec<Slot>,
    free: Vec<u16>,
    /// Slots whose SQE the kernel has or will get (not completed at submit).
    in_flight: usize,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum State {
    Free,
    InFlight,
    Done(Result<(), DeviceError>),
}

struct Slot {
    generation: u16,
    state: State,
    op: DeviceOp,
    offset: u64,
    len: u64,
    /// Bytes transferred so far (reads and writes).
    done: u64,
    /// The iovecs; entries before `start` are finished, `iov[start]` may be partly advanced.
    iov: IovBuf,
    start: usize,
    /// fallocate mode of a discard or write-zeroes in flight.
    mode: libc::c_int,
}

impl Uring {
    /// A ring for `depth` requests of at most `max_segments` segments. Fails if the kernel has
    /// no io_uring or refuses it (seccomp, `io_uring_disabled`): checked with a NOP round trip.
    pub(super) fn new(exec: Arc<Exec>, depth: u16, max_segments: usize) -> io::Result<Self> {
        let entries = u32::from(depth).next_power_of_two();
        let mut ring = IoUring::builder().setup_cqsize(entries * 2).build(entries)?;
        let nop = opcode::Nop::new().build().user_data(u64::MAX);
        // SAFETY: a NOP references no memory.
        unsafe { ring.submission().push(&nop) }.map_err(|_| io::Error::other("io_uring submission queue full"))?;
        ring.submit_and_wait(1)?;
        let cqe: cqueue::Entry = ring.completion().next().ok_or_else(|| io::Error::other("io_uring NOP did not complete"))?;
        if cqe.result() < 0 {
            return Err(io::Error::from_raw_os_error(-cqe.result()));
        }
        let slots = (0..depth)
            .map(|_| Slot {
                generation: 0,
                state: State::Free,
                op: DeviceOp::Flush,
                offset: 0,
                len: 0,
                done: 0,
                iov: IovBuf::with_capacity(max_segments),
                start: 0,
                mode: 0,
            })
            .collect();
        Ok(Self { inner: Mutex::new(Inner { ring, exec, slots, free: (0..depth).rev().collect(), in_flight: 0 }) })
    }

    pub(super) fn in_flight(&self) -> usize {
        lock_unpoisoned(&self.inner).in_flight
    }

    /// # Safety
    /// As [`crate::dev::BlockDevice::submit`]; `req` is validated.
    pub(super) unsafe fn submit(&self, req: &DeviceRequest<'_>) -> Result<Ticket, SubmitError> {
        let mut guard = lock_unpoisoned(&self.inner);
        let inner = &mut *guard;
        let index = usize::from(inner.free.pop().ok_or(SubmitError::Busy)?);
        let exec = inner.exec.clone();
        let slot = &mut inner.slots[index];
        slot.generation = slot.generation.wrapping_add(1);
        slot.op = req.op;
        slot.offset = req.offset;
        slot.len = req.len;
        slot.done = 0;
        slot.start = 0;
        slot.iov.fill(req.segments);
        slot.mode = 0;
        let ticket = make_ticket(index, slot.generation);
        // Discards and write-zeroes the kernel is known to refuse, and block-device discards
        // (an ioctl, no io_uring opcode), run here at once.
        let sync = match req.op {
            DeviceOp::Discard if exec.is_blockdev || !exec.punch_ok() => Some(exec.discard(req.offset, req.len)),
            DeviceOp::Discard => {
                slot.mode = libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE;
                None
            }
            DeviceOp::WriteZeroes { unmap } => {
                if unmap && exec.punch_ok() {
                    slot.mode = libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE;
                    None
                } else if exec.zero_range_ok() {
                    slot.mode = libc::FALLOC_FL_ZERO_RANGE | libc::FALLOC_FL_KEEP_SIZE;
                    None
                } else {
                    Some(exec.write_zeroes_emulated(req.offset, req.len))
                }
            }
            _ => None,
        };
        if let Some(result) = sync {
            slot.state = State::Done(result);
            return Ok(ticket);
        }
        let entry = slot.entry(exec.fd(), index);
        // SAFETY: the entry points at this slot's iovec array (kept until completion) and at
        // callers' segments, which the submit contract keeps valid until completion.
        let pushed = unsafe { push(&mut inner.ring, &entry) };
        if !pushed {
            // Cannot happen (the SQ holds at least `depth` entries); refuse rather than lose it.
            inner.slots[index].state = State::Free;
            inner.free.push(index as u16);
            return Err(SubmitError::Busy);
        }
        inner.slots[index].state = State::InFlight;
        inner.in_flight += 1;
        Ok(ticket)
    }

    pub(super) fn unplug(&self) {
        lock_unpoisoned(&self.inner).submit_queued();
    }

    /// Blocks until every request handed over so far has completed (results stay for `poll`).
    pub(super) fn wait_idle(&self) {
        lock_unpoisoned(&self.inner).wait_idle();
    }

    /// `Some(result)` once `ticket` is done (or unknown: `Invalid`).
    pub(super) fn poll(&self, ticket: Ticket) -> Option<Result<(), DeviceError>> {
        let (index, generation) = split_ticket(ticket);
        let mut guard = lock_unpoisoned(&self.inner);
        let inner = &mut *guard;
        inner.pump();
        let Some(slot) = inner.slots.get_mut(index).filter(|s| s.generation == generation) else {
            return Some(Err(DeviceError::Invalid));
        };
        match slot.state {
            State::Free => Some(Err(DeviceError::Invalid)),
            State::InFlight => None,
            State::Done(result) => {
                slot.state = State::Free;
                inner.free.push(index as u16);
                Some(result)
            }
        }
    }
}

/// Pushes one SQE, making room with a submit if the SQ is full. False if it still does not fit.
///
/// # Safety
/// As `SubmissionQueue::push`: the entry's memory stays valid until it completes.
unsafe fn push(ring: &mut IoUring, entry: &squeue::Entry) -> bool {
    // SAFETY: forwarded from the caller.
    if unsafe { ring.submission().push(entry) }.is_ok() {
        return true;
    }
    let _ = ring.submit();
    // SAFETY: forwarded from the caller.
    unsafe { ring.submission().push(entry) }.is_ok()
}

impl Slot {
    /// The SQE for what is left of this request.
    fn entry(&mut self, fd: libc::c_int, index: usize) -> squeue::Entry {
        let fd = types::Fd(fd);
        let offset = self.offset + self.done;
        let entry = match self.op {
            DeviceOp::Read | DeviceOp::Write => {
                let iov = &self.iov.0[self.start..];
                if self.op == DeviceOp::Read {
                    opcode::Readv::new(fd, iov.as_ptr(), iov.len() as u32).offset(offset).build()
                } else {
                    opcode::Writev::new(fd, iov.as_ptr(), iov.len() as u32).offset(offset).build()
                }
            }
            DeviceOp::Flush => opcode::Fsync::new(fd).flags(types::FsyncFlags::DATASYNC).build(),
            DeviceOp::Discard | DeviceOp::WriteZeroes { .. } => opcode::Fallocate::new(fd, self.len).offset(self.offset).mode(self.mode).build(),
        };
        entry.user_data(index as u64)
    }
}

impl Inner {
    /// One `io_uring_enter` if SQEs are queued (none otherwise: completions reach the CQ
    /// without a syscall).
    fn submit_queued(&mut self) {
        if !self.ring.submission().is_empty() {
            // Errors (EAGAIN, EBUSY, EINTR) leave the entries queued for the next call.
            let _ = self.ring.submit();
        }
    }

    /// Submits queued SQEs and reaps every completion, resubmitting short transfers.
    fn pump(&mut self) {
        loop {
            self.submit_queued();
            let mut reaped = false;
            loop {
                let cqe: Option<cqueue::Entry> = self.ring.completion().next();
                let Some(cqe) = cqe else { break };
                reaped = true;
                self.complete(cqe.user_data() as usize, cqe.result());
            }
            if !reaped || self.ring.submission().is_empty() {
                break;
            }
        }
    }

    fn complete(&mut self, index: usize, res: i32) {
        let exec = self.exec.clone();
        let Some(slot) = self.slots.get_mut(index).filter(|s| s.state == State::InFlight) else {
            return; // the open-time NOP, or a stray
        };
        let result = match slot.op {
            // Interrupted or asked to try again: resubmit, whatever the operation.
            _ if res == -libc::EINTR || res == -libc::EAGAIN => None,
            DeviceOp::Read | DeviceOp::Write if res < 0 => Some(Err(exec.failures.note(op_name(slot.op), slot.offset + slot.done, slot.len - slot.done, -res))),
            DeviceOp::Read | DeviceOp::Write if res == 0 => {
                if slot.op == DeviceOp::Write {
                    Some(Err(DeviceError::NoSpace))
                } else {
                    // End of file (it shrank under us): the rest reads as zeros, like QEMU.
                    // SAFETY: the iovecs describe the caller's read buffer, valid for writes
                    // until this request completes (now).
                    unsafe { sys::zero_iov(&slot.iov.0[slot.start..]) };
                    Some(Ok(()))
                }
            }
            DeviceOp::Read | DeviceOp::Write => {
                slot.done += res as u64;
                if slot.done >= slot.len {
                    Some(Ok(()))
                } else if slot.op == DeviceOp::Read && !exec.is_blockdev {
                    // A regular file reads short only at its end (O_DIRECT's partial last block):
                    // the rest reads as zeros (asking again at an unaligned offset would fail).
                    let total = slot.iov.0.len();
                    let rest = sys::advance_iov(&mut slot.iov.0[slot.start..], res as usize).len();
                    // SAFETY: the iovecs describe the caller's read buffer, valid for writes until
                    // this request completes (now).
                    unsafe { sys::zero_iov(&slot.iov.0[total - rest..]) };
                    Some(Ok(()))
                } else {
                    let total = slot.iov.0.len();
                    let rest = sys::advance_iov(&mut slot.iov.0[slot.start..], res as usize).len();
                    slot.start = total - rest;
                    None
                }
            }
            DeviceOp::Flush if res < 0 && res != -libc::EINVAL => Some(Err(exec.failures.note("flush", 0, 0, -res))),
            DeviceOp::Flush => Some(Ok(())),
            DeviceOp::Discard | DeviceOp::WriteZeroes { .. } if sys::is_unsupported(-res) => {
                exec.note_unsupported(slot.mode);
                Some(match slot.op {
                    DeviceOp::WriteZeroes { unmap } => exec.write_zeroes(slot.offset, slot.len, unmap),
                    _ => Err(DeviceError::Unsupported),
                })
            }
            DeviceOp::Discard | DeviceOp::WriteZeroes { .. } if res < 0 => Some(Err(exec.failures.note(op_name(slot.op), slot.offset, slot.len, -res))),
            DeviceOp::Discard | DeviceOp::WriteZeroes { .. } => Some(Ok(())),
        };
        match result {
            Some(result) => {
                slot.state = State::Done(result);
                self.in_flight -= 1;
            }
            None => {
                let entry = slot.entry(exec.fd(), index);
                // SAFETY: as in `submit`: the slot's iovecs and the caller's memory stay valid
                // until this request completes.
                let mut pushed = unsafe { push(&mut self.ring, &entry) };
                if !pushed {
                    // A full submission queue: hand it to the kernel, then try once more.
                    self.submit_queued();
                    // SAFETY: as above.
                    pushed = unsafe { push(&mut self.ring, &entry) };
                }
                if !pushed {
                    self.slots[index].state = State::Done(Err(DeviceError::Io));
                    self.in_flight -= 1;
                }
            }
        }
    }

    /// Submits what is queued and reaps completions until nothing is in flight.
    fn wait_idle(&mut self) {
        while self.in_flight > 0 {
            self.pump();
            if self.in_flight == 0 {
                break;
            }
            if self.ring.submit_and_wait(1).is_err() {
                std::thread::sleep(std::time::Duration::from_micros(100));
            }
        }
    }
}

impl Drop for Uring {
    fn drop(&mut self) {
        let inner = match self.inner.get_mut() {
            Ok(i) => i,
            Err(e) => e.into_inner(),
        };
        // The kernel writes into callers' memory until each request completes: wait for all.
        inner.wait_idle();
    }
}
