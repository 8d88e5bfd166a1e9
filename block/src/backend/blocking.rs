//! Synchronous calls into the async block layer: [`block_on`] polls one request future to
//! completion and, while it is pending, *pumps* — runs the embedder's [`Pump`], which must do
//! what the executor's loop would have done between rounds (ring the devices' doorbells, poll
//! their completion queues). This is how a synchronous consumer (a FAT crate's 512-byte
//! `BlockDevice`, a blocking `embedded-io` stream) drives a polled device.
//!
//! It cannot deadlock on the device: the future itself polls its device tickets, and every
//! pending poll is followed by a pump, so a device that queues requests until a doorbell (a
//! virtio queue inside a plugged executor round) still gets it. And it does not spin for
//! ever: after [`Blocking::max_polls`] polls without completing it returns
//! [`DeviceError::Timeout`]. The future is dropped then, and a dropped request future waits
//! for the device to finish what it holds (memory safety first): a device that never
//! finishes a submitted request hangs there, as it would under any executor.
//!
//! What it cannot see: a resource held by *another* future of the same graph that is suspended
//! in an executor (a bounce buffer, an overlapping tracked request). Call it where no other
//! request future on the graph is pending — at the top of a workload, not from a task next to
//! others — or such a wait ends in the timeout.

use core::future::Future;
use core::pin::pin;
use core::task::{Context, Poll, Waker};

use crate::dev::DeviceError;
use crate::error::{Error, Result};

/// What a blocked call does between polls of its future.
pub trait Pump {
    /// Moves the devices forward: notify them of queued requests, poll their completions.
    fn pump(&self);
}

impl<F: Fn()> Pump for F {
    fn pump(&self) {
        self()
    }
}

/// How a synchronous call waits.
#[derive(Clone, Copy)]
pub struct Blocking<'p> {
    /// Run after every pending poll.
    pub pump: &'p dyn Pump,
    /// Polls after which a call gives up with [`DeviceError::Timeout`].
    pub max_polls: u64,
}

impl<'p> Blocking<'p> {
    /// Default poll budget: far more than any request of a working device needs (a 4 KiB read
    /// under QEMU's TCG takes tens of polls), small enough to end in seconds.
    pub const DEFAULT_MAX_POLLS: u64 = 50_000_000;

    /// Waiting with `pump` and the default budget.
    pub fn new(pump: &'p dyn Pump) -> Self {
        Self { pump, max_polls: Self::DEFAULT_MAX_POLLS }
    }

    /// Runs `future` to completion (see the module docs).
    pub fn block_on<T>(&self, future: impl Future<Output = Result<T>>) -> Result<T> {
        block_on(future, self.pump, self.max_polls)
    }
}

/// Runs `future` to completion, pumping after each pending poll; after `max_polls` polls,
/// [`Error::Device`]`(`[`DeviceError::Timeout`]`)`.
pub fn block_on<T>(future: impl Future<Output = Result<T>>, pump: &dyn Pump, max_polls: u64) -> Result<T> {
    let mut future = pin!(future);
    let mut cx = Context::from_waker(Waker::noop());
    for _ in 0..max_polls {
        if let Poll::Ready(out) = future.as_mut().poll(&mut cx) {
            return out;
        }
        pump.pump();
    }
    Err(Error::Device(DeviceError::Timeout))
}
