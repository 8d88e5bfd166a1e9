//! Waiting for a resource in a polled system: nothing will wake a waiter when the resource frees
//! up (no interrupts, no wait queues), so a waiter asks to be polled again and looks once more.
//! Every resource wait in the block layer (tracked slots, bounce buffers, a running flush, a
//! drained backend, decompressors) goes through these two functions.

use core::future::poll_fn;
use core::task::Poll;

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
