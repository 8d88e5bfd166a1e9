//! What a queued request carries to the thread that runs it ([`Job`]), and how the adjacent
//! reads of one batch join into one system call ([`Adaptive::merge_reads`]).

use super::{Adaptive, Shared};
use crate::dev::{DeviceOp, DeviceRequest};

/// Most reads one system call does for a batch (see [`Adaptive::merge_reads`]).
pub(super) const MAX_MERGE: usize = 32;

/// One queued request: a file's slot, and the request itself when it has one segment.
pub(super) struct Job {
    file: *const Shared,
    pub(super) index: u16,
    /// The request, carried in the job so that the thread that runs it reads the queue entry's
    /// cache line and not the slot's too (QD32 reads: 1.026×, median of 15 paired runs).
    /// `None`: the request is in the slot (more than one segment, or the held probe).
    one: Option<OneSegment>,
}

/// A read or write of one segment, whose length is the request's (`DeviceInfo::check` saw to
/// it).
#[derive(Clone, Copy)]
struct OneSegment {
    op: DeviceOp,
    offset: u64,
    iov: libc::iovec,
}

// SAFETY: `file` points into an `Adaptive`'s box, which outlives every job on its slots (its
// Drop waits until none is QUEUED); the slot's request is the job's alone while it is QUEUED.
unsafe impl Send for Job {}

impl Job {
    /// The job of slot `index` (FREE or HELD, so the caller's) for `req`: carried whole if it
    /// is a read or write of one segment, else copied into the slot. (Other requests may come
    /// with segments too, which `DeviceInfo::check` does not hold to their length.)
    pub(super) fn new(file: &Shared, index: u16, req: &DeviceRequest<'_>) -> Self {
        let one = match req.segments {
            [s] if matches!(req.op, DeviceOp::Read | DeviceOp::Write) => Some(OneSegment { op: req.op, offset: req.offset, iov: libc::iovec { iov_base: s.ptr.cast(), iov_len: s.len } }),
            _ => {
                file.store(index, req);
                None
            }
        };
        Self { file, index, one }
    }

    /// The job of a request already in slot `index` (the held probe).
    pub(super) fn in_slot(file: &Shared, index: u16) -> Self {
        Self { file, index, one: None }
    }

    /// Runs the request and finishes it; returns how many requests that finished (the
    /// followers of a merged read too).
    pub(super) fn run(self) -> u64 {
        // SAFETY: see `Send` above: the file outlives this job until `finish` below, after which
        // nothing here touches it.
        let file = unsafe { &*self.file };
        let slot = &file.slots[usize::from(self.index)];
        // The submit contract keeps the segments valid (reads: unaliased) until the ticket is
        // reported done, which `poll` does only after `finish`.
        let mut finished = 1;
        let result = match self.one {
            Some(mut one) => {
                let len = one.iov.iov_len as u64;
                // SAFETY: as said above.
                unsafe { file.exec.execute(one.op, one.offset, len, std::slice::from_mut(&mut one.iov)) }
            }
            None => {
                // SAFETY: popping the job gave this thread the slot's request and followers
                // (see `Slot`'s Sync).
                let (r, followers) = unsafe { (&mut *slot.req.get(), &mut *slot.followers.get()) };
                // SAFETY: as said above.
                let result = unsafe { r.execute(&file.exec) };
                // Before the leader's own: once it is finished, its slot (and this list) may
                // be reused.
                for f in followers.drain(..) {
                    file.slots[usize::from(f)].finish(result);
                    finished += 1;
                }
                result
            }
        };
        slot.finish(result);
        finished
    }
}

impl Adaptive {
    /// Joins each run of reads in the batch whose ranges follow one another (one segment each,
    /// up to [`MAX_MERGE`]) into one read: the run's first slot takes the whole run as a
    /// request of several segments, and the others become its followers, done by its system
    /// call and finished with it. A stream of sequential reads at depth hands over a few such
    /// reads per batch; one `preadv` for them saves each one's system call (entry, file lookup,
    /// checks), which is a good part of a page-cache read. As QEMU's virtio-blk and Linux's
    /// plugging merge adjacent requests, the joined reads also share one result: an error
    /// fails the whole run.
    pub(super) fn merge_reads(&self, jobs: &mut Vec<Job>, from: usize) -> u64 {
        let mut merged = 0;
        let mut end = from;
        for i in from..jobs.len() {
            if let (Some(read), true) = (jobs[i].one.filter(|o| o.op == DeviceOp::Read), end > from) {
                let follower = jobs[i].index;
                if self.shared.join(&mut jobs[end - 1], follower, read) {
                    merged += 1;
                    continue;
                }
            }
            jobs.swap(end, i);
            end += 1;
        }
        jobs.truncate(end);
        merged
    }
}

impl Shared {
    /// Makes slot `follower`'s `read` part of `leader`'s read if it starts where that one
    /// ends, and the run has room; false (nothing changed) otherwise. Both jobs are in the
    /// caller's batch.
    fn join(&self, leader: &mut Job, follower: u16, read: OneSegment) -> bool {
        let slot = &self.slots[usize::from(leader.index)];
        // SAFETY: the leader's job is in the caller's batch, not handed over: the slot is the
        // caller's (see `Slot`'s Sync).
        let (req, followers) = unsafe { (&mut *slot.req.get(), &mut *slot.followers.get()) };
        match leader.one {
            Some(first) if first.op == DeviceOp::Read && first.offset + first.iov.iov_len as u64 == read.offset => {
                req.start_run(DeviceOp::Read, first.offset, first.iov);
                followers.clear();
            }
            None if !followers.is_empty() && followers.len() + 1 < MAX_MERGE && req.end() == read.offset => {}
            _ => return false,
        }
        if !req.extend_run(read.iov) {
            return false;
        }
        followers.push(follower);
        leader.one = None;
        true
    }
}
