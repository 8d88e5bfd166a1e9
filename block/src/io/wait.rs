//! Waiting in a polled system: nothing will wake a waiter when a resource frees up (no
//! interrupts, no wait queues), so a waiter asks to be polled again and looks once more.
//! Every wait in the block layer (tracked slots, bounce buffers, a running flush, a drained
//! backend, decoders, a node holding a request) goes through these functions; none allocates
//! and none recurses, so a held request is just a pending future in its caller's slot.

use core::future::poll_fn;
use core::task::Poll;

use crate::clock::Clock;
use crate::error::{Error, Result};
use crate::io::Io;

/// Waits until `ready()` is true.
pub(crate) async fn until(mut ready: impl FnMut() -> bool) {
    take(|| ready().then_some(())).await
}

/// Waits until `attempt()` yields something, and returns it.
pub(crate) async fn take<R>(mut attempt: impl FnMut() -> Option<R>) -> R {
    poll_fn(|cx| match attempt() {
        Some(r) => Poll::Ready(r),
        None => {
            cx.waker().wake_by_ref();
            Poll::Pending
        }
    })
    .await
}

/// Why a held request went on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Release {
    /// The condition held.
    Ready,
    /// A drain asked every held request to go on now (QEMU: throttled requests are restarted
    /// without throttling when the node drains).
    Drained,
}

/// Holds a request at a node until `ready()` is true, or until a drain releases every held
/// request of the graph ([`crate::Graph::release_held`]).
pub async fn hold(io: &Io<'_, '_>, mut ready: impl FnMut() -> bool) -> Release {
    let release = io.release;
    take(|| {
        if ready() {
            Some(Release::Ready)
        } else if release.get() > 0 {
            Some(Release::Drained)
        } else {
            None
        }
    })
    .await
}

/// Holds a request until the graph's clock reads `deadline_ns` or later (or a drain releases
/// it). [`Error::Unsupported`] on a graph without a clock.
pub async fn hold_until(io: &Io<'_, '_>, deadline_ns: u64) -> Result<Release> {
    let clock: &dyn Clock = io.clock.ok_or(Error::Unsupported("waiting for time on a graph without a clock (Graph::set_clock)"))?;
    Ok(hold(io, || clock.now_ns() >= deadline_ns).await)
}
