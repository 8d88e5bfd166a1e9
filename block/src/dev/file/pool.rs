//! Queue mode on a thread pool (when io_uring is unavailable or not wanted): `submit` fills a
//! slot, `unplug` hands the batch to the workers through one bounded queue, each worker runs
//! requests with [`Exec`] and marks its slot done; `poll` checks the slot's flag.

#![allow(unsafe_code)] // reason: workers run requests on raw segments handed over by `submit`

use std::collections::VecDeque;
use std::io;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;

use super::sys::Exec;
use super::{decode_result, encode_result, lock_unpoisoned, make_ticket, split_ticket, SlotReq};
use crate::dev::{DeviceError, DeviceRequest, SubmitError, Ticket};

const FREE: u8 = 0;
const QUEUED: u8 = 1;
const DONE: u8 = 2;

pub(super) struct Pool {
    shared: Arc<Shared>,
    local: Mutex<Local>,
    workers: Vec<JoinHandle<()>>,
}

/// Executor-side bookkeeping.
struct Local {
    generations: Vec<u16>,
    free: Vec<u16>,
    /// Submitted, not yet handed to the workers (until `unplug`).
    pending: Vec<u16>,
}

struct Shared {
    exec: Arc<Exec>,
    slots: Box<[Slot]>,
    queue: Mutex<Queue>,
    /// Workers wait here for work.
    work: Condvar,
    /// `Drop` waits here for `in_flight == 0`.
    idle: Condvar,
}

struct Queue {
    ready: VecDeque<u16>,
    /// Handed to the workers and not finished.
    in_flight: usize,
    shutdown: bool,
}

struct Slot {
    /// FREE, QUEUED (owned by the pool until DONE) or DONE (result in `result`).
    state: AtomicU8,
    result: AtomicU8,
    /// Written by the executor while FREE, by the worker while QUEUED: never contended.
    req: Mutex<SlotReq>,
}

impl Pool {
    pub(super) fn new(exec: Arc<Exec>, depth: u16, max_segments: usize, threads: u16) -> io::Result<Self> {
        let slots = (0..depth)
            .map(|_| Slot {
                state: AtomicU8::new(FREE),
                result: AtomicU8::new(0),
                req: Mutex::new(SlotReq::new(max_segments)),
            })
            .collect();
        let shared = Arc::new(Shared {
            exec,
            slots,
            queue: Mutex::new(Queue { ready: VecDeque::with_capacity(usize::from(depth)), in_flight: 0, shutdown: false }),
            work: Condvar::new(),
            idle: Condvar::new(),
        });
        let mut pool = Self {
            shared,
            local: Mutex::new(Local {
                generations: vec![0; usize::from(depth)],
                free: (0..depth).rev().collect(),
                pending: Vec::with_capacity(usize::from(depth)),
            }),
            workers: Vec::with_capacity(usize::from(threads)),
        };
        for i in 0..threads {
            let shared = pool.shared.clone();
            // On failure `pool` drops here, which stops the workers already started.
            let handle = std::thread::Builder::new().name(format!("strata-file-{i}")).spawn(move || worker(&shared))?;
            pool.workers.push(handle);
        }
        Ok(pool)
    }

    pub(super) fn in_flight(&self) -> usize {
        let pending = lock_unpoisoned(&self.local).pending.len();
        pending + lock_unpoisoned(&self.shared.queue).in_flight
    }

    /// # Safety
    /// As [`crate::dev::BlockDevice::submit`]; `req` is validated.
    pub(super) unsafe fn submit(&self, req: &DeviceRequest<'_>) -> Result<Ticket, SubmitError> {
        let mut local = lock_unpoisoned(&self.local);
        let index = local.free.pop().ok_or(SubmitError::Busy)?;
        let i = usize::from(index);
        let slot = &self.shared.slots[i];
        lock_unpoisoned(&slot.req).fill(req);
        slot.state.store(QUEUED, Ordering::Relaxed);
        local.generations[i] = local.generations[i].wrapping_add(1);
        local.pending.push(index);
        Ok(make_ticket(i, local.generations[i]))
    }

    pub(super) fn unplug(&self) {
        let mut local = lock_unpoisoned(&self.local);
        if local.pending.is_empty() {
            return;
        }
        let n = local.pending.len();
        {
            let mut q = lock_unpoisoned(&self.shared.queue);
            q.ready.extend(local.pending.drain(..));
            q.in_flight += n;
        }
        if n == 1 {
            self.shared.work.notify_one();
        } else {
            self.shared.work.notify_all();
        }
    }

    /// Blocks until the workers have finished everything handed to them (requests not yet
    /// unplugged have not started and stay queued; results stay for `poll`).
    pub(super) fn wait_idle(&self) {
        let mut q = lock_unpoisoned(&self.shared.queue);
        while q.in_flight > 0 && !self.workers.is_empty() {
            q = self.shared.idle.wait(q).unwrap_or_else(|e| e.into_inner());
        }
    }

    /// `Some(result)` once `ticket` is done (or unknown: `Invalid`).
    pub(super) fn poll(&self, ticket: Ticket) -> Option<Result<(), DeviceError>> {
        let (index, generation) = split_ticket(ticket);
        let pending = !lock_unpoisoned(&self.local).pending.is_empty();
        if pending {
            // Polled before `unplug`: hand the batch over now rather than wait forever.
            self.unplug();
        }
        let mut local = lock_unpoisoned(&self.local);
        if local.generations.get(index) != Some(&generation) {
            return Some(Err(DeviceError::Invalid));
        }
        let slot = &self.shared.slots[index];
        match slot.state.load(Ordering::Acquire) {
            DONE => {
                let result = decode_result(slot.result.load(Ordering::Relaxed));
                slot.state.store(FREE, Ordering::Relaxed);
                local.free.push(index as u16);
                Some(result)
            }
            QUEUED => None,
            _ => Some(Err(DeviceError::Invalid)),
        }
    }
}

fn worker(shared: &Shared) {
    let mut q = lock_unpoisoned(&shared.queue);
    loop {
        let Some(index) = q.ready.pop_front() else {
            if q.shutdown {
                return;
            }
            q = shared.work.wait(q).unwrap_or_else(|e| e.into_inner());
            continue;
        };
        drop(q);
        let slot = &shared.slots[usize::from(index)];
        let result = {
            // SAFETY: the submit contract keeps the segments valid (reads: unaliased) until the
            // ticket is reported done, which `poll` does only after the DONE store below.
            unsafe { lock_unpoisoned(&slot.req).execute(&shared.exec) }
        };
        slot.result.store(encode_result(result), Ordering::Relaxed);
        slot.state.store(DONE, Ordering::Release);
        q = lock_unpoisoned(&shared.queue);
        q.in_flight -= 1;
        if q.in_flight == 0 {
            shared.idle.notify_all();
        }
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        // Workers write into callers' memory until each request is done: hand over what was
        // never unplugged, wait for everything, then stop the workers.
        self.unplug();
        let mut q = lock_unpoisoned(&self.shared.queue);
        if !self.workers.is_empty() {
            while q.in_flight > 0 {
                q = self.shared.idle.wait(q).unwrap_or_else(|e| e.into_inner());
            }
        }
        q.shutdown = true;
        drop(q);
        self.shared.work.notify_all();
        for w in self.workers.drain(..) {
            let _ = w.join();
        }
    }
}
