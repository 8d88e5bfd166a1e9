//! The polled executor: fixed task slots, no interrupts, no heap.
//!
//! [`run`] drives a pinned slice of futures to completion. Each task has a ready flag in a static
//! table; its waker sets the flag, and a round polls exactly the tasks whose flag is set. Every
//! round is one submission batch (the [`Platform`] plugs before and unplugs after, so requests
//! submitted by many tasks in a round share one doorbell) and ends by polling the devices, whose
//! completions wake the tasks waiting for them. Nothing sleeps: with no interrupts, the loop is
//! the only thing that notices the device finishing.
//!
//! The idle path does not execute `spin_loop()` (PAUSE): under TCG, PAUSE leaves the translated
//! code loop, and with it QD1 ran at 25-32k IOPS on null-co instead of 37-48k.
//!
//! Why not `embassy-executor`: measured in the guest on the same bench loop (its raw executor
//! driven by this plug/poll/unplug/device-poll loop, graph and backend moved into statics),
//! 12 paired runs each on null-co under TCG: qd 32 equal (mean 90.1k IOPS embassy, 89.4k
//! here), qd 1 about 8% slower (39.8k vs 43.0k). And it costs structure: its tasks must be
//! `'static` (a `static` pool per task function), while the block layer's requests borrow a
//! graph and backend built on the workload's stack; its spin platform's `run` never returns and
//! has no per-round hook for the submission batch or the device poll; it needs a
//! critical-section implementation and a `__pender` symbol.

#![allow(unsafe_code)] // reason: waker vtable and pin projection into the task slice

use core::future::Future;
use core::pin::Pin;
use core::sync::atomic::{AtomicBool, Ordering};
use core::task::{Context, Poll, RawWaker, RawWakerVTable, Waker};

/// Most tasks one [`run`] drives.
pub const MAX_TASKS: usize = 80;

static READY: [AtomicBool; MAX_TASKS] = [const { AtomicBool::new(false) }; MAX_TASKS];

static VTABLE: RawWakerVTable = RawWakerVTable::new(clone, wake, wake, drop_waker);

fn clone(data: *const ()) -> RawWaker {
    RawWaker::new(data, &VTABLE)
}

fn wake(data: *const ()) {
    // SAFETY: every waker's data points at an element of the static READY table.
    unsafe { &*data.cast::<AtomicBool>() }.store(true, Ordering::Release);
}

fn drop_waker(_: *const ()) {}

fn waker(index: usize) -> Waker {
    let flag: &'static AtomicBool = &READY[index];
    // SAFETY: the vtable's functions uphold RawWaker's contract for a pointer to a 'static
    // AtomicBool: clone copies it, wake sets the flag (thread-safe), drop does nothing.
    unsafe { Waker::from_raw(RawWaker::new((flag as *const AtomicBool).cast(), &VTABLE)) }
}

/// What the executor asks of the machine around each round.
pub trait Platform {
    /// Before a round's polls: start a submission batch.
    fn begin_round(&self) {}
    /// After a round's polls: end the batch (ring the doorbells).
    fn end_round(&self) {}
    /// Poll the devices' completion queues; returns the requests completed (their tasks are
    /// woken). Called after every round.
    fn poll_devices(&self) -> usize;
}

/// What a run cost.
#[derive(Clone, Copy, Debug, Default)]
pub struct RunStats {
    /// Rounds of the loop.
    pub rounds: u64,
    /// Task polls.
    pub polls: u64,
}

/// Drives every task in `tasks` to completion. Callers keep to [`MAX_TASKS`]: tasks past it are
/// never polled.
pub fn run<F: Future<Output = ()>>(mut tasks: Pin<&mut [F]>, platform: &dyn Platform) -> RunStats {
    let n = tasks.len().min(MAX_TASKS);
    for flag in &READY[..n] {
        flag.store(true, Ordering::Relaxed);
    }
    let mut done = [false; MAX_TASKS];
    let mut remaining = n;
    let mut stats = RunStats::default();
    while remaining > 0 {
        stats.rounds += 1;
        platform.begin_round();
        for i in 0..n {
            // A plain load first: most tasks are not ready in most rounds, and a swap is a locked
            // read-modify-write.
            if done[i] || !READY[i].load(Ordering::Relaxed) || !READY[i].swap(false, Ordering::Acquire) {
                continue;
            }
            stats.polls += 1;
            // SAFETY: structural pinning: the slice is pinned, so each element is; elements are
            // never moved out or swapped, only polled in place.
            let task = unsafe { tasks.as_mut().map_unchecked_mut(|s| &mut s[i]) };
            let waker = waker(i);
            if task.poll(&mut Context::from_waker(&waker)) == Poll::Ready(()) {
                done[i] = true;
                remaining -= 1;
            }
        }
        platform.end_round();
        platform.poll_devices();
    }
    stats
}

/// Pins the futures of a `heapless::Vec` as a slice for [`run`].
pub fn as_slice<F, const N: usize>(v: Pin<&mut heapless::Vec<F, N>>) -> Pin<&mut [F]> {
    // SAFETY: the slice is the vector's storage, pinned with it; the vector is never grown or
    // shrunk again through the pin (no access to it but this slice).
    unsafe { v.map_unchecked_mut(|v| v.as_mut_slice()) }
}

/// Runs one future to completion (a one-task [`run`]), returning its output.
pub fn block_on<T>(future: impl Future<Output = T>, platform: &dyn Platform) -> Option<T> {
    let mut output = None;
    {
        let task = core::pin::pin!([async {
            output = Some(future.await);
        }]);
        run(task, platform);
    }
    // `run` returns only when the task has completed, which set `output`.
    output
}
