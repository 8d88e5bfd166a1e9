//! A leaf that records what reaches the device below: every completed write (with its bytes),
//! write-zeroes, discard and grow, and every flush's submission and completion, reported to a
//! caller-provided [`RecordSink`]. The crash-consistency harness (`docs/ARCHITECTURE.md`, "Testing") replays
//! such a stream cut at many points onto copies of the starting image.
//!
//! # Sequence numbers and flush semantics
//!
//! One counter orders everything: each submission of a recorded operation and each completion
//! takes the next [`Seq`]. A write's event carries both numbers (`submitted`, `seq`), a flush's
//! completion carries its submission's number. A flush covers exactly the writes whose
//! completion was *reported* (seq) before the flush was submitted: what the device made stable
//! by then. Writes the device finished but nobody polled yet are not counted as covered, which
//! under-approximates what is stable and so never promises too much.
//!
//! Data is read when the write completes, between the device's `Ready` and ours, while the
//! caller's memory is still valid under the [`BlockDevice::submit`] contract. Reads pass
//! through untouched and take no slot.
//!
//! The wrapper holds at most `Q` recorded requests at once and at most `S` segments per write
//! (its [`DeviceInfo`] says so, so the io layer splits requests to fit); more is
//! [`SubmitError::Busy`] or [`DeviceError::Invalid`], never a panic.

#![allow(unsafe_code)] // reason: forwards the unsafe `submit` contract and reads write segments at completion

#[cfg(test)]
mod tests;

use core::cell::{Cell, RefCell};
use core::task::{Context, Poll};

use super::{BlockDevice, DeviceError, DeviceInfo, DeviceOp, DeviceRequest, Segment, SubmitError, Ticket};

/// A position in the recorded stream (see the module docs).
pub type Seq = u64;

/// The bytes of a completed write: its segments in order. Valid only during
/// [`RecordSink::event`].
#[derive(Clone, Copy)]
pub struct WriteData<'a> {
    segments: &'a [Segment],
}

impl<'a> WriteData<'a> {
    /// Total bytes.
    pub fn len(&self) -> u64 {
        self.segments.iter().map(|s| s.len as u64).sum()
    }

    /// No bytes at all.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The segments' bytes, in order.
    pub fn segments(&self) -> impl Iterator<Item = &'a [u8]> + 'a {
        self.segments.iter().map(|s| {
            if s.len == 0 || s.ptr.is_null() {
                return &[][..];
            }
            // SAFETY: a `WriteData` is only made by `Recording::poll` for a write the device has
            // just completed and before that completion is reported to the submitter, so under
            // the `BlockDevice::submit` contract every segment is still valid memory of `len`
            // bytes; devices never write through the segments of a write. The lifetime `'a`
            // ends with the sink callback, before the submitter can reuse the memory.
            unsafe { core::slice::from_raw_parts(s.ptr.cast_const(), s.len) }
        })
    }
}

impl core::fmt::Debug for WriteData<'_> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("WriteData").field("len", &self.len()).finish()
    }
}

/// One recorded happening. `result` is the device's answer: a failed write, write-zeroes or
/// discard may still have changed any part of its range.
#[derive(Clone, Copy, Debug)]
pub enum Event<'a> {
    /// A write completed.
    Write {
        /// Its completion.
        seq: Seq,
        /// Its submission.
        submitted: Seq,
        /// Byte offset on the device.
        offset: u64,
        /// The bytes written.
        data: WriteData<'a>,
        /// The device's answer.
        result: Result<(), DeviceError>,
    },
    /// A write-zeroes completed.
    WriteZeroes {
        /// Its completion.
        seq: Seq,
        /// Its submission.
        submitted: Seq,
        /// Byte offset on the device.
        offset: u64,
        /// Bytes covered.
        len: u64,
        /// Deallocation was allowed.
        unmap: bool,
        /// The device's answer.
        result: Result<(), DeviceError>,
    },
    /// A discard completed.
    Discard {
        /// Its completion.
        seq: Seq,
        /// Its submission.
        submitted: Seq,
        /// Byte offset on the device.
        offset: u64,
        /// Bytes covered.
        len: u64,
        /// The device's answer.
        result: Result<(), DeviceError>,
    },
    /// A flush was handed to the device.
    FlushSubmitted {
        /// Its submission.
        seq: Seq,
    },
    /// A flush completed: if `result` is `Ok`, every write whose completion's seq is below
    /// `submitted` is stable.
    Flushed {
        /// Its completion.
        seq: Seq,
        /// Its submission.
        submitted: Seq,
        /// The device's answer.
        result: Result<(), DeviceError>,
    },
    /// The device grew to `capacity` bytes.
    Grow {
        /// When.
        seq: Seq,
        /// The new size.
        capacity: u64,
    },
}

/// Where a [`Recording`] reports. Called in the executor's thread, never re-entered.
pub trait RecordSink {
    /// One event, in seq order.
    fn event(&self, event: Event<'_>);
}

/// A recorded request in flight.
#[derive(Clone, Copy)]
struct Entry<const S: usize> {
    ticket: Ticket,
    op: DeviceOp,
    offset: u64,
    len: u64,
    submitted: Seq,
    segments: [Segment; S],
    nsegs: usize,
}

const NO_SEGMENT: Segment = Segment { ptr: core::ptr::null_mut(), len: 0 };

/// A [`BlockDevice`] over `inner` that reports to a [`RecordSink`] (see the module docs); at most
/// `Q` recorded requests in flight and `S` segments per request.
pub struct Recording<'a, const Q: usize = 64, const S: usize = 32> {
    inner: &'a dyn BlockDevice,
    sink: &'a dyn RecordSink,
    info: DeviceInfo,
    next: Cell<Seq>,
    /// A counter shared with other recordings ([`Recording::sharing`]), used instead of `next`.
    shared: Option<&'a Cell<Seq>>,
    table: RefCell<[Option<Entry<S>>; Q]>,
}

impl<'a, const Q: usize, const S: usize> Recording<'a, Q, S> {
    /// Wraps `inner`, reporting to `sink`.
    pub fn new(inner: &'a dyn BlockDevice, sink: &'a dyn RecordSink) -> Self {
        let mut info = inner.info().clone();
        info.max_segments = info.max_segments.min(S.min(usize::from(u16::MAX)) as u16).max(1);
        info.queue_depth = info.queue_depth.min(Q.min(usize::from(u16::MAX)) as u16).max(1);
        Self { inner, sink, info, next: Cell::new(0), shared: None, table: RefCell::new([None; Q]) }
    }

    /// Wraps `inner`, reporting to `sink`, with seqs taken from `counter`: recordings of several
    /// devices (the files of a backing chain) sharing one counter put all their events in one
    /// order, so one cut point means the same instant on every device.
    pub fn sharing(inner: &'a dyn BlockDevice, sink: &'a dyn RecordSink, counter: &'a Cell<Seq>) -> Self {
        Self { shared: Some(counter), ..Self::new(inner, sink) }
    }

    fn counter(&self) -> &Cell<Seq> {
        self.shared.unwrap_or(&self.next)
    }

    /// The seq the next submission or completion will take: every event so far has a lower one.
    pub fn seq(&self) -> Seq {
        self.counter().get()
    }

    /// Recorded requests in flight.
    pub fn in_flight(&self) -> usize {
        self.table.borrow().iter().filter(|e| e.is_some()).count()
    }

    fn take_seq(&self) -> Seq {
        let counter = self.counter();
        let s = counter.get();
        counter.set(s.saturating_add(1));
        s
    }

    fn report(&self, e: &Entry<S>, result: Result<(), DeviceError>) {
        let seq = self.take_seq();
        let (submitted, offset, len) = (e.submitted, e.offset, e.len);
        let event = match e.op {
            DeviceOp::Write => {
                let segments = e.segments.get(..e.nsegs).unwrap_or(&[]);
                Event::Write { seq, submitted, offset, data: WriteData { segments }, result }
            }
            DeviceOp::WriteZeroes { unmap } => Event::WriteZeroes { seq, submitted, offset, len, unmap, result },
            DeviceOp::Discard => Event::Discard { seq, submitted, offset, len, result },
            DeviceOp::Flush => Event::Flushed { seq, submitted, result },
            DeviceOp::Read => return,
        };
        self.sink.event(event);
    }
}

impl<const Q: usize, const S: usize> BlockDevice for Recording<'_, Q, S> {
    fn info(&self) -> &DeviceInfo {
        &self.info
    }

    unsafe fn submit(&self, req: &DeviceRequest<'_>) -> Result<Ticket, SubmitError> {
        if req.op == DeviceOp::Read {
            // SAFETY: forwarded unchanged; the caller's guarantee about the segments holds for
            // the device below, and `poll` forwards this ticket to the same device.
            return unsafe { self.inner.submit(req) };
        }
        if req.segments.len() > S {
            return Err(SubmitError::Invalid(DeviceError::Invalid));
        }
        let mut table = self.table.borrow_mut();
        let Some(free) = table.iter_mut().find(|e| e.is_none()) else {
            return Err(SubmitError::Busy);
        };
        // SAFETY: forwarded unchanged, as above. We keep copies of the segment descriptors and
        // read through them only in `poll`, after the device below reports completion and
        // before we report it, while the caller still guarantees the memory.
        let ticket = unsafe { self.inner.submit(req) }?;
        let mut segments = [NO_SEGMENT; S];
        for (to, from) in segments.iter_mut().zip(req.segments) {
            *to = *from;
        }
        let submitted = self.take_seq();
        *free = Some(Entry { ticket, op: req.op, offset: req.offset, len: req.len, submitted, segments, nsegs: req.segments.len() });
        drop(table);
        if req.op == DeviceOp::Flush {
            self.sink.event(Event::FlushSubmitted { seq: submitted });
        }
        Ok(ticket)
    }

    fn poll(&self, ticket: Ticket, cx: &mut Context<'_>) -> Poll<Result<(), DeviceError>> {
        let result = core::task::ready!(self.inner.poll(ticket, cx));
        let entry = self.table.borrow_mut().iter_mut().find(|e| e.is_some_and(|e| e.ticket == ticket)).and_then(Option::take);
        if let Some(entry) = entry {
            self.report(&entry, result);
        }
        Poll::Ready(result)
    }

    fn unplug(&self) {
        self.inner.unplug();
    }

    fn capacity(&self) -> u64 {
        self.inner.capacity()
    }

    fn grow(&self, min_capacity: u64) -> Result<u64, DeviceError> {
        let before = self.inner.capacity();
        let capacity = self.inner.grow(min_capacity)?;
        if capacity > before {
            let seq = self.take_seq();
            self.sink.event(Event::Grow { seq, capacity });
        }
        Ok(capacity)
    }
}
